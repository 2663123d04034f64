package msgstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/parleychat/parley/internal/msgstore"
	"github.com/parleychat/parley/internal/testenv"
)

// Concurrent calls share insert commands, and each call still gets its own
// outcome: its inserted and duplicate counts and only its own conflicts.
func TestConcurrentCallsShareInsertCommands(t *testing.T) {
	t.Parallel()
	s, inserts := countingStore(t, msgstore.Options{ChunkSize: 40, MaxInFlight: 1})
	ctx := testCtx(t)

	// Already stored: one message that a call resends (a duplicate) and
	// one whose position another call's message claims (a conflict).
	stored := roomMessages("pre", 1, 2)
	if _, _, err := s.InsertMessages(ctx, stored); err != nil {
		t.Fatal(err)
	}
	clash := roomMessages("pre", 2, 2)[0]
	clash.MessageId = "another-message-at-pre-2"
	before := inserts.Load()

	const calls = 60
	type result struct {
		ins, dup int
		err      error
	}
	results := make([]result, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msgs := roomMessages(fmt.Sprintf("r%02d", i), 1, 1)
			switch i {
			case 7:
				msgs = append(msgs, stored[0])
			case 11:
				msgs = append(msgs, clash)
			}
			ins, dup, err := s.InsertMessages(ctx, msgs)
			results[i] = result{ins, dup, err}
		}()
	}
	wg.Wait()
	for i, r := range results {
		want := result{1, 0, nil}
		if i == 7 {
			want.dup = 1
		}
		if i == 11 {
			var ce *msgstore.ConflictError
			if !errors.As(r.err, &ce) || len(ce.MessageIDs) != 1 || ce.MessageIDs[0] != clash.MessageId || r.ins != 1 {
				t.Errorf("call %d: %d inserted, err %v; want 1 inserted and a conflict for %s only", i, r.ins, r.err, clash.MessageId)
			}
			continue
		}
		if r != want {
			t.Errorf("call %d: %+v, want %+v", i, r, want)
		}
	}
	if n := inserts.Load() - before; n >= calls/2 {
		t.Errorf("%d calls made %d insert commands: they did not share them", calls, n)
	} else {
		t.Logf("%d concurrent calls, %d insert commands", calls, n)
	}
	for i := range calls {
		got, err := s.List(ctx, fmt.Sprintf("r%02d", i), 0, 0, 10)
		if err != nil || len(got) != 1 {
			t.Fatalf("room r%02d: %d stored, %v", i, len(got), err)
		}
	}
}

// countingStore is a store with its indexes whose client counts the insert
// commands it sends.
func countingStore(t *testing.T, opts msgstore.Options) (*msgstore.Store, *atomic.Int64) {
	t.Helper()
	inserts := new(atomic.Int64)
	monitor := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		if e.CommandName == "insert" {
			inserts.Add(1)
		}
	}}
	uri := testenv.MongoURI(t)
	client, err := mongo.Connect(options.Client().ApplyURI(uri).SetTimeout(30 * time.Second).SetMonitor(monitor))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	db := client.Database(testenv.Name(t))
	t.Cleanup(func() { _ = db.Drop(context.Background()) })
	s := msgstore.New(db, opts)
	if err := s.EnsureIndexes(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	return s, inserts
}

// With a linger, calls that arrive together while command slots are free
// (the partitions of one fetch) share commands: full chunks start at once
// and the rest waits out the linger for company, instead of each call
// taking a free slot with its own small command. A lone call is written
// after the linger, not left waiting.
func TestLingerGathersCallsIntoChunks(t *testing.T) {
	t.Parallel()
	const linger = 200 * time.Millisecond
	s, inserts := countingStore(t, msgstore.Options{ChunkSize: 40, MaxInFlight: 4, Linger: linger})
	ctx := testCtx(t)

	t0 := time.Now()
	if ins, _, err := s.InsertMessages(ctx, roomMessages("lone", 1, 1)); err != nil || ins != 1 {
		t.Fatalf("lone call: %d inserted, %v", ins, err)
	}
	if waited := time.Since(t0); waited < linger {
		t.Errorf("a lone part chunk was written after %s, before its %s linger", waited, linger)
	}

	before := inserts.Load()
	// 60 messages of one room, in its first block: with the room's two
	// markers, one full command of 40 documents and one of 22.
	const calls, each = 12, 5
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ins, dup, err := s.InsertMessages(ctx, roomMessages("g", int64(i*each+1), int64(i*each+each)))
			if err == nil && (ins != each || dup != 0) {
				err = fmt.Errorf("call %d: %d inserted, %d duplicates; want %d, 0", i, ins, dup, each)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	// Two commands when every call arrives within the linger; a third if
	// the machine delayed a call past it, or past the end of the full
	// chunk's command (whose runner then takes what has queued). Without a
	// linger the four free slots start four commands for the first four
	// calls alone.
	if n := inserts.Load() - before; n > 3 {
		t.Errorf("%d calls of %d documents made %d insert commands, want 2 (3 at most)", calls, each, n)
	} else {
		t.Logf("%d calls of %d documents, %d insert commands", calls, each, n)
	}
}

// A caller that gives up gets its context's error; its documents are still
// written, and the retry finds them stored.
func TestInsertCallerGivesUp(t *testing.T) {
	t.Parallel()
	s := newStore(t, msgstore.Options{ChunkSize: 40})
	ctx := testCtx(t)
	msgs := roomMessages("g", 1, 5)
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := s.InsertMessages(gone, msgs); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	ins, dup, err := s.InsertMessages(ctx, msgs)
	if err != nil || ins+dup != 5 {
		t.Fatalf("retry: %d inserted, %d duplicates, %v", ins, dup, err)
	}
}
