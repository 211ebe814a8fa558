package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/longrunning/autogen/longrunningpb"
	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/types/known/durationpb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/changefeed"
	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/operation"
	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderstore"
)

var testOperationSecret = []byte(strings.Repeat("s", 32))

type opsHarness struct {
	t   *testing.T
	db  *bun.DB
	svc *operationsService
}

func newOpsHarness(t *testing.T) *opsHarness {
	t.Helper()
	db := dbtest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	feed := changefeed.New(db, slog.New(slog.DiscardHandler), operationDoneChannel)
	done := make(chan struct{})
	go func() { feed.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	store := orderstore.New(db)
	return &opsHarness{t: t, db: db, svc: &operationsService{
		store: store, secret: testOperationSecret, tokens: newPageTokens(pageTokenKey(nil, testOperationSecret, nil)), follow: newFollower(feed, store, slog.New(slog.DiscardHandler), 10*time.Second), maxWait: 10 * time.Second}}
}

func opsAs(p auth.Principal) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	_ = cancel // ends with the test process; every call here is bounded
	return auth.WithPrincipal(ctx, p)
}

var (
	opsShop  = auth.Principal{Kind: auth.Service, Subject: "opsShop", Scopes: []string{auth.ScopeRead}}
	opsOther = auth.Principal{Kind: auth.Service, Subject: "opsOther", Scopes: []string{auth.ScopeRead}}
	opsStaff = auth.Principal{Kind: auth.Service, Subject: "console", Scopes: []string{auth.ScopeRead, auth.ScopeStaff}}
)

// command is a pay for orderID by p, its operation's name, and its key.
func (h *opsHarness) command(p auth.Principal, orderID, requestID string) (string, operation.Key) {
	h.t.Helper()
	cmd := order.Command{ID: requestID, OrderID: orderID, Actor: p.Actor(), Body: order.PayOrder{Reference: "r", AmountMinor: 100}}
	name, err := operation.For(testOperationSecret, cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	return name, operation.KeyOf(cmd)
}

// record writes an operation row as the processor does.
func (h *opsHarness) record(p auth.Principal, orderID, requestID string, key operation.Key, done bool, code codes.Code, msg string, at time.Time) {
	h.t.Helper()
	if _, err := h.db.ExecContext(context.Background(), `
INSERT INTO operations (id, principal, command_id, order_id, command, done, code, message, attempts, order_version, accept_time, update_time)
VALUES (?, ?, ?, ?, 'pay', ?, ?, ?, 1, 2, ?, ?)
ON CONFLICT (id) DO UPDATE SET done = excluded.done, code = excluded.code, message = excluded.message`,
		key[:], p.ID(), requestID, orderID, done, int32(code), msg, at, at); err != nil {
		h.t.Fatal(err)
	}
}

func (h *opsHarness) order(p auth.Principal, orderID string) {
	h.t.Helper()
	if _, err := h.db.ExecContext(context.Background(), `
INSERT INTO orders (id, customer_id, state, currency_code, subtotal_minor, total_minor, refund_due, created_by, version, last_event_seq, create_time, update_time)
VALUES (?, 'c-1', 'PAID', 'USD', 100, 100, false, ?, 2, 2, now(), now())`, orderID, p.ID()); err != nil {
		h.t.Fatal(err)
	}
}

func wantOpCode(t *testing.T, what string, err error, code codes.Code, field string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code || (field != "" && violatedField(st) != field) {
		t.Errorf("%s: %v (field %q), want %s on %q", what, err, violatedField(st), code, field)
	}
}

func TestGetOperationOutcomesAndVisibility(t *testing.T) {
	t.Parallel()
	h := newOpsHarness(t)
	orderID := uuid.NewString()
	h.order(opsShop, orderID)
	applied, appliedKey := h.command(opsShop, orderID, "req-1")
	refused, refusedKey := h.command(opsShop, orderID, "req-2")
	queued, _ := h.command(opsShop, orderID, "req-3")
	at := time.Now()
	h.record(opsShop, orderID, "req-1", appliedKey, true, codes.OK, "", at)
	h.record(opsShop, orderID, "req-2", refusedKey, true, codes.FailedPrecondition, "amount does not match", at)

	op, err := h.svc.GetOperation(opsAs(opsShop), &longrunningpb.GetOperationRequest{Name: applied})
	if err != nil {
		t.Fatal(err)
	}
	var o omsv1.Order
	var md omsv1.CommandMetadata
	if !op.Done || op.GetResponse().UnmarshalTo(&o) != nil || o.Id != orderID || o.Version != 2 ||
		op.Metadata.UnmarshalTo(&md) != nil || md.Order != "orders/"+orderID || md.Command != "pay" || md.CommandId != "req-1" ||
		md.OrderVersion != 2 || md.Attempts != 1 || md.AcceptTime == nil {
		t.Errorf("applied: %v (order %v, metadata %v)", op, &o, &md)
	}

	op, err = h.svc.GetOperation(opsAs(opsShop), &longrunningpb.GetOperationRequest{Name: refused})
	if err != nil || !op.Done || op.GetError().GetCode() != int32(codes.FailedPrecondition) || op.GetError().GetMessage() != "amount does not match" {
		t.Errorf("refused: %v, %v", op, err)
	}

	// Not recorded yet: pending, described by its name alone.
	op, err = h.svc.GetOperation(opsAs(opsShop), &longrunningpb.GetOperationRequest{Name: queued})
	if err != nil || op.Done || op.Result != nil || op.Metadata.UnmarshalTo(&md) != nil || md.Order != "orders/"+orderID || md.Command != "pay" || md.Attempts != 0 {
		t.Errorf("queued: %v (%v), %v", op, &md, err)
	}

	// Another principal: not found, recorded or not; opsStaff: recorded only.
	for _, name := range []string{applied, queued} {
		_, err := h.svc.GetOperation(opsAs(opsOther), &longrunningpb.GetOperationRequest{Name: name})
		wantOpCode(t, "another principal", err, codes.NotFound, "")
	}
	if op, err := h.svc.GetOperation(opsAs(opsStaff), &longrunningpb.GetOperationRequest{Name: refused}); err != nil || op.GetError() == nil || op.Name != refused {
		t.Errorf("opsStaff: %v, %v", op, err)
	}
	_, err = h.svc.GetOperation(opsAs(opsStaff), &longrunningpb.GetOperationRequest{Name: queued})
	wantOpCode(t, "opsStaff, unrecorded", err, codes.NotFound, "")

	// A forged name (another order under a recorded key) is not found;
	// what is not a name at all is a bad argument.
	b, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(applied, operation.Prefix))
	b[3] ^= 1
	forged := operation.Prefix + base64.RawURLEncoding.EncodeToString(b)
	for _, p := range []auth.Principal{opsShop, opsStaff} {
		_, err = h.svc.GetOperation(opsAs(p), &longrunningpb.GetOperationRequest{Name: forged})
		wantOpCode(t, "forged for "+p.ID(), err, codes.NotFound, "")
	}
	for _, bad := range []string{"", "operations/", "orders/" + orderID, "operations/%%%"} {
		_, err = h.svc.GetOperation(opsAs(opsShop), &longrunningpb.GetOperationRequest{Name: bad})
		wantOpCode(t, bad, err, codes.InvalidArgument, "name")
	}
}

func TestWaitOperationWakesOnTheOutcome(t *testing.T) {
	t.Parallel()
	h := newOpsHarness(t)
	orderID := uuid.NewString()
	name, key := h.command(opsShop, orderID, "req-1")

	// Nothing happens: the pending operation when the timeout passes.
	start := time.Now()
	op, err := h.svc.WaitOperation(opsAs(opsShop), &longrunningpb.WaitOperationRequest{Name: name, Timeout: durationpb.New(300 * time.Millisecond)})
	if err != nil || op.Done || time.Since(start) < 300*time.Millisecond {
		t.Errorf("timed out wait: %v, %v after %s", op, err, time.Since(start))
	}

	// Retrying (recorded, not done) and then done: the wait ends at the
	// outcome's commit, long before its timeout.
	h.record(opsShop, orderID, "req-1", key, false, codes.OK, "", time.Now())
	go func() {
		time.Sleep(300 * time.Millisecond)
		h.record(opsShop, orderID, "req-1", key, true, codes.NotFound, "order orders/"+orderID+" does not exist", time.Now())
	}()
	start = time.Now()
	op, err = h.svc.WaitOperation(opsAs(opsShop), &longrunningpb.WaitOperationRequest{Name: name, Timeout: durationpb.New(8 * time.Second)})
	if err != nil || !op.Done || op.GetError().GetCode() != int32(codes.NotFound) || time.Since(start) > 4*time.Second {
		t.Errorf("woken wait: %v, %v after %s", op, err, time.Since(start))
	}

	// The call's deadline bounds the wait too, and the answer comes before it.
	ctx, cancel := context.WithTimeout(opsAs(opsShop), 500*time.Millisecond)
	defer cancel()
	pending, _ := h.command(opsShop, orderID, "req-2")
	if op, err := h.svc.WaitOperation(ctx, &longrunningpb.WaitOperationRequest{Name: pending}); err != nil || op.Done {
		t.Errorf("wait within the deadline: %v, %v", op, err)
	}

	_, err = h.svc.WaitOperation(opsAs(opsShop), &longrunningpb.WaitOperationRequest{Name: name, Timeout: durationpb.New(-time.Second)})
	wantOpCode(t, "negative timeout", err, codes.InvalidArgument, "timeout")
	_, err = h.svc.WaitOperation(opsAs(opsOther), &longrunningpb.WaitOperationRequest{Name: name})
	wantOpCode(t, "another principal", err, codes.NotFound, "")
}

func TestListOperationsPagesWithSignedTokens(t *testing.T) {
	t.Parallel()
	h := newOpsHarness(t)
	orderID, otherOrder := uuid.NewString(), uuid.NewString()
	h.order(opsShop, orderID)
	at := time.Now().Add(-time.Minute)
	var names []string
	for i := range 5 {
		req := "req-" + string(rune('a'+i))
		name, key := h.command(opsShop, orderID, req)
		h.record(opsShop, orderID, req, key, i%2 == 0, codes.OK, "", at.Add(time.Duration(i)*time.Second))
		names = append(names, name)
	}
	_, key := h.command(opsOther, orderID, "req-x")
	h.record(opsOther, orderID, "req-x", key, true, codes.NotFound, "order not found", at.Add(10*time.Second))
	filter := `order = "orders/` + orderID + `"`

	list := func(p auth.Principal, size int32) ([]string, []string) {
		t.Helper()
		var got, tokens []string
		req := &longrunningpb.ListOperationsRequest{Name: "operations", Filter: filter, PageSize: size}
		for range 10 {
			resp, err := h.svc.ListOperations(opsAs(p), req)
			if err != nil {
				t.Fatal(err)
			}
			for _, op := range resp.Operations {
				got = append(got, op.Name)
			}
			if resp.NextPageToken == "" {
				return got, tokens
			}
			tokens = append(tokens, resp.NextPageToken)
			req.PageToken = resp.NextPageToken
		}
		t.Fatal("paging did not end")
		return nil, nil
	}
	got, tokens := list(opsShop, 2)
	if strings.Join(got, " ") != strings.Join(names, " ") || len(tokens) != 2 {
		t.Errorf("the opsShop's operations in pages of 2: %v (%d tokens), want %v", got, len(tokens), names)
	}
	if got, _ := list(opsStaff, 0); len(got) != 6 || strings.Join(got[:5], " ") != strings.Join(names, " ") {
		t.Errorf("opsStaff sees %v", got)
	}
	if got, _ := list(opsOther, 10); len(got) != 1 {
		t.Errorf("another principal sees %v", got)
	}

	// Tokens are the service's own, for this caller and order only.
	b, _ := base64.RawURLEncoding.DecodeString(tokens[0])
	b[5] ^= 1
	for what, tc := range map[string]struct {
		p            auth.Principal
		filter, page string
	}{
		"altered":        {opsShop, filter, base64.RawURLEncoding.EncodeToString(b)},
		"garbage":        {opsShop, filter, "not-a-token"},
		"another order":  {opsShop, `order = "orders/` + otherOrder + `"`, tokens[0]},
		"another caller": {opsOther, filter, tokens[0]},
	} {
		_, err := h.svc.ListOperations(opsAs(tc.p), &longrunningpb.ListOperationsRequest{Filter: tc.filter, PageToken: tc.page})
		wantOpCode(t, what+" token", err, codes.InvalidArgument, "page_token")
	}
	for _, bad := range []string{"", `order = "x"`, `state = PAID`, `order = "orders/` + orderID + `" OR order = "orders/` + otherOrder + `"`, `order:*`, `order = `,
		strings.Repeat("(", 400000) + `order = "orders/` + orderID + `"` + strings.Repeat(")", 400000)} {
		_, err := h.svc.ListOperations(opsAs(opsShop), &longrunningpb.ListOperationsRequest{Filter: bad})
		wantOpCode(t, fmt.Sprintf("filter %.40s (%d bytes)", bad, len(bad)), err, codes.InvalidArgument, "filter")
	}
	_, err := h.svc.ListOperations(opsAs(opsShop), &longrunningpb.ListOperationsRequest{Name: "orders", Filter: filter})
	wantOpCode(t, "name", err, codes.InvalidArgument, "name")
	_, err = h.svc.ListOperations(opsAs(opsShop), &longrunningpb.ListOperationsRequest{Filter: filter, PageSize: -1})
	wantOpCode(t, "page_size", err, codes.InvalidArgument, "page_size")
}

// The README's grpcurl WaitOperation example parses as the request it
// means (the text format, as for GetOrder: TestREADMEGrpcurlGetOrderExample).
func TestREADMEGrpcurlWaitOperationExample(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^grpcurl .*-format text -d '([^']*)' \\\n\s+\S+ google\.longrunning\.Operations/WaitOperation$`).FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no grpcurl WaitOperation example in the text format")
	}
	var req longrunningpb.WaitOperationRequest
	if err := prototext.Unmarshal(m[1], &req); err != nil {
		t.Fatalf("README example %s: %v", m[1], err)
	}
	if req.Name != "operations/<op>" || req.GetTimeout().AsDuration() != 10*time.Second {
		t.Errorf("README example parses as %v", &req)
	}
}

// A server that begins to drain ends its waits at once, with the
// operation as it is, so they do not hold the drain up.
func TestWaitOperationEndsOnShutdown(t *testing.T) {
	t.Parallel()
	h := newOpsHarness(t)
	shutdown := make(chan struct{})
	svc := *h.svc
	svc.shutdown = shutdown
	name, _ := h.command(opsShop, uuid.NewString(), "req-1")
	time.AfterFunc(200*time.Millisecond, func() { close(shutdown) })
	start := time.Now()
	op, err := svc.WaitOperation(opsAs(opsShop), &longrunningpb.WaitOperationRequest{Name: name, Timeout: durationpb.New(8 * time.Second)})
	if err != nil || op.Done || time.Since(start) > 4*time.Second {
		t.Errorf("wait at shutdown: %v, %v after %s", op, err, time.Since(start))
	}
}

// An outcome recorded without touching its order's row (a dead-lettered
// command, say) whose trigger ran before the wait's watch was visible is
// never announced, and the registration has no row lock to wait on; the
// backstop's re-read finds it, long before the timeout.
func TestWaitOperationFindsAnUnannouncedOutcome(t *testing.T) {
	t.Parallel()
	h := newOpsHarness(t)
	orderID := uuid.NewString()
	name, key := h.command(opsShop, orderID, "req-1")
	ctx := context.Background()
	tx, err := h.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	now := time.Now()
	if _, err := tx.ExecContext(ctx, `
INSERT INTO operations (id, principal, command_id, order_id, command, done, code, message, attempts, accept_time, update_time)
VALUES (?, ?, 'req-1', ?, 'pay', true, ?, 'dead-lettered', 1, ?, ?)`, key[:], opsShop.ID(), orderID, int32(codes.Internal), now, now); err != nil {
		t.Fatal(err)
	}

	type result struct {
		op  *longrunningpb.Operation
		err error
	}
	got := make(chan result, 1)
	go func() {
		op, err := h.svc.WaitOperation(opsAs(opsShop), &longrunningpb.WaitOperationRequest{Name: name, Timeout: durationpb.New(8 * time.Second)})
		got <- result{op, err}
	}()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var n int
		if err := h.db.NewRaw(`SELECT count(*) FROM order_watches WHERE order_id = ?`, orderID).Scan(ctx, &n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the wait registered no watch within 5s")
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	select {
	case r := <-got:
		if r.err != nil || !r.op.Done || r.op.GetError().GetCode() != int32(codes.Internal) {
			t.Fatalf("%v, %v; want done with INTERNAL", r.op, r.err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("the outcome was seen %v after its commit", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the wait did not see the outcome within 5s of its commit")
	}
}
