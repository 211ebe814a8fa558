package serve

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"
)

// seenQuery records what its GetOrder saw of the call.
type seenQuery struct {
	omsv1.UnimplementedOrderQueryServiceServer
	mu       sync.Mutex
	incoming metadata.MD
	outgoing metadata.MD
	traceID  string
	method   string
}

func (q *seenQuery) GetOrder(ctx context.Context, req *omsv1.GetOrderRequest) (*omsv1.Order, error) {
	if req.Name == "orders/slow" {
		<-ctx.Done()
		return nil, fmt.Errorf("store: %w", ctx.Err()) // not a status
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.incoming, _ = metadata.FromIncomingContext(ctx)
	q.outgoing, _ = metadata.FromOutgoingContext(ctx)
	q.traceID = trace.SpanContextFromContext(ctx).TraceID().String()
	q.method, _ = grpc.Method(ctx)
	grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "t"))
	return &omsv1.Order{Name: req.Name}, nil
}

// The gateway's in-process calls look to the service as calls over the
// wire do: the request's headers as incoming metadata (none as outgoing),
// the method, the caller's trace context, the server's size limits, and a
// timed out call is DEADLINE_EXCEEDED, not an internal error.
func TestGatewayCallsInProcessAsOverTheWire(t *testing.T) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	svc := &seenQuery{}
	s := DefaultSettings()
	s.GRPCMaxRecvBytes = 1 << 10
	var unaryCalls sync.Map
	count := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		unaryCalls.Store(info.FullMethod, true)
		return h(ctx, req)
	}
	srv := start(t, API{Settings: s, UnaryInterceptors: []grpc.UnaryServerInterceptor{count},
		Register: func(s grpc.ServiceRegistrar) { omsv1.RegisterOrderQueryServiceServer(s, svc) }})
	base := "http://" + srv.HTTPAddr()
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"

	req, _ := http.NewRequest("GET", base+"/v1/orders/1", nil)
	req.Header.Set("Authorization", "Bearer tok")
	req.Header.Set("X-Request-Id", "req-1")
	req.Header.Set("Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"orders/1"`) || resp.Header.Get("X-Correlation-Id") != "req-1" {
		t.Fatalf("%s %s, X-Correlation-Id %q", resp.Status, body, resp.Header.Get("X-Correlation-Id"))
	}
	svc.mu.Lock()
	if got := svc.incoming.Get("authorization"); len(got) != 1 || got[0] != "Bearer tok" {
		t.Errorf("incoming authorization %q", got)
	}
	if len(svc.outgoing) != 0 {
		t.Errorf("the service sees outgoing metadata %v: a call it made would forward the caller's", svc.outgoing)
	}
	if svc.traceID != traceID {
		t.Errorf("trace id %q, want the caller's %s", svc.traceID, traceID)
	}
	if svc.method != omsv1.OrderQueryService_GetOrder_FullMethodName {
		t.Errorf("grpc.Method = %q", svc.method)
	}
	svc.mu.Unlock()
	if _, ok := unaryCalls.Load(omsv1.OrderQueryService_GetOrder_FullMethodName); !ok {
		t.Error("the caller's interceptor did not run for the HTTP call")
	}

	// The server's receive limit holds for HTTP requests too.
	big := base + "/v1/orders/1?read_mask=" + strings.TrimSuffix(strings.Repeat("id,", 600), ",")
	if resp, err := http.Get(big); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a request over GRPC_MAX_RECV_BYTES: %s, want 429 (RESOURCE_EXHAUSTED)", resp.Status)
	}

	// A call past its deadline is DEADLINE_EXCEEDED (504), however the
	// handler words its error.
	req, _ = http.NewRequest("GET", base+"/v1/orders/slow", nil)
	req.Header.Set("Grpc-Timeout", "100m")
	start := time.Now()
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusGatewayTimeout || time.Since(start) > 5*time.Second {
		t.Errorf("a call past its deadline: %s after %s, want 504", resp.Status, time.Since(start))
	}

	// Over gRPC, the same trace context reaches the service.
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(t.Context(), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if _, err := omsv1.NewOrderQueryServiceClient(conn).GetOrder(ctx, &omsv1.GetOrderRequest{Name: "orders/2"}); err != nil {
		t.Fatal(err)
	}
	svc.mu.Lock()
	if svc.traceID != traceID {
		t.Errorf("over gRPC: trace id %q, want the caller's %s", svc.traceID, traceID)
	}
	svc.mu.Unlock()
}

// moveMessage hands over every field, nested messages and lists included.
func TestMoveMessage(t *testing.T) {
	src := &omsv1.Order{Name: "orders/x", CustomerId: "c", State: omsv1.Order_PAID,
		LineItems: []*omsv1.LineItem{{Sku: "a", Quantity: 2}}, Payment: &omsv1.Payment{Reference: "r"}, Version: 3}
	src.ProtoReflect().SetUnknown([]byte{0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01}) // field 536870911, varint 1
	dst := new(omsv1.Order)
	moveMessage(dst, src)
	if dst.Name != "orders/x" || dst.CustomerId != "c" || dst.State != omsv1.Order_PAID || len(dst.LineItems) != 1 ||
		dst.Payment.GetReference() != "r" || dst.Version != 3 || len(dst.ProtoReflect().GetUnknown()) != 6 {
		t.Errorf("moved %v", dst)
	}
}
