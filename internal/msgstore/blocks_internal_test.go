package msgstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestMarkerCacheHandsOverAFailedMarker: a command that needs a marker
// another command carries does not carry it again, but the call's
// confirmation waits for that command, and writes the marker itself when
// that command failed: a call never succeeds with its marker unwritten.
func TestMarkerCacheHandsOverAFailedMarker(t *testing.T) {
	var c markerCache
	refs := []blockRef{{"r", 1}, {"r", 63}, {"r", 64}}
	ms := markersOf(refs)
	if len(ms) != 3 { // segment 0, blocks 0 and 1
		t.Fatalf("markersOf = %v, want 3 markers", ms)
	}
	claim := func() []claimed {
		n, out := c.claimFitting(refs, 100)
		if n != len(refs) {
			t.Fatalf("claimFitting took %d of %d messages", n, len(refs))
		}
		return out
	}
	a := claim()
	if len(a) != 3 {
		t.Fatalf("first claim = %d markers, want 3", len(a))
	}
	if b := claim(); len(b) != 0 {
		t.Fatalf("second claim while pending = %v, want none", b)
	}
	wait, toWrite := c.check(ms)
	if len(wait) != 3 || len(toWrite) != 0 {
		t.Fatalf("check while pending: wait %d, write %d; want 3, 0", len(wait), len(toWrite))
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		c.settle(a, false) // the carrying command failed
	}()
	for _, ch := range wait {
		<-ch
	}
	wait, toWrite = c.check(ms)
	if len(wait) != 0 || len(toWrite) != 3 {
		t.Fatalf("check after the failure: wait %d, write %d; want 0, 3", len(wait), len(toWrite))
	}
	if b := claim(); len(b) != 0 {
		t.Fatalf("claim while the confirmation writes = %v, want none", b)
	}
	c.settle(toWrite, true)
	if wait, toWrite = c.check(ms); len(wait)+len(toWrite) != 0 {
		t.Fatalf("check after writing: wait %d, write %d; want nothing", len(wait), len(toWrite))
	}
	if b := claim(); len(b) != 0 {
		t.Fatalf("claim of written markers = %v, want none", b)
	}
}

func TestBlockKeys(t *testing.T) {
	for _, tc := range []struct {
		seq        int64
		block, seg int64
	}{{1, 0, 0}, {63, 0, 0}, {64, 1, 0}, {4095, 63, 0}, {4096, 64, 1}, {1_004_300, 15692, 245}} {
		if b := blockOf(tc.seq); b != tc.block || segmentOf(b) != tc.seg {
			t.Errorf("seq %d: block %d segment %d, want %d %d", tc.seq, b, segmentOf(b), tc.block, tc.seg)
		}
	}
	// A room whose id extends another's never shares its keys.
	if messageKey("a", 12) == messageKey("a1", 2) || blockMarker("a", 12).ID == blockMarker("a1", 2).ID {
		t.Error("keys of rooms a and a1 collide")
	}
}

// TestClaimFittingKeepsACommandWithinItsBatch: messages and the markers they
// need fill at most max documents, and a message is always taken.
func TestClaimFittingKeepsACommandWithinItsBatch(t *testing.T) {
	var c markerCache
	var refs []blockRef
	for i := range 100 {
		refs = append(refs, blockRef{room: fmt.Sprintf("room%d", i), seq: 1}) // 2 new markers each
	}
	n, ms := c.claimFitting(refs, 100)
	if n != 33 || len(ms) != 66 {
		t.Fatalf("claimFitting of 100 new rooms = %d messages, %d markers; want 33, 66", n, len(ms))
	}
	c.settle(ms, true)
	n, ms = c.claimFitting(refs[:33], 100) // their markers are written
	if n != 33 || len(ms) != 0 {
		t.Fatalf("claimFitting of known blocks = %d messages, %d markers; want 33, 0", n, len(ms))
	}
	if n, ms = c.claimFitting(refs[50:], 2); n != 1 || len(ms) != 2 {
		t.Fatalf("claimFitting with max 2 = %d messages, %d markers; want 1, 2", n, len(ms))
	}
}

// TestMarkerCacheResetKeepsWaitersAwake: when the cache forgets everything
// (past its bound) while a marker is pending, a confirmation waiting for it
// still wakes when its command settles, and then writes it itself if the
// cache no longer knows it.
func TestMarkerCacheResetKeepsWaitersAwake(t *testing.T) {
	c := markerCache{max: 4}
	refs := []blockRef{{"r", 1}}
	ms := markersOf(refs)
	_, pending := c.claimFitting(refs, 100)
	wait, _ := c.check(ms)
	if len(wait) != 2 {
		t.Fatalf("waiting for %d markers, want 2", len(wait))
	}
	var others []blockRef
	for i := range 5 {
		others = append(others, blockRef{fmt.Sprintf("o%d", i), 1})
	}
	c.claimFitting(others, 100) // over the bound: the next call resets
	c.claimFitting([]blockRef{{"x", 1}}, 100)
	c.settle(pending, true)
	for _, ch := range wait {
		select {
		case <-ch:
		case <-time.After(time.Second):
			t.Fatal("a waiter did not wake after the reset")
		}
	}
	if _, toWrite := c.check(ms); len(toWrite) != 2 {
		t.Errorf("after the reset, %d markers to write, want 2 (the cache forgot them)", len(toWrite))
	}
}

// TestConfirmMarkersFollowsItsContext: a confirmation waiting for another
// command's marker returns when its context ends.
func TestConfirmMarkersFollowsItsContext(t *testing.T) {
	s := &Store{}
	refs := []blockRef{{"r", 1}}
	s.marks.claimFitting(refs, 100) // pending, never settled
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := s.confirmMarkers(ctx, refs); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("confirmMarkers = %v, want the context's deadline", err)
	}
}

// BenchmarkClaimFittingKnownBlocks: what every insert command asks the
// marker cache for its 100 messages once their blocks' markers are written
// (the steady state of a chat load: a new block every 64 messages a room).
//
//	go test -run '^$' -bench ClaimFitting -benchmem ./internal/msgstore/
func BenchmarkClaimFittingKnownBlocks(b *testing.B) {
	var c markerCache
	refs := make([]blockRef, 100)
	for i := range refs {
		refs[i] = blockRef{room: fmt.Sprintf("01JD%022d", i%10), seq: int64(1000 + i)}
	}
	_, ms := c.claimFitting(refs, 1000)
	c.settle(ms, true)
	for b.Loop() {
		if n, ms := c.claimFitting(refs, 100); n != 100 || len(ms) != 0 {
			b.Fatal(n, len(ms))
		}
	}
}
