package auth

import (
	"context"
	"log/slog"

	"google.golang.org/grpc"

	"github.com/omsdev/oms/pkg/config"
)

// Guard is the trust boundary of one API, the same for ingest and query:
// verify the caller's token, hold it to its rate limit, then check the
// method's scope.
type Guard struct {
	Auth   Config
	Limits RateLimitConfig
}

// LoadGuard reads the AUTH_* and RATE_LIMIT_* variables.
func LoadGuard(env *config.Env) Guard {
	return Guard{Auth: LoadConfig(env), Limits: LoadRateLimitConfig(env)}
}

// Method is what the guard needs to know of an API method.
type Method struct {
	Scope string // required scope; "" for any authenticated caller
	Class string // rate-limit class: ClassCommand or ClassRead
}

// Interceptors builds the chain for methods (full gRPC method name →
// Method); a method not listed is refused. Keys refresh until ctx ends.
func (g Guard) Interceptors(ctx context.Context, log *slog.Logger, methods map[string]Method) ([]grpc.UnaryServerInterceptor, []grpc.StreamServerInterceptor, error) {
	v, err := NewVerifier(ctx, g.Auth, log)
	if err != nil {
		return nil, nil, err
	}
	scopes := make(map[string]string, len(methods))
	for m, spec := range methods {
		scopes[m] = spec.Scope
	}
	limiter := NewRateLimiter(g.Limits, func(m string) string { return methods[m].Class })
	return []grpc.UnaryServerInterceptor{v.UnaryInterceptor(), limiter.UnaryInterceptor(), RequireScopes(scopes)},
		[]grpc.StreamServerInterceptor{v.StreamInterceptor(), RequireScopesStream(scopes)}, nil
}
