// Package rooms implements RoomService: creating rooms, joining and leaving,
// members, and direct rooms between two users.
package rooms

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/apierr"
	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/pagetoken"
	"github.com/parleychat/parley/server/store"
)

// Store is what Service needs from the room store.
type Store interface {
	CreateRoom(ctx context.Context, r store.Room) error
	Room(ctx context.Context, id string) (store.Room, error)
	AddMember(ctx context.Context, roomID, userID string, at time.Time) (store.Member, error)
	RemoveMember(ctx context.Context, roomID, userID string) error
	IsMember(ctx context.Context, roomID, userID string) (bool, error)
	RoomsOfUser(ctx context.Context, userID, afterID string, limit int) ([]store.Room, error)
	PublicRooms(ctx context.Context, afterID string, limit int) ([]store.Room, error)
	Members(ctx context.Context, roomID, afterUserID string, limit int) ([]store.Member, error)
	UserByUsername(ctx context.Context, username string) (store.User, error)
	UsersByID(ctx context.Context, ids []string) (map[string]store.User, error)
}

// Sequencer starts a new room's message sequence (epoch + seq counter).
type Sequencer interface {
	InitRoom(ctx context.Context, roomID string, seed int64) (epoch string, err error)
}

// Presence tells which users are online in a room.
type Presence interface {
	Online(ctx context.Context, roomID string) (map[string]bool, error)
}

// Service implements parleyv1.RoomServiceServer.
type Service struct {
	parleyv1.UnimplementedRoomServiceServer
	store    Store
	seq      Sequencer
	presence Presence
	// OnLeave, when set, is called after a user left a room (the chat
	// service forgets its cached membership).
	OnLeave func(roomID, userID string)
}

// NewService returns the RoomService.
func NewService(s Store, seq Sequencer, p Presence) *Service {
	return &Service{store: s, seq: seq, presence: p}
}

// RoomProto is the API view of r.
func RoomProto(r store.Room) *parleyv1.Room {
	return &parleyv1.Room{
		RoomId: r.ID, Name: r.Name, Topic: r.Topic, Visibility: visibilityProto(r.Visibility),
		CreatorId: r.CreatorID, CreateTime: timestamppb.New(r.CreateTime),
	}
}

func visibilityProto(v string) parleyv1.RoomVisibility {
	switch v {
	case store.VisibilityPrivate:
		return parleyv1.RoomVisibility_ROOM_VISIBILITY_PRIVATE
	case store.VisibilityDirect:
		return parleyv1.RoomVisibility_ROOM_VISIBILITY_DIRECT
	}
	return parleyv1.RoomVisibility_ROOM_VISIBILITY_PUBLIC
}

// ValidateRoomID checks the shape of a room id in field.
func ValidateRoomID(field, id string) error {
	if id == "" {
		return apierr.Invalid(field, "is required")
	}
	if len(id) > 128 || !utf8.ValidString(id) || strings.ContainsAny(id, "*?[]{}/ \t\r\n\x00") {
		return apierr.Invalid(field, "is not a valid room id")
	}
	return nil
}

// CreateRoom implements parleyv1.RoomServiceServer.
func (s *Service) CreateRoom(ctx context.Context, req *parleyv1.CreateRoomRequest) (*parleyv1.CreateRoomResponse, error) {
	me, err := auth.MustFromContext(ctx)
	if err != nil {
		return nil, err
	}
	name := strings.TrimSpace(req.GetName())
	if n := utf8.RuneCountInString(name); n == 0 || n > 100 || !utf8.ValidString(name) || strings.ContainsRune(name, 0) {
		return nil, apierr.Invalid("name", "must be 1-100 characters of valid UTF-8 without NUL")
	}
	topic := strings.TrimSpace(req.GetTopic())
	if utf8.RuneCountInString(topic) > 500 || !utf8.ValidString(topic) || strings.ContainsRune(topic, 0) {
		return nil, apierr.Invalid("topic", "must be at most 500 characters of valid UTF-8 without NUL")
	}
	vis := store.VisibilityPublic
	switch req.GetVisibility() {
	case parleyv1.RoomVisibility_ROOM_VISIBILITY_UNSPECIFIED, parleyv1.RoomVisibility_ROOM_VISIBILITY_PUBLIC:
	case parleyv1.RoomVisibility_ROOM_VISIBILITY_PRIVATE:
		vis = store.VisibilityPrivate
	default:
		return nil, apierr.Invalid("visibility", "must be PUBLIC or PRIVATE (direct rooms come from CreateDirectRoom)")
	}
	now := time.Now().UTC()
	r := store.Room{ID: ulid.Make().String(), Name: name, Topic: topic, Visibility: vis, CreatorID: me.UserID, CreateTime: now}
	if err := s.create(ctx, r, now, me.UserID); err != nil {
		return nil, err
	}
	return &parleyv1.CreateRoomResponse{Room: RoomProto(r)}, nil
}

// create stores r, starts its sequence and adds the members.
func (s *Service) create(ctx context.Context, r store.Room, now time.Time, members ...string) error {
	if _, err := s.seq.InitRoom(ctx, r.ID, 0); err != nil {
		return err
	}
	if err := s.store.CreateRoom(ctx, r); err != nil {
		return err
	}
	for _, m := range members {
		if _, err := s.store.AddMember(ctx, r.ID, m, now); err != nil {
			return err
		}
	}
	return nil
}

// visible returns the room if the caller may see it (public, or a member).
// Private rooms are NotFound to non-members so their existence does not leak.
func (s *Service) visible(ctx context.Context, roomID, userID string) (store.Room, bool, error) {
	if err := ValidateRoomID("room_id", roomID); err != nil {
		return store.Room{}, false, err
	}
	r, err := s.store.Room(ctx, roomID)
	if err != nil {
		return store.Room{}, false, withRoom(roomID, err)
	}
	member, err := s.store.IsMember(ctx, roomID, userID)
	if err != nil {
		return store.Room{}, false, err
	}
	if !member && r.Visibility != store.VisibilityPublic {
		return store.Room{}, false, withRoom(roomID, apierr.ErrRoomNotFound)
	}
	return r, member, nil
}

func withRoom(roomID string, err error) error {
	if errors.Is(err, apierr.ErrRoomNotFound) {
		return fmt.Errorf("room %q: %w", roomID, apierr.ErrRoomNotFound)
	}
	return err
}

// GetRoom implements parleyv1.RoomServiceServer.
func (s *Service) GetRoom(ctx context.Context, req *parleyv1.GetRoomRequest) (*parleyv1.GetRoomResponse, error) {
	me, err := auth.MustFromContext(ctx)
	if err != nil {
		return nil, err
	}
	r, _, err := s.visible(ctx, req.GetRoomId(), me.UserID)
	if err != nil {
		return nil, err
	}
	return &parleyv1.GetRoomResponse{Room: RoomProto(r)}, nil
}

// ListRooms implements parleyv1.RoomServiceServer.
func (s *Service) ListRooms(ctx context.Context, req *parleyv1.ListRoomsRequest) (*parleyv1.ListRoomsResponse, error) {
	me, err := auth.MustFromContext(ctx)
	if err != nil {
		return nil, err
	}
	size, err := pagetoken.PageSize(req.GetPageSize(), 50, 100)
	if err != nil {
		return nil, err
	}
	filter := req.GetFilter()
	if filter == parleyv1.RoomFilter_ROOM_FILTER_UNSPECIFIED {
		filter = parleyv1.RoomFilter_ROOM_FILTER_JOINED
	}
	if _, ok := parleyv1.RoomFilter_name[int32(filter)]; !ok {
		return nil, apierr.Invalid("filter", "unknown filter %d", filter)
	}
	tok, err := pagetoken.Decode(req.GetPageToken(), "rooms:"+filter.String())
	if err != nil {
		return nil, err
	}
	var rooms []store.Room
	if filter == parleyv1.RoomFilter_ROOM_FILTER_PUBLIC {
		rooms, err = s.store.PublicRooms(ctx, tok.After, size+1)
	} else {
		rooms, err = s.store.RoomsOfUser(ctx, me.UserID, tok.After, size+1)
	}
	if err != nil {
		return nil, err
	}
	resp := &parleyv1.ListRoomsResponse{}
	if len(rooms) > size {
		rooms = rooms[:size]
		resp.NextPageToken = pagetoken.Encode(pagetoken.Token{Query: tok.Query, After: rooms[size-1].ID})
	}
	for _, r := range rooms {
		resp.Rooms = append(resp.Rooms, RoomProto(r))
	}
	return resp, nil
}

// JoinRoom implements parleyv1.RoomServiceServer.
func (s *Service) JoinRoom(ctx context.Context, req *parleyv1.JoinRoomRequest) (*parleyv1.JoinRoomResponse, error) {
	me, err := auth.MustFromContext(ctx)
	if err != nil {
		return nil, err
	}
	r, member, err := s.visible(ctx, req.GetRoomId(), me.UserID)
	if err != nil {
		return nil, err
	}
	if !member {
		if _, err := s.store.AddMember(ctx, r.ID, me.UserID, time.Now().UTC()); err != nil {
			return nil, err
		}
	}
	return &parleyv1.JoinRoomResponse{Room: RoomProto(r)}, nil
}

// LeaveRoom implements parleyv1.RoomServiceServer.
func (s *Service) LeaveRoom(ctx context.Context, req *parleyv1.LeaveRoomRequest) (*parleyv1.LeaveRoomResponse, error) {
	me, err := auth.MustFromContext(ctx)
	if err != nil {
		return nil, err
	}
	r, member, err := s.visible(ctx, req.GetRoomId(), me.UserID)
	if err != nil {
		return nil, err
	}
	if !member {
		return nil, fmt.Errorf("room %q: %w", r.ID, apierr.ErrNotMember)
	}
	if err := s.store.RemoveMember(ctx, r.ID, me.UserID); err != nil {
		return nil, err
	}
	if s.OnLeave != nil {
		s.OnLeave(r.ID, me.UserID)
	}
	return &parleyv1.LeaveRoomResponse{}, nil
}

// AddMember implements parleyv1.RoomServiceServer.
func (s *Service) AddMember(ctx context.Context, req *parleyv1.AddMemberRequest) (*parleyv1.AddMemberResponse, error) {
	me, err := auth.MustFromContext(ctx)
	if err != nil {
		return nil, err
	}
	username := strings.ToLower(strings.TrimSpace(req.GetUsername()))
	if err := auth.ValidateUsername("username", username); err != nil {
		return nil, err
	}
	r, member, err := s.visible(ctx, req.GetRoomId(), me.UserID)
	if err != nil {
		return nil, err
	}
	if !member {
		return nil, fmt.Errorf("only members can add members to room %q: %w", r.ID, apierr.ErrNotMember)
	}
	if r.Visibility == store.VisibilityDirect {
		return nil, fmt.Errorf("a direct room has exactly two members: %w", apierr.ErrFailedPrecondition)
	}
	u, err := s.store.UserByUsername(ctx, username)
	if err != nil {
		if errors.Is(err, apierr.ErrUserNotFound) {
			return nil, fmt.Errorf("user %q: %w", username, apierr.ErrUserNotFound)
		}
		return nil, err
	}
	m, err := s.store.AddMember(ctx, r.ID, u.ID, time.Now().UTC())
	if err != nil {
		return nil, err
	}
	return &parleyv1.AddMemberResponse{Member: &parleyv1.Member{User: auth.UserProto(u), JoinTime: timestamppb.New(m.JoinTime)}}, nil
}

// ListMembers implements parleyv1.RoomServiceServer.
func (s *Service) ListMembers(ctx context.Context, req *parleyv1.ListMembersRequest) (*parleyv1.ListMembersResponse, error) {
	me, err := auth.MustFromContext(ctx)
	if err != nil {
		return nil, err
	}
	size, err := pagetoken.PageSize(req.GetPageSize(), 100, 500)
	if err != nil {
		return nil, err
	}
	r, _, err := s.visible(ctx, req.GetRoomId(), me.UserID)
	if err != nil {
		return nil, err
	}
	tok, err := pagetoken.Decode(req.GetPageToken(), "members:"+r.ID)
	if err != nil {
		return nil, err
	}
	ms, err := s.store.Members(ctx, r.ID, tok.After, size+1)
	if err != nil {
		return nil, err
	}
	resp := &parleyv1.ListMembersResponse{}
	if len(ms) > size {
		ms = ms[:size]
		resp.NextPageToken = pagetoken.Encode(pagetoken.Token{Query: tok.Query, After: ms[size-1].UserID})
	}
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.UserID
	}
	users, err := s.store.UsersByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	online, err := s.presence.Online(ctx, r.ID)
	if err != nil {
		return nil, fmt.Errorf("presence: %w: %v", apierr.ErrUnavailable, err)
	}
	for _, m := range ms {
		u, ok := users[m.UserID]
		if !ok {
			continue
		}
		resp.Members = append(resp.Members, &parleyv1.Member{User: auth.UserProto(u), JoinTime: timestamppb.New(m.JoinTime), Online: online[m.UserID]})
	}
	return resp, nil
}

// DirectRoomID is the id of the direct room between two users: the same for
// either order, so creating it twice finds the first.
func DirectRoomID(a, b string) string {
	ids := []string{a, b}
	sort.Strings(ids)
	return "dm_" + ids[0] + "_" + ids[1]
}

// CreateDirectRoom implements parleyv1.RoomServiceServer.
func (s *Service) CreateDirectRoom(ctx context.Context, req *parleyv1.CreateDirectRoomRequest) (*parleyv1.CreateDirectRoomResponse, error) {
	me, err := auth.MustFromContext(ctx)
	if err != nil {
		return nil, err
	}
	username := strings.ToLower(strings.TrimSpace(req.GetUsername()))
	if err := auth.ValidateUsername("username", username); err != nil {
		return nil, err
	}
	other, err := s.store.UserByUsername(ctx, username)
	if err != nil {
		if errors.Is(err, apierr.ErrUserNotFound) {
			return nil, fmt.Errorf("user %q: %w", username, apierr.ErrUserNotFound)
		}
		return nil, err
	}
	if other.ID == me.UserID {
		return nil, apierr.Invalid("username", "a direct room needs another user")
	}
	id := DirectRoomID(me.UserID, other.ID)
	if r, err := s.store.Room(ctx, id); err == nil {
		// Found: make sure both are (still) members, e.g. after a partial create.
		now := time.Now().UTC()
		for _, u := range []string{me.UserID, other.ID} {
			if _, err := s.store.AddMember(ctx, id, u, now); err != nil {
				return nil, err
			}
		}
		return &parleyv1.CreateDirectRoomResponse{Room: RoomProto(r)}, nil
	} else if !errors.Is(err, apierr.ErrRoomNotFound) {
		return nil, err
	}
	now := time.Now().UTC()
	r := store.Room{ID: id, Name: me.Username + ", " + other.Username, Visibility: store.VisibilityDirect, CreatorID: me.UserID, CreateTime: now}
	if err := s.create(ctx, r, now, me.UserID, other.ID); err != nil {
		if errors.Is(err, apierr.ErrAlreadyMember) { // created concurrently by the other user
			r, err = s.store.Room(ctx, id)
			if err != nil {
				return nil, err
			}
			return &parleyv1.CreateDirectRoomResponse{Room: RoomProto(r)}, nil
		}
		return nil, err
	}
	return &parleyv1.CreateDirectRoomResponse{Room: RoomProto(r)}, nil
}
