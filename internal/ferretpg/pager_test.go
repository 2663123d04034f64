package ferretpg_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/parleychat/parley/internal/ferretpg"
)

// TestPagerPagesLikeFerretDB: a Pager's pages of a room's members, put end
// to end, are the user ids FerretDB's own sorted find returns (byte order:
// upper case before lower, multi-byte characters last), its statement is
// served by the Order's index, and a collection with no table yet, or one
// dropped and made again, is read as it is.
func TestPagerPagesLikeFerretDB(t *testing.T) {
	f := setup(t)
	members := f.db.Collection("members")
	users := []string{"a", "B", "b", "Z9", "a b", "é", "ü2", "Ab", "aa", "a\u00a0", "0", "_x", "~"}
	for i := range 40 {
		users = append(users, fmt.Sprintf("u%03d", (i*37)%100))
	}
	var docs []any
	for _, u := range users {
		docs = append(docs, bson.D{{Key: "_id", Value: "r1/" + u}, {Key: "room_id", Value: "r1"}, {Key: "user_id", Value: u}})
		docs = append(docs, bson.D{{Key: "_id", Value: "r2/" + u}, {Key: "room_id", Value: "r2"}, {Key: "user_id", Value: u}})
	}
	docs = append(docs, bson.D{{Key: "_id", Value: "r10/zz"}, {Key: "room_id", Value: "r10"}, {Key: "user_id", Value: "zz"}})
	if _, err := members.InsertMany(f.ctx, docs); err != nil {
		t.Fatal(err)
	}
	order := ferretpg.Order{Eq: "room_id", By: "user_id"}
	res, err := ferretpg.Ensure(f.ctx, f.pgURL, f.name, []ferretpg.Lookup{{Collection: "members", Orders: []ferretpg.Order{order}}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res.Created) != "[members.room_id,user_id]" || !strings.HasPrefix(ferretpg.OrderIndexName("t", order), "parley_ord_t_room_id_user_id_") ||
		ferretpg.OrderIndexName("t", ferretpg.Order{Eq: "a_b", By: "c"}) == ferretpg.OrderIndexName("t", ferretpg.Order{Eq: "a", By: "b_c"}) {
		t.Fatalf("Ensure: %+v", res)
	}

	cur, err := members.Find(f.ctx, bson.D{{Key: "room_id", Value: "r1"}}, options.Find().SetSort(bson.D{{Key: "user_id", Value: 1}}))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for cur.Next(f.ctx) {
		want = append(want, cur.Current.Lookup("user_id").StringValue())
	}
	if len(want) != len(users) {
		t.Fatalf("FerretDB found %d members of r1, want %d", len(want), len(users))
	}

	p, err := ferretpg.NewPager(f.pgURL, f.name, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var got []string
	q := ferretpg.Page{Collection: "members", Order: order, Value: "r1", Limit: 4}
	for {
		keys, err := p.Page(f.ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, keys...)
		if len(keys) < q.Limit {
			break
		}
		q.After = keys[len(keys)-1]
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pages of r1 = %q\nFerretDB's sort = %q", got, want)
	}

	// The statement uses the index: with scans and sorts priced out, a plan
	// that does not match the index's expressions would still be a Seq Scan.
	if _, err := f.pg.Exec(f.ctx, "SET enable_seqscan = off"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pg.Exec(f.ctx, "SET enable_sort = off"); err != nil {
		t.Fatal(err)
	}
	table := f.table(t, "members")
	plan := strings.Join(queryStrings(t, f.ctx, f.pg, "EXPLAIN "+ferretpg.PageSQL(p, table, q), "r1", "a", 10), "\n")
	if !strings.Contains(plan, ferretpg.OrderIndexName(table, order)) || strings.Contains(plan, "Sort") {
		t.Fatalf("the page's plan does not read the order's index:\n%s", plan)
	}

	// No table yet: no keys, no error.
	if keys, err := p.Page(f.ctx, ferretpg.Page{Collection: "not_yet", Order: order, Value: "r1", Limit: 5}); err != nil || len(keys) != 0 {
		t.Fatalf("page of a collection with no table: %q %v", keys, err)
	}
	// Count counts up to its max.
	for _, c := range []struct{ max, want int }{{100, len(users)}, {5, 5}, {0, 0}} {
		if n, err := p.Count(f.ctx, ferretpg.Page{Collection: "members", Order: order, Value: "r1"}, c.max); err != nil || n != c.want {
			t.Errorf("Count of r1 up to %d = %d %v, want %d", c.max, n, err, c.want)
		}
	}
	// A NUL byte, which no stored string holds and PostgreSQL refuses in a
	// parameter: nothing matches such a Value, and After ends at it.
	if keys, err := p.Page(f.ctx, ferretpg.Page{Collection: "members", Order: order, Value: "r1\x00", Limit: 5}); err != nil || len(keys) != 0 {
		t.Errorf("page of value r1+NUL: %q %v", keys, err)
	}
	if n, err := p.Count(f.ctx, ferretpg.Page{Collection: "members", Order: order, Value: "r1\x00"}, 5); err != nil || n != 0 {
		t.Errorf("count of value r1+NUL: %d %v", n, err)
	}
	keys, err := p.Page(f.ctx, ferretpg.Page{Collection: "members", Order: order, Value: "r1", After: "u0\x00x", Limit: 100})
	if i := slices.Index(want, "u000"); err != nil || i < 0 || !slices.Equal(keys, want[i:]) {
		t.Errorf("page of r1 after u0+NUL: %q %v, want from u000 on", keys, err)
	}

	// A table that is gone (the collection was dropped and made again under
	// another name): the Pager looks it up again.
	ferretpg.SetTable(p, "members", "gone_00000000")
	if keys, err := p.Page(f.ctx, ferretpg.Page{Collection: "members", Order: order, Value: "r10", Limit: 5}); err != nil || !slices.Equal(keys, []string{"zz"}) {
		t.Fatalf("page after the cached table went away: %q %v", keys, err)
	}
	// A database without FerretDB's metadata (dropped, or never made):
	// nothing in it.
	other, err := ferretpg.NewPager(f.pgURL, f.name+"_never", prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if keys, err := other.Page(f.ctx, ferretpg.Page{Collection: "members", Order: order, Value: "r1", Limit: 5}); err != nil || len(keys) != 0 {
		t.Errorf("page in a database FerretDB never made: %q %v", keys, err)
	}

	// Dropped and made again (FerretDB gives it the same table name): the
	// Pager reads the new one.
	if err := members.Drop(f.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := members.InsertOne(f.ctx, bson.D{{Key: "_id", Value: "r1/new"}, {Key: "room_id", Value: "r1"}, {Key: "user_id", Value: "new"}}); err != nil {
		t.Fatal(err)
	}
	keys, err = p.Page(f.ctx, ferretpg.Page{Collection: "members", Order: order, Value: "r1", Limit: 5})
	if err != nil || !slices.Equal(keys, []string{"new"}) {
		t.Fatalf("page after the collection was dropped and made again: %q %v", keys, err)
	}
	if _, err := p.Page(f.ctx, ferretpg.Page{Collection: "members", Order: ferretpg.Order{Eq: "room_id", By: "x'y"}, Value: "r1", Limit: 5}); err == nil || !strings.Contains(err.Error(), `field "x'y"`) {
		t.Fatalf("page by a field it cannot quote: %v", err)
	}
}
