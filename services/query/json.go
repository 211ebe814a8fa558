package main

import (
	"math/bits"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/types/known/timestamppb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"
)

// orderJSON is the gateway's JSON with a hand-written encoder for what the
// query API sends most, orders and pages of them: protojson spent about
// half of an HTTP ListOrders' CPU walking each message by reflection. The
// output is protojson's (names, int64 as strings, enum names, RFC 3339
// times, unpopulated fields left out; TestOrderJSONIsProtoJSON), without
// its deliberately random spacing. Anything the encoder is not sure of
// (invalid UTF-8, an unknown enum value, a time out of range) goes to
// protojson, which encodes or refuses it as before; so does every other
// message.
type orderJSON struct{ *runtime.JSONPb }

func (m orderJSON) Marshal(v any) ([]byte, error) {
	w := jsonWriter{}
	switch v := v.(type) {
	case *omsv1.Order:
		w.b = make([]byte, 0, 1024)
		w.order(v)
	case *omsv1.ListOrdersResponse:
		w.b = make([]byte, 0, 512+768*len(v.GetOrders()))
		w.open()
		if len(v.Orders) > 0 {
			w.key("orders")
			w.b = append(w.b, '[')
			for i, o := range v.Orders {
				if i > 0 {
					w.b = append(w.b, ',')
				}
				w.order(o)
			}
			w.b = append(w.b, ']')
		}
		w.str("nextPageToken", v.NextPageToken)
		w.close()
	default:
		return m.JSONPb.Marshal(v)
	}
	if w.bad {
		return m.JSONPb.Marshal(v)
	}
	return w.b, nil
}

// jsonWriter appends JSON objects field by field.
type jsonWriter struct {
	b     []byte
	first bool // no field yet in the open object
	bad   bool // something only protojson may encode
}

func (w *jsonWriter) order(o *omsv1.Order) {
	if o == nil {
		w.b = append(w.b, "{}"...)
		return
	}
	w.open()
	w.str("name", o.Name)
	w.str("id", o.Id)
	w.str("customerId", o.CustomerId)
	if o.State != 0 {
		name, ok := omsv1.Order_State_name[int32(o.State)]
		if !ok {
			w.bad = true
		}
		w.str("state", name)
	}
	if len(o.LineItems) > 0 {
		w.key("lineItems")
		w.b = append(w.b, '[')
		for i, l := range o.LineItems {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			w.open()
			if l != nil {
				w.str("sku", l.Sku)
				w.str("name", l.Name)
				w.int32("quantity", l.Quantity)
				w.int64("unitPriceMinor", l.UnitPriceMinor)
			}
			w.close()
		}
		w.b = append(w.b, ']')
	}
	w.str("currencyCode", o.CurrencyCode)
	w.int64("subtotalMinor", o.SubtotalMinor)
	w.int64("totalMinor", o.TotalMinor)
	if a := o.ShippingAddress; a != nil {
		w.key("shippingAddress")
		w.open()
		w.str("recipient", a.Recipient)
		if len(a.AddressLines) > 0 {
			w.key("addressLines")
			w.b = append(w.b, '[')
			for i, l := range a.AddressLines {
				if i > 0 {
					w.b = append(w.b, ',')
				}
				w.quote(l)
			}
			w.b = append(w.b, ']')
		}
		w.str("locality", a.Locality)
		w.str("administrativeArea", a.AdministrativeArea)
		w.str("postalCode", a.PostalCode)
		w.str("regionCode", a.RegionCode)
		w.close()
	}
	if p := o.Payment; p != nil {
		w.key("payment")
		w.open()
		w.str("reference", p.Reference)
		w.int64("amountMinor", p.AmountMinor)
		w.time("payTime", p.PayTime)
		w.close()
	}
	if s := o.Shipment; s != nil {
		w.key("shipment")
		w.open()
		w.str("carrier", s.Carrier)
		w.str("trackingNumber", s.TrackingNumber)
		w.time("shipTime", s.ShipTime)
		w.time("deliverTime", s.DeliverTime)
		w.close()
	}
	if c := o.Cancellation; c != nil {
		w.key("cancellation")
		w.open()
		w.str("reason", c.Reason)
		w.time("cancelTime", c.CancelTime)
		if c.RefundDue {
			w.key("refundDue")
			w.b = append(w.b, "true"...)
		}
		w.close()
	}
	w.int64("version", o.Version)
	w.time("createTime", o.CreateTime)
	w.time("updateTime", o.UpdateTime)
	w.str("rejectionReason", o.RejectionReason)
	w.close()
}

func (w *jsonWriter) open() {
	w.b = append(w.b, '{')
	w.first = true
}

func (w *jsonWriter) close() {
	w.b = append(w.b, '}')
	w.first = false // the enclosing object has a field now
}

func (w *jsonWriter) key(k string) {
	if !w.first {
		w.b = append(w.b, ',')
	}
	w.first = false
	w.b = append(w.b, '"')
	w.b = append(w.b, k...)
	w.b = append(w.b, '"', ':')
}

func (w *jsonWriter) str(k, v string) {
	if v != "" {
		w.key(k)
		w.quote(v)
	}
}

// int64 is a string in proto3 JSON.
func (w *jsonWriter) int64(k string, v int64) {
	if v != 0 {
		w.key(k)
		w.b = append(w.b, '"')
		w.b = strconv.AppendInt(w.b, v, 10)
		w.b = append(w.b, '"')
	}
}

func (w *jsonWriter) int32(k string, v int32) {
	if v != 0 {
		w.key(k)
		w.b = strconv.AppendInt(w.b, int64(v), 10)
	}
}

// The range of google.protobuf.Timestamp, 0001-01-01 to 9999-12-31.
const minTimestamp, maxTimestamp = -62135596800, 253402300799

// time writes a Timestamp as protojson does: UTC, with 0, 3, 6 or 9
// fractional digits.
func (w *jsonWriter) time(k string, t *timestamppb.Timestamp) {
	if t == nil {
		return
	}
	secs, nanos := t.GetSeconds(), t.GetNanos()
	if secs < minTimestamp || secs > maxTimestamp || nanos < 0 || nanos > 999_999_999 {
		w.bad = true
		return
	}
	w.key(k)
	w.b = append(w.b, '"')
	w.b = time.Unix(secs, int64(nanos)).UTC().AppendFormat(w.b, "2006-01-02T15:04:05.000000000")
	for range 3 {
		if n := len(w.b); string(w.b[n-3:]) == "000" {
			w.b = w.b[:n-3]
		}
	}
	if n := len(w.b); w.b[n-1] == '.' {
		w.b = w.b[:n-1]
	}
	w.b = append(w.b, 'Z', '"')
}

// quote writes s as a JSON string, escaped as protojson escapes: ", \ and
// control characters only.
func (w *jsonWriter) quote(s string) {
	w.b = append(w.b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				w.bad = true // protojson refuses invalid UTF-8
				return
			}
			i += n
			continue
		}
		w.b = append(w.b, s[start:i]...)
		w.b = append(w.b, '\\')
		switch c {
		case '"', '\\':
			w.b = append(w.b, c)
		case '\b':
			w.b = append(w.b, 'b')
		case '\f':
			w.b = append(w.b, 'f')
		case '\n':
			w.b = append(w.b, 'n')
		case '\r':
			w.b = append(w.b, 'r')
		case '\t':
			w.b = append(w.b, 't')
		default:
			w.b = append(w.b, 'u')
			w.b = append(w.b, "0000"[1+(bits.Len32(uint32(c))-1)/4:]...)
			w.b = strconv.AppendUint(w.b, uint64(c), 16)
		}
		i++
		start = i
	}
	w.b = append(w.b, s[start:]...)
	w.b = append(w.b, '"')
}
