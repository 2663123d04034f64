package ferretpg

import (
	"context"
	"fmt"
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
// 44 µs each here (0.34 s a page at 10,000 members, BenchmarkPages in
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
// connects on first use; Close releases its connections.
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
			Name: "page_duration_seconds", Help: "Pages read from FerretDB's PostgreSQL by collection and result.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2.5, 12)}, []string{"collection", "result"}),
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

// Page returns q's By values in order; none when the collection has no table
// yet (nothing was ever written to it).
func (p *Pager) Page(ctx context.Context, q Page) (keys []string, err error) {
	defer func(start time.Time) {
		res := "ok"
		if err != nil {
			res = "error"
		}
		p.calls.WithLabelValues(q.Collection, res).Observe(time.Since(start).Seconds())
	}(time.Now())
	if err := checkField(q.Eq, q.Collection); err != nil {
		return nil, err
	}
	if err := checkField(q.By, q.Collection); err != nil {
		return nil, err
	}
	if q.Limit <= 0 {
		return nil, nil
	}
	for attempt := 0; ; attempt++ {
		table, ok, err := p.table(ctx, q.Collection, attempt > 0)
		if err != nil || !ok {
			return nil, err
		}
		keys, err = p.query(ctx, table, q)
		if isUndefinedTable(err) && attempt == 0 {
			continue // dropped, maybe made again under another name
		}
		if err != nil {
			return nil, fmt.Errorf("ferretpg: page of %s by %s: %w", q.Collection, q.Order, err)
		}
		return keys, nil
	}
}

// pageSQL is the statement of q on table: a range scan of Order's index.
func (p *Pager) pageSQL(table string, q Page) string {
	return fmt.Sprintf("SELECT %[2]s FROM %[1]s WHERE %[3]s = $1 AND %[2]s > $2 ORDER BY %[2]s LIMIT $3",
		pgx.Identifier{p.schema, table}.Sanitize(), textOf(q.By), textOf(q.Eq))
}

func (p *Pager) query(ctx context.Context, table string, q Page) ([]string, error) {
	rows, err := p.pool.Query(ctx, p.pageSQL(table, q), q.Value, q.After, q.Limit)
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, q.Limit)
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, rows.Err()
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
	if err != nil {
		return "", false, err
	}
	p.mu.Lock()
	p.tables = tables
	p.mu.Unlock()
	t, ok = tables[collection]
	return t, ok, nil
}
