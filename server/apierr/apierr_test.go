package apierr

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"invalid", Invalid("body", "must not be empty"), codes.InvalidArgument, "body: must not be empty"},
		{"wrapped not found", fmt.Errorf("room %q: %w", "r1", ErrRoomNotFound), codes.NotFound, `room "r1": room not found`},
		{"not member", fmt.Errorf("join first: %w", ErrNotMember), codes.PermissionDenied, "join first: not a member of this room"},
		{"rate", &RateLimitError{Limit: "send rate", RetryAfter: time.Second}, codes.ResourceExhausted, "send rate exceeded; retry in 1s"},
		{"unavailable hides detail", fmt.Errorf("find room: %w: %v", ErrUnavailable, errors.New("pg: SQLSTATE 22P05 at file.go:12")), codes.Unavailable, "find room: service temporarily unavailable"},
		{"status passes", status.Error(codes.Aborted, "x"), codes.Aborted, "x"},
		{"unknown is internal", errors.New("boom"), codes.Internal, "internal error"},
	} {
		s := Status(tc.err)
		if s.Code() != tc.code || s.Message() != tc.msg {
			t.Errorf("%s: got %s %q, want %s %q", tc.name, s.Code(), s.Message(), tc.code, tc.msg)
		}
	}
	s := Status(Invalid("page_size", "too big"))
	var found bool
	for _, d := range s.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && br.FieldViolations[0].Field == "page_size" {
			found = true
		}
	}
	if !found {
		t.Error("InvalidArgument lacks a BadRequest field violation")
	}
}
