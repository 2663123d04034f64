// Package chat implements ChatService: the send path (validate, check
// membership, rate-limit, assign a position and publish through the broker,
// append to the Kafka log, acknowledge once durable), stream sessions with
// resume, and history.
//
// A stream session has one reader (the RPC's handler goroutine, which only
// decodes, checks and queues client frames, in order), a worker that runs
// the frames that talk to backends (sends, typing, read markers) and a
// writer that owns everything sent to the client. The worker and the writer
// are goroutines that exist only while they have work, so an idle stream
// costs one goroutine with a shallow 8 KiB stack; the session ends its
// stream itself through the transport stream's WriteStatus (see
// statusWriter). Live events, acknowledgements and subscription work all
// pass through one bounded queue to the writer, which keeps per-room
// positions so a message is sent at most once and in seq order, whether it
// came from replay or live. A client that does not read fills its queue and
// is disconnected with ResourceExhausted; it resumes from its last position
// and loses nothing.
package chat
