package chat

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/apierr"
	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/fanout"
	"github.com/parleychat/parley/server/rooms"
)

// Presence timing: a stream refreshes its presence entries every
// presenceRefresh; an entry not refreshed for presenceTTL (a crashed
// instance) expires and is swept by any instance with subscribers of the room.
const (
	presenceTTL     = 90 * time.Second
	presenceRefresh = 30 * time.Second
	typingTTL       = 5 * time.Second
	maxUnread       = 1000
)

// Run keeps this instance's presence entries alive and sweeps expired ones
// (left by crashed instances) of the rooms it serves, until ctx is done.
// One loop refreshes every local stream, in a few pipelined Redis calls, so
// an idle stream costs no timer and no call of its own.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(presenceRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		sessions := s.openSessions()
		for _, ss := range sessions {
			ss.trimIdle()
		}
		if members := presenceEntries(sessions); len(members) > 0 {
			if err := s.broker.PresenceRefresh(ctx, members, presenceTTL); err != nil && ctx.Err() == nil {
				s.logger.Warn("presence refresh failed", "rooms", len(members), "err", err)
			}
		}
		for _, room := range s.hub.Rooms() {
			if err := s.broker.PresenceSweep(ctx, room); err != nil && ctx.Err() == nil {
				s.logger.Warn("presence sweep failed", "room", room, "err", err)
			}
		}
	}
}

// typing publishes a TypingEvent for a member of room.
func (s *Service) typing(ctx context.Context, me auth.Identity, roomID string) error {
	if err := s.checkMember(ctx, roomID, me.UserID); err != nil {
		return err
	}
	return s.broker.PublishEvent(ctx, roomID, &eventsv1.RoomEvent{Event: &eventsv1.RoomEvent_Typing{Typing: &parleyv1.TypingEvent{
		RoomId: roomID, UserId: me.UserID, Username: me.Username, ExpireTime: timestamppb.New(time.Now().Add(typingTTL))}}})
}

// markRead moves the caller's read marker and tells their other streams.
func (s *Service) markRead(ctx context.Context, me auth.Identity, req *parleyv1.MarkReadRequest) (*parleyv1.ReadMarker, error) {
	if err := rooms.ValidateRoomID("room_id", req.GetRoomId()); err != nil {
		return nil, err
	}
	pos := req.GetPosition()
	if pos == nil || pos.Seq <= 0 {
		return nil, apierr.Invalid("position.seq", "must be positive")
	}
	if err := s.checkMember(ctx, req.GetRoomId(), me.UserID); err != nil {
		return nil, err
	}
	epoch, head, err := s.head(ctx, req.GetRoomId())
	if err != nil {
		return nil, err
	}
	if pos.Epoch != epoch {
		return nil, apierr.Invalid("position.epoch", "is not the room's current epoch %q; reload the room", epoch)
	}
	if pos.Seq > head {
		return nil, apierr.Invalid("position.seq", "%d is past the room's newest message %d", pos.Seq, head)
	}
	moved, err := s.rooms.SetReadMarker(ctx, req.GetRoomId(), me.UserID, epoch, pos.Seq)
	if err != nil {
		return nil, err
	}
	marker := &parleyv1.ReadMarker{RoomId: req.GetRoomId(), UserId: me.UserID, Position: &parleyv1.RoomPosition{Epoch: epoch, Seq: pos.Seq}}
	if moved {
		if err := s.broker.PublishEvent(ctx, req.GetRoomId(), &eventsv1.RoomEvent{Event: &eventsv1.RoomEvent_ReadMarker{ReadMarker: marker}}); err != nil {
			s.logger.WarnContext(ctx, "read marker event not published", "room", req.GetRoomId(), "err", err)
		}
	}
	return marker, nil
}

// MarkRead implements parleyv1.ChatServiceServer.
func (s *Service) MarkRead(ctx context.Context, req *parleyv1.MarkReadRequest) (*parleyv1.MarkReadResponse, error) {
	me, err := auth.MustFromContext(ctx)
	if err != nil {
		return nil, err
	}
	m, err := s.markRead(ctx, me, req)
	if err != nil {
		return nil, err
	}
	return &parleyv1.MarkReadResponse{ReadMarker: m}, nil
}

// ListRoomStates implements parleyv1.ChatServiceServer.
func (s *Service) ListRoomStates(ctx context.Context, req *parleyv1.ListRoomStatesRequest) (*parleyv1.ListRoomStatesResponse, error) {
	me, err := auth.MustFromContext(ctx)
	if err != nil {
		return nil, err
	}
	ids := req.GetRoomIds()
	if len(ids) > 200 {
		return nil, apierr.Invalid("room_ids", "at most 200 rooms per call, got %d", len(ids))
	}
	if len(ids) == 0 {
		rs, err := s.rooms.RoomsOfUser(ctx, me.UserID, "", 200)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			ids = append(ids, r.ID)
		}
	} else {
		for i, id := range ids {
			if err := s.checkMember(ctx, id, me.UserID); err != nil {
				return nil, fmt.Errorf("room_ids[%d]: %w", i, err)
			}
		}
	}
	markers, err := s.rooms.ReadMarkers(ctx, me.UserID, ids)
	if err != nil {
		return nil, err
	}
	resp := &parleyv1.ListRoomStatesResponse{}
	for _, id := range ids {
		st, err := s.roomState(ctx, id, markers[id].Epoch, markers[id].Seq)
		if err != nil {
			return nil, err
		}
		resp.States = append(resp.States, st)
	}
	return resp, nil
}

// roomState computes one room's state for a reader at (readEpoch, readSeq).
func (s *Service) roomState(ctx context.Context, roomID, readEpoch string, readSeq int64) (*parleyv1.RoomState, error) {
	epoch, head, err := s.head(ctx, roomID)
	if err != nil {
		return nil, err
	}
	st := &parleyv1.RoomState{
		RoomId:   roomID,
		Head:     &parleyv1.RoomPosition{Epoch: epoch, Seq: head},
		LastRead: &parleyv1.RoomPosition{Epoch: readEpoch, Seq: readSeq},
	}
	if readEpoch == epoch {
		// Positions of one epoch: the difference (withdrawn sends can make it
		// overcount by the few that failed).
		st.UnreadCount = min(max(head-readSeq, 0), maxUnread)
	} else {
		// Never read, or read in an earlier epoch: count what the recent cache
		// (and, past it, the store) holds after the read position.
		recent, all, err := s.broker.Recent(ctx, roomID)
		if err != nil {
			return nil, fmt.Errorf("room state: %w: %v", apierr.ErrUnavailable, err)
		}
		for _, m := range recent {
			if m.Seq > readSeq {
				st.UnreadCount++
			}
		}
		if !all {
			st.UnreadCount = maxUnread
		}
		st.UnreadCount = min(st.UnreadCount, maxUnread)
	}
	last, err := s.broker.Newest(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("room state: %w: %v", apierr.ErrUnavailable, err)
	}
	if last == nil {
		if page, err := s.history.List(ctx, roomID, 0, 0, 1); err == nil && len(page) == 1 {
			last = page[0]
		}
	}
	st.LastMessage = last
	return st, nil
}

// presenceEntries returns, per room, the presence entries of sessions'
// streams.
func presenceEntries(sessions []*session) map[string][]string {
	members := make(map[string][]string)
	for _, ss := range sessions {
		entry := fanout.PresenceEntry(ss.me.UserID, ss.id)
		ss.mu.Lock()
		for room := range ss.rooms {
			members[room] = append(members[room], entry)
		}
		ss.mu.Unlock()
	}
	return members
}
