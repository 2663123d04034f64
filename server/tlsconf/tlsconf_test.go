package tlsconf

import (
	"crypto/tls"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleychat/parley/server/tlsconf/tlstest"
)

func TestFlagsAndValidate(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		enabled bool
		err     string
	}{
		{nil, false, ""},
		{[]string{"-tls-cert", "c.pem", "-tls-key", "k.pem"}, true, ""},
		{[]string{"-tls-cert", "c.pem"}, true, "give both or neither"},
		{[]string{"-tls-key", "k.pem"}, true, "give both or neither"},
	} {
		var f Files
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		f.Flags(fs)
		if err := fs.Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		if f.Enabled() != tt.enabled {
			t.Errorf("%v: enabled %v", tt.args, f.Enabled())
		}
		err := f.Validate()
		if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%v: Validate() = %v, want %q", tt.args, err, tt.err)
		}
	}
}

func TestServerConfigErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	a := tlstest.Write(t, dir)
	other := tlstest.Write(t, t.TempDir()) // a key that does not match a's certificate
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a pem file"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		files Files
		want  string
	}{
		{Files{Cert: filepath.Join(dir, "missing.pem"), Key: a.KeyFile}, "tls-cert: "},
		{Files{Cert: a.CertFile, Key: filepath.Join(dir, "missing.pem")}, "tls-key: "},
		{Files{Cert: a.CertFile, Key: other.KeyFile}, "private key does not match"},
		{Files{Cert: garbage, Key: a.KeyFile}, garbage},
		{Files{Cert: a.CertFile}, "give both or neither"},
		{Files{}, "not set"},
	} {
		_, err := tt.files.ServerConfig(nil, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.files, err, tt.want)
		}
	}
	cfg, err := Files{Cert: a.CertFile, Key: a.KeyFile}.ServerConfig(nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 || strings.Join(cfg.NextProtos, ",") != "h2,http/1.1" {
		t.Errorf("config: min %x, protos %v", cfg.MinVersion, cfg.NextProtos)
	}
}

// TestReload: a renewed pair is served after the files change; a broken
// pair is refused and the previous certificate stays.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	first := tlstest.Write(t, dir)
	reg := prometheus.NewRegistry()
	cfg, err := Files{Cert: first.CertFile, Key: first.KeyFile}.ServerConfig(nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string {
		t.Helper()
		c, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.SerialNumber.String()
	}
	if got := serial(); got != first.Leaf.SerialNumber.String() {
		t.Fatalf("serving %s, want %s", got, first.Leaf.SerialNumber)
	}
	// Make each write visible even on a file system with a coarse clock.
	bump := func(d time.Duration, files ...string) {
		for _, f := range files {
			ts := time.Now().Add(d)
			if err := os.Chtimes(f, ts, ts); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitSerial := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for serial() != want {
			if time.Now().After(deadline) {
				t.Fatalf("still serving %s, want %s", serial(), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	second := tlstest.Write(t, dir)
	bump(time.Minute, second.CertFile, second.KeyFile)
	waitSerial(second.Leaf.SerialNumber.String())
	if got := reloads(t, reg, "ok"); got != 1 {
		t.Errorf("ok reloads = %v", got)
	}

	if err := os.WriteFile(second.KeyFile, []byte("broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	bump(2*time.Minute, second.KeyFile)
	time.Sleep(1200 * time.Millisecond)
	if got := serial(); got != second.Leaf.SerialNumber.String() {
		t.Errorf("after a broken key: serving %s, want the previous %s", got, second.Leaf.SerialNumber)
	}
	if got := reloads(t, reg, "error"); got != 1 {
		t.Errorf("error reloads = %v", got)
	}
}

// reloads reads parley_tls_certificate_reloads_total{result}.
func reloads(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "parley_tls_certificate_reloads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
