// Package server wires one Parley server instance: gRPC services (auth,
// rooms, chat), health and reflection, the fan-out subscription, the Kafka
// producer and the HTTP front, with graceful shutdown.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/config"
	"github.com/parleychat/parley/internal/ferretpg"
	"github.com/parleychat/parley/internal/mongometrics"
	"github.com/parleychat/parley/internal/msgstore"
	"github.com/parleychat/parley/server/apidocs"
	"github.com/parleychat/parley/server/apierr"
	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/chat"
	"github.com/parleychat/parley/server/fanout"
	"github.com/parleychat/parley/server/front"
	"github.com/parleychat/parley/server/msglog"
	"github.com/parleychat/parley/server/rooms"
	"github.com/parleychat/parley/server/rpcmetrics"
	"github.com/parleychat/parley/server/store"
	"github.com/parleychat/parley/server/tlsconf"
)

// Config configures a server instance.
type Config struct {
	Addr         string
	TLS          tlsconf.Files // --tls-cert, --tls-key: TLS on Addr (both or neither)
	RedisURL     string
	RedisPrefix  string
	DedupeTTL    time.Duration
	KafkaBrokers config.List
	Topic        string
	Partitions   int
	MongoURI     string
	Database     string
	// FerretDBPostgresURL, when set, is the PostgreSQL behind a FerretDB 1.x
	// store: the server indexes its lookups and page orders there at start,
	// then reads the keys of large pages from it (internal/ferretpg).
	FerretDBPostgresURL string
	TokenKey            string
	AccessTTL           time.Duration
	RefreshTTL          time.Duration
	Argon2Memory        uint
	Argon2Time          uint
	SendTimeout         time.Duration
	ProduceLinger       time.Duration
	RedisFlushDelay     time.Duration
	AllowedOrigins      config.List
	WebDir              string
	ShutdownGrace       time.Duration
	RequestTimeout      time.Duration
	Pprof               bool
	LoginAttempts       int
	AddressAttempts     int
	Chat                chat.Config
}

// Flags registers the configuration flags on fs (each also read from its
// PARLEY_* environment variable, see internal/config).
func (c *Config) Flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:8080", "listen address for gRPC, grpc-web, REST, metrics and the web app")
	c.TLS.Flags(fs)
	fs.StringVar(&c.RedisURL, "redis-url", "redis://127.0.0.1:6379", "Redis URL")
	fs.StringVar(&c.RedisPrefix, "redis-prefix", "parley:", "prefix of Redis keys and channels")
	fs.DurationVar(&c.DedupeTTL, "dedupe-ttl", 24*time.Hour, "how long a client_msg_id is remembered for retries")
	c.KafkaBrokers = config.List{"127.0.0.1:9092"}
	fs.Var(&c.KafkaBrokers, "kafka-brokers", "comma-separated Kafka seed brokers")
	fs.StringVar(&c.Topic, "topic", "parley.messages", "Kafka topic of messages")
	fs.IntVar(&c.Partitions, "partitions", 12, "partitions of the topic when it is created")
	fs.StringVar(&c.MongoURI, "mongo-uri", "mongodb://127.0.0.1:27017", "MongoDB-protocol store URI")
	fs.StringVar(&c.Database, "database", "parley", "database name")
	fs.StringVar(&c.FerretDBPostgresURL, "ferretdb-postgres-url", "", "only when the store is FerretDB 1.x on PostgreSQL: that PostgreSQL's URL, as FerretDB's user; at start the server creates there the GIN indexes FerretDB cannot, so that lookups by id, username or room do not scan whole tables, reads a set of ids one id at a time (FerretDB does not push $in down), and reads pages of rooms and members by ranges of indexes it adds there (FerretDB pushes neither sort nor limit down) (empty: off)")
	fs.StringVar(&c.TokenKey, "token-key", "", "access token signing key, at least 32 bytes (required)")
	fs.DurationVar(&c.AccessTTL, "access-ttl", 15*time.Minute, "access token lifetime")
	fs.DurationVar(&c.RefreshTTL, "refresh-ttl", 30*24*time.Hour, "refresh token lifetime")
	fs.UintVar(&c.Argon2Memory, "argon2-memory-kib", uint(auth.DefaultArgon2.MemoryKiB), "argon2id memory cost (KiB)")
	fs.UintVar(&c.Argon2Time, "argon2-time", uint(auth.DefaultArgon2.Time), "argon2id passes")
	fs.DurationVar(&c.SendTimeout, "send-timeout", 10*time.Second, "how long a send waits for Kafka before failing with Unavailable")
	fs.DurationVar(&c.RedisFlushDelay, "redis-flush-delay", 100*time.Microsecond, "while several Redis commands are in flight, how long the client waits after a write for more commands to send with the next one (less CPU for Redis under load, for up to this much latency; 0: no wait)")
	fs.DurationVar(&c.ProduceLinger, "produce-linger", 10*time.Millisecond, "how long the Kafka producer waits to fill a batch (adds up to this to a send's ack; 0: no wait)")
	fs.Var(&c.AllowedOrigins, "allowed-origins", "browser origins allowed to use grpc-web (comma-separated; * for any)")
	fs.StringVar(&c.WebDir, "web-dir", "webclient/dist", "directory of the built web app served at /")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve net/http/pprof under /debug/pprof/ (for profiling; keep off in production)")
	fs.DurationVar(&c.RequestTimeout, "request-timeout", 30*time.Second, "deadline of a unary call that brings none (or a later one)")
	fs.IntVar(&c.LoginAttempts, "login-attempts", 10, "sign-up/login attempts per minute per username")
	fs.IntVar(&c.AddressAttempts, "address-attempts", 60, "sign-up/login attempts per minute per client address")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", 10*time.Second, "hard deadline for a graceful stop")
	fs.IntVar(&c.Chat.MaxMessageBytes, "max-message-bytes", 4096, fmt.Sprintf("largest message body in bytes (at most %d: the whole message must fit in a Kafka record, 1 MB by default, and a 1 MiB gRPC frame)", chat.MaxBodyLimit))
	fs.IntVar(&c.Chat.StreamQueue, "stream-queue", 1024, "outgoing frames queued per stream before it is dropped as too slow")
	fs.DurationVar(&c.Chat.DeliveryTick, "delivery-tick", 2*time.Millisecond, "gather live messages this long before waking the streams (fewer writes per connection under load; 0: at once)")
	fs.IntVar(&c.Chat.MaxRoomsPerStream, "max-rooms-per-stream", 200, "subscriptions per stream")
	fs.Float64Var(&c.Chat.SendRate, "send-rate", 20, "sends per second per user (per instance)")
	fs.IntVar(&c.Chat.SendBurst, "send-burst", 50, "send burst per user")
	fs.IntVar(&c.Chat.MaxStreamsPerUser, "max-streams-per-user", 20, "open streams per user (per instance)")
	fs.Float64Var(&c.Chat.FrameRate, "frame-rate", 50, "client frames per second per stream")
	fs.IntVar(&c.Chat.FrameBurst, "frame-burst", 100, "client frame burst per stream")
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	switch {
	case len(c.TokenKey) < 32:
		return fmt.Errorf("token-key (PARLEY_TOKEN_KEY) must be at least 32 bytes, got %d", len(c.TokenKey))
	case len(c.KafkaBrokers) == 0:
		return errors.New("kafka-brokers must name at least one broker")
	case c.Topic == "":
		return errors.New("topic must not be empty")
	case c.Partitions < 1:
		return fmt.Errorf("partitions must be positive, got %d", c.Partitions)
	case c.AccessTTL < time.Minute:
		return fmt.Errorf("access-ttl must be at least 1m, got %s", c.AccessTTL)
	case c.RequestTimeout < time.Second:
		return fmt.Errorf("request-timeout must be at least 1s, got %s", c.RequestTimeout)
	case c.LoginAttempts < 1 || c.AddressAttempts < 1:
		return fmt.Errorf("login-attempts and address-attempts must be positive")
	case c.SendTimeout < 100*time.Millisecond:
		return fmt.Errorf("send-timeout must be at least 100ms, got %s", c.SendTimeout)
	case c.ProduceLinger < 0 || c.ProduceLinger > time.Second:
		return fmt.Errorf("produce-linger must be between 0 and 1s, got %s", c.ProduceLinger)
	case c.RedisFlushDelay < 0 || c.RedisFlushDelay > 10*time.Millisecond:
		return fmt.Errorf("redis-flush-delay must be between 0 and 10ms, got %s", c.RedisFlushDelay)
	}
	if err := ferretpg.ValidateURL(c.FerretDBPostgresURL); err != nil {
		return fmt.Errorf("ferretdb-postgres-url: %w", err)
	}
	return c.Chat.WithDefaults().Validate()
}

// Deps lets a caller (parley dev, tests) supply in-process backends; nil
// fields are built from Config.
type Deps struct {
	Redis     rueidis.Client
	KafkaOpts []kgo.Opt
	Registry  *prometheus.Registry
	// Listener, when set, is used instead of listening on Config.Addr.
	Listener net.Listener
	// Started, when set, is called with the serving address once the server accepts requests.
	Started func(addr string)
}

// Run serves until ctx is done, then stops gracefully.
func Run(ctx context.Context, cfg Config, log *slog.Logger, deps Deps) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	reg := deps.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	var tlsCfg *tls.Config // nil: cleartext
	if cfg.TLS.Enabled() {
		var err error
		if tlsCfg, err = cfg.TLS.ServerConfig(log, reg); err != nil {
			return err
		}
	}

	// Backends.
	rc := deps.Redis
	if rc == nil {
		opt, err := rueidis.ParseURL(cfg.RedisURL)
		if err != nil {
			return fmt.Errorf("redis-url: %w", err)
		}
		opt.MaxFlushDelay = cfg.RedisFlushDelay
		if rc, err = rueidis.NewClient(opt); err != nil {
			return fmt.Errorf("connect redis %s: %w", cfg.RedisURL, err)
		}
		defer rc.Close()
	}
	mc, err := mongo.Connect(options.Client().ApplyURI(cfg.MongoURI).SetTimeout(10 * time.Second).SetMonitor(mongometrics.Monitor(reg)))
	if err != nil {
		return fmt.Errorf("mongo-uri: %w", err)
	}
	defer func() { _ = mc.Disconnect(context.Background()) }()
	db := mc.Database(cfg.Database)
	st := store.New(db)
	msgs := msgstore.New(db, msgstore.Options{Log: log, FerretDBPostgresURL: cfg.FerretDBPostgresURL})
	initCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := st.EnsureIndexes(initCtx); err != nil {
		return fmt.Errorf("store indexes: %w", err)
	}
	// Not bounded by initCtx: the first start after an upgrade migrates
	// older messages to the block layout, minutes on a large store.
	if err := msgs.EnsureIndexes(ctx); err != nil {
		return fmt.Errorf("message indexes: %w", err)
	}
	// In the background: a first build on a large collection may take
	// minutes, and lookups work (slowly) without the indexes.
	// Once FerretDB's lookups are indexed, a set of ids is read one id at a
	// time (store.UsePointLookups), and pages of rooms and members by a
	// range of an index in FerretDB's PostgreSQL (store.UsePager).
	indexed := func() {}
	if cfg.FerretDBPostgresURL != "" {
		pager, err := ferretpg.NewPager(cfg.FerretDBPostgresURL, cfg.Database, reg)
		if err != nil {
			return fmt.Errorf("ferretdb-postgres-url: %w", err)
		}
		defer pager.Close()
		indexed = func() { st.UsePager(pager) } // and with it point lookups
	}
	stopIndexing := ferretpg.Start(ctx, log, cfg.FerretDBPostgresURL, cfg.Database, append(st.Lookups(), msgs.Lookups()...), indexed)
	defer stopIndexing()
	producer, err := msglog.New(msglog.Config{
		Brokers: cfg.KafkaBrokers, Topic: cfg.Topic, Partitions: int32(cfg.Partitions), ReplicationFactor: 1,
		DeliveryTimeout: cfg.SendTimeout, Linger: cfg.ProduceLinger,
	}, log, reg, deps.KafkaOpts...)
	if err != nil {
		return err
	}
	if err := producer.EnsureTopic(initCtx); err != nil {
		producer.Close(context.Background())
		return err
	}
	if err := producer.CheckRecordLimit(initCtx, cfg.Chat.WithDefaults().MaxMessageBytes); err != nil {
		producer.Close(context.Background())
		return err
	}

	// Services.
	issuer, err := auth.NewIssuer([]byte(cfg.TokenKey), cfg.AccessTTL)
	if err != nil {
		return err
	}
	authSvc, err := auth.NewService(st, issuer, auth.ServiceConfig{
		Argon2:           auth.Argon2Params{MemoryKiB: uint32(cfg.Argon2Memory), Time: uint32(cfg.Argon2Time), Threads: 1},
		RefreshTTL:       cfg.RefreshTTL,
		UsernameAttempts: cfg.LoginAttempts,
		AddressAttempts:  cfg.AddressAttempts,
	}, log)
	if err != nil {
		return err
	}
	hub := fanout.NewHub(reg)
	broker := fanout.NewRedis(rc, fanout.Options{Prefix: cfg.RedisPrefix, DedupeTTL: cfg.DedupeTTL}, log, reg)
	roomSvc := rooms.NewService(st, broker, broker)
	cfg.Chat.SendTimeout = cfg.SendTimeout
	chatSvc, err := chat.NewService(cfg.Chat, broker, producer, msgs, st, hub, log, reg)
	if err != nil {
		return err
	}
	roomSvc.OnLeave = chatSvc.ForgetMember

	srvMetrics := rpcmetrics.New()
	reg.MustRegister(srvMetrics)
	errUnary, errStream := apierr.Interceptors(log)
	authUnary, authStream := issuer.Interceptors(map[string]bool{
		parleyv1.AuthService_SignUp_FullMethodName:  true,
		parleyv1.AuthService_Login_FullMethodName:   true,
		parleyv1.AuthService_Refresh_FullMethodName: true,
		// Health and reflection are for probes and grpcurl: no token.
		healthpb.Health_Check_FullMethodName:                             true,
		healthpb.Health_Watch_FullMethodName:                             true,
		healthpb.Health_List_FullMethodName:                              true,
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      true,
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": true,
	})
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(srvMetrics.UnaryServerInterceptor(), errUnary, deadline(cfg.RequestTimeout), authUnary),
		grpc.ChainStreamInterceptor(srvMetrics.StreamServerInterceptor(), errStream, authStream),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.MaxRecvMsgSize(1<<20),
		grpc.ForceServerCodecV2(chat.NewCodec()),
	)
	parleyv1.RegisterAuthServiceServer(gs, authSvc)
	parleyv1.RegisterRoomServiceServer(gs, roomSvc)
	parleyv1.RegisterChatServiceServer(gs, chatSvc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	srvMetrics.Init(gs)

	ln := deps.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return fmt.Errorf("listen %s: %w", cfg.Addr, err)
		}
	}
	addr := ln.Addr().String()

	// The REST gateway calls this instance's gRPC server in memory (the
	// caller's address travels in X-Forwarded-For, see auth.ClientAddr).
	gwPipe := front.NewPipe()
	gwConn, err := grpc.NewClient("passthrough:///parley-gateway",
		grpc.WithContextDialer(gwPipe.DialContext),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer gwConn.Close()
	gw := runtime.NewServeMux(
		// Unset message fields are left out instead of sent as null (which
		// the OpenAPI schema does not allow); scalars and lists still appear.
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{Marshaler: &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{EmitDefaultValues: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		}}),
		runtime.WithRoutingErrorHandler(routingError),
	)
	for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		parleyv1.RegisterAuthServiceHandler, parleyv1.RegisterRoomServiceHandler, parleyv1.RegisterChatServiceHandler,
	} {
		if err := register(ctx, gw, gwConn); err != nil {
			return err
		}
	}

	var ready atomic.Pointer[error] // nil pointer: ready
	starting := errors.New("starting")
	ready.Store(&starting)
	readyFn := func() error {
		if e := ready.Load(); e != nil {
			return *e
		}
		return nil
	}
	httpSrv := &http.Server{
		Handler: front.Handler(gs, front.Options{
			AllowedOrigins: cfg.AllowedOrigins,
			Gateway:        gw,
			Metrics:        promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
			Ready:          readyFn,
			Pprof:          cfg.Pprof,
			Web:            apidocs.Handler(webHandler(cfg.WebDir)), // /openapi.json, /docs/
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}

	g, gctx := errgroup.WithContext(ctx)
	serveCtx, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	var grpcL, httpL net.Listener
	if tlsCfg != nil {
		grpcL, httpL = front.SplitTLS(serveCtx, ln, tlsCfg, log)
	} else {
		grpcL, httpL = front.Split(serveCtx, ln, log)
	}
	g.Go(func() error { return broker.Run(gctx, hub) })
	g.Go(func() error { return chatSvc.Run(gctx) })
	for _, l := range []net.Listener{grpcL, gwPipe} {
		g.Go(func() error {
			if err := gs.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("grpc serve: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		if err := httpSrv.Serve(httpL); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("http serve: %w", err)
		}
		return nil
	})
	g.Go(func() error { // readiness: Redis subscription, Kafka, store
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			err := checkReady(gctx, broker, producer, mc)
			if err != nil {
				ready.Store(&err)
				hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
			} else {
				ready.Store(nil)
				hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
			}
			for _, svc := range []string{parleyv1.AuthService_ServiceDesc.ServiceName, parleyv1.RoomService_ServiceDesc.ServiceName, parleyv1.ChatService_ServiceDesc.ServiceName} {
				if err != nil {
					hs.SetServingStatus(svc, healthpb.HealthCheckResponse_NOT_SERVING)
				} else {
					hs.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
				}
			}
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
			}
		}
	})
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down", "grace", cfg.ShutdownGrace)
		hs.Shutdown()
		chatSvc.Shutdown()
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
		defer cancel()
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		_ = httpSrv.Shutdown(sctx)
		select {
		case <-stopped:
		case <-sctx.Done():
			gs.Stop()
		}
		stopServing()
		producer.Close(sctx)
		return nil
	})
	log.Info("parley server listening", "addr", addr, "tls", tlsCfg != nil)
	if deps.Started != nil {
		deps.Started(addr)
	}
	return g.Wait()
}

// deadline bounds every unary call by d.
func deadline(d time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return h(ctx, req)
	}
}

func checkReady(ctx context.Context, b *fanout.Redis, p *msglog.Producer, mc *mongo.Client) error {
	if !b.Ready() {
		return errors.New("redis subscription is down")
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := p.Ping(cctx); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	if err := mc.Ping(cctx, nil); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// webHandler serves the built web app, falling back to index.html for client
// routes, or a short page saying how to build it.
func webHandler(dir string) http.Handler {
	if _, err := os.Stat(filepath.Join(dir, "index.html")); err != nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, "<!doctype html><title>Parley</title><h1>Parley is running</h1><p>The web app is not built (%s/index.html is missing): run <code>make web</code>. The API is here: gRPC with reflection, grpc-web, REST under <code>/v1/</code>.</p>", dir)
		})
	}
	files := http.FileServer(http.Dir(dir))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := filepath.Join(dir, filepath.Clean("/"+r.URL.Path))
		if _, err := os.Stat(p); err != nil && !strings.HasPrefix(r.URL.Path, "/assets/") {
			http.ServeFile(w, r, filepath.Join(dir, "index.html"))
			return
		}
		files.ServeHTTP(w, r)
	})
}

// routingError answers a wrong method on a known REST path with 405 and an
// Allow header (grpc-gateway's default is 501 Unimplemented), and every other
// routing error as the gateway does.
func routingError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, code int) {
	if code != http.StatusMethodNotAllowed {
		runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, code)
		return
	}
	if allow := apidocs.Allow(r.URL.Path); allow != "" {
		w.Header().Set("Allow", allow)
	}
	b, _ := m.Marshal(status.New(codes.Unimplemented, "method "+r.Method+" is not allowed here").Proto())
	w.Header().Set("Content-Type", m.ContentType(nil))
	w.WriteHeader(http.StatusMethodNotAllowed)
	_, _ = w.Write(b)
}
