package serve

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"
)

// fakeCommands refuses CreateOrder with a bare INVALID_ARGUMENT whose
// message looks like a decoder's, to show a service's own refusal is
// passed on as it is.
type fakeCommands struct {
	omsv1.UnimplementedOrderCommandServiceServer
}

func (fakeCommands) CreateOrder(ctx context.Context, req *omsv1.CreateOrderRequest) (*omsv1.CommandAcceptance, error) {
	return nil, status.Error(codes.InvalidArgument, "invalid character in the service's own words")
}

// startCommands serves fakeCommands and its gateway on loopback.
func startCommands(t *testing.T) string {
	t.Helper()
	s := DefaultSettings()
	srv, err := Listen(API{
		Name: "test", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Settings: s,
		Register: func(s grpc.ServiceRegistrar) { omsv1.RegisterOrderCommandServiceServer(s, fakeCommands{}) },
		Gateway: func(ctx context.Context, mux *runtime.ServeMux, conn grpc.ClientConnInterface) error {
			return omsv1.RegisterOrderCommandServiceHandlerClient(ctx, mux, omsv1.NewOrderCommandServiceClient(conn))
		},
		MaxBodyBytes: 1 << 20, DrainTimeout: 5 * time.Second,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	if err := waitFor(5*time.Second, func() error { return HealthCheck(srv.HTTPAddr()) }); err != nil {
		t.Fatalf("server never became healthy: %v", err)
	}
	return "http://" + srv.HTTPAddr()
}

type errorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Details []struct {
		Type            string `json:"@type"`
		FieldViolations []struct {
			Field       string `json:"field"`
			Description string `json:"description"`
		} `json:"fieldViolations"`
	} `json:"details"`
}

// A body the gateway cannot decode is a 400 whose BadRequest detail names
// "body" and says why, briefly, however long the input it quotes.
func TestUndecodableBodyNamesTheBody(t *testing.T) {
	t.Parallel()
	base := startCommands(t)
	for _, tc := range []struct {
		name, body, want string
	}{
		{"truncated", `{"customerId":`, "unexpected EOF"},
		{"not JSON", `customer`, "invalid character"},
		{"unknown field", `{"customerId":"c","discount":5}`, `unknown field "discount"`},
		{"wrong type", `{"customerId":5}`, "customerId"},
		{"invalid UTF-8", "{\"customerId\":\"c\xff\"}", "UTF-8"},
		{"huge unknown field", `{"` + strings.Repeat("x", 100_000) + `":1}`, "unknown field"},
	} {
		resp, err := http.Post(base+"/v1/orders", "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var got errorBody
		if err := json.Unmarshal(raw, &got); err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d %.300s (%v), want a 400 in the error shape", tc.name, resp.StatusCode, raw, err)
			continue
		}
		if len(got.Details) != 1 || len(got.Details[0].FieldViolations) != 1 ||
			got.Details[0].Type != "type.googleapis.com/google.rpc.BadRequest" {
			t.Errorf("%s: details %.300s, want one BadRequest violation", tc.name, raw)
			continue
		}
		v := got.Details[0].FieldViolations[0]
		if v.Field != "body" || !strings.Contains(v.Description, tc.want) {
			t.Errorf("%s: violation %q: %q, want body: …%s…", tc.name, v.Field, v.Description, tc.want)
		}
		if n := utf8.RuneCountInString(v.Description); n > maxDetailRunes+1 || len(got.Message) > 4*(maxDetailRunes+10) {
			t.Errorf("%s: %d runes of description, message of %d bytes: the input is echoed", tc.name, n, len(got.Message))
		}
	}

	// The service's own refusal, even a bare one, is passed on as it is.
	resp, err := http.Post(base+"/v1/orders", "application/json", strings.NewReader(`{"customerId":"c"}`))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got errorBody
	if err := json.Unmarshal(raw, &got); err != nil || resp.StatusCode != http.StatusBadRequest ||
		got.Message != "invalid character in the service's own words" || len(got.Details) != 0 {
		t.Errorf("service refusal: %d %s", resp.StatusCode, raw)
	}
}
