package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/bench"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// The fault table (issue 5): every scenario runs a steady load through the
// public API, injects one fault, heals it, waits for quiet and then accounts
// for every message. The load is ftRate messages/s spread evenly over
// ftRooms rooms; each room has ftMembersPerRoom members, half of them
// connected to each of the two server instances; every member is one
// Connect stream that subscribes to all its rooms and sends its share of
// the load into them. Persistence is on: Kafka and the persister writing
// FerretDB on PostgreSQL.
//
// The clients behave like real ones:
//   - a send carries a client_msg_id and stays pending until its SendAck;
//     an error ack (Unavailable while Kafka or Redis is away) or a broken
//     stream makes the client send it again, with the same client_msg_id,
//     on the next stream if need be (a client has at most ftInFlight sends
//     unanswered; the rest wait in its outbox);
//   - a receiver keeps its last (epoch, seq) per room and resubscribes with
//     it (Subscribe.resume_from) after reconnecting, to its own instance or,
//     if that one is gone, to the other;
//   - ResyncRequired makes it reload the room from history (ListMessages,
//     newest first, back to where it was). The store is behind the head the
//     server announced by the persister's lag, so a reload that does not
//     reach that head is read again (after 1, 2, 4, then every 8 s, for at
//     most ftReloadPatience). The notes report how many first reads fell
//     short and what a client that reads only once (as the web app does)
//     would lack;
//   - MessageWithdrawn removes the message.
//
// At the end: sent = distinct client_msg_ids put on a stream; acked = those
// acknowledged; delivered live = (receiver, acked message) pairs that
// arrived as Message frames on a stream (live or resume replay), out of
// every member of the room times the room's acked messages; stored =
// documents in the store; lost = acked messages not stored, or missing at a
// member of their room at the end (live + replay + reload); dup = a message
// id stored twice, a client_msg_id stored under two message ids (a retry
// that became a second message), or a message id received twice by one
// receiver within one epoch view.
//
// Results are logged and, when PARLEY_FAULT_TABLE names a file, written
// there as markdown (scripts/test.sh prints it; docs/RELIABILITY.md holds a
// copy).

const (
	ftRooms          = 20
	ftClients        = 8 // senders and receivers; client i is on server i%2
	ftMembersPerRoom = 4 // room r: clients r, r+1, r+2, r+3 (mod 8): two per instance
	ftRate           = 500.0
	ftInFlight       = 100
	ftWarmup         = 5 * time.Second
	ftMinLoad        = 25 * time.Second // load runs at least this long...
	ftAfterHeal      = 8 * time.Second  // ...and at least this long after the heal
	ftBodyPad        = 96
	ftReloadPatience = 90 * time.Second
)

// ftScenario is one row of the table.
type ftScenario struct {
	name   string   // row label
	slug   string   // subtest name
	extra  []string // extra server flags
	slow   bool     // add a member of every room that stops reading
	ready  bool     // poll both instances' /readyz during the run
	inject func(r *ftRun)
}

func ftScenarios() []ftScenario {
	return []ftScenario{
		{name: "1. persister SIGKILLed mid-batch, restarted", slug: "persister_killed", inject: ftKillPersister},
		{name: "2. Kafka broker stopped 10 s", slug: "kafka_stopped", extra: []string{"-send-timeout", "3s"}, inject: ftStopKafka},
		{name: "3. Redis restarted with its data gone", slug: "redis_data_lost", ready: true, inject: ftRestartRedis},
		{name: "4. one of two server instances SIGKILLed", slug: "server_killed", inject: ftKillServer},
		{name: "5. store (FerretDB + PostgreSQL) stopped 10 s", slug: "store_stopped", inject: ftStopStore},
		{name: "6. a client stops reading for 15 s", slug: "slow_reader", slow: true, inject: ftSlowReader},
	}
}

// TestFaultTable runs every scenario of the fault table (see above) and
// asserts that no acknowledged message is lost or duplicated.
func TestFaultTable(t *testing.T) {
	faultTest(t)
	var (
		mu   sync.Mutex
		rows []ftRow
	)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if len(rows) == 0 {
			return
		}
		md := ftMarkdown(rows)
		t.Logf("fault table:\n%s", md)
		if path := os.Getenv("PARLEY_FAULT_TABLE"); path != "" {
			if err := os.WriteFile(path, []byte(md), 0o644); err != nil {
				t.Errorf("write %s: %v", path, err)
			}
		}
	})
	for _, sc := range ftScenarios() {
		t.Run(sc.slug, func(t *testing.T) {
			var row *ftRow
			defer func() {
				if row == nil {
					row = &ftRow{scenario: sc.name, notes: []string{"did not complete: see the test log"}}
				}
				mu.Lock()
				rows = append(rows, *row)
				mu.Unlock()
			}()
			r := newFTRun(t, sc)
			r.startLoad()
			time.Sleep(ftWarmup)
			r.faultAt.Store(time.Now().UnixNano())
			sc.inject(r)
			healed := time.Now()
			r.healed.Store(healed.UnixNano())
			time.Sleep(time.Until(later(r.loadStart.Add(ftMinLoad), healed.Add(ftAfterHeal))))
			r.stopLoad()
			r.quiet()
			row = r.account()
			t.Logf("%s: %s", sc.name, ftMarkdownRow(*row))
			if row.acked == 0 {
				t.Errorf("no message was acknowledged")
			}
			if row.lost != 0 || row.dup != 0 {
				t.Errorf("%d acknowledged messages lost, %d duplicated: %s", row.lost, row.dup, strings.Join(row.notes, "; "))
			}
		})
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// ---------------------------------------------------------------- scenarios

// ftKillPersister: SIGKILL the persister while it writes, restart it 2 s later.
func ftKillPersister(r *ftRun) {
	lag := r.lag()
	r.c.pers.kill()
	r.mark("persister SIGKILLed (its lag: %d records)", lag)
	time.Sleep(2 * time.Second)
	r.c.startPersister()
	r.mark("persister restarted")
}

// ftStopKafka: stop the broker, keep it away 10 s, start it again.
func ftStopKafka(r *ftRun) { r.away("Kafka", "kafka", 10*time.Second, nil) }

// ftRestartRedis: stop Redis (it keeps nothing on disk), wait until both
// instances report not ready, keep it away 5 s, start it empty, wait until
// both are ready again.
func ftRestartRedis(r *ftRun) {
	r.away("Redis", "redis", 5*time.Second, func() {
		eventually(r.t, "both instances not ready", 15*time.Second, func() bool {
			return !ready(r.c.servers[0].addr) && !ready(r.c.servers[1].addr)
		})
		r.mark("both instances report not ready")
	})
	eventually(r.t, "both instances ready again", 30*time.Second, func() bool {
		return ready(r.c.servers[0].addr) && ready(r.c.servers[1].addr)
	})
	r.mark("both instances ready again")
}

// ftKillServer: SIGKILL instance 0; its clients move to instance 1.
func ftKillServer(r *ftRun) {
	r.c.servers[0].kill()
	r.killed[0].Store(true)
	r.mark("server 0 SIGKILLed")
}

// ftStopStore: stop FerretDB and PostgreSQL (services.sh stops and starts
// them together), keep them away 10 s, start them.
func ftStopStore(r *ftRun) { r.away("the store", "ferretdb", 10*time.Second, nil) }

// ftSlowReader: the extra member (on instance 0, subscribed to every room)
// stops reading for 15 s, then reads again. The instance's heap and RSS and
// its slow-consumer counter are sampled meanwhile.
func ftSlowReader(r *ftRun) {
	srv := r.c.servers[r.slow.home]
	before := ftScrape(srv.addr)
	heap0, rss0 := before["go_memstats_heap_inuse_bytes"], before["process_resident_memory_bytes"]
	r.slow.paused.Store(true)
	r.stallStart = time.Now()
	r.mark("slow client stops reading")
	var heapMax, rssMax float64
	dropped := time.Duration(0)
	for time.Since(r.stallStart) < 15*time.Second {
		m := ftScrape(srv.addr)
		heapMax = max(heapMax, m["go_memstats_heap_inuse_bytes"])
		rssMax = max(rssMax, m["process_resident_memory_bytes"])
		if dropped == 0 && m["parley_chat_slow_consumer_disconnects_total"] > before["parley_chat_slow_consumer_disconnects_total"] {
			dropped = time.Since(r.stallStart)
			r.mark("server dropped the slow stream (slow-consumer counter went up)")
		}
		time.Sleep(250 * time.Millisecond)
	}
	r.stallEnd = time.Now()
	r.slow.paused.Store(false)
	r.mark("slow client reads again")
	r.extraNotes = append(r.extraNotes, fmt.Sprintf("instance heap in use %.0f→max %.0f MB, RSS %.0f→max %.0f MB during the stall",
		heap0/1e6, heapMax/1e6, rss0/1e6, rssMax/1e6))
	if dropped == 0 {
		r.t.Errorf("the server never counted the stalled stream as a slow consumer")
		r.extraNotes = append(r.extraNotes, "server did NOT drop the stalled stream")
	} else {
		r.extraNotes = append(r.extraNotes, fmt.Sprintf("server gave up on the stream %.1f s into the stall", dropped.Seconds()))
	}
	// Bounded: the queue (1024 frames) and the transport's flow-control
	// windows, a few MB at most; the load itself keeps the heap moving by a
	// few MB, hence the margin.
	if grow := heapMax - heap0; grow > 64e6 {
		r.t.Errorf("instance heap grew by %.0f MB while one stream did not read", grow/1e6)
	}
}

// away stops service svc, runs during (if any), keeps it away for d more,
// starts it again (services.sh waits until it is ready) and notes how long
// it was away.
func (r *ftRun) away(what, svc string, d time.Duration, during func()) {
	r.t.Cleanup(func() { services(r.t, "start", svc) })
	t0 := time.Now()
	services(r.t, "stop", svc)
	stopped := time.Now()
	r.mark("%s stopped", what)
	if during != nil {
		during()
	}
	time.Sleep(d)
	t1 := time.Now()
	services(r.t, "start", svc)
	r.mark("%s started", what)
	r.extraNotes = append(r.extraNotes, fmt.Sprintf("%s away %.0f s (stopping %.1f s, start until ready %.1f s)",
		what, time.Since(t0).Seconds(), stopped.Sub(t0).Seconds(), time.Since(t1).Seconds()))
}

// ---------------------------------------------------------------- the run

type ftRun struct {
	t       *testing.T
	sc      ftScenario
	c       *cluster
	rooms   []string
	members [][]*ftClient // per room: its members (senders first)
	senders [][]*ftClient // per room: the members that send
	clients []*ftClient
	slow    *ftClient
	adm     *kadm.Client
	killed  [2]atomic.Bool // read by the sampler

	sentAt sync.Map // client_msg_id -> time.Time of its first send
	sent   atomic.Int64
	acks   atomic.Int64

	loadStart            time.Time
	faultAt, healed      atomic.Int64 // unix ns of the fault and the heal; read by the sampler
	stallStart, stallEnd time.Time
	stopGen, stopBg      context.CancelFunc
	genDone, bgDone      chan struct{}
	extraNotes           []string
	latMu                sync.Mutex
	lat                  []ftLatency
	generated            atomic.Int64
	clientsCtx           context.Context
	stopClients          context.CancelFunc

	// Written by the sampler, read once it has stopped.
	notReady       [2]time.Duration
	lagMax         int64
	lagBeforeFault int64
	lagNormalAt    time.Time
	lagSamples     int
	lagUnknown     time.Duration // Kafka could not be asked
}

type ftLatency struct {
	at   time.Time
	d    time.Duration
	slow bool
}

func newFTRun(t *testing.T, sc ftScenario) *ftRun {
	t.Helper()
	r := &ftRun{t: t, sc: sc}
	r.c = newCluster(t, 2, sc.extra...)
	kc, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(r.c.brokers, ",")...))
	if err != nil {
		t.Fatal(err)
	}
	r.adm = kadm.NewClient(kc)
	t.Cleanup(r.adm.Close)

	users := make([]*user, ftClients)
	for i := range users {
		users[i] = r.c.signUp(i%2, fmt.Sprintf("ft%d", i))
	}
	var slowUser *user
	if sc.slow {
		slowUser = r.c.signUp(0, "ftslow")
	}
	r.clientsCtx, r.stopClients = context.WithCancel(context.Background())
	for i, u := range users {
		r.clients = append(r.clients, r.newClient(i, u, i%2))
	}
	if slowUser != nil {
		r.slow = r.newClient(ftClients, slowUser, 0)
		r.slow.isSlow = true
	}
	for room := 0; room < ftRooms; room++ {
		var ms []*ftClient
		for k := 0; k < ftMembersPerRoom; k++ {
			ms = append(ms, r.clients[(room+k)%ftClients])
		}
		var joiners []*user
		for _, m := range ms[1:] {
			joiners = append(joiners, m.u)
		}
		senders := ms
		if r.slow != nil {
			joiners = append(joiners, r.slow.u)
			ms = append(ms, r.slow)
		}
		id := createRoom(t, ms[0].u, parleyv1.RoomVisibility_ROOM_VISIBILITY_PUBLIC, joiners...)
		r.rooms = append(r.rooms, id)
		r.members = append(r.members, ms)
		r.senders = append(r.senders, senders)
		for _, m := range ms {
			m.rooms = append(m.rooms, id)
		}
	}
	all := r.all()
	for _, cl := range all {
		cl.views = make(map[string]*ftView, len(cl.rooms))
		for _, room := range cl.rooms {
			cl.views[room] = &ftView{have: map[string]bool{}, view: map[string]int{}, stream: map[string]bool{}, withdrawnID: map[string]bool{}, late: map[string]bool{}}
		}
		go cl.run(r.clientsCtx)
	}
	t.Cleanup(func() {
		r.stopLoadIfRunning()
		r.stopClients()
		for _, cl := range all {
			<-cl.done
		}
	})
	// Load starts once every stream has confirmed every subscription, so
	// every receiver is owed every message of its rooms.
	deadline := time.Now().Add(30 * time.Second)
	for _, cl := range all {
		for {
			var n int
			cl.query(func() { n = cl.subscribedOnce })
			if n == len(cl.rooms) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("client %d: %d of %d subscriptions confirmed after 30 s", cl.idx, n, len(cl.rooms))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return r
}

func (r *ftRun) all() []*ftClient {
	if r.slow == nil {
		return r.clients
	}
	return append(slices.Clip(r.clients), r.slow)
}

// mark notes a moment of the scenario in the test log.
func (r *ftRun) mark(format string, args ...any) {
	r.t.Logf("%6.1fs %s", time.Since(r.loadStart).Seconds(), fmt.Sprintf(format, args...))
}

// startLoad starts the generator and the background samplers.
func (r *ftRun) startLoad() {
	r.loadStart = time.Now()
	r.mark("load starts: %.0f msgs/s over %d rooms", ftRate, ftRooms)
	gctx, stop := context.WithCancel(context.Background())
	r.stopGen, r.genDone = stop, make(chan struct{})
	go r.generate(gctx)
	bctx, stopBg := context.WithCancel(context.Background())
	r.stopBg, r.bgDone = stopBg, make(chan struct{})
	go r.sample(bctx)
}

func (r *ftRun) stopLoad() {
	r.stopGen()
	<-r.genDone
	r.mark("load stops: %d messages generated", r.generated.Load())
}

func (r *ftRun) stopLoadIfRunning() {
	if r.stopGen != nil {
		r.stopGen()
		<-r.genDone
	}
	if r.stopBg != nil {
		r.stopBg()
		<-r.bgDone
	}
}

// generate submits messages at ftRate, round robin over the rooms and, within
// a room, over its senders.
func (r *ftRun) generate(ctx context.Context) {
	defer close(r.genDone)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	pad := strings.Repeat("x", ftBodyPad)
	for n := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for want := int(time.Since(start).Seconds() * ftRate); n < want; n++ {
			room := n % ftRooms
			senders := r.senders[room]
			cl := senders[(n/ftRooms)%len(senders)]
			cmid := fmt.Sprintf("ft%d-%d", cl.idx, n)
			cl.outbox <- ftOutgoing{room: r.rooms[room], cmid: cmid, body: fmt.Sprintf("message %d from ft%d %s", n, cl.idx, pad)}
			r.generated.Add(1)
		}
	}
}

// sample watches, every 250 ms, the persister's lag (every second) and,
// when asked, both instances' readiness.
func (r *ftRun) sample(ctx context.Context) {
	defer close(r.bgDone)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	lastLag := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if r.sc.ready {
				for i, s := range r.c.servers {
					if !r.killed[i].Load() && !ready(s.addr) {
						r.notReady[i] += now.Sub(last)
					}
				}
			}
			last = now
			if now.Sub(lastLag) < time.Second {
				continue
			}
			since := now.Sub(lastLag)
			lastLag = now
			l := r.lag()
			if l < 0 {
				if r.lagSamples > 0 {
					r.lagUnknown += since
				}
				continue
			}
			if r.lagSamples++; r.lagSamples%5 == 0 {
				r.t.Logf("%6.1fs persister lag %d records, %d acked", now.Sub(r.loadStart).Seconds(), l, r.acks.Load())
			}
			r.lagMax = max(r.lagMax, l)
			if r.faultAt.Load() == 0 {
				r.lagBeforeFault = max(r.lagBeforeFault, l)
			} else if r.healed.Load() != 0 && r.lagNormalAt.IsZero() && l <= max(r.lagBeforeFault, int64(ftRate)) {
				r.lagNormalAt = now
			}
		}
	}
}

// lag returns how many records of the topic the persister has not yet
// committed, i.e. not yet written to the store (-1 if Kafka cannot be
// asked). The persister commits every 5 s, so about 5 s of load is normal.
// (Counting the store's documents instead is no option: FerretDB counts by
// reading every document, which under load slows the store itself.)
func (r *ftRun) lag() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	lags, err := r.adm.Lag(ctx, r.c.name)
	if err != nil {
		return -1
	}
	l, ok := lags[r.c.name]
	if !ok || l.Error() != nil {
		return -1
	}
	return l.Lag.Total()
}

// quiet waits until every send is acknowledged, the persister has committed
// every record and every receiver holds every acked message of its rooms
// (or until the time limits), then stops the clients.
func (r *ftRun) quiet() {
	all := r.all()
	deadline := time.Now().Add(90 * time.Second)
	for {
		pending := 0
		for _, cl := range all {
			cl.query(func() { pending += len(cl.pending) })
		}
		if pending == 0 {
			r.mark("every send acknowledged")
			break
		}
		if time.Now().After(deadline) {
			r.mark("%d sends still unacknowledged after 90 s", pending)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	deadline = time.Now().Add(120 * time.Second)
	var drained time.Time
	for {
		l := r.lag()
		if l == 0 {
			drained = time.Now()
			r.mark("the persister has written and committed every record")
			break
		}
		if time.Now().After(deadline) {
			r.mark("after 120 s the persister still lags by %d records", l)
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	r.stopBg()
	<-r.bgDone
	r.stopBg = nil
	if r.lagNormalAt.IsZero() {
		r.lagNormalAt = drained // the commits (every 5 s) took it from above normal to 0
	}
	time.Sleep(2 * time.Second) // let a late duplicate land
	acked := r.ackedByRoom()
	deadline = time.Now().Add(ftReloadPatience)
	for {
		missing, reloading := 0, 0
		for _, cl := range all {
			cl.query(func() {
				reloading += cl.reloading
				for room, v := range cl.views {
					for id := range acked[room] {
						if !v.have[id] {
							missing++
						}
					}
				}
			})
		}
		if missing == 0 && reloading == 0 {
			r.mark("every receiver holds every acked message of its rooms")
			break
		}
		if time.Now().After(deadline) {
			r.mark("after %s, %d (receiver, message) pairs still missing, %d reloads running", ftReloadPatience, missing, reloading)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.stopClients()
	for _, cl := range all {
		<-cl.done
	}
}

type ftAck struct{ room, id string }

// ackedByRoom returns room -> acked message ids (clients must be stopped or
// queried: it reads under each client's loop).
func (r *ftRun) ackedByRoom() map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, room := range r.rooms {
		out[room] = map[string]bool{}
	}
	for _, cl := range r.all() {
		cl.query(func() {
			for _, a := range cl.acked {
				out[a.room][a.id] = true
			}
		})
	}
	return out
}

// account builds the scenario's row from the clients' state and the store.
func (r *ftRun) account() *ftRow {
	t := r.t
	row := &ftRow{scenario: r.sc.name, sent: r.sent.Load()}
	all := r.all()
	ackedRoom := r.ackedByRoom()
	ackIDs := map[string]bool{}
	unacked := 0
	sendErrs := map[codes.Code]int{}
	streamEnds := map[codes.Code]int{}
	reconnects, moved, resyncs, reloadShort, withdrawn := 0, 0, 0, 0, 0
	var reloadWait time.Duration
	resent := 0
	reloadFailed, reloadAfterHead := 0, 0
	for _, cl := range all {
		for _, a := range cl.acked {
			ackIDs[a.id] = true
		}
		unacked += len(cl.pending)
		for c, n := range cl.sendErrs {
			sendErrs[c] += n
		}
		for c, n := range cl.streamEnds {
			streamEnds[c] += n
		}
		reconnects += cl.reconnects
		resent += cl.resent
		if cl.server != cl.home {
			moved++
		}
		for _, v := range cl.views {
			resyncs += v.resyncs
			reloadShort += v.reloadShort
			reloadWait = max(reloadWait, v.reloadWait)
			reloadFailed += v.reloadFailed
			reloadAfterHead += v.reloadAfterHead
			withdrawn += v.withdrawn
		}
	}
	row.acked = int64(len(ackIDs))

	// The store.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Messages only: the store's block markers have seq 0.
	cur, err := r.c.db.Collection("messages").Find(ctx, bson.D{{Key: "seq", Value: bson.D{{Key: "$gt", Value: 0}}}},
		options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}, {Key: "client_msg_id", Value: 1}, {Key: "sender_id", Value: 1},
			{Key: "room_id", Value: 1}, {Key: "epoch", Value: 1}, {Key: "seq", Value: 1}}))
	if err != nil {
		t.Fatalf("read the store: %v", err)
	}
	var docs []struct {
		ID     string `bson:"_id"`
		CMID   string `bson:"client_msg_id"`
		Sender string `bson:"sender_id"`
		Room   string `bson:"room_id"`
		Epoch  string `bson:"epoch"`
		Seq    int64  `bson:"seq"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		t.Fatalf("read the store: %v", err)
	}
	stored := map[string]int{}
	byCMID := map[string][]string{}
	where := map[string]string{} // message id -> "room/epoch/seq cmid" for the log
	for _, d := range docs {
		stored[d.ID]++
		byCMID[d.Sender+"/"+d.CMID] = append(byCMID[d.Sender+"/"+d.CMID], d.ID)
		where[d.ID] = fmt.Sprintf("%s room %s epoch %s seq %d client_msg_id %s", d.ID, d.Room, d.Epoch, d.Seq, d.CMID)
	}
	examples := 0
	example := func(format string, args ...any) {
		if examples++; examples <= 20 {
			t.Logf(format, args...)
		}
	}
	row.stored = int64(len(docs))
	storeDupIDs, storeDupCMIDs, storedNotAcked := 0, 0, 0
	for id, n := range stored {
		if n > 1 {
			storeDupIDs += n - 1
		}
		if !ackIDs[id] {
			storedNotAcked++
		}
	}
	withdrawnAt := func(id string) (n int) {
		for _, cl := range all {
			for _, v := range cl.views {
				if v.withdrawnID[id] {
					n++
				}
			}
		}
		return n
	}
	for _, ids := range byCMID {
		if len(ids) > 1 {
			storeDupCMIDs += len(ids) - 1
			for _, id := range ids {
				example("dup: one client_msg_id, several stored messages: %s (acked: %v, withdrawn at %d receivers)", where[id], ackIDs[id], withdrawnAt(id))
			}
		}
	}

	// Receivers.
	lostIDs := map[string]bool{}
	notStored := 0
	for id := range ackIDs {
		if stored[id] == 0 {
			notStored++
			lostIDs[id] = true
			example("lost: acked message %s not stored", id)
		}
	}
	missingPairs, withdrawnPairs, recvDups, phantoms, latePairs := 0, 0, 0, 0, 0
	for i, room := range r.rooms {
		for _, cl := range r.members[i] {
			v := cl.views[room]
			for id := range ackedRoom[room] {
				row.expected++
				if v.stream[id] {
					row.live++
				}
				if v.late[id] && !v.stream[id] {
					latePairs++
				}
				if !v.have[id] {
					missingPairs++
					if v.withdrawnID[id] {
						withdrawnPairs++
					}
					lostIDs[id] = true
					example("lost: client %d lacks acked %s (received on the stream: %v, withdrawn there: %v)", cl.idx, where[id], v.stream[id], v.withdrawnID[id])
				}
			}
			recvDups += v.dups
			for id := range v.have {
				if stored[id] == 0 {
					phantoms++
				}
			}
		}
	}
	row.lost = int64(len(lostIDs))
	row.dup = int64(storeDupIDs + storeDupCMIDs + recvDups)

	// Notes.
	n := func(format string, args ...any) { row.notes = append(row.notes, fmt.Sprintf(format, args...)) }
	if row.lost > 0 {
		n("LOST: %d acked not stored, %d (receiver, message) pairs missing (%d of them withdrawn by the server although acked)", notStored, missingPairs, withdrawnPairs)
	}
	if row.dup > 0 {
		n("DUP: %d same id twice in store, %d client_msg_id stored under two ids, %d twice at a receiver", storeDupIDs, storeDupCMIDs, recvDups)
	}
	if unacked > 0 {
		n("%d sends never acknowledged (not counted as lost)", unacked)
	}
	if storedNotAcked > 0 {
		n("%d stored but never acknowledged to their sender", storedNotAcked)
	}
	if phantoms > 0 {
		n("%d (receiver, message) pairs held but not stored", phantoms)
	}
	if len(sendErrs) > 0 {
		n("send errors (retried): %s", ftCodes(sendErrs))
	}
	if withdrawn > 0 {
		n("%d withdrawals received", withdrawn)
	}
	if len(streamEnds) > 0 {
		s := fmt.Sprintf("streams ended: %s; %d reconnects", ftCodes(streamEnds), reconnects)
		if resent > 0 {
			s += fmt.Sprintf("; %d sends unanswered on a broken stream sent again", resent)
		}
		n("%s", s)
	}
	if moved > 0 {
		n("%d clients resumed on the other instance", moved)
	}
	if resyncs > 0 {
		s := fmt.Sprintf("%d ResyncRequired → history reloads; %d first reads fell short of the announced head (store behind)", resyncs, reloadShort)
		if reloadShort > 0 {
			s += fmt.Sprintf(", re-read until reached (longest %.1f s); a client reading once would lack %d (receiver, message) pairs", reloadWait.Seconds(), latePairs)
		}
		if reloadAfterHead > 0 {
			s += fmt.Sprintf("; %d (receiver, message) pairs appeared in history only after the head had (stored out of seq order)", reloadAfterHead)
		}
		if reloadFailed > 0 {
			s += fmt.Sprintf(", %d NEVER reached it", reloadFailed)
		}
		n("%s", s)
	}
	if r.sc.ready {
		n("not ready: instance 0 %.1f s, instance 1 %.1f s", r.notReady[0].Seconds(), r.notReady[1].Seconds())
	}
	if r.lagSamples > 0 {
		s := fmt.Sprintf("persister lag ≤ %d records before the fault, max %d", r.lagBeforeFault, r.lagMax)
		if !r.lagNormalAt.IsZero() {
			s += fmt.Sprintf(", back under %d %.1f s after the heal", max(r.lagBeforeFault, int64(ftRate)), max(0, r.lagNormalAt.Sub(time.Unix(0, r.healed.Load())).Seconds()))
		}
		if r.lagUnknown > 0 {
			s += fmt.Sprintf(" (not measurable for %.0f s)", r.lagUnknown.Seconds())
		}
		n("%s", s)
	}
	n("%s", r.latencyNote())
	row.notes = append(row.notes, r.extraNotes...)

	// Scenario checks beyond lost/dup.
	switch r.sc.slug {
	case "redis_data_lost":
		if r.notReady[0] == 0 || r.notReady[1] == 0 {
			t.Errorf("an instance was never seen not ready while Redis was away: %v", r.notReady)
		}
		if resyncs == 0 {
			t.Errorf("no receiver was told to resync after Redis lost its data")
		}
	case "server_killed":
		if moved == 0 {
			t.Errorf("no client moved to the surviving instance")
		}
		if resyncs != 0 {
			t.Errorf("%d resyncs: a resume within the recent cache must not need one", resyncs)
		}
	case "slow_reader":
		if r.slow.streamEnds[codes.ResourceExhausted] == 0 {
			t.Errorf("the slow client was never ended with ResourceExhausted (stream ends: %s)", ftCodes(r.slow.streamEnds))
		} else {
			n("the slow client read what the transport held, got ResourceExhausted %.1f s after it read again, resumed from its last positions",
				r.slow.exhaustedAt.Sub(r.stallEnd).Seconds())
		}
	}
	return row
}

// latencyNote reports send→receive latency of stream deliveries: overall,
// and for scenario 6 the other members' before and during the stall.
func (r *ftRun) latencyNote() string {
	r.latMu.Lock()
	defer r.latMu.Unlock()
	pick := func(from, to time.Time, slow bool) []time.Duration {
		var out []time.Duration
		for _, l := range r.lat {
			if l.slow == slow && !l.at.Before(from) && l.at.Before(to) {
				out = append(out, l.d)
			}
		}
		return out
	}
	far := r.loadStart.Add(24 * time.Hour)
	all := pick(r.loadStart, far, false)
	s := "latency send→receive p50/p99/max " + ftPct(all)
	if !r.stallStart.IsZero() {
		before := pick(r.loadStart.Add(time.Second), r.stallStart, false)
		during := pick(r.stallStart, r.stallEnd, false)
		s += fmt.Sprintf("; other members before the stall %s, during %s", ftPct(before), ftPct(during))
		b, d := ftQuantile(before, 0.99), ftQuantile(during, 0.99)
		if d > max(3*b, 250*time.Millisecond) {
			r.t.Errorf("other members slowed by the stalled reader: p99 %v during the stall, %v before", d, b)
		}
	}
	return s
}

func ftQuantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func ftPct(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n/a"
	}
	ms := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 0, 64) }
	return fmt.Sprintf("%s/%s/%s ms", ms(ftQuantile(ds, 0.5)), ms(ftQuantile(ds, 0.99)), ms(slices.Max(ds)))
}

func ftCodes(m map[codes.Code]int) string {
	var parts []string
	for c, n := range m {
		parts = append(parts, fmt.Sprintf("%s×%d", c, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// ---------------------------------------------------------------- a client

type ftOutgoing struct{ room, cmid, body string }

type ftPending struct {
	ftOutgoing
	n        int // order of submission
	inFlight bool
	sent     bool // put on a stream at least once
	attempts int
	due      time.Time
}

// ftView is one receiver's state of one room.
type ftView struct {
	pos             *parleyv1.RoomPosition // last position held (nil before the first Subscribed)
	have            map[string]bool        // message ids held: live, replay, reload; minus withdrawn
	view            map[string]int         // stream deliveries in the current epoch view
	stream          map[string]bool        // ids that arrived as Message frames
	dups            int
	resyncs         int
	withdrawn       int
	withdrawnID     map[string]bool // ids withdrawn (MessageWithdrawn)
	reloadShort     int             // reloads whose first read fell short of the announced head
	reloadWait      time.Duration   // longest time until a reload reached the head
	reloadFailed    int             // reloads that never reached it
	reloadAfterHead int             // ids read only after the head was reached (stored out of seq order)
	reloadRunning   bool
	late            map[string]bool        // ids only a re-read brought (a single reload would have missed them)
	reloadHead      *parleyv1.RoomPosition // what the running reload must reach
	reloadSince     int64                  // and from where
}

// ftClient is one user with one Connect stream at a time. Everything but the
// receive goroutine runs on run's goroutine; other goroutines reach its state
// through query.
type ftClient struct {
	r      *ftRun
	idx    int
	u      *user
	chat   [2]parleyv1.ChatServiceClient
	home   int
	isSlow bool
	rooms  []string

	outbox chan ftOutgoing
	frames chan ftFrame
	calls  chan func()
	done   chan struct{}
	paused atomic.Bool

	// Owned by run.
	server         int
	stream         parleyv1.ChatService_ConnectClient
	cancelStream   context.CancelFunc
	gen            int
	connected      bool
	pending        map[string]*ftPending
	fresh          []string // cmids never sent, in order
	retry          []string // cmids to send again
	inFlight       int
	acked          map[string]ftAck // cmid -> room, message id
	sendErrs       map[codes.Code]int
	streamEnds     map[codes.Code]int
	reconnects     int
	resent         int // sends unanswered when their stream broke, sent again
	exhaustedAt    time.Time
	views          map[string]*ftView
	subscribedOnce int
	reloading      int
	submitted      int
}

type ftFrame struct {
	gen int
	f   *parleyv1.ConnectResponse
	err error
}

func (r *ftRun) newClient(idx int, u *user, home int) *ftClient {
	cl := &ftClient{
		r: r, idx: idx, u: u, home: home, server: home,
		outbox: make(chan ftOutgoing, 1<<16), frames: make(chan ftFrame, 4096), calls: make(chan func()), done: make(chan struct{}),
		pending: map[string]*ftPending{}, acked: map[string]ftAck{},
		sendErrs: map[codes.Code]int{}, streamEnds: map[codes.Code]int{},
	}
	for i := range r.c.servers {
		cl.chat[i] = parleyv1.NewChatServiceClient(r.c.conn(i))
	}
	return cl
}

// query runs fn on the client's goroutine (or directly once it has stopped).
func (cl *ftClient) query(fn func()) {
	done := make(chan struct{})
	select {
	case cl.calls <- func() { fn(); close(done) }:
		<-done
	case <-cl.done:
		fn()
	}
}

func (cl *ftClient) run(ctx context.Context) {
	defer close(cl.done)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	backoff := 100 * time.Millisecond
	var reconnectAt time.Time
	defer func() {
		if cl.cancelStream != nil {
			cl.cancelStream()
		}
	}()
	for {
		if !cl.connected && !time.Now().Before(reconnectAt) && ctx.Err() == nil {
			if cl.connect(ctx) {
				backoff = 100 * time.Millisecond
			} else {
				reconnectAt = time.Now().Add(backoff)
				backoff = min(2*backoff, 2*time.Second)
			}
		}
		cl.pump()
		select {
		case <-ctx.Done():
			return
		case o := <-cl.outbox:
			cl.submitted++
			cl.pending[o.cmid] = &ftPending{ftOutgoing: o, n: cl.submitted}
			cl.fresh = append(cl.fresh, o.cmid)
		case fr := <-cl.frames:
			if fr.err != nil {
				if fr.gen == cl.gen && cl.connected && ctx.Err() == nil {
					cl.streamEnded(fr.err)
					reconnectAt = time.Now().Add(backoff)
				}
				continue
			}
			cl.handle(ctx, fr.f)
		case fn := <-cl.calls:
			fn()
		case <-tick.C:
		}
	}
}

// connect opens a stream on the current instance, else on the other one,
// and subscribes to every room from its last position.
func (cl *ftClient) connect(ctx context.Context) bool {
	for _, srv := range []int{cl.server, 1 - cl.server} {
		sctx, cancel := context.WithCancel(cl.u.ctx(ctx))
		s, err := cl.chat[srv].Connect(sctx)
		if err != nil {
			cancel()
			continue
		}
		for _, room := range cl.rooms {
			var from *parleyv1.RoomPosition
			if p := cl.views[room].pos; p != nil {
				from = &parleyv1.RoomPosition{Epoch: p.Epoch, Seq: p.Seq}
			}
			// A failed Send means the stream is broken: its Recv reports why.
			_ = s.Send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Subscribe{Subscribe: &parleyv1.Subscribe{RoomId: room, ResumeFrom: from}}})
		}
		if cl.gen > 0 {
			cl.reconnects++
		}
		cl.gen++
		cl.stream, cl.cancelStream, cl.server, cl.connected = s, cancel, srv, true
		go cl.recv(s, cl.gen)
		return true
	}
	return false
}

func (cl *ftClient) recv(s parleyv1.ChatService_ConnectClient, gen int) {
	for {
		for cl.paused.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		f, err := s.Recv()
		select {
		case cl.frames <- ftFrame{gen: gen, f: f, err: err}:
		case <-cl.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// streamEnded records why the stream ended and queues every unanswered send
// again.
func (cl *ftClient) streamEnded(err error) {
	cl.streamEnds[status.Code(err)]++
	if status.Code(err) == codes.ResourceExhausted && cl.exhaustedAt.IsZero() {
		cl.exhaustedAt = time.Now()
	}
	cl.cancelStream()
	cl.connected = false
	for cmid, p := range cl.pending {
		if p.inFlight {
			p.inFlight = false
			p.due = time.Time{}
			cl.retry = append(cl.retry, cmid)
			cl.resent++
		}
	}
	cl.inFlight = 0
	cl.retry = slices.DeleteFunc(cl.retry, func(cmid string) bool { return cl.pending[cmid] == nil })
	slices.SortFunc(cl.retry, func(a, b string) int { return cl.pending[a].n - cl.pending[b].n }) // oldest first
}

// pump puts due sends on the stream while fewer than ftInFlight are unanswered.
func (cl *ftClient) pump() {
	if !cl.connected {
		return
	}
	now := time.Now()
	send := func(cmid string) bool {
		p := cl.pending[cmid]
		if p == nil { // acknowledged meanwhile
			return true
		}
		if err := cl.stream.Send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Send{Send: &parleyv1.SendMessageRequest{
			RoomId: p.room, ClientMsgId: p.cmid, Body: p.body}}}); err != nil {
			return false // broken stream: Recv reports it, then everything in flight is sent again
		}
		if !p.sent {
			p.sent = true
			cl.r.sent.Add(1)
			cl.r.sentAt.Store(p.cmid, now)
		}
		p.inFlight = true
		p.attempts++
		cl.inFlight++
		return true
	}
	keep := cl.retry[:0]
	for i, cmid := range cl.retry {
		p := cl.pending[cmid]
		switch {
		case p == nil || p.inFlight:
		case cl.inFlight >= ftInFlight || now.Before(p.due):
			keep = append(keep, cmid)
		case !send(cmid):
			keep = append(keep, cl.retry[i:]...)
			cl.retry = keep
			return
		}
	}
	cl.retry = keep
	for len(cl.fresh) > 0 && cl.inFlight < ftInFlight {
		if !send(cl.fresh[0]) {
			return
		}
		cl.fresh = cl.fresh[1:]
	}
}

func (cl *ftClient) handle(ctx context.Context, f *parleyv1.ConnectResponse) {
	switch {
	case f.GetSendAck() != nil:
		ack := f.GetSendAck()
		p := cl.pending[ack.ClientMsgId]
		if p == nil || !p.inFlight {
			return // an answer from a stream that has since broken: the retry answers again
		}
		p.inFlight = false
		cl.inFlight--
		if e := ack.GetError(); e != nil {
			code := codes.Code(e.Code)
			cl.sendErrs[code]++
			switch code {
			case codes.InvalidArgument, codes.NotFound, codes.PermissionDenied, codes.Unauthenticated:
				cl.r.t.Errorf("client %d: send %s refused: %v %s", cl.idx, ack.ClientMsgId, code, e.Message)
				delete(cl.pending, ack.ClientMsgId)
				return
			}
			p.due = time.Now().Add(min(200*time.Millisecond<<min(p.attempts, 4), 2*time.Second))
			cl.retry = append(cl.retry, ack.ClientMsgId)
			return
		}
		cl.r.acks.Add(1)
		cl.acked[ack.ClientMsgId] = ftAck{room: p.room, id: ack.GetMessage().GetMessageId()}
		delete(cl.pending, ack.ClientMsgId)
	case f.GetMessage() != nil:
		m := f.GetMessage()
		v := cl.views[m.RoomId]
		if v == nil {
			cl.r.t.Errorf("client %d: message of room %s it never subscribed to", cl.idx, m.RoomId)
			return
		}
		now := time.Now()
		if t0, ok := cl.r.sentAt.Load(m.ClientMsgId); ok {
			cl.r.latMu.Lock()
			cl.r.lat = append(cl.r.lat, ftLatency{at: now, d: now.Sub(t0.(time.Time)), slow: cl.isSlow})
			cl.r.latMu.Unlock()
		}
		if v.view[m.MessageId]++; v.view[m.MessageId] > 1 {
			v.dups++
		}
		v.have[m.MessageId] = true
		v.stream[m.MessageId] = true
		if v.pos == nil || v.pos.Epoch != m.Epoch || m.Seq > v.pos.Seq {
			v.pos = &parleyv1.RoomPosition{Epoch: m.Epoch, Seq: m.Seq}
		}
	case f.GetSubscribed() != nil:
		s := f.GetSubscribed()
		v := cl.views[s.RoomId]
		if v == nil {
			return
		}
		if v.pos == nil {
			cl.subscribedOnce++
		}
		// Everything up to head was replayed (or announced by ResyncRequired).
		if h := s.GetHead(); v.pos == nil || v.pos.Epoch != h.GetEpoch() || h.GetSeq() > v.pos.Seq {
			v.pos = &parleyv1.RoomPosition{Epoch: h.GetEpoch(), Seq: h.GetSeq()}
		}
	case f.GetResyncRequired() != nil:
		rs := f.GetResyncRequired()
		v := cl.views[rs.RoomId]
		if v == nil {
			return
		}
		v.resyncs++
		var since int64
		if v.pos != nil {
			since = v.pos.Seq
		}
		head := &parleyv1.RoomPosition{Epoch: rs.GetHead().GetEpoch(), Seq: rs.GetHead().GetSeq()}
		v.pos = head
		v.view = map[string]int{}
		if v.reloadRunning {
			if head.Seq > v.reloadHead.GetSeq() {
				v.reloadHead = head
			}
			v.reloadSince = min(v.reloadSince, since)
			return
		}
		v.reloadRunning, v.reloadHead, v.reloadSince = true, head, since
		cl.reloading++
		go cl.reload(ctx, rs.RoomId)
	case f.GetMessageWithdrawn() != nil:
		w := f.GetMessageWithdrawn()
		if v := cl.views[w.RoomId]; v != nil {
			v.withdrawn++
			v.withdrawnID[w.MessageId] = true
			delete(v.have, w.MessageId)
		}
	case f.GetSubscribeError() != nil:
		cl.r.t.Errorf("client %d: subscribe refused: %v", cl.idx, f.GetSubscribeError())
	}
}

// reload reads room's history, newest first, back to the position the
// client had before the resync, and keeps reading it (after 1, 2, 4, then
// every 8 s, for at most ftReloadPatience) until it reaches the head that
// ResyncRequired announced: the store is behind by the persister's lag.
// Reaching the head does not prove the history complete (records of one
// room from two instances reach Kafka, and so the store, out of seq order),
// so it then reads again every 2 s until a read brings nothing new. One
// reload runs per room; a further ResyncRequired meanwhile raises its
// target.
func (cl *ftClient) reload(ctx context.Context, room string) {
	v := cl.views[room] // its fields are read and written on run's goroutine only
	start := time.Now()
	wait := time.Second
	reached := int64(-1) // the target reached, -1 while none
	for attempt := 0; ctx.Err() == nil; attempt++ {
		var since int64
		cl.query(func() { since = v.reloadSince })
		msgs, err := cl.history(ctx, room, since)
		done := false
		cl.query(func() {
			added, top := 0, int64(-1)
			for _, m := range msgs {
				if !v.have[m.MessageId] {
					added++
					if attempt > 0 {
						v.late[m.MessageId] = true
					}
				}
				v.have[m.MessageId] = true
				top = max(top, m.Seq)
			}
			target := v.reloadHead.GetSeq()
			switch {
			case err != nil:
			case reached >= target && added == 0: // confirmed
				done = true
				return
			case reached >= target:
				v.reloadAfterHead += added
			case top >= target || target <= v.reloadSince: // seqs grow across epochs too
				reached = target
				if attempt > 0 {
					v.reloadWait = max(v.reloadWait, time.Since(start))
				}
			case attempt == 0:
				v.reloadShort++
			}
			if time.Since(start) >= ftReloadPatience {
				if reached < target {
					v.reloadFailed++
					cl.r.t.Logf("client %d: history of room %s did not reach the resync head %v within %s", cl.idx, room, v.reloadHead, ftReloadPatience)
				}
				done = true
			}
		})
		if done {
			cl.query(func() {
				v.reloadRunning = false
				cl.reloading--
			})
			return
		}
		next := wait
		if reached >= 0 {
			next = 2 * time.Second
		} else {
			wait = min(2*wait, 8*time.Second)
		}
		select {
		case <-time.After(next):
		case <-ctx.Done():
		}
	}
}

// history pages through room's history, newest first, down to seq since.
func (cl *ftClient) history(ctx context.Context, room string, since int64) ([]*parleyv1.Message, error) {
	var out []*parleyv1.Message
	token := ""
	for {
		var srv int
		cl.query(func() { srv = cl.server })
		cctx, cancel := context.WithTimeout(cl.u.ctx(ctx), 5*time.Second)
		resp, err := cl.chat[srv].ListMessages(cctx, &parleyv1.ListMessagesRequest{RoomId: room, PageSize: 200, PageToken: token})
		cancel()
		if err != nil {
			return nil, err
		}
		for _, m := range resp.Messages {
			if m.Seq <= since {
				return out, nil
			}
			out = append(out, m)
		}
		if token = resp.NextPageToken; token == "" {
			return out, nil
		}
	}
}

// ---------------------------------------------------------------- probes

// ftScrape returns the unlabelled samples of an instance's /metrics.
func ftScrape(addr string) map[string]float64 {
	out := map[string]float64{}
	resp, err := probeHTTP.Get("http://" + addr + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.Contains(line, "{") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = f
		}
	}
	return out
}

// ---------------------------------------------------------------- the table

type ftRow struct {
	scenario                                       string
	sent, acked, live, expected, stored, lost, dup int64
	notes                                          []string
}

func ftMarkdownRow(r ftRow) string {
	live := "—"
	if r.expected > 0 {
		live = fmt.Sprintf("%d / %d", r.live, r.expected)
	}
	return fmt.Sprintf("| %s | %d | %d | %s | %d | %d | %d | %s |", r.scenario, r.sent, r.acked, live, r.stored, r.lost, r.dup,
		strings.ReplaceAll(strings.Join(r.notes, "; "), "|", "/"))
}

func ftMarkdown(rows []ftRow) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "Fault table: %s, %s, %s, %s. Load: %.0f msgs/s over %d rooms, %d members per room (senders and receivers, half on each of two instances), persister on.\n\n",
		time.Now().Format("2006-01-02 15:04 MST"), host, bench.Machine(), runtime.Version(), ftRate, ftRooms, ftMembersPerRoom)
	b.WriteString("| scenario | sent | acked | delivered live | stored | lost | dup | notes |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, r := range rows {
		b.WriteString(ftMarkdownRow(r) + "\n")
	}
	return b.String()
}
