package front

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/internal/grpcwebtest"
	"github.com/parleychat/parley/server/tlsconf"
	"github.com/parleychat/parley/server/tlsconf/tlstest"
)

// testFront serves a grpc.Server (health service) and Handler on one
// listener, in cleartext (Split) or TLS (SplitTLS), as server.Run does.
type testFront struct {
	addr string
	cert tlstest.Cert
	// viaServeHTTP counts gRPC calls that came through grpc.Server.ServeHTTP
	// (the HTTP side) rather than grpc.Server.Serve: over TLS only the former
	// carries the TLS state in peer.AuthInfo.
	viaServeHTTP, calls atomic.Int32
}

func startFront(t testing.TB, useTLS bool) *testFront {
	t.Helper()
	f := &testFront{}
	note := func(ctx context.Context) {
		f.calls.Add(1)
		if p, ok := peer.FromContext(ctx); ok && p.AuthInfo != nil {
			f.viaServeHTTP.Add(1)
		}
	}
	gs := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			note(ctx)
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			note(ss.Context())
			return h(srv, ss)
		}),
	)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	hs := &http.Server{Handler: Handler(gs, Options{
		AllowedOrigins: []string{"https://chat.example"},
		Gateway: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "rest "+r.Proto)
		}),
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "parley_up 1\n") }),
		Ready:   func() error { return nil },
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.DiscardHandler)
	var grpcL, httpL net.Listener
	if useTLS {
		f.cert = tlstest.Write(t, t.TempDir())
		cfg, err := tlsconf.Files{Cert: f.cert.CertFile, Key: f.cert.KeyFile}.ServerConfig(log, nil)
		if err != nil {
			t.Fatal(err)
		}
		grpcL, httpL = SplitTLS(ctx, ln, cfg, log)
	} else {
		grpcL, httpL = Split(ctx, ln, log)
	}
	go func() { _ = gs.Serve(grpcL) }()
	go func() { _ = hs.Serve(httpL) }()
	t.Cleanup(func() {
		cancel()
		gs.Stop()
		_ = hs.Close()
	})
	return f
}

// grpcClient dials f with TLS offering protos by ALPN (grpc-go adds "h2"),
// or in cleartext when tlsCfg is nil.
func (f *testFront) grpcClient(t testing.TB, tlsCfg *tls.Config) healthpb.HealthClient {
	t.Helper()
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	cc, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

// checkHealth makes a unary call and reads one message of a server stream.
func checkHealth(t *testing.T, hc healthpb.HealthClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check: %v", resp.Status)
	}
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if m, err := w.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch: %v %v", m, err)
	}
}

func TestNativeGRPCOverTLSTakesGRPCTransport(t *testing.T) {
	f := startFront(t, true)
	checkHealth(t, f.grpcClient(t, &tls.Config{RootCAs: f.cert.Pool}))
	if f.calls.Load() != 2 || f.viaServeHTTP.Load() != 0 {
		t.Errorf("%d calls, %d through ServeHTTP; want 2 through grpc.Server.Serve", f.calls.Load(), f.viaServeHTTP.Load())
	}
}

func TestGRPCClientOfferingHTTP1TakesServeHTTP(t *testing.T) {
	f := startFront(t, true)
	checkHealth(t, f.grpcClient(t, &tls.Config{RootCAs: f.cert.Pool, NextProtos: []string{"h2", "http/1.1"}}))
	if f.calls.Load() != 2 || f.viaServeHTTP.Load() != 2 {
		t.Errorf("%d calls, %d through ServeHTTP; want 2 through ServeHTTP", f.calls.Load(), f.viaServeHTTP.Load())
	}
}

func TestGRPCClientWithoutTheCAFails(t *testing.T) {
	f := startFront(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := f.grpcClient(t, &tls.Config{}).Check(ctx, &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted certificate: %v, want Unavailable naming the certificate", err)
	}
}

// httpClient speaks HTTP/2 (h2: true, offering h2 and http/1.1 like a
// browser) or HTTP/1.1 only over TLS.
func (f *testFront) httpClient(h2 bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.cert.Pool}, ForceAttemptHTTP2: h2}
	if !h2 {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestHTTPOverTLS(t *testing.T) {
	f := startFront(t, true)
	for _, h2 := range []bool{true, false} {
		c := f.httpClient(h2)
		wantMajor := 1
		if h2 {
			wantMajor = 2
		}
		for _, tt := range []struct{ method, path, want string }{
			{"GET", "/healthz", "ok\n"},
			{"GET", "/readyz", "ready\n"},
			{"GET", "/metrics", "parley_up 1\n"},
			{"POST", "/v1/auth/signup", "rest HTTP/" + map[bool]string{true: "2.0", false: "1.1"}[h2]},
		} {
			req, _ := http.NewRequest(tt.method, "https://"+f.addr+tt.path, strings.NewReader("{}"))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("h2=%v %s %s: %v", h2, tt.method, tt.path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(body) != tt.want || resp.ProtoMajor != wantMajor {
				t.Errorf("h2=%v %s %s: %d %s %q, want 200 HTTP/%d %q", h2, tt.method, tt.path, resp.StatusCode, resp.Proto, body, wantMajor, tt.want)
			}
		}
	}
}

func TestGRPCWebOverTLS(t *testing.T) {
	f := startFront(t, true)
	for _, h2 := range []bool{true, false} {
		req, _ := http.NewRequest("POST", "https://"+f.addr+"/grpc.health.v1.Health/Check", bytes.NewReader(grpcwebtest.Frame(t, &healthpb.HealthCheckRequest{})))
		req.Header.Set("Content-Type", "application/grpc-web+proto")
		req.Header.Set("X-Grpc-Web", "1")
		req.Header.Set("Origin", "https://chat.example")
		resp, err := f.httpClient(h2).Do(req)
		if err != nil {
			t.Fatalf("h2=%v: %v", h2, err)
		}
		var out healthpb.HealthCheckResponse
		trailers := readGRPCWeb(t, resp, &out)
		if trailers["grpc-status"] != "0" || out.Status != healthpb.HealthCheckResponse_SERVING || (resp.ProtoMajor == 2) != h2 {
			t.Errorf("h2=%v: %s status %d, trailers %v, message %v", h2, resp.Proto, resp.StatusCode, trailers, &out)
		}
	}
}

func TestWebSocketUpgradeOverTLS(t *testing.T) {
	f := startFront(t, true)
	for _, tt := range []struct {
		origin string
		want   int
	}{
		{"https://chat.example", http.StatusSwitchingProtocols},
		{"https://" + f.addr, http.StatusSwitchingProtocols}, // same origin
		{"https://evil.example", http.StatusForbidden},
	} {
		req, _ := http.NewRequest("GET", "https://"+f.addr+"/grpc.health.v1.Health/Watch", nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		req.Header.Set("Sec-WebSocket-Protocol", "grpc-websockets")
		req.Header.Set("Origin", tt.origin)
		resp, err := f.httpClient(false).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("WebSocket from %s: %d, want %d", tt.origin, resp.StatusCode, tt.want)
		}
	}
}

func TestCleartextClientsOfATLSListener(t *testing.T) {
	f := startFront(t, true)
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + f.addr + "/healthz")
	if err != nil {
		t.Fatalf("cleartext HTTP: %v (want a 400 answer)", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTPS server") {
		t.Errorf("cleartext HTTP: %d %q", resp.StatusCode, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = f.grpcClient(t, nil).Check(ctx, &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("cleartext gRPC: %v, want Unavailable", err)
	}
	if ctx.Err() != nil {
		t.Errorf("cleartext gRPC waited for its deadline instead of failing")
	}
	// A connection that never starts its handshake does not hold up others.
	idle, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	checkHealth(t, f.grpcClient(t, &tls.Config{RootCAs: f.cert.Pool}))
}

// TestCleartextSplit: without TLS, h2c goes to grpc.Server.Serve and
// HTTP/1.1 to the handler.
func TestCleartextSplit(t *testing.T) {
	f := startFront(t, false)
	checkHealth(t, f.grpcClient(t, nil))
	if f.calls.Load() != 2 || f.viaServeHTTP.Load() != 0 {
		t.Errorf("%d calls, %d through ServeHTTP", f.calls.Load(), f.viaServeHTTP.Load())
	}
	resp, err := http.Get("http://" + f.addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 {
		t.Errorf("/healthz: %d %s", resp.StatusCode, resp.Proto)
	}
}

func TestPipe(t *testing.T) {
	p := NewPipe()
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go func() { _ = gs.Serve(p) }()
	cc, err := grpc.NewClient("passthrough:///pipe", grpc.WithContextDialer(p.DialContext), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	checkHealth(t, healthpb.NewHealthClient(cc))
	gs.Stop() // closes p
	if _, err := p.DialContext(context.Background(), ""); !errors.Is(err, net.ErrClosed) {
		t.Errorf("dial after close: %v", err)
	}
}

func TestNativeGRPC(t *testing.T) {
	for _, tt := range []struct {
		offered []string
		want    bool
	}{
		{[]string{"h2"}, true},
		{[]string{"grpc-exp", "h2"}, true},
		{[]string{"h2", "http/1.1"}, false},
		{[]string{"http/1.1"}, false},
		{nil, false},
	} {
		if got := nativeGRPC(tt.offered); got != tt.want {
			t.Errorf("nativeGRPC(%v) = %v", tt.offered, got)
		}
	}
}

// readGRPCWeb reads a grpc-web response: the one message into m, and the
// trailers.
func readGRPCWeb(t *testing.T, resp *http.Response, m proto.Message) map[string]string {
	t.Helper()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return grpcwebtest.Decode(t, body, m)
}

// BenchmarkUnaryOverTLS compares the two ways a native gRPC call is served
// over TLS: grpc.Server.Serve (a client offering only "h2") and
// grpc.Server.ServeHTTP (a client offering "http/1.1" too).
func BenchmarkUnaryOverTLS(b *testing.B) {
	for _, bc := range []struct {
		name   string
		protos []string
	}{{"Serve", nil}, {"ServeHTTP", []string{"h2", "http/1.1"}}} {
		b.Run(bc.name, func(b *testing.B) {
			f := startFront(b, true)
			hc := f.grpcClient(b, &tls.Config{RootCAs: f.cert.Pool, NextProtos: bc.protos})
			ctx := context.Background()
			if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
