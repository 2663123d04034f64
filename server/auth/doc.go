// Package auth authenticates Parley users: argon2id password hashes, signed
// short-lived access tokens (Issuer), rotating single-use refresh tokens with
// reuse detection, the gRPC interceptors that put the caller's Identity into
// the context, and the AuthService implementation (Service).
package auth
