package msgstore_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/ferretpg"
	"github.com/parleychat/parley/internal/msgstore"
	"github.com/parleychat/parley/internal/testenv"
)

// gappyRoom is a room whose seqs skip positions the way real ones do: a
// whole empty block (64..127), single failed sends, an epoch's gap of a
// million positions, and messages on both sides of block and segment
// (4,096) boundaries.
func gappyRoom() []int64 {
	var out []int64
	for s := int64(1); s <= 300; s++ {
		if (s >= 64 && s <= 127) || s == 200 || s == 255 {
			continue
		}
		out = append(out, s)
	}
	for s := int64(4090); s <= 4100; s++ {
		out = append(out, s)
	}
	for s := int64(1_004_300); s <= 1_004_420; s++ {
		out = append(out, s)
	}
	return out
}

func messagesAt(room string, seqs []int64) []*parleyv1.Message {
	out := make([]*parleyv1.Message, len(seqs))
	for i, s := range seqs {
		out[i] = roomMessages(room, s, s)[0]
	}
	return out
}

// modelList is what List must return, computed from the stored seqs.
func modelList(stored []int64, before, after int64, limit int) []int64 {
	var out []int64
	if after == 0 {
		for _, s := range slices.Backward(stored) {
			if before == 0 || s < before {
				out = append(out, s)
			}
		}
	} else {
		for _, s := range stored {
			if s > after && (before == 0 || s < before) {
				out = append(out, s)
			}
		}
	}
	return out[:min(limit, len(out))]
}

// TestListMatchesAModel compares List, MaxSeq and Count with a plain model
// of the room over gaps, a block whose marker outlived its messages, and
// messages inserted out of order by several calls.
func TestListMatchesAModel(t *testing.T) {
	t.Parallel()
	s := newStore(t, msgstore.Options{ChunkSize: 40})
	ctx := testCtx(t)
	stored := gappyRoom()
	shuffled := messagesAt("g", stored)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	shuffled = append(shuffled, roomMessages("g2", 1, 70)...) // a room whose id extends g's
	for c := range slices.Chunk(shuffled, 97) {
		if _, _, err := s.InsertMessages(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	// Block 3 (192..255) keeps its marker but loses its messages, as when
	// a process stopped between the two.
	var kept []int64
	for _, seq := range stored {
		if seq >= 192 && seq <= 255 {
			if _, err := s.Collection().DeleteOne(ctx, bson.D{{Key: "_id", Value: fmt.Sprintf("g-m%05d", seq)}}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		kept = append(kept, seq)
	}
	stored = kept

	bounds := []int64{0, 1, 2, 63, 64, 65, 127, 128, 129, 191, 192, 256, 257, 301, 4091, 4096, 4097, 4101, 1_000_000, 1_004_301, 1_004_421, 2_000_000}
	checked := 0
	for _, before := range bounds {
		for _, after := range bounds {
			if before > 0 && after >= before {
				continue
			}
			for _, limit := range []int{1, 7, 50, 500} {
				got, err := s.List(ctx, "g", before, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				if want := modelList(stored, before, after, limit); !equalSeqs(seqs(got), want) {
					t.Fatalf("List(g, before %d, after %d, limit %d) = %v, want %v", before, after, limit, seqs(got), want)
				}
				for _, m := range got {
					if m.GetRoomId() != "g" || m.GetBody() == "" {
						t.Fatalf("List(g) returned %v", m)
					}
				}
				checked++
			}
		}
	}
	t.Logf("%d List calls matched the model", checked)
	if got, err := s.MaxSeq(ctx, "g"); err != nil || got != 1_004_420 {
		t.Errorf("MaxSeq(g) = %d, %v; want 1004420", got, err)
	}
	if got, err := s.Count(ctx, "g"); err != nil || got != int64(len(stored)) {
		t.Errorf("Count(g) = %d, %v; want %d", got, err, len(stored))
	}
	if got, err := s.Count(ctx, "g2"); err != nil || got != 70 {
		t.Errorf("Count(g2) = %d, %v; want 70", got, err)
	}
}

// TestAnotherStoreWritesTheSameBlocks: a second Store (another process, or
// this one after a restart) does not know which markers exist. Writing into
// the same blocks and redelivering must count like any insert.
func TestAnotherStoreWritesTheSameBlocks(t *testing.T) {
	t.Parallel()
	a := newStore(t, msgstore.Options{})
	ctx := testCtx(t)
	if _, _, err := a.InsertMessages(ctx, roomMessages("r", 1, 10)); err != nil {
		t.Fatal(err)
	}
	b := msgstore.New(a.Collection().Database(), msgstore.Options{})
	if ins, dup, err := b.InsertMessages(ctx, roomMessages("r", 11, 20)); err != nil || ins != 10 || dup != 0 {
		t.Fatalf("second store: inserted %d, duplicates %d, %v; want 10, 0, nil", ins, dup, err)
	}
	c := msgstore.New(a.Collection().Database(), msgstore.Options{})
	if ins, dup, err := c.InsertMessages(ctx, roomMessages("r", 1, 20)); err != nil || ins != 0 || dup != 20 {
		t.Fatalf("redelivery: inserted %d, duplicates %d, %v; want 0, 20, nil", ins, dup, err)
	}
	got, err := c.List(ctx, "r", 0, 0, 100)
	if err != nil || !equalSeqs(seqs(got), seqRange(20, 1)) {
		t.Fatalf("List = %v, %v", seqs(got), err)
	}
}

// TestEnsureIndexesMigratesOlderMessages: messages stored before the block
// layout (no blk) get theirs at the first EnsureIndexes, and List finds
// them.
func TestEnsureIndexesMigratesOlderMessages(t *testing.T) { // not parallel: it sets migrateBatch
	s := newStore(t, msgstore.Options{})
	ctx := testCtx(t)
	db := s.Collection().Database()
	if err := db.Collection(msgstore.CollectionName).Drop(ctx); err != nil {
		t.Fatal(err)
	}
	var legacy []any
	for seq := int64(1); seq <= 150; seq++ {
		legacy = append(legacy, bson.D{{Key: "_id", Value: fmt.Sprintf("old-%d", seq)}, {Key: "room_id", Value: "r"},
			{Key: "seq", Value: seq}, {Key: "body", Value: "before the blocks"}})
	}
	for seq := int64(1); seq <= 70; seq++ { // a room nothing is written to afterwards
		legacy = append(legacy, bson.D{{Key: "_id", Value: fmt.Sprintf("old-q-%d", seq)}, {Key: "room_id", Value: "q"},
			{Key: "seq", Value: seq}, {Key: "body", Value: "before the blocks"}})
	}
	if _, err := db.Collection(msgstore.CollectionName).InsertMany(ctx, legacy); err != nil {
		t.Fatal(err)
	}
	defer msgstore.SetMigrateBatch(60)() // several finds, of several commands each
	pgURL := testenv.FerretDBPostgresURL(t)
	s = msgstore.New(db, msgstore.Options{ChunkSize: 40, FerretDBPostgresURL: pgURL})
	if err := s.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.InsertMessages(ctx, roomMessages("r", 151, 160)); err != nil {
		t.Fatal(err)
	}
	got, err := s.List(ctx, "r", 0, 0, 1000)
	if err != nil || !equalSeqs(seqs(got), seqRange(160, 1)) {
		t.Fatalf("List after the migration = %v, %v", seqs(got), err)
	}
	if got, err := s.List(ctx, "q", 0, 0, 1000); err != nil || !equalSeqs(seqs(got), seqRange(70, 1)) {
		t.Fatalf("List(q) after the migration = %v, %v", seqs(got), err)
	}
	if max, err := s.MaxSeq(ctx, "q"); err != nil || max != 70 {
		t.Errorf("MaxSeq(q) after the migration = %d, %v; want 70", max, err)
	}
	// The migration indexed the lookups first (its updates find messages by
	// _id): nothing is left to create.
	if res, err := ferretpg.Ensure(ctx, pgURL, db.Name(), s.Lookups()); err != nil || len(res.Created) != 0 {
		t.Errorf("after the migration, ferretpg created %v (%v); want nothing", res.Created, err)
	}
	// A second start finds the layout document and leaves everything as is.
	if err := msgstore.New(db, msgstore.Options{}).EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := db.Collection(msgstore.CollectionName).CountDocuments(ctx, bson.D{{Key: "blk", Value: bson.D{{Key: "$exists", Value: false}}}})
	if err != nil || n != 0 {
		t.Errorf("%d documents without blk, %v", n, err)
	}
}
