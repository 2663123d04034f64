package msgstore

// SetMigrateBatch sets how many older messages one find of the migration
// returns, until restore.
func SetMigrateBatch(n int64) (restore func()) {
	old := migrateBatch
	migrateBatch = n
	return func() { migrateBatch = old }
}
