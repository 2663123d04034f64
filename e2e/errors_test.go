package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// signed builds an access token with the given claims and key, as an
// attacker (wrong key) or a clock (expired) would.
func signed(key, claims string) string {
	p := base64.RawURLEncoding.EncodeToString([]byte(claims))
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(p))
	return p + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func withToken(tok string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

func wantCode(t *testing.T, what string, err error, code codes.Code, mentions string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Errorf("%s: got %s (%q), want %s", what, st.Code(), st.Message(), code)
		return
	}
	if mentions != "" && !strings.Contains(strings.ToLower(st.Message()), strings.ToLower(mentions)) {
		t.Errorf("%s: message %q does not mention %q", what, st.Message(), mentions)
	}
}

func TestBadInputGetsTheRightStatus(t *testing.T) {
	c := newCluster(t, 1)
	owner, stranger := c.signUp(0, "owner"), c.signUp(0, "stranger")
	pub := createRoom(t, owner, parleyv1.RoomVisibility_ROOM_VISIBILITY_PUBLIC)
	priv := createRoom(t, owner, parleyv1.RoomVisibility_ROOM_VISIBILITY_PRIVATE)
	ctx := context.Background()
	send := func(u *user, room, body string) error {
		_, err := u.chat.SendMessage(u.ctx(ctx), &parleyv1.SendMessageRequest{RoomId: room, Body: body})
		return err
	}

	// Authentication.
	_, err := owner.chat.SendMessage(ctx, &parleyv1.SendMessageRequest{RoomId: pub, Body: "x"})
	wantCode(t, "no token", err, codes.Unauthenticated, "bearer")
	exp := time.Now().Add(-time.Minute).Unix()
	_, err = owner.chat.SendMessage(withToken(signed(tokenKey, fmt.Sprintf(`{"v":1,"alg":"HS256","sub":%q,"usr":"owner","iat":1,"exp":%d}`, owner.id, exp))), &parleyv1.SendMessageRequest{RoomId: pub, Body: "x"})
	wantCode(t, "expired token", err, codes.Unauthenticated, "expired")
	_, err = owner.chat.SendMessage(withToken(signed("not-the-server-key-not-the-server-key", fmt.Sprintf(`{"v":1,"alg":"HS256","sub":%q,"usr":"owner","iat":1,"exp":%d}`, owner.id, time.Now().Add(time.Hour).Unix()))), &parleyv1.SendMessageRequest{RoomId: pub, Body: "x"})
	wantCode(t, "forged token", err, codes.Unauthenticated, "signature")
	_, err = owner.chat.SendMessage(withToken("garbage"), &parleyv1.SendMessageRequest{RoomId: pub, Body: "x"})
	wantCode(t, "garbage token", err, codes.Unauthenticated, "")

	// Login: a wrong password and an unknown user are indistinguishable.
	_, errWrong := owner.auth.Login(ctx, &parleyv1.LoginRequest{Username: "owner", Password: "not-the-password"})
	_, errUnknown := owner.auth.Login(ctx, &parleyv1.LoginRequest{Username: "nobody-here", Password: "not-the-password"})
	wantCode(t, "wrong password", errWrong, codes.Unauthenticated, "")
	if status.Convert(errWrong).Message() != status.Convert(errUnknown).Message() || status.Code(errUnknown) != codes.Unauthenticated {
		t.Errorf("wrong password %v and unknown user %v differ", errWrong, errUnknown)
	}
	_, err = owner.auth.SignUp(ctx, &parleyv1.SignUpRequest{Username: "owner", Password: "password-123"})
	wantCode(t, "duplicate username", err, codes.AlreadyExists, "taken")
	_, err = owner.auth.SignUp(ctx, &parleyv1.SignUpRequest{Username: "x", Password: "password-123"})
	wantCode(t, "short username", err, codes.InvalidArgument, "username")
	_, err = owner.auth.SignUp(ctx, &parleyv1.SignUpRequest{Username: "validname", Password: "short"})
	wantCode(t, "short password", err, codes.InvalidArgument, "password")

	// Membership.
	wantCode(t, "non-member send (public)", send(stranger, pub, "hi"), codes.PermissionDenied, "join")
	wantCode(t, "non-member send (private)", send(stranger, priv, "hi"), codes.NotFound, "not found")
	_, err = stranger.chat.ListMessages(stranger.ctx(ctx), &parleyv1.ListMessagesRequest{RoomId: pub})
	wantCode(t, "non-member history (public)", err, codes.PermissionDenied, "")
	_, err = stranger.chat.ListMessages(stranger.ctx(ctx), &parleyv1.ListMessagesRequest{RoomId: priv})
	wantCode(t, "non-member history (private)", err, codes.NotFound, "")
	_, err = stranger.rooms.JoinRoom(stranger.ctx(ctx), &parleyv1.JoinRoomRequest{RoomId: priv})
	wantCode(t, "join private", err, codes.NotFound, "")
	_, err = stranger.rooms.GetRoom(stranger.ctx(ctx), &parleyv1.GetRoomRequest{RoomId: priv})
	wantCode(t, "get private", err, codes.NotFound, "")

	// Message and paging validation.
	wantCode(t, "empty body", send(owner, pub, "   "), codes.InvalidArgument, "body")
	wantCode(t, "oversized body", send(owner, pub, strings.Repeat("x", 4097)), codes.InvalidArgument, "4096")
	wantCode(t, "unknown room", send(owner, "no-such-room", "x"), codes.NotFound, "no-such-room")
	wantCode(t, "missing room", send(owner, "", "x"), codes.InvalidArgument, "room_id")
	_, err = owner.chat.ListMessages(owner.ctx(ctx), &parleyv1.ListMessagesRequest{RoomId: pub, PageToken: "bm90LWEtdG9rZW4"})
	wantCode(t, "bad page token", err, codes.InvalidArgument, "page_token")
	_, err = owner.chat.ListMessages(owner.ctx(ctx), &parleyv1.ListMessagesRequest{RoomId: pub, PageSize: 1000})
	wantCode(t, "page size", err, codes.InvalidArgument, "page_size")
	_, err = owner.rooms.CreateRoom(owner.ctx(ctx), &parleyv1.CreateRoomRequest{Name: ""})
	wantCode(t, "room name", err, codes.InvalidArgument, "name")

	// A token from a page of one room used for another.
	for i := 0; i < 3; i++ {
		if err := send(owner, pub, fmt.Sprint("m", i)); err != nil {
			t.Fatal(err)
		}
	}
	c.waitStored(pub, 3, 60*time.Second)
	page, err := owner.chat.ListMessages(owner.ctx(ctx), &parleyv1.ListMessagesRequest{RoomId: pub, PageSize: 1})
	if err != nil || page.NextPageToken == "" {
		t.Fatalf("first page: %v %v", page, err)
	}
	_, err = owner.chat.ListMessages(owner.ctx(ctx), &parleyv1.ListMessagesRequest{RoomId: priv, PageToken: page.NextPageToken})
	wantCode(t, "page token of another room", err, codes.InvalidArgument, "page_token")
}

func TestRefreshRotationAndReuse(t *testing.T) {
	c := newCluster(t, 1)
	u := c.signUp(0, "henry")
	ctx := context.Background()
	login, err := u.auth.Login(ctx, &parleyv1.LoginRequest{Username: "henry", Password: "password-henry"})
	if err != nil {
		t.Fatal(err)
	}
	r1 := login.Tokens.RefreshToken
	next, err := u.auth.Refresh(ctx, &parleyv1.RefreshRequest{RefreshToken: r1})
	if err != nil {
		t.Fatal(err)
	}
	me, err := u.auth.GetMe(withToken(next.Tokens.AccessToken), &parleyv1.GetMeRequest{})
	if err != nil || me.User.Username != "henry" {
		t.Fatalf("GetMe with refreshed token: %v %v", me, err)
	}
	_, err = u.auth.Refresh(ctx, &parleyv1.RefreshRequest{RefreshToken: r1})
	wantCode(t, "reused refresh token", err, codes.Unauthenticated, "already used")
	_, err = u.auth.Refresh(ctx, &parleyv1.RefreshRequest{RefreshToken: next.Tokens.RefreshToken})
	wantCode(t, "token of a revoked family", err, codes.Unauthenticated, "revoked")
}
