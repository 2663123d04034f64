// Command parley-ferretdb runs FerretDB (a MongoDB wire-protocol server) on
// top of PostgreSQL, for Parley's integration tests and local development.
//
// It wraps the embeddable package github.com/FerretDB/FerretDB/ferretdb
// because `go install .../cmd/ferretdb` builds a binary that panics at start.
//
// Server mode (default):
//
//	parley-ferretdb -listen 127.0.0.1:27018 -postgresql-url postgres://ferretdb@127.0.0.1:15433/ferretdb
//
// SIGINT/SIGTERM stop it gracefully (listener and backend pool are closed).
//
// Readiness probe mode, used by scripts/services.sh:
//
//	parley-ferretdb -ping mongodb://127.0.0.1:27018/ -ping-timeout 30s
//
// It retries until the server answers `ping` and `listDatabases`, then exits 0;
// it exits 1 on timeout. The first of these commands makes FerretDB open its
// PostgreSQL pool, so right after start-up the probe also fails while
// PostgreSQL is unreachable (later on, FerretDB answers both from its cache).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27018", "TCP address to listen on (host:port)")
	pgURL := flag.String("postgresql-url", "postgres://ferretdb@127.0.0.1:15433/ferretdb",
		"PostgreSQL connection string for the postgresql handler (pgx syntax; pool_max_conns=N is accepted)")
	logLevel := flag.String("log-level", "info", "log level: debug, info, warn or error")
	ping := flag.String("ping", "", "if set, do not serve: probe this MongoDB URI until it answers, then exit")
	pingTimeout := flag.Duration("ping-timeout", 30*time.Second, "how long -ping keeps retrying")
	flag.Parse()

	if *ping != "" {
		if err := probe(*ping, *pingTimeout); err != nil {
			fmt.Fprintln(os.Stderr, "parley-ferretdb: ping:", err)
			os.Exit(1)
		}
		return
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "parley-ferretdb: bad -log-level:", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if err := serve(logger, *listen, *pgURL); err != nil {
		logger.Error("parley-ferretdb stopped with error", "error", err)
		os.Exit(1)
	}
}

func serve(logger *slog.Logger, listen, pgURL string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:      ferretdb.ListenerConfig{TCP: listen},
		Logger:        logger,
		Handler:       "postgresql",
		PostgreSQLURL: pgURL,
	})
	if err != nil {
		return err
	}

	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()

	logger.Info("parley-ferretdb started", "listen", listen, "postgresql", redact(pgURL), "pid", os.Getpid())

	select {
	case err = <-done:
		// Run returned without a signal: the listener failed.
		if err == nil {
			err = errors.New("listener stopped unexpectedly")
		}
		return err
	case <-ctx.Done():
	}

	logger.Info("parley-ferretdb: signal received, shutting down")
	select {
	case err = <-done:
		logger.Info("parley-ferretdb stopped")
		return err
	case <-time.After(20 * time.Second):
		return errors.New("graceful shutdown timed out")
	}
}

// redact hides a password in a postgres:// URL for logging.
func redact(u string) string {
	at := strings.LastIndex(u, "@")
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return u
	}
	userinfo := u[scheme+3 : at]
	if i := strings.Index(userinfo, ":"); i >= 0 {
		return u[:scheme+3] + userinfo[:i] + ":xxxxx" + u[at:]
	}
	return u
}

func probe(uri string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		lastErr = probeOnce(uri)
		if lastErr == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %w", timeout, lastErr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func probeOnce(uri string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	opts := options.Client().ApplyURI(uri).
		SetServerSelectionTimeout(2 * time.Second).
		SetConnectTimeout(2 * time.Second)
	c, err := mongo.Connect(ctx, opts)
	if err != nil {
		return err
	}
	defer c.Disconnect(context.Background()) //nolint:errcheck // best effort

	if err = c.Database("admin").RunCommand(ctx, bson.D{{Key: "ping", Value: 1}}).Err(); err != nil {
		return err
	}
	if _, err = c.ListDatabaseNames(ctx, bson.D{}); err != nil {
		return err
	}
	return nil
}
