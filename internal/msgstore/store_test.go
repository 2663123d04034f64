package msgstore_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/msgstore"
	"github.com/parleychat/parley/internal/testenv"
)

// newStore returns a Store on a fresh database of the real server named by
// PARLEY_TEST_MONGO_URI, with its indexes; the database is dropped at cleanup.
func newStore(tb testing.TB, opts msgstore.Options) *msgstore.Store {
	tb.Helper()
	uri := testenv.MongoURI(tb)
	client, err := mongo.Connect(options.Client().ApplyURI(uri).SetTimeout(30 * time.Second))
	if err != nil {
		tb.Fatalf("connect %s: %v", uri, err)
	}
	tb.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	db := client.Database(testenv.Name(tb))
	tb.Cleanup(func() {
		if err := db.Drop(context.Background()); err != nil {
			tb.Errorf("drop database %s: %v", db.Name(), err)
		}
	})
	s := msgstore.New(db, opts)
	if err := s.EnsureIndexes(testCtx(tb)); err != nil {
		tb.Fatalf("EnsureIndexes: %v", err)
	}
	return s
}

func testCtx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// roomMessages returns messages seq from..to of room, with millisecond
// create times (what a BSON date keeps).
func roomMessages(room string, from, to int64) []*parleyv1.Message {
	base := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	var out []*parleyv1.Message
	for seq := from; seq <= to; seq++ {
		out = append(out, &parleyv1.Message{
			MessageId:      fmt.Sprintf("%s-m%05d", room, seq),
			RoomId:         room,
			Epoch:          "ep1",
			Seq:            seq,
			SenderId:       "u-" + room,
			SenderUsername: "alice",
			ClientMsgId:    fmt.Sprintf("c%d", seq),
			Body:           fmt.Sprintf("héllo %d ✓", seq),
			CreateTime:     timestamppb.New(base.Add(time.Duration(seq) * time.Millisecond)),
		})
	}
	return out
}

func TestInsertMessages(t *testing.T) {
	t.Parallel()
	s := newStore(t, msgstore.Options{})
	ctx := testCtx(t)

	// 500 documents: five commands of the default chunk size.
	msgs := roomMessages("r1", 1, 500)
	ins, dup, err := s.InsertMessages(ctx, msgs)
	if err != nil || ins != 500 || dup != 0 {
		t.Fatalf("first insert = (%d, %d, %v), want (500, 0, nil)", ins, dup, err)
	}

	// Redelivery: the same 500 again plus 10 new ones and one repeated
	// inside the call.
	again := append(append([]*parleyv1.Message{}, msgs...), roomMessages("r1", 501, 510)...)
	again = append(again, msgs[3])
	ins, dup, err = s.InsertMessages(ctx, again)
	if err != nil || ins != 10 || dup != 501 {
		t.Fatalf("second insert = (%d, %d, %v), want (10, 501, nil)", ins, dup, err)
	}
	if n, err := s.Count(ctx, "r1"); err != nil || n != 510 {
		t.Fatalf("Count = %d, %v; want 510", n, err)
	}

	// Empty call.
	if ins, dup, err := s.InsertMessages(ctx, nil); err != nil || ins != 0 || dup != 0 {
		t.Errorf("empty insert = (%d, %d, %v)", ins, dup, err)
	}

	// A stored message reads back unchanged.
	got, err := s.List(ctx, "r1", 5, 3, 10)
	if err != nil || len(got) != 1 || !proto.Equal(got[0], msgs[3]) {
		t.Errorf("List(r1, before 5, after 3) = %v, %v; want [%v]", got, err, msgs[3])
	}
}

func TestInsertSeqConflict(t *testing.T) {
	t.Parallel()
	s := newStore(t, msgstore.Options{ChunkSize: 4})
	ctx := testCtx(t)
	msgs := roomMessages("r1", 1, 10)
	if _, _, err := s.InsertMessages(ctx, msgs[:5]); err != nil {
		t.Fatal(err)
	}
	intruder := proto.Clone(msgs[2]).(*parleyv1.Message)
	intruder.MessageId = "intruder"
	batch := append([]*parleyv1.Message{msgs[0], intruder}, msgs[5:]...)
	ins, dup, err := s.InsertMessages(ctx, batch)
	var ce *msgstore.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, msgstore.ErrSeqConflict) {
		t.Fatalf("err = %v, want a *ConflictError", err)
	}
	if len(ce.MessageIDs) != 1 || ce.MessageIDs[0] != "intruder" {
		t.Errorf("conflicting ids %v, want [intruder]", ce.MessageIDs)
	}
	if ins != 5 || dup != 1 {
		t.Errorf("inserted %d, duplicates %d; want 5, 1", ins, dup)
	}
	got, err := s.List(ctx, "r1", 0, 0, 100)
	if err != nil || len(got) != 10 {
		t.Fatalf("List = %d messages, %v; want 10", len(got), err)
	}
	if got[7].GetMessageId() != msgs[2].GetMessageId() {
		t.Errorf("seq 3 holds %s, want the original %s", got[7].GetMessageId(), msgs[2].GetMessageId())
	}
}

func TestInsertInvalid(t *testing.T) {
	t.Parallel()
	s := newStore(t, msgstore.Options{})
	ctx := testCtx(t)
	for _, tc := range []struct {
		name string
		msg  *parleyv1.Message
	}{
		{"nil", nil},
		{"no id", &parleyv1.Message{RoomId: "r", Seq: 1}},
		{"no room", &parleyv1.Message{MessageId: "m", Seq: 1}},
		{"zero seq", &parleyv1.Message{MessageId: "m", RoomId: "r"}},
		{"negative seq", &parleyv1.Message{MessageId: "m", RoomId: "r", Seq: -1}},
		{"room of the markers' prefix", &parleyv1.Message{MessageId: "m", RoomId: "~b:r/0", Seq: 1}},
		{"id of the markers' prefix", &parleyv1.Message{MessageId: "~b:r/0", RoomId: "r", Seq: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			valid := roomMessages("r", 1, 1)[0]
			_, _, err := s.InsertMessages(ctx, []*parleyv1.Message{valid, tc.msg})
			if !errors.Is(err, msgstore.ErrInvalidArgument) {
				t.Errorf("err = %v, want ErrInvalidArgument", err)
			}
		})
	}
	if n, err := s.Count(ctx, "r"); err != nil || n != 0 {
		t.Errorf("Count = %d, %v; an invalid call wrote something", n, err)
	}
}

func seqs(msgs []*parleyv1.Message) []int64 {
	out := make([]int64, len(msgs))
	for i, m := range msgs {
		out[i] = m.GetSeq()
	}
	return out
}

func seqRange(from, to int64) []int64 {
	var out []int64
	if from <= to {
		for s := from; s <= to; s++ {
			out = append(out, s)
		}
	} else {
		for s := from; s >= to; s-- {
			out = append(out, s)
		}
	}
	return out
}

func equalSeqs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestListMaxSeqCount(t *testing.T) {
	t.Parallel()
	s := newStore(t, msgstore.Options{})
	ctx := testCtx(t)
	var all []*parleyv1.Message
	all = append(all, roomMessages("a", 1, 120)...)
	all = append(all, roomMessages("b", 1, 7)...)
	all = append(all, roomMessages("a2", 1, 3)...) // a prefix of "a": must not leak
	if _, _, err := s.InsertMessages(ctx, all); err != nil {
		t.Fatal(err)
	}

	t.Run("backward paging", func(t *testing.T) {
		var pages [][]int64
		before := int64(0)
		for {
			page, err := s.List(ctx, "a", before, 0, 50)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			for _, m := range page {
				if m.GetRoomId() != "a" {
					t.Fatalf("room %s message in room a's history", m.GetRoomId())
				}
			}
			pages = append(pages, seqs(page))
			before = page[len(page)-1].GetSeq()
		}
		want := [][]int64{seqRange(120, 71), seqRange(70, 21), seqRange(20, 1)}
		if len(pages) != len(want) {
			t.Fatalf("%d pages, want %d: %v", len(pages), len(want), pages)
		}
		for i := range want {
			if !equalSeqs(pages[i], want[i]) {
				t.Errorf("page %d = %v, want %v", i, pages[i], want[i])
			}
		}
	})

	t.Run("forward paging", func(t *testing.T) {
		var got []int64
		after := int64(10)
		for {
			page, err := s.List(ctx, "a", 0, after, 50)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			got = append(got, seqs(page)...)
			after = page[len(page)-1].GetSeq()
		}
		if !equalSeqs(got, seqRange(11, 120)) {
			t.Errorf("forward from 10 = %v", got)
		}
	})

	for _, tc := range []struct {
		name          string
		room          string
		before, after int64
		limit         int
		want          []int64
	}{
		{"newest", "a", 0, 0, 3, seqRange(120, 118)},
		{"before", "a", 5, 0, 10, seqRange(4, 1)},
		{"window", "a", 15, 10, 100, seqRange(11, 14)},
		{"window limited", "a", 100, 10, 2, seqRange(11, 12)},
		{"after the end", "a", 0, 120, 10, nil},
		{"after the largest seq", "a", 0, math.MaxInt64, 10, nil},
		{"other room", "b", 0, 0, 100, seqRange(7, 1)},
		{"unknown room", "zz", 0, 0, 10, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.List(ctx, tc.room, tc.before, tc.after, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if !equalSeqs(seqs(got), tc.want) {
				t.Errorf("List(%s, before %d, after %d, limit %d) = %v, want %v", tc.room, tc.before, tc.after, tc.limit, seqs(got), tc.want)
			}
		})
	}

	for _, tc := range []struct {
		name          string
		room          string
		before, after int64
		limit         int
	}{
		{"zero limit", "a", 0, 0, 0},
		{"no room", "", 0, 0, 10},
		{"negative before", "a", -1, 0, 10},
		{"negative after", "a", 0, -1, 10},
	} {
		t.Run("invalid "+tc.name, func(t *testing.T) {
			if _, err := s.List(ctx, tc.room, tc.before, tc.after, tc.limit); !errors.Is(err, msgstore.ErrInvalidArgument) {
				t.Errorf("err = %v, want ErrInvalidArgument", err)
			}
		})
	}

	for _, tc := range []struct {
		room         string
		maxSeq, size int64
	}{{"a", 120, 120}, {"b", 7, 7}, {"a2", 3, 3}, {"empty", 0, 0}} {
		if got, err := s.MaxSeq(ctx, tc.room); err != nil || got != tc.maxSeq {
			t.Errorf("MaxSeq(%s) = %d, %v; want %d", tc.room, got, err, tc.maxSeq)
		}
		if got, err := s.Count(ctx, tc.room); err != nil || got != tc.size {
			t.Errorf("Count(%s) = %d, %v; want %d", tc.room, got, err, tc.size)
		}
	}
}

func TestEnsureIndexes(t *testing.T) {
	t.Parallel()
	s := newStore(t, msgstore.Options{})
	ctx := testCtx(t)
	if err := s.EnsureIndexes(ctx); err != nil {
		t.Fatalf("second EnsureIndexes: %v", err)
	}
	cur, err := s.Collection().Indexes().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var idx []bson.M
	if err := cur.All(ctx, &idx); err != nil {
		t.Fatal(err)
	}
	for _, ix := range idx {
		if ix["name"] == msgstore.RoomSeqIndex {
			if u, _ := ix["unique"].(bool); !u {
				t.Errorf("index %s is not unique: %v", msgstore.RoomSeqIndex, ix)
			}
			return
		}
	}
	t.Errorf("no index %s among %v", msgstore.RoomSeqIndex, idx)
}
