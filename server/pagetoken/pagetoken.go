// Package pagetoken encodes the opaque page tokens of Parley's paged RPCs
// (AIP-158). A token records the query it belongs to, so reusing it with
// different filters is an InvalidArgument error rather than a wrong page.
package pagetoken

import (
	"encoding/base64"
	"encoding/json"

	"github.com/parleychat/parley/server/apierr"
)

// Token is the decoded cursor: Query identifies the request's filters (room,
// filter, direction), After is the last key of the previous page.
type Token struct {
	Query string `json:"q"`
	After string `json:"a,omitempty"`
	Seq   int64  `json:"s,omitempty"`
}

// Encode returns the opaque string form of t.
func Encode(t Token) string {
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Decode parses s (empty s is the zero Token, the first page) and checks that
// it was issued for query. Errors are InvalidArgument on field "page_token".
func Decode(s, query string) (Token, error) {
	if s == "" {
		return Token{Query: query}, nil
	}
	if len(s) > 1024 {
		return Token{}, apierr.Invalid("page_token", "is too long")
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Token{}, apierr.Invalid("page_token", "is not a token this server issued")
	}
	var t Token
	if err := json.Unmarshal(raw, &t); err != nil {
		return Token{}, apierr.Invalid("page_token", "is not a token this server issued")
	}
	if t.Query != query {
		return Token{}, apierr.Invalid("page_token", "was issued for a different query; keep the filters of the request that returned it")
	}
	if t.Seq < 0 {
		return Token{}, apierr.Invalid("page_token", "is corrupt")
	}
	return t, nil
}

// PageSize validates a request's page_size: 0 means def, negative or above
// max is InvalidArgument naming the limit.
func PageSize(n int32, def, max int) (int, error) {
	switch {
	case n == 0:
		return def, nil
	case n < 0:
		return 0, apierr.Invalid("page_size", "must not be negative")
	case int(n) > max:
		return 0, apierr.Invalid("page_size", "must be at most %d", max)
	}
	return int(n), nil
}
