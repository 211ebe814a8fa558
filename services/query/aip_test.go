package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/orderstore"
)

// aipOrder is a row the AIP tests insert: enough to filter on.
type aipOrder struct {
	id, customer, state string
	created             time.Time
}

// aipFixture inserts 24 orders: customers c-0..c-3, states cycling over
// CREATED, PAID, SHIPPED, one minute apart from base.
func aipFixture(t *testing.T) (*queryService, []aipOrder, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := dbtest.New(t)
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var orders []aipOrder
	for i := range 24 {
		o := aipOrder{
			id:       fmt.Sprintf("00000000-0000-4000-8000-%012d", i+1),
			customer: fmt.Sprintf("c-%d", i%4),
			state:    []string{"CREATED", "PAID", "SHIPPED"}[i%3],
			created:  base.Add(time.Duration(i) * time.Minute),
		}
		if _, err := db.ExecContext(ctx, `
INSERT INTO orders (id, customer_id, state, currency_code, version, create_time, update_time)
VALUES (?, ?, ?, 'USD', 1, ?, ?)`, o.id, o.customer, o.state, o.created, o.created); err != nil {
			t.Fatal(err)
		}
		orders = append(orders, o)
	}
	return &queryService{store: orderstore.New(db), maxPageBytes: 1 << 20}, orders, base
}

func staffCtx(t *testing.T, subject string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return auth.WithPrincipal(ctx, auth.Principal{Kind: auth.Service, Subject: subject, Scopes: []string{auth.ScopeRead, auth.ScopeStaff}})
}

// listAll pages through req's list, pageSize at a time, and returns the
// ids in the order served.
func listAll(t *testing.T, ctx context.Context, svc *queryService, req *omsv1.ListOrdersRequest) []string {
	t.Helper()
	var ids []string
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatal("paging does not end")
		}
		resp, err := svc.ListOrders(ctx, req)
		if err != nil {
			t.Fatalf("ListOrders(%v): %v", req, err)
		}
		for _, o := range resp.Orders {
			ids = append(ids, o.Id)
		}
		if resp.NextPageToken == "" {
			return ids
		}
		req.PageToken = resp.NextPageToken
	}
}

// OR, NOT and parentheses return exactly the orders the same condition
// picks in Go, newest first, and paging a filtered list in pages of 2
// returns each of them exactly once.
func TestListOrdersFilterWithOrNotAndParentheses(t *testing.T) {
	t.Parallel()
	svc, orders, base := aipFixture(t)
	ctx := staffCtx(t, "staff")
	cut := base.Add(12 * time.Minute)
	for _, tc := range []struct {
		filter string
		match  func(o aipOrder) bool
	}{
		{`state = PAID OR state = SHIPPED`, func(o aipOrder) bool { return o.state == "PAID" || o.state == "SHIPPED" }},
		{`NOT state = PAID`, func(o aipOrder) bool { return o.state != "PAID" }},
		{`-customer_id = "c-1"`, func(o aipOrder) bool { return o.customer != "c-1" }},
		{`(state = PAID OR customer_id = "c-2") AND create_time >= "2026-03-01T12:12:00Z"`,
			func(o aipOrder) bool { return (o.state == "PAID" || o.customer == "c-2") && !o.created.Before(cut) }},
		{`state = PAID OR customer_id = "c-2" AND create_time >= "2026-03-01T12:12:00Z"`, // OR binds tighter
			func(o aipOrder) bool { return (o.state == "PAID" || o.customer == "c-2") && !o.created.Before(cut) }},
		{`NOT (state = CREATED OR customer_id = c-0) AND create_time < 2026-03-01T12:12:00Z`,
			func(o aipOrder) bool { return !(o.state == "CREATED" || o.customer == "c-0") && o.created.Before(cut) }},
		{`customer_id = "c-3" OR (state = SHIPPED AND NOT customer_id = "c-0")`,
			func(o aipOrder) bool { return o.customer == "c-3" || (o.state == "SHIPPED" && o.customer != "c-0") }},
		{`state = PAID AND state = CREATED`, func(aipOrder) bool { return false }},
	} {
		var want []string
		for _, o := range slices.Backward(orders) {
			if tc.match(o) {
				want = append(want, o.id)
			}
		}
		if len(want) == 0 && !strings.Contains(tc.filter, "AND state") {
			t.Fatalf("%s: the fixture matches nothing", tc.filter)
		}
		got := listAll(t, ctx, svc, &omsv1.ListOrdersRequest{Filter: tc.filter, PageSize: 100})
		if !slices.Equal(got, want) {
			t.Errorf("%s:\n got %v\nwant %v", tc.filter, got, want)
		}
		paged := listAll(t, ctx, svc, &omsv1.ListOrdersRequest{Filter: tc.filter, PageSize: 2})
		if !slices.Equal(paged, want) {
			t.Errorf("%s in pages of 2:\n got %v\nwant %v", tc.filter, paged, want)
		}
		slices.Reverse(want)
		asc := listAll(t, ctx, svc, &omsv1.ListOrdersRequest{Filter: tc.filter, OrderBy: "create_time asc", PageSize: 3})
		if !slices.Equal(asc, want) {
			t.Errorf("%s, oldest first in pages of 3:\n got %v\nwant %v", tc.filter, asc, want)
		}
	}
}

// Bad filters, orderings, masks and page tokens are INVALID_ARGUMENT with
// a field violation on the request field and a message naming the
// problem.
func TestListOrdersRefusesWithFieldViolations(t *testing.T) {
	t.Parallel()
	svc, _, _ := aipFixture(t)
	ctx := staffCtx(t, "staff")
	first, err := svc.ListOrders(ctx, &omsv1.ListOrdersRequest{Filter: "state = PAID", PageSize: 2})
	if err != nil || first.NextPageToken == "" {
		t.Fatalf("first page: %v %v", first, err)
	}
	tok := first.NextPageToken
	forged := newPageTokens([]byte(strings.Repeat("f", 32))).seal(tokenListOrders,
		&omsv1.ListOrdersRequest{Filter: "state = PAID"}, "service:staff", listPosition{CreateTime: time.Now(), ID: "00000000-0000-4000-8000-000000000001"}.encode())
	for _, tc := range []struct {
		name        string
		ctx         context.Context
		req         *omsv1.ListOrdersRequest
		field, want string
	}{
		{"unknown field", ctx, &omsv1.ListOrdersRequest{Filter: "total_minor > 5"}, "filter", `cannot filter on "total_minor"`},
		{"unknown function", ctx, &omsv1.ListOrdersRequest{Filter: `state = PAID AND foo("x")`}, "filter", `unknown function "foo"`},
		{"wrong type", ctx, &omsv1.ListOrdersRequest{Filter: "state = 5"}, "filter", "state takes a state name"},
		{"syntax", ctx, &omsv1.ListOrdersRequest{Filter: "(state = PAID"}, "filter", "cannot parse at column 14"},
		{"order_by an unknown field", ctx, &omsv1.ListOrdersRequest{OrderBy: "total_minor desc"}, "order_by", "invalid field path: total_minor"},
		{"order_by two fields", ctx, &omsv1.ListOrdersRequest{OrderBy: "create_time, create_time desc"}, "order_by", `"create_time asc"`},
		{"order_by nonsense", ctx, &omsv1.ListOrdersRequest{OrderBy: "create_time sideways"}, "order_by", `"create_time desc"`},
		{"read_mask unknown path", ctx, &omsv1.ListOrdersRequest{ReadMask: &fieldmaskpb.FieldMask{Paths: []string{"password"}}}, "read_mask", "invalid field path: password"},
		{"read_mask into a repeated field", ctx, &omsv1.ListOrdersRequest{ReadMask: &fieldmaskpb.FieldMask{Paths: []string{"line_items.sku"}}}, "read_mask", "line_items is repeated"},
		{"forged token", ctx, &omsv1.ListOrdersRequest{Filter: "state = PAID", PageToken: forged}, "page_token", "is not a token this service issued"},
		{"altered token", ctx, &omsv1.ListOrdersRequest{Filter: "state = PAID", PageToken: alterToken(t, tok)}, "page_token", "is not a token this service issued"},
		{"token replayed with another filter", ctx, &omsv1.ListOrdersRequest{Filter: "state = SHIPPED", PageToken: tok}, "page_token", "belongs to a different query"},
		{"token replayed with another order_by", ctx, &omsv1.ListOrdersRequest{Filter: "state = PAID", OrderBy: "create_time asc", PageToken: tok}, "page_token", "belongs to a different query"},
		{"token replayed with another read_mask", ctx, &omsv1.ListOrdersRequest{Filter: "state = PAID", ReadMask: &fieldmaskpb.FieldMask{Paths: []string{"id"}}, PageToken: tok}, "page_token", "belongs to a different query"},
		{"token replayed by another caller", staffCtx(t, "other-staff"), &omsv1.ListOrdersRequest{Filter: "state = PAID", PageToken: tok}, "page_token", "is not a token this service issued"},
	} {
		_, err := svc.ListOrders(tc.ctx, tc.req)
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || violatedField(st) != tc.field || !strings.Contains(st.Message(), tc.want) {
			t.Errorf("%s: %v (violation on %q), want INVALID_ARGUMENT on %q with %q", tc.name, err, violatedField(st), tc.field, tc.want)
		}
	}
	// The same token with the same query, any page size, is served.
	if _, err := svc.ListOrders(ctx, &omsv1.ListOrdersRequest{Filter: "state = PAID", PageSize: 7, PageToken: tok}); err != nil {
		t.Errorf("the issued token: %v", err)
	}
}

// ListOrderEvents' tokens are signed and bound to the order as well.
func TestListOrderEventsTokens(t *testing.T) {
	t.Parallel()
	svc, orders, _ := aipFixture(t)
	ctx := staffCtx(t, "staff")
	db := svc.store.DB()
	for _, o := range orders[:2] {
		for seq := 1; seq <= 5; seq++ {
			if _, err := db.ExecContext(ctx, `
INSERT INTO order_events (order_id, seq, type, from_state, to_state, command_id, command, order_version, occur_time)
VALUES (?, ?, 'created', 'CREATED', 'CREATED', ?, 'create', 1, now())`, o.id, seq, fmt.Sprint("cmd-", seq)); err != nil {
				t.Fatal(err)
			}
		}
	}
	parent := "orders/" + orders[0].id
	var seqs []int64
	req := &omsv1.ListOrderEventsRequest{Parent: parent, PageSize: 2}
	var tok string
	for pages := 0; pages < 10; pages++ {
		resp, err := svc.ListOrderEvents(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.Events {
			seqs = append(seqs, e.Sequence)
		}
		if tok == "" {
			tok = resp.NextPageToken
		}
		if req.PageToken = resp.NextPageToken; req.PageToken == "" {
			break
		}
	}
	if !slices.Equal(seqs, []int64{1, 2, 3, 4, 5}) {
		t.Errorf("events in pages of 2: %v", seqs)
	}
	for _, tc := range []struct {
		name string
		req  *omsv1.ListOrderEventsRequest
		want string
	}{
		{"altered", &omsv1.ListOrderEventsRequest{Parent: parent, PageToken: alterToken(t, tok)}, "is not a token this service issued"},
		{"another order's", &omsv1.ListOrderEventsRequest{Parent: "orders/" + orders[1].id, PageToken: tok}, "belongs to a different query"},
	} {
		_, err := svc.ListOrderEvents(ctx, tc.req)
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || violatedField(st) != "page_token" || !strings.Contains(st.Message(), tc.want) {
			t.Errorf("%s: %v, want INVALID_ARGUMENT on page_token with %q", tc.name, err, tc.want)
		}
	}
	// A list token is not an events token.
	first, err := svc.ListOrders(ctx, &omsv1.ListOrdersRequest{PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.ListOrderEvents(ctx, &omsv1.ListOrderEventsRequest{Parent: parent, PageToken: first.NextPageToken}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a ListOrders token on ListOrderEvents: %v", err)
	}
}

// QUERY_PAGE_TOKEN_SECRET is optional, and at least 32 characters when set.
func TestLoadConfigPageTokenSecret(t *testing.T) {
	t.Parallel()
	c, err := LoadConfig(with(map[string]string{"QUERY_PAGE_TOKEN_SECRET": strings.Repeat("t", 32)}))
	if err != nil || string(c.PageTokenSecret) != strings.Repeat("t", 32) {
		t.Errorf("configured secret: %q %v", c.PageTokenSecret, err)
	}
	if c, err := LoadConfig(with(nil)); err != nil || len(c.PageTokenSecret) != 0 {
		t.Errorf("unset: %q %v", c.PageTokenSecret, err)
	}
	_, err = LoadConfig(with(map[string]string{"QUERY_PAGE_TOKEN_SECRET": "short-secret-hunter2"}))
	if err == nil || !strings.Contains(err.Error(), "QUERY_PAGE_TOKEN_SECRET: must be at least 32 characters") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("short secret: %v", err)
	}
}

// BenchmarkListOrdersRequestWork is what ListOrders does per call besides
// the read: the filter, ordering and mask of a repeated request, and a
// next page token sealed and opened.
func BenchmarkListOrdersRequestWork(b *testing.B) {
	tokens := newPageTokens(randomTokenKey())
	req := &omsv1.ListOrdersRequest{Filter: `state = PAID AND customer_id = "c-1"`, OrderBy: "create_time asc", PageSize: 50}
	pos := listPosition{CreateTime: time.Now(), ID: "00000000-0000-4000-8000-000000000001"}.encode()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseFilter(req.Filter); err != nil {
			b.Fatal(err)
		}
		if _, err := parseOrderBy(req); err != nil {
			b.Fatal(err)
		}
		if _, err := parseMask(req.ReadMask); err != nil {
			b.Fatal(err)
		}
		next := &omsv1.ListOrdersRequest{Filter: req.Filter, OrderBy: req.OrderBy, PageToken: tokens.seal(tokenListOrders, req, "service:a", pos)}
		if _, err := tokens.open(tokenListOrders, next, "service:a"); err != nil {
			b.Fatal(err)
		}
	}
}
