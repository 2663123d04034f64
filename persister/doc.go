// Package persister is the Kafka consumer group that makes chat messages
// durable: it reads parley.events.v1.MessageRecord records from the
// "parley.messages" topic and writes their messages to the store (MongoDB's
// messages collection through internal/msgstore), then commits the offsets.
//
// # Delivery
//
// A Persister is one member of a consumer group. It runs one goroutine per
// assigned partition (franz-go's goroutine-per-partition pattern with
// BlockRebalanceOnPoll and AutoCommitMarks). A partition worker takes up to
// Config.MaxBatch records, writes their messages with one Writer call, and
// only then marks the records for commit; the client commits marked offsets
// every few seconds, when a partition is revoked, and when Run returns.
// Delivery is therefore at least once, and the Writer makes it effectively
// exactly once: a message's store id is its message_id, so a redelivered
// record is a duplicate, not a second copy. Records of one partition (and so
// of one room, the record key) reach the Writer in offset order.
//
// A failed write is retried with exponential backoff until it succeeds; only
// that partition waits (its fetching is paused once its queue is full), the
// other partitions go on.
//
// # Dead letters
//
// A record that can never be written is produced synchronously to the DLQ
// topic ("parley.messages.dlq") with its original key, value and headers plus
// the headers
//
//	reason              undecodable | invalid | seq_conflict
//	detail              a human-readable explanation
//	original_topic      the topic it was read from
//	original_partition  decimal partition
//	original_offset     decimal offset
//
// and then committed like any other record. "undecodable": the value is not a
// MessageRecord; "invalid": the message is missing or lacks message_id,
// room_id or a positive seq; "seq_conflict": the Writer reported that another
// message already holds the (room_id, seq) position. A record may reach the
// DLQ more than once if the persister dies between the DLQ produce and the
// commit.
//
// # Shutdown
//
// Run returns when its context is cancelled: it stops polling, lets every
// partition worker finish the batch it is writing (each Writer call is
// bounded by Config.WriteTimeout), commits what was written, leaves the group
// and closes its Kafka clients. Records fetched but not written are
// redelivered to whichever member owns the partition next.
package persister
