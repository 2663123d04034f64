// Package store keeps Parley's accounts and rooms in a MongoDB-protocol
// database (MongoDB, or FerretDB here): users, refresh tokens, rooms and
// memberships. Messages live in internal/msgstore, written by the persister.
//
// Only features that both MongoDB and FerretDB v1 support are used: no
// transactions, no partial or TTL indexes. Writes that must be idempotent use
// natural _ids (a membership is "<room_id>/<user_id>", a direct room is derived
// from the two user ids) so retries cannot create copies.
package store
