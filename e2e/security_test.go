package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/devissuer"
	"github.com/omsdev/oms/pkg/orderstore"
	"github.com/omsdev/oms/pkg/queue"
)

// isolatedIngest starts an ingest of its own on queues nothing consumes,
// so the command queue's depth shows exactly what it enqueued. extra
// overrides its environment.
func isolatedIngest(t *testing.T, extra ...string) (httpBase, grpcAddr string, depth func() int) {
	t.Helper()
	q, urls := ownQueues(t, "sec")
	httpAddr, grpcAddr := freeAddr(), freeAddr()
	p, err := sys.start("ingest", append(sys.ingestEnv(q, httpAddr, grpcAddr), extra...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.stop(15 * time.Second); err != nil {
			t.Error(err)
		}
	})
	if err := waitReady(httpAddr); err != nil {
		t.Fatalf("%v\n%s", err, tail(p.out.String(), 20))
	}
	depth = func() int {
		d, err := queue.QueueDepth(context.Background(), sys.sqs, urls.Command)
		if err != nil {
			t.Fatal(err)
		}
		return d.Visible + d.InFlight
	}
	return "http://" + httpAddr, grpcAddr, depth
}

// isolatedQuery starts a query service of its own with extra settings.
func isolatedQuery(t *testing.T, extra ...string) (httpBase, grpcAddr string) {
	t.Helper()
	httpAddr, grpcAddr := freeAddr(), freeAddr()
	p, err := sys.start("query", append(sys.env("HTTP_ADDR="+httpAddr, "GRPC_ADDR="+grpcAddr, "ADMIN_ADDR="+freeAddr()), extra...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.stop(15 * time.Second); err != nil {
			t.Error(err)
		}
	})
	if err := waitReady(httpAddr); err != nil {
		t.Fatalf("%v\n%s", err, tail(p.out.String(), 20))
	}
	return "http://" + httpAddr, grpcAddr
}

type route struct{ method, path, body string }

// commandRoutes and queryRoutes are every HTTP route of the API, on an
// order that exists.
func commandRoutes(name string) []route {
	return []route{
		{"POST", "/v1/orders", orderBody},
		{"POST", "/v1/" + name + ":pay", `{"paymentReference":"ch_1","amountMinor":"2400"}`},
		{"POST", "/v1/" + name + ":ship", `{"carrier":"UPS","trackingNumber":"1Z"}`},
		{"POST", "/v1/" + name + ":deliver", `{}`},
		{"POST", "/v1/" + name + ":cancel", `{"reason":"x"}`},
	}
}

func queryRoutes(name string) []route {
	return []route{
		{"GET", "/v1/" + name, ""},
		{"GET", "/v1/orders", ""},
		{"GET", "/v1/" + name + "/events", ""},
	}
}

// rpc is one gRPC method with a valid request.
type rpc struct {
	method string
	req    proto.Message
	resp   proto.Message
}

func commandRPCs(name string) []rpc {
	create := &omsv1.CreateOrderRequest{Order: &omsv1.Order{CustomerId: "c-1", CurrencyCode: "USD",
		LineItems: []*omsv1.LineItem{{Sku: "S", Name: "N", Quantity: 1, UnitPriceMinor: 500}}}}
	acc := func() proto.Message { return &omsv1.CommandAcceptance{} }
	return []rpc{
		{"/oms.v1.OrderCommandService/CreateOrder", create, acc()},
		{"/oms.v1.OrderCommandService/PayOrder", &omsv1.PayOrderRequest{Name: name, PaymentReference: "r", AmountMinor: 500}, acc()},
		{"/oms.v1.OrderCommandService/ShipOrder", &omsv1.ShipOrderRequest{Name: name, Carrier: "c", TrackingNumber: "t"}, acc()},
		{"/oms.v1.OrderCommandService/DeliverOrder", &omsv1.DeliverOrderRequest{Name: name}, acc()},
		{"/oms.v1.OrderCommandService/CancelOrder", &omsv1.CancelOrderRequest{Name: name}, acc()},
	}
}

func queryRPCs(name string) []rpc {
	return []rpc{
		{"/oms.v1.OrderQueryService/GetOrder", &omsv1.GetOrderRequest{Name: name}, &omsv1.Order{}},
		{"/oms.v1.OrderQueryService/ListOrders", &omsv1.ListOrdersRequest{}, &omsv1.ListOrdersResponse{}},
		{"/oms.v1.OrderQueryService/ListOrderEvents", &omsv1.ListOrderEventsRequest{Parent: name}, &omsv1.ListOrderEventsResponse{}},
	}
}

// Every method, over HTTP and gRPC, refuses every kind of bad credential
// with 401 / UNAUTHENTICATED and enqueues nothing.
func TestBadCredentialsAreRefusedEverywhere(t *testing.T) {
	t.Parallel()
	ingestBase, ingestGRPC, depth := isolatedIngest(t)
	name := create(t)
	for tokName, tok := range badTokens(t) {
		header := []string{}
		if tok != "" {
			header = as(tok)
		} else {
			header = []string{"Authorization", ""}
		}
		for _, base := range []struct {
			url    string
			routes []route
		}{{ingestBase, commandRoutes(name)}, {"http://" + sys.queryHTTP, queryRoutes(name)}} {
			for _, rt := range base.routes {
				r := do(t, rt.method, base.url+rt.path, rt.body, append(header, "Idempotency-Key", uuid.NewString())...)
				if r.status != http.StatusUnauthorized {
					t.Errorf("%s, HTTP %s %s: %d %s, want 401", tokName, rt.method, rt.path, r.status, r.raw)
					continue
				}
				if ch := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "Bearer ") {
					t.Errorf("%s, HTTP %s %s: WWW-Authenticate %q", tokName, rt.method, rt.path, ch)
				}
			}
		}
		for addr, rpcs := range map[string][]rpc{ingestGRPC: commandRPCs(name), sys.queryGRPC: queryRPCs(name)} {
			conn := grpcAs(t, addr, tok)
			for _, m := range rpcs {
				err := conn.Invoke(ctxT(t), m.method, m.req, m.resp)
				if status.Code(err) != codes.Unauthenticated {
					t.Errorf("%s, gRPC %s: %v, want UNAUTHENTICATED", tokName, m.method, err)
				}
			}
		}
	}
	if n := depth(); n != 0 {
		t.Errorf("refused requests enqueued %d messages", n)
	}
	// The probe works: one good request is one message.
	if r := do(t, "POST", ingestBase+"/v1/orders", orderBody); r.status != http.StatusAccepted {
		t.Fatalf("valid request: %d %s", r.status, r.raw)
	}
	if n := depth(); n != 1 {
		t.Errorf("after one valid request the queue holds %d messages", n)
	}
}

// Health stays open; reflection needs a token.
func TestHealthIsOpenReflectionIsNot(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{sys.ingestHTTP, sys.queryHTTP} {
		for _, p := range []string{"/healthz", "/readyz"} {
			if r := do(t, "GET", "http://"+addr+p, "", "Authorization", ""); r.status != http.StatusOK {
				t.Errorf("%s%s without a token: %d", addr, p, r.status)
			}
		}
		if r := do(t, "GET", "http://"+addr+"/metrics", ""); r.status != http.StatusNotFound {
			t.Errorf("%s/metrics on the public port: %d, want 404", addr, r.status)
		}
	}
	for _, addr := range []string{sys.ingestGRPC, sys.queryGRPC} {
		h, err := healthpb.NewHealthClient(grpcAs(t, addr, "")).Check(ctxT(t), &healthpb.HealthCheckRequest{})
		if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("%s health without a token: %v %v", addr, h, err)
		}
		for tok, want := range map[string]codes.Code{"": codes.Unauthenticated, sys.tokens[devissuer.EnvStaff]: codes.OK} {
			stream, err := reflectionpb.NewServerReflectionClient(grpcAs(t, addr, tok)).ServerReflectionInfo(ctxT(t))
			if err == nil {
				// A refused stream may already be closed when Send runs
				// (io.EOF); Recv reports the status it ended with.
				stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
				_, err = stream.Recv()
			}
			if status.Code(err) != want {
				t.Errorf("%s reflection with token %v: %v, want %s", addr, tok != "", err, want)
			}
		}
	}
}

// Another owner's order is NOT_FOUND to every read and untouched by every
// command; its history does not change.
func TestAnotherOwnersOrderIsInvisibleAndUntouchable(t *testing.T) {
	t.Parallel()
	ownerTok, ownerID := customer(t)
	thiefTok, _ := customer(t)
	// A service client that did not create the order, holding every scope
	// but staff.
	otherSvc := service(t, "warehouse-"+uuid.NewString()[:8], auth.ScopeCreate, auth.ScopeRead, auth.ScopePay, auth.ScopeFulfil, auth.ScopeCancel)

	// The owner creates without naming a customer: it is taken from the token.
	r := do(t, "POST", ingest("/v1/orders"), `{"currencyCode":"USD","lineItems":[{"sku":"S","name":"N","quantity":2,"unitPriceMinor":"1200"}]}`,
		append(as(ownerTok), "Idempotency-Key", uuid.NewString())...)
	if r.status != http.StatusAccepted {
		t.Fatalf("owner's create: %d %s", r.status, r.raw)
	}
	name := r.body["name"].(string)
	o := waitOrderAs(t, ownerTok, name, inState("CREATED"))
	if o["customerId"] != ownerID {
		t.Fatalf("order's customer %v, want the token's %s", o["customerId"], ownerID)
	}
	before := eventsAs(t, ownerTok, name)

	for who, tok := range map[string]string{"another customer": thiefTok, "another service": otherSvc} {
		for _, rt := range queryRoutes(name) {
			if rt.path == "/v1/orders" {
				continue
			}
			if r := do(t, rt.method, query(rt.path), "", as(tok)...); r.status != http.StatusNotFound {
				t.Errorf("%s, %s %s: %d %s, want 404", who, rt.method, rt.path, r.status, r.raw)
			}
		}
		filter := url.QueryEscape(fmt.Sprintf(`customer_id = "%s"`, ownerID))
		if r := do(t, "GET", query("/v1/orders?filter="+filter+"&page_size=500"), "", as(tok)...); r.status != 200 || r.body["orders"] != nil {
			t.Errorf("%s, list filtered on the owner: %d %s, want no orders", who, r.status, r.raw)
		}
		qc := grpcAs(t, sys.queryGRPC, tok)
		for _, m := range queryRPCs(name) {
			if m.method == "/oms.v1.OrderQueryService/ListOrders" {
				continue
			}
			if err := qc.Invoke(ctxT(t), m.method, m.req, m.resp); status.Code(err) != codes.NotFound {
				t.Errorf("%s, gRPC %s: %v, want NOT_FOUND", who, m.method, err)
			}
		}
		// A create naming the victim's id: only staff choose ids, so it
		// can neither probe for the order nor queue into its group.
		r := do(t, "POST", ingest("/v1/orders?order_id="+strings.TrimPrefix(name, "orders/")), `{"currencyCode":"USD","lineItems":[{"sku":"S","name":"N","quantity":1,"unitPriceMinor":"1"}]}`,
			append(as(tok), "Idempotency-Key", uuid.NewString())...)
		if r.status != http.StatusForbidden {
			t.Errorf("%s, create naming the victim's id: %d %s, want 403", who, r.status, r.raw)
		}
		// Every command on the order, over HTTP and gRPC: accepted (ingest
		// cannot know the owner) or refused for a scope, never applied.
		for _, rt := range commandRoutes(name)[1:] {
			r := do(t, rt.method, ingest(rt.path), rt.body, append(as(tok), "Idempotency-Key", uuid.NewString())...)
			if r.status != http.StatusAccepted && r.status != http.StatusForbidden {
				t.Errorf("%s, %s %s: %d %s", who, rt.method, rt.path, r.status, r.raw)
			}
		}
		cc := grpcAs(t, sys.ingestGRPC, tok)
		for _, m := range commandRPCs(name) {
			if m.method == "/oms.v1.OrderCommandService/CreateOrder" {
				continue
			}
			err := cc.Invoke(ctxT(t), m.method, m.req, m.resp)
			if c := status.Code(err); c != codes.OK && c != codes.PermissionDenied {
				t.Errorf("%s, gRPC %s: %v", who, m.method, err)
			}
		}
	}
	// 20 illegal deliveries from a service with the scope: no history.
	for range 20 {
		do(t, "POST", ingest("/v1/"+name+":deliver"), `{}`, append(as(otherSvc), "Idempotency-Key", uuid.NewString())...)
	}
	// The owner's own command comes after all of them in the order's FIFO
	// group, so once it is applied, theirs have been processed.
	r = do(t, "POST", ingest("/v1/"+name+":cancel"), `{"reason":"owner"}`, append(as(ownerTok), "Idempotency-Key", uuid.NewString())...)
	if r.status != http.StatusAccepted {
		t.Fatalf("owner's cancel: %d %s", r.status, r.raw)
	}
	o = waitOrderAs(t, ownerTok, name, inState("CANCELLED"))
	if c, _ := o["cancellation"].(map[string]any); c["reason"] != "owner" || o["version"] != "2" || o["payment"] != nil {
		t.Errorf("the order was touched by others: %v", o)
	}
	after := eventsAs(t, ownerTok, name)
	if got := eventTypes(after); got != eventTypes(before)+",order.cancelled" {
		t.Errorf("history %s; others wrote into it (before: %s)", got, eventTypes(before))
	}
}

// The same idempotency key from two principals makes two orders.
func TestSameKeyFromTwoPrincipalsMakesTwoOrders(t *testing.T) {
	t.Parallel()
	aTok, aID := customer(t)
	bTok, bID := customer(t)
	names := map[string]string{}
	for id, tok := range map[string]string{aID: aTok, bID: bTok} {
		r := do(t, "POST", ingest("/v1/orders"), `{"currencyCode":"USD","lineItems":[{"sku":"S","name":"N","quantity":1,"unitPriceMinor":"100"}]}`,
			append(as(tok), "Idempotency-Key", "my-first-order")...)
		if r.status != http.StatusAccepted {
			t.Fatalf("%d %s", r.status, r.raw)
		}
		names[id] = r.body["name"].(string)
	}
	if names[aID] == names[bID] {
		t.Fatalf("one key from two customers named one order %s", names[aID])
	}
	for id, tok := range map[string]string{aID: aTok, bID: bTok} {
		o := waitOrderAs(t, tok, names[id], inState("CREATED"))
		if o["customerId"] != id {
			t.Errorf("order %s belongs to %v, want %s", names[id], o["customerId"], id)
		}
		if evs := eventsAs(t, tok, names[id]); eventTypes(evs) != "order.created" {
			t.Errorf("history of %s: %s", names[id], eventTypes(evs))
		}
	}
	if r := do(t, "GET", query("/v1/"+names[bID]), "", as(aTok)...); r.status != http.StatusNotFound {
		t.Errorf("a customer reads the other's order: %d", r.status)
	}
	// A retry by the same customer names the same order.
	r := do(t, "POST", ingest("/v1/orders"), `{"currencyCode":"USD","lineItems":[{"sku":"S","name":"N","quantity":1,"unitPriceMinor":"100"}]}`,
		append(as(aTok), "Idempotency-Key", "my-first-order")...)
	if r.status != http.StatusAccepted || r.body["name"] != names[aID] {
		t.Errorf("retry: %d %v, want %s", r.status, r.body["name"], names[aID])
	}
}

func TestCustomerCreatesOnlyForItself(t *testing.T) {
	t.Parallel()
	tok, _ := customer(t)
	r := do(t, "POST", ingest("/v1/orders"), orderBody, as(tok)...) // names customer c-1
	if r.status != http.StatusForbidden {
		t.Errorf("a create for another customer: %d %s, want 403", r.status, r.raw)
	}
	_, err := omsv1.NewOrderCommandServiceClient(grpcAs(t, sys.ingestGRPC, tok)).CreateOrder(ctxT(t), commandRPCs("")[0].req.(*omsv1.CreateOrderRequest))
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("over gRPC: %v, want PERMISSION_DENIED", err)
	}
	// A customer cannot ship, whatever its token says.
	shipper := mint(t, devissuer.TokenSpec{Subject: "cust-" + uuid.NewString()[:8], Scopes: staffScopes})
	if r := do(t, "POST", ingest("/v1/orders/"+uuid.NewString()+":ship"), `{"carrier":"c","trackingNumber":"t"}`, as(shipper)...); r.status != http.StatusForbidden {
		t.Errorf("a customer's ship: %d %s, want 403", r.status, r.raw)
	}
}

func TestInvalidIdempotencyKeyHeaderIsNamed(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"kéy-ünicode", strings.Repeat("k", 129), "has space"} {
		r := do(t, "POST", ingest("/v1/orders"), orderBody, "Idempotency-Key", key)
		if r.status != http.StatusBadRequest || !strings.Contains(r.raw, `"field":"Idempotency-Key"`) {
			t.Errorf("key %q: %d %s, want 400 naming the header", key, r.status, r.raw)
		}
	}
}

// Over the per-principal limit: 429 with Retry-After, RESOURCE_EXHAUSTED
// with RetryInfo, nothing enqueued; other principals are unaffected.
func TestRateLimitsArePerPrincipal(t *testing.T) {
	t.Parallel()
	base, grpcAddr, depth := isolatedIngest(t, "RATE_LIMIT_COMMANDS_PER_SECOND=0.01", "RATE_LIMIT_COMMAND_BURST=3")
	tok := service(t, "noisy-"+uuid.NewString()[:8], auth.ScopeCreate)
	accepted := 0
	var limited httpResult
	for range 5 {
		r := do(t, "POST", base+"/v1/orders", orderBody, append(as(tok), "Idempotency-Key", uuid.NewString())...)
		switch r.status {
		case http.StatusAccepted:
			accepted++
		case http.StatusTooManyRequests:
			limited = r
		default:
			t.Fatalf("%d %s", r.status, r.raw)
		}
	}
	if accepted != 3 || limited.status != http.StatusTooManyRequests {
		t.Fatalf("accepted %d of 5 with a burst of 3; last refusal %d %s", accepted, limited.status, limited.raw)
	}
	if s, err := strconv.Atoi(limited.header.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("Retry-After %q", limited.header.Get("Retry-After"))
	}
	_, err := omsv1.NewOrderCommandServiceClient(grpcAs(t, grpcAddr, tok)).CreateOrder(ctxT(t), commandRPCs("")[0].req.(*omsv1.CreateOrderRequest))
	st := status.Convert(err)
	hasRetryInfo := false
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.RetryInfo); ok {
			hasRetryInfo = true
		}
	}
	if st.Code() != codes.ResourceExhausted || !hasRetryInfo {
		t.Errorf("over gRPC: %v (RetryInfo %v), want RESOURCE_EXHAUSTED with RetryInfo", err, hasRetryInfo)
	}
	if n := depth(); n != accepted {
		t.Errorf("queue holds %d messages for %d accepted commands", n, accepted)
	}
	other := service(t, "quiet-"+uuid.NewString()[:8], auth.ScopeCreate)
	if r := do(t, "POST", base+"/v1/orders", orderBody, as(other)...); r.status != http.StatusAccepted {
		t.Errorf("another principal: %d %s", r.status, r.raw)
	}

	qBase, _ := isolatedQuery(t, "RATE_LIMIT_READS_PER_SECOND=0.01", "RATE_LIMIT_READ_BURST=2")
	reader := service(t, "reader-"+uuid.NewString()[:8], auth.ScopeRead)
	codes := []int{}
	for range 3 {
		codes = append(codes, do(t, "GET", qBase+"/v1/orders?page_size=1", "", as(reader)...).status)
	}
	if fmt.Sprint(codes) != "[200 200 429]" {
		t.Errorf("reads with a burst of 2: %v", codes)
	}
}

// A page is cut by size as well as count: every order is still listed
// once, over pages that each fit.
func TestListPagesAreBoundedBySize(t *testing.T) {
	t.Parallel()
	tok, _ := customer(t)
	var lines []string
	for i := range 20 {
		lines = append(lines, fmt.Sprintf(`{"sku":"SKU-%d","name":"%s","quantity":1,"unitPriceMinor":"1"}`, i, strings.Repeat("n", 200)))
	}
	body := `{"currencyCode":"USD","lineItems":[` + strings.Join(lines, ",") + `]}`
	var names []string
	for range 6 {
		r := do(t, "POST", ingest("/v1/orders"), body, append(as(tok), "Idempotency-Key", uuid.NewString())...)
		if r.status != http.StatusAccepted {
			t.Fatalf("%d %s", r.status, r.raw)
		}
		names = append(names, r.body["name"].(string))
	}
	for _, n := range names {
		waitOrderAs(t, tok, n, inState("CREATED"))
	}
	const bound = 16 << 10 // each order is about 5 KiB
	qBase, qGRPC := isolatedQuery(t, fmt.Sprintf("QUERY_MAX_PAGE_BYTES=%d", bound))
	// Over gRPC, where the bound applies to the encoded message.
	qc := omsv1.NewOrderQueryServiceClient(grpcAs(t, qGRPC, tok))
	seen, pages, token := map[string]int{}, 0, ""
	for {
		resp, err := qc.ListOrders(ctxT(t), &omsv1.ListOrdersRequest{PageSize: 50, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if n := proto.Size(resp); n > bound+8<<10 {
			t.Errorf("page %d is %d bytes, over the bound of %d by more than one order", pages, n, bound)
		}
		if len(resp.Orders) == 0 {
			t.Fatalf("page %d is empty (next token %q)", pages, resp.NextPageToken)
		}
		for _, o := range resp.Orders {
			seen[o.Name]++
		}
		if token = resp.NextPageToken; token == "" {
			break
		}
		if pages == 10 {
			t.Fatalf("no end after %d pages", pages)
		}
	}
	for _, n := range names {
		if seen[n] != 1 {
			t.Errorf("%s listed %d times", n, seen[n])
		}
	}
	if len(seen) != len(names) || pages < 2 {
		t.Errorf("listed %d orders (want %d) in %d pages; the bound should need several", len(seen), len(names), pages)
	}
	// Over HTTP the same bound cuts the first page.
	r := do(t, "GET", qBase+"/v1/orders?page_size=50", "", as(tok)...)
	if orders, _ := r.body["orders"].([]any); r.status != http.StatusOK || len(orders) >= len(names) || r.body["nextPageToken"] == nil {
		t.Errorf("HTTP first page: %d, %d orders, token %v", r.status, len(orders), r.body["nextPageToken"])
	}
}

// A database error reaches the client as a generic message: no SQL, no
// driver text.
func TestDatabaseErrorsAreGeneric(t *testing.T) {
	t.Parallel()
	// A migrated database, read by a role that may see the schema version
	// but not the orders: the query service is ready, and every read fails
	// in PostgreSQL (permission denied).
	ctx := context.Background()
	dbName, role := randomName("oms_denied_"), randomName("denied_")
	if _, err := sys.db.ExecContext(ctx, "CREATE DATABASE "+dbName); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sys.db.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+dbName+" WITH (FORCE)")
		sys.db.ExecContext(context.Background(), "DROP ROLE IF EXISTS "+role)
	})
	dbURL := strings.Replace(sys.dbURL, sys.dbURL[strings.LastIndex(sys.dbURL, "/")+1:strings.Index(sys.dbURL, "?")], dbName, 1)
	migrate := exec.Command(filepath.Join(sys.bin, "processor"), "migrate", "up")
	migrate.Env = sys.env("DATABASE_URL=" + dbURL)
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v: %s", err, out)
	}
	db := orderstore.Open(dbURL)
	defer db.Close()
	for _, q := range []string{"CREATE ROLE " + role + " LOGIN", "GRANT SELECT ON bun_migrations, bun_migration_locks TO " + role} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	denied := strings.Replace(dbURL, "postgres@", role+"@", 1)
	qBase, qGRPC := isolatedQuery(t, "DATABASE_URL="+denied)
	r := do(t, "GET", qBase+"/v1/orders/"+uuid.NewString(), "")
	if r.status != http.StatusInternalServerError || r.body["message"] != "internal error" {
		t.Errorf("%d %s, want 500 internal error", r.status, r.raw)
	}
	for _, leak := range []string{"SQLSTATE", "relation", "permission", "denied", "ERROR", "pgdriver", "SELECT", role} {
		if strings.Contains(r.raw, leak) {
			t.Errorf("the error leaks %q: %s", leak, r.raw)
		}
	}
	_, err := omsv1.NewOrderQueryServiceClient(grpcAs(t, qGRPC, sys.tokens[devissuer.EnvStaff])).
		GetOrder(ctxT(t), &omsv1.GetOrderRequest{Name: "orders/" + uuid.NewString()})
	if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "internal error" {
		t.Errorf("over gRPC: %v", err)
	}
}

// A body dripped byte by byte and an idle keep-alive connection are closed
// within the configured timeouts.
func TestSlowAndIdleConnectionsAreClosed(t *testing.T) {
	t.Parallel()
	base, _, _ := isolatedIngest(t, "HTTP_READ_TIMEOUT=1s", "HTTP_IDLE_TIMEOUT=1s", "HTTP_READ_HEADER_TIMEOUT=1s")
	addr := strings.TrimPrefix(base, "http://")

	// closedWithin reads until the server closes the connection.
	closedWithin := func(c net.Conn, d time.Duration) error {
		c.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("still open after %s", d)
		}
		return nil
	}

	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "POST /v1/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n", sys.tokens[devissuer.EnvStaff])
	start := time.Now()
	go func() {
		for i := 0; i < 60; i++ {
			if _, err := slow.Write([]byte("{")); err != nil {
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
	}()
	if err := closedWithin(slow, 20*time.Second); err != nil {
		t.Errorf("slow body: %v", err)
	} else if time.Since(start) > 15*time.Second {
		t.Errorf("slow body held for %s with a 1 s read timeout", time.Since(start))
	}

	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	if err := closedWithin(idle, 20*time.Second); err != nil {
		t.Errorf("idle keep-alive: %v", err)
	}
}

// waitOrderAs is waitOrder with the given caller's token.
func waitOrderAs(t *testing.T, token, name string, cond func(map[string]any) bool) map[string]any {
	t.Helper()
	var last httpResult
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		last = do(t, "GET", query("/v1/"+name), "", as(token)...)
		if last.status == http.StatusOK && cond(last.body) {
			return last.body
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("order %s never matched; last answer %d %s\n%s", name, last.status, last.raw, sys.logs())
	return nil
}

func eventsAs(t *testing.T, token, name string) []map[string]any {
	t.Helper()
	r := do(t, "GET", query("/v1/"+name+"/events"), "", as(token)...)
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

// A command on the queue without an actor (queued before principals, or
// by something other than ingest) is dead-lettered with the reason, and
// touches nothing.
func TestActorlessCommandIsDeadLettered(t *testing.T) {
	t.Parallel()
	name := create(t)
	waitOrder(t, name, inState("CREATED"))
	id := strings.TrimPrefix(name, "orders/")
	body := `{"commandId":"raw-` + uuid.NewString() + `","orderId":"` + id + `","cancel":{"reason":"no actor"}}`
	_, err := sys.sqs.SendMessage(context.Background(), &sqs.SendMessageInput{
		QueueUrl: aws.String(sys.urls.Command), MessageBody: aws.String(body),
		MessageGroupId: aws.String(id), MessageDeduplicationId: aws.String(uuid.NewString()),
	})
	if err != nil {
		t.Fatal(err)
	}
	m := deadLettered(t, func(b string) bool { return b == body })
	if reason := aws.ToString(m.MessageAttributes["reason_poisoned"].StringValue); !strings.Contains(reason, "has no actor") {
		t.Errorf("dead-lettered with reason %q", reason)
	}
	if o := waitOrder(t, name, inState("CREATED")); o["version"] != "1" {
		t.Errorf("order changed: %v", o)
	}
}
