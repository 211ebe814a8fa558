package auth

import (
	"context"
	"maps"
	"strings"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Method prefixes that need no scope. Health needs no token either, so
// probes work; reflection needs a token.
const (
	healthPrefix     = "/grpc.health.v1.Health/"
	reflectionPrefix = "/grpc.reflection." // v1 and v1alpha ServerReflection
)

func isHealth(fullMethod string) bool { return strings.HasPrefix(fullMethod, healthPrefix) }

func isReflection(fullMethod string) bool { return strings.HasPrefix(fullMethod, reflectionPrefix) }

// needsToken selects every method but health.
var needsToken = selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
	return !isHealth(c.FullMethod())
})

// UnaryInterceptor authenticates every call but health checks: it
// verifies the bearer token and puts the Principal in the context
// (FromContext). A missing or bad token is UNAUTHENTICATED.
func (v *Verifier) UnaryInterceptor() grpc.UnaryServerInterceptor {
	authn := selector.UnaryServerInterceptor(grpcauth.UnaryServerInterceptor(v.authenticate), needsToken)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		// Hide the service from grpcauth: a service implementing its
		// AuthFuncOverride would otherwise skip verification silently.
		hidden := *info
		hidden.Server = nil
		return authn(ctx, req, &hidden, handler)
	}
}

// StreamInterceptor is UnaryInterceptor for streams.
func (v *Verifier) StreamInterceptor() grpc.StreamServerInterceptor {
	authn := selector.StreamServerInterceptor(grpcauth.StreamServerInterceptor(v.authenticate), needsToken)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		// As in UnaryInterceptor; the handler still gets the real service.
		return authn(nil, ss, info, func(_ any, ss grpc.ServerStream) error { return handler(srv, ss) })
	}
}

// authenticate is the grpcauth.AuthFunc.
func (v *Verifier) authenticate(ctx context.Context) (context.Context, error) {
	var raw string
	switch vals := metadata.ValueFromIncomingContext(ctx, "authorization"); {
	case len(vals) > 1:
		return nil, status.Error(codes.Unauthenticated, "send one Authorization header")
	case len(vals) == 1 && v.DevMode():
		return nil, status.Error(codes.Unauthenticated, ErrDevModeToken.Error())
	case len(vals) == 1:
		tok, err := grpcauth.AuthFromMD(ctx, "bearer")
		if err != nil || strings.TrimSpace(tok) == "" {
			return nil, status.Error(codes.Unauthenticated, "the Authorization header must be: Bearer <token>")
		}
		raw = strings.TrimSpace(tok)
	}
	p, err := v.Verify(ctx, raw)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	return WithPrincipal(ctx, p), nil
}

// RequireScopes refuses a call whose principal lacks the scope that
// scopes (full method name, such as "/oms.v1.OrderIngestService/PayOrder",
// to scope) names for its method. A method missing from the map is
// refused: deny by default. An empty scope admits any authenticated
// principal. Health and reflection need no scope. Install it after the
// Verifier's interceptor.
func RequireScopes(scopes map[string]string) grpc.UnaryServerInterceptor {
	scopes = maps.Clone(scopes)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := checkScope(ctx, scopes, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// RequireScopesStream is RequireScopes for streams.
func RequireScopesStream(scopes map[string]string) grpc.StreamServerInterceptor {
	scopes = maps.Clone(scopes)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := checkScope(ss.Context(), scopes, info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

func checkScope(ctx context.Context, scopes map[string]string, method string) error {
	if isHealth(method) || isReflection(method) {
		return nil
	}
	p, ok := FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "the call is not authenticated")
	}
	scope, ok := scopes[method]
	switch {
	case !ok:
		return status.Errorf(codes.PermissionDenied, "%s is not open to any token", method)
	case scope == "" || p.Has(scope):
		return nil
	case p.Kind == Customer && (scope == ScopeFulfil || scope == ScopeStaff):
		return status.Errorf(codes.PermissionDenied, "the %s scope is for service clients only", scope)
	}
	return status.Errorf(codes.PermissionDenied, "this token lacks the %s scope", scope)
}
