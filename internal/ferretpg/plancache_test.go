package ferretpg

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parleychat/parley/internal/testenv"
)

// forceCustomPlans sets plan_cache_mode for FerretDB's user in its database
// when no one has, and then finds it in effect for new sessions. The test
// changes that shared setting for some milliseconds and resets it: a
// FerretDB connection opened meanwhile may plan generically (slower lookups
// in other tests, nothing else).
func TestForceCustomPlans(t *testing.T) {
	pgURL := testenv.FerretDBPostgresURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) }) // after the reset below
	settings := func() []string {
		t.Helper()
		var out []string
		rows, err := conn.Query(ctx, `SELECT unnest(setconfig) FROM pg_db_role_setting
			WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND setrole = (SELECT oid FROM pg_roles WHERE rolname = current_user)`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	}
	if slices.ContainsFunc(settings(), func(s string) bool { return strings.HasPrefix(s, "plan_cache_mode=") }) {
		t.Skip("plan_cache_mode is already set for this user in this database; this test sets and resets it")
	}
	// The test's PostgreSQL forces custom plans server-wide (services.sh);
	// this session sees what a default server gives.
	if _, err := conn.Exec(ctx, "SET plan_cache_mode = auto"); err != nil {
		t.Fatal(err)
	}
	got, err := forceCustomPlans(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := conn.Exec(context.Background(), "ALTER ROLE CURRENT_USER IN DATABASE "+pgx.Identifier{conn.Config().Database}.Sanitize()+" RESET plan_cache_mode"); err != nil {
			t.Errorf("reset plan_cache_mode: %v", err)
		}
	})
	if got != "set" || !slices.Contains(settings(), "plan_cache_mode=force_custom_plan") {
		t.Fatalf("forceCustomPlans = %q, settings %v", got, settings())
	}
	if got, err := forceCustomPlans(ctx, conn); err != nil || got != "in effect" {
		t.Fatalf("second forceCustomPlans = %q, %v; want in effect", got, err)
	}
	// A choice someone made is left alone.
	if _, err := conn.Exec(ctx, "ALTER ROLE CURRENT_USER IN DATABASE "+pgx.Identifier{conn.Config().Database}.Sanitize()+" SET plan_cache_mode = auto"); err != nil {
		t.Fatal(err)
	}
	if got, err := forceCustomPlans(ctx, conn); err != nil || !strings.HasPrefix(got, "left: plan_cache_mode=auto") {
		t.Fatalf("forceCustomPlans over an explicit auto = %q, %v", got, err)
	}
	if !slices.Contains(settings(), "plan_cache_mode=auto") {
		t.Fatalf("the explicit setting was overwritten: %v", settings())
	}
}
