package ferretpg

// SetConcurrentAbove sets the size above which indexes are built
// CONCURRENTLY, for a test, and returns the function that restores it.
func SetConcurrentAbove(n int64) (restore func()) {
	old := concurrentAbove
	concurrentAbove = n
	return func() { concurrentAbove = old }
}

// PageSQL is the statement p runs for q on table.
func PageSQL(p *Pager, table string, q Page) string { return p.pageSQL(table, q) }

// SetTable puts a table name in p's cache, as if collection had been there.
func SetTable(p *Pager, collection, table string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tables[collection] = table
}
