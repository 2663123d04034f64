package rpcmetrics

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

type fakeStream struct {
	grpc.ServerStream
	failSend bool
}

func (f *fakeStream) Context() context.Context { return context.Background() }
func (f *fakeStream) SendMsg(any) error {
	if f.failSend {
		return errors.New("broken")
	}
	return nil
}
func (f *fakeStream) RecvMsg(any) error { return nil }

func TestCountsCallsAndMessages(t *testing.T) {
	m := New()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)

	unary := m.UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: "/parley.v1.AuthService/Login"}
	unary(context.Background(), nil, info, func(context.Context, any) (any, error) { return "ok", nil })
	unary(context.Background(), nil, info, func(context.Context, any) (any, error) {
		return nil, status.Error(codes.InvalidArgument, "bad")
	})

	stream := m.StreamServerInterceptor()
	sinfo := &grpc.StreamServerInfo{FullMethod: "/parley.v1.ChatService/Connect", IsClientStream: true, IsServerStream: true}
	err := stream(nil, &fakeStream{}, sinfo, func(_ any, ss grpc.ServerStream) error {
		for range 3 {
			_ = ss.SendMsg(nil)
		}
		_ = ss.RecvMsg(nil)
		return status.Error(codes.Unavailable, "shutting down")
	})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("the handler's error must come back unchanged, got %v", err)
	}
	// A bare context error is Canceled, not Unknown.
	_ = stream(nil, &fakeStream{}, sinfo, func(any, grpc.ServerStream) error { return context.Canceled })
	// A failed send is not counted.
	_ = stream(nil, &fakeStream{failSend: true}, sinfo, func(_ any, ss grpc.ServerStream) error { return ss.SendMsg(nil) })

	// Every code of a called method is exported (at zero until it happens).
	for _, h := range []struct {
		typ, svc, method, code string
		want                   float64
	}{
		{"unary", "parley.v1.AuthService", "Login", "InvalidArgument", 1},
		{"unary", "parley.v1.AuthService", "Login", "OK", 1},
		{"unary", "parley.v1.AuthService", "Login", "Internal", 0},
		{"bidi_stream", "parley.v1.ChatService", "Connect", "Canceled", 1},
		{"bidi_stream", "parley.v1.ChatService", "Connect", "Unavailable", 1},
		{"bidi_stream", "parley.v1.ChatService", "Connect", "Unknown", 1},
		{"bidi_stream", "parley.v1.ChatService", "Connect", "OK", 0},
	} {
		if got := testutil.ToFloat64(m.handled.WithLabelValues(h.typ, h.svc, h.method, h.code)); got != h.want {
			t.Errorf("handled %s %s: %v, want %v", h.method, h.code, got, h.want)
		}
	}
	if n := testutil.CollectAndCount(m.handled); n != 2*17 {
		t.Errorf("handled series: %d, want 2*17", n)
	}
	want := `
# HELP grpc_server_msg_received_total Total number of RPC stream messages received on the server.
# TYPE grpc_server_msg_received_total counter
grpc_server_msg_received_total{grpc_method="Connect",grpc_service="parley.v1.ChatService",grpc_type="bidi_stream"} 1
grpc_server_msg_received_total{grpc_method="Login",grpc_service="parley.v1.AuthService",grpc_type="unary"} 2
# HELP grpc_server_msg_sent_total Total number of gRPC stream messages sent by the server.
# TYPE grpc_server_msg_sent_total counter
grpc_server_msg_sent_total{grpc_method="Connect",grpc_service="parley.v1.ChatService",grpc_type="bidi_stream"} 3
grpc_server_msg_sent_total{grpc_method="Login",grpc_service="parley.v1.AuthService",grpc_type="unary"} 1
# HELP grpc_server_started_total Total number of RPCs started on the server.
# TYPE grpc_server_started_total counter
grpc_server_started_total{grpc_method="Connect",grpc_service="parley.v1.ChatService",grpc_type="bidi_stream"} 3
grpc_server_started_total{grpc_method="Login",grpc_service="parley.v1.AuthService",grpc_type="unary"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"grpc_server_started_total", "grpc_server_msg_received_total", "grpc_server_msg_sent_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m.seconds); n != 2 {
		t.Fatalf("handling-time histograms: got %d series, want 2", n)
	}
}

func TestInitExportsEveryMethodAtZero(t *testing.T) {
	m := New()
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	m.Init(s)
	got := testutil.ToFloat64(m.started.WithLabelValues("unary", "grpc.health.v1.Health", "Check"))
	if got != 0 {
		t.Fatalf("started before any call: %v", got)
	}
	if n := testutil.CollectAndCount(m.started); n != 3 { // Check, List, Watch
		t.Fatalf("started series after Init: got %d, want 3 (one per health method)", n)
	}
	if n := testutil.CollectAndCount(m.handled); n != 3*17 {
		t.Fatalf("handled series after Init: got %d, want 3*17 (every code of every method)", n)
	}
}

// BenchmarkStreamSend is the per-message cost of counting a sent stream
// message (compare go-grpc-middleware's provider, which resolves labels per
// message).
func BenchmarkStreamSend(b *testing.B) {
	m := New()
	sinfo := &grpc.StreamServerInfo{FullMethod: "/parley.v1.ChatService/Connect", IsClientStream: true, IsServerStream: true}
	_ = m.StreamServerInterceptor()(nil, &fakeStream{}, sinfo, func(_ any, ss grpc.ServerStream) error {
		b.ReportAllocs()
		for b.Loop() {
			_ = ss.SendMsg(nil)
		}
		return nil
	})
}
