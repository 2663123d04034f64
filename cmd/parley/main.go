// Command parley runs Parley: `parley server`, `parley persister`.
// See README.md for `parley dev` (make run), which embeds stand-ins.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: parley <command> [flags]

commands:
  server      serve the gRPC, grpc-web, REST API and the web app
  persister   consume the message topic into the MongoDB-protocol store
  bench       run a benchmark workload: bench fanout [--raw or --floor], persist, conns; bench plot
              draws a JSON report as PNG, bench compare states Parley's fanout peak
              against the --raw ceiling and the --floor peak, bench floor-server
              serves --floor's server (see docs/PERFORMANCE.md)
  chat        terminal chat client: log in, pick a room, read and write in real time

Run "parley <command> -h" for the flags; each flag FOO-BAR is also read from
the environment variable PARLEY_FOO_BAR.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "parley:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("no command given")
	}
	switch args[0] {
	case "server":
		return runServer(ctx, args[1:])
	case "persister":
		return runPersister(ctx, args[1:])
	case "bench":
		return runBench(ctx, args[1:])
	case "chat":
		return runChat(ctx, args[1:])
	case "-h", "--help", "help":
		fmt.Print(usage)
		return nil
	}
	fmt.Fprint(os.Stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
