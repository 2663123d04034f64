package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// ConnsConfig configures conns-v1: idle authenticated Connect streams, each
// subscribed to one room, against one server instance, then a trickle of
// messages per room.
type ConnsConfig struct {
	Addr string // the Parley server
	// MetricsURL is the server's /metrics (default http://<Addr>/metrics):
	// heap, goroutines, open streams, and RSS/CPU when Pids has no "server".
	MetricsURL string
	// HeapURL is the server's heap profile (default
	// http://<Addr>/debug/pprof/heap, served with --pprof; "-" for none).
	// Fetching it with gc=1 collects garbage before the heap is measured.
	HeapURL string
	// HeapProfiles, when set, is a path prefix: the heap profile at each
	// level is written to <prefix><streams>.pb.gz.
	HeapProfiles string
	// Levels are the stream counts to measure, ascending (10000, 50000).
	// Each must be a multiple of MembersPerRoom.
	Levels []int
	// StreamsPerUser is how many streams one user holds (the server's
	// --max-streams-per-user must allow it): sign-up is slow by design
	// (argon2id), so a few users hold many streams each.
	StreamsPerUser int // 1000
	MembersPerRoom int // streams per room (100)
	UsersPerRoom   int // distinct users among a room's streams (10)
	// StreamsPerConn is how many streams share one HTTP/2 connection.
	StreamsPerConn  int // 100
	OpenConcurrency int // streams being opened and subscribed at once (64)
	Settle          time.Duration
	Idle            time.Duration // CPU measured over this idle time (10s)
	Trickle         time.Duration // measured trickle time (10s)
	TrickleRate     float64       // msgs/s per room (1)
	Grace           time.Duration // a trickle message later than this is lost (5s)
	BodyBytes       int           // 100
	Pids            map[string]int
	Progress        io.Writer
}

func (c *ConnsConfig) defaults() {
	setInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setInt(&c.StreamsPerUser, 1000)
	setInt(&c.MembersPerRoom, 100)
	setInt(&c.UsersPerRoom, 10)
	setInt(&c.StreamsPerConn, 100)
	setInt(&c.OpenConcurrency, 64)
	setInt(&c.BodyBytes, 100)
	setDur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	setDur(&c.Settle, 5*time.Second)
	setDur(&c.Idle, 10*time.Second)
	setDur(&c.Trickle, 10*time.Second)
	setDur(&c.Grace, 5*time.Second)
	if c.TrickleRate == 0 {
		c.TrickleRate = 1
	}
	if len(c.Levels) == 0 {
		c.Levels = []int{10_000, 50_000}
	}
	if c.MetricsURL == "" {
		c.MetricsURL = "http://" + c.Addr + "/metrics"
	}
	if c.HeapURL == "" {
		c.HeapURL = "http://" + c.Addr + "/debug/pprof/heap"
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Pids == nil {
		c.Pids = map[string]int{}
	}
}

// Validate names the bad field (after defaults).
func (c *ConnsConfig) Validate() error {
	c.defaults()
	switch {
	case c.Addr == "":
		return errors.New("addr: the Parley server to load")
	case c.MembersPerRoom < 1 || c.UsersPerRoom < 1 || c.StreamsPerUser < 1 || c.StreamsPerConn < 1:
		return errors.New("members-per-room, users-per-room, streams-per-user and streams-per-conn must be positive")
	case c.UsersPerRoom > c.MembersPerRoom:
		return errors.New("users-per-room cannot exceed members-per-room")
	case c.TrickleRate <= 0 || c.BodyBytes < 32:
		return errors.New("trickle-rate must be positive and body-bytes at least 32")
	}
	prev := 0
	for _, l := range c.Levels {
		if l <= prev || l%c.MembersPerRoom != 0 {
			return fmt.Errorf("levels: %d must be ascending multiples of members-per-room (%d)", l, c.MembersPerRoom)
		}
		prev = l
	}
	return nil
}

// ConnsSample is the server's state at one moment.
type ConnsSample struct {
	Streams     float64            `json:"server_streams"` // parley_chat_streams
	RSSMB       float64            `json:"rss_mb"`
	HeapInuseMB float64            `json:"heap_inuse_mb"` // after a forced GC when the heap profile is served
	StackMB     float64            `json:"stack_inuse_mb"`
	Goroutines  float64            `json:"goroutines"`
	CPU         map[string]float64 `json:"cpu_percent"` // over the idle window
}

// ConnsTrickle is the trickle at one level.
type ConnsTrickle struct {
	RatePerRoom   float64            `json:"rate_per_room"`
	SentPerS      float64            `json:"sent_per_s"`
	DeliveredPerS float64            `json:"delivered_per_s"`
	Expected      int64              `json:"expected"`
	Delivered     int64              `json:"delivered"`
	Lost          int64              `json:"lost"`
	Dup           int64              `json:"dup_or_reordered"`
	Failed        int64              `json:"send_failed"`
	Latency       Latency            `json:"latency"`
	CPU           map[string]float64 `json:"cpu_percent"`
	RSSMB         float64            `json:"rss_mb"`
}

// ConnsLevel is one stream count's result.
type ConnsLevel struct {
	Streams          int          `json:"streams"`
	Conns            int          `json:"conns"`
	SourceAddrs      int          `json:"source_addrs"`
	Users            int          `json:"users"`
	Rooms            int          `json:"rooms"`
	OpenSeconds      float64      `json:"open_seconds"` // to open and subscribe the streams added at this level
	Idle             ConnsSample  `json:"idle"`
	RSSPerStreamKB   float64      `json:"rss_per_stream_kb"`
	HeapPerStreamKB  float64      `json:"heap_per_stream_kb"`
	StackPerStreamKB float64      `json:"stack_per_stream_kb"`
	Trickle          ConnsTrickle `json:"trickle"`
	HeapProfile      string       `json:"heap_profile,omitempty"`
}

// ConnsReport is a conns-v1 run.
type ConnsReport struct {
	Workload       string       `json:"workload"` // "conns-v1"
	Machine        string       `json:"machine"`
	Started        time.Time    `json:"started"`
	MembersPerRoom int          `json:"members_per_room"`
	UsersPerRoom   int          `json:"users_per_room"`
	StreamsPerUser int          `json:"streams_per_user"`
	StreamsPerConn int          `json:"streams_per_conn"`
	BodyBytes      int          `json:"body_bytes"`
	NoFileLimit    uint64       `json:"loadgen_nofile_limit"`
	Baseline       ConnsSample  `json:"baseline"`
	Levels         []ConnsLevel `json:"levels"`
	Notes          []string     `json:"notes,omitempty"`
}

// connsUser is a signed-up user.
type connsUser struct{ token string }

// trickleStats collects one level's trickle deliveries.
type trickleStats struct {
	hist      Hist
	delivered atomic.Int64
	dup       atomic.Int64
	failed    atomic.Int64
}

// connsRun is the state of one conns-v1 run.
type connsRun struct {
	cfg     ConnsConfig
	rep     *ConnsReport
	users   []connsUser
	rooms   []string
	members [][]int // user indexes of each room
	conns   []*grpc.ClientConn
	srcs    []net.IP
	perAddr int
	senders []parleyv1.ChatService_ConnectClient // the first stream of each room
	open    int                                  // streams opened so far
	subbed  atomic.Int64
	errMu   sync.Mutex
	lastErr error        // of a stream that ended unexpectedly
	ended   atomic.Int64 // streams ended unexpectedly
	trickle atomic.Pointer[trickleStats]
	ctx     context.Context
	wg      sync.WaitGroup
}

// RunConns runs conns-v1.
func RunConns(ctx context.Context, cfg ConnsConfig) (*ConnsReport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rep := &ConnsReport{Workload: "conns-v1", Machine: Machine(), Started: time.Now().UTC(),
		MembersPerRoom: cfg.MembersPerRoom, UsersPerRoom: cfg.UsersPerRoom, StreamsPerUser: cfg.StreamsPerUser,
		StreamsPerConn: cfg.StreamsPerConn, BodyBytes: cfg.BodyBytes}
	maxStreams := cfg.Levels[len(cfg.Levels)-1]
	maxConns := (maxStreams + cfg.StreamsPerConn - 1) / cfg.StreamsPerConn
	lim, err := raiseNoFile(uint64(maxConns + 256))
	rep.NoFileLimit = lim
	if err != nil {
		return rep, err
	}
	if pid, ok := cfg.Pids["server"]; ok {
		if n := openFilesLimit(pid); n > 0 && n < int64(maxConns+256) {
			return rep, fmt.Errorf("the server (pid %d) may open %d files, below the %d connections of this run: start it after `ulimit -n %d` or raise --streams-per-conn", pid, n, maxConns, maxConns+256)
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	r := &connsRun{cfg: cfg, rep: rep, ctx: sctx}
	defer func() {
		cancel()
		for _, cc := range r.conns {
			cc.Close()
		}
		r.wg.Wait()
	}()
	r.perAddr, r.srcs = sourceAddrs(maxConns)
	if err := r.setup(maxStreams); err != nil {
		return rep, err
	}
	fmt.Fprintf(cfg.Progress, "conns: baseline (no stream open)\n")
	if rep.Baseline, _, err = r.measure(0); err != nil {
		return rep, err
	}
	r.printSample("baseline", rep.Baseline)
	for _, level := range cfg.Levels {
		lv := ConnsLevel{Streams: level, Users: len(r.users), Rooms: level / cfg.MembersPerRoom}
		t0 := time.Now()
		if err := r.openTo(level); err != nil {
			return rep, err
		}
		lv.OpenSeconds = time.Since(t0).Seconds()
		lv.Conns = len(r.conns)
		lv.SourceAddrs = (len(r.conns) + r.perAddr - 1) / r.perAddr
		if lv.Idle, lv.HeapProfile, err = r.measure(level); err != nil {
			return rep, err
		}
		lv.RSSPerStreamKB = (lv.Idle.RSSMB - rep.Baseline.RSSMB) * 1024 / float64(level)
		lv.HeapPerStreamKB = (lv.Idle.HeapInuseMB - rep.Baseline.HeapInuseMB) * 1024 / float64(level)
		lv.StackPerStreamKB = (lv.Idle.StackMB - rep.Baseline.StackMB) * 1024 / float64(level)
		r.printSample(fmt.Sprintf("%d idle streams", level), lv.Idle)
		fmt.Fprintf(cfg.Progress, "conns: %d streams: %.1f KB RSS, %.1f KB heap and %.1f KB goroutine stacks per stream\n", level, lv.RSSPerStreamKB, lv.HeapPerStreamKB, lv.StackPerStreamKB)
		lv.Trickle = r.runTrickle(level)
		rep.Levels = append(rep.Levels, lv)
		if n := r.ended.Load(); n > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%d streams ended during the run (last error: %v)", n, r.streamErr()))
		}
	}
	return rep, nil
}

// raiseNoFile lifts this process's RLIMIT_NOFILE soft limit to its hard
// limit and reports an error naming the hard limit if it is below need.
func raiseNoFile(need uint64) (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return rl.Cur, fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", rl.Max, err)
		}
	}
	if rl.Cur < need {
		return rl.Cur, fmt.Errorf("open files: the hard limit is %d, this run needs about %d (one per connection): raise it (ulimit -Hn, as root) or use more --streams-per-conn", rl.Cur, need)
	}
	return rl.Cur, nil
}

// sourceAddrs returns how many connections one 127.0.0.x source address
// takes (three quarters of the ephemeral port range) and the addresses
// needed for conns connections.
func sourceAddrs(conns int) (perAddr int, ips []net.IP) {
	perAddr = 20_000
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			lo, _ := strconv.Atoi(f[0])
			hi, _ := strconv.Atoi(f[1])
			if hi > lo {
				perAddr = max((hi-lo+1)*3/4, 1)
			}
		}
	}
	for i := 0; i*perAddr < conns; i++ {
		ips = append(ips, net.IPv4(127, 0, byte((i+1)/256), byte((i+1)%256)))
	}
	return perAddr, ips
}

// conn returns the i-th connection, dialling from its source address.
func (r *connsRun) conn(i int) (*grpc.ClientConn, error) {
	for len(r.conns) <= i {
		src := &net.TCPAddr{IP: r.srcs[len(r.conns)/r.perAddr]}
		cc, err := grpc.NewClient(r.cfg.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				d := net.Dialer{LocalAddr: src}
				return d.DialContext(ctx, "tcp", addr)
			}))
		if err != nil {
			return nil, err
		}
		r.conns = append(r.conns, cc)
	}
	return r.conns[i], nil
}

// setup signs up the users and creates the rooms of the largest level:
// room k has UsersPerRoom distinct users, each holding MembersPerRoom /
// UsersPerRoom of its streams.
func (r *connsRun) setup(maxStreams int) error {
	cfg := r.cfg
	nRooms := maxStreams / cfg.MembersPerRoom
	g := cfg.UsersPerRoom
	nUsers := max((maxStreams+cfg.StreamsPerUser-1)/cfg.StreamsPerUser, g)
	for ; ; nUsers++ {
		load := make([]int, nUsers)
		worst := 0
		for k := 0; k < nRooms; k++ {
			for m := 0; m < cfg.MembersPerRoom; m++ {
				u := (k*g + m%g) % nUsers
				load[u]++
				worst = max(worst, load[u])
			}
		}
		if worst <= cfg.StreamsPerUser {
			break
		}
	}
	r.members = make([][]int, nRooms)
	for k := range r.members {
		for j := 0; j < g; j++ {
			r.members[k] = append(r.members[k], (k*g+j)%nUsers)
		}
	}
	cc, err := r.conn(0)
	if err != nil {
		return err
	}
	au, rs := parleyv1.NewAuthServiceClient(cc), parleyv1.NewRoomServiceClient(cc)
	run := strconv.FormatInt(time.Now().UnixNano()%1_000_000_000, 36)
	t0 := time.Now()
	fmt.Fprintf(cfg.Progress, "conns: setup: %d users (up to %d streams each), %d rooms of %d streams (%d users each)\n",
		nUsers, cfg.StreamsPerUser, nRooms, cfg.MembersPerRoom, g)
	r.users = make([]connsUser, nUsers)
	eg, ctx := errgroup.WithContext(r.ctx)
	eg.SetLimit(8)
	for u := range r.users {
		eg.Go(func() error {
			resp, err := au.SignUp(ctx, &parleyv1.SignUpRequest{Username: fmt.Sprintf("c%s-%d", run, u), Password: "bench-password"})
			if err != nil {
				return fmt.Errorf("sign up: %w", err)
			}
			r.users[u].token = resp.GetTokens().GetAccessToken()
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return err
	}
	r.rooms = make([]string, nRooms)
	var done atomic.Int64
	stop := ticker(2*time.Second, func() {
		fmt.Fprintf(cfg.Progress, "conns: setup: %d/%d rooms created and joined\n", done.Load(), nRooms)
	})
	defer stop()
	eg, ctx = errgroup.WithContext(r.ctx)
	eg.SetLimit(16)
	for k := range r.rooms {
		eg.Go(func() error {
			owner := r.users[r.members[k][0]].token
			room, err := rs.CreateRoom(authCtx(ctx, owner), &parleyv1.CreateRoomRequest{Name: fmt.Sprintf("conns %s %d", run, k)})
			if err != nil {
				return fmt.Errorf("create room: %w", err)
			}
			r.rooms[k] = room.GetRoom().GetRoomId()
			for _, u := range r.members[k][1:] {
				if _, err := rs.JoinRoom(authCtx(ctx, r.users[u].token), &parleyv1.JoinRoomRequest{RoomId: r.rooms[k]}); err != nil {
					return fmt.Errorf("join room: %w", err)
				}
			}
			done.Add(1)
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return err
	}
	r.senders = make([]parleyv1.ChatService_ConnectClient, nRooms)
	fmt.Fprintf(cfg.Progress, "conns: setup done in %s\n", time.Since(t0).Round(time.Millisecond))
	return nil
}

func (r *connsRun) streamErr() error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.lastErr
}

// openTo opens streams until level are open and subscribed.
func (r *connsRun) openTo(level int) error {
	cfg := r.cfg
	from := r.open
	t0 := time.Now()
	stop := ticker(2*time.Second, func() {
		n := int(r.subbed.Load())
		fmt.Fprintf(cfg.Progress, "conns: %d/%d streams subscribed (%.0f/s)\n", n, level, float64(n-from)/time.Since(t0).Seconds())
	})
	defer stop()
	// Connections are made here, in order, so that stream i is on
	// connection i / StreamsPerConn.
	for c := 0; c <= (level-1)/cfg.StreamsPerConn; c++ {
		if _, err := r.conn(c); err != nil {
			return err
		}
	}
	var eg errgroup.Group
	eg.SetLimit(cfg.OpenConcurrency)
	for i := from; i < level; i++ {
		eg.Go(func() error { return r.openStream(i) })
	}
	if err := eg.Wait(); err != nil {
		return err
	}
	r.open = level
	deadline := time.Now().Add(2 * time.Minute)
	for int(r.subbed.Load()) < level {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d streams subscribed after 2 minutes", r.subbed.Load(), level)
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintf(cfg.Progress, "conns: %d streams open and subscribed over %d connections from %d source address(es) in %s\n",
		level, len(r.conns), (len(r.conns)+r.perAddr-1)/r.perAddr, time.Since(t0).Round(time.Millisecond))
	return nil
}

// openStream opens stream i, subscribes it to its room and starts its
// reader. The stream lives until the run ends.
func (r *connsRun) openStream(i int) error {
	cfg := r.cfg
	k := i / cfg.MembersPerRoom
	user := r.members[k][(i%cfg.MembersPerRoom)%cfg.UsersPerRoom]
	s, err := parleyv1.NewChatServiceClient(r.conns[i/cfg.StreamsPerConn]).Connect(authCtx(r.ctx, r.users[user].token))
	if err != nil {
		return fmt.Errorf("connect stream %d: %w", i, err)
	}
	if err := s.Send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Subscribe{Subscribe: &parleyv1.Subscribe{RoomId: r.rooms[k]}}}); err != nil {
		return fmt.Errorf("subscribe stream %d: %w", i, err)
	}
	if i%cfg.MembersPerRoom == 0 {
		r.senders[k] = s
	}
	subscribed := make(chan error, 1)
	r.wg.Go(func() {
		var last int64
		for {
			f, err := s.Recv()
			if err != nil {
				if r.ctx.Err() == nil {
					r.ended.Add(1)
					r.errMu.Lock()
					r.lastErr = err
					r.errMu.Unlock()
					select {
					case subscribed <- fmt.Errorf("stream %d: %w", i, err):
					default:
					}
				}
				return
			}
			switch v := f.Frame.(type) {
			case *parleyv1.ConnectResponse_Subscribed:
				r.subbed.Add(1)
				subscribed <- nil
			case *parleyv1.ConnectResponse_SubscribeError:
				subscribed <- fmt.Errorf("subscribe stream %d: %s", i, v.SubscribeError.GetError().GetMessage())
			case *parleyv1.ConnectResponse_Message:
				st := r.trickle.Load()
				sent, ok := parseTrickleBody(v.Message.GetBody())
				if st == nil || !ok {
					continue
				}
				if seq := v.Message.GetSeq(); seq <= last {
					st.dup.Add(1)
					continue
				} else {
					last = seq
				}
				st.delivered.Add(1)
				st.hist.Record(time.Since(sent))
			case *parleyv1.ConnectResponse_SendAck:
				if st := r.trickle.Load(); st != nil && v.SendAck.GetError() != nil {
					st.failed.Add(1)
				}
			}
		}
	})
	// Wait for the answer, so that at most OpenConcurrency subscriptions
	// are being set up at once (each costs the server store lookups).
	select {
	case err := <-subscribed:
		return err
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("stream %d: not subscribed after 2 minutes", i)
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
}

// measure samples the server after Settle: CPU over Idle, then (after a
// forced GC when the heap profile is served) heap, goroutines, streams, RSS.
func (r *connsRun) measure(level int) (ConnsSample, string, error) {
	cfg := r.cfg
	if err := sleepUntil(r.ctx, time.Now().Add(cfg.Settle)); err != nil {
		return ConnsSample{}, "", err
	}
	pids := clonePids(cfg.Pids)
	m0, _ := scrapeMetrics(r.ctx, cfg.MetricsURL)
	t0 := time.Now()
	meter := newCPUMeter(pids)
	if err := sleepUntil(r.ctx, t0.Add(cfg.Idle)); err != nil {
		return ConnsSample{}, "", err
	}
	s := ConnsSample{CPU: meter.percent()}
	var profile string
	if cfg.HeapURL != "-" {
		var w io.Writer = io.Discard
		var f *os.File
		if cfg.HeapProfiles != "" {
			profile = fmt.Sprintf("%s%d.pb.gz", cfg.HeapProfiles, level)
			var err error
			if f, err = os.Create(profile); err != nil {
				return s, "", err
			}
			w = f
		}
		err := fetch(r.ctx, cfg.HeapURL+"?gc=1", w)
		if f != nil {
			f.Close()
		}
		if err != nil {
			fmt.Fprintf(cfg.Progress, "conns: heap profile: %v (heap measured without a forced GC; start the server with --pprof)\n", err)
			profile = ""
		}
	}
	m, err := scrapeMetrics(r.ctx, cfg.MetricsURL)
	if err != nil {
		return s, profile, fmt.Errorf("server metrics: %w", err)
	}
	s.Streams = m["parley_chat_streams"]
	s.HeapInuseMB = m["go_memstats_heap_inuse_bytes"] / (1 << 20)
	s.Goroutines = m["go_goroutines"]
	s.StackMB = m["go_memstats_stack_inuse_bytes"] / (1 << 20)
	s.RSSMB = m["process_resident_memory_bytes"] / (1 << 20)
	if pid, ok := cfg.Pids["server"]; ok {
		if rss, err := rssBytes(pid); err == nil {
			s.RSSMB = float64(rss) / (1 << 20)
		}
	} else if m0 != nil {
		s.CPU["server"] = (m["process_cpu_seconds_total"] - m0["process_cpu_seconds_total"]) / time.Since(t0).Seconds() * 100
	}
	return s, profile, nil
}

func (r *connsRun) printSample(what string, s ConnsSample) {
	fmt.Fprintf(r.cfg.Progress, "conns: %s: server streams %.0f, RSS %.0f MB, heap in use %.0f MB, stacks %.0f MB, goroutines %.0f; idle CPU %s\n",
		what, s.Streams, s.RSSMB, s.HeapInuseMB, s.StackMB, s.Goroutines, pct(s.CPU))
}

// fetch GETs url into w.
func fetch(ctx context.Context, url string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// trickle body: "T|<unix nano>|" padded.
func trickleBody(size int) string {
	b := make([]byte, 0, size)
	b = append(b, 'T', '|')
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, '|')
	for len(b) < size {
		b = append(b, 'x')
	}
	return string(b)
}

func parseTrickleBody(s string) (time.Time, bool) {
	if len(s) < 4 || s[0] != 'T' || s[1] != '|' {
		return time.Time{}, false
	}
	j := strings.IndexByte(s[2:], '|')
	if j < 0 {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(s[2:2+j], 10, 64)
	return time.Unix(0, n), err == nil
}

// runTrickle sends TrickleRate msgs/s in every room of the level for
// Trickle, each from the room's first stream, phase-shifted so the total is
// spread evenly in time, and counts deliveries to all the room's streams.
func (r *connsRun) runTrickle(level int) ConnsTrickle {
	cfg := r.cfg
	nRooms := level / cfg.MembersPerRoom
	st := &trickleStats{}
	r.trickle.Store(st)
	defer r.trickle.Store(nil)
	interval := time.Duration(float64(time.Second) / cfg.TrickleRate)
	perRoom := int(cfg.Trickle.Seconds() * cfg.TrickleRate)
	fmt.Fprintf(cfg.Progress, "conns: trickle: %g msgs/s in each of %d rooms (%.0f msgs/s, %.0f deliveries/s) for %s\n",
		cfg.TrickleRate, nRooms, cfg.TrickleRate*float64(nRooms), cfg.TrickleRate*float64(level), cfg.Trickle)
	var sent atomic.Int64
	start := time.Now().Add(50 * time.Millisecond)
	meter := newCPUMeter(clonePids(cfg.Pids))
	m0, _ := scrapeMetrics(r.ctx, cfg.MetricsURL)
	var wg sync.WaitGroup
	for k := 0; k < nRooms; k++ {
		wg.Go(func() {
			first := start.Add(interval * time.Duration(k) / time.Duration(nRooms))
			for n := 0; n < perRoom; n++ {
				if sleepUntil(r.ctx, first.Add(time.Duration(n)*interval)) != nil {
					return
				}
				err := r.senders[k].Send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Send{Send: &parleyv1.SendMessageRequest{
					RoomId: r.rooms[k], ClientMsgId: fmt.Sprintf("t%d-%d-%d", level, k, n), Body: trickleBody(cfg.BodyBytes)}}})
				if err != nil {
					st.failed.Add(1)
					continue
				}
				sent.Add(1)
			}
		})
	}
	wg.Wait()
	_ = sleepUntil(r.ctx, start.Add(cfg.Trickle))
	elapsed := time.Since(start)
	cpu := meter.percent()
	if _, ok := cfg.Pids["server"]; !ok && m0 != nil {
		if m, err := scrapeMetrics(r.ctx, cfg.MetricsURL); err == nil {
			cpu["server"] = (m["process_cpu_seconds_total"] - m0["process_cpu_seconds_total"]) / elapsed.Seconds() * 100
		}
	}
	want := sent.Load() * int64(cfg.MembersPerRoom)
	for deadline := time.Now().Add(cfg.Grace); st.delivered.Load() < want && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	t := ConnsTrickle{
		RatePerRoom: cfg.TrickleRate, SentPerS: float64(sent.Load()) / elapsed.Seconds(),
		DeliveredPerS: float64(st.delivered.Load()) / elapsed.Seconds(),
		Expected:      want, Delivered: st.delivered.Load(), Lost: max(want-st.delivered.Load(), 0),
		Dup: st.dup.Load(), Failed: st.failed.Load(), Latency: latencyOf(&st.hist), CPU: cpu,
	}
	if pid, ok := cfg.Pids["server"]; ok {
		if rss, err := rssBytes(pid); err == nil {
			t.RSSMB = float64(rss) / (1 << 20)
		}
	}
	fmt.Fprintf(cfg.Progress, "conns: trickle at %d streams: sent %.0f/s delivered %.0f/s lost %d dup %d failed %d p50 %.1fms p99 %.1fms max %.1fms; CPU %s\n",
		level, t.SentPerS, t.DeliveredPerS, t.Lost, t.Dup, t.Failed, t.Latency.P50, t.Latency.P99, t.Latency.Max, pct(cpu))
	return t
}
