package main

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/orderstore"
)

// A page is cut where the next order would take it past maxPageBytes,
// counted exactly as each order encodes, and the pages together hold every
// order once.
func TestListOrdersCutsPagesBySize(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := dbtest.New(t)
	if _, err := db.ExecContext(ctx, `
INSERT INTO orders (id, customer_id, state, currency_code, subtotal_minor, total_minor, shipping_address, version, create_time, update_time)
SELECT gen_random_uuid(), 'c-1', 'CREATED', 'USD', n, n, jsonb_build_object('recipient', repeat('r', n % 300), 'address_lines', jsonb_build_array(repeat('l', n % 97))),
    1, now() - n * interval '1 second', now()
FROM generate_series(1, 120) n`); err != nil {
		t.Fatal(err)
	}
	const limit = 4000
	svc := &queryService{store: orderstore.New(db), maxPageBytes: limit}
	ctx = auth.WithPrincipal(ctx, auth.Principal{Kind: auth.Service, Subject: "staff", Scopes: []string{auth.ScopeRead, auth.ScopeStaff}})
	seen := map[string]bool{}
	token := ""
	for pages := 0; ; pages++ {
		if pages > 200 {
			t.Fatal("paging does not end")
		}
		resp, err := svc.ListOrders(ctx, &omsv1.ListOrdersRequest{PageSize: 50, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, o := range resp.Orders {
			total += proto.Size(o) + 8
			if seen[o.Id] {
				t.Fatalf("order %s on two pages", o.Id)
			}
			seen[o.Id] = true
		}
		if len(resp.Orders) > 1 && total > limit {
			t.Errorf("page of %d orders encodes to %d bytes, over %d", len(resp.Orders), total, limit)
		}
		if resp.NextPageToken == "" {
			break
		}
		// Cut only where one more order would not have fit.
		next, err := svc.ListOrders(ctx, &omsv1.ListOrdersRequest{PageSize: 1, PageToken: resp.NextPageToken})
		if err != nil || len(next.Orders) != 1 {
			t.Fatalf("the next page: %v %v", next, err)
		}
		if len(resp.Orders) < 50 && total+proto.Size(next.Orders[0])+8 <= limit {
			t.Errorf("page cut at %d orders (%d bytes) though the next (%d bytes) fits", len(resp.Orders), total, proto.Size(next.Orders[0]))
		}
		token = resp.NextPageToken
	}
	if len(seen) != 120 {
		t.Errorf("%d orders in all pages, want 120", len(seen))
	}
}
