package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/driver/pgdriver"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/config"
	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/devissuer"
	"github.com/omsdev/oms/pkg/orderstore"
)

// watchStack is the query service in process, wired by listen as main
// wires it (real signed tokens, the gateway), over a migrated schema of
// its own; its pool has an application name of its own, so a test can
// find its listening connection among other tests'.
type watchStack struct {
	t        *testing.T
	db       *bun.DB
	app      string
	grpcAddr string
	httpAddr string
	iss      *devissuer.Issuer
	audience string
	conn     *grpc.ClientConn
	client   omsv1.OrderQueryServiceClient
	stop     context.CancelFunc
	done     chan error
}

func startWatchStack(t *testing.T, env map[string]string) *watchStack {
	t.Helper()
	_, schema := dbtest.NewUnmigrated(t)
	s := &watchStack{t: t, app: "oms-query-watch-" + schema, audience: "oms-watch-test"}
	s.db = orderstore.Open(dbtest.URL(), pgdriver.WithConnParams(map[string]any{"search_path": schema}), pgdriver.WithApplicationName(s.app))
	t.Cleanup(func() { s.db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := orderstore.Migrate(ctx, s.db); err != nil {
		t.Fatal(err)
	}

	var issURL string
	s.iss, issURL = startIssuer(t)
	cfg, err := LoadConfig(config.FromMaps(serviceEnv(s.iss, issURL, s.audience), env))
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	srv, err := listen(sctx, cfg, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})), s.db)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	s.stop, s.done = stop, make(chan error, 1)
	go func() { s.done <- srv.Serve(sctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-s.done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	s.grpcAddr, s.httpAddr = srv.GRPCAddr(), srv.HTTPAddr()
	if s.conn, err = grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.conn.Close() })
	s.client = omsv1.NewOrderQueryServiceClient(s.conn)
	return s
}

// startIssuer serves a token issuer until the test ends; its URL is the
// service's AUTH_ISSUER.
func startIssuer(tb testing.TB) (*devissuer.Issuer, string) {
	tb.Helper()
	iss, err := devissuer.New()
	if err != nil {
		tb.Fatal(err)
	}
	url, stop, err := iss.Serve("127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { stop() })
	return iss, url
}

// serviceEnv is the environment of a query service under test: tokens
// of iss for audience, and ports of its own choosing.
func serviceEnv(iss *devissuer.Issuer, issURL, audience string) map[string]string {
	return map[string]string{
		"AUTH_ISSUER": issURL, "AUTH_AUDIENCE": audience, "AUTH_JWKS_URL": iss.JWKSURL(),
		"HTTP_ADDR": "127.0.0.1:0", "GRPC_ADDR": "127.0.0.1:0", "ADMIN_ADDR": "127.0.0.1:0",
		"OPERATION_SECRET": strings.Repeat("o", 32),
	}
}

// customer returns a customer's read token, and a context that sends it.
func (s *watchStack) customer(id string) (string, context.Context) {
	s.t.Helper()
	tok, err := s.iss.Mint(devissuer.TokenSpec{Subject: id, Scopes: []string{auth.ScopeRead}, Audience: s.audience})
	if err != nil {
		s.t.Fatal(err)
	}
	return tok, metadataCtx(context.Background(), tok)
}

func newCustomer() string {
	b := make([]byte, 4)
	rand.Read(b)
	return "c-" + hex.EncodeToString(b)
}

// create inserts a CREATED order of customer at version 1, as the
// processor would; change moves it on one version (a payment, then a
// shipment, then a delivery); both are committed, so announced.
func (s *watchStack) create(customer string) string {
	s.t.Helper()
	id := uuid.NewString()
	_, err := s.db.ExecContext(context.Background(), `
INSERT INTO orders (id, customer_id, state, currency_code, subtotal_minor, total_minor, version, create_time, update_time, created_by)
VALUES (?, ?, 'CREATED', 'USD', 2950, 2950, 1, now(), now(), ?)`, id, customer, "customer:"+customer)
	if err != nil {
		s.t.Fatal(err)
	}
	return id
}

// ownOrder creates an order of a new customer, and returns its id with
// the customer's read token and a context that sends it.
func (s *watchStack) ownOrder() (id, tok string, ctx context.Context) {
	s.t.Helper()
	cust := newCustomer()
	tok, ctx = s.customer(cust)
	return s.create(cust), tok, ctx
}

// watch opens a watch, failing the test if the call fails.
func (s *watchStack) watch(ctx context.Context, req *omsv1.WatchOrderRequest) grpc.ServerStreamingClient[omsv1.WatchOrderResponse] {
	s.t.Helper()
	st, err := s.client.WatchOrder(ctx, req)
	if err != nil {
		s.t.Fatal(err)
	}
	return st
}

// watchOwn watches a new order as its customer, for at most timeout, and
// reads the first state sent; ctx is the watch's context.
func (s *watchStack) watchOwn(timeout time.Duration) (id string, ctx context.Context, st grpc.ServerStreamingClient[omsv1.WatchOrderResponse]) {
	s.t.Helper()
	id, _, ctx = s.ownOrder()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	s.t.Cleanup(cancel)
	st = s.watch(ctx, &omsv1.WatchOrderRequest{Name: "orders/" + id})
	recv(s.t, st)
	return id, ctx, st
}

var nextState = map[int64]string{1: "PAID", 2: "SHIPPED", 3: "DELIVERED"}

func (s *watchStack) change(id string) {
	s.t.Helper()
	_, err := s.db.ExecContext(context.Background(), `
UPDATE orders SET state = CASE version WHEN 1 THEN 'PAID' WHEN 2 THEN 'SHIPPED' ELSE 'DELIVERED' END,
    version = version + 1, update_time = now() WHERE id = ?`, id)
	if err != nil {
		s.t.Fatal(err)
	}
}

// recv is the stream's next order, failing after 5 s.
func recv(t *testing.T, st grpc.ServerStreamingClient[omsv1.WatchOrderResponse]) *omsv1.Order {
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
			t.Fatalf("Recv: %v", r.err)
		}
		return r.r.Order
	case <-time.After(5 * time.Second):
		t.Fatal("nothing received within 5s")
	}
	return nil
}

// quiet checks that the stream sends nothing for a moment; the stream's
// context must end soon after, or the Recv is left behind.
func quiet(t *testing.T, st grpc.ServerStreamingClient[omsv1.WatchOrderResponse], d time.Duration) {
	t.Helper()
	c := make(chan *omsv1.WatchOrderResponse, 1)
	go func() {
		r, _ := st.Recv()
		c <- r
	}()
	select {
	case r := <-c:
		if r != nil {
			t.Fatalf("unexpected %v", r)
		}
	case <-time.After(d):
	}
}

func wantVersion(t *testing.T, o *omsv1.Order, v int64, state string) {
	t.Helper()
	if o.GetVersion() != v || o.GetState().String() != state {
		t.Fatalf("got version %d %s, want %d %s", o.GetVersion(), o.GetState(), v, state)
	}
}

func TestWatchOrderSendsEachChangeInOrder(t *testing.T) {
	t.Parallel()
	s := startWatchStack(t, nil)
	cust := newCustomer()
	_, ctx := s.customer(cust)
	id := s.create(cust)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st := s.watch(ctx, &omsv1.WatchOrderRequest{Name: "orders/" + id})
	first := recv(t, st)
	wantVersion(t, first, 1, "CREATED")
	if first.CustomerId != cust || first.Name != "orders/"+id {
		t.Fatalf("first: %v", first)
	}
	for v := int64(2); v <= 4; v++ {
		s.change(id)
		wantVersion(t, recv(t, st), v, nextState[v-1])
	}

	// A mask: only its fields, and the version whatever it says.
	got := recv(t, s.watch(ctx, &omsv1.WatchOrderRequest{Name: "orders/" + id, ReadMask: &fieldmaskpb.FieldMask{Paths: []string{"state"}}}))
	if want := (&omsv1.Order{State: omsv1.Order_DELIVERED, Version: 4}); !proto.Equal(got, want) {
		t.Fatalf("masked: %v, want %v", got, want)
	}
}

func TestWatchOrderResumesAfterSinceVersion(t *testing.T) {
	t.Parallel()
	s := startWatchStack(t, nil)
	id, _, ctx := s.ownOrder()
	s.change(id)
	s.change(id) // version 3
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	// Behind: the current state at once.
	wantVersion(t, recv(t, s.watch(ctx, &omsv1.WatchOrderRequest{Name: "orders/" + id, SinceVersion: 2})), 3, "SHIPPED")

	// Up to date: nothing until the next change, then only it.
	sctx, scancel := context.WithCancel(ctx)
	quiet(t, s.watch(sctx, &omsv1.WatchOrderRequest{Name: "orders/" + id, SinceVersion: 3}), 300*time.Millisecond)
	scancel()
	st := s.watch(ctx, &omsv1.WatchOrderRequest{Name: "orders/" + id, SinceVersion: 3})
	s.change(id)
	wantVersion(t, recv(t, st), 4, "DELIVERED")
}

// A watch may start before the order's create is applied: it waits.
func TestWatchOrderWaitsForTheCreate(t *testing.T) {
	t.Parallel()
	s := startWatchStack(t, nil)
	cust := newCustomer()
	_, ctx := s.customer(cust)
	id := uuid.NewString()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st := s.watch(ctx, &omsv1.WatchOrderRequest{Name: "orders/" + id})
	time.Sleep(200 * time.Millisecond) // the watch has read nothing, and subscribed
	_, err := s.db.ExecContext(ctx, `
INSERT INTO orders (id, customer_id, state, currency_code, version, create_time, update_time, created_by)
VALUES (?, ?, 'CREATED', 'USD', 1, now(), now(), ?)`, id, cust, "customer:"+cust)
	if err != nil {
		t.Fatal(err)
	}
	wantVersion(t, recv(t, st), 1, "CREATED")
}

// Another's order is NOT_FOUND, as from GetOrder; as for an order that
// does not exist, only once QUERY_MAX_WAIT has passed without one, so
// the two cannot be told apart.
func TestWatchOrderOfAnotherIsNotFound(t *testing.T) {
	t.Parallel()
	s := startWatchStack(t, map[string]string{"QUERY_MAX_WAIT": "300ms"})
	owner, other := newCustomer(), newCustomer()
	id := s.create(owner)
	_, ctx := s.customer(other)
	for _, name := range []string{"orders/" + id, "orders/" + uuid.NewString()} {
		start := time.Now()
		st, err := s.client.WatchOrder(ctx, &omsv1.WatchOrderRequest{Name: name})
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != codes.NotFound {
			t.Fatalf("%s: %v, want NOT_FOUND", name, err)
		}
		if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
			t.Fatalf("%s: NOT_FOUND after %v, want after QUERY_MAX_WAIT", name, d)
		}
	}
	// Staff see it.
	tok, err := s.iss.Mint(devissuer.TokenSpec{Subject: "backoffice", ClientID: "backoffice", Scopes: []string{auth.ScopeRead, auth.ScopeStaff}, Audience: s.audience})
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(metadataCtx(context.Background(), tok), 10*time.Second)
	defer cancel()
	wantVersion(t, recv(t, s.watch(sctx, &omsv1.WatchOrderRequest{Name: "orders/" + id})), 1, "CREATED")
}

func TestWatchOrderBadInput(t *testing.T) {
	t.Parallel()
	s := startWatchStack(t, nil)
	id, _, ctx := s.ownOrder()
	for _, tc := range []struct {
		req   *omsv1.WatchOrderRequest
		field string
	}{
		{&omsv1.WatchOrderRequest{Name: "orders/nope"}, "name"},
		{&omsv1.WatchOrderRequest{Name: "orders/" + id, SinceVersion: -1}, "since_version"},
		{&omsv1.WatchOrderRequest{Name: "orders/" + id, ReadMask: &fieldmaskpb.FieldMask{Paths: []string{"colour"}}}, "read_mask"},
	} {
		st, err := s.client.WatchOrder(ctx, tc.req)
		if err == nil {
			_, err = st.Recv()
		}
		if got := status.Convert(err); got.Code() != codes.InvalidArgument || violatedField(got) != tc.field {
			t.Errorf("%v: %v, want INVALID_ARGUMENT on %s", tc.req, err, tc.field)
		}
	}
}

// The bounds: per principal, then per process. Not parallel: it reads the
// process's watcher gauge.
func TestWatchOrderBounds(t *testing.T) {
	s := startWatchStack(t, map[string]string{"QUERY_MAX_WATCHERS": "3", "QUERY_MAX_WATCHERS_PER_PRINCIPAL": "2"})
	a, b := newCustomer(), newCustomer()
	_, actx := s.customer(a)
	_, bctx := s.customer(b)
	ida, idb := s.create(a), s.create(b)
	before := testutil.ToFloat64(watchers)
	open := func(ctx context.Context, id string) (context.CancelFunc, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		st, err := s.client.WatchOrder(ctx, &omsv1.WatchOrderRequest{Name: "orders/" + id})
		if err == nil {
			_, err = st.Recv() // the first state: the watch holds its slot
		}
		if err != nil {
			cancel()
		}
		return cancel, err
	}
	mustOpen := func(ctx context.Context, id string) context.CancelFunc {
		t.Helper()
		cancel, err := open(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cancel)
		return cancel
	}
	wantExhausted := func(ctx context.Context, id, limit string) {
		t.Helper()
		_, err := open(ctx, id)
		st := status.Convert(err)
		if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), limit) {
			t.Fatalf("%v, want RESOURCE_EXHAUSTED naming %s", err, limit)
		}
		var quota *errdetails.QuotaFailure
		for _, d := range st.Details() {
			if q, ok := d.(*errdetails.QuotaFailure); ok {
				quota = q
			}
		}
		if quota == nil || quota.Violations[0].Description != limit {
			t.Fatalf("details %v, want a QuotaFailure on %s", st.Details(), limit)
		}
	}

	closeA := mustOpen(actx, ida)
	mustOpen(actx, ida)
	wantExhausted(actx, ida, "QUERY_MAX_WATCHERS_PER_PRINCIPAL")
	// A min_version wait holds what a watch does, and counts the same.
	_, err := s.client.GetOrder(actx, &omsv1.GetOrderRequest{Name: "orders/" + ida, MinVersion: 99})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "QUERY_MAX_WATCHERS_PER_PRINCIPAL") {
		t.Fatalf("a min_version wait past the caller's limit: %v, want RESOURCE_EXHAUSTED", err)
	}
	mustOpen(bctx, idb)
	wantExhausted(bctx, idb, "QUERY_MAX_WATCHERS")
	if got := testutil.ToFloat64(watchers) - before; got != 3 {
		t.Errorf("oms_query_watchers rose by %v, want 3", got)
	}
	// A watch that ends gives its slot back.
	closeA()
	deadline := time.Now().Add(5 * time.Second)
	for {
		cancel, err := open(bctx, idb)
		if err == nil {
			t.Cleanup(cancel)
			break
		}
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("after one ended: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWatchOrderEndsOnDeadline(t *testing.T) {
	t.Parallel()
	s := startWatchStack(t, nil)
	_, _, st := s.watchOwn(500 * time.Millisecond)
	if _, err := st.Recv(); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("%v, want DEADLINE_EXCEEDED", err)
	}
}

// When the listening connection is lost, a change made meanwhile is not
// announced; the feed's Lost makes the watch read it anyway.
func TestWatchOrderRereadsAfterTheFeedReconnects(t *testing.T) {
	t.Parallel()
	s := startWatchStack(t, nil)
	id, ctx, st := s.watchOwn(30 * time.Second)
	_, err := s.db.ExecContext(ctx, `
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ? AND query LIKE 'LISTEN%';
UPDATE orders SET state = 'PAID', version = 2 WHERE id = ?`, s.app, id)
	if err != nil {
		t.Fatal(err)
	}
	wantVersion(t, recv(t, st), 2, "PAID")
	s.change(id)
	wantVersion(t, recv(t, st), 3, "SHIPPED")
}

// Over HTTP a watch is newline-delimited JSON, one {"result": ...} a line,
// each order as protojson encodes it; it outlives the HTTP server's read
// and write timeouts, which bound each line instead.
func TestWatchOrderOverHTTP(t *testing.T) {
	t.Parallel()
	s := startWatchStack(t, map[string]string{"HTTP_READ_TIMEOUT": "300ms", "HTTP_WRITE_TIMEOUT": "300ms", "QUERY_MAX_WAIT": "200ms"})
	id, tok, _ := s.ownOrder()
	s.change(id)

	// Without a token: refused before the stream starts.
	resp, err := http.Get("http://" + s.httpAddr + "/v1/orders/" + id + ":watch")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %s", resp.Status)
	}

	// Refused by the service before the first line: answered as GetOrder
	// is, a Status with the same code and headers, not a stream's
	// {"error": ...} line.
	refusal := func(target, token string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+s.httpAddr+target, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header.Get("WWW-Authenticate")
	}
	for _, c := range []struct {
		name, query, token, challenge string
		code                          int
	}{
		{"bad token", "", "not.a.jwt", `error="invalid_token"`, http.StatusUnauthorized},
		{"bad read mask", "?read_mask=nope", tok, "", http.StatusBadRequest},
	} {
		code, body, challenge := refusal("/v1/orders/"+id+":watch"+c.query, c.token)
		getCode, getBody, getChallenge := refusal("/v1/orders/"+id+c.query, c.token)
		var st struct{ Code int }
		if code != c.code || json.Unmarshal([]byte(body), &st) != nil || st.Code == 0 ||
			code != getCode || body != getBody || challenge != getChallenge || !strings.Contains(challenge, c.challenge) {
			t.Fatalf("%s: watch %d %s (WWW-Authenticate %q); GetOrder %d %s (%q)", c.name, code, body, challenge, getCode, getBody, getChallenge)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+s.httpAddr+"/v1/orders/"+id+":watch?since_version=1", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: %s", resp.Status, b)
	}
	lines := bufio.NewReader(resp.Body)
	line := func() *omsv1.Order {
		t.Helper()
		b, err := lines.ReadBytes('\n')
		if err != nil {
			t.Fatalf("read a line: %v (%q)", err, b)
		}
		var chunk struct {
			Result json.RawMessage `json:"result"`
			Error  json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(b, &chunk); err != nil || chunk.Error != nil {
			t.Fatalf("line %q: %v", b, err)
		}
		var r omsv1.WatchOrderResponse
		if err := protojson.Unmarshal(chunk.Result, &r); err != nil {
			t.Fatalf("result %s: %v", chunk.Result, err)
		}
		// Byte for byte what protojson writes, spacing aside.
		want, _ := protojson.Marshal(&r)
		if compact(t, want) != compact(t, chunk.Result) {
			t.Fatalf("result %s, protojson %s", chunk.Result, want)
		}
		return r.Order
	}
	wantVersion(t, line(), 2, "PAID")
	time.Sleep(time.Second) // past both HTTP timeouts
	s.change(id)
	wantVersion(t, line(), 3, "SHIPPED")
	s.change(id)
	wantVersion(t, line(), 4, "DELIVERED")
}

func compact(t *testing.T, b []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

// Shutdown ends every watch with OK at once, over gRPC and HTTP, so the
// drain does not wait for them.
func TestWatchOrderEndsOnShutdown(t *testing.T) {
	t.Parallel()
	s := startWatchStack(t, map[string]string{"DRAIN_TIMEOUT": "20s"})
	id, tok, ctx := s.ownOrder()
	st := s.watch(ctx, &omsv1.WatchOrderRequest{Name: "orders/" + id})
	recv(t, st)
	req, _ := http.NewRequest("GET", "http://"+s.httpAddr+"/v1/orders/"+id+":watch", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := bufio.NewReader(resp.Body)
	if _, err := body.ReadBytes('\n'); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	s.stop()
	if _, err := st.Recv(); err != io.EOF {
		t.Fatalf("gRPC watch ended with %v, want OK", err)
	}
	if rest, err := io.ReadAll(body); err != nil || len(rest) != 0 {
		t.Fatalf("HTTP watch ended with %q, %v; want a clean end", rest, err)
	}
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not stop within 5s")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
}

func TestGetOrderMinVersion(t *testing.T) {
	t.Parallel()
	s := startWatchStack(t, map[string]string{"QUERY_MAX_WAIT": "500ms"})
	id, tok, ctx := s.ownOrder()
	name := "orders/" + id

	// Reached already: at once.
	o, err := s.client.GetOrder(ctx, &omsv1.GetOrderRequest{Name: name, MinVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	wantVersion(t, o, 1, "CREATED")

	// Not yet: it waits for the change.
	type result struct {
		o   *omsv1.Order
		err error
	}
	c := make(chan result, 1)
	go func() {
		o, err := s.client.GetOrder(ctx, &omsv1.GetOrderRequest{Name: name, MinVersion: 2, ReadMask: &fieldmaskpb.FieldMask{Paths: []string{"state"}}})
		c <- result{o, err}
	}()
	time.Sleep(150 * time.Millisecond)
	s.change(id)
	r := <-c
	if r.err != nil {
		t.Fatal(r.err)
	}
	// The mask is the caller's: version is read, not sent.
	if !proto.Equal(r.o, &omsv1.Order{State: omsv1.Order_PAID}) {
		t.Fatalf("got %v", r.o)
	}

	// Never: DEADLINE_EXCEEDED after QUERY_MAX_WAIT, saying how far it got.
	start := time.Now()
	_, err = s.client.GetOrder(ctx, &omsv1.GetOrderRequest{Name: name, MinVersion: 3})
	if st := status.Convert(err); st.Code() != codes.DeadlineExceeded || st.Message() != "order "+name+" is at version 2, not yet 3" {
		t.Fatalf("%v, want DEADLINE_EXCEEDED", err)
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Fatalf("gave up after %v", d)
	}
	// Or sooner, at the caller's deadline.
	dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err = s.client.GetOrder(dctx, &omsv1.GetOrderRequest{Name: name, MinVersion: 3}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("%v, want DEADLINE_EXCEEDED", err)
	}

	// No such order, or another's: NOT_FOUND once the wait is over.
	_, otherCtx := s.customer(newCustomer())
	for _, tc := range []struct {
		ctx  context.Context
		name string
	}{{ctx, "orders/" + uuid.NewString()}, {otherCtx, name}} {
		if _, err := s.client.GetOrder(tc.ctx, &omsv1.GetOrderRequest{Name: tc.name, MinVersion: 1}); status.Code(err) != codes.NotFound {
			t.Fatalf("%s: %v, want NOT_FOUND", tc.name, err)
		}
	}

	if _, err := s.client.GetOrder(ctx, &omsv1.GetOrderRequest{Name: name, MinVersion: -1}); status.Code(err) != codes.InvalidArgument || violatedField(status.Convert(err)) != "min_version" {
		t.Fatalf("%v, want INVALID_ARGUMENT on min_version", err)
	}

	// Over HTTP, the same.
	go func() {
		time.Sleep(150 * time.Millisecond)
		s.change(id)
	}()
	req, _ := http.NewRequest("GET", "http://"+s.httpAddr+"/v1/"+name+"?min_version=3", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got omsv1.Order
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || protojson.Unmarshal(b, &got) != nil {
		t.Fatalf("%s: %s", resp.Status, b)
	}
	wantVersion(t, &got, 3, "SHIPPED")
}

// A min_version wait in flight when the server stops ends at once, and
// says to retry (another replica may have the version), so that the
// drain does not wait for it.
func TestGetOrderMinVersionEndsOnShutdown(t *testing.T) {
	t.Parallel()
	s := startWatchStack(t, map[string]string{"QUERY_MAX_WAIT": "20s"})
	id, _, ctx := s.ownOrder()
	c := make(chan error, 1)
	go func() {
		_, err := s.client.GetOrder(ctx, &omsv1.GetOrderRequest{Name: "orders/" + id, MinVersion: 2})
		c <- err
	}()
	time.Sleep(200 * time.Millisecond)
	s.stop()
	select {
	case err := <-c:
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("%v, want UNAVAILABLE", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the wait did not end within 5s of shutdown")
	}
}

func TestLoadConfigWatchBounds(t *testing.T) {
	c, err := LoadConfig(with(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxWatchers != 1000 || c.MaxWatchersPerPrincipal != 100 || c.MaxWait != 10*time.Second {
		t.Errorf("defaults: %d, %d, %v", c.MaxWatchers, c.MaxWatchersPerPrincipal, c.MaxWait)
	}
	for _, bad := range []map[string]string{
		{"QUERY_MAX_WATCHERS": "0"},
		{"QUERY_MAX_WATCHERS_PER_PRINCIPAL": "-1"},
		{"QUERY_MAX_WAIT": "2h"},
		{"QUERY_MAX_WAIT": "soon"},
	} {
		for k := range bad {
			if _, err := LoadConfig(with(bad)); err == nil || !strings.Contains(err.Error(), k) {
				t.Errorf("%v: %v, want an error naming %s", bad, err, k)
			}
		}
	}
}

// watches is how many watches of the order are registered now.
func (s *watchStack) watches(id string) int {
	s.t.Helper()
	var n int
	if err := s.db.NewRaw(`SELECT count(*) FROM order_watches WHERE order_id = ?`, id).Scan(context.Background(), &n); err != nil {
		s.t.Fatal(err)
	}
	return n
}

// eventually waits up to 5 s for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
	}
}

// createInFlight inserts an order in a transaction left open: its
// trigger has run, and announced nothing, since nobody watched it yet.
// commit commits it.
func (s *watchStack) createInFlight(id, customer string) (commit func()) {
	s.t.Helper()
	ctx := context.Background()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { tx.Rollback() })
	if _, err := tx.ExecContext(ctx, `
INSERT INTO orders (id, customer_id, state, currency_code, version, create_time, update_time, created_by)
VALUES (?, ?, 'CREATED', 'USD', 1, now(), now(), ?)`, id, customer, "customer:"+customer); err != nil {
		s.t.Fatal(err)
	}
	return func() {
		s.t.Helper()
		if err := tx.Commit(); err != nil {
			s.t.Fatal(err)
		}
	}
}

// A watch that starts while the order's create is in flight: the create's
// trigger ran before the watch was registered, so the create is never
// announced, and there is no row whose lock the registration could wait
// for. The backstop's re-read finds the order well before QUERY_MAX_WAIT.
func TestWatchOrderFindsACreateInFlight(t *testing.T) {
	t.Parallel()
	s := startWatchStack(t, nil) // QUERY_MAX_WAIT 10s
	cust := newCustomer()
	_, ctx := s.customer(cust)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	// WatchOrder.
	id := uuid.NewString()
	commit := s.createInFlight(id, cust)
	st := s.watch(ctx, &omsv1.WatchOrderRequest{Name: "orders/" + id})
	eventually(t, "the watch registered", func() bool { return s.watches(id) == 1 })
	commit()
	start := time.Now()
	wantVersion(t, recv(t, st), 1, "CREATED")
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the create was seen %v after its commit", d)
	}
	// Once it exists, its changes are announced.
	s.change(id)
	wantVersion(t, recv(t, st), 2, "PAID")

	// GetOrder's min_version.
	id = uuid.NewString()
	commit = s.createInFlight(id, cust)
	got := make(chan error, 1)
	go func() {
		_, err := s.client.GetOrder(ctx, &omsv1.GetOrderRequest{Name: "orders/" + id, MinVersion: 1})
		got <- err
	}()
	eventually(t, "the min_version wait registered", func() bool { return s.watches(id) == 1 })
	commit()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("GetOrder min_version did not see the create within 3s of its commit")
	}
}

// A stream's watch is registered while it lasts, renewed before it
// lapses, and removed when the stream ends.
func TestWatchOrderRegistersRenewsAndRemovesItsWatch(t *testing.T) {
	t.Parallel()
	// QUERY_MAX_WAIT at its least: a watch lasts it and the margin, and
	// is renewed at half that.
	s := startWatchStack(t, map[string]string{"QUERY_MAX_WAIT": "10ms"})
	id, _, ctx := s.ownOrder()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st := s.watch(sctx, &omsv1.WatchOrderRequest{Name: "orders/" + id})
	recv(t, st)
	expiry := func() time.Time {
		t.Helper()
		var at time.Time
		if err := s.db.NewRaw(`SELECT expires_at FROM order_watches WHERE order_id = ?`, id).Scan(context.Background(), &at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	first := expiry()
	if left := time.Until(first); left <= 0 || left > watchMargin+time.Second {
		t.Fatalf("the watch expires in %v, want within QUERY_MAX_WAIT and the margin", left)
	}
	eventually(t, "the watch renewed", func() bool { return expiry().After(first) })
	// Renewed, it still announces.
	s.change(id)
	wantVersion(t, recv(t, st), 2, "PAID")

	cancel()
	eventually(t, "the watch removed", func() bool { return s.watches(id) == 0 })
}

// GetOrder's min_version already reached is one read: no watch.
func TestGetOrderMinVersionReachedRegistersNoWatch(t *testing.T) {
	t.Parallel()
	s := startWatchStack(t, nil)
	id, _, ctx := s.ownOrder()
	if _, err := s.client.GetOrder(ctx, &omsv1.GetOrderRequest{Name: "orders/" + id, MinVersion: 1}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.db.NewRaw(`SELECT count(*) FROM order_watches`).Scan(context.Background(), &n); err != nil || n != 0 {
		t.Fatalf("%d watches, %v; want none", n, err)
	}
}

func TestBackstopBacksOff(t *testing.T) {
	var b backstop
	var got []time.Duration
	for range 7 {
		b.after()
		got = append(got, b.next)
	}
	want := []time.Duration{50, 100, 200, 400, 800, 1000, 1000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("re-reads after %v, want %v ms", got, want)
		}
	}
}

// A registration that fails because the caller has gone says so, not
// that the database failed.
func TestWatchErrorOfAGoneCaller(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := watchError(ctx, ctx.Err()); status.Code(err) != codes.Canceled {
		t.Errorf("gone: %v, want CANCELED", err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), -time.Second)
	defer dcancel()
	if err := watchError(dctx, dctx.Err()); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("past its deadline: %v, want DEADLINE_EXCEEDED", err)
	}
}
