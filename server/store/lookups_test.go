package store_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/parleychat/parley/internal/ferretpg"
	"github.com/parleychat/parley/internal/testenv"
	"github.com/parleychat/parley/server/store"
)

// freshStore returns a fresh database, dropped at cleanup, and a Store on it
// with its indexes.
func freshStore(tb testing.TB, ctx context.Context) (*mongo.Database, *store.Store) {
	tb.Helper()
	mc, err := mongo.Connect(options.Client().ApplyURI(testenv.MongoURI(tb)))
	if err != nil {
		tb.Fatal(err)
	}
	db := mc.Database(testenv.Name(tb))
	tb.Cleanup(func() { _ = db.Drop(context.Background()); _ = mc.Disconnect(context.Background()) })
	st := store.New(db)
	if err := st.EnsureIndexes(ctx); err != nil {
		tb.Fatal(err)
	}
	return db, st
}

// insertAll inserts docs into coll, 100 at a time.
func insertAll(tb testing.TB, ctx context.Context, coll *mongo.Collection, docs []any) {
	tb.Helper()
	for c := range slices.Chunk(docs, 100) {
		if _, err := coll.InsertMany(ctx, c); err != nil {
			tb.Fatal(err)
		}
	}
}

// usersAndRooms fills a fresh database with n users, and rooms r000..r019
// of which user u0000 is a member of the even ones; it returns the
// database, dropped at cleanup.
func usersAndRooms(tb testing.TB, ctx context.Context, n int) *mongo.Database {
	tb.Helper()
	db, st := freshStore(tb, ctx)
	var users []any
	for i := range n {
		users = append(users, store.User{ID: fmt.Sprintf("u%04d", i), Username: fmt.Sprintf("user%04d", i), CreateTime: time.Unix(0, 0).UTC()})
	}
	insertAll(tb, ctx, db.Collection("users"), users)
	for r := range 20 {
		room := store.Room{ID: fmt.Sprintf("r%03d", r), Name: fmt.Sprintf("room %d", r), Visibility: store.VisibilityPublic, CreateTime: time.Unix(0, 0).UTC()}
		if err := st.CreateRoom(ctx, room); err != nil {
			tb.Fatal(err)
		}
		if r%2 == 0 {
			if _, err := st.AddMember(ctx, room.ID, "u0000", time.Unix(0, 0).UTC()); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return db
}

// TestPointLookupsReadWhatInReads: with point lookups a set of ids reads the
// same users and rooms as one $in query (missing and repeated ids included).
func TestPointLookupsReadWhatInReads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := usersAndRooms(t, ctx, 50)
	in, point := store.New(db), store.New(db)
	point.UsePointLookups()
	ids := []string{"u0007", "u0049", "nobody", "u0007", "u0000"}
	a, err := in.UsersByID(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	b, err := point.UsersByID(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 3 || !maps.EqualFunc(a, b, func(x, y store.User) bool { return x.ID == y.ID && x.Username == y.Username }) {
		t.Errorf("UsersByID with point lookups = %v, with $in %v", b, a)
	}
	ra, err := in.RoomsOfUser(ctx, "u0000", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := point.RoomsOfUser(ctx, "u0000", "r003", 100)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for r := 4; r < 20; r += 2 {
		want = append(want, fmt.Sprintf("r%03d", r))
	}
	if got := roomIDs(rb); !slices.Equal(got, want) {
		t.Errorf("RoomsOfUser after r003 with point lookups = %v, want %v", got, want)
	}
	if got := roomIDs(ra); len(got) != 10 || got[0] != "r000" || !slices.Equal(got[2:], want) {
		t.Errorf("RoomsOfUser with $in = %v", got)
	}
}

func roomIDs(rs []store.Room) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

// BenchmarkUsersByID reads 20 users among 20,000 by id, with one $in query
// and with point lookups, on FerretDB with ferretpg's indexes:
//
//	eval "$(bash scripts/services.sh env)"
//	PARLEY_TEST_MONGO_URI=$PARLEY_MONGO_URI PARLEY_TEST_FERRETDB_POSTGRES_URL=$PARLEY_FERRETDB_POSTGRES_URL \
//	  go test -run '^$' -bench UsersByID -benchtime 10x ./server/store/
func BenchmarkUsersByID(b *testing.B) {
	ctx := context.Background()
	db := usersAndRooms(b, ctx, 20_000)
	st := store.New(db)
	if _, err := ferretpg.Ensure(ctx, testenv.FerretDBPostgresURL(b), db.Name(), st.Lookups()); err != nil {
		b.Fatal(err)
	}
	var ids []string
	for i := range 20 {
		ids = append(ids, fmt.Sprintf("u%04d", i*997%20_000))
	}
	for _, point := range []bool{false, true} {
		name := "in"
		if point {
			name = "point"
		}
		s := store.New(db)
		if point {
			s.UsePointLookups()
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				us, err := s.UsersByID(ctx, ids)
				if err != nil || len(us) != len(ids) {
					b.Fatal(len(us), err)
				}
			}
		})
	}
}
