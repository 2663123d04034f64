// Package front serves every protocol of a Parley server instance on one
// address.
//
// In cleartext (Split), connections that open with the HTTP/2 client preface
// (native gRPC over h2c: grpc-go, grpcurl, generated stubs) go straight to
// grpc.Server.Serve, grpc-go's own transport; everything else is HTTP/1.1:
// grpc-web and its WebSocket transport (improbable-eng wrapper, origin
// allow-list), the REST gateway under /v1/, /metrics, /healthz, /readyz and
// the web app.
//
// With TLS (SplitTLS), see routeTLS: the choice is made per connection by the
// ALPN protocols the client offered, and the HTTP side (HTTP/2 or HTTP/1.1)
// also passes native gRPC requests to grpc.Server.ServeHTTP, so every client
// reaches the right server whichever way it was routed.
package front

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/improbable-eng/grpc-web/go/grpcweb"
	"google.golang.org/grpc"
)

// http2Preface is what an HTTP/2 prior-knowledge client sends first.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Split accepts from ln and hands each connection to one of the two returned
// listeners by its first bytes: HTTP/2 preface → grpcL, anything else → httpL.
// Closing ln (or ctx ending) closes both.
func Split(ctx context.Context, ln net.Listener, log *slog.Logger) (grpcL, httpL net.Listener) {
	return split(ctx, ln, func(c net.Conn, g, h *chanListener) { route(c, g, h, log) })
}

// split runs the accept loop of ln, routing each connection in its own
// goroutine.
func split(ctx context.Context, ln net.Listener, route func(c net.Conn, g, h *chanListener)) (grpcL, httpL net.Listener) {
	g := newChanListener(ln.Addr())
	h := newChanListener(ln.Addr())
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go func() {
		defer g.Close()
		defer h.Close()
		for {
			c, err := ln.Accept()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				return
			}
			go route(c, g, h)
		}
	}()
	return g, h
}

func route(c net.Conn, g, h *chanListener, log *slog.Logger) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, len(http2Preface))
	n, err := io.ReadFull(c, buf)
	_ = c.SetReadDeadline(time.Time{})
	pc := &prefixConn{Conn: c, prefix: buf[:n]}
	if err != nil && n == 0 {
		c.Close()
		return
	}
	if n == len(http2Preface) && bytes.Equal(buf, []byte(http2Preface)) {
		g.deliver(pc)
		return
	}
	h.deliver(pc)
}

// prefixConn replays the bytes read to route a connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closed:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// Options configure the HTTP side.
type Options struct {
	// AllowedOrigins may call grpc-web and open its WebSocket from a browser.
	// Requests without an Origin header (non-browser callers) and same-origin
	// requests are always allowed. "*" allows any origin (development only).
	AllowedOrigins []string
	Gateway        http.Handler // REST under /v1/
	Metrics        http.Handler // /metrics
	Ready          func() error // /readyz
	Web            http.Handler // everything else (the web app)
	// Pprof serves net/http/pprof under /debug/pprof/ (off by default).
	Pprof bool
}

// Handler returns the handler of the HTTP side (HTTP/1.1, and HTTP/2 over
// TLS).
func Handler(gs *grpc.Server, o Options) http.Handler {
	allowed := func(origin string) bool {
		for _, a := range o.AllowedOrigins {
			if a == "*" || strings.EqualFold(a, origin) {
				return true
			}
		}
		return false
	}
	wrapped := grpcweb.WrapServer(gs,
		grpcweb.WithWebsockets(true),
		grpcweb.WithWebsocketPingInterval(20*time.Second),
		grpcweb.WithOriginFunc(allowed),
		grpcweb.WithWebsocketOriginFunc(func(r *http.Request) bool {
			origin := r.Header.Get("Origin")
			if origin == "" || sameOrigin(r, origin) {
				return true
			}
			return allowed(origin)
		}),
	)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := o.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	if o.Metrics != nil {
		mux.Handle("/metrics", o.Metrics)
	}
	if o.Gateway != nil {
		mux.Handle("/v1/", cors(o.Gateway, allowed))
	}
	if o.Pprof {
		HandlePprof(mux)
	}
	if o.Web != nil {
		mux.Handle("/", o.Web)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wrapped.IsGrpcWebSocketRequest(r) || wrapped.IsGrpcWebRequest(r) || wrapped.IsAcceptableGrpcCorsRequest(r) {
			if origin := r.Header.Get("Origin"); origin != "" && !sameOrigin(r, origin) && !allowed(origin) && !wrapped.IsGrpcWebSocketRequest(r) {
				http.Error(w, "origin not allowed", http.StatusForbidden)
				return
			}
			wrapped.ServeHTTP(w, r)
			return
		}
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			// Native gRPC that reached the HTTP side: over TLS, a client
			// that offered "http/1.1" too (see routeTLS). Never in
			// cleartext, where HTTP/2 goes to grpc.Server.Serve.
			gs.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// cors is the REST API's explicit CORS policy: a browser on an allowed
// origin may call it with the Authorization and Content-Type headers; every
// other origin gets no CORS headers (the browser refuses the response) and
// its preflight is answered 403. Requests without an Origin header
// (non-browser callers) and same-origin requests are unaffected.
func cors(next http.Handler, allowed func(string) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || sameOrigin(r, origin) {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		if !allowed(origin) {
			if r.Method == http.MethodOptions {
				http.Error(w, "origin not allowed", http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Expose-Headers", "Grpc-Status, Grpc-Message, Retry-After")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func sameOrigin(r *http.Request, origin string) bool {
	o := strings.TrimPrefix(strings.TrimPrefix(origin, "http://"), "https://")
	return strings.EqualFold(o, r.Host)
}

// HandlePprof serves net/http/pprof under /debug/pprof/ on mux (the server's
// listener with --pprof, the persister's metrics address with its --pprof).
func HandlePprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}
