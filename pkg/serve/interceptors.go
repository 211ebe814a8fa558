package serve

import (
	"context"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/omsdev/oms/pkg/logging"
)

const correlationHeader = "x-correlation-id"

// correlationInterceptor takes the caller's correlation id (X-Request-Id,
// X-Correlation-Id or the trace id of traceparent) or makes one, puts it in
// the context for logs and the queue, and returns it in a response header.
func correlationInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	id := ""
	for _, k := range []string{"x-correlation-id", "x-request-id"} {
		if v := md.Get(k); len(v) > 0 && id == "" {
			id = logging.SanitizeCorrelationID(v[0])
		}
	}
	if v := md.Get("traceparent"); id == "" && len(v) > 0 {
		id = logging.CorrelationFromTraceparent(v[0])
	}
	if id == "" {
		id = logging.NewCorrelationID()
	}
	grpc.SetHeader(ctx, metadata.Pairs(correlationHeader, id))
	return h(logging.WithCorrelationID(ctx, id), req)
}

// errorInterceptor keeps internal detail (SQL, driver or stack text) away
// from clients: an error that is not a deliberate status becomes a generic
// INTERNAL, and the real error is logged with the correlation id.
func errorInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		if err == nil {
			return resp, nil
		}
		st, ok := status.FromError(err)
		switch {
		case !ok || st.Code() == codes.Unknown:
			log.ErrorContext(ctx, "request failed", "method", info.FullMethod, "err", err)
			return nil, status.Error(codes.Internal, "internal error")
		case st.Code() == codes.Internal || st.Code() == codes.Unavailable:
			log.ErrorContext(ctx, "request failed", "method", info.FullMethod, "code", st.Code().String(), "err", err)
		default:
			log.DebugContext(ctx, "request refused", "method", info.FullMethod, "code", st.Code().String(), "err", err)
		}
		return nil, err
	}
}
