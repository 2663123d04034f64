// Command parley-dev runs Parley in one process on embedded stand-ins, for
// `make run`: Redis (miniredis) and Kafka (kfake) in memory, the store in an
// embedded FerretDB on SQLite files under the data directory (./data of the
// repository by default), the Parley server and the persister.
//
//	cd devstack/parley-dev && go run . [-addr 127.0.0.1:8080] [-data DIR] [-reset]
//
// Users, rooms and messages survive a restart (they are in the SQLite files);
// Redis and Kafka state does not, which Parley handles: a room's sequence
// counter is re-created under a new epoch above the stored maximum. The token
// signing key is kept in the data directory so that tokens survive a restart.
//
// Ctrl-C stops the server first, then waits until the persister has stored
// everything in Kafka (lag 0), then stops the persister and the stand-ins. A
// second Ctrl-C kills the process.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/errgroup"

	"github.com/parleychat/parley/internal/msgstore"
	"github.com/parleychat/parley/persister"
	"github.com/parleychat/parley/server"
)

const rootModule = "github.com/parleychat/parley"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() { <-ctx.Done(); stop() }() // a second Ctrl-C kills the process
	err := run(ctx, os.Args[1:], os.Stdout, nil)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley-dev:", err)
		os.Exit(1)
	}
}

// run starts everything, prints the banner to out, calls started (if not nil)
// with the serving address, and stops when ctx is done.
func run(ctx context.Context, args []string, out io.Writer, started func(addr string)) error {
	root := repoRoot()
	fs := flag.NewFlagSet("parley-dev", flag.ContinueOnError)
	var cfg server.Config
	cfg.Flags(flag.NewFlagSet("server defaults", flag.ContinueOnError)) // only -addr is exposed
	addr := fs.String("addr", cfg.Addr, "listen address of gRPC, grpc-web, REST and the web app")
	dataDir := fs.String("data", filepath.Join(root, "data"), "directory of the durable state (FerretDB's SQLite files, the token key)")
	reset := fs.Bool("reset", false, "wipe the stored users, rooms, messages and token key before starting")
	drainTimeout := fs.Duration("drain-timeout", 30*time.Second, "on stop, how long to wait for the persister to store what is left in Kafka")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	// Take the port first, so that a busy one fails before anything starts.
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%s is already in use (another parley-dev running?): stop it or pick another address with -addr, e.g. -addr 127.0.0.1:8081", *addr)
		}
		return fmt.Errorf("listen %s: %w", *addr, err)
	}
	defer ln.Close()

	sqliteDir := filepath.Join(*dataDir, "ferretdb")
	keyFile := filepath.Join(*dataDir, "token-key")
	if *reset {
		log.Info("-reset: wiping stored data", "dir", *dataDir)
		if err := errors.Join(os.RemoveAll(sqliteDir), os.RemoveAll(keyFile)); err != nil {
			return fmt.Errorf("reset: %w", err)
		}
	}
	if err := os.MkdirAll(*dataDir, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	tokenKey, err := loadOrCreateKey(keyFile)
	if err != nil {
		return err
	}

	// Stand-ins.
	st, err := startStack(sqliteDir, []string{persister.DefaultTopic, persister.DefaultDLQTopic}, persister.DefaultPartitions, log)
	if err != nil {
		return err
	}
	defer st.Close()
	brokers := st.Kafka.ListenAddrs()
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{st.Redis.Addr()}, DisableCache: true, AlwaysRESP2: true})
	if err != nil {
		return fmt.Errorf("redis client: %w", err)
	}
	defer rc.Close()

	// One registry for both components (their metric names differ), served
	// by the server at /metrics.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Persister, writing to the store through its own client.
	mc, err := mongo.Connect(options.Client().ApplyURI(st.MongoURI).SetTimeout(30 * time.Second))
	if err != nil {
		return fmt.Errorf("store client: %w", err)
	}
	defer func() { _ = mc.Disconnect(context.Background()) }()
	// 40, not msgstore.DefaultChunkSize: this FerretDB runs on SQLite, and
	// the measurements behind 100 (and the check that FerretDB no longer
	// hangs on commands of 50 or more) were on PostgreSQL only.
	msgs := msgstore.New(mc.Database(cfg.Database), msgstore.Options{ChunkSize: 40, Log: log})
	// No short deadline: a data directory of an older version gets its
	// messages migrated to the block layout once.
	if err := msgs.EnsureIndexes(ctx); err != nil {
		return fmt.Errorf("message indexes: %w", err)
	}
	pcfg := persister.Config{Brokers: brokers}.WithDefaults()
	// Commit often so that the drain on stop sees the group catch up quickly.
	p, err := persister.New(pcfg, msgs, log.With("component", "persister"), reg, kgo.AutoCommitInterval(500*time.Millisecond))
	if err != nil {
		return err
	}

	// Server.
	cfg.Addr = ln.Addr().String()
	cfg.KafkaBrokers = brokers
	cfg.Topic = pcfg.Topic
	cfg.MongoURI = st.MongoURI
	cfg.TokenKey = tokenKey
	cfg.AllowedOrigins = []string{"*"}
	cfg.WebDir = filepath.Join(root, "webclient", "dist")
	deps := server.Deps{
		Redis:    rc,
		Registry: reg,
		Listener: ln,
		Started: func(a string) {
			printBanner(out, a, *dataDir)
			if started != nil {
				started(a)
			}
		},
	}

	// The persister runs until the server has stopped and the group has
	// caught up with the topic (or the drain timed out), so that nothing the
	// server acknowledged is lost with kfake's memory.
	pctx, stopPersister := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPersister()
	persisterDone := make(chan struct{})
	sctx, stopServer := context.WithCancel(ctx)
	defer stopServer()
	var g errgroup.Group
	g.Go(func() error {
		defer close(persisterDone)
		err := p.Run(pctx)
		if pctx.Err() == nil { // stopped by itself: stop everything
			stopServer()
			if err == nil {
				err = errors.New("persister stopped unexpectedly")
			}
		}
		return err
	})
	g.Go(func() error {
		defer stopPersister()
		err := server.Run(sctx, cfg, log.With("component", "server"), deps)
		log.Info("server stopped")
		select {
		case <-persisterDone:
			return err
		default:
		}
		dctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() { // the persister dying ends the wait
			select {
			case <-persisterDone:
				cancel()
			case <-dctx.Done():
			}
		}()
		if derr := waitDrained(dctx, brokers, pcfg.Topic, pcfg.Group, *drainTimeout, log); derr != nil {
			log.Warn("stopping the persister before it stored everything: unstored messages are lost", "err", derr)
		}
		return err
	})
	err = g.Wait()
	_ = mc.Disconnect(context.Background())
	rc.Close()
	st.Close()
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		err = nil // stopped during start-up
	}
	if err == nil {
		log.Info("parley-dev stopped")
	}
	return err
}

func printBanner(out io.Writer, addr, dataDir string) {
	w := bufio.NewWriter(out)
	fmt.Fprintf(w, `
  Parley is running (embedded Redis, Kafka and FerretDB; data in %s)

    web app   http://%[2]s/
    REST      http://%[2]s/v1/
    gRPC      %[2]s (plaintext, reflection on; grpc-web on the same port)
    health    http://%[2]s/healthz  http://%[2]s/readyz  metrics http://%[2]s/metrics

  Try:
    grpcurl -plaintext -d '{"username":"ann","password":"correct-horse"}' %[2]s parley.v1.AuthService/SignUp
    curl -d '{"username":"ann","password":"correct-horse"}' http://%[2]s/v1/auth/login

  Ctrl-C to stop.

`, dataDir, addr)
	_ = w.Flush()
}

// loadOrCreateKey returns the token signing key stored in file, creating a
// random one the first time.
func loadOrCreateKey(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err == nil {
		key := string(bytes.TrimSpace(b))
		if len(key) < 32 {
			return "", fmt.Errorf("%s: token key shorter than 32 bytes (remove the file or use -reset)", file)
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	key := hex.EncodeToString(raw)
	if err := os.WriteFile(file, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("save token key: %w", err)
	}
	return key, nil
}

// repoRoot finds the Parley repository root: the first directory up from the
// working directory (`go run .` runs in devstack/parley-dev) whose go.mod is
// the root module, else the same search from this source file, else the
// working directory.
func repoRoot() string {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			if isRootModule(filepath.Join(d, "go.mod")) {
				return d
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if len(starts) > 0 {
		return starts[0]
	}
	return "."
}

func isRootModule(gomod string) bool {
	b, err := os.ReadFile(gomod)
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == rootModule
		}
	}
	return false
}
