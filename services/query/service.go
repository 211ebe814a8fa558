package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderpb"
	"github.com/omsdev/oms/pkg/orderstore"
)

const (
	defaultPageSize = 50
	maxPageSize     = 500
)

// queryService is the gRPC port over the store's read side. Every read is
// confined to the orders the caller may see: another owner's order is
// NOT_FOUND, and lists never include one, whatever the filter says.
type queryService struct {
	omsv1.UnimplementedOrderQueryServiceServer
	store *orderstore.Store
	// maxPageBytes bounds a list response's encoded size, below the
	// transport's message limit: a page is cut by size as well as count.
	maxPageBytes int
}

func (s *queryService) GetOrder(ctx context.Context, req *omsv1.GetOrderRequest) (*omsv1.Order, error) {
	actor, err := auth.ActorFromContext(ctx)
	if err != nil {
		return nil, err
	}
	id, err := orderpb.ParseName(req.Name)
	if err != nil {
		return nil, badRequest("name", err.Error())
	}
	mask, err := parseMask(req.ReadMask)
	if err != nil {
		return nil, badRequest("read_mask", err.Error())
	}
	o, err := s.store.Get(ctx, id, mask.columns(), actor)
	if errors.Is(err, orderstore.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "order %s not found", req.Name)
	}
	if err != nil {
		return nil, storeError(err)
	}
	out := orderpb.Order(o)
	mask.apply(out)
	return out, nil
}

func (s *queryService) ListOrders(ctx context.Context, req *omsv1.ListOrdersRequest) (*omsv1.ListOrdersResponse, error) {
	actor, err := auth.ActorFromContext(ctx)
	if err != nil {
		return nil, err
	}
	size, err := pageSize(req.PageSize, defaultPageSize, maxPageSize)
	if err != nil {
		return nil, err
	}
	q, err := parseFilter(req.Filter)
	if err != nil {
		return nil, badRequest("filter", err.Error())
	}
	switch req.OrderBy {
	case "", "create_time desc":
	case "create_time", "create_time asc":
		q.Ascending = true
	default:
		return nil, badRequest("order_by", `must be "create_time desc" (the default) or "create_time asc"`)
	}
	mask, err := parseMask(req.ReadMask)
	if err != nil {
		return nil, badRequest("read_mask", err.Error())
	}
	// A token is only valid for the query that issued it.
	scope := req.Filter + "\x00" + req.OrderBy
	var tok listToken
	if err := decodeToken(req.PageToken, scope, &tok); err != nil {
		return nil, err
	}
	if req.PageToken != "" {
		if _, err := order.ParseID(tok.ID); err != nil {
			return nil, badRequest("page_token", "is not a token this service issued")
		}
		q.After = &orderstore.Cursor{CreateTime: tok.CreateTime, ID: tok.ID}
	}
	q.Limit, q.Fields, q.Actor = size+1, mask.columns(), actor
	orders, err := s.store.List(ctx, q)
	if err != nil {
		return nil, storeError(err)
	}
	resp := &omsv1.ListOrdersResponse{Orders: make([]*omsv1.Order, 0, min(len(orders), size))}
	// bytes is the page's encoded size so far, or while exact is false an
	// upper bound of it (sizeBound): a page far below the limit is never
	// sized exactly, which costs a pass over every order.
	bytes, exact := 0, false
	for i, o := range orders {
		// The row past size only says there is a next page. Otherwise cut
		// where the next order would pass the size bound (one order always
		// fits: orders are validated far below it).
		var p *omsv1.Order
		if i < size {
			p = orderpb.Order(o)
			mask.apply(p)
			if exact {
				bytes += proto.Size(p) + 8
			} else if bytes += sizeBound(p) + 8; bytes > s.maxPageBytes {
				exact, bytes = true, proto.Size(p)+8
				for _, q := range resp.Orders {
					bytes += proto.Size(q) + 8
				}
			}
		}
		if i == size || (i > 0 && bytes > s.maxPageBytes) {
			last := orders[i-1]
			resp.NextPageToken = encodeToken(scope, listToken{CreateTime: last.CreateTime, ID: last.ID})
			break
		}
		resp.Orders = append(resp.Orders, p)
	}
	return resp, nil
}

func (s *queryService) ListOrderEvents(ctx context.Context, req *omsv1.ListOrderEventsRequest) (*omsv1.ListOrderEventsResponse, error) {
	actor, err := auth.ActorFromContext(ctx)
	if err != nil {
		return nil, err
	}
	id, err := orderpb.ParseName(req.Parent)
	if err != nil {
		return nil, badRequest("parent", err.Error())
	}
	size, err := pageSize(req.PageSize, 100, 1000)
	if err != nil {
		return nil, err
	}
	var tok eventsToken
	if err := decodeToken(req.PageToken, id, &tok); err != nil {
		return nil, err
	}
	evs, err := s.store.Events(ctx, id, tok.AfterSeq, size+1, actor)
	if errors.Is(err, orderstore.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "order %s not found", req.Parent)
	}
	if err != nil {
		return nil, storeError(err)
	}
	resp := &omsv1.ListOrderEventsResponse{}
	bytes := 0
	for i, e := range evs {
		var p *omsv1.OrderEvent
		if i < size {
			p = orderpb.Event(e)
			bytes += proto.Size(p) + 8
		}
		if i == size || (i > 0 && bytes > s.maxPageBytes) {
			resp.NextPageToken = encodeToken(id, eventsToken{AfterSeq: evs[i-1].Seq})
			break
		}
		resp.Events = append(resp.Events, p)
	}
	return resp, nil
}

// sizeBound is at least proto.Size(o), without encoding it: the lengths
// of its strings, plus room for every other field's tag, length and value
// (TestSizeBoundIsABound).
func sizeBound(o *omsv1.Order) int {
	n := 320 + len(o.Name) + len(o.Id) + len(o.CustomerId) + len(o.CurrencyCode) + len(o.RejectionReason)
	for _, l := range o.LineItems {
		n += 48 + len(l.GetSku()) + len(l.GetName())
	}
	if a := o.ShippingAddress; a != nil {
		n += len(a.Recipient) + len(a.Locality) + len(a.AdministrativeArea) + len(a.PostalCode) + len(a.RegionCode)
		for _, l := range a.AddressLines {
			n += 8 + len(l)
		}
	}
	n += len(o.Payment.GetReference()) + len(o.Shipment.GetCarrier()) + len(o.Shipment.GetTrackingNumber()) + len(o.Cancellation.GetReason())
	return n
}

// storeError turns a database failure into UNAVAILABLE when a retry may
// succeed; anything else is left to the error interceptor (a generic
// INTERNAL, details only in the log).
func storeError(err error) error {
	if orderstore.Transient(err) {
		return status.Error(codes.Unavailable, "the order database is unavailable; retry")
	}
	return err
}

func pageSize(n int32, def, max int) (int, error) {
	switch {
	case n < 0:
		return 0, badRequest("page_size", "must not be negative")
	case n == 0:
		return def, nil
	case int(n) > max:
		return max, nil
	}
	return int(n), nil
}

type listToken struct {
	CreateTime time.Time `json:"t"`
	ID         string    `json:"id"`
}

// valid reports whether the position's time is one an order can have:
// tokens are only base64, so a client can write any JSON into one, and
// PostgreSQL refuses to compare with a year 0.
func (t listToken) valid() bool { return inTimestampRange(t.CreateTime) }

type eventsToken struct {
	AfterSeq int64 `json:"s"`
}

// Page tokens are opaque to clients: base64 of the keyset position and a
// hash of the query it belongs to.
type token struct {
	Scope []byte          `json:"q"`
	Pos   json.RawMessage `json:"p"`
}

func scopeHash(scope string) []byte {
	h := sha256.Sum256([]byte(scope))
	return h[:8]
}

func encodeToken(scope string, pos any) string {
	p, _ := json.Marshal(pos)
	b, _ := json.Marshal(token{Scope: scopeHash(scope), Pos: p})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeToken(s, scope string, pos any) error {
	if s == "" {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	var t token
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	if err == nil {
		err = json.Unmarshal(t.Pos, pos)
	}
	if v, ok := pos.(interface{ valid() bool }); err == nil && ok && !v.valid() {
		err = errors.New("not a position a page ends at")
	}
	if err != nil {
		return badRequest("page_token", "is not a token this service issued")
	}
	if string(t.Scope) != string(scopeHash(scope)) {
		return badRequest("page_token", "belongs to a different query; send the same filter and order_by as the first page")
	}
	return nil
}

func badRequest(field, desc string) error {
	st, err := status.New(codes.InvalidArgument, fmt.Sprintf("%s: %s", field, desc)).WithDetails(
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: desc}}},
	)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "%s: %s", field, desc)
	}
	return st.Err()
}

// stateNames lets filters use the API's state names.
func parseStateName(s string) (order.State, error) {
	v, ok := omsv1.Order_State_value[s]
	if !ok || v == 0 {
		return 0, fmt.Errorf("unknown state %q", s)
	}
	return orderpb.StateFromProto(omsv1.Order_State(v)), nil
}
