package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"cloud.google.com/go/longrunning/autogen/longrunningpb"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"
)

func TestParseLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		want    *omsv1.LineItem
		wantErr string
	}{
		{"SKU-1:Mug:2:1200", &omsv1.LineItem{Sku: "SKU-1", Name: "Mug", Quantity: 2, UnitPriceMinor: 1200}, ""},
		{"SKU-2:Tea: green:1:350", &omsv1.LineItem{Sku: "SKU-2", Name: "Tea: green", Quantity: 1, UnitPriceMinor: 350}, ""},
		// Out of range, but well formed: the service's rule and message.
		{"S:N:0:-5", &omsv1.LineItem{Sku: "S", Name: "N", Quantity: 0, UnitPriceMinor: -5}, ""},
		{"SKU-1:Mug:2", nil, "want SKU:name:quantity:unit_price_minor"},
		{"SKU-1:Mug:two:1200", nil, `quantity "two"`},
		{"SKU-1:Mug:2:12.00", nil, `unit price "12.00"`},
		{"SKU-1:Mug:99999999999:1", nil, "quantity"},
	} {
		got, err := parseLine(tc.in)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("parseLine(%q) = %v, %v; want error with %q", tc.in, got, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || !proto.Equal(got, tc.want)):
			t.Errorf("parseLine(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestResourceNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"0b6f", "orders/0b6f"},
		{"orders/0b6f", "orders/0b6f"},
		{"", ""},
		{"orders/", ""},
		{"customers/x", ""},
		{"orders/a/events", ""},
	} {
		got, err := orderName(tc.in)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("orderName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		var ue usageError
		if err != nil && !errors.As(err, &ue) {
			t.Errorf("orderName(%q): %v is not a usage error", tc.in, err)
		}
	}
	if got, err := operationName("abc"); got != "operations/abc" || err != nil {
		t.Errorf("operationName(abc) = %q, %v", got, err)
	}
}

func TestDescribe(t *testing.T) {
	t.Parallel()
	invalid, _ := status.New(codes.InvalidArgument, "order.line_items[0].quantity: must be between 1 and 10000, got 0").WithDetails(
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "order.line_items[0].quantity", Description: "must be between 1 and 10000, got 0"},
			{Field: "order.currency_code", Description: `must be an ISO 4217 currency code, got "XX"`},
		}},
		&errdetails.ErrorInfo{Reason: "INVALID_COMMAND", Domain: "oms"})
	for _, tc := range []struct {
		err  error
		want string
	}{
		{invalid.Err(), `INVALID_ARGUMENT: order.line_items[0].quantity: must be between 1 and 10000, got 0; order.currency_code: must be an ISO 4217 currency code, got "XX"`},
		{status.Error(codes.InvalidArgument, "filter: unknown field"), "INVALID_ARGUMENT: filter: unknown field"},
		{status.Error(codes.FailedPrecondition, "payment amount 100 does not match the order total 2400"),
			"FAILED_PRECONDITION: payment amount 100 does not match the order total 2400"},
		{status.Error(codes.NotFound, "orders/x not found"), "NOT_FOUND: orders/x not found"},
		{errors.New("plain"), "plain"},
	} {
		if got := describe(tc.err); got != tc.want {
			t.Errorf("describe(%v) =\n %s\nwant\n %s", tc.err, got, tc.want)
		}
	}
}

// Mistakes in the invocation exit 2, with one line naming the mistake and
// no usage dump, before anything is dialled.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "order.json")
	os.WriteFile(file, []byte(`{"currencyCode":"USD"}`), 0o600)
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"pay", "orders/x"}, nil, `required flag(s) "amount", "reference" not set`},
		{[]string{"pay"}, nil, "pay needs one order"},
		{[]string{"get", "a/b"}, nil, `"a/b": want orders/{id}`},
		{[]string{"frobnicate"}, nil, `unknown command "frobnicate"`},
		{[]string{"list", "--bogus"}, nil, "unknown flag: --bogus"},
		{[]string{"list", "--page-size", "many"}, nil, `invalid argument "many"`},
		{[]string{"list", "-o", "yaml"}, nil, `--output "yaml"`},
		{[]string{"list"}, map[string]string{"OMS_OUTPUT": "xml"}, `--output "xml"`},
		{[]string{"list", "--token", "t", "--token-file", file}, nil, "--token and --token-file"},
		{[]string{"list"}, map[string]string{"OMS_TOKEN": "t", "OMS_TOKEN_FILE": file}, "--token and --token-file"},
		{[]string{"list", "--plaintext", "--tls"}, nil, "--plaintext contradicts"},
		{[]string{"list"}, map[string]string{"OMS_TLS": "maybe"}, `OMS_TLS="maybe"`},
		{[]string{"list", "--timeout", "0s"}, nil, "--timeout 0s"},
		{[]string{"list", "--token-file", filepath.Join(t.TempDir(), "none")}, nil, "--token-file"},
		{[]string{"create"}, nil, "create needs --line"},
		{[]string{"create", "--line", "S:N:1"}, nil, "--line #1"},
		{[]string{"create", "--file", file, "--currency", "EUR"}, nil, "--file and --currency"},
		{[]string{"create", "--file", "-"}, nil, "not an order in the API's JSON shape"},
		{[]string{"operation", "list"}, nil, `required flag(s) "order" not set`},
		{[]string{"list", "--query", "no-port"}, nil, `address "no-port"`},
	} {
		var stdout, stderr bytes.Buffer
		env := func(k string) string { return tc.env[k] }
		code := newApp(strings.NewReader("{not json"), &stdout, &stderr, env).execute(context.Background(), tc.args)
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if code != exitUsage || len(lines) != 1 || !strings.HasPrefix(lines[0], "omsctl: ") || !strings.Contains(lines[0], tc.want) {
			t.Errorf("omsctl %q: exit %d, stderr %q; want 2 and one line with %q", tc.args, code, stderr.String(), tc.want)
		}
		if stdout.Len() != 0 {
			t.Errorf("omsctl %q printed %q", tc.args, stdout.String())
		}
	}
}

// Flags win over the environment, which wins over the defaults.
func TestSettings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args              []string
		env               map[string]string
		ingest, query, tk string
		tlsFor            map[string]bool // address -> TLS expected
	}{
		{nil, nil, defaultIngestAddr, defaultQueryAddr, "", map[string]bool{
			"127.0.0.1:9090": false, "localhost:9090": false, "[::1]:9090": false, "oms.example.com:443": true, "10.0.0.1:9090": true}},
		{nil, map[string]string{"OMS_INGEST_ADDR": "ingest:9090", "OMS_QUERY_ADDR": "query:9091", "OMS_TOKEN": "env-token"},
			"ingest:9090", "query:9091", "env-token", nil},
		{[]string{"--ingest", "i:1", "--token", "flag-token"}, map[string]string{"OMS_INGEST_ADDR": "ingest:9090", "OMS_TOKEN": "env-token"},
			"i:1", defaultQueryAddr, "flag-token", nil},
		{[]string{"--plaintext"}, nil, defaultIngestAddr, defaultQueryAddr, "", map[string]bool{"oms.internal:9090": false}},
		{nil, map[string]string{"OMS_PLAINTEXT": "true"}, defaultIngestAddr, defaultQueryAddr, "", map[string]bool{"oms.internal:9090": false}},
		{[]string{"--tls"}, nil, defaultIngestAddr, defaultQueryAddr, "", map[string]bool{"127.0.0.1:9090": true}},
		{nil, map[string]string{"OMS_CA_FILE": "/ca.pem"}, defaultIngestAddr, defaultQueryAddr, "", map[string]bool{"127.0.0.1:9090": true}},
	} {
		a := newApp(nil, &bytes.Buffer{}, &bytes.Buffer{}, func(k string) string { return tc.env[k] })
		root := a.root()
		if err := root.ParseFlags(tc.args); err != nil {
			t.Fatal(err)
		}
		if err := a.resolve(root); err != nil {
			t.Fatalf("%q %v: %v", tc.args, tc.env, err)
		}
		tok, _ := a.token()
		if a.flags.ingest != tc.ingest || a.flags.query != tc.query || tok != tc.tk {
			t.Errorf("%q %v: ingest %q query %q token %q", tc.args, tc.env, a.flags.ingest, a.flags.query, tok)
		}
		for addr, want := range tc.tlsFor {
			if got := a.useTLS(addr); got != want {
				t.Errorf("%q %v: TLS for %s = %v, want %v", tc.args, tc.env, addr, got, want)
			}
		}
	}
}

func TestTokenFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte("  tok-from-file\n"), 0o600)
	a := newApp(nil, &bytes.Buffer{}, &bytes.Buffer{}, func(k string) string { return map[string]string{"OMS_TOKEN_FILE": file}[k] })
	root := a.root()
	if err := a.resolve(root); err != nil {
		t.Fatal(err)
	}
	if tok, err := a.token(); tok != "tok-from-file" || err != nil {
		t.Errorf("token = %q, %v", tok, err)
	}
}

func TestOrderTable(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	printOrders(&b, []*omsv1.Order{
		{Name: "orders/a", State: omsv1.Order_PAID, CustomerId: "c-1", TotalMinor: 2400, CurrencyCode: "USD", Version: 2},
		{Name: "orders/b", State: omsv1.Order_CREATED}, // read with --fields name,state
	})
	want := "NAME       STATE     CUSTOMER   TOTAL      VERSION   UPDATED\n" +
		"orders/a   PAID      c-1        2400 USD   2         -\n" +
		"orders/b   CREATED   -          -          -         -\n"
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}

// The fakes below stand in for ingest and query on a real gRPC server, so
// the tests see what omsctl puts on the wire and how it reads the answers;
// e2e/omsctl_test.go drives the real services.

type fakeIngest struct {
	omsv1.UnimplementedOrderCommandServiceServer
	mu       sync.Mutex
	requests []proto.Message
	auth     []string
}

func (f *fakeIngest) record(ctx context.Context, req proto.Message) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, req)
	f.auth = append(f.auth, strings.Join(md.Get("authorization"), ","))
}

func (f *fakeIngest) CreateOrder(ctx context.Context, req *omsv1.CreateOrderRequest) (*omsv1.CommandAcceptance, error) {
	f.record(ctx, req)
	for i, l := range req.GetOrder().GetLineItems() {
		if l.Quantity < 1 {
			st, _ := status.New(codes.InvalidArgument, "invalid").WithDetails(&errdetails.BadRequest{
				FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "order.line_items[" + string(rune('0'+i)) + "].quantity", Description: "must be between 1 and 10000"}}})
			return nil, st.Err()
		}
	}
	return &omsv1.CommandAcceptance{Name: "orders/new", CommandId: req.RequestId, Operation: "operations/create-1"}, nil
}

func (f *fakeIngest) PayOrder(ctx context.Context, req *omsv1.PayOrderRequest) (*omsv1.CommandAcceptance, error) {
	f.record(ctx, req)
	op := "operations/pay-ok"
	if req.AmountMinor != 2400 {
		op = "operations/pay-wrong"
	}
	return &omsv1.CommandAcceptance{Name: req.Name, CommandId: req.RequestId, Operation: op}, nil
}

// fakeOps answers a wait twice with a pending operation before it is done,
// as a service whose waits are shorter than the client's timeout does.
type fakeOps struct {
	longrunningpb.UnimplementedOperationsServer
	mu    sync.Mutex
	waits map[string]int
}

func (f *fakeOps) WaitOperation(_ context.Context, req *longrunningpb.WaitOperationRequest) (*longrunningpb.Operation, error) {
	f.mu.Lock()
	f.waits[req.Name]++
	n := f.waits[req.Name]
	f.mu.Unlock()
	md, _ := anypb.New(&omsv1.CommandMetadata{Order: "orders/o1", Command: "pay", Attempts: int32(n)})
	op := &longrunningpb.Operation{Name: req.Name, Metadata: md}
	if n < 3 {
		return op, nil
	}
	op.Done = true
	switch req.Name {
	case "operations/pay-ok", "operations/create-1":
		resp, _ := anypb.New(&omsv1.Order{Name: "orders/o1", State: omsv1.Order_PAID, Version: 2, TotalMinor: 2400, CurrencyCode: "USD"})
		op.Result = &longrunningpb.Operation_Response{Response: resp}
	default:
		op.Result = &longrunningpb.Operation_Error{Error: status.New(codes.FailedPrecondition,
			"payment amount 100 does not match the order total 2400").Proto()}
	}
	return op, nil
}

type fakeQuery struct {
	omsv1.UnimplementedOrderQueryServiceServer
}

func (fakeQuery) ListOrders(_ context.Context, req *omsv1.ListOrdersRequest) (*omsv1.ListOrdersResponse, error) {
	if req.Filter != "state = PAID" {
		return nil, status.Error(codes.InvalidArgument, "unexpected filter "+req.Filter)
	}
	switch req.PageToken {
	case "":
		return &omsv1.ListOrdersResponse{Orders: []*omsv1.Order{{Name: "orders/1"}, {Name: "orders/2"}}, NextPageToken: "p2"}, nil
	case "p2":
		return &omsv1.ListOrdersResponse{Orders: []*omsv1.Order{{Name: "orders/3"}}}, nil
	}
	return nil, status.Error(codes.InvalidArgument, "page_token: bad")
}

// ListOrderEvents and ListOperations answer in two pages, so that a
// client that reads only the first misses the last event (operation).
func (fakeQuery) ListOrderEvents(_ context.Context, req *omsv1.ListOrderEventsRequest) (*omsv1.ListOrderEventsResponse, error) {
	switch req.PageToken {
	case "":
		return &omsv1.ListOrderEventsResponse{Events: []*omsv1.OrderEvent{{Sequence: 1}, {Sequence: 2}}, NextPageToken: "e2"}, nil
	case "e2":
		return &omsv1.ListOrderEventsResponse{Events: []*omsv1.OrderEvent{{Sequence: 3}}}, nil
	}
	return nil, status.Error(codes.InvalidArgument, "page_token: bad")
}

func (f *fakeOps) ListOperations(_ context.Context, req *longrunningpb.ListOperationsRequest) (*longrunningpb.ListOperationsResponse, error) {
	switch req.PageToken {
	case "":
		return &longrunningpb.ListOperationsResponse{Operations: []*longrunningpb.Operation{{Name: "operations/a"}}, NextPageToken: "o2"}, nil
	case "o2":
		return &longrunningpb.ListOperationsResponse{Operations: []*longrunningpb.Operation{{Name: "operations/b"}}}, nil
	}
	return nil, status.Error(codes.InvalidArgument, "page_token: bad")
}

type fakes struct {
	addr   string
	ingest *fakeIngest
	ops    *fakeOps
}

func startFakes(t *testing.T) *fakes {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakes{addr: ln.Addr().String(), ingest: &fakeIngest{}, ops: &fakeOps{waits: map[string]int{}}}
	s := grpc.NewServer()
	omsv1.RegisterOrderCommandServiceServer(s, f.ingest)
	omsv1.RegisterOrderQueryServiceServer(s, fakeQuery{})
	longrunningpb.RegisterOperationsServer(s, f.ops)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return f
}

func (f *fakes) run(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := map[string]string{"OMS_INGEST_ADDR": f.addr, "OMS_QUERY_ADDR": f.addr, "OMS_TOKEN": "tok-1"}
	a := newApp(strings.NewReader(stdin), &out, &errb, func(k string) string { return env[k] })
	a.newID = func() string { return "11111111-2222-4333-8444-555555555555" }
	code = a.execute(context.Background(), args)
	return code, out.String(), errb.String()
}

func TestCommandsOnTheWire(t *testing.T) {
	t.Parallel()
	f := startFakes(t)

	// A new request id is made, sent and printed; the token goes along.
	code, out, errs := f.run(t, "", "pay", "o1", "--amount", "2400", "--reference", "ch_1")
	if code != 0 || errs != "" || !strings.Contains(out, "11111111-2222-4333-8444-555555555555") || !strings.Contains(out, "operations/pay-ok") {
		t.Fatalf("pay: exit %d\n%s%s", code, out, errs)
	}
	pay := f.ingest.requests[0].(*omsv1.PayOrderRequest)
	if pay.Name != "orders/o1" || pay.RequestId != "11111111-2222-4333-8444-555555555555" || pay.AmountMinor != 2400 || pay.PaymentReference != "ch_1" {
		t.Errorf("pay sent %v", pay)
	}
	if f.ingest.auth[0] != "Bearer tok-1" {
		t.Errorf("authorization %q", f.ingest.auth[0])
	}

	// --wait follows the operation through pending answers to its end.
	code, out, errs = f.run(t, "", "pay", "orders/o1", "--amount", "2400", "--reference", "ch_1", "--request-id", "r-2", "--wait", "-o", "json")
	if code != 0 || errs != "" {
		t.Fatalf("pay --wait: exit %d\n%s%s", code, out, errs)
	}
	var got struct {
		RequestID  string `json:"requestId"`
		Acceptance struct{ Operation string }
		Operation  struct {
			Done     bool
			Response struct{ State string }
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("pay --wait -o json: %v\n%s", err, out)
	}
	if got.RequestID != "r-2" || !got.Operation.Done || got.Operation.Response.State != "PAID" || got.Acceptance.Operation != "operations/pay-ok" {
		t.Errorf("pay --wait -o json: %+v", got)
	}
	if f.ops.waits["operations/pay-ok"] != 3 {
		t.Errorf("waited %d times, want 3", f.ops.waits["operations/pay-ok"])
	}

	// A command whose operation failed exits 1 with the reason on one
	// line, after printing the acceptance (its request id, to retry).
	code, out, errs = f.run(t, "", "pay", "o1", "--amount", "100", "--reference", "ch_1", "--wait")
	want := "omsctl: pay orders/o1: FAILED_PRECONDITION: payment amount 100 does not match the order total 2400\n"
	if code != 1 || errs != want || !strings.Contains(out, "operations/pay-wrong") {
		t.Errorf("pay --wait, wrong amount: exit %d, stderr %q, stdout %q", code, errs, out)
	}

	// create from stdin, in the API's JSON shape; an invalid order's field
	// violations are the message.
	code, out, errs = f.run(t, `{"customerId":"c-1","currencyCode":"USD","lineItems":[{"sku":"S","name":"N","quantity":2,"unitPriceMinor":"1200"}]}`,
		"create", "--file", "-", "--wait")
	if code != 0 || !strings.Contains(out, "orders/new") || !strings.Contains(out, "PAID") {
		t.Errorf("create --file -: exit %d\n%s%s", code, out, errs)
	}
	if o := f.ingest.requests[len(f.ingest.requests)-1].(*omsv1.CreateOrderRequest).Order; o.CustomerId != "c-1" || o.LineItems[0].UnitPriceMinor != 1200 {
		t.Errorf("create sent %v", o)
	}
	code, _, errs = f.run(t, "", "create", "--currency", "USD", "--line", "S:N:0:100", "--recipient", "Ann", "--address-line", "1 Main St", "--region-code", "US")
	if code != 1 || errs != "omsctl: create: INVALID_ARGUMENT: order.line_items[0].quantity: must be between 1 and 10000\n" {
		t.Errorf("create, bad quantity: exit %d, stderr %q", code, errs)
	}
	if a := f.ingest.requests[len(f.ingest.requests)-1].(*omsv1.CreateOrderRequest).Order.ShippingAddress; a.GetRecipient() != "Ann" || a.GetAddressLines()[0] != "1 Main St" || a.GetRegionCode() != "US" {
		t.Errorf("create sent shipping address %v", a)
	}
}

func TestListAllFollowsPages(t *testing.T) {
	t.Parallel()
	f := startFakes(t)
	code, out, errs := f.run(t, "", "list", "--filter", "state = PAID", "--all", "-o", "json")
	if code != 0 {
		t.Fatalf("list --all: exit %d %s", code, errs)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var o struct{ Name string }
		if err := json.Unmarshal([]byte(line), &o); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		names = append(names, o.Name)
	}
	if strings.Join(names, ",") != "orders/1,orders/2,orders/3" {
		t.Errorf("list --all: %v", names)
	}
	// One page, and where the next one starts.
	code, out, errs = f.run(t, "", "list", "--filter", "state = PAID")
	if code != 0 || strings.Contains(out, "orders/3") || errs != "more: --page-token p2 (or --all)\n" {
		t.Errorf("list: exit %d\n%s%s", code, out, errs)
	}
	// A refused read exits 1 with the code.
	code, _, errs = f.run(t, "", "list", "--filter", "nope = 1")
	if code != 1 || errs != "omsctl: list: INVALID_ARGUMENT: unexpected filter nope = 1\n" {
		t.Errorf("list, bad filter: exit %d, %q", code, errs)
	}
}

func TestEventsAndOperationListFollowPages(t *testing.T) {
	t.Parallel()
	f := startFakes(t)
	code, out, errs := f.run(t, "", "events", "orders/o1", "-o", "json")
	var evs struct{ Events []struct{ Sequence string } }
	if err := json.Unmarshal([]byte(out), &evs); code != 0 || err != nil {
		t.Fatalf("events: exit %d, %v\n%s%s", code, err, out, errs)
	}
	if got := fmt.Sprint(evs.Events); got != "[{1} {2} {3}]" {
		t.Errorf("events: %s, want all three pages' events", got)
	}
	code, out, errs = f.run(t, "", "operation", "list", "--order", "o1", "-o", "json")
	var ops struct{ Operations []struct{ Name string } }
	if err := json.Unmarshal([]byte(out), &ops); code != 0 || err != nil {
		t.Fatalf("operation list: exit %d, %v\n%s%s", code, err, out, errs)
	}
	if got := fmt.Sprint(ops.Operations); got != "[{operations/a} {operations/b}]" {
		t.Errorf("operation list: %s, want both pages' operations", got)
	}
}
