package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"github.com/alicebob/miniredis/v2"
	"github.com/twmb/franz-go/pkg/kfake"
)

// stack holds the in-process stand-ins for Parley's backends: Redis
// (miniredis, in memory), Kafka (kfake, in memory) and a MongoDB-protocol store
// (embedded FerretDB on SQLite files under a directory, the only durable part).
type stack struct {
	Redis    *miniredis.Miniredis
	Kafka    *kfake.Cluster
	MongoURI string

	log        *slog.Logger
	stopFerret context.CancelFunc
	ferretDone chan error
}

// startStack starts the stand-ins in order: Redis, Kafka (with topics
// pre-created so that the server and the persister do not race to create
// them), FerretDB. On error, what was started is stopped again.
func startStack(sqliteDir string, topics []string, partitions int32, log *slog.Logger) (_ *stack, err error) {
	s := &stack{log: log}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	if s.Redis, err = miniredis.Run(); err != nil {
		return nil, fmt.Errorf("start miniredis: %w", err)
	}
	log.Info("redis stand-in (miniredis, in memory) started", "addr", s.Redis.Addr())

	if s.Kafka, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topics...)); err != nil {
		return nil, fmt.Errorf("start kfake: %w", err)
	}
	log.Info("kafka stand-in (kfake, in memory) started", "brokers", s.Kafka.ListenAddrs(), "topics", topics, "partitions", partitions)

	if err := os.MkdirAll(sqliteDir, 0o755); err != nil {
		return nil, fmt.Errorf("ferretdb data dir: %w", err)
	}
	abs, err := filepath.Abs(sqliteDir)
	if err != nil {
		return nil, err
	}
	// A "file:" URI of the directory; it must end with "/". url.URL escapes
	// spaces and the like.
	sqliteURL := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs) + "/"}).String()
	f, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		// FerretDB logs every connection at info level: keep it to warnings.
		Logger:    slog.New(quietFerret{log.With("component", "ferretdb").Handler()}),
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
	})
	if err != nil {
		return nil, fmt.Errorf("start ferretdb (sqlite %s): %w", abs, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopFerret, s.ferretDone = cancel, make(chan error, 1)
	go func() { s.ferretDone <- f.Run(ctx) }()
	s.MongoURI = f.MongoDBURI() // the listener is open since New
	log.Info("store stand-in (FerretDB on SQLite) started", "uri", s.MongoURI, "dir", abs)
	return s, nil
}

// Close stops the stand-ins in the reverse order of start. Every client of
// FerretDB must be disconnected first: FerretDB waits for open connections.
func (s *stack) Close() {
	if s.stopFerret != nil {
		s.stopFerret()
		select {
		case err := <-s.ferretDone:
			if err != nil {
				s.log.Warn("ferretdb stopped with error", "err", err)
			}
		case <-time.After(15 * time.Second):
			s.log.Warn("ferretdb did not stop within 15s")
		}
		s.stopFerret = nil
	}
	if s.Kafka != nil {
		s.Kafka.Close()
		s.Kafka = nil
	}
	if s.Redis != nil {
		s.Redis.Close()
		s.Redis = nil
	}
}

// quietFerret keeps FerretDB's warnings and errors but drops its wire dumps:
// it logs every error reply ("Response header: ...", "Response message: ..."),
// including the expected ones (duplicate keys on redelivery, endSessions
// which it does not implement).
type quietFerret struct{ slog.Handler }

func (h quietFerret) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && h.Handler.Enabled(ctx, l)
}

func (h quietFerret) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "Response header:") || strings.HasPrefix(r.Message, "Response message:") {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h quietFerret) WithAttrs(as []slog.Attr) slog.Handler {
	return quietFerret{h.Handler.WithAttrs(as)}
}
func (h quietFerret) WithGroup(n string) slog.Handler { return quietFerret{h.Handler.WithGroup(n)} }
