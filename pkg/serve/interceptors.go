package serve

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/omsdev/oms/pkg/logging"
	"github.com/omsdev/oms/pkg/tracing"
)

const correlationHeader = "x-correlation-id"

// correlationInterceptor takes the caller's correlation id (X-Request-Id,
// X-Correlation-Id or the trace id of traceparent) or makes one, puts it in
// the context for logs and the queue, and returns it in a response header.
func correlationInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	id := correlationID(ctx)
	grpc.SetHeader(ctx, metadata.Pairs(correlationHeader, id))
	return h(logging.WithCorrelationID(ctx, id), req)
}

// correlationStreamInterceptor does the same for streams.
func correlationStreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	id := correlationID(ss.Context())
	ss.SetHeader(metadata.Pairs(correlationHeader, id))
	return h(srv, &contextStream{ss, logging.WithCorrelationID(ss.Context(), id)})
}

func correlationID(ctx context.Context) string {
	id := ""
	for _, k := range []string{"x-correlation-id", "x-request-id"} {
		if v := metadata.ValueFromIncomingContext(ctx, k); len(v) > 0 && id == "" {
			id = logging.SanitizeCorrelationID(v[0])
		}
	}
	if id == "" {
		if v := metadata.ValueFromIncomingContext(ctx, "traceparent"); len(v) > 0 {
			id = logging.CorrelationFromTraceparent(v[0])
		}
	}
	if id == "" {
		id = logging.NewCorrelationID()
	}
	return id
}

// contextStream is a stream with a context of its own.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }

// errorInterceptor keeps internal detail (SQL, driver or stack text) away
// from clients: an error that is not a deliberate status, or a panic,
// becomes a generic INTERNAL, and the real error is logged with the
// correlation id. Deliberate statuses (UNAUTHENTICATED from an auth
// interceptor, say) pass unchanged.
func errorInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if p := recover(); p != nil {
				err = panicked(ctx, log, info.FullMethod, p)
			}
		}()
		resp, err = h(ctx, req)
		if err != nil {
			return nil, hideInternal(ctx, log, info.FullMethod, err)
		}
		return resp, nil
	}
}

// errorStreamInterceptor does the same for streams.
func errorStreamInterceptor(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = panicked(ss.Context(), log, info.FullMethod, p)
			}
		}()
		if err := h(srv, ss); err != nil {
			return hideInternal(ss.Context(), log, info.FullMethod, err)
		}
		return nil
	}
}

func panicked(ctx context.Context, log *slog.Logger, method string, p any) error {
	log.ErrorContext(ctx, "request panicked", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	return status.Error(codes.Internal, "internal error")
}

func hideInternal(ctx context.Context, log *slog.Logger, method string, err error) error {
	st, ok := status.FromError(err)
	switch {
	case !ok || st.Code() == codes.Unknown:
		log.ErrorContext(ctx, "request failed", "method", method, "err", err)
		return status.Error(codes.Internal, "internal error")
	case st.Code() == codes.Internal || st.Code() == codes.Unavailable:
		log.ErrorContext(ctx, "request failed", "method", method, "code", st.Code().String(), "err", err)
	default:
		log.DebugContext(ctx, "request refused", "method", method, "code", st.Code().String(), "err", err)
	}
	return err
}

// continueTrace puts the caller's trace context in the call's context when
// no spans are recorded (tracing.Enabled is false); otelgrpc does it
// otherwise.
func continueTrace(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	return h(tracing.ContinueRemote(ctx, incoming(ctx)), req)
}

func continueTraceStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx := ss.Context()
	if next := tracing.ContinueRemote(ctx, incoming(ctx)); next != ctx {
		ss = &contextStream{ss, next}
	}
	return h(srv, ss)
}

// continueTraceHTTP is continueTrace for HTTP requests; otelhttp does it
// when spans are recorded.
func continueTraceHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ctx := tracing.ContinueRemote(r.Context(), r.Header.Get); ctx != r.Context() {
			r = r.WithContext(ctx)
		}
		next.ServeHTTP(w, r)
	})
}

// incoming looks up a key of the call's incoming metadata.
func incoming(ctx context.Context) func(string) string {
	return func(key string) string {
		if v := metadata.ValueFromIncomingContext(ctx, key); len(v) > 0 {
			return v[0]
		}
		return ""
	}
}
