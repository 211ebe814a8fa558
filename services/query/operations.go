package main

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/longrunning/autogen/longrunningpb"
	"go.einride.tech/aip/filtering"
	"go.einride.tech/aip/filtering/exprs"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/changefeed"
	"github.com/omsdev/oms/pkg/operation"
	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderpb"
	"github.com/omsdev/oms/pkg/orderstore"
)

// operationDoneChannel is where migration 10 announces a command's
// outcome, as the hex of its operation's id, when it commits and its order
// is watched.
const operationDoneChannel = "oms_operation_done"

const (
	// waitMargin is kept back from the call's own deadline, so that a
	// wait that runs out answers with the pending operation (AIP-151: not
	// an error) before the client gives up on the call.
	waitMargin = 100 * time.Millisecond

	defaultOperationsPageSize = 50
	maxOperationsPageSize     = 500
)

// operationsService serves google.longrunning.Operations: the outcome of
// each command ingest accepted (AIP-151), from the operations table the
// processor writes in the command's own statement. An operation is the
// business of the principal that sent the command, and of staff: to anyone
// else it does not exist.
type operationsService struct {
	longrunningpb.UnimplementedOperationsServer
	store *orderstore.Store
	// secret is OPERATION_SECRET: it verifies the names ingest issued.
	secret []byte
	// tokens seals ListOperations' page tokens, as every list's.
	tokens *pageTokens
	// follow wakes WaitOperation when an outcome commits (follow.go); nil
	// only re-reads on the backstop's backoff.
	follow *follower
	// maxWait (QUERY_MAX_WAIT) is WaitOperation's default and longest wait.
	maxWait time.Duration
	// shutdown closes when the server begins to drain: waits end then,
	// with the operation as it is, so they do not hold the drain up.
	shutdown <-chan struct{}
	// slots bounds waits per process and per caller, as it bounds watches:
	// each holds a subscription and a registered watch. Nil: unbounded.
	slots *changes
}

// opRef is an operation name as the caller sent it, parsed.
type opRef struct {
	name string
	operation.Name
	// issued: the name was issued to the caller. Otherwise only staff may
	// see it, and only once it is recorded.
	issued bool
}

func (s *operationsService) GetOperation(ctx context.Context, req *longrunningpb.GetOperationRequest) (*longrunningpb.Operation, error) {
	caller, ref, err := s.parse(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return s.read(ctx, caller, ref)
}

// WaitOperation answers as soon as the operation is done, or with it still
// pending when the timeout (at most maxWait, and within the call's
// deadline) passes. An operation done already is one read. Otherwise the
// wait watches the operation's order, so that the outcome is announced,
// and re-reads on a backoff as well while it is pending: an outcome
// recorded without touching the order's row (a reused request key, a
// dead-lettered command, a create) may commit unannounced (follow.go).
func (s *operationsService) WaitOperation(ctx context.Context, req *longrunningpb.WaitOperationRequest) (*longrunningpb.Operation, error) {
	caller, ref, err := s.parse(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	wait := s.maxWait
	if t := req.Timeout; t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() < 0 {
			return nil, badRequest("timeout", "must be a duration of 0 or more, such as 5s")
		}
		wait = min(t.AsDuration(), s.maxWait)
	}
	if dl, ok := ctx.Deadline(); ok {
		wait = max(min(wait, time.Until(dl)-waitMargin), 0)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()

	op, err := s.read(ctx, caller, ref)
	if err != nil || op.Done || wait == 0 {
		return op, err
	}
	// A wait holds what a watch does: it counts against the same limits.
	if s.slots != nil {
		release, err := s.slots.acquire(caller.ID())
		if err != nil {
			return nil, err
		}
		defer release()
	}
	// Subscribe and watch, then read again: an outcome that commits after
	// the watch is announced to the subscription, not lost between the two.
	var events <-chan changefeed.Event
	var w *following
	if s.follow != nil {
		if w, err = s.follow.follow(ctx, operationDoneChannel, hex.EncodeToString(ref.Key[:]), ref.OrderID, wait); err != nil {
			return nil, watchError(ctx, err)
		}
		defer w.Close()
		events = w.C
	}
	var retry backstop
	backstopC := retry.after()
	for {
		op, err := s.read(ctx, caller, ref)
		if err != nil || op.Done {
			return op, err
		}
		select {
		case e, ok := <-events: // done, or notifications were lost: read again
			if !ok {
				events = nil
			} else if e.Lost {
				// The watch may be lost with the server (see WatchOrder).
				if err := w.renew(ctx); err != nil {
					return nil, watchError(ctx, err)
				}
			}
		case <-backstopC:
			backstopC = retry.after()
		case <-timer.C:
			return s.read(ctx, caller, ref)
		case <-s.shutdown:
			return s.read(ctx, caller, ref)
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
}

// orderFilter is ListOperations' one filter: order = "orders/{id}".
var orderFilter = func() *filtering.Declarations {
	d, err := filtering.NewDeclarations(filtering.DeclareStandardFunctions(), filtering.DeclareIdent("order", filtering.TypeString))
	if err != nil {
		panic(err)
	}
	return d
}()

const filterHelp = `must be order = "orders/{order_id}": operations are listed one order at a time`

// ListOperations lists one order's operations that the caller may see,
// oldest first.
func (s *operationsService) ListOperations(ctx context.Context, req *longrunningpb.ListOperationsRequest) (*longrunningpb.ListOperationsResponse, error) {
	caller, ok := auth.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no authenticated caller")
	}
	if req.Name != "" && req.Name != "operations" {
		return nil, badRequest("name", `must be "operations" (or empty)`)
	}
	if err := filterSize(req.Filter); err != nil {
		return nil, badRequest("filter", err.Error())
	}
	f, err := filtering.ParseFilter(req, orderFilter)
	if err != nil {
		return nil, badRequest("filter", fmt.Sprintf("%v; %s", err, filterHelp))
	}
	var value string
	if f.CheckedExpr == nil || !exprs.MatchFunction(filtering.FunctionEquals, exprs.MatchText("order"), exprs.MatchAnyString(&value))(f.CheckedExpr.GetExpr()) {
		return nil, badRequest("filter", filterHelp)
	}
	orderID, err := orderpb.ParseName(value)
	if err != nil {
		return nil, badRequest("filter", err.Error())
	}
	size := defaultOperationsPageSize
	switch n := int(req.PageSize); {
	case n < 0:
		return nil, badRequest("page_size", "must not be negative")
	case n > 0:
		size = min(n, maxOperationsPageSize)
	}
	q := orderstore.OperationQuery{OrderID: orderID, Limit: size + 1}
	if !caller.AllOrders() {
		q.Principal = caller.ID()
	}
	if req.PageToken != "" {
		pos, err := s.tokens.open(tokenListOperations, req, caller.ID())
		if err != nil {
			return nil, err
		}
		var ok bool
		if q.After, ok = decodeOperationPosition(pos); !ok {
			return nil, errTokenNotIssued
		}
	}
	ops, err := s.store.ListOperations(ctx, q)
	if err != nil {
		return nil, storeError(err)
	}
	resp := &longrunningpb.ListOperationsResponse{}
	if len(ops) > size {
		ops = ops[:size]
		last := ops[size-1]
		resp.NextPageToken = s.tokens.seal(tokenListOperations, req, caller.ID(), operationPosition(orderstore.OperationCursor{AcceptTime: last.AcceptTime, ID: last.ID}))
	}
	// Every operation in the page is of the same order: the order now is
	// read once for all those that were applied.
	var current *omsv1.Order
	for _, row := range ops {
		if row.Done && codes.Code(row.Code) == codes.OK && current == nil {
			if current, err = s.order(ctx, caller, row.OrderID); err != nil {
				return nil, err
			}
		}
		name, err := operation.Format(s.secret, row.Principal, operation.Name{OrderID: row.OrderID, Kind: order.Kind(row.Command), Key: row.ID})
		if err != nil {
			return nil, fmt.Errorf("name operation %x: %w", row.ID, err)
		}
		op, err := render(name, &row, current)
		if err != nil {
			return nil, err
		}
		resp.Operations = append(resp.Operations, op)
	}
	return resp, nil
}

// parse reads an operation name for the caller: INVALID_ARGUMENT when it
// is not one at all; one issued to someone else, or altered, is kept for
// staff to look up (read decides).
func (s *operationsService) parse(ctx context.Context, name string) (auth.Principal, opRef, error) {
	caller, ok := auth.FromContext(ctx)
	if !ok {
		return caller, opRef{}, status.Error(codes.Unauthenticated, "no authenticated caller")
	}
	n, err := operation.Parse(s.secret, caller.ID(), name)
	switch {
	case errors.Is(err, operation.ErrMalformed):
		return caller, opRef{}, badRequest("name", err.Error())
	case errors.Is(err, operation.ErrNotIssued):
		return caller, opRef{name: name, Name: n}, nil
	case err != nil:
		return caller, opRef{}, err
	}
	return caller, opRef{name: name, Name: n, issued: true}, nil
}

func notFound(name string) error {
	return status.Errorf(codes.NotFound, "operation %s not found", name)
}

// read returns the operation as recorded, or pending (queued, not yet
// tried) when nothing is recorded for a name issued to the caller.
func (s *operationsService) read(ctx context.Context, caller auth.Principal, ref opRef) (*longrunningpb.Operation, error) {
	row, err := s.store.GetOperation(ctx, ref.Key)
	switch {
	case errors.Is(err, orderstore.ErrNoOperation):
		if !ref.issued {
			return nil, notFound(ref.name)
		}
		return render(ref.name, &orderstore.Operation{OrderID: ref.OrderID, Command: string(ref.Kind)}, nil)
	case err != nil:
		return nil, storeError(err)
	}
	// The key is a hash of the principal and the request, so a record
	// under a name's key is that name's; staff, who cannot verify a name
	// issued to another, get a record only if it says what the name says.
	mine := ref.issued && row.Principal == caller.ID()
	if !mine && !(caller.AllOrders() && row.OrderID == ref.OrderID && row.Command == string(ref.Kind)) {
		return nil, notFound(ref.name)
	}
	var current *omsv1.Order
	if row.Done && codes.Code(row.Code) == codes.OK {
		if current, err = s.order(ctx, caller, row.OrderID); err != nil {
			return nil, err
		}
	}
	return render(ref.name, row, current)
}

// order reads the order now, as GetOrder would for the caller: an applied
// command's principal may see its order, and so may staff.
func (s *operationsService) order(ctx context.Context, caller auth.Principal, id string) (*omsv1.Order, error) {
	o, err := s.store.Get(ctx, id, nil, caller.Actor())
	if errors.Is(err, orderstore.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "order %s not found", orderpb.Name(id))
	}
	if err != nil {
		return nil, storeError(err)
	}
	return orderpb.Order(o), nil
}

// render is the operation of a record: done with the order (its state now,
// which may be later than order_version) when the command was applied,
// done with a google.rpc.Status when it was not, and otherwise pending
// with its progress as metadata.
func render(name string, row *orderstore.Operation, current *omsv1.Order) (*longrunningpb.Operation, error) {
	md := &omsv1.CommandMetadata{
		Order:          orderpb.Name(row.OrderID),
		Command:        row.Command,
		CommandId:      row.CommandID,
		Attempts:       row.Attempts,
		LastErrorClass: row.ErrorClass,
		AcceptTime:     timestamp(row.AcceptTime),
		UpdateTime:     timestamp(row.UpdateTime),
		OrderVersion:   row.OrderVersion,
	}
	meta, err := anypb.New(md)
	if err != nil {
		return nil, err
	}
	op := &longrunningpb.Operation{Name: name, Metadata: meta, Done: row.Done}
	switch {
	case !row.Done:
	case codes.Code(row.Code) == codes.OK:
		resp, err := anypb.New(current)
		if err != nil {
			return nil, err
		}
		op.Result = &longrunningpb.Operation_Response{Response: resp}
	default:
		op.Result = &longrunningpb.Operation_Error{Error: &rpcstatus.Status{Code: row.Code, Message: row.Message}}
	}
	return op, nil
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// operationPosition is where a page of operations ended: the keyset
// cursor, sealed in a page token like every list's (pagetoken.go).
func operationPosition(c orderstore.OperationCursor) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(c.AcceptTime.UnixMicro()))
	return append(b, c.ID[:]...)
}

func decodeOperationPosition(b []byte) (*orderstore.OperationCursor, bool) {
	if len(b) != 8+len(operation.Key{}) {
		return nil, false
	}
	c := &orderstore.OperationCursor{AcceptTime: time.UnixMicro(int64(binary.BigEndian.Uint64(b))).UTC()}
	copy(c.ID[:], b[8:])
	return c, inTimestampRange(c.AcceptTime)
}
