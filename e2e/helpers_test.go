package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/devissuer"
)

const orderBody = `{"customerId":"c-1","currencyCode":"USD","lineItems":[{"sku":"SKU-1","name":"Mug","quantity":2,"unitPriceMinor":"1200"}]}`

type httpResult struct {
	status int
	body   map[string]any
	raw    string
	header http.Header
}

// do sends a request as the staff client unless header names another
// Authorization ("" for none).
func do(t *testing.T, method, url, body string, header ...string) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+sys.tokens[devissuer.EnvStaff])
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if req.Header.Get("Authorization") == "" {
		req.Header.Del("Authorization")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := httpResult{status: resp.StatusCode, raw: string(raw), header: resp.Header}
	json.Unmarshal(raw, &r.body)
	return r
}

func ingest(path string) string { return "http://" + sys.ingestHTTP + path }
func query(path string) string  { return "http://" + sys.queryHTTP + path }

// create posts a new order and returns its name.
func create(t *testing.T) string {
	t.Helper()
	r := do(t, "POST", ingest("/v1/orders?request_id="+uuid.NewString()), orderBody)
	if r.status != http.StatusAccepted {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	return r.body["name"].(string)
}

// command posts a custom method (":pay", ...) and expects 202.
func command(t *testing.T, name, verb, body string) {
	t.Helper()
	r := do(t, "POST", ingest("/v1/"+name+":"+verb), body, "Idempotency-Key", uuid.NewString())
	if r.status != http.StatusAccepted {
		t.Fatalf("%s %s: %d %s", verb, name, r.status, r.raw)
	}
}

// waitOrder polls GetOrder until cond holds, for at most a minute: long
// enough for redelivery after a visibility timeout.
func waitOrder(t *testing.T, name string, cond func(map[string]any) bool) map[string]any {
	t.Helper()
	var last httpResult
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		last = do(t, "GET", query("/v1/"+name), "")
		if last.status == http.StatusOK && cond(last.body) {
			return last.body
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("order %s never matched; last answer %d %s\n%s", name, last.status, last.raw, sys.logs())
	return nil
}

func inState(s string) func(map[string]any) bool {
	return func(o map[string]any) bool { return o["state"] == s }
}

func events(t *testing.T, name string) []map[string]any {
	t.Helper()
	r := do(t, "GET", query("/v1/"+name+"/events"), "")
	if r.status != http.StatusOK {
		t.Fatalf("events of %s: %d %s", name, r.status, r.raw)
	}
	var out []map[string]any
	list, _ := r.body["events"].([]any)
	for _, e := range list {
		out = append(out, e.(map[string]any))
	}
	return out
}

func eventTypes(evs []map[string]any) string {
	var ts []string
	for _, e := range evs {
		ts = append(ts, fmt.Sprint(e["type"]))
	}
	return strings.Join(ts, ",")
}

func grpcConn(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func commandClient(t *testing.T) omsv1.OrderCommandServiceClient {
	return omsv1.NewOrderCommandServiceClient(grpcAs(t, sys.ingestGRPC, sys.tokens[devissuer.EnvStaff]))
}

func queryClient(t *testing.T) omsv1.OrderQueryServiceClient {
	return omsv1.NewOrderQueryServiceClient(grpcAs(t, sys.queryGRPC, sys.tokens[devissuer.EnvStaff]))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func jsonBody(v any) string {
	b, _ := json.Marshal(v)
	return string(bytes.TrimSpace(b))
}
