package fanout

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// Presence is kept per room in a sorted set of "<user_id>/<stream_id>"
// members scored by their expiry (unix ms). A stream refreshes its entries
// while it lives, so a crashed instance's users expire on their own. A user
// is online in a room while any of their entries is unexpired; the scripts
// below publish a PresenceEvent exactly when that changes.

// presenceJoinScript: KEYS = online zset; ARGV = member, user prefix, now ms,
// expiry ms, channel, online event. Publishes the event if the user had no
// live entry before. Returns 1 if it published.
const presenceJoinScript = `
local live = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[3], '+inf')
local was = false
for _, m in ipairs(live) do
  if m ~= ARGV[1] and string.sub(m, 1, #ARGV[2]) == ARGV[2] then was = true break end
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('PEXPIRE', KEYS[1], 86400000)
if not was then redis.call('PUBLISH', ARGV[5], ARGV[6]) return 1 end
return 0
`

// presenceLeaveScript: KEYS = online zset; ARGV = member, user prefix, now
// ms, channel, offline event. Publishes the event if that was the user's last
// live entry. Returns 1 if it published.
const presenceLeaveScript = `
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local live = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[3], '+inf')
for _, m in ipairs(live) do
  if string.sub(m, 1, #ARGV[2]) == ARGV[2] then return 0 end
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
`

func (b *Redis) onlineKey(roomID string) string { return b.opts.Prefix + "{" + roomID + "}:online" }

func (b *Redis) presenceEvent(roomID, userID, username string, online bool) (string, error) {
	ev, err := proto.Marshal(&eventsv1.RoomEvent{Event: &eventsv1.RoomEvent_Presence{Presence: &parleyv1.PresenceEvent{
		RoomId: roomID, UserId: userID, Username: username, Online: online}}})
	return string(ev), err
}

// PresenceJoin marks a stream of user as present in room until ttl from now,
// publishing an online event if the user was not present before.
func (b *Redis) PresenceJoin(ctx context.Context, roomID, userID, username, streamID string, ttl time.Duration) (err error) {
	defer func(start time.Time) { b.observe("presence_join", start, err) }(time.Now())
	ev, err := b.presenceEvent(roomID, userID, username, true)
	if err != nil {
		return err
	}
	now := time.Now()
	return b.presenceJoin.Exec(ctx, b.client, []string{b.onlineKey(roomID)}, []string{
		PresenceEntry(userID, streamID), userID + "/", ms(now), ms(now.Add(ttl)), b.Channel(roomID), ev}).Error()
}

// PresenceRefresh extends the entries of streams in rooms (no events):
// members maps a room to its "<user>/<stream>" entries. Entries that are no
// longer there (the stream left, or a sweep removed it) are not re-created.
func (b *Redis) PresenceRefresh(ctx context.Context, members map[string][]string, ttl time.Duration) (err error) {
	defer func(start time.Time) { b.observe("presence_refresh", start, err) }(time.Now())
	exp := float64(time.Now().Add(ttl).UnixMilli())
	const chunk = 500 // entries per ZADD
	cmds := make(rueidis.Commands, 0, len(members))
	for room, entries := range members {
		for len(entries) > 0 {
			n := min(len(entries), chunk)
			c := b.client.B().Zadd().Key(b.onlineKey(room)).Xx().ScoreMember()
			for _, e := range entries[:n] {
				c = c.ScoreMember(exp, e)
			}
			cmds = append(cmds, c.Build())
			entries = entries[n:]
		}
	}
	for _, res := range b.client.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil {
			return err
		}
	}
	return nil
}

// PresenceEntry is the presence set member of a user's stream.
func PresenceEntry(userID, streamID string) string { return userID + "/" + streamID }

// PresenceLeave removes a stream's entry, publishing an offline event if it
// was the user's last.
func (b *Redis) PresenceLeave(ctx context.Context, roomID, userID, username, streamID string) (err error) {
	defer func(start time.Time) { b.observe("presence_leave", start, err) }(time.Now())
	ev, err := b.presenceEvent(roomID, userID, username, false)
	if err != nil {
		return err
	}
	return b.presenceLeave.Exec(ctx, b.client, []string{b.onlineKey(roomID)}, []string{
		PresenceEntry(userID, streamID), userID + "/", ms(time.Now()), b.Channel(roomID), ev}).Error()
}

// PresenceSweep removes expired entries of room (streams of a crashed
// instance) and publishes offline events for users left with none.
func (b *Redis) PresenceSweep(ctx context.Context, roomID string) (err error) {
	defer func(start time.Time) { b.observe("presence_sweep", start, err) }(time.Now())
	now := ms(time.Now())
	expired, err := b.client.Do(ctx, b.client.B().Zrangebyscore().Key(b.onlineKey(roomID)).Min("-inf").Max("("+now).Build()).AsStrSlice()
	if err != nil || len(expired) == 0 {
		return err
	}
	for _, m := range expired {
		userID, streamID, ok := strings.Cut(m, "/")
		if !ok {
			continue
		}
		// Leave publishes offline only if no live entry of the user remains.
		if err := b.PresenceLeave(ctx, roomID, userID, "", streamID); err != nil {
			return err
		}
	}
	return nil
}

// Online returns the users with a live entry in room.
func (b *Redis) Online(ctx context.Context, roomID string) (users map[string]bool, err error) {
	defer func(start time.Time) { b.observe("presence_online", start, err) }(time.Now())
	live, err := b.client.Do(ctx, b.client.B().Zrangebyscore().Key(b.onlineKey(roomID)).Min(ms(time.Now())).Max("+inf").Build()).AsStrSlice()
	if err != nil {
		return nil, fmt.Errorf("redis presence: %w", err)
	}
	users = make(map[string]bool, len(live))
	for _, m := range live {
		if u, _, ok := strings.Cut(m, "/"); ok {
			users[u] = true
		}
	}
	return users, nil
}

// PublishEvent publishes an ephemeral event (typing, read marker) on the
// room's channel; it is not stored anywhere.
func (b *Redis) PublishEvent(ctx context.Context, roomID string, ev *eventsv1.RoomEvent) (err error) {
	defer func(start time.Time) { b.observe("publish_event", start, err) }(time.Now())
	raw, err := proto.Marshal(ev)
	if err != nil {
		return err
	}
	return b.client.Do(ctx, b.client.B().Publish().Channel(b.Channel(roomID)).Message(string(raw)).Build()).Error()
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }
