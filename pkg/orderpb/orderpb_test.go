package orderpb

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/order"
)

func TestCommandRoundTrip(t *testing.T) {
	total := int64(2400)
	id := uuid.NewString()
	now := time.Date(2026, 11, 26, 1, 2, 3, 4000, time.UTC)
	for _, body := range []order.Body{
		order.CreateOrder{CustomerID: "c", Currency: "USD", ExpectedTotalMinor: &total,
			Lines:           []order.LineItem{{SKU: "s", Name: "n", Quantity: 2, UnitPriceMinor: 1200}},
			ShippingAddress: &order.Address{Recipient: "R", AddressLines: []string{"1 Main St"}, RegionCode: "US"}},
		order.PayOrder{Reference: "p", AmountMinor: 5},
		order.ShipOrder{Carrier: "c", TrackingNumber: "t"},
		order.DeliverOrder{},
		order.CancelOrder{Reason: "r"},
	} {
		in := order.Command{ID: "req-1", OrderID: id, IssueTime: now, CorrelationID: "corr", Body: body,
			Actor: order.Actor{ID: "customer:c-1", CustomerID: "c-1"}}
		b, err := EncodeCommand(in)
		if err != nil {
			t.Fatal(err)
		}
		out, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("%s: %v", in.Kind(), err)
		}
		if !reflect.DeepEqual(in, out) {
			t.Errorf("round trip of %s:\n in  %+v\n out %+v", in.Kind(), in, out)
		}
	}
}

func TestDecodeRejectsBadEnvelopes(t *testing.T) {
	id := uuid.NewString()
	for name, body := range map[string]string{
		"not json":        "garbage",
		"unknown field":   `{"commandId":"a","orderId":"` + id + `","pay":{},"extra":1}`,
		"no command":      `{"commandId":"a","orderId":"` + id + `"}`,
		"bad order id":    `{"commandId":"a","orderId":"42","deliver":{}}`,
		"no command id":   `{"orderId":"` + id + `","deliver":{}}`,
		"space in cmd id": `{"commandId":"a b","orderId":"` + id + `","deliver":{}}`,
		"empty actor id":  `{"commandId":"a","orderId":"` + id + `","actor":{"customerId":"c-1"},"deliver":{}}`,
	} {
		if _, err := DecodeCommand([]byte(body)); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func TestParseName(t *testing.T) {
	id := uuid.NewString()
	if got, err := ParseName("orders/" + strings.ToUpper(id)); err != nil || got != id {
		t.Errorf("ParseName = %q, %v", got, err)
	}
	for _, bad := range []string{"", "orders/", "order/" + id, "orders/x", id} {
		if _, err := ParseName(bad); err == nil {
			t.Errorf("ParseName(%q) accepted", bad)
		}
	}
}

// A command queued before principals existed carries no actor: it keeps
// the rights every caller had then, so an upgrade loses nothing.
func TestCommandWithoutActorIsFromBeforePrincipals(t *testing.T) {
	id := uuid.NewString()
	c, err := DecodeCommand([]byte(`{"commandId":"a","orderId":"` + id + `","deliver":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Actor != (order.Actor{AllOrders: true}) {
		t.Errorf("actor %+v, want the pre-principal actor", c.Actor)
	}
}

// Amounts above 2^53 reach clients exactly: int64 is a JSON string, where
// the old Struct payload made them doubles (…993 was served as …992).
func TestEventPayloadIsExactInJSON(t *testing.T) {
	const big = 1<<53 + 1
	id := uuid.NewString()
	for _, tc := range []struct {
		e    order.Event
		want []string
	}{
		{order.Event{OrderID: id, Seq: 1, Type: order.EventCreated, Payload: order.CreatedPayload{CurrencyCode: "USD", TotalMinor: big, LineItems: 2}},
			[]string{`"created":{"currencyCode":"USD","totalMinor":"9007199254740993","lineItems":2}`}},
		{order.Event{OrderID: id, Seq: 2, Type: order.EventPaid, Payload: order.PaidPayload{PaymentReference: "p", AmountMinor: big}},
			[]string{`"paid":{"paymentReference":"p","amountMinor":"9007199254740993"}`}},
		{order.Event{OrderID: id, Seq: 3, Type: order.EventShipped, Payload: order.ShippedPayload{Carrier: "UPS", TrackingNumber: "1Z"}},
			[]string{`"shipped":{"carrier":"UPS","trackingNumber":"1Z"}`}},
		{order.Event{OrderID: id, Seq: 4, Type: order.EventCancelled, Payload: order.CancelledPayload{Reason: "r", RefundDue: true}},
			[]string{`"cancelled":{"reason":"r","refundDue":true}`}},
	} {
		for name, msg := range map[string]proto.Message{
			"event":        Event(tc.e),
			"notification": &omsv1.OrderNotification{OrderId: id, Event: Event(tc.e)},
		} {
			b, err := protojson.MarshalOptions{}.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			// protojson randomises whitespace; compare without it.
			got := strings.Join(strings.Fields(string(b)), "")
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("%s %s: %s lacks %s", tc.e.Type, name, got, w)
				}
			}
		}
	}
	if p := Event(order.Event{OrderID: id, Seq: 5, Type: order.EventDelivered}); p.Payload != nil {
		t.Errorf("delivered event has payload %v", p.Payload)
	}
}
