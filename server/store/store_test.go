package store_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/parleychat/parley/internal/ferretpg"
	"github.com/parleychat/parley/internal/testenv"
	"github.com/parleychat/parley/server/store"
)

// ReadMarkers returns the user's markers of the rooms asked for, and on
// FerretDB with ferretpg's indexes it reads them through the user_id index,
// not by scanning every user's markers.
func TestReadMarkersUseTheUserIndex(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The filter ReadMarkers sends, as the driver sends it.
	var mu sync.Mutex
	var filter bson.Raw
	monitor := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		if e.CommandName == "find" && e.Command.Lookup("find").StringValue() == "read_markers" {
			mu.Lock()
			filter = e.Command.Lookup("filter").Document()
			mu.Unlock()
		}
	}}
	mc, err := mongo.Connect(options.Client().ApplyURI(testenv.MongoURI(t)).SetMonitor(monitor))
	if err != nil {
		t.Fatal(err)
	}
	name := testenv.Name(t)
	db := mc.Database(name)
	defer func() { _ = db.Drop(context.Background()); _ = mc.Disconnect(context.Background()) }()
	st := store.New(db)
	if err := st.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	// 20 users' markers in 100 rooms each.
	for u := range 20 {
		for r := range 100 {
			if _, err := st.SetReadMarker(ctx, fmt.Sprintf("r%03d", r), fmt.Sprintf("u%02d", u), "e1", int64(u+r+1)); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := st.ReadMarkers(ctx, "u07", []string{"r001", "r050", "r200"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["r001"].Seq != 9 || got["r050"].Seq != 58 || got["r050"].UserID != "u07" {
		t.Fatalf("ReadMarkers = %+v, want r001 at 9 and r050 at 58 (r200 has none)", got)
	}

	pgURL := testenv.FerretDBPostgresURL(t)
	if _, err := ferretpg.Ensure(ctx, pgURL, name, st.Lookups()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	sent := filter
	mu.Unlock()
	var out bson.M
	if err := db.RunCommand(ctx, bson.D{{Key: "explain", Value: bson.D{{Key: "find", Value: "read_markers"}, {Key: "filter", Value: sent}}}}).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if plan := fmt.Sprint(out["queryPlanner"]); !strings.Contains(plan, "parley_gin_read_markers_") || !strings.Contains(plan, "_user_id") {
		t.Fatalf("ReadMarkers' filter %v does not use the user_id index: %s", sent, plan)
	}
}
