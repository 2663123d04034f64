package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/errgroup"

	"github.com/parleychat/parley/internal/ferretpg"
	"github.com/parleychat/parley/server/apierr"
)

// User is a stored account.
type User struct {
	ID           string    `bson:"_id"`
	Username     string    `bson:"username"`
	DisplayName  string    `bson:"display_name"`
	PasswordHash string    `bson:"password_hash"`
	CreateTime   time.Time `bson:"create_time"`
}

// RefreshToken is a stored refresh token (by hash). Tokens of one login form a
// family; rotation marks the old token used.
type RefreshToken struct {
	Hash       string    `bson:"_id"`
	UserID     string    `bson:"user_id"`
	FamilyID   string    `bson:"family_id"`
	ExpireTime time.Time `bson:"expire_time"`
	Used       bool      `bson:"used"`
	Revoked    bool      `bson:"revoked"`
}

// Room visibility values as stored.
const (
	VisibilityPublic  = "public"
	VisibilityPrivate = "private"
	VisibilityDirect  = "direct"
)

// Room is a stored room.
type Room struct {
	ID         string    `bson:"_id"`
	Name       string    `bson:"name"`
	Topic      string    `bson:"topic"`
	Visibility string    `bson:"visibility"`
	CreatorID  string    `bson:"creator_id"`
	CreateTime time.Time `bson:"create_time"`
}

// Member is a stored membership.
type Member struct {
	ID       string    `bson:"_id"`
	RoomID   string    `bson:"room_id"`
	UserID   string    `bson:"user_id"`
	JoinTime time.Time `bson:"join_time"`
}

// MemberID is the _id of user's membership of room.
func MemberID(roomID, userID string) string { return roomID + "/" + userID }

// Store is safe for concurrent use.
type Store struct {
	users, tokens, rooms, members *mongo.Collection
	pointLookups                  atomic.Bool           // see UsePointLookups
	pager                         atomic.Pointer[Pager] // see UsePager
}

// Pager reads the keys of a page of a collection in one of the orders
// Lookups names, and counts the documents a page is taken from, outside the
// MongoDB API (ferretpg.Pager).
type Pager interface {
	Page(ctx context.Context, q ferretpg.Page) ([]string, error)
	Count(ctx context.Context, q ferretpg.Page, upTo int) (int, error)
}

// pagerSetFactor: a page is read through the Pager when the documents it is
// taken from (every public room, every member of the room, every room of
// the user) are more than this many times the page. The store's query reads
// and sorts all of them, 26-44 µs each on FerretDB; the Pager reads the
// page's documents by _id, about 0.4 ms each with 4 at once (20 users in
// 7.6 ms in BenchmarkUsersByID), after a count and the keys (BenchmarkPages).
const pagerSetFactor = 10

// The orders the Store pages through (Lookups, UsePager).
var (
	publicRoomsOrder   = ferretpg.Order{Eq: "visibility", By: "_id"}
	membersOfRoomOrder = ferretpg.Order{Eq: "room_id", By: "user_id"}
	roomsOfUserOrder   = ferretpg.Order{Eq: "user_id", By: "room_id"}
)

// pointLookupConcurrency bounds the equality queries of one point lookup
// read in flight at once.
const pointLookupConcurrency = 4

// New returns a Store on db. Call EnsureIndexes once at start-up.
func New(db *mongo.Database) *Store {
	return &Store{
		users:   db.Collection("users"),
		tokens:  db.Collection("refresh_tokens"),
		rooms:   db.Collection("rooms"),
		members: db.Collection("members"),
	}
}

// UsePointLookups makes the Store read a set of ids (UsersByID, a user's
// rooms) with one equality query per id, a few at once, instead of one
// {_id: {$in}} query. For FerretDB 1.x once ferretpg's indexes exist (before
// them each of those lookups scans the table too): it does not push $in
// down to SQL, so that one query reads and decodes the whole table (714 ms
// for 20 users among 20,000, against 7.6 ms one by one: BenchmarkUsersByID),
// where each equality is an index lookup. Not for MongoDB.
func (s *Store) UsePointLookups() { s.pointLookups.Store(true) }

// UsePager makes the Store read pages of public rooms, of a room's members
// and of a user's rooms with p: the page's keys from p, then its documents
// by id, one id at a time. For FerretDB 1.x once
// ferretpg's indexes exist: it pushes neither sort nor limit down to SQL, so
// such a page reads, decodes and sorts every public room, every member of
// the room or every room of the user (0.26-0.28 s a first page at 10,000,
// BenchmarkPages), where p reads an index range. Not for MongoDB.
//
// A page is read that way only when the documents it is taken from are more
// than pagerSetFactor times the page (p.Count): below that the query is the
// cheaper. UsePager turns point lookups on too, which its pages need. A nil
// p turns it off.
func (s *Store) UsePager(p Pager) {
	if p == nil {
		s.pager.Store(nil)
		return
	}
	s.pointLookups.Store(true)
	s.pager.Store(&p)
}

// pagerFor returns the Pager to read page q with, or nil when there is none
// or the store's query is the cheaper (see pagerSetFactor; a page of over a
// tenth of ferretpg.MaxPage, which Count counts up to, always is). A count
// that fails leaves the page to the query, which is right either way (the
// Pager's metric counts the failure); only the caller's context ending is an
// error.
func (s *Store) pagerFor(ctx context.Context, q ferretpg.Page) (Pager, error) {
	pp := s.pager.Load()
	if pp == nil {
		return nil, nil
	}
	over := pagerSetFactor * q.Limit
	n, err := (*pp).Count(ctx, q, over+1)
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case err != nil || n <= over:
		return nil, nil
	}
	return *pp, nil
}

// Lookups names the fields each collection is read by with an equality
// filter, and the orders pages are read in through a Pager, for
// ferretpg.Ensure (indexes FerretDB 1.x cannot make itself).
// Left out on purpose: an equality index on rooms.visibility (PublicRooms,
// without a Pager), which two values share, so it would not narrow a scan
// much; and lookups by $in
// ({_id: {$in: ...}}), which FerretDB 1.24 does not push down to SQL at all
// (UsersByID and roomsByID scan their table there unless
// UsePointLookups; ReadMarkers adds its user_id equality, which is
// pushed down).
func (s *Store) Lookups() []ferretpg.Lookup {
	return []ferretpg.Lookup{
		{Collection: s.users.Name(), Fields: []string{"_id", "username"}},
		{Collection: s.tokens.Name(), Fields: []string{"_id", "family_id"}},
		{Collection: s.rooms.Name(), Fields: []string{"_id"}, Orders: []ferretpg.Order{publicRoomsOrder}},
		{Collection: s.members.Name(), Fields: []string{"_id", "room_id", "user_id"}, Orders: []ferretpg.Order{membersOfRoomOrder, roomsOfUserOrder}},
		{Collection: s.readMarkers().Name(), Fields: []string{"_id", "user_id"}},
	}
}

// EnsureIndexes creates the collections and the indexes the queries rely on
// (idempotent).
func (s *Store) EnsureIndexes(ctx context.Context) error {
	idx := []struct {
		c *mongo.Collection
		m mongo.IndexModel
	}{
		{s.users, mongo.IndexModel{Keys: bson.D{{Key: "username", Value: 1}}, Options: options.Index().SetUnique(true).SetName("username_unique")}},
		{s.tokens, mongo.IndexModel{Keys: bson.D{{Key: "family_id", Value: 1}}, Options: options.Index().SetName("family")}},
		{s.rooms, mongo.IndexModel{Keys: bson.D{{Key: "visibility", Value: 1}, {Key: "_id", Value: 1}}, Options: options.Index().SetName("visibility_id")}},
		{s.members, mongo.IndexModel{Keys: bson.D{{Key: "user_id", Value: 1}, {Key: "room_id", Value: 1}}, Options: options.Index().SetName("user_room")}},
		{s.members, mongo.IndexModel{Keys: bson.D{{Key: "room_id", Value: 1}, {Key: "user_id", Value: 1}}, Options: options.Index().SetName("room_user")}},
	}
	for _, i := range idx {
		if _, err := i.c.Indexes().CreateOne(ctx, i.m); err != nil {
			return unavailable("create index on "+i.c.Name(), err)
		}
	}
	// read_markers has no index of its own to create; make it exist now so
	// that its lookups can be indexed at start-up too (ferretpg).
	err := s.members.Database().CreateCollection(ctx, s.readMarkers().Name())
	if err != nil && !isNamespaceExists(err) {
		return unavailable("create collection "+s.readMarkers().Name(), err)
	}
	return nil
}

// isNamespaceExists reports the error of creating a collection that exists.
func isNamespaceExists(err error) bool {
	var ce mongo.CommandError
	return errors.As(err, &ce) && ce.Code == 48 // NamespaceExists
}

func unavailable(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w: %v", op, apierr.ErrUnavailable, err)
}

// CreateUser inserts u; apierr.ErrUserExists if the username is taken.
func (s *Store) CreateUser(ctx context.Context, u User) error {
	_, err := s.users.InsertOne(ctx, u)
	if mongo.IsDuplicateKeyError(err) {
		return apierr.ErrUserExists
	}
	if err != nil {
		return unavailable("create user", err)
	}
	return nil
}

func (s *Store) findUser(ctx context.Context, filter bson.D) (User, error) {
	var u User
	err := s.users.FindOne(ctx, filter).Decode(&u)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return User{}, apierr.ErrUserNotFound
	}
	if err != nil {
		return User{}, unavailable("find user", err)
	}
	return u, nil
}

// UserByUsername returns the user or apierr.ErrUserNotFound.
func (s *Store) UserByUsername(ctx context.Context, username string) (User, error) {
	return s.findUser(ctx, bson.D{{Key: "username", Value: username}})
}

// UserByID returns the user or apierr.ErrUserNotFound.
func (s *Store) UserByID(ctx context.Context, id string) (User, error) {
	return s.findUser(ctx, bson.D{{Key: "_id", Value: id}})
}

// UsersByID returns the users with the given ids, keyed by id (missing ids are absent).
func (s *Store) UsersByID(ctx context.Context, ids []string) (map[string]User, error) {
	us, err := findByIDs[User](ctx, s, s.users, ids)
	if err != nil {
		return nil, unavailable("find users", err)
	}
	out := make(map[string]User, len(us))
	for _, u := range us {
		out[u.ID] = u
	}
	return out, nil
}

// SaveRefreshToken stores a new refresh token.
func (s *Store) SaveRefreshToken(ctx context.Context, t RefreshToken) error {
	if _, err := s.tokens.InsertOne(ctx, t); err != nil {
		return unavailable("save refresh token", err)
	}
	return nil
}

// UseRefreshToken atomically marks the token with hash used and returns it as
// it was before (so Used=true means it had been used already: reuse).
// apierr.ErrUnauthenticated if no such token exists.
func (s *Store) UseRefreshToken(ctx context.Context, hash string) (RefreshToken, error) {
	var t RefreshToken
	err := s.tokens.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: hash}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "used", Value: true}}}},
		options.FindOneAndUpdate().SetReturnDocument(options.Before)).Decode(&t)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return RefreshToken{}, fmt.Errorf("refresh token is unknown: %w", apierr.ErrUnauthenticated)
	}
	if err != nil {
		return RefreshToken{}, unavailable("use refresh token", err)
	}
	return t, nil
}

// RevokeFamily revokes every refresh token of a family.
func (s *Store) RevokeFamily(ctx context.Context, familyID string) error {
	_, err := s.tokens.UpdateMany(ctx, bson.D{{Key: "family_id", Value: familyID}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "revoked", Value: true}}}})
	if err != nil {
		return unavailable("revoke refresh tokens", err)
	}
	return nil
}

// CreateRoom inserts r and its creator's membership.
func (s *Store) CreateRoom(ctx context.Context, r Room) error {
	if _, err := s.rooms.InsertOne(ctx, r); err != nil {
		if mongo.IsDuplicateKeyError(err) {
			return fmt.Errorf("room %s: %w", r.ID, apierr.ErrAlreadyMember)
		}
		return unavailable("create room", err)
	}
	return nil
}

// Room returns the room or apierr.ErrRoomNotFound.
func (s *Store) Room(ctx context.Context, id string) (Room, error) {
	var r Room
	err := s.rooms.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&r)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return Room{}, apierr.ErrRoomNotFound
	}
	if err != nil {
		return Room{}, unavailable("find room", err)
	}
	return r, nil
}

// AddMember stores a membership; adding an existing member is not an error
// (it returns the existing membership).
func (s *Store) AddMember(ctx context.Context, roomID, userID string, at time.Time) (Member, error) {
	m := Member{ID: MemberID(roomID, userID), RoomID: roomID, UserID: userID, JoinTime: at}
	_, err := s.members.InsertOne(ctx, m)
	if mongo.IsDuplicateKeyError(err) {
		return s.Member(ctx, roomID, userID)
	}
	if err != nil {
		return Member{}, unavailable("add member", err)
	}
	return m, nil
}

// RemoveMember deletes a membership (no error if absent).
func (s *Store) RemoveMember(ctx context.Context, roomID, userID string) error {
	if _, err := s.members.DeleteOne(ctx, bson.D{{Key: "_id", Value: MemberID(roomID, userID)}}); err != nil {
		return unavailable("remove member", err)
	}
	return nil
}

// Member returns a membership or apierr.ErrNotMember.
func (s *Store) Member(ctx context.Context, roomID, userID string) (Member, error) {
	var m Member
	err := s.members.FindOne(ctx, bson.D{{Key: "_id", Value: MemberID(roomID, userID)}}).Decode(&m)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return Member{}, apierr.ErrNotMember
	}
	if err != nil {
		return Member{}, unavailable("find member", err)
	}
	return m, nil
}

// IsMember reports whether user is a member of room.
func (s *Store) IsMember(ctx context.Context, roomID, userID string) (bool, error) {
	_, err := s.Member(ctx, roomID, userID)
	if errors.Is(err, apierr.ErrNotMember) {
		return false, nil
	}
	return err == nil, err
}

// RoomsOfUser pages through the rooms user is a member of, by room id after
// afterID, at most limit.
func (s *Store) RoomsOfUser(ctx context.Context, userID, afterID string, limit int) ([]Room, error) {
	q := ferretpg.Page{Collection: s.members.Name(), Order: roomsOfUserOrder, Value: userID, After: afterID, Limit: limit}
	if rs, done, err := throughPager(ctx, s, q, "list rooms of user", s.findRooms, roomKey, nil); done {
		return rs, err
	}
	cur, err := s.members.Find(ctx,
		bson.D{{Key: "user_id", Value: userID}, {Key: "room_id", Value: bson.D{{Key: "$gt", Value: afterID}}}},
		options.Find().SetSort(bson.D{{Key: "room_id", Value: 1}}).SetLimit(int64(limit)))
	if err != nil {
		return nil, unavailable("list memberships", err)
	}
	var ms []Member
	if err := cur.All(ctx, &ms); err != nil {
		return nil, unavailable("read memberships", err)
	}
	if len(ms) == 0 {
		return nil, nil
	}
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.RoomID
	}
	return s.roomsByID(ctx, ids)
}

func (s *Store) findRooms(ctx context.Context, ids []string) ([]Room, error) {
	return findByIDs[Room](ctx, s, s.rooms, ids)
}

// roomKey is a room's key in the orders that page rooms (its _id).
func roomKey(r Room) string { return r.ID }

func (s *Store) roomsByID(ctx context.Context, ids []string) ([]Room, error) {
	rs, err := s.findRooms(ctx, ids)
	if err != nil {
		return nil, unavailable("find rooms", err)
	}
	slices.SortFunc(rs, func(a, b Room) int { return strings.Compare(a.ID, b.ID) })
	return rs, nil
}

// findByIDs returns the documents of coll whose _id is one of ids, in no
// particular order: one {_id: {$in: ids}} query, or after UsePointLookups one
// equality query per id, pointLookupConcurrency at once.
func findByIDs[T any](ctx context.Context, s *Store, coll *mongo.Collection, ids []string) ([]T, error) {
	if !s.pointLookups.Load() {
		cur, err := coll.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
		if err != nil {
			return nil, err
		}
		var out []T
		if err := cur.All(ctx, &out); err != nil {
			return nil, err
		}
		return out, nil
	}
	ids = slices.Compact(slices.Sorted(slices.Values(ids))) // each id once, as by $in
	found := make([]*T, len(ids))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(pointLookupConcurrency)
	for i, id := range ids {
		g.Go(func() error {
			var doc T
			err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&doc)
			switch {
			case errors.Is(err, mongo.ErrNoDocuments):
				return nil
			case err != nil:
				return err
			}
			found[i] = &doc
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make([]T, 0, len(ids))
	for _, d := range found {
		if d != nil {
			out = append(out, *d)
		}
	}
	return out, nil
}

// throughPager reads page q through the Pager when pagerFor says so (done
// true, with what it read or why it failed); done false leaves the page to
// the caller's query. A page of no documents is done at once.
func throughPager[T any](ctx context.Context, s *Store, q ferretpg.Page, what string,
	read func(context.Context, []string) ([]T, error), keyOf func(T) string, keep func(T) bool) (out []T, done bool, err error) {
	if q.Limit <= 0 {
		return nil, true, nil
	}
	p, err := s.pagerFor(ctx, q)
	switch {
	case err != nil:
		return nil, true, err // the caller's context ended
	case p == nil:
		return nil, false, nil
	}
	if out, err = pageOf(ctx, p, q, read, keyOf, keep); err != nil {
		return nil, true, unavailable(what, err)
	}
	return out, true, nil
}

// pageOf reads page q through p: the page's keys, then its documents by
// those keys (read; keyOf is a document's key), in the keys' order, leaving
// out those keep (if not nil) refuses. A document gone between the two
// reads, or refused, is made up for with the next keys, so that a page
// shorter than q.Limit still means the end, as with a query that does it
// all.
func pageOf[T any](ctx context.Context, p Pager, q ferretpg.Page, read func(context.Context, []string) ([]T, error),
	keyOf func(T) string, keep func(T) bool) ([]T, error) {
	limit := q.Limit
	var out []T
	for len(out) < limit {
		q.Limit = limit - len(out)
		keys, err := p.Page(ctx, q)
		if err != nil {
			return nil, err
		}
		if len(keys) == 0 {
			break
		}
		docs, err := read(ctx, keys)
		if err != nil {
			return nil, err
		}
		byKey := make(map[string]T, len(docs))
		for _, d := range docs {
			byKey[keyOf(d)] = d
		}
		for _, k := range keys {
			if d, ok := byKey[k]; ok && (keep == nil || keep(d)) {
				out = append(out, d)
			}
		}
		if len(keys) < q.Limit {
			break
		}
		q.After = keys[len(keys)-1]
	}
	return out, nil
}

// PublicRooms pages through public rooms by id after afterID, at most limit.
func (s *Store) PublicRooms(ctx context.Context, afterID string, limit int) ([]Room, error) {
	q := ferretpg.Page{Collection: s.rooms.Name(), Order: publicRoomsOrder, Value: VisibilityPublic, After: afterID, Limit: limit}
	stillPublic := func(r Room) bool { return r.Visibility == VisibilityPublic } // it may have changed since the page's keys were read
	if rs, done, err := throughPager(ctx, s, q, "list public rooms", s.findRooms, roomKey, stillPublic); done {
		return rs, err
	}
	cur, err := s.rooms.Find(ctx,
		bson.D{{Key: "visibility", Value: VisibilityPublic}, {Key: "_id", Value: bson.D{{Key: "$gt", Value: afterID}}}},
		options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}).SetLimit(int64(limit)))
	if err != nil {
		return nil, unavailable("list public rooms", err)
	}
	var rs []Room
	if err := cur.All(ctx, &rs); err != nil {
		return nil, unavailable("read rooms", err)
	}
	return rs, nil
}

// Members pages through a room's memberships by user id after afterUserID.
func (s *Store) Members(ctx context.Context, roomID, afterUserID string, limit int) ([]Member, error) {
	q := ferretpg.Page{Collection: s.members.Name(), Order: membersOfRoomOrder, Value: roomID, After: afterUserID, Limit: limit}
	read := func(ctx context.Context, users []string) ([]Member, error) {
		ids := make([]string, len(users))
		for i, u := range users {
			ids[i] = MemberID(roomID, u)
		}
		return findByIDs[Member](ctx, s, s.members, ids)
	}
	if ms, done, err := throughPager(ctx, s, q, "list members", read, func(m Member) string { return m.UserID }, nil); done {
		return ms, err
	}
	cur, err := s.members.Find(ctx,
		bson.D{{Key: "room_id", Value: roomID}, {Key: "user_id", Value: bson.D{{Key: "$gt", Value: afterUserID}}}},
		options.Find().SetSort(bson.D{{Key: "user_id", Value: 1}}).SetLimit(int64(limit)))
	if err != nil {
		return nil, unavailable("list members", err)
	}
	var ms []Member
	if err := cur.All(ctx, &ms); err != nil {
		return nil, unavailable("read members", err)
	}
	return ms, nil
}

// ReadMarker is a user's read position in a room.
type ReadMarker struct {
	ID     string `bson:"_id"`
	RoomID string `bson:"room_id"`
	UserID string `bson:"user_id"`
	Epoch  string `bson:"epoch"`
	Seq    int64  `bson:"seq"`
}

func (s *Store) readMarkers() *mongo.Collection {
	return s.members.Database().Collection("read_markers")
}

// SetReadMarker moves user's read position in room forward to seq (never
// back: seqs only grow, also across epochs). It reports whether it moved.
func (s *Store) SetReadMarker(ctx context.Context, roomID, userID, epoch string, seq int64) (bool, error) {
	id := MemberID(roomID, userID)
	res, err := s.readMarkers().UpdateOne(ctx,
		bson.D{{Key: "_id", Value: id}, {Key: "seq", Value: bson.D{{Key: "$lt", Value: seq}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "room_id", Value: roomID}, {Key: "user_id", Value: userID}, {Key: "epoch", Value: epoch}, {Key: "seq", Value: seq}}}},
		options.UpdateOne().SetUpsert(true))
	if mongo.IsDuplicateKeyError(err) {
		return false, nil // the stored marker is already at or past seq
	}
	if err != nil {
		return false, unavailable("set read marker", err)
	}
	return res.ModifiedCount > 0 || res.UpsertedCount > 0, nil
}

// ReadMarkers returns user's read positions in rooms, keyed by room id.
func (s *Store) ReadMarkers(ctx context.Context, userID string, roomIDs []string) (map[string]ReadMarker, error) {
	ids := make([]string, len(roomIDs))
	for i, r := range roomIDs {
		ids[i] = MemberID(r, userID)
	}
	// user_id narrows it for FerretDB 1.24, which pushes that equality down
	// to SQL (an index lookup with ferretpg's indexes) but not the $in: a
	// filter of only the $in read every user's markers.
	cur, err := s.readMarkers().Find(ctx, bson.D{{Key: "user_id", Value: userID}, {Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
	if err != nil {
		return nil, unavailable("find read markers", err)
	}
	var ms []ReadMarker
	if err := cur.All(ctx, &ms); err != nil {
		return nil, unavailable("read read markers", err)
	}
	out := make(map[string]ReadMarker, len(ms))
	for _, m := range ms {
		out[m.RoomID] = m
	}
	return out, nil
}
