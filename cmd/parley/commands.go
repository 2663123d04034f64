package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/parleychat/parley/internal/config"
	"github.com/parleychat/parley/internal/ferretpg"
	"github.com/parleychat/parley/internal/mongometrics"
	"github.com/parleychat/parley/internal/msgstore"
	"github.com/parleychat/parley/persister"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/front"
	"github.com/parleychat/parley/server/tlsconf"
)

func newLogger(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("log-format must be json or text, got %q", format)
}

func logFlags(fs *flag.FlagSet) (format, level *string) {
	return fs.String("log-format", "json", "log format: json or text"), fs.String("log-level", "info", "log level: debug, info, warn, error")
}

func runServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("parley server", flag.ContinueOnError)
	var cfg server.Config
	cfg.Flags(fs)
	format, level := logFlags(fs)
	if err := config.Parse(fs, args); err != nil {
		return err
	}
	log, err := newLogger(*format, *level)
	if err != nil {
		return err
	}
	return server.Run(ctx, cfg, log, server.Deps{})
}

func runPersister(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("parley persister", flag.ContinueOnError)
	var (
		cfg     persister.Config
		brokers = config.List{"127.0.0.1:9092"}
	)
	fs.Var(&brokers, "kafka-brokers", "comma-separated Kafka seed brokers")
	fs.StringVar(&cfg.Topic, "topic", persister.DefaultTopic, "Kafka topic of messages")
	fs.StringVar(&cfg.DLQTopic, "dlq-topic", persister.DefaultDLQTopic, "topic for records that can never be written")
	fs.StringVar(&cfg.Group, "group", persister.DefaultGroup, "consumer group id")
	fs.IntVar(&cfg.MaxBatch, "max-batch", persister.DefaultMaxBatch, "records per store write")
	fs.DurationVar(&cfg.FetchMaxWait, "fetch-max-wait", persister.DefaultFetchMaxWait, "longest time the broker holds a fetch waiting for fetch-min-bytes of new records (10ms-5s)")
	minBytes := fs.Int("fetch-min-bytes", persister.DefaultFetchMinBytes, "new record bytes the broker waits for (up to fetch-max-wait) before answering a fetch: more gives fewer, larger store writes and adds up to fetch-max-wait of store delay (1 to 1048576, a partition's most per fetch)")
	partitions := fs.Int("partitions", persister.DefaultPartitions, "partitions of the topics when they are created")
	mongoURI := fs.String("mongo-uri", "mongodb://127.0.0.1:27017", "MongoDB-protocol store URI")
	database := fs.String("database", "parley", "database name")
	ferretPG := fs.String("ferretdb-postgres-url", "", "only when the store is FerretDB 1.x on PostgreSQL: that PostgreSQL's URL, as FerretDB's user; at start the persister creates there the GIN indexes of the messages collection that FerretDB cannot (empty: off)")
	chunk := fs.Int("chunk-size", msgstore.DefaultChunkSize, "documents per insert command (FerretDB's own batch by default: one SQL INSERT)")
	inFlight := fs.Int("insert-in-flight", msgstore.DefaultMaxInFlight, "insert commands in flight at once, shared by all partitions (records of several partitions share a command)")
	linger := fs.Duration("insert-linger", msgstore.DefaultLinger, "how long records that do not fill a chunk wait for more (the other partitions of the same fetch) before their insert command starts (0 to 1s)")
	sessionTimeout := fs.Duration("session-timeout", 10*time.Second, "consumer group session timeout: how soon a crashed persister's partitions move to another")
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:9464", "address of /metrics and /healthz (empty: off)")
	withPprof := fs.Bool("pprof", false, "serve net/http/pprof under /debug/pprof/ on metrics-addr (for profiling; keep off in production)")
	var tlsFiles tlsconf.Files // TLS on metrics-addr
	tlsFiles.Flags(fs)
	format, level := logFlags(fs)
	if err := config.Parse(fs, args); err != nil {
		return err
	}
	cfg.Brokers = brokers
	cfg.Partitions = int32(*partitions)
	// Flag checks come before anything is dialled.
	switch {
	case *minBytes < 1 || *minBytes > persister.MaxFetchMinBytes:
		return fmt.Errorf("fetch-min-bytes: %d is outside 1..%d", *minBytes, persister.MaxFetchMinBytes)
	case cfg.FetchMaxWait < persister.MinFetchMaxWait || cfg.FetchMaxWait > persister.MaxFetchMaxWait:
		return fmt.Errorf("fetch-max-wait: %s is outside %s..%s", cfg.FetchMaxWait, persister.MinFetchMaxWait, persister.MaxFetchMaxWait)
	case *inFlight < 1:
		return fmt.Errorf("insert-in-flight: %d is not positive", *inFlight)
	case *linger < 0 || *linger > time.Second:
		return fmt.Errorf("insert-linger: %s is outside 0..1s", *linger)
	case *withPprof && *metricsAddr == "":
		return errors.New("pprof: needs metrics-addr, where it is served")
	}
	if err := ferretpg.ValidateURL(*ferretPG); err != nil {
		return fmt.Errorf("ferretdb-postgres-url: %w", err)
	}
	cfg.FetchMinBytes = int32(*minBytes)
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := tlsFiles.Validate(); err != nil {
		return err
	}
	log, err := newLogger(*format, *level)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var metricsTLS *tls.Config // nil: cleartext
	if *metricsAddr != "" && tlsFiles.Enabled() {
		if metricsTLS, err = tlsFiles.ServerConfig(log, reg); err != nil {
			return err
		}
	}
	mc, err := mongo.Connect(options.Client().ApplyURI(*mongoURI).SetTimeout(30 * time.Second).SetMonitor(mongometrics.Monitor(reg)))
	if err != nil {
		return fmt.Errorf("mongo-uri: %w", err)
	}
	defer func() { _ = mc.Disconnect(context.Background()) }()
	store := msgstore.New(mc.Database(*database), msgstore.Options{ChunkSize: *chunk, MaxInFlight: *inFlight, Linger: *linger, Log: log, FerretDBPostgresURL: *ferretPG})
	// No short deadline: the first start after an upgrade migrates older
	// messages to the block layout, minutes on a large store.
	if err := store.EnsureIndexes(ctx); err != nil {
		return fmt.Errorf("message indexes: %w", err)
	}
	stopIndexing := ferretpg.Start(ctx, log, *ferretPG, *database, store.Lookups(), nil)
	defer stopIndexing()
	p, err := persister.New(cfg, store, log, reg, kgo.SessionTimeout(*sessionTimeout))
	if err != nil {
		return err
	}
	if *metricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
		if *withPprof {
			front.HandlePprof(mux)
		}
		srv := &http.Server{Addr: *metricsAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second, TLSConfig: metricsTLS}
		go func() {
			var err error
			if metricsTLS != nil {
				err = srv.ListenAndServeTLS("", "") // the certificate comes from metricsTLS.GetCertificate
			} else {
				err = srv.ListenAndServe()
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics listener", "err", err)
			}
		}()
		defer srv.Close()
	}
	log.Info("parley persister starting", "topic", cfg.Topic, "group", cfg.Group, "database", *database, "metrics_addr", *metricsAddr, "metrics_tls", metricsTLS != nil)
	return p.Run(ctx)
}
