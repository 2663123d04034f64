package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Cleanup drops the databases dbs from the store at mongoURI and deletes the
// Kafka topics from brokers, so that a later benchmark does not run beside
// their rows: PostgreSQL under FerretDB goes on working on freshly written
// tables (vacuum, checkpoints), which showed in the store delay of the next
// run (bench/persist.go). Missing databases and topics are not errors.
func Cleanup(ctx context.Context, mongoURI string, brokers, dbs, topics []string) error {
	var errs []error
	if len(dbs) > 0 {
		mc, err := mongo.Connect(options.Client().ApplyURI(mongoURI).SetTimeout(2 * time.Minute))
		if err != nil {
			return fmt.Errorf("mongo-uri: %w", err)
		}
		defer func() { _ = mc.Disconnect(context.Background()) }()
		errs = append(errs, dropDatabases(ctx, mc, dbs...))
	}
	if len(topics) > 0 {
		errs = append(errs, deleteTopics(ctx, brokers, topics...))
	}
	return errors.Join(errs...)
}

// dropDatabases drops each of dbs.
func dropDatabases(ctx context.Context, mc *mongo.Client, dbs ...string) error {
	var errs []error
	for _, db := range dbs {
		if err := mc.Database(db).Drop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("drop database %s: %w", db, err))
		}
	}
	return errors.Join(errs...)
}

// deleteTopics deletes topics; one that does not exist is skipped.
func deleteTopics(ctx context.Context, brokers []string, topics ...string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return fmt.Errorf("kafka-brokers: %w", err)
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).DeleteTopics(ctx, topics...)
	if err != nil {
		return fmt.Errorf("delete topics: %w", err)
	}
	var errs []error
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
			errs = append(errs, fmt.Errorf("delete topic %s: %w", r.Topic, r.Err))
		}
	}
	return errors.Join(errs...)
}
