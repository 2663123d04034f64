// Package ferretpg makes Parley's point lookups use an index on FerretDB 1.x
// with its PostgreSQL backend.
//
// FerretDB 1.24 keeps a collection in one PostgreSQL table with a single
// jsonb column, _jsonb, and pushes an equality filter down to SQL as
//
//	WHERE _jsonb->$1 @> $2
//
// a containment test that none of the b-tree indexes FerretDB itself creates
// (on (_jsonb->'field')) can serve, so every lookup by _id, username, room_id
// or user_id scans the whole table: 2.4 ms at 1,000 documents, 32 ms at
// 50,000 (docs/PERFORMANCE.md). A GIN index on the same expression serves
// that test once PostgreSQL plans the statement with the key as a constant,
// which it does by itself (custom plans): the lookup becomes logarithmic.
//
// FerretDB prepares its statements (pgx's statement cache) with the key as a
// parameter too, and PostgreSQL's plan cache switches a prepared statement to
// a generic plan, planned without the parameters' values, once that looks no
// dearer than the custom ones so far. A generic plan of _jsonb->$1 cannot
// use an expression index: on a connection whose statement went generic
// while the table had no such index (or was tiny), lookups go on scanning
// after the index exists. Ensure therefore also sets plan_cache_mode to
// force_custom_plan for FerretDB's PostgreSQL database (ALTER DATABASE, which
// takes its owner: FerretDB's user in the usual setup). That applies to new
// sessions only: restart FerretDB once after the first Ensure (or wait for
// its pool to renew its connections, an hour by default).
//
// Ensure creates such an index, one per (collection, field) a store looks up
// by equality, directly in PostgreSQL beside FerretDB's own. FerretDB does not
// know of them: they do not show in listIndexes, and dropping the collection
// (DROP TABLE ... CASCADE) drops them too. They are named "parley_gin_..."
// and never collide with FerretDB's names, which end in "_<hash>_idx".
// Everything here is a no-op on MongoDB, which uses its own indexes; do not
// configure it there.
package ferretpg

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// metadataTable is FerretDB 1.x's table of a database's collections, in the
// PostgreSQL schema named like the database: one row per collection, _jsonb
// {"_id": collection name, "table": table name, ...}.
const metadataTable = "_ferretdb_database_metadata"

// Lookup names the fields of one collection that a store reads documents by,
// with an equality filter ({field: value}).
type Lookup struct {
	Collection string
	Fields     []string
}

// Result says what Ensure did.
type Result struct {
	Created  []string // indexes built now ("collection.field")
	Existing []string // indexes already there
	// Missing lists collections that have no table yet (nothing was ever
	// written to them); their indexes are made by a later Ensure.
	Missing []string
	// PlanCacheMode is what Ensure did about plan_cache_mode: "set" (new
	// sessions will plan every lookup with its values), "already set", or
	// why it could not ("not set: ...", logged as a warning).
	PlanCacheMode string
}

var fieldName = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// Ensure connects to FerretDB's PostgreSQL at pgURL and creates the GIN
// indexes of lookups in database. It is idempotent and safe to run from
// several processes at once (they take turns on an advisory lock). On a
// collection over 8 MB an index is built CONCURRENTLY, so that writes go on
// meanwhile; such a build that was interrupted leaves an invalid index,
// which the next Ensure drops and builds again.
func Ensure(ctx context.Context, pgURL, database string, lookups []Lookup) (Result, error) {
	for _, l := range lookups {
		for _, f := range l.Fields {
			if !fieldName.MatchString(f) {
				return Result{}, fmt.Errorf("ferretpg: field %q of %s: only letters, digits and _ are supported", f, l.Collection)
			}
		}
	}
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		return Result{}, fmt.Errorf("ferretpg: connect to FerretDB's PostgreSQL: %w", err)
	}
	defer conn.Close(context.Background())

	// One Ensure at a time on the whole PostgreSQL server: two CREATE INDEX
	// CONCURRENTLY, even on different tables, each wait for the other's
	// transactions to end, and PostgreSQL may end one as a deadlock.
	lockKey := int64(fnvHash("parley.ferretpg"))
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockKey); err != nil {
		return Result{}, fmt.Errorf("ferretpg: lock: %w", err)
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
		for _, f := range l.Fields {
			created, err := ensureIndex(ctx, conn, database, table, f)
			if err != nil {
				return res, fmt.Errorf("ferretpg: index on %s.%s (table %s.%s): %w", l.Collection, f, database, table, err)
			}
			if created {
				res.Created = append(res.Created, l.Collection+"."+f)
			} else {
				res.Existing = append(res.Existing, l.Collection+"."+f)
			}
		}
	}
	return res, nil
}

// EnsureLogged is Ensure for a process's start-up: a no-op when pgURL is
// empty, otherwise Ensure with what it did logged.
func EnsureLogged(ctx context.Context, log *slog.Logger, pgURL, database string, lookups []Lookup) error {
	if pgURL == "" {
		return nil
	}
	start := time.Now()
	log.Info("ferretpg: indexing FerretDB's tables for lookups (a first build on a large collection can take minutes)", "database", database)
	res, err := Ensure(ctx, pgURL, database, lookups)
	if err != nil {
		return err
	}
	log.Info("ferretpg: lookups indexed", "database", database, "created", res.Created, "existing", len(res.Existing),
		"missing", res.Missing, "plan_cache_mode", res.PlanCacheMode, "took", time.Since(start).Round(time.Millisecond))
	switch {
	case strings.HasPrefix(res.PlanCacheMode, "not set"):
		log.Warn("ferretpg: FerretDB's prepared lookups may not use the indexes", "plan_cache_mode", res.PlanCacheMode)
	case res.PlanCacheMode == "set":
		log.Warn("ferretpg: plan_cache_mode set to force_custom_plan for new PostgreSQL sessions; restart FerretDB once so that its pooled connections get it")
	}
	return nil
}

// ValidateURL checks a --ferretdb-postgres-url value ("" is valid: off).
func ValidateURL(pgURL string) error {
	if pgURL == "" {
		return nil
	}
	if !strings.HasPrefix(pgURL, "postgres://") && !strings.HasPrefix(pgURL, "postgresql://") {
		return errors.New("must be a postgres:// or postgresql:// URL")
	}
	if _, err := pgx.ParseConfig(pgURL); err != nil {
		return err
	}
	return nil
}

// forceCustomPlans makes new sessions of the connected database plan every
// execution of a prepared statement with its parameters' values.
func forceCustomPlans(ctx context.Context, conn *pgx.Conn) (string, error) {
	var set bool
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
		WHERE d.datname = current_database() AND s.setrole = 0 AND 'plan_cache_mode=force_custom_plan' = ANY (s.setconfig))`).Scan(&set)
	if err != nil {
		return "", fmt.Errorf("ferretpg: read the database's settings: %w", err)
	}
	if set {
		return "already set", nil
	}
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		return "", fmt.Errorf("ferretpg: %w", err)
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s SET plan_cache_mode = force_custom_plan", pgx.Identifier{db}.Sanitize())); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42501" { // insufficient_privilege: not the owner
			return fmt.Sprintf("not set: %s; as the owner of database %s or a superuser, run ALTER DATABASE %s SET plan_cache_mode = force_custom_plan, then restart FerretDB",
				pe.Message, db, pgx.Identifier{db}.Sanitize()), nil
		}
		return "", fmt.Errorf("ferretpg: set plan_cache_mode: %w", err)
	}
	return "set", nil
}

// collectionTables maps database's collections to their PostgreSQL tables.
func collectionTables(ctx context.Context, conn *pgx.Conn, database string) (map[string]string, error) {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL",
		pgx.Identifier{database, metadataTable}.Sanitize()).Scan(&exists); err != nil {
		return nil, fmt.Errorf("ferretpg: look for FerretDB's metadata: %w", err)
	}
	if !exists {
		return nil, fmt.Errorf("ferretpg: PostgreSQL has no table %s.%s: is this the PostgreSQL of a FerretDB 1.x server, and has database %q been created through it?",
			database, metadataTable, database)
	}
	rows, err := conn.Query(ctx, fmt.Sprintf("SELECT _jsonb->>'_id', _jsonb->>'table' FROM %s",
		pgx.Identifier{database, metadataTable}.Sanitize()))
	if err != nil {
		return nil, fmt.Errorf("ferretpg: read FerretDB's metadata: %w", err)
	}
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

// concurrentAbove is the table size above which an index is built
// CONCURRENTLY: writes go on during the build, at the price of two more
// passes over the table. Below it a plain build takes milliseconds, during
// which writes to the table wait.
const concurrentAbove = 8 << 20

// ensureIndex makes the GIN index on (_jsonb->'field') of schema.table and
// reports whether it built one.
func ensureIndex(ctx context.Context, conn *pgx.Conn, schema, table, field string) (bool, error) {
	name := IndexName(table, field)
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
	default: // left invalid by an interrupted build
		if _, err := conn.Exec(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+pgx.Identifier{schema, name}.Sanitize()); err != nil {
			return false, fmt.Errorf("drop invalid index %s: %w", name, err)
		}
	}
	// jsonb_path_ops: smaller and faster than the default opclass, and
	// containment (@>) is all it needs to serve. fastupdate off: every insert
	// updates the index at once instead of appending to a pending list that
	// a later insert or vacuum then merges in one long burst.
	var size int64
	if err := conn.QueryRow(ctx, "SELECT pg_relation_size($1::regclass)", pgx.Identifier{schema, table}.Sanitize()).Scan(&size); err != nil {
		return false, err
	}
	concurrently := ""
	if size > concurrentAbove {
		concurrently = "CONCURRENTLY "
	}
	q := fmt.Sprintf("CREATE INDEX %sIF NOT EXISTS %s ON %s USING gin ((_jsonb->%s) jsonb_path_ops) WITH (fastupdate = off)",
		concurrently, pgx.Identifier{name}.Sanitize(), pgx.Identifier{schema, table}.Sanitize(), quoteLiteral(field))
	if _, err := conn.Exec(ctx, q); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return false, fmt.Errorf("%s (SQLSTATE %s)", pe.Message, pe.Code)
		}
		return false, err
	}
	return true, nil
}

// IndexName is the name of the index on (_jsonb->'field') of table: at most
// 63 bytes (PostgreSQL's limit), with a hash of the whole when it is cut.
func IndexName(table, field string) string {
	name := "parley_gin_" + table + "_" + field
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
