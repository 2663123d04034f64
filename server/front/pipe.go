package front

import (
	"context"
	"net"
)

// Pipe is an in-memory listener with its own dialer. The REST gateway calls
// the instance's grpc.Server through one: no port, no loopback traffic, and
// no TLS to set up for a call that never leaves the process.
type Pipe struct {
	*chanListener
}

// NewPipe returns an open Pipe; serve it (grpc.Server.Serve) and dial it
// with DialContext. Close makes Accept and later dials fail.
func NewPipe() *Pipe {
	return &Pipe{newChanListener(pipeAddr{})}
}

// DialContext connects to the pipe's listener (the address is ignored; the
// signature is grpc.WithContextDialer's).
func (p *Pipe) DialContext(ctx context.Context, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case p.ch <- server:
		return client, nil
	case <-p.closed:
		client.Close()
		server.Close()
		return nil, net.ErrClosed
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }
