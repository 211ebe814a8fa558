package e2e

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/longrunning/autogen/longrunningpb"
	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/devissuer"
	"github.com/omsdev/oms/pkg/operation"
)

// opsCaller is one principal's view of the API: its commands and their
// operations.
type opsCaller struct {
	token string
	cmds  omsv1.OrderCommandServiceClient
	ops   longrunningpb.OperationsClient
}

func newOpsCaller(t *testing.T, token string) opsCaller {
	return opsCaller{
		token: token,
		cmds:  omsv1.NewOrderCommandServiceClient(grpcAs(t, sys.ingestGRPC, token)),
		ops:   longrunningpb.NewOperationsClient(grpcAs(t, sys.queryGRPC, token)),
	}
}

// shopClient is a service client of its own with every scope but staff.
func shopClient(t *testing.T) opsCaller {
	return newOpsCaller(t, service(t, "shop-"+uuid.NewString()[:8],
		auth.ScopeCreate, auth.ScopeRead, auth.ScopePay, auth.ScopeFulfil, auth.ScopeCancel))
}

func testOrder() *omsv1.Order {
	return &omsv1.Order{CustomerId: "c-1", CurrencyCode: "USD",
		LineItems: []*omsv1.LineItem{{Sku: "SKU-1", Name: "Mug", Quantity: 2, UnitPriceMinor: 1200}}}
}

// accepted returns a check of a command's 202 that returns its
// operation's name.
func accepted(t *testing.T) func(a *omsv1.CommandAcceptance, err error) string {
	return func(a *omsv1.CommandAcceptance, err error) string {
		t.Helper()
		if err != nil {
			t.Fatalf("command: %v", err)
		}
		if !strings.HasPrefix(a.Operation, operation.Prefix) {
			t.Fatalf("acceptance without an operation: %v", a)
		}
		return a.Operation
	}
}

// waitDone waits for the operation through WaitOperation, as a client
// would: each call waits up to its timeout and may answer "still pending".
func (c opsCaller) waitDone(t *testing.T, name string) *longrunningpb.Operation {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		op, err := c.ops.WaitOperation(ctxT(t), &longrunningpb.WaitOperationRequest{Name: name, Timeout: durationpb.New(10 * time.Second)})
		if err != nil {
			t.Fatalf("wait %s: %v", name, err)
		}
		if op.Done {
			return op
		}
	}
	t.Fatalf("operation %s not done in 90s\n%s", name, sys.logs())
	return nil
}

func metadataOf(t *testing.T, op *longrunningpb.Operation) *omsv1.CommandMetadata {
	t.Helper()
	var md omsv1.CommandMetadata
	if err := op.GetMetadata().UnmarshalTo(&md); err != nil {
		t.Fatalf("metadata of %s: %v", op.Name, err)
	}
	return &md
}

// applied checks a done operation's response: the order, in state, at
// least at the version the metadata names.
func applied(t *testing.T, what string, op *longrunningpb.Operation, state omsv1.Order_State) *omsv1.Order {
	t.Helper()
	var o omsv1.Order
	md := metadataOf(t, op)
	if !op.Done || op.GetError() != nil || op.GetResponse().UnmarshalTo(&o) != nil {
		t.Fatalf("%s: %v, want done with the order", what, op)
	}
	if o.State != state || o.Version != md.OrderVersion || md.Order != o.Name || md.Command != what ||
		md.Attempts < 1 || md.AcceptTime == nil || md.UpdateTime == nil || md.CommandId == "" {
		t.Errorf("%s: order %s v%d, metadata %v", what, o.State, o.Version, md)
	}
	return &o
}

// refused checks a done operation's error.
func refused(t *testing.T, what string, op *longrunningpb.Operation, code codes.Code, reason string) {
	t.Helper()
	if !op.Done || op.GetResponse() != nil || codes.Code(op.GetError().GetCode()) != code || !strings.Contains(op.GetError().GetMessage(), reason) {
		t.Errorf("%s: %v, want done with %s %q", what, op, code, reason)
	}
}

// Every kind of command, applied: its operation is done with the order it
// produced, through WaitOperation and then GetOperation alike.
func TestOperationsOfAppliedCommands(t *testing.T) {
	t.Parallel()
	c := shopClient(t)
	ctx := ctxT(t)
	acc := accepted(t)
	step := func(what string, state omsv1.Order_State, name string) *omsv1.Order {
		t.Helper()
		o := applied(t, what, c.waitDone(t, name), state)
		again, err := c.ops.GetOperation(ctx, &longrunningpb.GetOperationRequest{Name: name})
		if err != nil || again.Name != name {
			t.Fatalf("get %s: %v %v", what, again, err)
		}
		applied(t, what, again, state)
		return o
	}
	o := step("create", omsv1.Order_CREATED, acc(c.cmds.CreateOrder(ctx, &omsv1.CreateOrderRequest{Order: testOrder(), RequestId: uuid.NewString()})))
	step("pay", omsv1.Order_PAID, acc(c.cmds.PayOrder(ctx, &omsv1.PayOrderRequest{Name: o.Name, RequestId: uuid.NewString(), PaymentReference: "pay-1", AmountMinor: o.TotalMinor})))
	step("ship", omsv1.Order_SHIPPED, acc(c.cmds.ShipOrder(ctx, &omsv1.ShipOrderRequest{Name: o.Name, RequestId: uuid.NewString(), Carrier: "UPS", TrackingNumber: "1Z"})))
	step("deliver", omsv1.Order_DELIVERED, acc(c.cmds.DeliverOrder(ctx, &omsv1.DeliverOrderRequest{Name: o.Name, RequestId: uuid.NewString()})))

	o = step("create", omsv1.Order_CREATED, acc(c.cmds.CreateOrder(ctx, &omsv1.CreateOrderRequest{Order: testOrder(), RequestId: uuid.NewString()})))
	step("cancel", omsv1.Order_CANCELLED, acc(c.cmds.CancelOrder(ctx, &omsv1.CancelOrderRequest{Name: o.Name, RequestId: uuid.NewString(), Reason: "changed mind"})))
}

// Commands that are not applied: the operation says why, with the code
// the contract gives (proto/oms/v1/operation.proto).
func TestOperationsOfRefusedCommands(t *testing.T) {
	t.Parallel()
	c := shopClient(t)
	ctx := ctxT(t)
	o := applied(t, "create", c.waitDone(t, accepted(t)(c.cmds.CreateOrder(ctx, &omsv1.CreateOrderRequest{Order: testOrder(), RequestId: uuid.NewString()}))), omsv1.Order_CREATED)

	wrongAmount := accepted(t)(c.cmds.PayOrder(ctx, &omsv1.PayOrderRequest{Name: o.Name, RequestId: uuid.NewString(), PaymentReference: "p", AmountMinor: 1}))
	refused(t, "wrong amount", c.waitDone(t, wrongAmount), codes.FailedPrecondition, "payment amount 1 does not match order total 2400 USD")

	illegal := accepted(t)(c.cmds.ShipOrder(ctx, &omsv1.ShipOrderRequest{Name: o.Name, RequestId: uuid.NewString(), Carrier: "UPS", TrackingNumber: "1Z"}))
	refused(t, "ship before pay", c.waitDone(t, illegal), codes.FailedPrecondition, "cannot ship an order in state CREATED")

	// A retry of a request is the same operation; the same request id for
	// another request is another operation, refused.
	reqID := uuid.NewString()
	first := accepted(t)(c.cmds.CancelOrder(ctx, &omsv1.CancelOrderRequest{Name: o.Name, RequestId: reqID, Reason: "first"}))
	retry := accepted(t)(c.cmds.CancelOrder(ctx, &omsv1.CancelOrderRequest{Name: o.Name, RequestId: reqID, Reason: "first"}))
	if retry != first {
		t.Errorf("a retry has operation %s, the first %s", retry, first)
	}
	applied(t, "cancel", c.waitDone(t, first), omsv1.Order_CANCELLED)
	reused := accepted(t)(c.cmds.CancelOrder(ctx, &omsv1.CancelOrderRequest{Name: o.Name, RequestId: reqID, Reason: "second"}))
	if reused == first {
		t.Error("a reused request id with another request has the first's operation")
	}
	refused(t, "reused request id", c.waitDone(t, reused), codes.AlreadyExists, reqID)
	if op, err := c.ops.GetOperation(ctx, &longrunningpb.GetOperationRequest{Name: first}); err != nil || op.GetError() != nil {
		t.Errorf("the first request's operation after the reuse: %v %v", op, err)
	}
}

// A pay for an order that does not exist is retried (the create may be on
// its way), pending with its attempts, and then dead-lettered: NOT_FOUND.
func TestOperationOfACommandForAMissingOrder(t *testing.T) {
	t.Parallel()
	c := shopClient(t)
	missing := "orders/" + uuid.NewString()
	name := accepted(t)(c.cmds.PayOrder(ctxT(t), &omsv1.PayOrderRequest{Name: missing, RequestId: uuid.NewString(), PaymentReference: "p", AmountMinor: 100}))
	sawRetrying := false
	deadline := time.Now().Add(90 * time.Second)
	var op *longrunningpb.Operation
	for time.Now().Before(deadline) {
		var err error
		op, err = c.ops.GetOperation(ctxT(t), &longrunningpb.GetOperationRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if op.Done {
			break
		}
		if md := metadataOf(t, op); md.Attempts > 0 && md.LastErrorClass != "" && md.CommandId != "" {
			sawRetrying = true
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !sawRetrying {
		t.Errorf("never seen pending with attempts and the error class; last %v", op)
	}
	refused(t, "pay for a missing order", op, codes.NotFound, missing)
}

// An operation is its principal's and staff's: to anyone else it is not
// there, whether or not it is done. A forged name is not found either,
// and what is not a name at all is a bad argument.
func TestOperationsVisibility(t *testing.T) {
	t.Parallel()
	c, stranger := shopClient(t), shopClient(t)
	staff := newOpsCaller(t, sys.tokens[devissuer.EnvStaff])
	ctx := ctxT(t)
	name := accepted(t)(c.cmds.CreateOrder(ctx, &omsv1.CreateOrderRequest{Order: testOrder(), RequestId: uuid.NewString()}))
	_, err := stranger.ops.GetOperation(ctx, &longrunningpb.GetOperationRequest{Name: name})
	wantStatus(t, "another principal, before", err, codes.NotFound, "")
	o := applied(t, "create", c.waitDone(t, name), omsv1.Order_CREATED)
	_, err = stranger.ops.GetOperation(ctx, &longrunningpb.GetOperationRequest{Name: name})
	wantStatus(t, "another principal", err, codes.NotFound, "")
	_, err = stranger.ops.WaitOperation(ctx, &longrunningpb.WaitOperationRequest{Name: name})
	wantStatus(t, "another principal's wait", err, codes.NotFound, "")
	if op, err := staff.ops.GetOperation(ctx, &longrunningpb.GetOperationRequest{Name: name}); err != nil {
		t.Errorf("staff: %v", err)
	} else {
		applied(t, "create", op, omsv1.Order_CREATED)
	}

	b, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(name, operation.Prefix))
	b[len(b)-1] ^= 1
	forged := operation.Prefix + base64.RawURLEncoding.EncodeToString(b)
	_, err = c.ops.GetOperation(ctx, &longrunningpb.GetOperationRequest{Name: forged})
	wantStatus(t, "forged", err, codes.NotFound, "")
	_, err = c.ops.GetOperation(ctx, &longrunningpb.GetOperationRequest{Name: "operations/garbage"})
	wantStatus(t, "garbage", err, codes.InvalidArgument, "name")

	// The order's operations, oldest first: its principal's and, for
	// staff, everyone's.
	pay := accepted(t)(c.cmds.PayOrder(ctx, &omsv1.PayOrderRequest{Name: o.Name, RequestId: uuid.NewString(), PaymentReference: "p", AmountMinor: o.TotalMinor}))
	c.waitDone(t, pay)
	ship := accepted(t)(c.cmds.ShipOrder(ctx, &omsv1.ShipOrderRequest{Name: o.Name, RequestId: uuid.NewString(), Carrier: "UPS", TrackingNumber: "1Z"}))
	c.waitDone(t, ship)
	strangers := accepted(t)(stranger.cmds.CancelOrder(ctx, &omsv1.CancelOrderRequest{Name: o.Name, RequestId: uuid.NewString()}))
	refused(t, "another principal's cancel", stranger.waitDone(t, strangers), codes.NotFound, "")
	list := func(who opsCaller) []string {
		t.Helper()
		var names []string
		req := &longrunningpb.ListOperationsRequest{Name: "operations", Filter: `order = "` + o.Name + `"`, PageSize: 2}
		for {
			resp, err := who.ops.ListOperations(ctx, req)
			if err != nil {
				t.Fatalf("list: %v", err)
			}
			for _, op := range resp.Operations {
				names = append(names, op.Name)
			}
			if req.PageToken = resp.NextPageToken; req.PageToken == "" {
				return names
			}
		}
	}
	if got, want := list(c), []string{name, pay, ship}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("the shop lists %v, want %v", got, want)
	}
	if got := list(stranger); len(got) != 1 || got[0] != strangers {
		t.Errorf("the stranger lists %v, want only its own %s", got, strangers)
	}
	if got := list(staff); len(got) != 4 {
		t.Errorf("staff lists %v, want all 4", got)
	}
	_, err = c.ops.ListOperations(ctx, &longrunningpb.ListOperationsRequest{Filter: `state = PAID`})
	wantStatus(t, "filter", err, codes.InvalidArgument, "filter")
	_, err = c.ops.ListOperations(ctx, &longrunningpb.ListOperationsRequest{Filter: `order = "` + o.Name + `"`, PageToken: "forged"})
	wantStatus(t, "page token", err, codes.InvalidArgument, "page_token")
}

func wantStatus(t *testing.T, what string, err error, code codes.Code, field string) {
	t.Helper()
	st := status.Convert(err)
	got := ""
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.FieldViolations) > 0 {
			got = br.FieldViolations[0].Field
		}
	}
	if st.Code() != code || got != field {
		t.Errorf("%s: %v (violation on %q), want %s (on %q)", what, err, got, code, field)
	}
}

// Over HTTP: the 202 names the operation (body and Location), and the
// operation routes answer in protojson with the order or the error, and
// refuse in the shape of every other route.
func TestOperationsOverHTTP(t *testing.T) {
	t.Parallel()
	token := service(t, "shop-"+uuid.NewString()[:8], auth.ScopeCreate, auth.ScopeRead, auth.ScopePay)
	r := do(t, "POST", ingest("/v1/orders?request_id="+uuid.NewString()), orderBody, as(token)...)
	if r.status != http.StatusAccepted {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	name, _ := r.body["operation"].(string)
	// Location is the operation on the query service (INGEST_OPERATIONS_URL):
	// following it is how this test waits.
	loc := r.header.Get("Location")
	if !strings.HasPrefix(name, operation.Prefix) || loc != query("/v1/"+name) {
		t.Fatalf("202 without its operation: %s (Location %q)", r.raw, loc)
	}
	var done httpResult
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); {
		if done = do(t, "GET", loc+":wait?timeout=5s", "", as(token)...); done.status != http.StatusOK || done.body["done"] == true {
			break
		}
	}
	resp, _ := done.body["response"].(map[string]any)
	md, _ := done.body["metadata"].(map[string]any)
	if done.status != http.StatusOK || done.body["name"] != name || done.body["done"] != true ||
		resp["@type"] != "type.googleapis.com/oms.v1.Order" || resp["state"] != "CREATED" ||
		md["@type"] != "type.googleapis.com/oms.v1.CommandMetadata" || md["command"] != "create" || md["orderVersion"] != resp["version"] {
		t.Fatalf("wait: %d %s", done.status, done.raw)
	}
	if got := do(t, "GET", query("/v1/"+name), "", as(token)...); got.status != http.StatusOK || got.body["done"] != true {
		t.Errorf("get: %d %s", got.status, got.raw)
	}

	order := resp["name"].(string)
	r = do(t, "POST", ingest("/v1/"+order+":pay"), `{"paymentReference":"p","amountMinor":"5"}`, append(as(token), "Idempotency-Key", uuid.NewString())...)
	if r.status != http.StatusAccepted {
		t.Fatalf("pay: %d %s", r.status, r.raw)
	}
	payOp := r.body["operation"].(string)
	var refusedPay httpResult
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); {
		if refusedPay = do(t, "GET", query("/v1/"+payOp+":wait"), "", as(token)...); refusedPay.status != http.StatusOK || refusedPay.body["done"] == true {
			break
		}
	}
	e, _ := refusedPay.body["error"].(map[string]any)
	if refusedPay.status != http.StatusOK || e["code"] != float64(codes.FailedPrecondition) || !strings.Contains(e["message"].(string), "does not match order total") {
		t.Errorf("refused pay: %d %s", refusedPay.status, refusedPay.raw)
	}

	l := do(t, "GET", query("/v1/operations?filter="+url.QueryEscape(`order = "`+order+`"`)+"&page_size=1"), "", as(token)...)
	ops, _ := l.body["operations"].([]any)
	if l.status != http.StatusOK || len(ops) != 1 || ops[0].(map[string]any)["name"] != name || l.body["nextPageToken"] == "" {
		t.Fatalf("list: %d %s", l.status, l.raw)
	}
	l = do(t, "GET", query("/v1/operations?filter="+url.QueryEscape(`order = "`+order+`"`)+"&page_token="+l.body["nextPageToken"].(string)), "", as(token)...)
	if ops, _ := l.body["operations"].([]any); l.status != http.StatusOK || len(ops) != 1 || ops[0].(map[string]any)["name"] != payOp {
		t.Errorf("list, page 2: %d %s", l.status, l.raw)
	}

	// Refusals in the gateway's error shape.
	other := service(t, "other-"+uuid.NewString()[:8], auth.ScopeRead)
	for _, tc := range []struct {
		what, path string
		token      string
		status     int
		field      string
	}{
		{"another principal", "/v1/" + name, other, http.StatusNotFound, ""},
		{"garbage", "/v1/operations/garbage", token, http.StatusBadRequest, "name"},
		{"bad timeout", "/v1/" + name + ":wait?timeout=soon", token, http.StatusBadRequest, "timeout"},
		{"bad filter", "/v1/operations?filter=" + url.QueryEscape("customer_id = x"), token, http.StatusBadRequest, "filter"},
		{"no token", "/v1/" + name, "", http.StatusUnauthorized, ""},
	} {
		hdr := as(tc.token)
		if tc.token == "" {
			hdr = []string{"Authorization", ""}
		}
		got := do(t, "GET", query(tc.path), "", hdr...)
		field := ""
		if ds, _ := got.body["details"].([]any); len(ds) > 0 {
			if vs, _ := ds[0].(map[string]any)["fieldViolations"].([]any); len(vs) > 0 {
				field, _ = vs[0].(map[string]any)["field"].(string)
			}
		}
		if got.status != tc.status || field != tc.field || got.body["code"] == nil || got.body["message"] == nil {
			t.Errorf("%s: %d %s, want %d with a violation on %q", tc.what, got.status, got.raw, tc.status, tc.field)
		}
	}
}
