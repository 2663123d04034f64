package chat

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/server/apierr"
	"github.com/parleychat/parley/server/store"
)

// countingRooms counts the store queries membership checks make.
type countingRooms struct {
	Rooms
	room, isMember atomic.Int64
}

func (c *countingRooms) Room(ctx context.Context, id string) (store.Room, error) {
	c.room.Add(1)
	return c.Rooms.Room(ctx, id)
}

func (c *countingRooms) IsMember(ctx context.Context, roomID, userID string) (bool, error) {
	c.isMember.Add(1)
	return c.Rooms.IsMember(ctx, roomID, userID)
}

// Memberships confirmed in the same instant (a room's publishers after a
// restart) must not all be refreshed in the same instant: with a fixed TTL,
// fanout-v1's 100 publishers asked the store together every 5 s, and the
// live path waited behind that burst. A member's check costs one query.
func TestMembershipRefreshesSpreadOverTheTTL(t *testing.T) {
	const ttl = 400 * time.Millisecond
	env := newTestEnv(t, Config{MembershipTTL: ttl})
	cr := &countingRooms{Rooms: env.store}
	env.svc.rooms = cr
	const n = 50
	for i := range n {
		env.room(t, fmt.Sprintf("r%d", i), store.VisibilityPublic, "alice")
	}
	ctx := context.Background()
	for i := range n {
		if err := env.svc.checkMember(ctx, fmt.Sprintf("r%d", i), "alice"); err != nil {
			t.Fatalf("r%d: %v", i, err)
		}
	}
	if got, rooms := cr.isMember.Load(), cr.room.Load(); got != n || rooms != 0 {
		t.Errorf("checking %d memberships asked IsMember %d times and Room %d times, want %d and 0", n, got, rooms, n)
	}
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for i := range n {
		v, ok := env.svc.members.Load(fmt.Sprintf("r%d/alice", i))
		if !ok {
			t.Fatalf("r%d: not cached", i)
		}
		e := v.(*memberEntry)
		d := time.Duration(e.refreshAt.Load() - e.confirmed.Load())
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo < ttl/2 || hi > ttl {
		t.Errorf("refresh delays span %s..%s, want within [%s, %s]", lo, hi, ttl/2, ttl)
	}
	// 50 uniform draws over 200 ms all within 50 ms of each other: p < 1e-28.
	if hi-lo < ttl/8 {
		t.Errorf("refresh delays span only %s..%s: entries confirmed together refresh together", lo, hi)
	}

	// The first use after an entry's refresh time asks the store once, in
	// the background, and moves the refresh time on; the use itself passes.
	v, _ := env.svc.members.Load("r0/alice")
	e := v.(*memberEntry)
	e.refreshAt.Store(time.Now().Add(-time.Millisecond).UnixNano())
	before := cr.isMember.Load()
	if err := env.svc.checkMember(ctx, "r0", "alice"); err != nil {
		t.Fatalf("a use due for refresh: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.refreshAt.Load() < time.Now().UnixNano() {
		if time.Now().After(deadline) {
			t.Fatal("an entry past its refresh time was not refreshed")
		}
		time.Sleep(time.Millisecond)
	}
	if got := cr.isMember.Load() - before; got != 1 {
		t.Errorf("the refresh asked IsMember %d times, want 1", got)
	}
}

func TestMembershipTTLMustBePositive(t *testing.T) {
	_, err := NewService(Config{MembershipTTL: -time.Second}, nil, nil, nil, nil, nil, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "membership TTL") {
		t.Fatalf("NewService with a negative membership TTL: %v, want an error naming it", err)
	}
}

// A member removed from the store (by another instance) is refused once
// the cached answer's refresh has seen it, about one TTL later; a public
// room's non-member gets PermissionDenied, a private room's NotFound.
func TestRemovedMemberIsRefusedAfterTheRefresh(t *testing.T) {
	const ttl = 100 * time.Millisecond
	env := newTestEnv(t, Config{MembershipTTL: ttl})
	env.room(t, "pub", store.VisibilityPublic, "alice")
	env.room(t, "priv", store.VisibilityPrivate, "alice")
	ctx := context.Background()
	for _, r := range []string{"pub", "priv"} {
		if err := env.svc.checkMember(ctx, r, "alice"); err != nil {
			t.Fatalf("%s: %v", r, err)
		}
	}
	env.store.mu.Lock()
	delete(env.store.members, "pub/alice")
	delete(env.store.members, "priv/alice")
	env.store.mu.Unlock()
	for r, want := range map[string]error{"pub": apierr.ErrNotMember, "priv": apierr.ErrRoomNotFound} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := env.svc.checkMember(ctx, r, "alice")
			if errors.Is(err, want) {
				break
			}
			if err != nil {
				t.Fatalf("%s: got %v, want %v", r, err, want)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: a removed member still passes 5 s later (TTL %s)", r, ttl)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if err := env.svc.checkMember(ctx, "nosuch", "alice"); !errors.Is(err, apierr.ErrRoomNotFound) {
		t.Errorf("unknown room: got %v, want %v", err, apierr.ErrRoomNotFound)
	}
}
