package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"net"

	"github.com/oklog/ulid/v2"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/ratelimit"
	"github.com/parleychat/parley/server/apierr"
	"github.com/parleychat/parley/server/store"
)

// Users is what Service needs from the account store.
type Users interface {
	CreateUser(ctx context.Context, u store.User) error
	UserByUsername(ctx context.Context, username string) (store.User, error)
	UserByID(ctx context.Context, id string) (store.User, error)
	SaveRefreshToken(ctx context.Context, t store.RefreshToken) error
	UseRefreshToken(ctx context.Context, hash string) (store.RefreshToken, error)
	RevokeFamily(ctx context.Context, familyID string) error
}

// ServiceConfig configures Service.
type ServiceConfig struct {
	Argon2     Argon2Params
	RefreshTTL time.Duration
	// UsernameAttempts and AddressAttempts limit sign-up and login attempts
	// per minute per username and per client address (defaults 10 and 60).
	UsernameAttempts int
	AddressAttempts  int
}

// Service implements parleyv1.AuthServiceServer.
type Service struct {
	parleyv1.UnimplementedAuthServiceServer
	users          Users
	issuer         *Issuer
	cfg            ServiceConfig
	log            *slog.Logger
	byName, byAddr *ratelimit.Limiter
	// dummyHash is checked against when a username is unknown, so a wrong
	// password and an unknown user take the same time.
	dummyHash string
}

// NewService returns the AuthService.
func NewService(users Users, issuer *Issuer, cfg ServiceConfig, log *slog.Logger) (*Service, error) {
	dummy, err := HashPassword(cfg.Argon2, "parley-timing-equaliser")
	if err != nil {
		return nil, err
	}
	if cfg.UsernameAttempts <= 0 {
		cfg.UsernameAttempts = 10
	}
	if cfg.AddressAttempts <= 0 {
		cfg.AddressAttempts = 60
	}
	return &Service{users: users, issuer: issuer, cfg: cfg, log: log, dummyHash: dummy,
		byName: ratelimit.New(float64(cfg.UsernameAttempts)/60, cfg.UsernameAttempts),
		byAddr: ratelimit.New(float64(cfg.AddressAttempts)/60, cfg.AddressAttempts),
	}, nil
}

// limitAttempt counts a login or sign-up attempt for username from the
// caller's address.
func (s *Service) limitAttempt(ctx context.Context, username string) error {
	now := time.Now()
	if ok, wait := s.byAddr.Allow(ClientAddr(ctx), now); !ok {
		return &apierr.RateLimitError{Limit: fmt.Sprintf("limit of %d sign-up/login attempts per minute from one address", s.cfg.AddressAttempts), RetryAfter: wait}
	}
	if ok, wait := s.byName.Allow(username, now); !ok {
		return &apierr.RateLimitError{Limit: fmt.Sprintf("limit of %d login attempts per minute for one username", s.cfg.UsernameAttempts), RetryAfter: wait}
	}
	return nil
}

// ClientAddr is the caller's IP: the peer's, or for calls relayed by this
// server's own REST gateway (an in-memory or loopback peer), the last
// X-Forwarded-For entry — the one the gateway appended for the connection it
// served. Earlier entries come from the client and are not trusted (a caller
// could otherwise pick the address its login attempts are counted against).
func ClientAddr(ctx context.Context) string {
	host := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		host = p.Addr.String()
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsLoopback() {
		md, _ := metadata.FromIncomingContext(ctx)
		if xff := md.Get("x-forwarded-for"); len(xff) > 0 {
			entries := strings.Split(xff[len(xff)-1], ",")
			if last := strings.TrimSpace(entries[len(entries)-1]); last != "" {
				return last
			}
		}
	}
	return host
}

var usernameRE = regexp.MustCompile(`^[a-z0-9_.-]{3,32}$`)

// ValidateUsername checks the username rules (3-32 of [a-z0-9_.-]).
func ValidateUsername(field, u string) error {
	if !usernameRE.MatchString(u) {
		return apierr.Invalid(field, "must be 3-32 characters of a-z, 0-9, '_', '.', '-' (got %q)", truncate(u, 40))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// SignUp implements parleyv1.AuthServiceServer.
func (s *Service) SignUp(ctx context.Context, req *parleyv1.SignUpRequest) (*parleyv1.SignUpResponse, error) {
	username := strings.ToLower(strings.TrimSpace(req.GetUsername()))
	if err := ValidateUsername("username", username); err != nil {
		return nil, err
	}
	if err := validatePassword(req.GetPassword()); err != nil {
		return nil, err
	}
	if err := s.limitAttempt(ctx, username); err != nil {
		return nil, err
	}
	display := strings.TrimSpace(req.GetDisplayName())
	if display == "" {
		display = username
	}
	if !utf8.ValidString(display) || utf8.RuneCountInString(display) > 64 || strings.ContainsRune(display, 0) {
		return nil, apierr.Invalid("display_name", "must be valid UTF-8 of at most 64 characters without NUL")
	}
	hash, err := HashPassword(s.cfg.Argon2, req.GetPassword())
	if err != nil {
		return nil, err
	}
	u := store.User{ID: ulid.Make().String(), Username: username, DisplayName: display, PasswordHash: hash, CreateTime: time.Now().UTC()}
	if err := s.users.CreateUser(ctx, u); err != nil {
		if errors.Is(err, apierr.ErrUserExists) {
			return nil, fmt.Errorf("username %q is already taken: %w", username, apierr.ErrUserExists)
		}
		return nil, err
	}
	tokens, err := s.newSession(ctx, u.ID, u.Username, "")
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "user signed up", "user", u.ID, "username", u.Username)
	return &parleyv1.SignUpResponse{User: UserProto(u), Tokens: tokens}, nil
}

func validatePassword(p string) error {
	if utf8.RuneCountInString(p) < 8 {
		return apierr.Invalid("password", "must be at least 8 characters")
	}
	if len(p) > 256 {
		return apierr.Invalid("password", "must be at most 256 bytes")
	}
	return nil
}

// Login implements parleyv1.AuthServiceServer.
func (s *Service) Login(ctx context.Context, req *parleyv1.LoginRequest) (*parleyv1.LoginResponse, error) {
	username := strings.ToLower(strings.TrimSpace(req.GetUsername()))
	if username == "" {
		return nil, apierr.Invalid("username", "is required")
	}
	if req.GetPassword() == "" {
		return nil, apierr.Invalid("password", "is required")
	}
	if err := s.limitAttempt(ctx, username); err != nil {
		return nil, err
	}
	if len(req.GetPassword()) > 256 {
		return nil, apierr.ErrBadCredentials
	}
	u, err := s.users.UserByUsername(ctx, username)
	hash := u.PasswordHash
	if errors.Is(err, apierr.ErrUserNotFound) {
		hash = s.dummyHash
	} else if err != nil {
		return nil, err
	}
	ok, herr := CheckPassword(hash, req.GetPassword())
	if err != nil || herr != nil || !ok {
		return nil, apierr.ErrBadCredentials
	}
	tokens, err := s.newSession(ctx, u.ID, u.Username, "")
	if err != nil {
		return nil, err
	}
	return &parleyv1.LoginResponse{User: UserProto(u), Tokens: tokens}, nil
}

// newSession issues an access token and a refresh token of family (a new
// family when empty).
func (s *Service) newSession(ctx context.Context, userID, username, family string) (*parleyv1.TokenPair, error) {
	if family == "" {
		family = ulid.Make().String()
	}
	access, accessExp := s.issuer.Issue(Identity{UserID: userID, Username: username})
	refresh, hash := NewRefreshToken()
	refreshExp := time.Now().Add(s.cfg.RefreshTTL).UTC()
	if err := s.users.SaveRefreshToken(ctx, store.RefreshToken{Hash: hash, UserID: userID, FamilyID: family, ExpireTime: refreshExp}); err != nil {
		return nil, err
	}
	return &parleyv1.TokenPair{
		AccessToken:            access,
		AccessTokenExpireTime:  timestamppb.New(accessExp),
		RefreshToken:           refresh,
		RefreshTokenExpireTime: timestamppb.New(refreshExp),
	}, nil
}

// Refresh implements parleyv1.AuthServiceServer. A refresh token works once;
// presenting it again revokes its whole family (the token was stolen or
// replayed), which also ends the legitimate session.
func (s *Service) Refresh(ctx context.Context, req *parleyv1.RefreshRequest) (*parleyv1.RefreshResponse, error) {
	if req.GetRefreshToken() == "" {
		return nil, apierr.Invalid("refresh_token", "is required")
	}
	t, err := s.users.UseRefreshToken(ctx, HashRefreshToken(req.GetRefreshToken()))
	if err != nil {
		return nil, err
	}
	switch {
	case t.Revoked:
		return nil, fmt.Errorf("refresh token was revoked: %w", apierr.ErrUnauthenticated)
	case t.Used:
		if err := s.users.RevokeFamily(ctx, t.FamilyID); err != nil {
			return nil, err
		}
		s.log.WarnContext(ctx, "refresh token reused; family revoked", "user", t.UserID, "family", t.FamilyID)
		return nil, fmt.Errorf("refresh token was already used; all sessions of this login are revoked: %w", apierr.ErrUnauthenticated)
	case time.Now().After(t.ExpireTime):
		return nil, fmt.Errorf("refresh token has expired: %w", apierr.ErrUnauthenticated)
	}
	u, err := s.users.UserByID(ctx, t.UserID)
	if err != nil {
		return nil, fmt.Errorf("refresh token's user is gone: %w", apierr.ErrUnauthenticated)
	}
	tokens, err := s.newSession(ctx, u.ID, u.Username, t.FamilyID)
	if err != nil {
		return nil, err
	}
	return &parleyv1.RefreshResponse{Tokens: tokens}, nil
}

// Logout implements parleyv1.AuthServiceServer.
func (s *Service) Logout(ctx context.Context, req *parleyv1.LogoutRequest) (*parleyv1.LogoutResponse, error) {
	id, err := MustFromContext(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetRefreshToken() == "" {
		return nil, apierr.Invalid("refresh_token", "is required")
	}
	t, err := s.users.UseRefreshToken(ctx, HashRefreshToken(req.GetRefreshToken()))
	if err != nil {
		return nil, err
	}
	if t.UserID != id.UserID {
		return nil, fmt.Errorf("refresh token belongs to another user: %w", apierr.ErrForbidden)
	}
	if err := s.users.RevokeFamily(ctx, t.FamilyID); err != nil {
		return nil, err
	}
	return &parleyv1.LogoutResponse{}, nil
}

// GetMe implements parleyv1.AuthServiceServer.
func (s *Service) GetMe(ctx context.Context, _ *parleyv1.GetMeRequest) (*parleyv1.GetMeResponse, error) {
	id, err := MustFromContext(ctx)
	if err != nil {
		return nil, err
	}
	u, err := s.users.UserByID(ctx, id.UserID)
	if err != nil {
		return nil, err
	}
	return &parleyv1.GetMeResponse{User: UserProto(u)}, nil
}

// UserProto is the public view of u.
func UserProto(u store.User) *parleyv1.User {
	return &parleyv1.User{UserId: u.ID, Username: u.Username, DisplayName: u.DisplayName, CreateTime: timestamppb.New(u.CreateTime)}
}
