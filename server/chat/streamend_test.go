package chat

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/server/store"
)

// chatGoroutines counts the goroutines serving Connect streams (handlers,
// readers and writers).
func chatGoroutines(tb testing.TB) int {
	tb.Helper()
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 2); err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, g := range strings.Split(buf.String(), "\n\n") {
		if strings.Contains(g, "server/chat.(*Service).Connect") || strings.Contains(g, "server/chat.(*session).write") {
			n++
		}
	}
	return n
}

// waitEnd waits for the stream to end with code.
func (s *stream) waitEnd(code codes.Code, what string) {
	s.tb.Helper()
	select {
	case err := <-s.done:
		if status.Code(err) != code {
			s.tb.Fatalf("%s ended with %v, want %v", what, err, code)
		}
	case <-time.After(10 * time.Second):
		s.tb.Fatalf("%s did not end", what)
	}
}

// hideStatusWriter hides the transport stream's WriteStatus from the
// handler, as a grpc-go release without it would.
func hideStatusWriter(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := grpc.NewContextWithServerTransportStream(ss.Context(), plainTransportStream{grpc.ServerTransportStreamFromContext(ss.Context())})
	return handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
}

type plainTransportStream struct{ grpc.ServerTransportStream }

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// The stream lifecycle, with the session ending its stream itself and
// without (see statusWriter): a half-close drains, a slow consumer and a
// shutdown end the stream with their status, and an idle stream costs one
// goroutine with the ender, two without.
func TestStreamLifecycle(t *testing.T) {
	for _, ender := range []bool{true, false} {
		t.Run(fmt.Sprintf("ender=%v", ender), func(t *testing.T) {
			e := newTestEnvEnder(t, Config{StreamQueue: 16, SendRate: 1e6, SendBurst: 1e6, FrameRate: 1e6, FrameBurst: 1e6, MaxStreamsPerUser: 100}, ender)
			e.room(t, "r", store.VisibilityPublic, "a", "b", "slow")

			base := chatGoroutines(t)
			const idle = 20
			for i := 0; i < idle; i++ {
				s := e.connect(t, "b")
				s.subscribe("r", nil)
			}
			perStream := 1
			if !ender {
				perStream = 2
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				got := chatGoroutines(t) - base
				if got == idle*perStream {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d idle streams run %d goroutines in package chat, want %d", idle, got, idle*perStream)
				}
				time.Sleep(20 * time.Millisecond)
			}

			// Send, then half-close: the ack arrives before the stream ends
			// with OK.
			a := e.connect(t, "a")
			a.subscribe("r", nil)
			a.sendMsg("r", "m1", "hello")
			if err := a.s.CloseSend(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-a.done:
				if err != io.EOF {
					t.Fatalf("half-closed stream ended with %v, want OK", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("half-closed stream did not end")
			}
			a.mu.Lock()
			f := a.frames
			a.mu.Unlock()
			if len(acks(f)) != 1 || acks(f)[0].GetError() != nil {
				t.Fatalf("before the end: acks %v", acks(f))
			}

			// A client that never reads is ended with ResourceExhausted
			// while it sends nothing either.
			slowEnd := e.stalledStream(t, "slow", "r")
			e.flood(t, "a", "r", 3000)
			if got := slowEnd(); status.Code(got) != codes.ResourceExhausted {
				t.Fatalf("slow client ended with %v, want ResourceExhausted", got)
			}

			// Shutdown ends the idle streams with Unavailable, and a stream
			// opened after it at once.
			b := e.connect(t, "b")
			b.subscribe("r", nil)
			e.svc.Shutdown()
			b.waitEnd(codes.Unavailable, "an idle stream at shutdown")
			e.connect(t, "b").waitEnd(codes.Unavailable, "a stream opened after shutdown")
		})
	}
}
