// Package apierr declares Parley's domain errors once and maps them to gRPC
// statuses in one place, so every RPC (and REST through grpc-gateway) answers a
// failure with the right code and a message that names the problem.
//
// Services return domain errors wrapped with %w (or the helpers below for bad
// input); the unary and stream interceptors from Interceptors call Status on
// whatever an RPC returns.
package apierr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Domain errors. Wrap them with fmt.Errorf("...: %w", ErrX) to add context.
var (
	ErrUnauthenticated    = errors.New("unauthenticated")
	ErrBadCredentials     = errors.New("invalid username or password")
	ErrUserExists         = errors.New("username is already taken")
	ErrUserNotFound       = errors.New("user not found")
	ErrRoomNotFound       = errors.New("room not found")
	ErrNotMember          = errors.New("not a member of this room")
	ErrForbidden          = errors.New("permission denied")
	ErrUnavailable        = errors.New("service temporarily unavailable")
	ErrRateLimited        = errors.New("rate limit exceeded")
	ErrAlreadyMember      = errors.New("already a member")
	ErrFailedPrecondition = errors.New("failed precondition")
)

// InvalidArgumentError is bad input in one request field.
type InvalidArgumentError struct {
	Field  string
	Reason string
}

func (e *InvalidArgumentError) Error() string { return e.Field + ": " + e.Reason }

// Invalid returns an InvalidArgumentError for field.
func Invalid(field, format string, args ...any) error {
	return &InvalidArgumentError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// RateLimitError says a limit was exceeded and when to retry.
type RateLimitError struct {
	Limit      string
	RetryAfter time.Duration
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("%s exceeded; retry in %s", e.Limit, e.RetryAfter.Round(time.Millisecond))
}

// Is makes errors.Is(err, ErrRateLimited) true for a *RateLimitError.
func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }

var codeOf = []struct {
	err  error
	code codes.Code
}{
	{ErrUnauthenticated, codes.Unauthenticated},
	{ErrBadCredentials, codes.Unauthenticated},
	{ErrUserExists, codes.AlreadyExists},
	{ErrAlreadyMember, codes.AlreadyExists},
	{ErrUserNotFound, codes.NotFound},
	{ErrRoomNotFound, codes.NotFound},
	{ErrNotMember, codes.PermissionDenied},
	{ErrForbidden, codes.PermissionDenied},
	{ErrUnavailable, codes.Unavailable},
	{ErrFailedPrecondition, codes.FailedPrecondition},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
}

// Status converts any error an RPC returns into a gRPC status. Errors that are
// already statuses pass through; unknown errors become Internal with a generic
// message (the detail is logged by the interceptor, not leaked).
func Status(err error) *status.Status {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok {
		return s
	}
	var inv *InvalidArgumentError
	if errors.As(err, &inv) {
		s := status.New(codes.InvalidArgument, err.Error())
		if d, derr := s.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: inv.Field, Description: inv.Reason}}}); derr == nil {
			return d
		}
		return s
	}
	var rl *RateLimitError
	if errors.As(err, &rl) {
		s := status.New(codes.ResourceExhausted, err.Error())
		if d, derr := s.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(rl.RetryAfter)}); derr == nil {
			return d
		}
		return s
	}
	if errors.Is(err, ErrUnavailable) {
		// The wrapped detail names backend internals: it goes to the log
		// (the interceptor logs every Unavailable), not to the caller.
		msg := err.Error()
		if i := strings.Index(msg, ErrUnavailable.Error()); i >= 0 {
			msg = msg[:i+len(ErrUnavailable.Error())]
		}
		return status.New(codes.Unavailable, msg)
	}
	for _, c := range codeOf {
		if errors.Is(err, c.err) {
			return status.New(c.code, err.Error())
		}
	}
	return status.New(codes.Internal, "internal error")
}

// Err is Status(err).Err().
func Err(err error) error {
	if err == nil {
		return nil
	}
	return Status(err).Err()
}

// Interceptors returns the unary and stream server interceptors that recover
// panics (Internal + a log line with the stack) and map returned errors with
// Status, logging the ones that become Internal.
func Interceptors(log *slog.Logger) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	mapErr := func(ctx context.Context, method string, err error) error {
		if err == nil {
			return nil
		}
		s := Status(err)
		switch s.Code() {
		case codes.Internal, codes.Unknown:
			log.ErrorContext(ctx, "rpc failed", "method", method, "err", err)
		case codes.Unavailable:
			log.WarnContext(ctx, "rpc unavailable", "method", method, "err", err)
		}
		return s.Err()
	}
	recovered := func(ctx context.Context, method string, r any) error {
		log.ErrorContext(ctx, "panic in rpc", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				resp, err = nil, recovered(ctx, info.FullMethod, r)
			}
		}()
		resp, err = h(ctx, req)
		return resp, mapErr(ctx, info.FullMethod, err)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = recovered(ss.Context(), info.FullMethod, r)
			}
		}()
		return mapErr(ss.Context(), info.FullMethod, h(srv, ss))
	}
	return unary, stream
}
