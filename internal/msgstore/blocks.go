package msgstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/parleychat/parley/internal/ferretpg"
)

// The block layout: how history reads stay proportional to the page, not to
// the room, on a store that filters by equality only.
//
// FerretDB 1.24 pushes only equality filters down to PostgreSQL: a history
// query {room_id, seq: {$lt: n}} sorted by seq and limited reads and decodes
// every message of the room, then sorts and limits in FerretDB (about 50 µs
// per message of the room: 0.5 s per page of a 10,000-message room, 5.6 s of
// a 100,000-message one, on the 2-core machine of docs/PERFORMANCE.md).
//
// So every message also carries the key of its block, blk = "m:<room>/<b>"
// with b = seq/64, and a room keeps a two-level directory of the blocks that
// hold messages, as marker documents in the same collection (usually in the
// insert command of a block's first messages; see markerCache for the
// rest):
//
//   - a block marker per block, blk = "s:<room>/<s>" with s = b/64: the
//     blocks of one segment of 4,096 positions;
//   - a segment marker per segment, blk = "r:<room>": the segments of a room.
//
// A page then reads the room's segment markers (one per 4,096 positions),
// the block markers of the segments it crosses (at most 64 each) and the
// messages of the blocks it crosses (at most 64 each), all by equality on
// blk, which ferretpg's GIN index serves (Lookups). Seq gaps, such as the
// 1,000,000 positions a new epoch skips, cost nothing: only blocks that hold
// messages have markers. What still grows with the room is its segment
// markers, one per 4,096 positions, read when a page starts at the room's
// newest message or meets a gap. Reading directly from the page's first
// block, the directory is skipped while blocks are dense (see list).
//
// A marker's room_id is its own _id and its seq is 0, which keeps markers
// apart from every message in the unique (room_id, seq) index (messages
// have seq > 0) and out of every query by a room's id.
const (
	blockShift   = 6 // 64 positions per block
	segmentShift = 6 // 64 blocks per segment

	markerPrefix = "~" // _id prefix of markers; room ids may not start with it
)

func blockOf(seq int64) int64   { return seq >> blockShift }
func segmentOf(blk int64) int64 { return blk >> segmentShift }

// messageKey is the blk of the messages of room's block b.
func messageKey(room string, b int64) string { return "m:" + room + "/" + strconv.FormatInt(b, 10) }

// segmentKey is the blk of the block markers of room's segment s.
func segmentKey(room string, s int64) string { return "s:" + room + "/" + strconv.FormatInt(s, 10) }

// roomKey is the blk of room's segment markers.
func roomKey(room string) string { return "r:" + room }

// marker is a directory document (see above).
type marker struct {
	ID     string `bson:"_id"`
	RoomID string `bson:"room_id"` // = ID
	Seq    int64  `bson:"seq"`     // 0
	Key    string `bson:"blk"`
	N      int64  `bson:"n"` // the block or segment number
}

func blockMarker(room string, b int64) marker {
	id := markerPrefix + "b:" + room + "/" + strconv.FormatInt(b, 10)
	return marker{ID: id, RoomID: id, Key: segmentKey(room, segmentOf(b)), N: b}
}

func segmentMarker(room string, s int64) marker {
	id := markerPrefix + "s:" + room + "/" + strconv.FormatInt(s, 10)
	return marker{ID: id, RoomID: id, Key: roomKey(room), N: s}
}

// markerRef names a marker without building its strings, so that the cache
// can be asked about every message of an insert without allocating.
type markerRef struct {
	room    string
	n       int64 // the block, or the segment
	segment bool
}

// doc is the marker document ref names.
func (r markerRef) doc() marker {
	if r.segment {
		return segmentMarker(r.room, r.n)
	}
	return blockMarker(r.room, r.n)
}

// markersAt returns the two markers a message at r needs: its segment's and
// its block's.
func markersAt(r blockRef) [2]markerRef {
	b := blockOf(r.seq)
	return [2]markerRef{{room: r.room, n: segmentOf(b), segment: true}, {room: r.room, n: b}}
}

// markerCacheMax bounds the markers a Store remembers; past it, it forgets
// them all and writes each marker again once (a duplicate costs FerretDB a
// slower command, nothing else).
const markerCacheMax = 1 << 18

// markerCache remembers the markers this Store has written or is writing, so
// that a block's marker goes out with its first message only.
//
// A marker is pending while the command that carries it runs, then written,
// or forgotten if that command failed. A command that needs a pending
// marker does not carry it again (a duplicate makes FerretDB insert the
// whole command row by row); instead every InsertMessages call, once its
// commands succeeded, confirms that each marker it needs is written, waiting
// for pending ones and writing forgotten ones itself (confirmMarkers). So a
// call never reports success for a message whose marker is not stored, even
// when the command that carried the marker failed after its messages were
// stored by another.
type markerCache struct {
	mu    sync.Mutex
	state map[markerRef]*markerState
	max   int // markerCacheMax when 0 (tests set it)
}

// resetIfFullLocked forgets everything once the cache holds more than its
// bound (see markerCacheMax).
func (c *markerCache) resetIfFullLocked() {
	limit := c.max
	if limit <= 0 {
		limit = markerCacheMax
	}
	if c.state == nil || len(c.state) > limit {
		c.state = make(map[markerRef]*markerState)
	}
}

type markerState struct {
	done    chan struct{} // closed when the outcome is known
	written bool          // set before done is closed
}

// claimed is a marker pending in the caller's command.
type claimed struct {
	ref markerRef
	st  *markerState
}

// markersOf returns the markers refs need, once each.
func markersOf(refs []blockRef) []markerRef {
	seen := make(map[markerRef]struct{})
	var out []markerRef
	for _, r := range refs {
		for _, m := range markersAt(r) {
			if _, ok := seen[m]; !ok {
				seen[m] = struct{}{}
				out = append(out, m)
			}
		}
	}
	return out
}

// claimLocked makes m pending for the caller.
func (c *markerCache) claimLocked(m markerRef) claimed {
	st := &markerState{done: make(chan struct{})}
	c.state[m] = st
	return claimed{m, st}
}

// claimFitting takes the messages at refs for one insert command of at most
// max documents: it returns how many of them (at least one) fit together
// with the markers they need that are neither written nor pending, and
// those markers, now pending for the caller, which must settle them.
// Keeping markers and messages within max keeps a command one SQL INSERT on
// FerretDB (its batch is DefaultChunkSize documents).
func (c *markerCache) claimFitting(refs []blockRef, max int) (n int, out []claimed) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resetIfFullLocked()
	for i, r := range refs {
		need := markersAt(r)
		k := 0
		for _, m := range need {
			if _, ok := c.state[m]; !ok {
				need[k] = m
				k++
			}
		}
		if i > 0 && i+1+len(out)+k > max {
			break
		}
		for _, m := range need[:k] {
			out = append(out, c.claimLocked(m))
		}
		n = i + 1
	}
	return n, out
}

// settle records the outcome of the command that carried cs.
func (c *markerCache) settle(cs []claimed, written bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range cs {
		m.st.written = written
		if !written && c.state[m.ref] == m.st {
			delete(c.state, m.ref)
		}
		close(m.st.done)
	}
}

// check returns the done channels of the markers of ms that are pending,
// and claims those the cache does not know (toWrite).
func (c *markerCache) check(ms []markerRef) (wait []chan struct{}, toWrite []claimed) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resetIfFullLocked()
	for _, m := range ms {
		st, ok := c.state[m]
		switch {
		case ok && st.written:
		case ok && !isClosed(st.done):
			wait = append(wait, st.done)
		default: // unknown, or its command failed
			toWrite = append(toWrite, c.claimLocked(m))
		}
	}
	return wait, toWrite
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// confirmMarkers returns once every marker refs need is written (see
// markerCache), writing the ones no command carries.
func (s *Store) confirmMarkers(ctx context.Context, refs []blockRef) error {
	ms := markersOf(refs)
	for {
		wait, toWrite := s.marks.check(ms)
		if len(toWrite) > 0 {
			docs := make([]marker, len(toWrite))
			for i, c := range toWrite {
				docs[i] = c.ref.doc()
			}
			err := ignoreDuplicates(s.coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false)))
			s.marks.settle(toWrite, err == nil)
			if err != nil {
				return fmt.Errorf("msgstore: write block markers: %w", err)
			}
		}
		if len(wait) == 0 {
			return nil
		}
		for _, ch := range wait {
			select {
			case <-ch:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// blockRef is the position of one message.
type blockRef struct {
	room string
	seq  int64
}

// markerNumbers returns the n of every marker with blk == key, ascending.
func (s *Store) markerNumbers(ctx context.Context, key string) ([]int64, error) {
	cur, err := s.coll.Find(ctx, bson.D{{Key: "blk", Value: key}},
		options.Find().SetProjection(bson.D{{Key: "_id", Value: 0}, {Key: "n", Value: 1}}))
	if err != nil {
		return nil, err
	}
	var rows []struct {
		N int64 `bson:"n"`
	}
	if err := cur.All(ctx, &rows); err != nil {
		return nil, err
	}
	ns := make([]int64, len(rows))
	for i, r := range rows {
		ns[i] = r.N
	}
	slices.Sort(ns)
	return slices.Compact(ns), nil
}

// blockMessages returns the stored messages of room's block b, by seq
// ascending.
func (s *Store) blockMessages(ctx context.Context, room string, b int64) ([]document, error) {
	cur, err := s.coll.Find(ctx, bson.D{{Key: "blk", Value: messageKey(room, b)}})
	if err != nil {
		return nil, err
	}
	var docs []document
	if err := cur.All(ctx, &docs); err != nil {
		return nil, err
	}
	slices.SortFunc(docs, func(a, b document) int { return cmp.Compare(a.Seq, b.Seq) })
	return docs, nil
}

// errStopWalk ends walkBlocks early without an error.
var errStopWalk = errors.New("stop")

// walkBlocks calls visit with the number of each block of room that has a
// marker, from block `from` on (inclusive), ascending or descending, until
// visit returns errStopWalk (walkBlocks then returns nil) or another error.
func (s *Store) walkBlocks(ctx context.Context, room string, from int64, descending bool, visit func(b int64) error) error {
	segs, err := s.markerNumbers(ctx, roomKey(room))
	if err != nil {
		return err
	}
	fromSeg := segmentOf(from)
	if descending {
		slices.Reverse(segs)
	}
	for _, sg := range segs {
		if (descending && sg > fromSeg) || (!descending && sg < fromSeg) {
			continue
		}
		blocks, err := s.markerNumbers(ctx, segmentKey(room, sg))
		if err != nil {
			return err
		}
		if descending {
			slices.Reverse(blocks)
		}
		for _, b := range blocks {
			if (descending && b > from) || (!descending && b < from) {
				continue
			}
			if err := visit(b); err != nil {
				if errors.Is(err, errStopWalk) {
					return nil
				}
				return err
			}
		}
	}
	return nil
}

// list implements List on the block layout: the messages of room with
// lo <= seq <= hi, at most limit, from hi down (descending) or from lo up.
//
// Blocks are dense unless seqs were skipped, so it first reads the blocks
// from its starting point directly, and asks the directory only at an empty
// block (a gap, the room's first or last block) or when the page starts at
// the room's newest message, which only the directory knows.
func (s *Store) list(ctx context.Context, room string, lo, hi int64, limit int, descending bool) ([]document, error) {
	var out []document
	take := func(docs []document) (full bool) {
		if descending {
			slices.Reverse(docs)
		}
		for _, d := range docs {
			if d.Seq < lo || d.Seq > hi {
				continue
			}
			out = append(out, d)
			if len(out) == limit {
				return true
			}
		}
		return false
	}
	first, last := blockOf(lo), blockOf(hi)
	b, step := first, int64(1)
	if descending {
		b, step = last, -1
	}
	inRange := func(b int64) bool { return b >= first && b <= last }
	empty := int64(-1) // a block read and found empty
	for inRange(b) && !(descending && hi == noUpperBound) {
		docs, err := s.blockMessages(ctx, room, b)
		if err != nil {
			return nil, err
		}
		if len(docs) == 0 {
			empty = b
			break
		}
		if take(docs) {
			return out, nil
		}
		b += step
	}
	if !inRange(b) {
		return out, nil
	}
	err := s.walkBlocks(ctx, room, b, descending, func(b int64) error {
		if !inRange(b) {
			return errStopWalk
		}
		if b == empty {
			return nil
		}
		docs, err := s.blockMessages(ctx, room, b)
		if err != nil {
			return err
		}
		if take(docs) {
			return errStopWalk
		}
		return nil
	})
	return out, err
}

// migrateBatch is the number of older messages one find of the migration
// returns (a variable for tests).
var migrateBatch int64 = 1000

// layoutID is the _id of the document that marks a collection whose every
// message has its blk: written by the first EnsureIndexes, after it gave the
// messages stored before the block layout theirs (migrate).
const layoutID = markerPrefix + "layout:blocks"

// migrate gives every message stored before the block layout its blk and
// markers, once per collection, then writes the layout document. On a new
// collection it only writes that document. Two processes may run it at
// once: each step is idempotent.
func (s *Store) migrate(ctx context.Context) error {
	err := s.coll.FindOne(ctx, bson.D{{Key: "_id", Value: layoutID}}).Err()
	if err == nil {
		return nil
	}
	if !errors.Is(err, mongo.ErrNoDocuments) {
		return fmt.Errorf("msgstore: read the layout document: %w", err)
	}
	type legacy struct {
		ID     string `bson:"_id"`
		RoomID string `bson:"room_id"`
		Seq    int64  `bson:"seq"`
	}
	// A batch's markers are written before its messages get their blk, so
	// that a migration cut short leaves no message with a blk and without
	// its markers; the next start goes on with the messages still without
	// one.
	migrated, start := 0, time.Now()
	migrate := func(batch []legacy) error {
		if migrated == 0 {
			s.log.Warn("msgstore: giving messages stored before the block layout their block keys, once; history reads wait for it", "collection", s.coll.Name())
			if s.pgURL != "" {
				res, err := ferretpg.Ensure(ctx, s.pgURL, s.coll.Database().Name(), s.Lookups())
				if err != nil {
					return fmt.Errorf("msgstore: index the lookups before the migration: %w", err)
				}
				s.log.Info("msgstore: lookups indexed before the migration", "created", res.Created, "existing", len(res.Existing))
			}
		}
		refs := make([]blockRef, len(batch))
		for i, d := range batch {
			refs[i] = blockRef{room: d.RoomID, seq: d.Seq}
		}
		if err := s.confirmMarkers(ctx, refs); err != nil {
			return err
		}
		for _, d := range batch {
			_, err := s.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: d.ID}},
				bson.D{{Key: "$set", Value: bson.D{{Key: "blk", Value: messageKey(d.RoomID, blockOf(d.Seq))}}}})
			if err != nil {
				return fmt.Errorf("msgstore: migrate message %s: %w", d.ID, err)
			}
		}
		migrated += len(batch)
		if migrated%10_000 < len(batch) {
			s.log.Info("msgstore: migrating older messages", "migrated", migrated, "elapsed", time.Since(start).Round(time.Second))
		}
		return nil
	}
	// Limited finds, each one operation (a client's per-operation timeout
	// bounds each, not the whole migration). FerretDB filters them itself,
	// reading the table from its start, where PostgreSQL keeps the rows not
	// yet updated (an update writes a new row version further on).
	for {
		cur, err := s.coll.Find(ctx, bson.D{{Key: "blk", Value: bson.D{{Key: "$exists", Value: false}}}, {Key: "seq", Value: bson.D{{Key: "$gt", Value: 0}}}},
			options.Find().SetLimit(migrateBatch).
				SetProjection(bson.D{{Key: "_id", Value: 1}, {Key: "room_id", Value: 1}, {Key: "seq", Value: 1}}))
		if err != nil {
			return fmt.Errorf("msgstore: find messages without a block: %w", err)
		}
		var found []legacy
		if err := cur.All(ctx, &found); err != nil {
			return fmt.Errorf("msgstore: find messages without a block: %w", err)
		}
		found = slices.DeleteFunc(found, func(d legacy) bool { return d.RoomID == "" })
		if len(found) == 0 {
			break
		}
		for batch := range slices.Chunk(found, s.chunkSize) {
			if err := migrate(batch); err != nil {
				return err
			}
		}
	}
	if migrated > 0 {
		s.log.Info("msgstore: older messages migrated to the block layout", "migrated", migrated, "took", time.Since(start).Round(time.Millisecond))
	}
	layout := marker{ID: layoutID, RoomID: layoutID, Key: layoutID}
	if _, err := s.coll.InsertOne(ctx, layout); err != nil && !mongo.IsDuplicateKeyError(err) {
		return fmt.Errorf("msgstore: write the layout document: %w", err)
	}
	return nil
}

// ignoreDuplicates returns err unless every one of its write errors is a
// duplicate key.
func ignoreDuplicates(_ *mongo.InsertManyResult, err error) error {
	var bwe mongo.BulkWriteException
	if err == nil || !errors.As(err, &bwe) || bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 {
		return err
	}
	for _, we := range bwe.WriteErrors {
		if we.Code != duplicateKeyCode {
			return err
		}
	}
	return nil
}

// noUpperBound is hi for a page without one.
const noUpperBound = math.MaxInt64
