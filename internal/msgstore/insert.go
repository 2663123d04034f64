package msgstore

import (
	"context"
	"slices"
	"sync"
	"time"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// Concurrent InsertMessages calls share insert commands (group commit).
//
// On FerretDB an insert command costs far more than its documents: storing
// 4,800 documents from 12 writers took 808 µs of store CPU per document in
// commands of 1 document, 277 µs in commands of 4, 121 µs of 16 and 88 µs
// of 40 (FerretDB 1.24 on PostgreSQL 15, 2-core VM). The persister has one
// writer per Kafka partition, so under a steady chat load each writer has
// only a record or two at a time, and the store spent most of its CPU on
// command overhead. Here the documents of every call wait in one queue, and
// at most MaxInFlight commands of up to ChunkSize documents run at once: a
// call that arrives while they are busy joins the next command. Two to four
// commands in flight already keep the store's CPU busy (16,000-19,000
// documents/s in commands of 40 with 2, 4 or 12 in flight), so nothing is
// lost at full load either.
//
// Below full load the free slots start commands as soon as calls arrive, so
// the first partitions of a fetch each get a small command of their own
// (19 documents per command on average at 2,000 messages/s). With
// Options.Linger, documents that do not fill a chunk wait up to that long
// for the other calls of the same moment before their command starts; full
// chunks never wait (but the few messages a full queue leaves behind when
// block markers took part of its command's room do).

// DefaultMaxInFlight is the number of insert commands in flight at once
// when Options.MaxInFlight is zero.
const DefaultMaxInFlight = 4

// DefaultLinger is the persister's --insert-linger. The partitions of one
// fetch reach the store within a few milliseconds of each other; with 5 ms
// and commands of up to DefaultChunkSize they share commands (60 documents
// each on average at 2,000 msgs/s, against 17-20 with no linger and up to
// 40). The two changes were measured together: the persistence path used
// less CPU in 8 of 9 back-to-back pairs of fanout-v1 at that rate (4-19
// points of a core). Options.Linger's zero value still means no linger.
const DefaultLinger = 5 * time.Millisecond

// insertTimeout bounds one shared insert command (the callers' own
// contexts bound how long each waits for it).
const insertTimeout = 30 * time.Second

// insertCall is one InsertMessages call waiting for its documents.
type insertCall struct {
	mu         sync.Mutex
	left       int // documents without an outcome yet
	inserted   int
	duplicates int
	conflicts  []pendingDoc
	err        error
	done       chan struct{} // closed when left reaches 0
}

// pendingDoc is one message waiting for an insert command.
type pendingDoc struct {
	m    *parleyv1.Message
	idx  int // position in its call
	call *insertCall
}

// Outcomes of one document of an insert command.
const (
	outInserted uint8 = iota
	outDuplicate
	outConflict
)

// inserter runs the shared insert commands.
type inserter struct {
	s       *Store
	max     int
	linger  time.Duration // how long a command of less than a chunk waits for more documents
	mu      sync.Mutex
	queue   []pendingDoc
	running int         // commands in flight
	timer   *time.Timer // armed while a part chunk lingers
}

// command is the documents of one insert command.
type command struct {
	docs    []pendingDoc
	markers []claimed
}

// insert queues msgs and waits until each has an outcome or ctx ends. Its
// documents may still be written after ctx ended (the caller retries;
// inserts are idempotent).
func (in *inserter) insert(ctx context.Context, msgs []*parleyv1.Message) (inserted, duplicates int, conflicts []string, err error) {
	call := &insertCall{left: len(msgs), done: make(chan struct{})}
	docs := make([]pendingDoc, len(msgs))
	for i, m := range msgs {
		docs[i] = pendingDoc{m: m, idx: i, call: call}
	}
	in.mu.Lock()
	in.queue = append(in.queue, docs...)
	start := in.startLocked(false)
	in.mu.Unlock()
	for _, chunk := range start {
		go in.run(chunk)
	}
	select {
	case <-call.done:
	case <-ctx.Done():
		call.mu.Lock()
		defer call.mu.Unlock()
		return call.inserted, call.duplicates, nil, ctx.Err()
	}
	if call.err != nil {
		return call.inserted, call.duplicates, nil, call.err
	}
	slices.SortFunc(call.conflicts, func(a, b pendingDoc) int { return a.idx - b.idx })
	for _, d := range call.conflicts {
		conflicts = append(conflicts, d.m.GetMessageId())
	}
	return call.inserted, call.duplicates, conflicts, nil
}

// startLocked takes the queued documents of the commands to start now: full
// chunks while fewer than max commands run, and a part chunk only once it
// has lingered (flush) or when there is no linger. A part chunk arms the
// linger timer instead, so that the calls arriving meanwhile (the other
// partitions of the same fetch) share its command.
func (in *inserter) startLocked(flush bool) []command {
	var start []command
	for in.running < in.max && len(in.queue) > 0 {
		if len(in.queue) < in.s.chunkSize && !flush && in.linger > 0 {
			if in.timer == nil {
				in.timer = time.AfterFunc(in.linger, in.flush)
			}
			break
		}
		start = append(start, in.takeLocked())
		in.running++
	}
	return start
}

// flush starts the commands of the documents that lingered.
func (in *inserter) flush() {
	in.mu.Lock()
	in.timer = nil
	start := in.startLocked(true)
	in.mu.Unlock()
	for _, chunk := range start {
		go in.run(chunk)
	}
}

// takeLocked removes the next command's documents from the queue: messages
// and the block markers they need, at most chunkSize documents in all.
func (in *inserter) takeLocked() command {
	refs := make([]blockRef, min(len(in.queue), in.s.chunkSize))
	for i := range refs {
		m := in.queue[i].m
		refs[i] = blockRef{room: m.GetRoomId(), seq: m.GetSeq()}
	}
	n, markers := in.s.marks.claimFitting(refs, in.s.chunkSize)
	chunk := command{docs: slices.Clone(in.queue[:n]), markers: markers}
	clear(in.queue[:n])
	in.queue = in.queue[n:]
	if len(in.queue) == 0 {
		in.queue = nil
	}
	return chunk
}

// run writes chunk, then whatever has queued meanwhile, until the queue is
// empty.
func (in *inserter) run(chunk command) {
	for {
		in.write(chunk)
		in.mu.Lock()
		if len(in.queue) == 0 {
			in.running--
			in.mu.Unlock()
			return
		}
		chunk = in.takeLocked()
		in.mu.Unlock()
	}
}

// write runs one insert command and hands each document's outcome to its
// call.
func (in *inserter) write(chunk command) {
	ctx, cancel := context.WithTimeout(context.Background(), insertTimeout)
	defer cancel()
	msgs := make([]*parleyv1.Message, len(chunk.docs))
	for i, d := range chunk.docs {
		msgs[i] = d.m
	}
	outcomes, err := in.s.insertChunk(ctx, msgs, chunk.markers)
	for i, d := range chunk.docs {
		c := d.call
		c.mu.Lock()
		switch {
		case err != nil:
			if c.err == nil {
				c.err = err
			}
		case outcomes[i] == outInserted:
			c.inserted++
		case outcomes[i] == outDuplicate:
			c.duplicates++
		default:
			c.conflicts = append(c.conflicts, d)
		}
		c.left--
		if c.left == 0 {
			close(c.done)
		}
		c.mu.Unlock()
	}
}
