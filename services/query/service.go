package main

import (
	"context"
	"errors"
	"fmt"

	"go.einride.tech/aip/ordering"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/auth"
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
	// tokens signs the page tokens of both lists (pagetoken.go).
	tokens *pageTokens
	// changes serves WatchOrder and min_version (watch.go); nil in tests
	// of the other methods.
	changes *changes
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
	if req.MinVersion != 0 {
		return s.getMinVersion(ctx, req, id, mask, actor)
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
	var q orderstore.ListQuery
	if q.Where, err = parseFilter(req.Filter); err != nil {
		return nil, badRequest("filter", err.Error())
	}
	if q.Ascending, err = parseOrderBy(req); err != nil {
		return nil, err
	}
	mask, err := parseMask(req.ReadMask)
	if err != nil {
		return nil, badRequest("read_mask", err.Error())
	}
	tokens := s.pageTokens()
	if req.PageToken != "" {
		b, err := tokens.open(tokenListOrders, req, actor.ID)
		if err != nil {
			return nil, err
		}
		pos, ok := decodeListPosition(b)
		if !ok {
			return nil, errTokenNotIssued
		}
		q.After = &orderstore.Cursor{CreateTime: pos.CreateTime, ID: pos.ID}
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
			resp.NextPageToken = tokens.seal(tokenListOrders, req, actor.ID, listPosition{CreateTime: last.CreateTime, ID: last.ID}.encode())
			break
		}
		resp.Orders = append(resp.Orders, p)
	}
	return resp, nil
}

// parseOrderBy reads order_by (AIP-132): create_time, newest first unless
// asked for "create_time asc" (or "create_time", ascending as AIP-132
// has it).
func parseOrderBy(req *omsv1.ListOrdersRequest) (ascending bool, err error) {
	const want = `must be "create_time desc" (the default) or "create_time asc"`
	ob, err := ordering.ParseOrderBy(req)
	if err != nil {
		return false, badRequest("order_by", want)
	}
	if err := ob.ValidateForPaths("create_time"); err != nil {
		return false, badRequest("order_by", fmt.Sprintf("%v; %s", err, want))
	}
	switch len(ob.Fields) {
	case 0:
		return false, nil
	case 1:
		return !ob.Fields[0].Desc, nil
	}
	return false, badRequest("order_by", want)
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
	tokens := s.pageTokens()
	var afterSeq int64
	if req.PageToken != "" {
		b, err := tokens.open(tokenListOrderEvents, req, actor.ID)
		if err != nil {
			return nil, err
		}
		var ok bool
		if afterSeq, ok = decodeSeq(b); !ok {
			return nil, errTokenNotIssued
		}
	}
	evs, err := s.store.Events(ctx, id, afterSeq, size+1, actor)
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
			resp.NextPageToken = tokens.seal(tokenListOrderEvents, req, actor.ID, encodeSeq(evs[i-1].Seq))
			break
		}
		resp.Events = append(resp.Events, p)
	}
	return resp, nil
}

// pageTokens signs and reads page tokens; a service built without a key
// (as tests build it) uses this process's random one.
func (s *queryService) pageTokens() *pageTokens {
	if s.tokens != nil {
		return s.tokens
	}
	return newPageTokens(randomTokenKey())
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

func badRequest(field, desc string) error {
	st, err := status.New(codes.InvalidArgument, fmt.Sprintf("%s: %s", field, desc)).WithDetails(
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: desc}}},
	)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "%s: %s", field, desc)
	}
	return st.Err()
}
