package ferretpg

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Pager reads pages of a collection in an Order straight from FerretDB's
// PostgreSQL table, through the b-tree index Ensure makes for that Order.
//
// FerretDB 1.24 pushes only equality filters down to SQL, and neither sort
// nor limit: a page of a room's members, of a user's rooms or of public
// rooms reads, decodes and sorts every document that matches the equality,
// 26-44 µs each here (0.26-0.28 s a first page at 10,000, BenchmarkPages in
// server/store). A Pager asks PostgreSQL for the page's keys only, a range
// scan of the index, and the caller reads the documents through FerretDB by
// _id, which its GIN index serves.
//
// It reads what FerretDB wrote, committed, in the layout FerretDB 1.x keeps
// (one table per collection, one jsonb column, strings as JSON strings),
// which Ensure relies on too. Use it only once Ensure succeeded: without its
// index each page scans the table.
type Pager struct {
	pool   *pgxpool.Pool
	schema string // FerretDB's database
	calls  *prometheus.HistogramVec

	mu     sync.Mutex
	tables map[string]string // collection → table, as far as known
}

// NewPager returns a Pager of database on FerretDB's PostgreSQL at pgURL. It
// connects on first use, with at most 4 connections (pgxpool's default on a
// machine of up to 4 cores; pool_max_conns in the URL sets it); Close
// releases them.
func NewPager(pgURL, database string, reg prometheus.Registerer) (*Pager, error) {
	cfg, err := pgxpool.ParseConfig(pgURL)
	if err != nil {
		return nil, fmt.Errorf("ferretpg: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("ferretpg: %w", err)
	}
	p := &Pager{pool: pool, schema: database, tables: map[string]string{},
		calls: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "parley", Subsystem: "ferretpg",
			Name: "query_duration_seconds", Help: "Pages and counts read from FerretDB's PostgreSQL, by collection, operation (page, count) and result.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2.5, 12)}, []string{"collection", "op", "result"}),
	}
	if err := reg.Register(p.calls); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ferretpg: %w", err)
	}
	return p, nil
}

// Close closes the Pager's connections.
func (p *Pager) Close() { p.pool.Close() }

// Page is one page of a collection in an Order: the By values of the
// documents whose Eq is Value and whose By is greater than After (byte
// order), at most Limit, in order.
type Page struct {
	Collection string
	Order
	Value, After string
	Limit        int
}

// MaxPage bounds a page (a larger Limit reads MaxPage keys) and what Count
// counts up to, against a huge one given by mistake.
const MaxPage = 10_000

// Page returns q's By values in order; none when the collection has no table
// yet (nothing was ever written to it).
func (p *Pager) Page(ctx context.Context, q Page) ([]string, error) {
	if q.Limit <= 0 || strings.ContainsRune(q.Value, 0) {
		// No stored string holds a NUL byte (PostgreSQL's text cannot), so
		// no document matches such a Value.
		return nil, nil
	}
	// Nor may a parameter: for strings without NUL, s > a+"\x00"+x is s > a.
	after, _, _ := strings.Cut(q.After, "\x00")
	var keys []string
	err := p.run(ctx, "page", q, func(table string) error {
		rows, err := p.pool.Query(ctx, p.pageSQL(table, q), q.Value, after, min(q.Limit, MaxPage))
		if err != nil {
			return err
		}
		keys, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return keys, err
}

// Count returns how many documents have Eq equal to q.Value, counting up to
// upTo at most, and never past MaxPage (its cost grows with what it counts:
// an index entry and its table row each); q.After and q.Limit do not count.
func (p *Pager) Count(ctx context.Context, q Page, upTo int) (int, error) {
	if upTo <= 0 || strings.ContainsRune(q.Value, 0) {
		return 0, nil
	}
	var n int
	err := p.run(ctx, "count", q, func(table string) error {
		return p.pool.QueryRow(ctx, p.countSQL(table, q), q.Value, min(upTo, MaxPage)).Scan(&n)
	})
	return n, err
}

// run runs query on q's table, once more with the table looked up again if
// it is gone, and observes it in the metrics. A collection without a table
// (or a database without FerretDB's metadata) has no documents: query does
// not run.
func (p *Pager) run(ctx context.Context, op string, q Page, query func(table string) error) (err error) {
	defer func(start time.Time) {
		res := "ok"
		if err != nil {
			res = "error"
		}
		p.calls.WithLabelValues(q.Collection, op, res).Observe(time.Since(start).Seconds())
	}(time.Now())
	if err := checkField(q.Eq, q.Collection); err != nil {
		return err
	}
	if err := checkField(q.By, q.Collection); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		table, ok, err := p.table(ctx, q.Collection, attempt > 0)
		if err != nil || !ok {
			return err
		}
		err = query(table)
		if isUndefinedTable(err) && attempt == 0 {
			continue // dropped meanwhile, maybe made again
		}
		if err != nil {
			return fmt.Errorf("ferretpg: %s of %s by %s: %w", op, q.Collection, q.Order, err)
		}
		return nil
	}
}

// pageSQL is the statement of q on table: a range scan of Order's index.
func (p *Pager) pageSQL(table string, q Page) string {
	return fmt.Sprintf("SELECT %[2]s FROM %[1]s WHERE %[3]s = $1 AND %[2]s > $2 ORDER BY %[2]s LIMIT $3",
		pgx.Identifier{p.schema, table}.Sanitize(), textOf(q.By), textOf(q.Eq))
}

// countSQL counts the first $2 entries of q's Value in Order's index.
func (p *Pager) countSQL(table string, q Page) string {
	return fmt.Sprintf("SELECT count(*) FROM (SELECT 1 FROM %[1]s WHERE %[2]s = $1 LIMIT $2) AS s",
		pgx.Identifier{p.schema, table}.Sanitize(), textOf(q.Eq))
}

// table returns the table of collection from the cache, or (with refresh or
// when it is not there) from FerretDB's metadata; ok false when there is none.
func (p *Pager) table(ctx context.Context, collection string, refresh bool) (string, bool, error) {
	p.mu.Lock()
	t, ok := p.tables[collection]
	p.mu.Unlock()
	if ok && !refresh {
		return t, true, nil
	}
	tables, err := collectionTables(ctx, p.pool, p.schema)
	if errors.Is(err, errNoMetadata) {
		return "", false, nil // no collections (yet, or the database was dropped)
	}
	if err != nil {
		return "", false, err
	}
	p.mu.Lock()
	p.tables = tables
	p.mu.Unlock()
	t, ok = tables[collection]
	return t, ok, nil
}
