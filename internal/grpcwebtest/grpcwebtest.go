// Package grpcwebtest encodes grpc-web request bodies and decodes responses,
// for tests that speak grpc-web by hand (as a browser would).
package grpcwebtest

import (
	"encoding/binary"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// Frame returns m as one length-prefixed gRPC message: a grpc-web request
// body, or a message inside improbable-eng's WebSocket framing.
func Frame(tb testing.TB, m proto.Message) []byte {
	tb.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	return append(out, b...)
}

// Decode reads a grpc-web response body: its (last) message into m and its
// trailers, with lower-case names.
func Decode(tb testing.TB, body []byte, m proto.Message) map[string]string {
	tb.Helper()
	trailers := map[string]string{}
	for len(body) >= 5 {
		flag, n := body[0], binary.BigEndian.Uint32(body[1:5])
		if uint32(len(body)-5) < n {
			tb.Fatalf("short grpc-web frame: %d of %d bytes", len(body)-5, n)
		}
		payload := body[5 : 5+n]
		body = body[5+n:]
		if flag&0x80 != 0 {
			for _, line := range strings.Split(string(payload), "\r\n") {
				if k, v, ok := strings.Cut(line, ":"); ok {
					trailers[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
				}
			}
			continue
		}
		if err := proto.Unmarshal(payload, m); err != nil {
			tb.Fatal(err)
		}
	}
	return trailers
}
