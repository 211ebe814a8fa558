package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/orderstore"
)

// Values the database cannot take, or that would widen the query, are the
// caller's mistake: each is refused by the parser with a reason.
func TestFilterRefusesValuesTheStoreCannotTake(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ filter, want string }{
		{`create_time >= "0000-01-01T00:00:00Z"`, "outside 0001-01-01T00:00:00Z to 9999-12-31"},
		{`create_time < 0000-12-31T23:59:59Z`, "outside"},
		{`create_time > "0001-01-01T00:30:00+01:00"`, "outside"},  // 0000-12-31 in UTC
		{`create_time <= "9999-12-31T23:59:59-01:00"`, "outside"}, // year 10000 in UTC
		{`customer_id = ""`, "customer_id must not be empty"},
		{`customer_id = "a\u0000b"`, "customer_id must not contain control characters"},
		{"customer_id = a\x00b", "customer_id must not contain control characters"},
		{"customer_id = a\xffb", "must be valid UTF-8"}, // the filter as a whole
		{`state = PAID AND customer_id = ""`, "customer_id must not be empty"},
	} {
		_, err := parseFilter(tc.filter)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseFilter(%q) = %v, want an error with %q", tc.filter, err, tc.want)
		}
	}
	for _, ok := range []string{
		`create_time >= "0001-01-01T00:00:00Z"`,
		`create_time <= "9999-12-31T23:59:59.999999999Z"`,
		`customer_id = "c\u00e9-1"`,
		// AIP-160 strings escape as CEL's do: \xff is U+00FF, not a byte,
		// so no escape can make the invalid UTF-8 that Go's quoting could.
		`customer_id = "a\xffb"`,
	} {
		if _, err := parseFilter(ok); err != nil {
			t.Errorf("parseFilter(%q): %v", ok, err)
		}
	}
}

// Over the real database: what used to reach PostgreSQL and come back as
// a 500 is INVALID_ARGUMENT naming the request field; the edges of the
// valid range are served.
func TestListOrdersBadInputIsInvalidArgument(t *testing.T) {
	t.Parallel()
	svc := &queryService{store: orderstore.New(dbtest.New(t)), maxPageBytes: 1 << 20}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctx = auth.WithPrincipal(ctx, auth.Principal{Kind: auth.Service, Subject: "staff", Scopes: []string{auth.ScopeRead, auth.ScopeStaff}})

	const id = "0b9e7a52-6f7e-4c1a-9a57-2f7f3c1e8d40"
	yearZero := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		req   *omsv1.ListOrdersRequest
		field string
	}{
		{"year 0 in the filter", &omsv1.ListOrdersRequest{Filter: `create_time >= "0000-01-01T00:00:00Z"`}, "filter"},
		{"NUL in customer_id", &omsv1.ListOrdersRequest{Filter: `customer_id = "c\u0000"`}, "filter"},
		{"invalid UTF-8 in customer_id", &omsv1.ListOrdersRequest{Filter: "customer_id = \"c\xff\""}, "filter"},
		{"empty customer_id", &omsv1.ListOrdersRequest{Filter: `customer_id = ""`}, "filter"},
		{"year 0 in the page token", &omsv1.ListOrdersRequest{
			PageToken: sealed(svc, &omsv1.ListOrdersRequest{}, listPosition{CreateTime: yearZero, ID: id}),
		}, "page_token"},
		{"year 10000 in the page token", &omsv1.ListOrdersRequest{
			Filter: "state = PAID",
			PageToken: sealed(svc, &omsv1.ListOrdersRequest{Filter: "state = PAID"},
				listPosition{CreateTime: time.Date(9999, 12, 31, 23, 59, 59, 0, time.FixedZone("", -3600)), ID: id}),
		}, "page_token"},
	} {
		_, err := svc.ListOrders(ctx, tc.req)
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", tc.name, err)
			continue
		}
		if f := violatedField(st); f != tc.field {
			t.Errorf("%s: field violation on %q, want %q (%v)", tc.name, f, tc.field, err)
		}
	}

	for _, req := range []*omsv1.ListOrdersRequest{
		{Filter: `create_time >= "0001-01-01T00:00:00Z" AND create_time <= "9999-12-31T23:59:59.999999999Z"`},
		{PageToken: sealed(svc, &omsv1.ListOrdersRequest{}, listPosition{CreateTime: time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), ID: id})},
		{PageToken: sealed(svc, &omsv1.ListOrdersRequest{}, listPosition{CreateTime: time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC), ID: id})},
	} {
		if _, err := svc.ListOrders(ctx, req); err != nil {
			t.Errorf("ListOrders(%v): %v", req, err)
		}
	}
}

func violatedField(st *status.Status) string {
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.FieldViolations) > 0 {
			return br.FieldViolations[0].Field
		}
	}
	return ""
}

// sealed is the page token the service would issue the staff caller of
// these tests for req, ending at pos: signed, whatever pos is, so that
// only the position's checks can refuse it.
func sealed(svc *queryService, req *omsv1.ListOrdersRequest, pos listPosition) string {
	return svc.pageTokens().seal(tokenListOrders, req, "service:staff", pos.encode())
}
