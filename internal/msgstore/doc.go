// Package msgstore is the MongoDB "messages" collection: the durable copy of
// every chat message, written by the persister and read by the server for
// history (ListMessages) and reconnect replay.
//
// # Documents
//
// One document per message:
//
//	{_id: message_id, room_id, blk, epoch, seq, sender_id, sender_username,
//	 client_msg_id, body, create_time}
//
// _id = message_id makes writes idempotent: a redelivered Kafka record inserts
// a document whose _id already exists, which the store counts as a duplicate
// ("already stored"), never as a second copy. The unique index on
// {room_id: 1, seq: 1} makes a second message at the same room position
// impossible. create_time is stored as a BSON date, so it comes back with
// millisecond precision.
//
// History reads go by block: blk names the message's block of 64 positions,
// and marker documents in the same collection (room_id = _id, seq 0,
// usually written in the insert command of a block's first messages) list a
// room's blocks. A page reads the blocks
// it crosses by equality on blk, so on FerretDB 1.x, which pushes only
// equality filters down, a page costs about the same in a room of a
// thousand messages as in one of a hundred thousand (blocks.go has the
// layout and the figures). EnsureIndexes gives messages stored before this
// layout their blk, once; stop every older persister before the first
// process of this version starts, since a message one writes afterwards has
// no blk and no history read finds it. Room and message ids may not start
// with "~", the markers' prefix. Code that reads the whole collection
// selects messages with {seq: {$gt: 0}}.
//
// # Compatibility
//
// Only features that both MongoDB and FerretDB v1.x (on PostgreSQL or SQLite)
// implement are used: unique compound and single-field indexes, unordered
// insertMany, finds by equality (and, once, by $exists), countDocuments. Inserts are split into commands of up
// to Options.ChunkSize documents (FerretDB's own batch of 100 by default: one
// SQL INSERT each). Concurrent InsertMessages calls share those commands
// (group commit, Options.MaxInFlight at once, Options.Linger to gather the
// calls of one moment): on FerretDB a command costs far more than its
// documents.
//
// A Store is safe for concurrent use; it does not own the *mongo.Database and
// never disconnects its client.
package msgstore
