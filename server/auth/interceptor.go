package auth

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

type identityKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the caller set by the interceptors.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// MustFromContext returns the caller or an Unauthenticated error.
func MustFromContext(ctx context.Context) (Identity, error) {
	id, ok := FromContext(ctx)
	if !ok {
		return Identity{}, status.Error(codes.Unauthenticated, "missing bearer token")
	}
	return id, nil
}

// Interceptors returns unary and stream interceptors that require a valid
// bearer access token on every method except those in public (full method
// names such as "/parley.v1.AuthService/Login"), and put the Identity into
// the context.
func (i *Issuer) Interceptors(public map[string]bool) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	authn := func(ctx context.Context, method string) (context.Context, error) {
		if public[method] {
			return ctx, nil
		}
		id, err := i.fromMetadata(ctx)
		if err != nil {
			return nil, err
		}
		return WithIdentity(ctx, id), nil
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, err := authn(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx, err := authn(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return h(srv, &ctxStream{ServerStream: ss, ctx: ctx})
	}
	return unary, stream
}

func (i *Issuer) fromMetadata(ctx context.Context) (Identity, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 || vals[0] == "" {
		return Identity{}, status.Error(codes.Unauthenticated, "missing bearer token: send metadata 'authorization: Bearer <access_token>'")
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return Identity{}, status.Error(codes.Unauthenticated, "authorization metadata must be 'Bearer <access_token>'")
	}
	id, err := i.Verify(strings.TrimSpace(tok))
	if err != nil {
		return Identity{}, status.Error(codes.Unauthenticated, err.Error())
	}
	return id, nil
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }
