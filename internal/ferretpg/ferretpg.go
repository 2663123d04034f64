// Package ferretpg makes Parley's lookups by key use an index on FerretDB 1.x
// with its PostgreSQL backend, and reads pages in key order from such
// indexes (Pager).
//
// FerretDB 1.24 keeps a collection in one PostgreSQL table with a single
// jsonb column, _jsonb, and pushes an equality filter down to SQL as
//
//	WHERE _jsonb->$1 @> $2
//
// a containment test that none of the b-tree indexes FerretDB itself creates
// (on (_jsonb->'field')) can serve, so every lookup by _id, username, room_id
// or user_id scans the whole table: 20 ms at 50,000 documents here
// (BenchmarkFindOne). A GIN index on the same expression serves that test
// when PostgreSQL plans the statement with the key as a constant: a lookup by
// a unique key then costs about 1 ms at any size, and one by room or user
// costs in proportion to that room's or user's documents (FerretDB 1.24 does
// not push sort or limit down, so those are all read either way).
//
// FerretDB prepares its statements (pgx's statement cache), with the key as
// a parameter too, and PostgreSQL's plan cache switches a prepared statement
// to a generic plan, made without the parameters' values, once that looks no
// dearer than the custom plans so far. A generic plan of _jsonb->$1 cannot
// use an expression index: on a connection whose statement went generic
// while the table had no such index, lookups go on scanning after the index
// exists (TestGenericPlanIgnoresTheIndex). So Ensure also makes FerretDB's
// user plan every execution with its values (plan_cache_mode =
// force_custom_plan for that user in that database), unless that is already
// in effect or someone chose otherwise. It applies to new sessions: restart
// FerretDB once after the first Ensure (or wait for its pool to renew its
// connections, an hour by default).
//
// For a Lookup's Orders, Ensure also makes b-tree indexes on two of a
// document's string fields (an equality, then the order), from which a
// Pager reads a page's keys without FerretDB: FerretDB would read, decode and
// sort every document matching the equality for each page.
//
// The indexes live in PostgreSQL beside FerretDB's own, named
// "parley_gin_<table>_<field>" and "parley_ord_<table>_<eq>_<by>_<hash>",
// which never collide with FerretDB's names (they end in "_<hash>_idx").
// FerretDB does not know of them: they do not show in listIndexes (they do
// count in its collStats and dbStats sizes), and dropping the collection
// (DROP TABLE ... CASCADE) drops them too; a collection made again gets them
// from the next Ensure (the next start), and until then its lookups and
// pages are right but scan its table.
// Do not configure any of this on MongoDB, which uses its own indexes.
package ferretpg

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
)

// metadataTable is FerretDB 1.x's table of a database's collections, in the
// PostgreSQL schema named like the database: one row per collection, _jsonb
// {"_id": collection name, "table": table name, ...}.
const metadataTable = "_ferretdb_database_metadata"

// Lookup names the fields of one collection that a store reads documents by,
// with an equality filter ({field: value}), and the orders it pages through
// with a Pager.
type Lookup struct {
	Collection string
	Fields     []string
	Orders     []Order
}

// Order is a way to page through a collection outside FerretDB (Pager): the
// documents whose string field Eq equals a value, in the byte order of their
// string field By. Ensure serves it with a b-tree index on
// ((_jsonb->>Eq) COLLATE "C", (_jsonb->>By) COLLATE "C"). Both fields must
// hold strings: FerretDB keeps some other types as JSON strings too (an
// ObjectID, binary data), and ->> gives a number's text, which a Pager
// would take for strings where a MongoDB filter on a string would not.
type Order struct{ Eq, By string }

func (o Order) String() string { return o.Eq + "," + o.By }

// Result says what Ensure did.
type Result struct {
	Created  []string // indexes built now ("collection.field", or "collection.eq,by" for an Order)
	Existing []string // indexes already there
	// Missing lists collections that have no table yet (nothing was ever
	// written to them); their indexes are made by a later Ensure.
	Missing []string
	// PlanCacheMode is what Ensure did about plan_cache_mode: "set" (new
	// sessions of FerretDB's user plan every lookup with its values), "in
	// effect" (already so), or why it left it ("left ...").
	PlanCacheMode string
}

var fieldName = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// concurrentAbove is the table size above which an index is built
// CONCURRENTLY: writes go on during the build, at the price of two more
// passes over the table. Below it a plain build takes milliseconds, during
// which writes to the table wait. A variable for tests.
var concurrentAbove int64 = 8 << 20

// lockPoll is how often Ensure asks again for the lock another holds.
const lockPoll = 200 * time.Millisecond

// Ensure connects to FerretDB's PostgreSQL at pgURL and creates the GIN
// indexes of lookups' fields and the b-tree indexes of their orders in
// database. It is idempotent and safe to run from
// several processes at once: they take turns on an advisory lock. On a
// collection over 8 MB an index is built CONCURRENTLY, so that writes go on
// meanwhile; such a build that was interrupted leaves an invalid index,
// which the next Ensure drops and builds again. Cancelling ctx cancels the
// statement running in PostgreSQL too.
func Ensure(ctx context.Context, pgURL, database string, lookups []Lookup) (Result, error) {
	for _, l := range lookups {
		fields := slices.Clone(l.Fields)
		for _, o := range l.Orders {
			fields = append(fields, o.Eq, o.By)
		}
		for _, f := range fields {
			if err := checkField(f, l.Collection); err != nil {
				return Result{}, err
			}
		}
	}
	cfg, err := pgx.ParseConfig(pgURL)
	if err != nil {
		return Result{}, fmt.Errorf("ferretpg: %w", err)
	}
	// The default handler only drops the connection when ctx ends, and
	// PostgreSQL would go on building; ask it to cancel the statement.
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: 5 * time.Second}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return Result{}, fmt.Errorf("ferretpg: connect to FerretDB's PostgreSQL: %w", err)
	}
	defer conn.Close(context.Background())

	// One Ensure at a time in FerretDB's PostgreSQL database (where all of
	// FerretDB's databases are schemas): two CREATE INDEX CONCURRENTLY, even
	// on different tables, each wait for the other's transactions to end,
	// and PostgreSQL ends one as a deadlock. The lock is asked for with
	// pg_try_advisory_lock, one short statement at a time: a session blocked
	// in pg_advisory_lock holds a snapshot that the holder's concurrent
	// build would wait for, a deadlock of its own.
	lockKey := int64(fnvHash("parley.ferretpg"))
	for {
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", lockKey).Scan(&got); err != nil {
			return Result{}, fmt.Errorf("ferretpg: lock: %w", err)
		}
		if got {
			break
		}
		select {
		case <-ctx.Done():
			return Result{}, fmt.Errorf("ferretpg: waiting for another process's Ensure: %w", ctx.Err())
		case <-time.After(lockPoll):
		}
	}
	defer func() { _, _ = conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", lockKey) }()

	tables, err := collectionTables(ctx, conn, database)
	if err != nil {
		return Result{}, err
	}
	var res Result
	if res.PlanCacheMode, err = forceCustomPlans(ctx, conn); err != nil {
		return res, err
	}
	for _, l := range lookups {
		table, ok := tables[l.Collection]
		if !ok {
			res.Missing = append(res.Missing, l.Collection)
			continue
		}
		for _, ix := range indexesOf(l, table) {
			created, err := ensureIndex(ctx, conn, database, table, ix.name, ix.def)
			if isUndefinedTable(err) {
				// The collection was dropped meanwhile.
				res.Missing = append(res.Missing, l.Collection)
				break
			}
			if err != nil {
				return res, fmt.Errorf("ferretpg: index on %s.%s (table %s.%s): %w", l.Collection, ix.what, database, table, err)
			}
			if created {
				res.Created = append(res.Created, l.Collection+"."+ix.what)
			} else {
				res.Existing = append(res.Existing, l.Collection+"."+ix.what)
			}
		}
	}
	return res, nil
}

func checkField(f, collection string) error {
	if !fieldName.MatchString(f) {
		return fmt.Errorf("ferretpg: field %q of %s: only letters, digits and _ are supported", f, collection)
	}
	return nil
}

func isUndefinedTable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42P01"
}

// index is one index Ensure makes: its name, what it serves ("field" or
// "eq,by") and its definition after ON table.
type index struct{ name, what, def string }

func indexesOf(l Lookup, table string) []index {
	var out []index
	for _, f := range l.Fields {
		// jsonb_path_ops: smaller and faster than the default opclass, and
		// containment (@>) is all it needs to serve. fastupdate off: every
		// insert updates the index at once instead of appending to a pending
		// list that a later insert or vacuum then merges in one long burst.
		out = append(out, index{IndexName(table, f), f,
			fmt.Sprintf("USING gin ((_jsonb->%s) jsonb_path_ops) WITH (fastupdate = off)", quoteLiteral(f))})
	}
	for _, o := range l.Orders {
		out = append(out, index{OrderIndexName(table, o), o.String(),
			fmt.Sprintf("(%s, %s)", textOf(o.Eq), textOf(o.By))})
	}
	return out
}

// textOf is the SQL expression of a document's string field as text in byte
// order: the form of both Order's index and Pager's queries, which
// PostgreSQL matches to each other expression by expression.
func textOf(field string) string {
	return fmt.Sprintf(`((_jsonb->>%s) COLLATE "C")`, quoteLiteral(field))
}

// Start runs Ensure in the background until it succeeds or ctx ends, so that
// a process starts serving at once (a first build on a large collection may
// take minutes) and a PostgreSQL that is away at start is waited for. It
// logs what it did, and each failure at Error: until it succeeds, lookups on
// FerretDB scan whole tables. stop cancels what is left of it (the statement
// running in PostgreSQL included) and returns once it ended. ready, if not
// nil, is called once when Ensure succeeded. An empty pgURL does nothing.
func Start(ctx context.Context, log *slog.Logger, pgURL, database string, lookups []Lookup, ready func()) (stop func()) {
	if pgURL == "" {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		backoff := time.Second
		for {
			start := time.Now()
			res, err := Ensure(ctx, pgURL, database, lookups)
			if err == nil {
				log.Info("ferretpg: lookups indexed in FerretDB's PostgreSQL", "database", database, "created", res.Created,
					"existing", len(res.Existing), "missing", res.Missing, "plan_cache_mode", res.PlanCacheMode,
					"took", time.Since(start).Round(time.Millisecond))
				if res.PlanCacheMode == "set" {
					log.Warn("ferretpg: plan_cache_mode is now force_custom_plan for FerretDB's user; restart FerretDB once so that its pooled connections use the indexes")
				} else if strings.HasPrefix(res.PlanCacheMode, "left") {
					log.Warn("ferretpg: FerretDB's prepared lookups may not use the indexes", "plan_cache_mode", res.PlanCacheMode)
				}
				if ready != nil {
					ready()
				}
				return
			}
			if ctx.Err() != nil {
				return
			}
			log.Error("ferretpg: indexing FerretDB's tables failed; lookups scan whole tables until it succeeds",
				"database", database, "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Minute)
		}
	}()
	return func() { cancel(); <-done }
}

// ValidateURL checks a --ferretdb-postgres-url value ("" is valid: off).
func ValidateURL(pgURL string) error {
	if pgURL == "" {
		return nil
	}
	if !strings.HasPrefix(pgURL, "postgres://") && !strings.HasPrefix(pgURL, "postgresql://") {
		return errors.New("must be a postgres:// or postgresql:// URL")
	}
	_, err := pgx.ParseConfig(pgURL)
	return err
}

// forceCustomPlans makes FerretDB's user (the connected one) plan every
// execution of a prepared statement with its parameters' values, in new
// sessions of this database. It leaves a plan_cache_mode someone set for
// this user or database alone.
func forceCustomPlans(ctx context.Context, conn *pgx.Conn) (string, error) {
	var mode string
	if err := conn.QueryRow(ctx, "SELECT current_setting('plan_cache_mode')").Scan(&mode); err != nil {
		return "", fmt.Errorf("ferretpg: read plan_cache_mode: %w", err)
	}
	if mode == "force_custom_plan" {
		return "in effect", nil
	}
	var chosen *string
	err := conn.QueryRow(ctx, `SELECT c FROM pg_db_role_setting s, unnest(s.setconfig) AS c
		WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
		AND s.setrole IN (0, (SELECT oid FROM pg_roles WHERE rolname = current_user))
		AND c LIKE 'plan\_cache\_mode=%' LIMIT 1`).Scan(&chosen)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return "", fmt.Errorf("ferretpg: read the settings of FerretDB's user: %w", err)
	case *chosen == "plan_cache_mode=force_custom_plan":
		return "in effect", nil // for new sessions
	default:
		return fmt.Sprintf("left: %s was set for this user or database; FerretDB's lookups use the indexes only with force_custom_plan", *chosen), nil
	}
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		return "", fmt.Errorf("ferretpg: %w", err)
	}
	if _, err := conn.Exec(ctx, "ALTER ROLE CURRENT_USER IN DATABASE "+pgx.Identifier{db}.Sanitize()+" SET plan_cache_mode = force_custom_plan"); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42501" { // insufficient_privilege
			return fmt.Sprintf("left: %s; as a superuser, run ALTER ROLE <FerretDB's user> IN DATABASE %s SET plan_cache_mode = force_custom_plan, then restart FerretDB",
				pe.Message, pgx.Identifier{db}.Sanitize()), nil
		}
		return "", fmt.Errorf("ferretpg: set plan_cache_mode: %w", err)
	}
	return "set", nil
}

// errNoMetadata: FerretDB's database has no metadata table (none of its
// collections was ever made, or it was dropped).
var errNoMetadata = errors.New("no FerretDB metadata")

// querier is a *pgx.Conn or a *pgxpool.Pool.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// collectionTables maps database's collections to their PostgreSQL tables.
func collectionTables(ctx context.Context, conn querier, database string) (map[string]string, error) {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL",
		pgx.Identifier{database, metadataTable}.Sanitize()).Scan(&exists); err != nil {
		return nil, fmt.Errorf("ferretpg: look for FerretDB's metadata: %w", err)
	}
	if !exists {
		return nil, fmt.Errorf("ferretpg: %w: PostgreSQL has no table %s.%s: is this the PostgreSQL of a FerretDB 1.x server, and has database %q been created through it?",
			errNoMetadata, database, metadataTable, database)
	}
	rows, err := conn.Query(ctx, fmt.Sprintf("SELECT _jsonb->>'_id', _jsonb->>'table' FROM %s",
		pgx.Identifier{database, metadataTable}.Sanitize()))
	if err != nil {
		return nil, fmt.Errorf("ferretpg: read FerretDB's metadata: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var coll, table *string
		if err := rows.Scan(&coll, &table); err != nil {
			return nil, fmt.Errorf("ferretpg: read FerretDB's metadata: %w", err)
		}
		if coll != nil && table != nil && *table != "" {
			out[*coll] = *table
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ferretpg: read FerretDB's metadata: %w", err)
	}
	return out, nil
}

// ensureIndex makes index name on schema.table with def (what follows ON
// table) and reports whether it built one. The caller holds the advisory
// lock.
func ensureIndex(ctx context.Context, conn *pgx.Conn, schema, table, name, def string) (bool, error) {
	var valid *bool
	err := conn.QueryRow(ctx, `SELECT i.indisvalid FROM pg_class c
		JOIN pg_index i ON i.indexrelid = c.oid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2`, schema, name).Scan(&valid)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return false, err
	case valid != nil && *valid:
		return false, nil
	default: // left invalid by an interrupted concurrent build
		if _, err := conn.Exec(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+pgx.Identifier{schema, name}.Sanitize()); err != nil {
			return false, fmt.Errorf("drop invalid index %s: %w", name, err)
		}
	}
	var size int64
	if err := conn.QueryRow(ctx, "SELECT pg_table_size($1::regclass)", pgx.Identifier{schema, table}.Sanitize()).Scan(&size); err != nil {
		return false, err
	}
	concurrently := ""
	if size > concurrentAbove {
		concurrently = "CONCURRENTLY "
	}
	q := fmt.Sprintf("CREATE INDEX %s%s ON %s %s",
		concurrently, pgx.Identifier{name}.Sanitize(), pgx.Identifier{schema, table}.Sanitize(), def)
	if _, err := conn.Exec(ctx, q); err != nil {
		return false, err
	}
	return true, nil
}

// IndexName is the name of the index on (_jsonb->'field') of table: at most
// 63 bytes (PostgreSQL's limit), with a hash of the whole when it is cut.
func IndexName(table, field string) string { return indexName("parley_gin_" + table + "_" + field) }

// OrderIndexName is the name of the index serving Order o on table. A hash
// of the two fields tells apart orders whose names join alike ({a_b, c} and
// {a, b_c}).
func OrderIndexName(table string, o Order) string {
	return indexName(fmt.Sprintf("parley_ord_%s_%s_%s_%04x", table, o.Eq, o.By, fnvHash(o.Eq+"\x00"+o.By)&0xffff))
}

// indexName cuts name to PostgreSQL's 63 bytes, with a hash of the whole.
func indexName(name string) string {
	if len(name) <= 63 {
		return name
	}
	return fmt.Sprintf("%s_%08x", name[:54], fnvHash(name))
}

func fnvHash(s string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return h.Sum32()
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
