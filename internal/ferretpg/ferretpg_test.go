package ferretpg_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/parleychat/parley/internal/ferretpg"
	"github.com/parleychat/parley/internal/testenv"
)

func TestIndexName(t *testing.T) {
	if got := ferretpg.IndexName("members_0a1b2c3d", "room_id"); got != "parley_gin_members_0a1b2c3d_room_id" {
		t.Fatalf("IndexName = %q", got)
	}
	long := ferretpg.IndexName(strings.Repeat("t", 60), "user_id")
	if len(long) > 63 {
		t.Fatalf("IndexName is %d bytes, PostgreSQL keeps 63: %q", len(long), long)
	}
	if other := ferretpg.IndexName(strings.Repeat("t", 60), "room_id"); other == long {
		t.Fatalf("two fields of a long table name get the same index name %q", long)
	}
}

func TestEnsureRejectsFieldsItCannotQuote(t *testing.T) {
	_, err := ferretpg.Ensure(context.Background(), "postgres://127.0.0.1:1/x", "db",
		[]ferretpg.Lookup{{Collection: "c", Fields: []string{"a'b"}}})
	if err == nil || !strings.Contains(err.Error(), `field "a'b" of c`) {
		t.Fatalf("Ensure with a quote in a field name: %v", err)
	}
}

type fixture struct {
	ctx   context.Context
	db    *mongo.Database
	pgURL string
	pg    *pgx.Conn // to FerretDB's PostgreSQL, as FerretDB's user
	name  string
}

func setup(t *testing.T) fixture {
	t.Helper()
	mongoURI, pgURL := testenv.MongoURI(t), testenv.FerretDBPostgresURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	mc, err := mongo.Connect(options.Client().ApplyURI(mongoURI))
	if err != nil {
		t.Fatal(err)
	}
	name := testenv.Name(t)
	db := mc.Database(name)
	t.Cleanup(func() {
		_ = db.Drop(context.Background())
		_ = mc.Disconnect(context.Background())
	})
	pg, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close(context.Background()) })
	return fixture{ctx: ctx, db: db, pgURL: pgURL, pg: pg, name: name}
}

// queryStrings runs a query of one text column on conn and returns its rows.
func queryStrings(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string, args ...any) []string {
	t.Helper()
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// explain returns FerretDB's explain output of a find with filter: it holds
// PostgreSQL's plan of the SQL FerretDB ran.
func (f fixture) explain(t *testing.T, coll string, filter bson.D) string {
	t.Helper()
	var out bson.M
	err := f.db.RunCommand(f.ctx, bson.D{
		{Key: "explain", Value: bson.D{{Key: "find", Value: coll}, {Key: "filter", Value: filter}}},
	}).Decode(&out)
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	return fmt.Sprint(out["queryPlanner"])
}

// table returns the PostgreSQL table of collection coll.
func (f fixture) table(t *testing.T, coll string) string {
	t.Helper()
	var table string
	if err := f.pg.QueryRow(f.ctx, fmt.Sprintf("SELECT _jsonb->>'table' FROM %s WHERE _jsonb->>'_id' = $1",
		pgx.Identifier{f.name, "_ferretdb_database_metadata"}.Sanitize()), coll).Scan(&table); err != nil {
		t.Fatal(err)
	}
	return table
}

func TestEnsureIndexesFerretDBLookups(t *testing.T) {
	f := setup(t)
	users := f.db.Collection("users")
	docs := make([]any, 2000)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: fmt.Sprintf("u%05d", i)}, {Key: "username", Value: fmt.Sprintf("name%05d", i)}}
	}
	if _, err := users.InsertMany(f.ctx, docs); err != nil {
		t.Fatal(err)
	}
	lookups := []ferretpg.Lookup{
		{Collection: "users", Fields: []string{"_id", "username"}},
		{Collection: "not_yet", Fields: []string{"_id"}},
	}
	byName := bson.D{{Key: "username", Value: "name01234"}}
	if plan := f.explain(t, "users", byName); !strings.Contains(plan, "Seq Scan") {
		t.Fatalf("before Ensure, FerretDB's plan of a lookup by username is not a table scan (has FerretDB changed how it pushes filters down?): %s", plan)
	}

	res, err := ferretpg.Ensure(f.ctx, f.pgURL, f.name, lookups)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res.Created) != "[users._id users.username]" || len(res.Existing) != 0 || fmt.Sprint(res.Missing) != "[not_yet]" {
		t.Fatalf("first Ensure: %+v", res)
	}
	table := f.table(t, "users")
	for field, filter := range map[string]bson.D{"username": byName, "_id": {{Key: "_id", Value: "u01234"}}} {
		plan := f.explain(t, "users", filter)
		if !strings.Contains(plan, `"`+ferretpg.IndexName(table, field)+`"`) || strings.Contains(plan, "Seq Scan") {
			t.Fatalf("after Ensure, the plan of %v does not use the GIN index on %s: %s", filter, field, plan)
		}
	}
	// The lookups still find what they should, and FerretDB's own unique
	// index on _id still refuses a duplicate.
	var u bson.M
	if err := users.FindOne(f.ctx, byName).Decode(&u); err != nil || u["_id"] != "u01234" {
		t.Fatalf("FindOne by username after Ensure: %v %v", u, err)
	}
	if _, err := users.InsertOne(f.ctx, bson.D{{Key: "_id", Value: "u00001"}}); !mongo.IsDuplicateKeyError(err) {
		t.Fatalf("insert of an existing _id after Ensure: %v, want a duplicate key error", err)
	}

	// Again, with the other collection made: only its index is new.
	if _, err := f.db.Collection("not_yet").InsertOne(f.ctx, bson.D{{Key: "_id", Value: "x"}}); err != nil {
		t.Fatal(err)
	}
	res, err = ferretpg.Ensure(f.ctx, f.pgURL, f.name, lookups)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res.Created) != "[not_yet._id]" || fmt.Sprint(res.Existing) != "[users._id users.username]" || len(res.Missing) != 0 {
		t.Fatalf("second Ensure: %+v", res)
	}

	// Dropping the collection through FerretDB drops its table and the
	// indexes with it; a collection made again under the same name gets them
	// again from the next Ensure.
	if err := users.Drop(f.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := users.InsertOne(f.ctx, bson.D{{Key: "_id", Value: "again"}, {Key: "username", Value: "again"}}); err != nil {
		t.Fatal(err)
	}
	res, err = ferretpg.Ensure(f.ctx, f.pgURL, f.name, lookups)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res.Created) != "[users._id users.username]" {
		t.Fatalf("Ensure after the collection was dropped and made again: %+v", res)
	}
}

// An index left invalid (an interrupted CREATE INDEX CONCURRENTLY) is built
// again instead of being taken for done.
func TestEnsureRebuildsAnInvalidIndex(t *testing.T) {
	f := setup(t)
	docs := []any{bson.D{{Key: "_id", Value: "m"}, {Key: "room_id", Value: "r1"}}} // room r1 has two
	for i := range 2000 {
		docs = append(docs, bson.D{{Key: "_id", Value: fmt.Sprintf("m%05d", i)}, {Key: "room_id", Value: fmt.Sprintf("r%d", i)}})
	}
	if _, err := f.db.Collection("messages").InsertMany(f.ctx, docs); err != nil {
		t.Fatal(err)
	}
	conn := f.pg
	table := f.table(t, "messages")
	// What a failed build leaves behind: an index of that name, marked
	// invalid. A unique one over two equal values fails that way.
	name := ferretpg.IndexName(table, "room_id")
	_, err := conn.Exec(f.ctx, fmt.Sprintf("CREATE UNIQUE INDEX CONCURRENTLY %s ON %s ((_jsonb->'room_id'))",
		pgx.Identifier{name}.Sanitize(), pgx.Identifier{f.name, table}.Sanitize()))
	if err == nil {
		t.Fatal("a unique index over two equal room_ids was built")
	}
	valid := func() bool {
		t.Helper()
		var v bool
		if err := conn.QueryRow(f.ctx, `SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
			JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`, f.name, name).Scan(&v); err != nil {
			t.Fatalf("index %s: %v", name, err)
		}
		return v
	}
	if valid() {
		t.Fatal("the failed build left a valid index")
	}
	res, err := ferretpg.Ensure(f.ctx, f.pgURL, f.name, []ferretpg.Lookup{{Collection: "messages", Fields: []string{"room_id"}}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res.Created) != "[messages.room_id]" || !valid() {
		t.Fatalf("Ensure over an invalid index: %+v, valid=%v; want it built again", res, valid())
	}
	if plan := f.explain(t, "messages", bson.D{{Key: "room_id", Value: "r1"}}); !strings.Contains(plan, name) {
		t.Fatalf("the rebuilt index is not used: %s", plan)
	}
}

// Why Ensure forces custom plans: FerretDB's lookup, prepared with its key
// as a parameter, goes on scanning after the index exists once PostgreSQL's
// plan cache has switched it to a generic plan; planned with its values it
// uses the index.
func TestGenericPlanIgnoresTheIndex(t *testing.T) {
	f := setup(t)
	docs := make([]any, 2000)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: fmt.Sprintf("u%05d", i)}}
	}
	if _, err := f.db.Collection("users").InsertMany(f.ctx, docs); err != nil {
		t.Fatal(err)
	}
	conn := f.pg
	table := f.table(t, "users")
	// FerretDB's statement, run as pgx runs it for FerretDB: prepared.
	if _, err := conn.Exec(f.ctx, "SET plan_cache_mode = auto"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Prepare(f.ctx, "lookup", fmt.Sprintf("SELECT _jsonb FROM %s WHERE _jsonb->$1 @> $2",
		pgx.Identifier{f.name, table}.Sanitize())); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		rows, err := conn.Query(f.ctx, "lookup", "_id", fmt.Sprintf(`"u%05d"`, i))
		if err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	if _, err := ferretpg.Ensure(f.ctx, f.pgURL, f.name, []ferretpg.Lookup{{Collection: "users", Fields: []string{"_id"}}}); err != nil {
		t.Fatal(err)
	}
	plan := func() string {
		t.Helper()
		return strings.Join(queryStrings(t, f.ctx, conn, `EXPLAIN EXECUTE lookup('_id', '"u00042"')`), "\n")
	}
	if p := plan(); !strings.Contains(p, "Seq Scan") {
		t.Fatalf("the generic plan of a statement prepared before the index uses it (has PostgreSQL changed? then forcing custom plans may be unneeded):\n%s", p)
	}
	if _, err := conn.Exec(f.ctx, "SET plan_cache_mode = force_custom_plan"); err != nil {
		t.Fatal(err)
	}
	if p := plan(); !strings.Contains(p, ferretpg.IndexName(table, "_id")) {
		t.Fatalf("the custom plan does not use the index:\n%s", p)
	}
}

// Two processes' Ensure at once, building CONCURRENTLY, both finish: they
// take turns (a blocking lock wait would hold a snapshot that the other's
// concurrent build waits for, and PostgreSQL would end one as a deadlock).
func TestConcurrentEnsuresTakeTurns(t *testing.T) {
	defer ferretpg.SetConcurrentAbove(0)()
	fs := []fixture{setup(t), setup(t)}
	for _, f := range fs {
		docs := make([]any, 3000)
		for i := range docs {
			docs[i] = bson.D{{Key: "_id", Value: fmt.Sprintf("m%05d", i)}, {Key: "room_id", Value: fmt.Sprintf("r%d", i%50)}}
		}
		if _, err := f.db.Collection("messages").InsertMany(f.ctx, docs); err != nil {
			t.Fatal(err)
		}
	}
	lookups := []ferretpg.Lookup{{Collection: "messages", Fields: []string{"_id", "room_id"}}}
	errs := make(chan error, 2*len(fs))
	for _, f := range fs {
		for range 2 { // and twice per database
			go func() {
				_, err := ferretpg.Ensure(f.ctx, f.pgURL, f.name, lookups)
				errs <- err
			}()
		}
	}
	for range 2 * len(fs) {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent Ensure: %v", err)
		}
	}
	for _, f := range fs {
		res, err := ferretpg.Ensure(f.ctx, f.pgURL, f.name, lookups)
		if err != nil || len(res.Existing) != 2 {
			t.Fatalf("Ensure after the concurrent ones: %+v, %v", res, err)
		}
		if plan := f.explain(t, "messages", bson.D{{Key: "_id", Value: "m00042"}}); !strings.Contains(plan, ferretpg.IndexName(f.table(t, "messages"), "_id")) {
			t.Fatalf("index built concurrently is not used: %s", plan)
		}
	}
}

func TestEnsureNamesADatabaseFerretDBDoesNotHave(t *testing.T) {
	f := setup(t)
	_, err := ferretpg.Ensure(f.ctx, f.pgURL, f.name+"_never", nil)
	if err == nil || !strings.Contains(err.Error(), "has database") {
		t.Fatalf("Ensure on a database FerretDB never made: %v", err)
	}
}

// BenchmarkFindOne measures a lookup by _id and by a second field through
// FerretDB, on collections of 50,000 membership-like documents without and
// with Ensure's indexes (made before the collection's first lookup, as a
// server's start does):
//
//	eval "$(bash scripts/services.sh env)"
//	PARLEY_TEST_MONGO_URI=$PARLEY_MONGO_URI PARLEY_TEST_FERRETDB_POSTGRES_URL=$PARLEY_FERRETDB_POSTGRES_URL \
//	  go test -run '^$' -bench FindOne -benchtime 200x ./internal/ferretpg/
func BenchmarkFindOne(b *testing.B) {
	mongoURI, pgURL := testenv.MongoURI(b), testenv.FerretDBPostgresURL(b)
	ctx := context.Background()
	mc, err := mongo.Connect(options.Client().ApplyURI(mongoURI))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = mc.Disconnect(ctx) }()
	name := testenv.Name(b)
	db := mc.Database(name)
	defer func() { _ = db.Drop(ctx) }()
	const n = 50_000
	load := func(coll *mongo.Collection) {
		docs := make([]any, 0, 100)
		for i := range n {
			docs = append(docs, bson.D{{Key: "_id", Value: fmt.Sprintf("room%04d/user%06d", i%1000, i)},
				{Key: "room_id", Value: fmt.Sprintf("room%04d", i%1000)}, {Key: "user_id", Value: fmt.Sprintf("user%06d", i)}})
			if len(docs) == cap(docs) {
				if _, err := coll.InsertMany(ctx, docs); err != nil {
					b.Fatal(err)
				}
				docs = docs[:0]
			}
		}
	}
	lookups := func(coll *mongo.Collection) func(b *testing.B) {
		return func(b *testing.B) {
			for _, field := range []string{"_id", "user_id"} {
				b.Run(field, func(b *testing.B) {
					for i := 0; b.Loop(); i++ {
						k := (i * 7919) % n
						v := fmt.Sprintf("user%06d", k)
						if field == "_id" {
							v = fmt.Sprintf("room%04d/user%06d", k%1000, k)
						}
						if err := coll.FindOne(ctx, bson.D{{Key: field, Value: v}}).Err(); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
	scan, gin := db.Collection("scan"), db.Collection("gin")
	load(scan)
	load(gin)
	if _, err := ferretpg.Ensure(ctx, pgURL, name, []ferretpg.Lookup{{Collection: "gin", Fields: []string{"_id", "user_id"}}}); err != nil {
		b.Fatal(err)
	}
	b.Run("scan", lookups(scan))
	b.Run("gin", lookups(gin))
}

// TestStartCallsReadyOnce: Start's ready callback runs once, after its
// indexes exist (the server then reads sets of ids one id at a time).
func TestStartCallsReadyOnce(t *testing.T) {
	f := setup(t)
	if _, err := f.db.Collection("users").InsertOne(f.ctx, bson.D{{Key: "_id", Value: "u1"}}); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	ready := make(chan struct{}, 1)
	stop := ferretpg.Start(f.ctx, slog.New(slog.DiscardHandler), f.pgURL, f.name,
		[]ferretpg.Lookup{{Collection: "users", Fields: []string{"_id"}}}, func() { calls.Add(1); ready <- struct{}{} })
	select {
	case <-ready:
	case <-f.ctx.Done():
		t.Fatal("ready was not called")
	}
	stop()
	if n := calls.Load(); n != 1 {
		t.Errorf("ready called %d times, want 1", n)
	}
	var n int
	if err := f.pg.QueryRow(f.ctx, "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = $2", f.name, ferretpg.IndexName(f.table(t, "users"), "_id")).Scan(&n); err != nil || n != 1 {
		t.Errorf("ready, but %d indexes by that name (%v)", n, err)
	}
}
