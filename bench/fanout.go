package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"golang.org/x/sync/errgroup"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/chat"
)

func numCPU() int { return runtime.NumCPU() }

// FanoutConfig configures fanout-v1.
type FanoutConfig struct {
	Addr        string         // Parley's address (parley mode)
	RedisURL    string         // Redis (raw mode)
	Raw         bool           // Redis pub/sub alone, no Parley
	Floor       bool           // Addr is NewFloorServer's (`parley bench floor-server`), not Parley
	Rooms       int            // R (100)
	Members     int            // S per room, the publisher included (10)
	Rates       []int          // offered msgs/s in total, per step
	Step        time.Duration  // measured part of a step (10s)
	Warmup      time.Duration  // unmeasured start of a step (2s)
	PreWarm     time.Duration  // unmeasured, at the first rate, before the first step (20s)
	Grace       time.Duration  // wait for stragglers after a step (5s)
	BodyBytes   int            // 100
	Conns       int            // gRPC connections the streams are spread over
	Pids        map[string]int // processes whose CPU% is reported; "server" also gets RSS
	Persistence string
	StopAfter   int // stop after this many failing steps in a row (0: never)
	// OneFramePerMessage makes the member streams refuse MessageBatch frames
	// (StreamOptions.message_batches false): one Message frame per delivery.
	OneFramePerMessage bool
	// FullDecode decodes every delivered frame in full with the generated
	// client's codec; by default member streams decode only message bodies
	// (bodyOnlyCodec), the part of each delivery the measurement reads.
	FullDecode bool
	// StampScheduled stamps each message with the time the schedule gave
	// it rather than the time its publisher built it, so that a publisher's
	// wait (flow control, a resume, catching up after a stall) counts in
	// its latency (no coordinated omission). fanout-v1 stamps the send time.
	StampScheduled bool
	Progress       io.Writer
}

// Validate names the bad field.
func (c *FanoutConfig) Validate() error {
	switch {
	case c.Rooms < 1 || c.Members < 1:
		return fmt.Errorf("rooms and members must be positive")
	case len(c.Rates) == 0:
		return fmt.Errorf("rates: at least one step")
	case c.Step <= 0:
		return fmt.Errorf("step must be positive")
	case c.BodyBytes < 48:
		return fmt.Errorf("body-bytes must be at least 48 (the header)")
	case !c.Raw && c.Addr == "":
		return fmt.Errorf("addr: the Parley server to load")
	case c.Raw && c.RedisURL == "":
		return fmt.Errorf("redis-url: the Redis server for --raw")
	case c.Raw && c.Floor:
		return fmt.Errorf("raw and floor: one mode at a time")
	}
	if c.Conns < 1 {
		c.Conns = 1
	}
	return nil
}

// body header: "S<step>|M<0/1>|<seq>|<unixnano>|" padded to BodyBytes;
// the time is stamp.
func makeBody(buf []byte, step int, measured bool, seq int64, stamp time.Time, size int) string {
	m := 0
	if measured {
		m = 1
	}
	b := buf[:0]
	b = append(b, 'S')
	b = strconv.AppendInt(b, int64(step), 10)
	b = append(b, '|', 'M', byte('0'+m), '|')
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, stamp.UnixNano(), 10)
	b = append(b, '|')
	for len(b) < size {
		b = append(b, 'x')
	}
	return string(b)
}

type parsed struct {
	step     int
	measured bool
	seq      int64
	sent     int64
}

func parseBody(s string) (p parsed, ok bool) {
	if len(s) < 8 || s[0] != 'S' {
		return p, false
	}
	i := 1
	next := func() (int64, bool) {
		j := i
		for j < len(s) && s[j] != '|' {
			j++
		}
		if j >= len(s) {
			return 0, false
		}
		v, err := strconv.ParseInt(s[i:j], 10, 64)
		i = j + 1
		return v, err == nil
	}
	st, ok1 := next()
	if !ok1 || i+2 >= len(s) || s[i] != 'M' {
		return p, false
	}
	p.measured = s[i+1] == '1'
	i += 3
	seq, ok2 := next()
	sent, ok3 := next()
	p.step, p.seq, p.sent = int(st), seq, sent
	return p, ok2 && ok3
}

// stepStats accumulates one step's deliveries.
type stepStats struct {
	hist      Hist
	delivered atomic.Int64 // unique measured deliveries
	dup       atomic.Int64
	reordered atomic.Int64
	failed    atomic.Int64
	resumed   atomic.Int64 // streams resumed after a slow-consumer end, by the step of their last message (the first step before any)
	sent      atomic.Int64 // measured messages sent
	slow      slowTimeline
}

// receiver is one member connection's view of its room.
type receiver struct {
	mu   sync.Mutex
	seen bitset // seqs received (a map lookup per delivery was 4 % of the load generator's CPU)
	last int64
}

func (r *receiver) record(p parsed, stats []*stepStats, now int64) {
	r.recordAll([]parsed{p}, stats, now)
}

// recordAll records the messages of one frame, received at now, with one
// lock of the receiver and one histogram update per step.
func (r *receiver) recordAll(ps []parsed, stats []*stepStats, now int64) {
	type tally struct {
		step              int
		sent              int64 // of the first measured message (a frame's messages are close in time)
		n, dup, reordered int64
		latencies         []time.Duration
		slow              []slowDelivery
	}
	var steps []tally
	r.mu.Lock()
	for _, p := range ps {
		if p.step < 0 || p.step >= len(stats) {
			continue
		}
		dup := r.seen.testAndSet(p.seq)
		reordered := !dup && p.seq < r.last
		r.last = max(r.last, p.seq)
		if !p.measured {
			continue
		}
		if len(steps) == 0 || steps[len(steps)-1].step != p.step {
			steps = append(steps, tally{step: p.step})
		}
		t := &steps[len(steps)-1]
		switch {
		case dup:
			t.dup++
			continue
		case reordered:
			t.reordered++
		}
		t.n++
		lat := time.Duration(now - p.sent)
		t.latencies = append(t.latencies, lat)
		if lat >= SlowThreshold {
			t.slow = append(t.slow, slowDelivery{sent: p.sent, lat: lat})
		}
	}
	r.mu.Unlock()
	for _, t := range steps {
		st := stats[t.step]
		if t.dup > 0 {
			st.dup.Add(t.dup)
		}
		if t.reordered > 0 {
			st.reordered.Add(t.reordered)
		}
		if t.n > 0 {
			st.delivered.Add(t.n)
		}
		st.hist.RecordAll(t.latencies)
		if len(t.slow) > 0 {
			st.slow.record(t.slow) // outside r.mu: the timeline is shared by all receivers
		}
	}
}

// bitset is a set of non-negative seqs (a room's seqs are dense from 1).
type bitset []uint64

// testAndSet adds n and reports whether it was there already.
func (b *bitset) testAndSet(n int64) bool {
	if n < 0 {
		return false
	}
	w, bit := int(n>>6), uint64(1)<<(n&63)
	if w >= len(*b) {
		*b = append(*b, make([]uint64, w+1-len(*b)+len(*b)/2)...)
	}
	had := (*b)[w]&bit != 0
	(*b)[w] |= bit
	return had
}

// publishFunc sends one message of room i.
type publishFunc func(room int, seq int64, body string) error

// runSteps drives the schedule and collects the report.
func runSteps(ctx context.Context, cfg FanoutConfig, rep *Report, stats []*stepStats, publish publishFunc) error {
	seqs := make([]int64, cfg.Rooms)
	buf := make([][]byte, cfg.Rooms)
	for i := range buf {
		buf[i] = make([]byte, 0, cfg.BodyBytes+32)
	}
	failing := 0
	for si, rate := range cfg.Rates {
		perRoom := float64(rate) / float64(cfg.Rooms)
		meter := (*cpuMeter)(nil)
		var phaseErr error
		for _, measured := range []bool{false, true} {
			d := cfg.Warmup
			if si == 0 && !measured && cfg.PreWarm > 0 {
				// A JVM broker (Kafka) just started spends its first minute
				// compiling: without this the first step measures that.
				d += cfg.PreWarm
				fmt.Fprintf(cfg.Progress, "warm-up: %s at %d msgs/s before the first step (unmeasured)\n", d, rate)
			}
			if measured {
				d = cfg.Step
				meter = newCPUMeter(cfg.Pids)
			}
			if d <= 0 {
				continue
			}
			n := int64(perRoom * d.Seconds())
			interval := time.Duration(float64(time.Second) / perRoom)
			phaseStart := time.Now()
			if measured {
				stats[si].slow.begin(phaseStart, d)
			}
			g, gctx := errgroup.WithContext(ctx)
			for room := 0; room < cfg.Rooms; room++ {
				g.Go(func() error {
					// Rooms are phase-shifted across one interval so the total
					// rate is spread evenly in time, not sent in bursts of R.
					start := phaseStart.Add(interval * time.Duration(room) / time.Duration(cfg.Rooms))
					if err := sleepUntil(gctx, start); err != nil {
						return err
					}
					timer := time.NewTimer(time.Hour)
					defer timer.Stop()
					var sent int64
					for sent < n {
						due := min(int64(time.Since(start)/interval)+1, n)
						for ; sent < due; sent++ {
							seqs[room]++
							stamp := time.Now()
							if cfg.StampScheduled {
								stamp = start.Add(time.Duration(sent) * interval)
							}
							body := makeBody(buf[room], si, measured, seqs[room], stamp, cfg.BodyBytes)
							if err := publish(room, seqs[room], body); err != nil {
								stats[si].failed.Add(1)
							} else if measured {
								stats[si].sent.Add(1)
							}
						}
						if sent < n {
							// One timer per publisher, not one per message.
							timer.Reset(max(time.Until(start.Add(time.Duration(sent)*interval)), 200*time.Microsecond))
							select {
							case <-gctx.Done():
								return gctx.Err()
							case <-timer.C:
							}
						}
					}
					return nil
				})
			}
			if err := g.Wait(); err != nil {
				phaseErr = err
				break
			}
		}
		if phaseErr != nil {
			return phaseErr
		}
		cpu := meter.percent()
		// Stragglers: wait until everything sent was delivered, or Grace.
		st := stats[si]
		want := st.sent.Load() * int64(cfg.Members)
		deadline := time.Now().Add(cfg.Grace)
		for st.delivered.Load() < want && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		s := Step{
			Offered:   rate,
			Sent:      float64(st.sent.Load()) / cfg.Step.Seconds(),
			Delivered: float64(st.delivered.Load()) / cfg.Step.Seconds(),
			Lost:      max(want-st.delivered.Load(), 0),
			Dup:       st.dup.Load(),
			Reordered: st.reordered.Load(),
			Failed:    st.failed.Load(),
			P50:       ms(st.hist.Quantile(0.5)),
			P99:       ms(st.hist.Quantile(0.99)),
			Max:       ms(st.hist.Max()),
			CPU:       cpu,
			Resumed:   st.resumed.Load(),
			StartedAt: st.slow.started(),
			Slow:      st.slow.windows(),
		}
		if pid, ok := cfg.Pids["server"]; ok {
			if rss, err := rssBytes(pid); err == nil {
				s.ServerRSSMB = float64(rss) / (1 << 20)
			}
		}
		rep.Steps = append(rep.Steps, s)
		fmt.Fprintf(cfg.Progress, "step %d/%d: offered %d/s sent %.0f/s delivered %.0f/s lost %d dup %d reord %d failed %d p50 %.1fms p99 %.1fms max %.1fms\n",
			si+1, len(cfg.Rates), rate, s.Sent, s.Delivered, s.Lost, s.Dup, s.Reordered, s.Failed, s.P50, s.P99, s.Max)
		if s.Resumed > 0 {
			fmt.Fprintf(cfg.Progress, "step %d/%d: %d stream(s) ended as too slow and resumed\n", si+1, len(cfg.Rates), s.Resumed)
		}
		if d := describeSlow(s.Slow); d != "" {
			fmt.Fprintf(cfg.Progress, "step %d/%d: %s\n", si+1, len(cfg.Rates), d)
		}
		if s.Lost > 0 || s.Failed > 0 || s.P99 >= ms(SlowThreshold) {
			failing++
			if cfg.StopAfter > 0 && failing >= cfg.StopAfter {
				rep.Notes = append(rep.Notes, fmt.Sprintf("stopped after %d failing step(s) in a row", failing))
				break
			}
		} else {
			failing = 0
		}
	}
	rep.computePeak()
	return nil
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// RunFanout runs fanout-v1 against Parley, or on Redis alone with cfg.Raw.
func RunFanout(ctx context.Context, cfg FanoutConfig) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.Pids == nil {
		cfg.Pids = map[string]int{}
	}
	cfg.Pids["loadgen"] = os.Getpid()
	rep := &Report{Workload: "fanout-v1", Mode: "parley", Machine: Machine(), Started: time.Now().UTC(),
		Rooms: cfg.Rooms, Members: cfg.Members, BodyBytes: cfg.BodyBytes, StepSeconds: cfg.Step.Seconds(), PreWarmS: cfg.PreWarm.Seconds(), Persistence: cfg.Persistence}
	stats := make([]*stepStats, len(cfg.Rates))
	for i := range stats {
		stats[i] = &stepStats{}
	}
	if cfg.StampScheduled {
		rep.Notes = append(rep.Notes, "latency counts from each message's scheduled send time (--stamp-scheduled), a publisher's waits included")
	}
	if cfg.Raw {
		rep.Mode, rep.Persistence = "raw", "n/a (Redis pub/sub only)"
		return rep, runRaw(ctx, cfg, rep, stats)
	}
	if cfg.Floor {
		rep.Mode, rep.Persistence = "floor", "n/a (grpc-go floor: a server that only hands each message to its room's streams)"
	}
	if cfg.OneFramePerMessage {
		rep.Notes = append(rep.Notes, "member streams took one Message frame per delivery (no MessageBatch frames)")
	} else {
		rep.Notes = append(rep.Notes, "member streams accept MessageBatch frames (StreamOptions.message_batches): messages queued together for a stream go out in one frame")
	}
	if cfg.FullDecode {
		rep.Notes = append(rep.Notes, "receivers decode every frame in full (generated client's codec)")
	} else {
		rep.Notes = append(rep.Notes, "receivers decode only the body of delivered messages (the load generator's bodyOnlyCodec; --full-decode for the generated client's codec)")
	}
	return rep, runParley(ctx, cfg, rep, stats)
}

// runRaw: publishers PUBLISH, one PSUBSCRIBE connection dispatches in-process
// to S receivers per room.
func runRaw(ctx context.Context, cfg FanoutConfig, rep *Report, stats []*stepStats) error {
	opt, err := rueidis.ParseURL(cfg.RedisURL)
	if err != nil {
		return err
	}
	opt.DisableCache = true
	client, err := rueidis.NewClient(opt)
	if err != nil {
		return err
	}
	defer client.Close()
	prefix := fmt.Sprintf("bench:%d:room:", time.Now().UnixNano())
	recv := make([][]*receiver, cfg.Rooms)
	for i := range recv {
		for j := 0; j < cfg.Members; j++ {
			recv[i] = append(recv[i], &receiver{})
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	subscribed := make(chan struct{})
	subErr := make(chan error, 1)
	go func() {
		dc, release := client.Dedicate()
		defer release()
		wait := dc.SetPubSubHooks(rueidis.PubSubHooks{
			OnMessage: func(m rueidis.PubSubMessage) {
				room, err := strconv.Atoi(m.Channel[len(prefix):])
				if err != nil || room < 0 || room >= cfg.Rooms {
					return
				}
				p, ok := parseBody(m.Message)
				if !ok {
					return
				}
				now := time.Now().UnixNano()
				for _, r := range recv[room] {
					r.record(p, stats, now)
				}
			},
		})
		if err := dc.Do(sctx, dc.B().Psubscribe().Pattern(prefix+"*").Build()).Error(); err != nil {
			subErr <- err
			return
		}
		close(subscribed)
		select {
		case err := <-wait:
			subErr <- err
		case <-sctx.Done():
		}
	}()
	select {
	case <-subscribed:
	case err := <-subErr:
		return fmt.Errorf("psubscribe: %w", err)
	}
	fmt.Fprintf(cfg.Progress, "raw: %d rooms x %d members on one PSUBSCRIBE connection\n", cfg.Rooms, cfg.Members)
	return runSteps(ctx, cfg, rep, stats, func(room int, _ int64, body string) error {
		return client.Do(ctx, client.B().Publish().Channel(prefix+strconv.Itoa(room)).Message(body).Build()).Error()
	})
}

// benchUser is one member connection's identity.
type benchUser struct {
	token string
}

// memberStream is a member's current Connect stream, which its receiving
// goroutine replaces when it resumes; the room's publisher sends on it.
type memberStream struct {
	mu      sync.Mutex
	s       parleyv1.ChatService_ConnectClient // nil once the stream is gone for good
	swapped chan struct{}                      // closed when s is replaced
	// pending holds the publisher's sends not acknowledged yet, by
	// client_msg_id: a stream that ends may take some with it unread, and
	// they are sent again on the next (the server keeps one message per
	// client_msg_id). resentUpTo is the highest seq the last resume sent
	// again.
	pending    map[string]pendingSend
	resentUpTo int64
	sendMu     sync.Mutex // one Send at a time on a stream
}

type pendingSend struct {
	seq int64 // the load generator's per-room seq: resends go in this order
	req *parleyv1.ConnectRequest
}

func newMemberStream(s parleyv1.ChatService_ConnectClient, publisher bool) *memberStream {
	ms := &memberStream{s: s, swapped: make(chan struct{})}
	if publisher {
		ms.pending = map[string]pendingSend{}
	}
	return ms
}

// resume makes s the stream, after sending on it what the last one left
// unacknowledged, in order, before the publisher can send anything newer.
func (ms *memberStream) resume(s parleyv1.ChatService_ConnectClient) error {
	ms.mu.Lock()
	resend := make([]pendingSend, 0, len(ms.pending))
	for _, p := range ms.pending {
		resend = append(resend, p)
	}
	ms.mu.Unlock()
	slices.SortFunc(resend, func(a, b pendingSend) int { return cmp.Compare(a.seq, b.seq) })
	for _, p := range resend {
		if err := s.Send(p.req); err != nil {
			return err
		}
	}
	ms.mu.Lock()
	if len(resend) > 0 {
		ms.resentUpTo = max(ms.resentUpTo, resend[len(resend)-1].seq)
	}
	ms.mu.Unlock()
	ms.swap(s)
	return nil
}

func (ms *memberStream) swap(s parleyv1.ChatService_ConnectClient) {
	ms.mu.Lock()
	ms.s = s
	close(ms.swapped)
	ms.swapped = make(chan struct{})
	ms.mu.Unlock()
}

func (ms *memberStream) acked(clientMsgID string) {
	ms.mu.Lock()
	delete(ms.pending, clientMsgID)
	ms.mu.Unlock()
}

// resumeWait bounds how long a send waits for its stream to be resumed.
const resumeWait = 10 * time.Second

// send sends the publisher's message seq. When the stream has ended, it
// waits for the receiving goroutine to resume it (which sends the
// unacknowledged ones again) and sends again unless the resume did. A send
// that fails is forgotten: it is counted failed, and not sent again later.
func (ms *memberStream) send(ctx context.Context, seq int64, req *parleyv1.ConnectRequest) error {
	id := req.GetSend().GetClientMsgId()
	for retry := false; ; retry = true {
		ms.mu.Lock()
		s, swapped := ms.s, ms.swapped
		switch {
		case s == nil:
			delete(ms.pending, id)
			ms.mu.Unlock()
			return errors.New("stream ended")
		case retry && seq <= ms.resentUpTo:
			ms.mu.Unlock()
			return nil // the resume sent it again
		case ms.pending != nil:
			ms.pending[id] = pendingSend{seq: seq, req: req}
		}
		ms.mu.Unlock()
		ms.sendMu.Lock()
		err := s.Send(req)
		ms.sendMu.Unlock()
		if err == nil {
			return nil
		}
		select {
		case <-swapped:
			continue
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(resumeWait):
		}
		ms.acked(id)
		return err
	}
}

// isSlowConsumer reports whether err is the server ending a stream that fell
// behind: ResourceExhausted with the server's slow-consumer ErrorInfo (other
// ResourceExhausted errors, such as rate limits, are not resumed).
func isSlowConsumer(err error) bool {
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == chat.SlowConsumerReason && info.GetDomain() == chat.ErrorDomain {
			return true
		}
	}
	return false
}

// maxStuckResumes bounds the resumes in a row of one stream that received
// nothing in between.
const maxStuckResumes = 5

// resumeBackoff paces one stream's resumes: at once after a stream that
// brought messages, then 100 ms doubling while resumes bring none, and no
// more after maxStuckResumes of those in a row.
type resumeBackoff struct {
	stuck int   // resumes in a row with nothing received in between
	at    int64 // the position of the last resume
}

// next says how long to wait before resuming from lastSeq, or false to give up.
func (b *resumeBackoff) next(lastSeq int64) (time.Duration, bool) {
	if lastSeq > b.at {
		b.stuck = 0
	}
	b.stuck++
	b.at = lastSeq
	switch {
	case b.stuck > maxStuckResumes:
		return 0, false
	case b.stuck == 1:
		return 0, true
	}
	return 50 * time.Millisecond << (b.stuck - 1), true
}

func authCtx(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

// runParley: R*S users, one Connect stream each; the first member of each
// room publishes on its stream.
func runParley(ctx context.Context, cfg FanoutConfig, rep *Report, stats []*stepStats) error {
	conns := make([]*grpc.ClientConn, cfg.Conns)
	for i := range conns {
		cc, err := grpc.NewClient(cfg.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer cc.Close()
		conns[i] = cc
	}
	run := strconv.FormatInt(time.Now().Unix()%1_000_000, 36)
	users := make([][]benchUser, cfg.Rooms)
	roomIDs := make([]string, cfg.Rooms)
	t0 := time.Now()
	fmt.Fprintf(cfg.Progress, "setup: signing up %d users, creating %d rooms\n", cfg.Rooms*cfg.Members, cfg.Rooms)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for r := 0; r < cfg.Rooms; r++ {
		users[r] = make([]benchUser, cfg.Members)
		g.Go(func() error {
			cc := conns[r%len(conns)]
			au, rs := parleyv1.NewAuthServiceClient(cc), parleyv1.NewRoomServiceClient(cc)
			for m := 0; m < cfg.Members; m++ {
				resp, err := au.SignUp(gctx, &parleyv1.SignUpRequest{Username: fmt.Sprintf("b%s-%d-%d", run, r, m), Password: "bench-password"})
				if err != nil {
					return fmt.Errorf("sign up: %w", err)
				}
				users[r][m] = benchUser{token: resp.Tokens.AccessToken}
			}
			room, err := rs.CreateRoom(authCtx(gctx, users[r][0].token), &parleyv1.CreateRoomRequest{Name: fmt.Sprintf("bench %s %d", run, r)})
			if err != nil {
				return fmt.Errorf("create room: %w", err)
			}
			roomIDs[r] = room.Room.RoomId
			for m := 1; m < cfg.Members; m++ {
				if _, err := rs.JoinRoom(authCtx(gctx, users[r][m].token), &parleyv1.JoinRoomRequest{RoomId: roomIDs[r]}); err != nil {
					return fmt.Errorf("join room: %w", err)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	fmt.Fprintf(cfg.Progress, "setup: done in %s; opening %d streams over %d connections\n", time.Since(t0).Round(time.Millisecond), cfg.Rooms*cfg.Members, len(conns))

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pubs := make([]*memberStream, cfg.Rooms)
	var callOpts []grpc.CallOption
	if !cfg.FullDecode {
		callOpts = append(callOpts, grpc.ForceCodecV2(newBodyOnlyCodec()))
	}
	// open starts member m's Connect stream in room r, resuming after from
	// when it is set.
	open := func(r, m int, from *parleyv1.RoomPosition) (parleyv1.ChatService_ConnectClient, error) {
		cc := conns[(r*cfg.Members+m)%len(conns)]
		s, err := parleyv1.NewChatServiceClient(cc).Connect(authCtx(sctx, users[r][m].token), callOpts...)
		if err != nil {
			return nil, fmt.Errorf("connect: %w", err)
		}
		if err := s.Send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Options{Options: &parleyv1.StreamOptions{
			MessageBatches: !cfg.OneFramePerMessage}}}); err != nil {
			return nil, err
		}
		if err := s.Send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Subscribe{Subscribe: &parleyv1.Subscribe{
			RoomId: roomIDs[r], ResumeFrom: from}}}); err != nil {
			return nil, err
		}
		return s, nil
	}
	var wg sync.WaitGroup
	var streamErr atomic.Value
	var resyncs atomic.Int64
	subscribedCh := make(chan struct{}, cfg.Rooms*cfg.Members)
	for r := 0; r < cfg.Rooms; r++ {
		for m := 0; m < cfg.Members; m++ {
			first, err := open(r, m, nil)
			if err != nil {
				return err
			}
			ms := newMemberStream(first, m == 0)
			if m == 0 {
				pubs[r] = ms
			}
			rcv := &receiver{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := first
				defer ms.swap(nil) // a publisher waiting for a resume gives up
				var (
					epoch      string // the room's, from Subscribed and ResyncRequired
					lastSeq    int64  // the last position received
					lastStep   = -1   // the step of the last message received
					backoff    resumeBackoff
					subscribed bool
				)
				for {
					f, err := s.Recv()
					if err != nil {
						if sctx.Err() != nil {
							return
						}
						// The server ends a stream that falls too far behind.
						// A client then resumes from the last position it has
						// and gets the gap replayed; so does the load
						// generator, instead of counting every later delivery
						// as lost.
						if isSlowConsumer(err) && subscribed {
							wait, ok := backoff.next(lastSeq)
							if !ok {
								streamErr.Store(fmt.Errorf("%d resumes in a row received nothing: %w", maxStuckResumes, err))
								return
							}
							select {
							case <-sctx.Done():
								return
							case <-time.After(wait):
							}
							ns, oerr := open(r, m, &parleyv1.RoomPosition{Epoch: epoch, Seq: lastSeq})
							if oerr == nil {
								if oerr = ms.resume(ns); oerr == nil {
									s = ns
									stats[max(lastStep, 0)].resumed.Add(1)
									continue
								}
							}
							err = oerr
						}
						streamErr.Store(err)
						return
					}
					switch v := f.Frame.(type) {
					case *parleyv1.ConnectResponse_Message:
						lastSeq = max(lastSeq, v.Message.Seq)
						if p, ok := parseBody(v.Message.Body); ok {
							lastStep = p.step
							rcv.record(p, stats, time.Now().UnixNano())
						}
					case *parleyv1.ConnectResponse_MessageBatch:
						now := time.Now().UnixNano()
						ps := make([]parsed, 0, len(v.MessageBatch.Messages))
						for _, m := range v.MessageBatch.Messages {
							lastSeq = max(lastSeq, m.Seq)
							if p, ok := parseBody(m.Body); ok {
								lastStep = p.step
								ps = append(ps, p)
							}
						}
						rcv.recordAll(ps, stats, now)
					case *parleyv1.ConnectResponse_SendAck:
						ms.acked(v.SendAck.ClientMsgId)
						if v.SendAck.Error != nil {
							if p, ok := parseBody(v.SendAck.ClientMsgId); ok && p.step < len(stats) {
								stats[p.step].failed.Add(1)
							}
						}
					case *parleyv1.ConnectResponse_Subscribed:
						head := v.Subscribed.GetHead()
						epoch, lastSeq = head.GetEpoch(), max(lastSeq, head.GetSeq())
						if !subscribed {
							subscribed = true
							subscribedCh <- struct{}{}
						}
					case *parleyv1.ConnectResponse_ResyncRequired:
						// The gap cannot be replayed (its messages count as
						// lost); live delivery goes on from the new head.
						head := v.ResyncRequired.GetHead()
						epoch, lastSeq = head.GetEpoch(), max(lastSeq, head.GetSeq())
						resyncs.Add(1)
					case *parleyv1.ConnectResponse_SubscribeError:
						streamErr.Store(errors.New(v.SubscribeError.GetError().GetMessage()))
					}
				}
			}()
		}
	}
	for n := 0; n < cfg.Rooms*cfg.Members; n++ {
		select {
		case <-subscribedCh:
		case <-time.After(60 * time.Second):
			return fmt.Errorf("only %d of %d streams subscribed after 60s", n, cfg.Rooms*cfg.Members)
		}
	}
	fmt.Fprintf(cfg.Progress, "setup: %d streams subscribed\n", cfg.Rooms*cfg.Members)
	err := runSteps(ctx, cfg, rep, stats, func(room int, seq int64, body string) error {
		// The client_msg_id carries the step so a failed ack is counted there.
		return pubs[room].send(sctx, seq, &parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Send{Send: &parleyv1.SendMessageRequest{
			RoomId: roomIDs[room], ClientMsgId: body[:min(len(body), 48)], Body: body}}})
	})
	var resumes int64
	for _, st := range stats {
		resumes += st.resumed.Load()
	}
	if resumes > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the server ended member streams as too slow %d time(s) (ResourceExhausted, SLOW_CONSUMER; per step in the JSON's resumed_streams); each resumed from its last position, as a client does, and got its gap replayed", resumes))
	}
	if n := resyncs.Load(); n > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d resumed stream(s) got ResyncRequired: their gap could not be replayed and counts as lost", n))
	}
	if e, _ := streamErr.Load().(error); e != nil && err == nil {
		rep.Notes = append(rep.Notes, "a stream failed during the run: "+e.Error())
	}
	cancel()
	wg.Wait()
	return err
}
