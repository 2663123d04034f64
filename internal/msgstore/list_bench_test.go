package msgstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/parleychat/parley/internal/ferretpg"
	"github.com/parleychat/parley/internal/msgstore"
	"github.com/parleychat/parley/internal/testenv"
)

// BenchmarkList reads the newest page of 50 messages, and a page from the
// middle, of rooms of 1,000, 10,000 and 100,000 messages (all in one
// collection, with ferretpg's indexes made before the first insert, as a
// server's start does). Against FerretDB and PostgreSQL:
//
//	eval "$(bash scripts/services.sh env)"
//	PARLEY_TEST_MONGO_URI=$PARLEY_MONGO_URI PARLEY_TEST_FERRETDB_POSTGRES_URL=$PARLEY_FERRETDB_POSTGRES_URL \
//	  go test -run '^$' -bench List -benchtime 20x ./internal/msgstore/
func BenchmarkList(b *testing.B) {
	s := newStore(b, msgstore.Options{})
	ctx := context.Background()
	if _, err := ferretpg.Ensure(ctx, testenv.FerretDBPostgresURL(b), s.Collection().Database().Name(), s.Lookups()); err != nil {
		b.Fatal(err)
	}
	sizes := []int64{1_000, 10_000, 100_000}
	for _, n := range sizes {
		room := fmt.Sprintf("r%d", n)
		for from := int64(1); from <= n; from += 1000 {
			if _, _, err := s.InsertMessages(ctx, roomMessages(room, from, min(from+999, n))); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, n := range sizes {
		room := fmt.Sprintf("r%d", n)
		b.Run(fmt.Sprintf("newest/%d", n), func(b *testing.B) {
			for b.Loop() {
				page, err := s.List(ctx, room, 0, 0, 50)
				if err != nil || len(page) != 50 {
					b.Fatal(err, len(page))
				}
			}
		})
		b.Run(fmt.Sprintf("middle/%d", n), func(b *testing.B) {
			for b.Loop() {
				page, err := s.List(ctx, room, n/2, 0, 50)
				if err != nil || len(page) != 50 {
					b.Fatal(err, len(page))
				}
			}
		})
	}
}
