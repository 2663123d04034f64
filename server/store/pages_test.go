package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/parleychat/parley/internal/ferretpg"
	"github.com/parleychat/parley/internal/testenv"
	"github.com/parleychat/parley/server/store"
)

// roomsAndMembers fills a fresh database with rooms (every third private,
// the rest public) and memberships (user uNN is in the rooms whose number
// NN divides), with ferretpg's indexes, and returns the database.
func roomsAndMembers(tb testing.TB, ctx context.Context, rooms, users int) *mongo.Database {
	tb.Helper()
	db, st := freshStore(tb, ctx)
	var rs, ms []any
	for r := range rooms {
		vis := store.VisibilityPublic
		if r%3 == 2 {
			vis = store.VisibilityPrivate
		}
		id := fmt.Sprintf("r%05d", r)
		rs = append(rs, store.Room{ID: id, Name: id, Visibility: vis, CreateTime: time.Unix(0, 0).UTC()})
		for u := 1; u <= users; u++ {
			if r%u == 0 {
				user := fmt.Sprintf("u%05d", u)
				ms = append(ms, store.Member{ID: store.MemberID(id, user), RoomID: id, UserID: user, JoinTime: time.Unix(int64(r), 0).UTC()})
			}
		}
	}
	insertAll(tb, ctx, db.Collection("rooms"), rs)
	insertAll(tb, ctx, db.Collection("members"), ms)
	if _, err := ferretpg.Ensure(ctx, testenv.FerretDBPostgresURL(tb), db.Name(), st.Lookups()); err != nil {
		tb.Fatal(err)
	}
	return db
}

// countingPager counts the pages it reads; with force, it says every set
// is large, so that the store reads every page through it.
type countingPager struct {
	store.Pager
	force bool
	pages atomic.Int64
}

func (c *countingPager) Page(ctx context.Context, q ferretpg.Page) ([]string, error) {
	c.pages.Add(1)
	return c.Pager.Page(ctx, q)
}

func (c *countingPager) Count(ctx context.Context, q ferretpg.Page, upTo int) (int, error) {
	if c.force {
		return upTo, nil
	}
	return c.Pager.Count(ctx, q, upTo)
}

// pagedStore returns a Store on db with a Pager (counting, forced or not).
func pagedStore(tb testing.TB, db *mongo.Database, force bool) (*store.Store, *countingPager) {
	p, err := ferretpg.NewPager(testenv.FerretDBPostgresURL(tb), db.Name(), prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	cp := &countingPager{Pager: p, force: force}
	st := store.New(db)
	st.UsePager(cp)
	return st, cp
}

// all pages through list with pages of size, as the rooms service does
// (size+1 asked, the extra one only says there is more), and returns every
// key in the order read.
func all[T any](t *testing.T, size int, list func(after string, limit int) ([]T, error), key func(T) string) []string {
	t.Helper()
	var keys []string
	after := ""
	for {
		page, err := list(after, size+1)
		if err != nil {
			t.Fatal(err)
		}
		n := min(len(page), size)
		for _, d := range page[:n] {
			keys = append(keys, key(d))
		}
		if len(page) <= size {
			return keys
		}
		after = keys[len(keys)-1]
	}
}

// TestPagerReadsWhatQueriesRead: through a Pager, public rooms, a room's
// members and a user's rooms page through the same documents in the same
// order as the store's queries do, at several page sizes.
func TestPagerReadsWhatQueriesRead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := roomsAndMembers(t, ctx, 120, 12)
	plain, paged := store.New(db), first(pagedStore(t, db, true))
	roomID := func(r store.Room) string { return r.ID }
	userID := func(m store.Member) string { return m.UserID + "@" + m.JoinTime.String() }
	for _, size := range []int{1, 7, 50, 200} {
		check := func(what string, a, b []string) {
			t.Helper()
			if len(a) == 0 || !slices.Equal(a, b) {
				t.Errorf("%s in pages of %d: with the Pager %d %q\nwith queries %d %q", what, size, len(b), b, len(a), a)
			}
		}
		check("public rooms",
			all(t, size, func(after string, limit int) ([]store.Room, error) { return plain.PublicRooms(ctx, after, limit) }, roomID),
			all(t, size, func(after string, limit int) ([]store.Room, error) { return paged.PublicRooms(ctx, after, limit) }, roomID))
		check("members of r00060",
			all(t, size, func(after string, limit int) ([]store.Member, error) {
				return plain.Members(ctx, "r00060", after, limit)
			}, userID),
			all(t, size, func(after string, limit int) ([]store.Member, error) {
				return paged.Members(ctx, "r00060", after, limit)
			}, userID))
		check("rooms of u00004",
			all(t, size, func(after string, limit int) ([]store.Room, error) {
				return plain.RoomsOfUser(ctx, "u00004", after, limit)
			}, roomID),
			all(t, size, func(after string, limit int) ([]store.Room, error) {
				return paged.RoomsOfUser(ctx, "u00004", after, limit)
			}, roomID))
	}
	if got, err := paged.Members(ctx, "nosuchroom", "", 10); err != nil || len(got) != 0 {
		t.Errorf("members of a room that has none: %v %v", got, err)
	}
	// A page token is the client's: a NUL byte in it (which PostgreSQL's
	// text cannot hold) reads like the query does.
	a, err := plain.PublicRooms(ctx, "r00010\x00zz", 5)
	if err != nil {
		t.Fatal(err)
	}
	b, err := paged.PublicRooms(ctx, "r00010\x00zz", 5)
	if err != nil || fmt.Sprint(roomIDs(a)) != fmt.Sprint(roomIDs(b)) {
		t.Errorf("public rooms after a key with a NUL: with the Pager %v %v, with the query %v", roomIDs(b), err, roomIDs(a))
	}
}

// first returns the first of two values.
func first[T, U any](t T, _ U) T { return t }

// TestPagerOnlyForLargeSets: a page is read through the Pager only when
// the documents it is taken from are more than ten times the page; a small
// room's members, for one, are cheaper to read with the query.
func TestPagerOnlyForLargeSets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := roomsAndMembers(t, ctx, 120, 12) // r00000 has 12 members, r00060 8; u00001 is in 120 rooms
	st, p := pagedStore(t, db, false)
	read := func(what string, list func() (int, error), wantPages int64) {
		t.Helper()
		before := p.pages.Load()
		if _, err := list(); err != nil {
			t.Fatal(err)
		}
		if got := p.pages.Load() - before; got != wantPages {
			t.Errorf("%s: %d pages through the Pager, want %d", what, got, wantPages)
		}
	}
	read("members of a room of 8, pages of 5", func() (int, error) { ms, err := st.Members(ctx, "r00060", "", 6); return len(ms), err }, 0)
	read("members of a room of 12, pages of 1", func() (int, error) { ms, err := st.Members(ctx, "r00000", "", 2); return len(ms), err }, 0)
	read("rooms of a user in 120, pages of 20", func() (int, error) { rs, err := st.RoomsOfUser(ctx, "u00001", "", 21); return len(rs), err }, 0)
	read("rooms of a user in 120, pages of 10", func() (int, error) { rs, err := st.RoomsOfUser(ctx, "u00001", "", 11); return len(rs), err }, 1)
	read("80 public rooms, pages of 5", func() (int, error) { rs, err := st.PublicRooms(ctx, "", 6); return len(rs), err }, 1)
}

// keysPager serves pages of a fixed list of keys.
type keysPager []string

func (k keysPager) Count(_ context.Context, _ ferretpg.Page, upTo int) (int, error) { return upTo, nil }

func (k keysPager) Page(_ context.Context, q ferretpg.Page) ([]string, error) {
	var out []string
	for _, key := range k {
		if key > q.After && len(out) < q.Limit {
			out = append(out, key)
		}
	}
	return out, nil
}

// TestPagerFillsPagesPastGoneDocuments: keys whose document went away (or
// turned private) after the Pager read them do not make a page short, which
// would end the listing early.
func TestPagerFillsPagesPastGoneDocuments(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := roomsAndMembers(t, ctx, 9, 1) // r00002, r00005 and r00008 are private
	st := store.New(db)
	st.UsePager(keysPager{"r00000", "r00001", "r00001a", "r00001b", "r00002", "r00003", "r00004", "r00005", "r00006", "r00007", "r00008"})
	var pages [][]string
	after := ""
	for {
		rs, err := st.PublicRooms(ctx, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range rs {
			ids = append(ids, r.ID)
		}
		pages = append(pages, ids)
		if len(rs) < 2 {
			break
		}
		after = ids[len(ids)-1]
	}
	if fmt.Sprint(pages) != "[[r00000 r00001] [r00003 r00004] [r00006 r00007] []]" {
		t.Fatalf("pages of 2 public rooms = %v", pages)
	}
}

// BenchmarkPages reads the first page (51 documents, as ListRooms and
// ListMembers ask for a page of 50) of public rooms (two thirds of n rooms),
// of the members of a room of n, and of the rooms of a user in n, with the
// store's queries and with a Pager, on FerretDB, at n = 100, 1,000 and
// 10,000 (at 100 the store with a Pager reads with its query, after a
// count):
//
//	eval "$(bash scripts/services.sh env)"
//	PARLEY_TEST_MONGO_URI=$PARLEY_MONGO_URI PARLEY_TEST_FERRETDB_POSTGRES_URL=$PARLEY_FERRETDB_POSTGRES_URL \
//	  go test -run '^$' -bench Pages -benchtime 10x ./server/store/
func BenchmarkPages(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{100, 1_000, 10_000} {
		db := roomsAndMembers(b, ctx, n, n)
		queries := store.New(db)
		queries.UsePointLookups()
		for _, s := range []struct {
			name string
			st   *store.Store
		}{{"queries", queries}, {"pager", first(pagedStore(b, db, false))}} {
			for _, c := range []struct {
				name string
				list func() (int, error)
			}{
				{"public", func() (int, error) { rs, err := s.st.PublicRooms(ctx, "", 51); return len(rs), err }},
				{"members", func() (int, error) { ms, err := s.st.Members(ctx, "r00000", "", 51); return len(ms), err }},
				{"rooms-of-user", func() (int, error) { rs, err := s.st.RoomsOfUser(ctx, "u00001", "", 51); return len(rs), err }},
			} {
				b.Run(fmt.Sprintf("n=%d/%s/%s", n, c.name, s.name), func(b *testing.B) {
					for b.Loop() {
						if got, err := c.list(); err != nil || got != 51 {
							b.Fatal(got, err)
						}
					}
				})
			}
		}
	}
}

// failingPager fails every count; its pages must not be asked for.
type failingPager struct{ t *testing.T }

func (f failingPager) Count(context.Context, ferretpg.Page, int) (int, error) {
	return 0, errors.New("postgres: connection refused")
}

func (f failingPager) Page(context.Context, ferretpg.Page) ([]string, error) {
	f.t.Error("a page was read through a Pager whose count failed")
	return nil, errors.New("unreachable")
}

// TestPagerCountFailureFallsBackToTheQuery: the count only chooses between
// two right ways to read a page; when it fails the query reads it, and a
// page of no documents asks nothing.
func TestPagerCountFailureFallsBackToTheQuery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := roomsAndMembers(t, ctx, 30, 3)
	st := store.New(db)
	st.UsePager(failingPager{t})
	rs, err := st.PublicRooms(ctx, "", 5)
	if err != nil || fmt.Sprint(roomIDs(rs)) != "[r00000 r00001 r00003 r00004 r00006]" {
		t.Errorf("public rooms with a failing count: %v %v", roomIDs(rs), err)
	}
	if ms, err := st.Members(ctx, "r00000", "", 0); err != nil || ms != nil {
		t.Errorf("a page of 0 members: %v %v", ms, err)
	}
	cancelled, stop := context.WithCancel(ctx)
	stop()
	if _, err := st.PublicRooms(cancelled, "", 5); !errors.Is(err, context.Canceled) {
		t.Errorf("public rooms with the caller gone: %v, want context.Canceled", err)
	}
}
