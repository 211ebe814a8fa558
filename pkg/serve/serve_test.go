package serve

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"
)

// slowQuery answers GetOrder after a delay, so a request can be in flight
// when shutdown starts.
type slowQuery struct {
	omsv1.UnimplementedOrderQueryServiceServer
	started chan struct{}
}

func (s *slowQuery) GetOrder(ctx context.Context, req *omsv1.GetOrderRequest) (*omsv1.Order, error) {
	if req.Name == "orders/boom" {
		return nil, io.ErrUnexpectedEOF // not a status: must not leak
	}
	close(s.started)
	time.Sleep(500 * time.Millisecond)
	return &omsv1.Order{Name: req.Name}, nil
}

func startServer(t *testing.T, svc *slowQuery) (*Server, context.CancelFunc, chan error) {
	t.Helper()
	s := DefaultSettings()
	s.AdminAddr = "127.0.0.1:0"
	srv, err := Listen(API{
		Name: "test", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Settings: s,
		Register: func(s grpc.ServiceRegistrar) { omsv1.RegisterOrderQueryServiceServer(s, svc) },
		Gateway: func(ctx context.Context, mux *runtime.ServeMux, conn grpc.ClientConnInterface) error {
			return omsv1.RegisterOrderQueryServiceHandlerClient(ctx, mux, omsv1.NewOrderQueryServiceClient(conn))
		},
		MaxBodyBytes: 1024, DrainTimeout: 5 * time.Second,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + srv.HTTPAddr() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("server never became ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return srv, cancel, done
}

// A request in flight when shutdown begins completes; readiness fails
// during the drain; Serve returns cleanly.
func TestShutdownFinishesRequestsInFlight(t *testing.T) {
	svc := &slowQuery{started: make(chan struct{})}
	srv, cancel, done := startServer(t, svc)
	base := "http://" + srv.HTTPAddr()

	result := make(chan int, 1)
	go func() {
		resp, err := http.Get(base + "/v1/orders/1")
		if err != nil {
			result <- -1
			return
		}
		resp.Body.Close()
		result <- resp.StatusCode
	}()
	<-svc.started
	cancel() // SIGTERM
	if code := <-result; code != http.StatusOK {
		t.Errorf("in-flight request ended with %d, want 200", code)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("server still accepts connections after shutdown")
	}
}

func TestServerEdges(t *testing.T) {
	svc := &slowQuery{started: make(chan struct{})}
	srv, cancel, done := startServer(t, svc)
	defer func() { cancel(); <-done }()
	base := "http://" + srv.HTTPAddr()

	resp, err := http.Get(base + "/v1/orders/boom")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 || strings.Contains(string(body), "EOF") || status.Code(nil) != codes.OK {
		t.Errorf("internal error leaked or wrong status: %d %s", resp.StatusCode, body)
	}

	resp, err = http.Post(base+"/v1/orders/1", "application/json", strings.NewReader(strings.Repeat("x", 2048)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: %d, want 413", resp.StatusCode)
	}

	// /metrics is on the admin port only; health is on both.
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("public /metrics: %d, want 404", resp.StatusCode)
	}
	admin := "http://" + srv.AdminAddr()
	for _, path := range []string{"/healthz", "/readyz"} {
		for _, b := range []string{base, admin} {
			resp, err := http.Get(b + path)
			if err != nil {
				t.Errorf("GET %s%s: %v", b, path, err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s%s: %d", b, path, resp.StatusCode)
			}
		}
	}
	resp, err = http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`oms_grpc_requests_total{code="Internal",method="/oms.v1.OrderQueryService/GetOrder",service="test"}`,
		`route="/v1/{name=orders/*}"`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if err := HealthCheck(srv.HTTPAddr()); err != nil {
		t.Errorf("HealthCheck: %v", err)
	}
	if err := HealthCheck("127.0.0.1:1"); err == nil {
		t.Error("HealthCheck of nothing succeeded")
	}
}
