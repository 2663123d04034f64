package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Identity is the authenticated caller of an RPC.
type Identity struct {
	UserID   string
	Username string
}

// Token errors; all map to Unauthenticated.
var (
	ErrTokenMalformed = errors.New("access token is malformed")
	ErrTokenSignature = errors.New("access token signature is invalid")
	ErrTokenExpired   = errors.New("access token has expired")
)

// claims is the signed payload of an access token. The algorithm is pinned
// (HMAC-SHA256, version 1): a token naming anything else is rejected.
type claims struct {
	V   int    `json:"v"`
	Alg string `json:"alg"`
	Sub string `json:"sub"`
	Usr string `json:"usr"`
	Iat int64  `json:"iat"`
	Exp int64  `json:"exp"`
}

const tokenAlg = "HS256"

// Issuer signs and verifies access tokens with one HMAC-SHA256 key.
// It is safe for concurrent use.
type Issuer struct {
	key []byte
	ttl time.Duration
	now func() time.Time
}

// NewIssuer returns an Issuer; key must be at least 32 bytes.
func NewIssuer(key []byte, ttl time.Duration) (*Issuer, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("token signing key must be at least 32 bytes, got %d", len(key))
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("access token TTL must be positive")
	}
	return &Issuer{key: append([]byte(nil), key...), ttl: ttl, now: time.Now}, nil
}

// Issue returns a signed access token for id and its expiry.
func (i *Issuer) Issue(id Identity) (string, time.Time) {
	now := i.now()
	exp := now.Add(i.ttl)
	payload, _ := json.Marshal(claims{V: 1, Alg: tokenAlg, Sub: id.UserID, Usr: id.Username, Iat: now.Unix(), Exp: exp.Unix()})
	p := base64.RawURLEncoding.EncodeToString(payload)
	return p + "." + i.sign(p), exp
}

func (i *Issuer) sign(p string) string {
	m := hmac.New(sha256.New, i.key)
	m.Write([]byte(p))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Verify checks a token's signature, algorithm and expiry.
func (i *Issuer) Verify(token string) (Identity, error) {
	p, sig, ok := strings.Cut(token, ".")
	if !ok || p == "" || sig == "" || len(token) > 4096 {
		return Identity{}, ErrTokenMalformed
	}
	if !hmac.Equal([]byte(sig), []byte(i.sign(p))) {
		return Identity{}, ErrTokenSignature
	}
	raw, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return Identity{}, ErrTokenMalformed
	}
	var c claims
	if err := json.Unmarshal(raw, &c); err != nil || c.V != 1 || c.Alg != tokenAlg || c.Sub == "" {
		return Identity{}, ErrTokenMalformed
	}
	if i.now().Unix() >= c.Exp {
		return Identity{}, ErrTokenExpired
	}
	return Identity{UserID: c.Sub, Username: c.Usr}, nil
}

// NewRefreshToken returns a random opaque refresh token and the hash under
// which it is stored (only the hash is ever stored).
func NewRefreshToken() (token, hash string) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	token = base64.RawURLEncoding.EncodeToString(b[:])
	return token, HashRefreshToken(token)
}

// HashRefreshToken is the storage key of a refresh token.
func HashRefreshToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}
