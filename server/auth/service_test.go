package auth

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/apierr"
	"github.com/parleychat/parley/server/store"
)

type memUsers struct {
	mu     sync.Mutex
	users  map[string]store.User
	tokens map[string]store.RefreshToken
}

func (m *memUsers) CreateUser(_ context.Context, u store.User) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, x := range m.users {
		if x.Username == u.Username {
			return apierr.ErrUserExists
		}
	}
	m.users[u.ID] = u
	return nil
}

func (m *memUsers) UserByUsername(_ context.Context, name string) (store.User, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, x := range m.users {
		if x.Username == name {
			return x, nil
		}
	}
	return store.User{}, apierr.ErrUserNotFound
}

func (m *memUsers) UserByID(_ context.Context, id string) (store.User, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if u, ok := m.users[id]; ok {
		return u, nil
	}
	return store.User{}, apierr.ErrUserNotFound
}

func (m *memUsers) SaveRefreshToken(_ context.Context, t store.RefreshToken) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokens[t.Hash] = t
	return nil
}

func (m *memUsers) UseRefreshToken(_ context.Context, hash string) (store.RefreshToken, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tokens[hash]
	if !ok {
		return store.RefreshToken{}, apierr.ErrUnauthenticated
	}
	before := t
	t.Used = true
	m.tokens[hash] = t
	return before, nil
}

func (m *memUsers) RevokeFamily(_ context.Context, family string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for h, t := range m.tokens {
		if t.FamilyID == family {
			t.Revoked = true
			m.tokens[h] = t
		}
	}
	return nil
}

func newTestService(t *testing.T, cfg ServiceConfig) *Service {
	t.Helper()
	iss, _ := NewIssuer(testKey, time.Minute)
	cfg.Argon2 = Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}
	cfg.RefreshTTL = time.Hour
	s, err := NewService(&memUsers{users: map[string]store.User{}, tokens: map[string]store.RefreshToken{}}, iss, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLoginAttemptsAreLimited(t *testing.T) {
	s := newTestService(t, ServiceConfig{UsernameAttempts: 3, AddressAttempts: 100})
	ctx := context.Background()
	if _, err := s.SignUp(ctx, &parleyv1.SignUpRequest{Username: "ann", Password: "password-1"}); err != nil {
		t.Fatal(err)
	}
	var last error
	for i := 0; i < 4; i++ {
		_, last = s.Login(ctx, &parleyv1.LoginRequest{Username: "ann", Password: "wrong-password"})
	}
	if code := apierr.Status(last).Code(); code != codes.ResourceExhausted {
		t.Fatalf("4th attempt (sign-up counted too): %v, want ResourceExhausted", last)
	}
	// Another username from the same address is not affected.
	if _, err := s.Login(ctx, &parleyv1.LoginRequest{Username: "bob", Password: "whatever-1"}); apierr.Status(err).Code() != codes.Unauthenticated {
		t.Fatalf("other user: %v", err)
	}
}

func TestWrongPasswordAndUnknownUserLookAlike(t *testing.T) {
	s := newTestService(t, ServiceConfig{})
	ctx := context.Background()
	if _, err := s.SignUp(ctx, &parleyv1.SignUpRequest{Username: "ann", Password: "password-1"}); err != nil {
		t.Fatal(err)
	}
	_, e1 := s.Login(ctx, &parleyv1.LoginRequest{Username: "ann", Password: "nope-nope"})
	_, e2 := s.Login(ctx, &parleyv1.LoginRequest{Username: "nobody", Password: "nope-nope"})
	if apierr.Status(e1).Message() != apierr.Status(e2).Message() || apierr.Status(e1).Code() != codes.Unauthenticated {
		t.Fatalf("%v vs %v", e1, e2)
	}
}

func TestClientAddrTrustsOnlyTheGatewaysEntry(t *testing.T) {
	at := func(peerAddr string, xff ...string) string {
		ctx := context.Background()
		if peerAddr != "" {
			addr, err := net.ResolveTCPAddr("tcp", peerAddr)
			if err != nil {
				t.Fatal(err)
			}
			ctx = peer.NewContext(ctx, &peer.Peer{Addr: addr})
		}
		if len(xff) > 0 {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("x-forwarded-for", strings.Join(xff, ", ")))
		}
		return ClientAddr(ctx)
	}
	cases := []struct{ got, want string }{
		{at("203.0.113.7:5000"), "203.0.113.7"},
		{at("203.0.113.7:5000", "198.51.100.1"), "203.0.113.7"},            // a remote peer's header is ignored
		{at("127.0.0.1:5000", "198.51.100.1"), "198.51.100.1"},             // the gateway's entry
		{at("127.0.0.1:5000", "10.9.9.9", "198.51.100.1"), "198.51.100.1"}, // a forged first entry does not count
		{at("", "10.9.9.9", "198.51.100.1"), "198.51.100.1"},               // in-memory pipe: no IP peer
		{at("127.0.0.1:5000"), "127.0.0.1"},
	}
	for i, c := range cases {
		if c.got != c.want {
			t.Errorf("case %d: ClientAddr = %q, want %q", i, c.got, c.want)
		}
	}
}
