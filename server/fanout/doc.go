// Package fanout moves room events between server instances through Redis.
//
// Redis assigns every message its room position in one Lua script that also
// remembers the sender's client_msg_id, appends to the room's capped recent
// cache and PUBLISHes, so live order equals seq order and a retried send finds
// the first message. Every instance holds ONE pattern subscription
// (`PSUBSCRIBE <prefix>room:*`) and its Hub dispatches each event to the local
// subscribers of that room without blocking (a slow subscriber must not stall
// the subscription: Redis disconnects slow pub/sub clients).
//
// When the subscription drops, the instance reports not ready, resubscribes
// with backoff, and then asks every local subscriber to catch up (Resync),
// because events published meanwhile were missed.
package fanout
