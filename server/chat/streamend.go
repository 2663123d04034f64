package chat

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// A Connect stream needs two things from grpc-go's API that pull apart: its
// handler must block for the stream's life, and Recv blocks until the client
// sends or the stream ends. If the handler goroutine reads, the server has
// to be able to end the stream on its own (slow consumer, shutdown, a failed
// write) while the client is quiet, or it needs a second goroutine per
// stream just to wait in Recv.
//
// The transport stream behind every gRPC server stream (native HTTP/2 and
// grpc.Server.ServeHTTP, which carries grpc-web and the WebSocket bridge)
// has a WriteStatus method: it sends the final status and closes the stream,
// which ends a blocked Recv. A session uses it to end its stream, so an idle
// stream costs one goroutine (the handler, in Recv) and its writer runs only
// while there is something to write. The status the handler then returns is
// the same one; grpc-go writes only the first.
//
// The method is not part of grpc-go's stable API: if a release drops it,
// streamStatusWriter reports false and Connect reads on a second goroutine
// as before (TestStreamLifecycle counts the goroutines, so an upgrade that
// loses the method is noticed).
type statusWriter interface {
	WriteStatus(*status.Status) error
}

// streamStatusWriter returns the status writer of the stream of ctx, a
// stream handler's context.
func streamStatusWriter(ctx context.Context) (statusWriter, bool) {
	w, ok := grpc.ServerTransportStreamFromContext(ctx).(statusWriter)
	return w, ok
}
