package e2e

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderpb"
	omsv1 "github.com/omsdev/oms/proto/oms/v1"
)

func TestLifecycleOverHTTPAndGRPC(t *testing.T) {
	t.Parallel()
	corr := "corr-" + uuid.NewString()
	r := do(t, "POST", ingest("/v1/orders?request_id="+uuid.NewString()), orderBody, "X-Request-Id", corr)
	if r.status != http.StatusAccepted || r.header.Get("X-Correlation-Id") != corr {
		t.Fatalf("create: %d %s (correlation %q)", r.status, r.raw, r.header.Get("X-Correlation-Id"))
	}
	name := r.body["name"].(string)
	waitOrder(t, name, inState("CREATED"))
	command(t, name, "pay", `{"paymentReference":"ch_1","amountMinor":"2400"}`)
	waitOrder(t, name, inState("PAID"))
	command(t, name, "ship", `{"carrier":"UPS","trackingNumber":"1Z999"}`)
	waitOrder(t, name, inState("SHIPPED"))
	command(t, name, "deliver", `{}`)
	o := waitOrder(t, name, inState("DELIVERED"))
	if o["version"] != "4" || o["totalMinor"] != "2400" {
		t.Errorf("delivered order over HTTP: %v", o)
	}
	if got := eventTypes(events(t, name)); got != "order.created,order.paid,order.shipped,order.delivered" {
		t.Errorf("history: %s", got)
	}

	got, err := queryClient(t).GetOrder(ctxT(t), &omsv1.GetOrderRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	if got.State != omsv1.Order_DELIVERED || got.Version != 4 || got.Shipment.GetTrackingNumber() != "1Z999" ||
		got.Payment.GetReference() != "ch_1" || got.Shipment.GetDeliverTime() == nil || len(got.LineItems) != 1 {
		t.Errorf("delivered order over gRPC: %v", got)
	}
	// The correlation id travelled from the HTTP request to the processor.
	if !strings.Contains(sys.logs(), corr) {
		t.Errorf("processor logs never mention correlation id %s", corr)
	}

	// create -> cancel, over gRPC.
	cc := commandClient(t)
	acc, err := cc.CreateOrder(ctxT(t), &omsv1.CreateOrderRequest{
		RequestId: uuid.NewString(),
		Order: &omsv1.Order{CustomerId: "c-2", CurrencyCode: "EUR", LineItems: []*omsv1.LineItem{
			{Sku: "SKU-9", Name: "Teapot", Quantity: 1, UnitPriceMinor: 3500},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitOrder(t, acc.Name, inState("CREATED"))
	if _, err := cc.CancelOrder(ctxT(t), &omsv1.CancelOrderRequest{Name: acc.Name, RequestId: uuid.NewString(), Reason: "changed mind"}); err != nil {
		t.Fatal(err)
	}
	o = waitOrder(t, acc.Name, inState("CANCELLED"))
	if c, _ := o["cancellation"].(map[string]any); c["reason"] != "changed mind" {
		t.Errorf("cancelled order: %v", o)
	}
	if got := eventTypes(events(t, acc.Name)); got != "order.created,order.cancelled" {
		t.Errorf("history: %s", got)
	}
}

// The seed's AppSync query getOrder(id) { id status }: only those fields.
func TestReadMaskReturnsOnlySelectedFields(t *testing.T) {
	t.Parallel()
	name := create(t)
	waitOrder(t, name, inState("CREATED"))

	r := do(t, "GET", query("/v1/"+name+"?read_mask=id,state"), "")
	if r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	keys := make([]string, 0, len(r.body))
	for k := range r.body {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if strings.Join(keys, ",") != "id,state" || r.body["state"] != "CREATED" || "orders/"+r.body["id"].(string) != name {
		t.Errorf("masked response: %s", r.raw)
	}

	got, err := queryClient(t).GetOrder(ctxT(t), &omsv1.GetOrderRequest{
		Name: name, ReadMask: &fieldmaskpb.FieldMask{Paths: []string{"id", "state"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &omsv1.Order{Id: strings.TrimPrefix(name, "orders/"), State: omsv1.Order_CREATED}
	if !proto.Equal(got, want) {
		t.Errorf("gRPC masked response %v, want %v", got, want)
	}
	if r := do(t, "GET", query("/v1/"+name+"?read_mask=state,lineItems"), ""); r.status != http.StatusOK || r.body["id"] != nil ||
		len(r.body["lineItems"].([]any)) != 1 {
		t.Errorf("mask without id: %d %s", r.status, r.raw)
	}
	if r := do(t, "GET", query("/v1/"+name+"?read_mask=password"), ""); r.status != http.StatusBadRequest {
		t.Errorf("unknown mask field: %d %s", r.status, r.raw)
	}
}

func TestRetriedRequestHasOneEffect(t *testing.T) {
	t.Parallel()
	reqID := uuid.NewString()
	customer := "c-" + uuid.NewString()
	body := strings.Replace(orderBody, `"c-1"`, `"`+customer+`"`, 1)
	var accs []map[string]any
	for i := range 3 {
		var r httpResult
		if i == 1 {
			r = do(t, "POST", ingest("/v1/orders"), body, "Idempotency-Key", reqID)
		} else {
			r = do(t, "POST", ingest("/v1/orders?request_id="+reqID), body)
		}
		if r.status != http.StatusAccepted {
			t.Fatalf("attempt %d: %d %s", i, r.status, r.raw)
		}
		accs = append(accs, r.body)
	}
	for _, a := range accs[1:] {
		if a["name"] != accs[0]["name"] || a["commandId"] != reqID || a["requestIdGenerated"] != nil {
			t.Errorf("acceptances differ: %v vs %v", a, accs[0])
		}
	}
	name := accs[0]["name"].(string)
	waitOrder(t, name, inState("CREATED"))
	time.Sleep(500 * time.Millisecond) // give any duplicate time to land
	list := do(t, "GET", query(`/v1/orders?filter=customer_id="`+customer+`"`), "")
	if orders, _ := list.body["orders"].([]any); len(orders) != 1 {
		t.Errorf("orders for the customer: %s", list.raw)
	}
	if evs := events(t, name); len(evs) != 1 {
		t.Errorf("history has %d entries: %s", len(evs), eventTypes(evs))
	}
}

func TestIllegalTransitionIsRecordedNotRetried(t *testing.T) {
	t.Parallel()
	name := create(t)
	waitOrder(t, name, inState("CREATED"))
	command(t, name, "cancel", `{"reason":"duplicate order"}`)
	waitOrder(t, name, inState("CANCELLED"))
	command(t, name, "ship", `{"carrier":"UPS","trackingNumber":"1Z"}`)

	var evs []map[string]any
	waitFor(30*time.Second, func() error {
		evs = events(t, name)
		if len(evs) < 3 {
			return context.DeadlineExceeded
		}
		return nil
	})
	if got := eventTypes(evs); got != "order.created,order.cancelled,command.rejected" {
		t.Fatalf("history: %s\n%s", got, sys.logs())
	}
	if evs[2]["reason"] != "cannot ship an order in state CANCELLED" || evs[2]["command"] != "ship" {
		t.Errorf("rejection: %v", evs[2])
	}
	o := do(t, "GET", query("/v1/"+name), "").body
	if o["state"] != "CANCELLED" || o["version"] != "2" || o["shipment"] != nil {
		t.Errorf("order changed by a rejected command: %v", o)
	}
}

func TestBadRequestsEnqueueNothing(t *testing.T) {
	t.Parallel()
	// An ingest of its own, on queues nothing consumes, so the queue's
	// depth shows exactly what was enqueued.
	base, _, depth := isolatedIngest(t)
	name := "orders/" + uuid.NewString()
	cases := []struct {
		name, path, body string
		status           int
		fields           []string
	}{
		{"malformed JSON", "/v1/orders", `{"customerId":`, 400, nil},
		{"unknown field", "/v1/orders", `{"customerId":"c","currencyCode":"USD","lineItems":[],"discount":5}`, 400, nil},
		{"no line items", "/v1/orders", `{"customerId":"c","currencyCode":"USD"}`, 400, []string{"order.line_items"}},
		{"bad quantity and currency", "/v1/orders",
			`{"customerId":"c","currencyCode":"XXX","lineItems":[{"sku":"s","name":"n","quantity":0,"unitPriceMinor":"1"}]}`,
			400, []string{"order.currency_code", "order.line_items[0].quantity"}},
		{"total disagrees", "/v1/orders",
			`{"customerId":"c","currencyCode":"USD","totalMinor":"1","lineItems":[{"sku":"s","name":"n","quantity":1,"unitPriceMinor":"5"}]}`,
			400, []string{"order.total_minor"}},
		{"bad order id", "/v1/orders?order_id=42", orderBody, 400, []string{"order_id"}},
		{"bad request id", "/v1/orders?request_id=has%20space", orderBody, 400, []string{"request_id"}},
		{"pay without reference", "/v1/" + name + ":pay", `{"amountMinor":"5"}`, 400, []string{"payment_reference"}},
		{"ship a malformed name", "/v1/orders/not-a-uuid:ship", `{"carrier":"c","trackingNumber":"t"}`, 400, []string{"name"}},
		{"body over 1 MiB", "/v1/orders", `{"customerId":"` + strings.Repeat("x", 2<<20) + `"}`, 413, nil},
	}
	for _, tc := range cases {
		r := do(t, "POST", base+tc.path, tc.body)
		if r.status != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, r.status, r.raw, tc.status)
			continue
		}
		var fields []string
		details, _ := r.body["details"].([]any)
		for _, d := range details {
			vs, _ := d.(map[string]any)["fieldViolations"].([]any)
			for _, v := range vs {
				fields = append(fields, v.(map[string]any)["field"].(string))
			}
		}
		if tc.fields != nil && strings.Join(fields, ",") != strings.Join(tc.fields, ",") {
			t.Errorf("%s: field violations %v, want %v", tc.name, fields, tc.fields)
		}
	}
	if n := depth(); n != 0 {
		t.Errorf("bad requests enqueued %d messages", n)
	}
	if r := do(t, "POST", base+"/v1/orders", orderBody); r.status != http.StatusAccepted {
		t.Fatalf("valid request: %d %s", r.status, r.raw)
	}
	if n := depth(); n != 1 {
		t.Errorf("after one valid request the queue holds %d messages", n)
	}
}

func TestGarbageMessageGoesToDeadLetterQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	garbage := "this is not an order command " + uuid.NewString()
	_, err := sys.sqs.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl: aws.String(sys.urls.Command), MessageBody: aws.String(garbage),
		MessageGroupId: aws.String("garbage"), MessageDeduplicationId: aws.String(uuid.NewString()),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Valid orders keep flowing past it.
	for range 3 {
		waitOrder(t, create(t), inState("CREATED"))
	}
	m := deadLettered(t, func(body string) bool { return body == garbage })
	if reason := aws.ToString(m.MessageAttributes["reason_poisoned"].StringValue); !strings.Contains(reason, "decode command") {
		t.Errorf("dead-lettered with reason %q", reason)
	}
}

// Not parallel: it cuts the processor off from PostgreSQL.
func TestDatabaseOutageIsRetried(t *testing.T) {
	sys.pgProxy.Block()
	var names []string
	for range 5 {
		names = append(names, create(t)) // ingest needs no database
	}
	time.Sleep(3 * time.Second)
	if err := sys.pgProxy.Unblock(); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		o := waitOrder(t, n, inState("CREATED"))
		if o["version"] != "1" || len(events(t, n)) != 1 {
			t.Errorf("%s after the outage: %v", n, o)
		}
	}
	if !strings.Contains(sys.logs(), "transient failure") {
		t.Error("the processor never saw the outage; the test proved nothing")
	}
}

// Not parallel: it restarts the processor while orders flow.
func TestProcessorRestartLosesAndDuplicatesNothing(t *testing.T) {
	const n = 60
	var mu sync.Mutex
	var names []string
	accepted := make(chan struct{}, n)
	var wg sync.WaitGroup
	work := make(chan int)
	cc := commandClient(t)
	for range 4 {
		wg.Go(func() {
			// Not the test's goroutine: a failure is t.Errorf, never
			// t.Fatal, and the worker goes on draining work (the count
			// check below fails the test).
			for range work {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				acc, err := cc.CreateOrder(ctx, &omsv1.CreateOrderRequest{
					RequestId: uuid.NewString(),
					Order: &omsv1.Order{CustomerId: "c-1", CurrencyCode: "USD", LineItems: []*omsv1.LineItem{
						{Sku: "SKU-1", Name: "Mug", Quantity: 2, UnitPriceMinor: 1200},
					}},
				})
				cancel()
				if err != nil {
					t.Errorf("create: %v", err)
				} else {
					mu.Lock()
					names = append(names, acc.Name)
					mu.Unlock()
				}
				accepted <- struct{}{}
			}
		})
	}
	go func() {
		for i := range n {
			work <- i
		}
		close(work)
	}()
	for range n / 3 {
		<-accepted
	}
	sys.mu.Lock()
	old := sys.processor
	sys.mu.Unlock()
	if err := old.stop(30 * time.Second); err != nil {
		t.Errorf("processor did not shut down cleanly: %v", err) // go on: later tests need a processor
	}
	if !strings.Contains(old.out.String(), "draining") {
		t.Error("processor did not drain")
	}
	if err := sys.startProcessor(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if len(names) != n {
		t.Fatalf("%d of %d orders accepted", len(names), n)
	}
	for _, name := range names {
		waitOrder(t, name, inState("CREATED"))
	}
	ids := make([]string, len(names))
	for i, name := range names {
		ids[i] = strings.TrimPrefix(name, "orders/")
	}
	var events, commands int
	if err := sys.db.NewRaw("SELECT count(*) FROM order_events WHERE order_id::text IN (?)", bun.In(ids)).Scan(context.Background(), &events); err != nil {
		t.Fatal(err)
	}
	if err := sys.db.NewRaw("SELECT count(*) FROM processed_commands WHERE order_id::text IN (?)", bun.In(ids)).Scan(context.Background(), &commands); err != nil {
		t.Fatal(err)
	}
	if events != n || commands != n {
		t.Errorf("%d orders left %d history entries and %d processed commands; want %d each", n, events, commands, n)
	}
}

// Ingest never answers 2xx for a command it could not enqueue.
func TestQueueDownAnswersUnavailable(t *testing.T) {
	t.Parallel()
	// An emulator and an ingest of their own, so stopping SQS here
	// disturbs no other test.
	sqsAddr, httpAddr := freeAddr(), freeAddr()
	emu, err := sys.start("sqslocal", nil, "-addr", sqsAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitFor(10*time.Second, func() error { _, err := http.Get("http://" + sqsAddr + "/health"); return err }); err != nil {
		t.Fatal(err)
	}
	env := append(sys.ingestEnv(sys.queues, httpAddr, freeAddr()), "SQS_ENDPOINT=http://"+sqsAddr, "INGEST_ENQUEUE_TIMEOUT=2s")
	ing, err := sys.start("ingest", env)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitReady(httpAddr); err != nil {
		t.Fatal(err)
	}
	base := "http://" + httpAddr
	if r := do(t, "POST", base+"/v1/orders", orderBody); r.status != http.StatusAccepted {
		t.Fatalf("with SQS up: %d %s", r.status, r.raw)
	}
	if err := emu.stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	r := do(t, "POST", base+"/v1/orders?request_id="+uuid.NewString(), orderBody)
	if r.status != http.StatusServiceUnavailable || !strings.Contains(r.raw, "retry with the same request id") {
		t.Errorf("with SQS down: %d %s, want 503", r.status, r.raw)
	}
	if r := do(t, "GET", base+"/readyz", ""); r.status != http.StatusServiceUnavailable {
		t.Errorf("readyz with SQS down: %d", r.status)
	}
	if err := ing.stop(15 * time.Second); err != nil {
		t.Error(err)
	}
}

// A request id reused for a different request is not swallowed by SQS
// deduplication and not applied: the order's history says why.
func TestReusedRequestIDIsRefusedVisibly(t *testing.T) {
	t.Parallel()
	name := create(t)
	waitOrder(t, name, inState("CREATED"))
	key := uuid.NewString()
	for _, body := range []string{`{"reason":"first"}`, `{"reason":"second, same key"}`} {
		if r := do(t, "POST", ingest("/v1/"+name+":cancel"), body, "Idempotency-Key", key); r.status != http.StatusAccepted {
			t.Fatalf("%d %s", r.status, r.raw)
		}
	}
	var evs []map[string]any
	waitFor(30*time.Second, func() error {
		if evs = events(t, name); len(evs) < 3 {
			return context.DeadlineExceeded
		}
		return nil
	})
	if got := eventTypes(evs); got != "order.created,order.cancelled,command.rejected" {
		t.Fatalf("history: %s\n%s", got, sys.logs())
	}
	if !strings.Contains(evs[2]["reason"].(string), "already used for a different request") {
		t.Errorf("refusal: %v", evs[2])
	}
	o := do(t, "GET", query("/v1/"+name+"?read_mask=state,cancellation"), "").body
	if c, _ := o["cancellation"].(map[string]any); c["reason"] != "first" {
		t.Errorf("order: %v", o)
	}
}

// A command for an order that does not exist is dead-lettered with the
// reason at once, not retried.
func TestCommandForMissingOrderIsDeadLettered(t *testing.T) {
	t.Parallel()
	missing := "orders/" + uuid.NewString()
	command(t, missing, "deliver", `{}`)
	id := strings.TrimPrefix(missing, "orders/")
	m := deadLetteredMessage(t, func(m types.Message) bool {
		c, err := decodeMessage(m)
		return err == nil && c.OrderID == id
	})
	if reason := aws.ToString(m.MessageAttributes["reason_poisoned"].StringValue); !strings.Contains(reason, "order not found") {
		t.Errorf("dead-lettered with reason %q", reason)
	}
}

// deadLettered waits for a message on the dead-letter queue whose body
// matches. It reads without deleting (a short visibility timeout hands
// the others back), so tests can share the queue.
func deadLettered(t *testing.T, match func(body string) bool) types.Message {
	t.Helper()
	return deadLetteredMessage(t, func(m types.Message) bool { return match(aws.ToString(m.Body)) })
}

// decodeMessage parses a command message in the encoding its content_type
// attribute names (ingest sends protobuf by default; absent is JSON). The
// message must have been received with its attributes.
func decodeMessage(m types.Message) (order.Command, error) {
	var ct string
	if a, ok := m.MessageAttributes[orderpb.ContentTypeKey]; ok {
		ct = aws.ToString(a.StringValue)
	}
	return orderpb.DecodeCommandAs([]byte(aws.ToString(m.Body)), ct)
}

// deadLetteredMessage waits for a message on the dead-letter queue that
// matches, as deadLettered does.
func deadLetteredMessage(t *testing.T, match func(m types.Message) bool) types.Message {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		out, err := sys.sqs.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(sys.urls.DeadLetter), MaxNumberOfMessages: 10, WaitTimeSeconds: 1,
			MessageAttributeNames: []string{"All"}, VisibilityTimeout: 1,
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range out.Messages {
			if match(m) {
				return m
			}
		}
	}
	t.Fatalf("no matching message reached the dead-letter queue\n%s", sys.logs())
	return types.Message{}
}
