package chat

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/fanout"
	"github.com/parleychat/parley/server/store"
)

// BenchmarkDelivery measures the live delivery path on this instance: hub →
// session queue → writer → gRPC → a Go client's Recv, over loopback TCP,
// for 20 rooms of 10 member streams. One op is one message dispatched (10
// deliveries); at most window messages per room are in flight, so a larger
// window lets more messages queue together for a stream.
//
//	go test -run '^$' -bench Delivery -benchmem ./server/chat/
func BenchmarkDelivery(b *testing.B) {
	for _, batches := range []bool{false, true} {
		for _, window := range []int{1, 8} {
			b.Run(fmt.Sprintf("batches=%v/window=%d", batches, window), func(b *testing.B) {
				benchmarkDelivery(b, batches, window)
			})
		}
	}
}

func benchmarkDelivery(b *testing.B, batches bool, window int) {
	const rooms, members = 20, 10
	e := newTestEnv(b, Config{StreamQueue: 1 << 16, FrameRate: 1e6, FrameBurst: 1e6, MaxStreamsPerUser: 1000})
	var got atomic.Int64
	heads := make([]int64, rooms)
	epochs := make([]string, rooms)
	for r := range rooms {
		id := fmt.Sprint("room", r)
		users := make([]string, members)
		for m := range users {
			users[m] = fmt.Sprintf("u%d-%d", r, m)
		}
		e.room(b, id, store.VisibilityPublic, users...)
		epoch, head, err := e.broker.Head(context.Background(), id)
		if err != nil {
			b.Fatal(err)
		}
		epochs[r], heads[r] = epoch, head
		for _, u := range users {
			ctx, cancel := context.WithCancel(e.ctx(u))
			b.Cleanup(cancel)
			s, err := e.client().Connect(ctx)
			if err != nil {
				b.Fatal(err)
			}
			s.Send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Options{Options: &parleyv1.StreamOptions{MessageBatches: batches}}})
			s.Send(&parleyv1.ConnectRequest{Frame: &parleyv1.ConnectRequest_Subscribe{Subscribe: &parleyv1.Subscribe{RoomId: id}}})
			subscribed := make(chan struct{})
			go func() {
				for {
					f, err := s.Recv()
					if err != nil {
						return
					}
					switch {
					case f.GetSubscribed() != nil:
						close(subscribed)
					case f.GetMessage() != nil:
						got.Add(1)
					case f.GetMessageBatch() != nil:
						got.Add(int64(len(f.GetMessageBatch().Messages)))
					}
				}
			}()
			<-subscribed
		}
	}
	body := strings.Repeat("x", 100)
	wait := func(n int64) {
		for got.Load() < n {
			time.Sleep(20 * time.Microsecond)
		}
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := i % rooms
		heads[r]++
		ev, err := fanout.NewEvent(fmt.Sprint("room", r), &eventsv1.RoomEvent{Event: &eventsv1.RoomEvent_Message{Message: &parleyv1.Message{
			MessageId: fmt.Sprint("m", i), RoomId: fmt.Sprint("room", r), Epoch: epochs[r], Seq: heads[r], SenderId: "u", Body: body}}})
		if err != nil {
			b.Fatal(err)
		}
		e.svc.hub.(*fanout.Hub).Dispatch(ev)
		if inflight := rooms * window; i >= inflight {
			wait(int64(i-inflight) * members)
		}
	}
	wait(int64(b.N) * members)
	b.StopTimer()
	b.ReportMetric(float64(b.N*members)/b.Elapsed().Seconds(), "deliveries/s")
	// CPU time (server and client, this process) per delivery: unlike the
	// rate, it hardly moves when other work shares the machine.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N*members), "cpu-µs/delivery")
}

// cpuTime is the process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
