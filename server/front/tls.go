package front

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"time"
)

// handshakeTimeout bounds a TLS handshake (a client that connects and says
// nothing is dropped).
const handshakeTimeout = 10 * time.Second

// SplitTLS is Split for TLS: it terminates TLS on every connection accepted
// from ln with cfg (which must offer "h2" and "http/1.1" by ALPN, see
// tlsconf.NextProtos) and hands the *tls.Conn, handshake done, to grpcL or
// httpL as routeTLS decides. grpcL is for grpc.Server.Serve (with no
// transport credentials: TLS is already terminated), httpL for an
// http.Server whose TLSConfig is nil (Serve then sets up HTTP/2 for the
// "h2" connections) and whose handler is Handler. Closing ln (or ctx ending)
// closes both.
func SplitTLS(ctx context.Context, ln net.Listener, cfg *tls.Config, log *slog.Logger) (grpcL, httpL net.Listener) {
	cfg = cfg.Clone()
	prev := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if hc, ok := hello.Conn.(*helloConn); ok {
			hc.offered = slices.Clone(hello.SupportedProtos)
		}
		if prev != nil {
			return prev(hello)
		}
		return nil, nil
	}
	return split(ctx, ln, func(c net.Conn, g, h *chanListener) { routeTLS(c, cfg, g, h, log) })
}

// routeTLS terminates TLS on c and picks the server by the protocols the
// client offered by ALPN:
//
//   - "h2" without "http/1.1": a native gRPC client (grpc-go and so grpcurl
//     offer exactly ["h2"], grpc-java ["h2"], gRPC C-core ["grpc-exp", "h2"]).
//     The connection goes to grpc.Server.Serve, the same transport that serves
//     h2c in cleartext.
//   - anything else goes to the net/http server, which speaks HTTP/2 or
//     HTTP/1.1 as negotiated: browsers, curl and Go's net/http offer
//     ["h2", "http/1.1"]. Browsers open the grpc-web WebSocket on a connection
//     offering only "http/1.1", because Go's HTTP/2 server does not announce
//     RFC 8441 (WebSockets over HTTP/2; GODEBUG http2xconnect=1 would turn it
//     on, and break the WebSocket: the improbable-eng wrapper needs an
//     HTTP/1.1 Upgrade). Handler passes a native gRPC request that arrives this
//     way (HTTP/2, content-type application/grpc) to grpc.Server.ServeHTTP.
//
// Why not simpler or finer. Serving everything through net/http, with
// grpc.Server.ServeHTTP for gRPC, is the simplest, but ServeHTTP is much slower
// than grpc-go's own transport (BenchmarkUnaryOverTLS: a unary call took about
// 3.5 times as long, 650 against 185 µs, on a busy 2-core machine) and lacks
// some of its features (it ignores the server's keepalive policy, for one);
// native clients would pay for it on every message. Sniffing the content-type of the first request instead of
// ALPN would classify requests rather than clients, but it needs HPACK, and a
// grpc-go client sends no request before it has the server's SETTINGS frame,
// which only the chosen server can send. ALPN is known when the handshake
// ends, at no cost. Its blind spots: a gRPC client that also offers
// "http/1.1" takes the slower ServeHTTP path (it works); a plain HTTP/2
// client that offers only "h2" (e.g. Go's http.Transport restricted to
// HTTP/2) lands on grpc.Server, which answers 415 Unsupported Media Type to
// anything that is not gRPC. In both cases the peer seen by a gRPC handler
// has the client's address; only the ServeHTTP path fills peer.AuthInfo with
// the TLS state.
func routeTLS(c net.Conn, cfg *tls.Config, g, h *chanListener, log *slog.Logger) {
	hc := &helloConn{Conn: c}
	tc := tls.Server(hc, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		var re tls.RecordHeaderError
		if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader[:]) {
			// As net/http does: tell a cleartext HTTP client what went wrong.
			_ = re.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		}
		log.Debug("tls handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	if tc.ConnectionState().NegotiatedProtocol == "h2" && nativeGRPC(hc.offered) {
		g.deliver(tc)
		return
	}
	h.deliver(tc)
}

// nativeGRPC reports whether a client offering these ALPN protocols is a
// native gRPC client (see routeTLS).
func nativeGRPC(offered []string) bool {
	return slices.Contains(offered, "h2") && !slices.Contains(offered, "http/1.1")
}

// looksLikeHTTP reports whether the first five bytes of a connection look
// like a cleartext HTTP/1.x request. (A cleartext HTTP/2 client, e.g. gRPC
// without TLS, just sees the connection closed.)
func looksLikeHTTP(hdr []byte) bool {
	for _, m := range []string{"GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH"} {
		if bytes.Equal(hdr, []byte(m)) {
			return true
		}
	}
	return false
}

// helloConn carries the ALPN protocols a client offered from the handshake
// (tls.Config.GetConfigForClient sees it as ClientHelloInfo.Conn) to
// routeTLS.
type helloConn struct {
	net.Conn
	offered []string
}
