package orderpb

import (
	"encoding/base64"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/order"
)

func TestCommandRoundTrip(t *testing.T) {
	total := int64(2400)
	id := uuid.NewString()
	now := time.Date(2026, 11, 26, 1, 2, 3, 4000, time.UTC)
	for _, ct := range []string{ContentTypeJSON, ContentTypeProtobuf} {
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
			b, err := EncodeCommandAs(in, ct)
			if err != nil {
				t.Fatal(err)
			}
			if !utf8.Valid(b) || strings.ContainsAny(string(b), "\x00") {
				t.Errorf("%s %s: body is not text, as SQS requires: %q", ct, in.Kind(), b)
			}
			out, err := DecodeCommandAs(b, ct)
			if err != nil {
				t.Fatalf("%s %s: %v", ct, in.Kind(), err)
			}
			if !reflect.DeepEqual(in, out) {
				t.Errorf("%s round trip of %s:\n in  %+v\n out %+v", ct, in.Kind(), in, out)
			}
		}
	}
}

// A rolling upgrade: a processor reads what an older ingest queued (JSON,
// no content type) and what a newer one queues (protobuf); an older
// processor, reading no content type, still gets JSON from EncodeCommand.
func TestDecodeEitherEncoding(t *testing.T) {
	id := uuid.NewString()
	in := order.Command{ID: "req-1", OrderID: id, IssueTime: time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC),
		Actor: order.Actor{ID: "service:s", AllOrders: true}, Body: order.CancelOrder{Reason: "r"}}
	jsonBody, err := EncodeCommand(in)
	if err != nil {
		t.Fatal(err)
	}
	pbBody, err := EncodeCommandAs(in, ContentTypeProtobuf)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, contentType string
		body              []byte
		ok                bool
	}{
		{"old ingest: JSON, no content type", "", jsonBody, true},
		{"JSON, named", ContentTypeJSON, jsonBody, true},
		{"protobuf", ContentTypeProtobuf, pbBody, true},
		{"protobuf without its content type", "", pbBody, false},
		{"JSON called protobuf", ContentTypeProtobuf, jsonBody, false},
		{"unknown content type", "application/xml", jsonBody, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := DecodeCommandAs(tc.body, tc.contentType)
			if !tc.ok {
				if err == nil {
					t.Errorf("decoded %+v", out)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(in, out) {
				t.Errorf("got %+v, %v; want %+v", out, err, in)
			}
		})
	}
	if c, err := DecodeCommand(jsonBody); err != nil || !reflect.DeepEqual(in, c) {
		t.Errorf("DecodeCommand of JSON: %+v, %v", c, err)
	}
}

// As JSON refuses unknown fields, so does protobuf, in every message a
// command can hold (found by walking the schema, so that a message added
// to it is checked too): a command from a newer ingest is not applied in
// part.
func TestProtobufRefusesUnknownFields(t *testing.T) {
	unknown := protowire.AppendVarint(protowire.AppendTag(nil, 999, protowire.VarintType), 1)
	var paths [][]protoreflect.FieldDescriptor
	var walk func(md protoreflect.MessageDescriptor, path []protoreflect.FieldDescriptor)
	walk = func(md protoreflect.MessageDescriptor, path []protoreflect.FieldDescriptor) {
		paths = append(paths, path)
		for i := range md.Fields().Len() {
			if fd := md.Fields().Get(i); fd.Message() != nil && len(path) < 8 {
				walk(fd.Message(), append(slices.Clone(path), fd))
			}
		}
	}
	walk((&omsv1.OrderCommand{}).ProtoReflect().Descriptor(), nil)
	if len(paths) < 15 {
		t.Fatalf("walked only %d messages", len(paths))
	}
	for _, path := range paths {
		name := "OrderCommand"
		for _, fd := range path {
			name += "." + string(fd.Name())
		}
		t.Run(name, func(t *testing.T) {
			p := &omsv1.OrderCommand{CommandId: "a", OrderId: uuid.NewString()}
			m := p.ProtoReflect()
			for _, fd := range path {
				if fd.IsList() {
					m = m.Mutable(fd).List().AppendMutable().Message()
				} else {
					m = m.Mutable(fd).Message()
				}
			}
			m.SetUnknown(unknown)
			raw, err := proto.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			_, err = DecodeCommandAs(base64.StdEncoding.AppendEncode(nil, raw), ContentTypeProtobuf)
			if err == nil || !strings.Contains(err.Error(), "unknown field") {
				t.Errorf("got %v, want an unknown field error", err)
			}
		})
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
	// The same envelopes in protobuf, and bodies that are not it.
	for name, p := range map[string]*omsv1.OrderCommand{
		"no command":     {CommandId: "a", OrderId: id},
		"bad order id":   {CommandId: "a", OrderId: "42", Command: &omsv1.OrderCommand_Deliver{Deliver: &omsv1.DeliverOrderCommand{}}},
		"empty actor id": {CommandId: "a", OrderId: id, Actor: &omsv1.CommandActor{CustomerId: "c-1"}, Command: &omsv1.OrderCommand_Deliver{Deliver: &omsv1.DeliverOrderCommand{}}},
	} {
		raw, err := proto.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeCommandAs(base64.StdEncoding.AppendEncode(nil, raw), ContentTypeProtobuf); err == nil {
			t.Errorf("protobuf %s: decoded", name)
		}
	}
	for name, body := range map[string]string{
		"not base64":          "garbage!",
		"base64, not a proto": base64.StdEncoding.EncodeToString([]byte{0xff, 0xff, 0xff}),
	} {
		if _, err := DecodeCommandAs([]byte(body), ContentTypeProtobuf); err == nil {
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

// The queue's command encodings, as ingest writes and the processor reads
// a typical create: go test -bench Command -benchmem ./pkg/orderpb/
func BenchmarkCommand(b *testing.B) {
	total := int64(2400)
	c := order.Command{ID: uuid.NewString(), OrderID: uuid.NewString(), IssueTime: time.Now().UTC(), CorrelationID: "0123456789abcdef0123456789abcdef",
		Actor: order.Actor{ID: "service:storefront", AllOrders: true},
		Body: order.CreateOrder{CustomerID: "c-1", Currency: "USD", ExpectedTotalMinor: &total,
			Lines: []order.LineItem{{SKU: "SKU-1", Name: "Mug", Quantity: 2, UnitPriceMinor: 1200}}}}
	for _, ct := range []string{ContentTypeJSON, ContentTypeProtobuf} {
		body, err := EncodeCommandAs(c, ct)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("encode "+ct, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := EncodeCommandAs(c, ct); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("decode "+ct, func(b *testing.B) {
			b.ReportAllocs()
			b.ReportMetric(float64(len(body)), "bytes")
			for b.Loop() {
				if _, err := DecodeCommandAs(body, ct); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
