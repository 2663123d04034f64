package msgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/ferretpg"
)

const (
	// CollectionName is the name of the collection a Store reads and writes.
	CollectionName = "messages"

	// RoomSeqIndex is the name of the unique {room_id: 1, seq: 1} index
	// created by EnsureIndexes.
	RoomSeqIndex = "room_id_1_seq_1"

	// BlockIndex is the name of the {blk: 1} index created by EnsureIndexes
	// (see the block layout in blocks.go).
	BlockIndex = "blk_1"

	// DefaultChunkSize is the number of documents (messages and the block
	// markers they carry) per insert command when Options.ChunkSize is
	// zero: FerretDB 1.24's own batch, so that a command is one SQL INSERT. Draining a backlog, FerretDB and
	// PostgreSQL spent 108-118 µs of CPU per document in commands of 100
	// against 121-138 µs in commands of 40 (200,000 records, two runs each).
	DefaultChunkSize = 100

	// duplicateKeyCode is the server error code of a unique index violation.
	duplicateKeyCode = 11000

	// lookupConcurrency bounds the concurrent _id lookups of one chunk's
	// duplicate keys (see storedIDs); with a few partitions writing at once
	// it stays well below FerretDB's SQL pool.
	lookupConcurrency = 4
)

var (
	// ErrInvalidArgument is wrapped by every error caused by a bad argument
	// (an empty id, a non-positive seq or limit) rather than by the server.
	ErrInvalidArgument = errors.New("msgstore: invalid argument")

	// ErrSeqConflict is matched (errors.Is) by a *ConflictError: a message
	// could not be stored because another message already holds its
	// (room_id, seq) position.
	ErrSeqConflict = errors.New("msgstore: room position taken by another message")
)

// ConflictError is returned by InsertMessages when some messages can never be
// stored because a different message (another _id) already occupies their
// (room_id, seq) position. Every other message of that call was stored (or was
// already stored): retrying the same call cannot succeed for MessageIDs and is
// not needed for the rest.
type ConflictError struct {
	// MessageIDs are the ids of the messages that were not stored, in the
	// order they were passed to InsertMessages.
	MessageIDs []string
}

// Error implements error.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("%v: %d message(s) not stored: %s", ErrSeqConflict, len(e.MessageIDs), strings.Join(e.MessageIDs, ", "))
}

// Is reports whether target is ErrSeqConflict.
func (e *ConflictError) Is(target error) bool { return target == ErrSeqConflict }

// RejectedMessageIDs returns MessageIDs. It lets a caller that does not import
// this package (the persister) learn which messages to give up on.
func (e *ConflictError) RejectedMessageIDs() []string { return e.MessageIDs }

// Options configures a Store.
type Options struct {
	// ChunkSize is the maximum number of documents per insert command;
	// InsertMessages splits larger calls. Zero means DefaultChunkSize. On
	// real MongoDB a few hundred is better.
	ChunkSize int

	// MaxInFlight bounds the insert commands InsertMessages runs at once,
	// over all callers (see inserter). Zero means DefaultMaxInFlight.
	MaxInFlight int

	// Linger is how long documents that do not fill a chunk wait for more
	// before their command starts, when a command slot is free (see
	// inserter). Zero starts every command at once.
	Linger time.Duration

	// Log receives the progress of EnsureIndexes' one-time migration of
	// messages stored before the block layout. Nil: no log.
	Log *slog.Logger

	// FerretDBPostgresURL, for FerretDB 1.x on PostgreSQL (see ferretpg):
	// when the migration has messages to update, EnsureIndexes first
	// indexes the collection's lookups there, since each update finds its
	// message by _id (2.0 ms an update at 5,000 messages with the index,
	// 5.4 ms without, and without it the cost grows with the table).
	FerretDBPostgresURL string
}

// Store reads and writes the messages collection of one database. It is safe
// for concurrent use. It does not own the database's client: the caller
// disconnects it after the last call returned.
type Store struct {
	coll      *mongo.Collection
	chunkSize int
	ins       *inserter
	marks     markerCache
	log       *slog.Logger
	pgURL     string
}

// New returns a Store on db's "messages" collection. It does not contact the
// server; call EnsureIndexes once at start.
func New(db *mongo.Database, opts Options) *Store {
	chunk := opts.ChunkSize
	if chunk <= 0 {
		chunk = DefaultChunkSize
	}
	s := &Store{coll: db.Collection(CollectionName), chunkSize: chunk, log: opts.Log, pgURL: opts.FerretDBPostgresURL}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.ins = &inserter{s: s, max: opts.MaxInFlight, linger: opts.Linger}
	if s.ins.max <= 0 {
		s.ins.max = DefaultMaxInFlight
	}
	return s
}

// Collection returns the underlying collection (for tests and tooling).
func (s *Store) Collection() *mongo.Collection { return s.coll }

// Lookups names the fields messages are read by with an equality filter, for
// ferretpg.Ensure: blk (every history read, see the block layout in
// blocks.go) and _id (the lookups after a duplicate-key error in
// InsertMessages).
func (s *Store) Lookups() []ferretpg.Lookup {
	return []ferretpg.Lookup{{Collection: s.coll.Name(), Fields: []string{"_id", "blk"}}}
}

// EnsureIndexes creates the unique {room_id: 1, seq: 1} index and the
// {blk: 1} index if they do not exist, and gives messages stored before the
// block layout their block keys (once per collection; see migrate). It is
// idempotent and safe to call from several processes at once. _id needs no
// index of its own. On a collection of older messages the migration takes
// about as long as reading and updating each of them (logged to
// Options.Log): give it a context without a short deadline.
func (s *Store) EnsureIndexes(ctx context.Context) error {
	// One command per index: FerretDB 1.24 panics on a createIndexes of
	// two when the first exists.
	for _, m := range []mongo.IndexModel{{
		Keys:    bson.D{{Key: "room_id", Value: 1}, {Key: "seq", Value: 1}},
		Options: options.Index().SetName(RoomSeqIndex).SetUnique(true),
	}, {
		Keys:    bson.D{{Key: "blk", Value: 1}},
		Options: options.Index().SetName(BlockIndex),
	}} {
		if _, err := s.coll.Indexes().CreateOne(ctx, m); err != nil {
			return fmt.Errorf("msgstore: create index on %v: %w", m.Keys, err)
		}
	}
	return s.migrate(ctx)
}

// document is the stored form of a parleyv1.Message.
type document struct {
	ID             string    `bson:"_id"`
	RoomID         string    `bson:"room_id"`
	Block          string    `bson:"blk"`
	Epoch          string    `bson:"epoch"`
	Seq            int64     `bson:"seq"`
	SenderID       string    `bson:"sender_id"`
	SenderUsername string    `bson:"sender_username"`
	ClientMsgID    string    `bson:"client_msg_id"`
	Body           string    `bson:"body"`
	CreateTime     time.Time `bson:"create_time"`
}

func toDocument(m *parleyv1.Message) document {
	d := document{
		ID:             m.GetMessageId(),
		RoomID:         m.GetRoomId(),
		Block:          messageKey(m.GetRoomId(), blockOf(m.GetSeq())),
		Epoch:          m.GetEpoch(),
		Seq:            m.GetSeq(),
		SenderID:       m.GetSenderId(),
		SenderUsername: m.GetSenderUsername(),
		ClientMsgID:    m.GetClientMsgId(),
		Body:           m.GetBody(),
	}
	if m.GetCreateTime() != nil {
		d.CreateTime = m.GetCreateTime().AsTime()
	}
	return d
}

// NewDocument returns the stored form of m exactly as InsertMessages writes
// it, for tools that write the collection directly (the benchmark's raw
// insertMany ceiling). It does not validate m. The block markers that
// InsertMessages writes beside new blocks' first messages are not included.
func NewDocument(m *parleyv1.Message) any { return toDocument(m) }

func (d *document) message() *parleyv1.Message {
	m := &parleyv1.Message{
		MessageId:      d.ID,
		RoomId:         d.RoomID,
		Epoch:          d.Epoch,
		Seq:            d.Seq,
		SenderId:       d.SenderID,
		SenderUsername: d.SenderUsername,
		ClientMsgId:    d.ClientMsgID,
		Body:           d.Body,
	}
	if !d.CreateTime.IsZero() {
		m.CreateTime = timestamppb.New(d.CreateTime)
	}
	return m
}

// Validate returns an error wrapping ErrInvalidArgument if m cannot be
// stored: nil, no message_id or room_id, a seq that is not positive, or an
// id that starts with "~" (the block markers' prefix). InsertMessages
// refuses a call with such a message before writing anything.
func (s *Store) Validate(m *parleyv1.Message) error { return checkMessage(0, m) }

// checkMessage returns an ErrInvalidArgument error if m, the i-th message of
// a call, cannot be stored.
func checkMessage(i int, m *parleyv1.Message) error {
	switch {
	case m == nil:
		return fmt.Errorf("%w: message %d is nil", ErrInvalidArgument, i)
	case m.GetMessageId() == "":
		return fmt.Errorf("%w: message %d: empty message_id", ErrInvalidArgument, i)
	case m.GetRoomId() == "":
		return fmt.Errorf("%w: message %d (%s): empty room_id", ErrInvalidArgument, i, m.GetMessageId())
	case strings.HasPrefix(m.GetRoomId(), markerPrefix):
		return fmt.Errorf("%w: message %d (%s): room_id %q starts with %q", ErrInvalidArgument, i, m.GetMessageId(), m.GetRoomId(), markerPrefix)
	case strings.HasPrefix(m.GetMessageId(), markerPrefix):
		return fmt.Errorf("%w: message %d: message_id %q starts with %q", ErrInvalidArgument, i, m.GetMessageId(), markerPrefix)
	case m.GetSeq() <= 0:
		return fmt.Errorf("%w: message %d (%s): seq %d is not positive", ErrInvalidArgument, i, m.GetMessageId(), m.GetSeq())
	}
	return nil
}

// InsertMessages stores msgs with unordered insertMany commands of at most
// ChunkSize documents each, shared with concurrent calls (see inserter). It
// is idempotent: a message whose _id is already
// stored counts in duplicates, not as a failure, so a redelivered batch can
// be passed again as a whole.
//
// It returns:
//   - nil when every message is now stored (inserted + duplicates ==
//     len(msgs));
//   - a *ConflictError (errors.Is ErrSeqConflict) when every message is
//     stored except the ones it names, whose (room_id, seq) position holds
//     another message: those can never be stored;
//   - an error wrapping ErrInvalidArgument, before writing anything, when a
//     message is one Validate refuses;
//   - any other error (network, server, write concern) as is, after which
//     part of msgs may be stored: the caller retries the whole call.
func (s *Store) InsertMessages(ctx context.Context, msgs []*parleyv1.Message) (inserted, duplicates int, err error) {
	for i, m := range msgs {
		if err := checkMessage(i, m); err != nil {
			return 0, 0, err
		}
	}
	if len(msgs) == 0 {
		return 0, 0, nil
	}
	inserted, duplicates, conflicts, err := s.ins.insert(ctx, msgs)
	if err != nil {
		return inserted, duplicates, err
	}
	refs := make([]blockRef, len(msgs))
	for i, m := range msgs {
		refs[i] = blockRef{room: m.GetRoomId(), seq: m.GetSeq()}
	}
	if err := s.confirmMarkers(ctx, refs); err != nil {
		return inserted, duplicates, err
	}
	if len(conflicts) > 0 {
		return inserted, duplicates, &ConflictError{MessageIDs: conflicts}
	}
	return inserted, duplicates, nil
}

// insertChunk inserts one chunk, with markers, the block markers it needs
// that no other command has written or is writing (claimed for it by the
// inserter, see markerCache), in the same command, and returns each
// message's outcome: its duplicate-key failures are sorted into duplicates
// (the _id is stored) and conflicts (it is not: another message holds the
// position). A marker that is already stored is not a failure.
func (s *Store) insertChunk(ctx context.Context, chunk []*parleyv1.Message, markers []claimed) (outcomes []uint8, err error) {
	docs := make([]any, 0, len(markers)+len(chunk))
	for _, m := range markers {
		docs = append(docs, m.ref.doc())
	}
	for _, m := range chunk {
		docs = append(docs, toDocument(m))
	}
	outcomes = make([]uint8, len(chunk)) // outInserted
	_, err = s.coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	if err == nil {
		s.marks.settle(markers, true)
		return outcomes, nil
	}
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 {
		s.marks.settle(markers, false)
		return nil, fmt.Errorf("msgstore: insert %d messages: %w", len(chunk), err)
	}
	dupIdx := make([]int, 0, len(bwe.WriteErrors))
	for _, we := range bwe.WriteErrors {
		if we.Code != duplicateKeyCode || we.Index < 0 || we.Index >= len(docs) {
			// Unordered: the rest of the chunk was attempted, but the
			// caller retries everything anyway.
			s.marks.settle(markers, false)
			return nil, fmt.Errorf("msgstore: insert %d messages: %w", len(chunk), err)
		}
		if we.Index >= len(markers) { // a marker already stored is fine
			dupIdx = append(dupIdx, we.Index-len(markers))
		}
	}
	s.marks.settle(markers, true)
	if len(dupIdx) == 0 {
		return outcomes, nil
	}

	// A duplicate key is either this _id (already stored: redelivery) or
	// this (room_id, seq) under another _id (a conflict). Ask which.
	ids := make([]string, len(dupIdx))
	for i, idx := range dupIdx {
		ids[i] = chunk[idx].GetMessageId()
	}
	stored, err := s.storedIDs(ctx, ids)
	if err != nil {
		return nil, err
	}
	for i, idx := range dupIdx {
		if _, ok := stored[ids[i]]; ok {
			outcomes[idx] = outDuplicate
		} else {
			outcomes[idx] = outConflict
		}
	}
	return outcomes, nil
}

// storedIDs returns which of ids exist as _id. It asks for one id at a time
// (lookupConcurrency at once) because FerretDB on PostgreSQL pushes only
// equality filters down to SQL: an {_id: {$in: ids}} query reads and decodes
// the whole collection (about 4 s for 40 ids among 20,000 documents on a
// 2-core machine), and a redelivered batch, which needs one lookup per chunk,
// then outlasts the persister's write timeout and is retried forever. On
// MongoDB both forms use the _id index.
func (s *Store) storedIDs(ctx context.Context, ids []string) (map[string]struct{}, error) {
	var mu sync.Mutex
	stored := make(map[string]struct{}, len(ids))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(lookupConcurrency)
	for _, id := range ids {
		g.Go(func() error {
			err := s.coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}},
				options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})).Err()
			switch {
			case errors.Is(err, mongo.ErrNoDocuments):
				return nil
			case err != nil:
				return fmt.Errorf("msgstore: look up duplicate id %s: %w", id, err)
			}
			mu.Lock()
			stored[id] = struct{}{}
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return stored, nil
}

// List returns at most limit messages of roomID, reading only the blocks the
// page crosses (see the block layout in blocks.go).
//
// With afterSeq == 0 it pages backward: the newest messages with
// seq < beforeSeq (beforeSeq == 0: from the newest), newest first. The next
// older page is List(room, lastReturnedSeq, 0, limit).
//
// With afterSeq > 0 it pages forward: the oldest messages with seq > afterSeq
// (and seq < beforeSeq when beforeSeq > 0), oldest first. The next page is
// List(room, beforeSeq, lastReturnedSeq, limit).
//
// An empty result is an empty slice and a nil error. limit must be positive,
// beforeSeq and afterSeq not negative.
func (s *Store) List(ctx context.Context, roomID string, beforeSeq, afterSeq int64, limit int) ([]*parleyv1.Message, error) {
	switch {
	case roomID == "":
		return nil, fmt.Errorf("%w: empty room_id", ErrInvalidArgument)
	case limit <= 0:
		return nil, fmt.Errorf("%w: limit %d is not positive", ErrInvalidArgument, limit)
	case beforeSeq < 0 || afterSeq < 0:
		return nil, fmt.Errorf("%w: negative seq bound (before %d, after %d)", ErrInvalidArgument, beforeSeq, afterSeq)
	}
	if afterSeq == math.MaxInt64 {
		return []*parleyv1.Message{}, nil
	}
	lo, hi := afterSeq+1, int64(noUpperBound)
	if beforeSeq > 0 {
		hi = beforeSeq - 1
	}
	docs, err := s.list(ctx, roomID, lo, hi, limit, afterSeq == 0)
	if err != nil {
		return nil, fmt.Errorf("msgstore: list room %s: %w", roomID, err)
	}
	out := make([]*parleyv1.Message, len(docs))
	for i := range docs {
		out[i] = docs[i].message()
	}
	return out, nil
}

// MaxSeq returns the highest stored seq of roomID, or 0 when the room has no
// stored message.
func (s *Store) MaxSeq(ctx context.Context, roomID string) (int64, error) {
	docs, err := s.list(ctx, roomID, 1, noUpperBound, 1, true)
	if err != nil {
		return 0, fmt.Errorf("msgstore: max seq of room %s: %w", roomID, err)
	}
	if len(docs) == 0 {
		return 0, nil
	}
	return docs[0].Seq, nil
}

// Count returns the number of stored messages of roomID. It reads the whole
// room, a block at a time.
func (s *Store) Count(ctx context.Context, roomID string) (int64, error) {
	var n int64
	err := s.walkBlocks(ctx, roomID, 0, false, func(b int64) error {
		c, err := s.coll.CountDocuments(ctx, bson.D{{Key: "blk", Value: messageKey(roomID, b)}})
		n += c
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("msgstore: count room %s: %w", roomID, err)
	}
	return n, nil
}
