package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/msgstore"
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

// probeAcked is an acked probe message waiting to be found in the store.
type probeAcked struct {
	id    string
	ackAt time.Time
}

// runPersistLive runs fanout-v1 at rate-ProbeRate msgs/s through Parley
// (RunFanout, unchanged) and, alongside in rooms of its own, a probe user
// sending ProbeRate msgs/s on one Connect stream. The probe's sends whose
// time falls in the fanout step's measured window give send→ack latency;
// each of them, once acked, is looked up by _id every PollInterval until
// found, giving ack→stored latency.
//
// The probe exists because RunFanout has no hook for its SendAcks; with an
// OnAck(room, clientMsgID, sent, ack) callback in FanoutConfig every load
// message could be measured instead.
func runPersistLive(ctx context.Context, cfg PersistConfig, mc *mongo.Client, rate int) (*PersistLive, error) {
	live := &PersistLive{OfferedPerS: rate, FanoutPerS: rate - cfg.ProbeRate, ProbePerS: cfg.ProbeRate,
		PollIntervalMS: ms(cfg.PollInterval)}
	coll := mc.Database(cfg.LiveDatabase).Collection(msgstore.CollectionName)
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
		mu        sync.Mutex
		sent      = map[string]probeSend{}
		sendAck   Hist
		ackStored Hist
		failed    atomic.Int64
		notStored atomic.Int64
		dropped   atomic.Int64
		queries   atomic.Int64
		toPoll    = make(chan probeAcked, 1<<16)
		noMore    = make(chan struct{})
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
				select {
				case toPoll <- probeAcked{id: a.GetMessage().GetMessageId(), ackAt: now}:
				default:
					dropped.Add(1)
				}
			}
		}
	}()

	// The poller: one FindOne by _id (pushed down to an index lookup by
	// FerretDB and MongoDB) per pending message per tick. A message counts
	// as stored at the start of the query that found it.
	var pollSpan time.Duration
	pollerDone := make(chan struct{})
	go func() {
		defer close(pollerDone)
		t := time.NewTicker(cfg.PollInterval)
		defer t.Stop()
		var list []probeAcked
		var first time.Time
		proj := options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})
		for {
			for more := true; more; {
				select {
				case p := <-toPoll:
					list = append(list, p)
				default:
					more = false
				}
			}
			if len(list) == 0 {
				select {
				case <-noMore:
					if len(toPoll) == 0 {
						if !first.IsZero() {
							pollSpan = time.Since(first)
						}
						return
					}
				default:
				}
			} else if first.IsZero() {
				first = time.Now()
			}
			keep := list[:0]
			for _, p := range list {
				at := time.Now()
				qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
				err := coll.FindOne(qctx, bson.D{{Key: "_id", Value: p.id}}, proj).Err()
				qcancel()
				queries.Add(1)
				switch {
				case err == nil:
					ackStored.Record(at.Sub(p.ackAt))
				case time.Since(p.ackAt) > 30*time.Second:
					notStored.Add(1)
				default: // not there yet, or a transient error
					keep = append(keep, p)
				}
			}
			list = keep
			select {
			case <-t.C:
			case <-ctx.Done():
				return
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
	fmt.Fprintf(cfg.Progress, "live: fanout-v1 at %d msgs/s + probe %d msgs/s over %d rooms, send→ack and ack→stored (poll every %s)\n",
		live.FanoutPerS, cfg.ProbeRate, cfg.ProbeRooms, cfg.PollInterval)
	var loadStart time.Time
	select {
	case <-started:
		loadStart = time.Now()
	case res := <-fanDone:
		close(noMore)
		if res.err != nil {
			return live, res.err
		}
		return live, fmt.Errorf("fanout run ended without its %q progress line: the probe cannot align with it", fanoutStartedLine)
	case <-ctx.Done():
		return live, ctx.Err()
	}
	windowStart := loadStart.Add(cfg.LiveWarmup)
	windowEnd := windowStart.Add(cfg.LiveStep)
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
	// Acks of measured sends: wait until all arrived (or 15 s).
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := 0
		for _, p := range sent {
			if p.measured {
				n++
			}
		}
		mu.Unlock()
		if n == 0 {
			break
		}
	}
	mu.Lock()
	for _, p := range sent {
		if p.measured {
			failed.Add(1) // never acked
		}
	}
	mu.Unlock()
	close(noMore)
	<-pollerDone
	live.SendAck, live.AckStored = latencyOf(&sendAck), latencyOf(&ackStored)
	live.SendFailed, live.NotStored = failed.Load(), notStored.Load()+dropped.Load()
	if pollSpan > 0 {
		live.PollQueriesPerS = float64(queries.Load()) / pollSpan.Seconds()
	}
	fmt.Fprintf(cfg.Progress, "live: send→ack p50 %.1fms p99 %.1fms (%d); ack→stored p50 %.1fms p99 %.1fms (%d); failed %d, not stored %d; poller %.0f queries/s\n",
		live.SendAck.P50, live.SendAck.P99, live.SendAck.Count, live.AckStored.P50, live.AckStored.P99, live.AckStored.Count,
		live.SendFailed, live.NotStored, live.PollQueriesPerS)
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
