// Package orderpb converts between the order domain and the oms.v1 API.
package orderpb

import (
	"encoding/base64"
	"fmt"
	"time"

	"go.einride.tech/aip/resourcename"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/order"
)

// Name is the resource name of an order.
func Name(id string) string { return "orders/" + id }

// ParseName returns the order id in "orders/{id}" (AIP-122), in canonical
// form.
func ParseName(name string) (string, error) {
	var id string
	if err := resourcename.Sscan(name, "orders/{order}", &id); err != nil || id == "" {
		return "", fmt.Errorf("must look like orders/{order_id}, got %q", name)
	}
	return order.ParseID(id)
}

// State converts a domain state; the enums share their numbering.
func State(s order.State) omsv1.Order_State { return omsv1.Order_State(s) }

// StateFromProto converts an API state.
func StateFromProto(s omsv1.Order_State) order.State { return order.State(s) }

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// Order converts an order for the API. Fields the store did not load are
// zero and so are left unset.
func Order(o *order.Order) *omsv1.Order {
	p := &omsv1.Order{
		Name: Name(o.ID), Id: o.ID, CustomerId: o.CustomerID, State: State(o.State),
		CurrencyCode: o.Currency, SubtotalMinor: o.SubtotalMinor, TotalMinor: o.TotalMinor,
		Version: o.Version, CreateTime: ts(o.CreateTime), UpdateTime: ts(o.UpdateTime),
		RejectionReason: o.RejectionReason,
	}
	if o.ID == "" {
		p.Name = ""
	}
	for _, l := range o.Lines {
		p.LineItems = append(p.LineItems, &omsv1.LineItem{Sku: l.SKU, Name: l.Name, Quantity: l.Quantity, UnitPriceMinor: l.UnitPriceMinor})
	}
	if a := o.ShippingAddress; a != nil {
		p.ShippingAddress = &omsv1.PostalAddress{
			Recipient: a.Recipient, AddressLines: a.AddressLines, Locality: a.Locality,
			AdministrativeArea: a.AdministrativeArea, PostalCode: a.PostalCode, RegionCode: a.RegionCode,
		}
	}
	if x := o.Payment; x != nil {
		p.Payment = &omsv1.Payment{Reference: x.Reference, AmountMinor: x.AmountMinor, PayTime: ts(x.PayTime)}
	}
	if x := o.Shipment; x != nil {
		p.Shipment = &omsv1.Shipment{Carrier: x.Carrier, TrackingNumber: x.TrackingNumber, ShipTime: ts(x.ShipTime), DeliverTime: ts(x.DeliverTime)}
	}
	if x := o.Cancellation; x != nil {
		p.Cancellation = &omsv1.Cancellation{Reason: x.Reason, CancelTime: ts(x.CancelTime), RefundDue: x.RefundDue}
	}
	return p
}

// Event converts a history entry for the API.
func Event(e order.Event) *omsv1.OrderEvent {
	p := &omsv1.OrderEvent{
		Name:      fmt.Sprintf("orders/%s/events/%d", e.OrderID, e.Seq),
		Sequence:  e.Seq,
		Type:      string(e.Type),
		FromState: State(e.From), ToState: State(e.To),
		CommandId: e.CommandID, Command: string(e.Command), Reason: e.Reason,
		OccurTime: ts(e.OccurTime), OrderVersion: e.OrderVersion,
	}
	switch x := e.Payload.(type) {
	case order.CreatedPayload:
		p.Payload = &omsv1.OrderEvent_Created{Created: &omsv1.OrderCreatedPayload{
			CurrencyCode: x.CurrencyCode, TotalMinor: x.TotalMinor, LineItems: int32(x.LineItems)}}
	case order.PaidPayload:
		p.Payload = &omsv1.OrderEvent_Paid{Paid: &omsv1.OrderPaidPayload{PaymentReference: x.PaymentReference, AmountMinor: x.AmountMinor}}
	case order.ShippedPayload:
		p.Payload = &omsv1.OrderEvent_Shipped{Shipped: &omsv1.OrderShippedPayload{Carrier: x.Carrier, TrackingNumber: x.TrackingNumber}}
	case order.CancelledPayload:
		p.Payload = &omsv1.OrderEvent_Cancelled{Cancelled: &omsv1.OrderCancelledPayload{Reason: x.Reason, RefundDue: x.RefundDue}}
	}
	return p
}

// CreateBody turns the client's order into a create command body.
func CreateBody(o *omsv1.Order) order.CreateOrder {
	if o == nil {
		return order.CreateOrder{}
	}
	c := order.CreateOrder{CustomerID: o.CustomerId, Currency: o.CurrencyCode}
	for _, l := range o.LineItems {
		if l == nil {
			l = &omsv1.LineItem{}
		}
		c.Lines = append(c.Lines, order.LineItem{SKU: l.Sku, Name: l.Name, Quantity: l.Quantity, UnitPriceMinor: l.UnitPriceMinor})
	}
	if a := o.ShippingAddress; a != nil {
		c.ShippingAddress = &order.Address{
			Recipient: a.Recipient, AddressLines: a.AddressLines, Locality: a.Locality,
			AdministrativeArea: a.AdministrativeArea, PostalCode: a.PostalCode, RegionCode: a.RegionCode,
		}
	}
	if o.TotalMinor != 0 {
		t := o.TotalMinor
		c.ExpectedTotalMinor = &t
	}
	return c
}

// Command converts a domain command into the queue envelope.
func Command(c order.Command) *omsv1.OrderCommand {
	p := &omsv1.OrderCommand{
		CommandId: c.ID, OrderId: c.OrderID, IssueTime: ts(c.IssueTime), CorrelationId: c.CorrelationID,
	}
	if c.Actor.ID != "" {
		p.Actor = &omsv1.CommandActor{Id: c.Actor.ID, CustomerId: c.Actor.CustomerID, AllOrders: c.Actor.AllOrders}
	}
	switch b := c.Body.(type) {
	case order.CreateOrder:
		o := Order(&order.Order{
			CustomerID: b.CustomerID, Currency: b.Currency, Lines: b.Lines, ShippingAddress: b.ShippingAddress,
		})
		if b.ExpectedTotalMinor != nil {
			o.TotalMinor = *b.ExpectedTotalMinor
		}
		p.Command = &omsv1.OrderCommand_Create{Create: &omsv1.CreateOrderCommand{Order: o}}
	case order.PayOrder:
		p.Command = &omsv1.OrderCommand_Pay{Pay: &omsv1.PayOrderCommand{PaymentReference: b.Reference, AmountMinor: b.AmountMinor}}
	case order.ShipOrder:
		p.Command = &omsv1.OrderCommand_Ship{Ship: &omsv1.ShipOrderCommand{Carrier: b.Carrier, TrackingNumber: b.TrackingNumber}}
	case order.DeliverOrder:
		p.Command = &omsv1.OrderCommand_Deliver{Deliver: &omsv1.DeliverOrderCommand{}}
	case order.CancelOrder:
		p.Command = &omsv1.OrderCommand_Cancel{Cancel: &omsv1.CancelOrderCommand{Reason: b.Reason}}
	}
	return p
}

// CommandFromProto converts a queue envelope into a domain command. It
// checks the envelope (ids, a known command) but not the body: the domain
// validates that, and records an invalid body as a rejection.
func CommandFromProto(p *omsv1.OrderCommand) (order.Command, error) {
	if err := order.ValidateRequestID(p.CommandId); err != nil {
		return order.Command{}, fmt.Errorf("command_id: %w", err)
	}
	id, err := order.ParseID(p.OrderId)
	if err != nil {
		return order.Command{}, fmt.Errorf("order_id: %w", err)
	}
	c := order.Command{ID: p.CommandId, OrderID: id, IssueTime: p.IssueTime.AsTime(), CorrelationID: p.CorrelationId}
	switch a := p.GetActor(); {
	case a == nil:
		// Queued before principals existed, when every caller could touch
		// every order: only holders of SQS send rights can put it there.
		c.Actor = order.Actor{AllOrders: true}
	case a.Id == "" || len(a.Id) > 2*order.MaxIDLen:
		return order.Command{}, fmt.Errorf("actor: id must be 1 to %d characters", 2*order.MaxIDLen)
	default:
		c.Actor = order.Actor{ID: a.Id, CustomerID: a.CustomerId, AllOrders: a.AllOrders}
	}
	switch b := p.Command.(type) {
	case *omsv1.OrderCommand_Create:
		c.Body = CreateBody(b.Create.GetOrder())
	case *omsv1.OrderCommand_Pay:
		c.Body = order.PayOrder{Reference: b.Pay.GetPaymentReference(), AmountMinor: b.Pay.GetAmountMinor()}
	case *omsv1.OrderCommand_Ship:
		c.Body = order.ShipOrder{Carrier: b.Ship.GetCarrier(), TrackingNumber: b.Ship.GetTrackingNumber()}
	case *omsv1.OrderCommand_Deliver:
		c.Body = order.DeliverOrder{}
	case *omsv1.OrderCommand_Cancel:
		c.Body = order.CancelOrder{Reason: b.Cancel.GetReason()}
	default:
		return order.Command{}, fmt.Errorf("command %s has no known command body", p.CommandId)
	}
	return c, nil
}

// ContentTypeKey is the message metadata (an SQS message attribute) that
// names a command body's encoding. Ingest before binary bodies set none:
// absent means JSON.
const ContentTypeKey = "content_type"

// Command body encodings. SQS bodies must be text, so the binary form is
// base64; it still costs a fraction of protojson to write and read.
const (
	ContentTypeJSON     = "application/json"
	ContentTypeProtobuf = "application/protobuf;base64"
)

var (
	marshal   = protojson.MarshalOptions{}
	unmarshal = protojson.UnmarshalOptions{DiscardUnknown: false}
)

// EncodeCommand is the body of a command message in JSON, the encoding
// every processor reads (and the default when no content type is sent).
func EncodeCommand(c order.Command) ([]byte, error) { return EncodeCommandAs(c, ContentTypeJSON) }

// EncodeCommandAs is the body of a command message in the given encoding;
// the message must carry contentType under ContentTypeKey.
func EncodeCommandAs(c order.Command, contentType string) ([]byte, error) {
	switch contentType {
	case ContentTypeJSON:
		return marshal.Marshal(Command(c))
	case ContentTypeProtobuf:
		b, err := proto.Marshal(Command(c))
		if err != nil {
			return nil, fmt.Errorf("encode command: %w", err)
		}
		return base64.StdEncoding.AppendEncode(nil, b), nil
	default:
		return nil, fmt.Errorf("encode command: unknown content type %q", contentType)
	}
}

// DecodeCommand parses a JSON command message body.
func DecodeCommand(body []byte) (order.Command, error) { return DecodeCommandAs(body, "") }

// DecodeCommandAs parses a command message body sent with contentType
// ("" is JSON, as an older ingest sent it). Unknown fields are refused in
// either encoding: a command this binary does not fully understand is
// dead-lettered, not applied in part.
func DecodeCommandAs(body []byte, contentType string) (order.Command, error) {
	var p omsv1.OrderCommand
	switch contentType {
	case "", ContentTypeJSON:
		if err := unmarshal.Unmarshal(body, &p); err != nil {
			return order.Command{}, fmt.Errorf("decode command: %w", err)
		}
	case ContentTypeProtobuf:
		raw, err := base64.StdEncoding.AppendDecode(nil, body)
		if err != nil {
			return order.Command{}, fmt.Errorf("decode command: base64: %w", err)
		}
		if err := proto.Unmarshal(raw, &p); err != nil {
			return order.Command{}, fmt.Errorf("decode command: %w", err)
		}
		if path := unknownField(&p); path != "" {
			return order.Command{}, fmt.Errorf("decode command: unknown field in %s", path)
		}
	default:
		return order.Command{}, fmt.Errorf("decode command: unknown content type %q", contentType)
	}
	return CommandFromProto(&p)
}

// unknownField names the first message in p holding fields this binary's
// schema lacks, or is "". It lists the messages with generated getters:
// protoreflect's Has on each field cost the processor 2-3% of its CPU.
// TestProtobufRefusesUnknownFields walks the schema to keep it complete.
func unknownField(p *omsv1.OrderCommand) string {
	parts := []proto.Message{p, p.IssueTime, p.Actor}
	switch c := p.Command.(type) {
	case *omsv1.OrderCommand_Create:
		o := c.Create.GetOrder()
		parts = append(parts, c.Create, o, o.GetShippingAddress(), o.GetPayment(), o.GetPayment().GetPayTime(),
			o.GetShipment(), o.GetShipment().GetShipTime(), o.GetShipment().GetDeliverTime(),
			o.GetCancellation(), o.GetCancellation().GetCancelTime(), o.GetCreateTime(), o.GetUpdateTime())
		for _, l := range o.GetLineItems() {
			parts = append(parts, l)
		}
	case *omsv1.OrderCommand_Pay:
		parts = append(parts, c.Pay)
	case *omsv1.OrderCommand_Ship:
		parts = append(parts, c.Ship)
	case *omsv1.OrderCommand_Deliver:
		parts = append(parts, c.Deliver)
	case *omsv1.OrderCommand_Cancel:
		parts = append(parts, c.Cancel)
	}
	for _, m := range parts {
		// A nil message (a field not sent) is invalid and has nothing.
		if r := m.ProtoReflect(); r.IsValid() && len(r.GetUnknown()) > 0 {
			return string(r.Descriptor().FullName())
		}
	}
	return ""
}

// EncodeNotification is the body of a notification message.
func EncodeNotification(n *omsv1.OrderNotification) ([]byte, error) { return marshal.Marshal(n) }
