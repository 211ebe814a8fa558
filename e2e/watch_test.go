package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/devissuer"
)

// next is the watch's next order, failing after 30 s (a command goes
// through the queue and the processor first).
func next(t *testing.T, st grpc.ServerStreamingClient[omsv1.WatchOrderResponse]) *omsv1.Order {
	t.Helper()
	type result struct {
		r   *omsv1.WatchOrderResponse
		err error
	}
	c := make(chan result, 1)
	go func() {
		r, err := st.Recv()
		c <- result{r, err}
	}()
	select {
	case r := <-c:
		if r.err != nil {
			t.Fatalf("watch: %v\n%s", r.err, sys.logs())
		}
		return r.r.Order
	case <-time.After(30 * time.Second):
		t.Fatalf("watch: nothing within 30s\n%s", sys.logs())
	}
	return nil
}

func atVersion(t *testing.T, o *omsv1.Order, v int64, state omsv1.Order_State) {
	t.Helper()
	if o.GetVersion() != v || o.GetState() != state {
		t.Fatalf("watch sent version %d %s, want %d %s", o.GetVersion(), o.GetState(), v, state)
	}
}

// createMugs creates, as staff over gRPC, an order of customer for
// quantity mugs at unitPrice each, and returns its name.
func createMugs(t *testing.T, ctx context.Context, cc omsv1.OrderCommandServiceClient, customer string, quantity int32, unitPrice int64) string {
	t.Helper()
	acc, err := cc.CreateOrder(ctx, &omsv1.CreateOrderRequest{
		RequestId: uuid.NewString(),
		Order: &omsv1.Order{CustomerId: customer, CurrencyCode: "USD", LineItems: []*omsv1.LineItem{
			{Sku: "SKU-1", Name: "Mug", Quantity: quantity, UnitPriceMinor: unitPrice},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return acc.Name
}

// A watch started right after the create's 202 sees the order appear, then
// each command as it commits; after a disconnect it resumes from the last
// version it saw and gets only what came after.
func TestWatchOrderFollowsLifecycleAndResumes(t *testing.T) {
	t.Parallel()
	cc, qc := commandClient(t), queryClient(t)
	ctx := ctxT(t)
	name := createMugs(t, ctx, cc, "c-watch", 2, 1200)
	wctx, disconnect := context.WithCancel(ctx)
	st, err := qc.WatchOrder(wctx, &omsv1.WatchOrderRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	atVersion(t, next(t, st), 1, omsv1.Order_CREATED)
	if _, err := cc.PayOrder(ctx, &omsv1.PayOrderRequest{Name: name, RequestId: uuid.NewString(), PaymentReference: "ch_w", AmountMinor: 2400}); err != nil {
		t.Fatal(err)
	}
	paid := next(t, st)
	atVersion(t, paid, 2, omsv1.Order_PAID)
	if paid.Payment.GetReference() != "ch_w" || len(paid.LineItems) != 1 {
		t.Fatalf("paid order: %v", paid)
	}
	if _, err := cc.ShipOrder(ctx, &omsv1.ShipOrderRequest{Name: name, RequestId: uuid.NewString(), Carrier: "UPS", TrackingNumber: "1ZW"}); err != nil {
		t.Fatal(err)
	}
	atVersion(t, next(t, st), 3, omsv1.Order_SHIPPED)

	// Disconnected, the order moves on; resuming from version 3 sends the
	// one change after it, not the states already seen.
	disconnect()
	if _, err := cc.DeliverOrder(ctx, &omsv1.DeliverOrderRequest{Name: name, RequestId: uuid.NewString()}); err != nil {
		t.Fatal(err)
	}
	if _, err := qc.GetOrder(ctx, &omsv1.GetOrderRequest{Name: name, MinVersion: 4}); err != nil {
		t.Fatal(err)
	}
	st, err = qc.WatchOrder(ctx, &omsv1.WatchOrderRequest{Name: name, SinceVersion: 3})
	if err != nil {
		t.Fatal(err)
	}
	delivered := next(t, st)
	atVersion(t, delivered, 4, omsv1.Order_DELIVERED)
	if delivered.Shipment.GetDeliverTime() == nil {
		t.Fatalf("delivered order: %v", delivered)
	}
	// Up to date: nothing more arrives.
	qctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	st, err = qc.WatchOrder(qctx, &omsv1.WatchOrderRequest{Name: name, SinceVersion: 4})
	if err == nil {
		var r *omsv1.WatchOrderResponse
		r, err = st.Recv()
		if r != nil {
			t.Fatalf("up to date, yet sent %v", r)
		}
	}
	if err == nil || ctx.Err() != nil {
		t.Fatalf("an up-to-date watch: %v", err)
	}
}

// Over HTTP, with a customer's token, a watch is newline-delimited JSON:
// one {"result": {"order": ...}} a line as each change commits.
func TestWatchOrderOverHTTPStreamsLines(t *testing.T) {
	t.Parallel()
	tok := sys.tokens[devissuer.EnvCustomerA]
	auth := []string{"Authorization", "Bearer " + tok}
	r := do(t, "POST", ingest("/v1/orders?request_id="+uuid.NewString()),
		`{"customerId":"customer-a","currencyCode":"USD","lineItems":[{"sku":"SKU-1","name":"Mug","quantity":1,"unitPriceMinor":"900"}]}`, auth...)
	if r.status != http.StatusAccepted {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	name := r.body["name"].(string)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", query("/v1/"+name+":watch?readMask=state,payment"), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("watch: %s %s", resp.Status, b)
	}
	lines := bufio.NewReader(resp.Body)
	line := func() map[string]any {
		t.Helper()
		b, err := lines.ReadBytes('\n')
		if err != nil {
			t.Fatalf("watch line: %v (%q)\n%s", err, b, sys.logs())
		}
		var chunk struct{ Result json.RawMessage }
		var w omsv1.WatchOrderResponse
		if err := json.Unmarshal(b, &chunk); err != nil || protojson.Unmarshal(chunk.Result, &w) != nil {
			t.Fatalf("watch line %q is not {\"result\": WatchOrderResponse}", b)
		}
		var o struct{ Order map[string]any }
		json.Unmarshal(chunk.Result, &o)
		return o.Order
	}
	o := line()
	if o["state"] != "CREATED" || o["version"] != "1" || len(o) != 2 {
		t.Fatalf("first line: %v (want the mask's fields and the version)", o)
	}
	command(t, name, "pay", `{"paymentReference":"ch_h","amountMinor":"900"}`)
	o = line()
	if p, _ := o["payment"].(map[string]any); o["state"] != "PAID" || o["version"] != "2" || p["reference"] != "ch_h" {
		t.Fatalf("second line: %v", o)
	}

	// Another customer's watch of it is refused as GetOrder would: nothing
	// is sent, and once the order has not appeared for QUERY_MAX_WAIT, the
	// answer is GetOrder's 404, the same Status (no stream has started).
	other := []string{"Authorization", "Bearer " + sys.tokens[devissuer.EnvCustomerB]}
	r = do(t, "GET", query("/v1/"+name+":watch"), "", other...)
	get := do(t, "GET", query("/v1/"+name), "", other...)
	if r.status != http.StatusNotFound || r.body["code"] != float64(5) || r.raw != get.raw || get.status != r.status {
		t.Fatalf("another customer's watch: %d %s, want GetOrder's %d %s", r.status, r.raw, get.status, get.raw)
	}
}

// Read your writes: GetOrder with min_version, right after a command's
// 202, returns the order at (at least) the version the command produces,
// over gRPC and HTTP, without polling.
func TestGetOrderMinVersionReadsYourWrite(t *testing.T) {
	t.Parallel()
	cc, qc := commandClient(t), queryClient(t)
	ctx := ctxT(t)
	name := createMugs(t, ctx, cc, "c-ryw", 1, 1500)
	// The create is still queued: the order does not exist yet, and the
	// read waits for it.
	o, err := qc.GetOrder(ctx, &omsv1.GetOrderRequest{Name: name, MinVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	if o.Version != 1 || o.State != omsv1.Order_CREATED {
		t.Fatalf("after create: %v", o)
	}
	if _, err := cc.PayOrder(ctx, &omsv1.PayOrderRequest{Name: name, RequestId: uuid.NewString(), PaymentReference: "ch_r", AmountMinor: 1500}); err != nil {
		t.Fatal(err)
	}
	o, err = qc.GetOrder(ctx, &omsv1.GetOrderRequest{Name: name, MinVersion: 2})
	if err != nil {
		t.Fatal(err)
	}
	if o.Version != 2 || o.State != omsv1.Order_PAID || o.Payment.GetReference() != "ch_r" {
		t.Fatalf("after pay: %v", o)
	}

	command(t, name, "ship", `{"carrier":"UPS","trackingNumber":"1ZR"}`)
	r := do(t, "GET", query("/v1/"+name+"?minVersion=3"), "")
	if r.status != http.StatusOK || r.body["state"] != "SHIPPED" || r.body["version"] != strconv.Itoa(3) {
		t.Fatalf("after ship over HTTP: %d %s", r.status, r.raw)
	}
	// A version the order never reaches: DEADLINE_EXCEEDED at the
	// caller's deadline, saying how far it got.
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := qc.GetOrder(dctx, &omsv1.GetOrderRequest{Name: name, MinVersion: 9}); err == nil || dctx.Err() == nil {
		t.Fatalf("min_version 9: %v", err)
	}
}
