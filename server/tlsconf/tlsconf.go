// Package tlsconf is the TLS option of Parley's listeners: the --tls-cert and
// --tls-key flags, and a server tls.Config whose certificate is re-read when
// its files change (a renewed certificate is served without a restart).
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Files names the PEM files of a listener's certificate and key. Both empty
// means plaintext.
type Files struct {
	Cert string
	Key  string
}

// Flags registers --tls-cert and --tls-key on fs.
func (f *Files) Flags(fs *flag.FlagSet) {
	fs.StringVar(&f.Cert, "tls-cert", "", "PEM certificate (chain) file: serve TLS with it and --tls-key (empty: plaintext)")
	fs.StringVar(&f.Key, "tls-key", "", "PEM private key file of --tls-cert")
}

// Enabled reports whether TLS was asked for.
func (f Files) Enabled() bool { return f.Cert != "" || f.Key != "" }

// Validate checks that both files or neither are given.
func (f Files) Validate() error {
	if (f.Cert == "") != (f.Key == "") {
		return errors.New("tls-cert and tls-key (PARLEY_TLS_CERT, PARLEY_TLS_KEY) go together: give both or neither")
	}
	return nil
}

// NextProtos is what a Parley listener offers by ALPN: HTTP/2 first (gRPC,
// browsers), then HTTP/1.1 (older clients and the grpc-web WebSocket, which
// needs an HTTP/1.1 Upgrade).
var NextProtos = []string{"h2", "http/1.1"}

// checkEvery bounds how often the files are looked at for a change.
const checkEvery = time.Second

// ServerConfig loads the certificate now (an error names the file at fault)
// and returns a TLS 1.2+ server config offering NextProtos. Its
// GetCertificate looks at the files' size and modification time at most once
// a second and reloads the pair when either changed; a pair that does not
// load is logged and the previous certificate is kept. reg (optional) gets
// parley_tls_certificate_expiry_timestamp_seconds and
// parley_tls_certificate_reloads_total.
func (f Files) ServerConfig(log *slog.Logger, reg prometheus.Registerer) (*tls.Config, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if !f.Enabled() {
		return nil, errors.New("tls-cert and tls-key are not set")
	}
	r := &reloader{files: f, log: log, interval: checkEvery, now: time.Now,
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "parley", Subsystem: "tls", Name: "certificate_expiry_timestamp_seconds",
			Help: "NotAfter of the certificate being served, as a Unix time.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "parley", Subsystem: "tls", Name: "certificate_reloads_total",
			Help: "Certificate reloads after its files changed, by result (ok, error).",
		}, []string{"result"}),
	}
	if err := r.load(); err != nil {
		return nil, err
	}
	if reg != nil {
		reg.MustRegister(r.expiry, r.reloads)
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     append([]string(nil), NextProtos...),
		GetCertificate: r.getCertificate,
	}, nil
}

type stamp struct {
	size int64
	mod  time.Time
}

func stampOf(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	return stamp{size: fi.Size(), mod: fi.ModTime()}, nil
}

// reloader serves the current certificate and reloads it when its files change.
type reloader struct {
	files    Files
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time
	expiry   prometheus.Gauge
	reloads  *prometheus.CounterVec

	mu       sync.Mutex
	cert     *tls.Certificate
	certSt   stamp
	keySt    stamp
	lastSeen time.Time
}

// load reads the pair, returning an error that names the file at fault.
func (r *reloader) load() error {
	cs, err := stampOf(r.files.Cert)
	if err != nil {
		return fmt.Errorf("tls-cert: %w", err)
	}
	ks, err := stampOf(r.files.Key)
	if err != nil {
		return fmt.Errorf("tls-key: %w", err)
	}
	// Whatever happens, these are the versions looked at: a half-written
	// pair is retried when the files change again, not every handshake.
	r.certSt, r.keySt = cs, ks
	cert, err := tls.LoadX509KeyPair(r.files.Cert, r.files.Key)
	if err != nil {
		return fmt.Errorf("tls-cert %s / tls-key %s: %w", r.files.Cert, r.files.Key, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("tls-cert %s: %w", r.files.Cert, err)
		}
	}
	r.cert = &cert
	r.expiry.Set(float64(leaf.NotAfter.Unix()))
	if r.log != nil {
		r.log.Info("tls certificate loaded", "cert", r.files.Cert, "subject", leaf.Subject.String(), "dns_names", leaf.DNSNames, "not_after", leaf.NotAfter)
		if r.now().After(leaf.NotAfter) {
			r.log.Warn("tls certificate has expired", "cert", r.files.Cert, "not_after", leaf.NotAfter)
		}
	}
	return nil
}

func (r *reloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); now.Sub(r.lastSeen) >= r.interval {
		r.lastSeen = now
		cs, cerr := stampOf(r.files.Cert)
		ks, kerr := stampOf(r.files.Key)
		if cerr == nil && kerr == nil && (cs != r.certSt || ks != r.keySt) {
			if err := r.load(); err != nil {
				r.reloads.WithLabelValues("error").Inc()
				if r.log != nil {
					r.log.Error("tls certificate reload failed; serving the previous one", "err", err)
				}
			} else {
				r.reloads.WithLabelValues("ok").Inc()
			}
		}
	}
	return r.cert, nil
}
