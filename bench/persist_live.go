package bench

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	dto "github.com/prometheus/client_model/go"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// fanoutStartedLine is the progress line RunFanout prints once its streams
// are subscribed; its warm-up starts right after.
const fanoutStartedLine = "streams subscribed"

// lineWatch forwards writes and closes hit the first time one contains match.
type lineWatch struct {
	w     io.Writer
	match []byte
	once  sync.Once
	hit   chan struct{}
}

func (l *lineWatch) Write(p []byte) (int, error) {
	if bytes.Contains(p, l.match) {
		l.once.Do(func() { close(l.hit) })
	}
	return l.w.Write(p)
}

// probeSend is a probe message waiting for its ack.
type probeSend struct {
	at       time.Time
	measured bool
}

// runPersistLive runs fanout-v1 at rate-ProbeRate msgs/s through Parley
// (RunFanout, unchanged) and, alongside in rooms of its own, a probe user
// sending ProbeRate msgs/s on one Connect stream. The probe's sends whose
// time falls in the fanout step's measured window give send→ack latency.
// The store delay (record timestamp → stored) comes from the persister's
// histogram: its increase from the start of the measured window until the
// persister caught up after the run.
//
// The probe exists because RunFanout has no hook for its SendAcks; with an
// OnAck(room, clientMsgID, sent, ack) callback in FanoutConfig every load
// message could be measured instead.
func runPersistLive(ctx context.Context, cfg PersistConfig, rate int) (*PersistLive, error) {
	live := &PersistLive{OfferedPerS: rate, FanoutPerS: rate - cfg.ProbeRate, ProbePerS: cfg.ProbeRate}
	cc, err := grpc.NewClient(cfg.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return live, err
	}
	defer cc.Close()
	run := strconv.FormatInt(time.Now().UnixNano()%1_000_000_000, 36)
	resp, err := parleyv1.NewAuthServiceClient(cc).SignUp(ctx, &parleyv1.SignUpRequest{Username: "probe-" + run, Password: "bench-password"})
	if err != nil {
		return live, fmt.Errorf("probe sign up: %w", err)
	}
	tok := resp.GetTokens().GetAccessToken()
	rooms := make([]string, cfg.ProbeRooms)
	rs := parleyv1.NewRoomServiceClient(cc)
	for i := range rooms {
		r, err := rs.CreateRoom(authCtx(ctx, tok), &parleyv1.CreateRoomRequest{Name: fmt.Sprintf("probe %s %d", run, i)})
		if err != nil {
			return live, fmt.Errorf("probe room: %w", err)
		}
		rooms[i] = r.GetRoom().GetRoomId()
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := parleyv1.NewChatServiceClient(cc).Connect(authCtx(sctx, tok))
	if err != nil {
		return live, fmt.Errorf("probe connect: %w", err)
	}

	var (
		mu      sync.Mutex
		sent    = map[string]probeSend{}
		sendAck Hist
		failed  atomic.Int64
	)
	go func() {
		for {
			f, err := stream.Recv()
			if err != nil {
				return
			}
			a := f.GetSendAck()
			if a == nil {
				continue
			}
			now := time.Now()
			mu.Lock()
			p, ok := sent[a.GetClientMsgId()]
			delete(sent, a.GetClientMsgId())
			mu.Unlock()
			switch {
			case !ok || !p.measured:
			case a.GetError() != nil:
				failed.Add(1)
			default:
				sendAck.Record(now.Sub(p.at))
			}
		}
	}()

	started := make(chan struct{})
	fcfg := FanoutConfig{
		Addr: cfg.Addr, Rooms: cfg.LiveRooms, Members: cfg.LiveMembers, Rates: []int{rate - cfg.ProbeRate},
		Step: cfg.LiveStep, Warmup: cfg.LiveWarmup, Grace: 5 * time.Second, BodyBytes: max(cfg.BodyBytes, 48),
		Conns: cfg.LiveConns, Pids: clonePids(cfg.Pids), Persistence: cfg.Persistence,
		Progress: &lineWatch{w: cfg.Progress, match: []byte(fanoutStartedLine), hit: started},
	}
	type fanResult struct {
		rep *Report
		err error
	}
	fanDone := make(chan fanResult, 1)
	go func() {
		r, err := RunFanout(sctx, fcfg)
		fanDone <- fanResult{r, err}
	}()
	fmt.Fprintf(cfg.Progress, "live: fanout-v1 at %d msgs/s + probe %d msgs/s over %d rooms: send→ack, and the persister's store delay\n",
		live.FanoutPerS, cfg.ProbeRate, cfg.ProbeRooms)
	var loadStart time.Time
	select {
	case <-started:
		loadStart = time.Now()
	case res := <-fanDone:
		if res.err != nil {
			return live, res.err
		}
		return live, fmt.Errorf("fanout run ended without its %q progress line: the probe cannot align with it", fanoutStartedLine)
	case <-ctx.Done():
		return live, ctx.Err()
	}
	windowStart := loadStart.Add(cfg.LiveWarmup)
	windowEnd := windowStart.Add(cfg.LiveStep)
	var before []bucket
	var beforeErr error
	beforeDone := make(chan struct{})
	go func() {
		defer close(beforeDone)
		if sleepUntil(ctx, windowStart) == nil {
			before, beforeErr = scrapeHistogram(ctx, cfg.PersisterMetrics, storeDelayMetric)
		}
	}()
	interval := time.Second / time.Duration(cfg.ProbeRate)
	body := strings.Repeat("p", cfg.BodyBytes)
	var sendErr error
	for n := 0; ; n++ {
		due := loadStart.Add(time.Duration(n) * interval)
		if !due.Before(windowEnd) {
			break
		}
		if err := sleepUntil(ctx, due); err != nil {
			sendErr = err
			break
		}
		cmid := "probe-" + run + "-" + strconv.Itoa(n)
		now := time.Now()
		mu.Lock()
		sent[cmid] = probeSend{at: now, measured: !now.Before(windowStart) && now.Before(windowEnd)}
		mu.Unlock()
		if err := stream.Send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Send{Send: &parleyv1.SendMessageRequest{
			RoomId: rooms[n%len(rooms)], ClientMsgId: cmid, Body: body}}}); err != nil {
			sendErr = fmt.Errorf("probe send: %w", err)
			break
		}
	}
	res := <-fanDone
	live.Fanout = res.rep
	// Acks of measured sends: wait until all arrived (or 15 s); the ones
	// still missing then were never acked.
	unacked := 0
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		unacked = 0
		for _, p := range sent {
			if p.measured {
				unacked++
			}
		}
		mu.Unlock()
		if unacked == 0 || !time.Now().Before(deadline) {
			break
		}
	}
	failed.Add(int64(unacked))
	live.SendAck, live.SendFailed = latencyOf(&sendAck), failed.Load()
	<-beforeDone
	if err := storeDelay(ctx, cfg, live, before, beforeErr); err != nil {
		return live, err
	}
	fmt.Fprintf(cfg.Progress, "live: send→ack p50 %.1fms p99 %.1fms (%d, failed %d); store delay p50 %.1fms p99 %.1fms (%d records)\n",
		live.SendAck.P50, live.SendAck.P99, live.SendAck.Count, live.SendFailed, live.StoreDelay.P50, live.StoreDelay.P99, live.StoreDelay.Count)
	if res.err != nil {
		return live, res.err
	}
	if sendErr != nil {
		return live, sendErr
	}
	if live.SendAck.Count == 0 {
		return live, errors.New("no probe message was acked in the measured window")
	}
	return live, nil
}

// storeDelayMetric is the persister's histogram of record timestamp → stored.
const storeDelayMetric = "parley_persister_store_delay_seconds"

// bucket is one cumulative histogram bucket.
type bucket struct {
	le    float64
	count float64
}

// scrapeHistogram reads the cumulative buckets of histogram name from a
// /metrics URL, summed over series, in ascending le order (+Inf last).
func scrapeHistogram(ctx context.Context, url, name string) ([]bucket, error) {
	mfs, err := scrapeFamilies(ctx, url)
	if err != nil {
		return nil, err
	}
	mf := mfs[name]
	if mf == nil || mf.GetType() != dto.MetricType_HISTOGRAM || len(mf.GetMetric()) == 0 {
		return nil, fmt.Errorf("%s: no %s histogram", url, name)
	}
	byLE := map[float64]float64{}
	for _, m := range mf.GetMetric() {
		h := m.GetHistogram()
		inf := false
		for _, b := range h.GetBucket() {
			byLE[b.GetUpperBound()] += float64(b.GetCumulativeCount())
			inf = inf || math.IsInf(b.GetUpperBound(), 1)
		}
		if !inf { // the text format lists +Inf; the client library leaves it implicit
			byLE[math.Inf(1)] += float64(h.GetSampleCount())
		}
	}
	out := make([]bucket, 0, len(byLE))
	for le, n := range byLE {
		out = append(out, bucket{le, n})
	}
	slices.SortFunc(out, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	return out, nil
}

// histLatency summarises the observations between two scrapes of the same
// histogram: quantiles interpolated linearly within a bucket, Max the upper
// bound of the highest non-empty bucket (the largest finite bound if that
// is +Inf).
func histLatency(before, after []bucket) Latency {
	if len(before) != len(after) {
		before = nil
	}
	delta := make([]bucket, len(after))
	for i, b := range after {
		delta[i] = b
		if before != nil {
			delta[i].count -= before[i].count
		}
	}
	if len(delta) == 0 || delta[len(delta)-1].count <= 0 {
		return Latency{}
	}
	total := delta[len(delta)-1].count
	q := func(q float64) float64 {
		rank := q * total
		prevLE, prevN := 0.0, 0.0
		for _, b := range delta {
			if b.count >= rank {
				le := b.le
				if math.IsInf(le, 1) {
					return prevLE * 1000
				}
				if b.count == prevN {
					return le * 1000
				}
				return (prevLE + (le-prevLE)*(rank-prevN)/(b.count-prevN)) * 1000
			}
			prevLE, prevN = b.le, b.count
		}
		return prevLE * 1000
	}
	l := Latency{Count: uint64(total), P50: q(0.5), P99: q(0.99)}
	for i := len(delta) - 1; i >= 0; i-- {
		if i == 0 || delta[i].count > delta[i-1].count {
			l.Max = delta[i].le * 1000
			if math.IsInf(delta[i].le, 1) && i > 0 {
				l.Max = delta[i-1].le * 1000
			}
			break
		}
	}
	return l
}

// storeDelay waits until the persister caught up (its consumer lag is 0, or
// 60 s) and fills live.StoreDelay from the histogram's increase since before.
func storeDelay(ctx context.Context, cfg PersistConfig, live *PersistLive, before []bucket, beforeErr error) error {
	if cfg.PersisterMetrics == "" {
		live.StoreDelayNote = "not measured: no --persister-metrics URL"
		return nil
	}
	if beforeErr != nil {
		return fmt.Errorf("persister metrics: %w", beforeErr)
	}
	t0 := time.Now()
	for time.Since(t0) < 60*time.Second {
		m, err := scrapeMetrics(ctx, cfg.PersisterMetrics)
		if err == nil && m["parley_persister_consumer_lag"] == 0 {
			break
		}
		if err := sleepUntil(ctx, time.Now().Add(200*time.Millisecond)); err != nil {
			return err
		}
	}
	live.CatchUpSeconds = time.Since(t0).Seconds()
	after, err := scrapeHistogram(ctx, cfg.PersisterMetrics, storeDelayMetric)
	if err != nil {
		return fmt.Errorf("persister metrics: %w", err)
	}
	live.StoreDelay = histLatency(before, after)
	return nil
}
