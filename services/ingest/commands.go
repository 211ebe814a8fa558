package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/logging"
	"github.com/omsdev/oms/pkg/metrics"
	"github.com/omsdev/oms/pkg/operation"
	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderpb"
	"github.com/omsdev/oms/pkg/queue"
	"github.com/omsdev/oms/pkg/tracing"
)

var (
	enqueued = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oms_enqueue_total", Help: "Commands put on the command queue, by outcome (ok, error).",
	}, []string{"outcome"})
	enqueueDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "oms_enqueue_duration_seconds", Help: "Time until SQS confirmed a command, batching included.",
		Buckets: prometheus.DefBuckets,
	})
)

func init() { metrics.Register(enqueued, enqueueDuration) }

// errorDomain is the ErrorInfo domain of this API's errors (AIP-193).
const errorDomain = "oms.omsdev.github.io"

// orderIDSpace and the server's secret derive an order id from a create's
// caller and request id: a retried create without an order_id names the
// same order, and nobody without the secret can predict the id.
var orderIDSpace = uuid.MustParse("8f0b6c52-5a7e-4f4c-9d0e-3c1f2a6b7d90")

// orderID is a version-8 UUID: HMAC-SHA256 of the actor and request id
// under the server secret.
func orderID(secret []byte, actor order.Actor, requestID string) string {
	return uuid.NewHash(hmac.New(sha256.New, secret), orderIDSpace, []byte(actor.ID+"\x00"+requestID), 8).String()
}

// commandService is the gRPC port: it turns requests into domain commands,
// validates them with the domain's rules and enqueues them.
type commandService struct {
	omsv1.UnimplementedOrderCommandServiceServer
	pub   message.Publisher
	queue string
	// encoding is the content type of command bodies.
	encoding string
	timeout  time.Duration
	idSecret []byte
	// opSecret signs the operation names acceptances carry.
	opSecret []byte
	log      *slog.Logger
}

func (s *commandService) CreateOrder(ctx context.Context, req *omsv1.CreateOrderRequest) (*omsv1.CommandAcceptance, error) {
	actor, err := auth.ActorFromContext(ctx)
	if err != nil {
		return nil, err
	}
	var vs []order.FieldViolation
	reqID, generated, v := requestID(ctx, req.RequestId)
	vs = append(vs, v...)
	var id string
	switch {
	case req.OrderId != "" && !actor.AllOrders:
		// A chosen id would tell its sender whether someone else's order
		// has it, and queue commands in that order's group.
		return nil, status.Error(codes.PermissionDenied, "order_id: only staff clients choose order ids; leave it empty and the id is derived from your request id")
	case req.OrderId != "":
		var err error
		if id, err = order.ParseID(req.OrderId); err != nil {
			vs = append(vs, order.FieldViolation{Field: "order_id", Description: err.Error()})
		}
	case !generated:
		id = orderID(s.idSecret, actor, reqID)
	default:
		id = uuid.NewString()
	}
	if req.Order == nil {
		vs = append(vs, order.FieldViolation{Field: "order", Description: "is required"})
	}
	body := orderpb.CreateBody(req.Order)
	if actor.CustomerID != "" && !actor.AllOrders {
		// A customer orders for itself: an empty customer_id is its own,
		// another one is refused.
		switch body.CustomerID {
		case "":
			body.CustomerID = actor.CustomerID
		case actor.CustomerID:
		default:
			return nil, status.Error(codes.PermissionDenied, "order.customer_id: a customer can only create orders for itself; leave it empty or send your own id")
		}
	}
	if req.Order != nil {
		vs = append(vs, violations(order.Validate(body), "order.")...)
	}
	return s.enqueue(ctx, vs, order.Command{ID: reqID, OrderID: id, Actor: actor, Body: body}, generated)
}

func (s *commandService) PayOrder(ctx context.Context, req *omsv1.PayOrderRequest) (*omsv1.CommandAcceptance, error) {
	return s.change(ctx, req.Name, req.RequestId, order.PayOrder{Reference: req.PaymentReference, AmountMinor: req.AmountMinor})
}

func (s *commandService) ShipOrder(ctx context.Context, req *omsv1.ShipOrderRequest) (*omsv1.CommandAcceptance, error) {
	return s.change(ctx, req.Name, req.RequestId, order.ShipOrder{Carrier: req.Carrier, TrackingNumber: req.TrackingNumber})
}

func (s *commandService) DeliverOrder(ctx context.Context, req *omsv1.DeliverOrderRequest) (*omsv1.CommandAcceptance, error) {
	return s.change(ctx, req.Name, req.RequestId, order.DeliverOrder{})
}

func (s *commandService) CancelOrder(ctx context.Context, req *omsv1.CancelOrderRequest) (*omsv1.CommandAcceptance, error) {
	return s.change(ctx, req.Name, req.RequestId, order.CancelOrder{Reason: req.Reason})
}

// change handles the custom methods on an existing order. Whether the
// transition is legal depends on the order's state when the command is
// applied, so it is decided by the processor, not here.
func (s *commandService) change(ctx context.Context, name, reqField string, body order.Body) (*omsv1.CommandAcceptance, error) {
	actor, err := auth.ActorFromContext(ctx)
	if err != nil {
		return nil, err
	}
	reqID, generated, vs := requestID(ctx, reqField)
	id, err := orderpb.ParseName(name)
	if err != nil {
		vs = append(vs, order.FieldViolation{Field: "name", Description: err.Error()})
	}
	vs = append(vs, violations(order.Validate(body), "")...)
	return s.enqueue(ctx, vs, order.Command{ID: reqID, OrderID: id, Actor: actor, Body: body}, generated)
}

func (s *commandService) enqueue(ctx context.Context, vs []order.FieldViolation, cmd order.Command, generated bool) (*omsv1.CommandAcceptance, error) {
	if len(vs) > 0 {
		return nil, invalid(vs)
	}
	cmd.IssueTime = time.Now().UTC()
	cmd.CorrelationID = logging.CorrelationID(ctx)
	// Named before anything is stored: a retry names the same operation,
	// and the query service answers for it even while it is still queued.
	op, err := operation.For(s.opSecret, cmd)
	if err != nil {
		return nil, fmt.Errorf("name the operation: %w", err)
	}
	body, err := orderpb.EncodeCommandAs(cmd, s.encoding)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	msg := message.NewMessage(cmd.ID, body)
	msg.Metadata.Set(orderpb.ContentTypeKey, s.encoding)
	msg.Metadata.Set(queue.MetaGroupID, cmd.OrderID)
	msg.Metadata.Set(queue.MetaDedupID, dedupID(cmd))
	msg.Metadata.Set("command", string(cmd.Kind()))
	middleware.SetCorrelationID(cmd.CorrelationID, msg)
	tracing.Inject(ctx, msg.Metadata) // the processor continues this trace
	pctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	msg.SetContext(pctx)

	start := time.Now()
	err = s.pub.Publish(s.queue, msg)
	enqueueDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		enqueued.WithLabelValues("error").Inc()
		s.log.ErrorContext(ctx, "enqueue failed", "command_id", cmd.ID, "order_id", cmd.OrderID, "err", err)
		var se *queue.SendError
		if errors.As(err, &se) && se.SenderFault {
			return nil, status.Error(codes.InvalidArgument, "the command queue refused the command: "+se.Message)
		}
		return nil, status.Error(codes.Unavailable, "the command queue is unavailable; retry with the same request id")
	}
	enqueued.WithLabelValues("ok").Inc()
	s.log.InfoContext(ctx, "command accepted", "command", cmd.Kind(), "command_id", cmd.ID, "order_id", cmd.OrderID)
	return &omsv1.CommandAcceptance{
		Name:               orderpb.Name(cmd.OrderID),
		CommandId:          cmd.ID,
		AcceptTime:         timestamppb.New(cmd.IssueTime),
		RequestIdGenerated: generated,
		Operation:          op,
	}, nil
}

// dedupID is the SQS MessageDeduplicationId: the actor, the request id and
// what the request asks for. A retry deduplicates; the same key from
// another caller, or reused for a different request, is not silently
// dropped by SQS but reaches the processor, which keeps keys per caller.
func dedupID(cmd order.Command) string {
	h := sha256.New()
	h.Write([]byte(cmd.Actor.ID))
	h.Write([]byte{0})
	h.Write([]byte(cmd.ID))
	h.Write([]byte{0})
	h.Write(cmd.Fingerprint())
	return hex.EncodeToString(h.Sum(nil))
}

// requestID returns the idempotency key from the request field or the
// Idempotency-Key header (they must agree when both are sent), or a new
// one, reported as generated.
func requestID(ctx context.Context, field string) (string, bool, []order.FieldViolation) {
	header := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("idempotency-key"); len(v) > 0 {
			header = v[0]
		}
	}
	id := field
	switch {
	case field != "" && header != "" && field != header:
		return "", false, []order.FieldViolation{{Field: "request_id", Description: "differs from the Idempotency-Key header"}}
	case id == "":
		id = header
	}
	if id == "" {
		return uuid.NewString(), true, nil
	}
	if err := order.ValidateRequestID(id); err != nil {
		return "", false, []order.FieldViolation{{Field: "request_id", Description: err.Error()}}
	}
	return id, false, nil
}

func violations(err error, prefix string) []order.FieldViolation {
	var ve *order.ValidationError
	if errors.As(err, &ve) {
		return ve.Prefixed(prefix).Violations
	}
	return nil
}

// invalid is INVALID_ARGUMENT with a BadRequest listing every field.
func invalid(vs []order.FieldViolation) error {
	br := &errdetails.BadRequest{}
	for _, v := range vs {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Description})
	}
	st := status.New(codes.InvalidArgument, (&order.ValidationError{Violations: vs}).Error())
	st, err := st.WithDetails(br, &errdetails.ErrorInfo{Reason: "INVALID_COMMAND", Domain: errorDomain})
	if err != nil {
		return status.Error(codes.InvalidArgument, (&order.ValidationError{Violations: vs}).Error())
	}
	return st.Err()
}

// acceptedStatus makes the gateway answer 202 Accepted for commands: they
// are queued, not yet applied. Location is where their outcome will be:
// on the query service, at operationsURL (INGEST_OPERATIONS_URL); without
// one there is no Location, only the operation's name in the body.
func acceptedStatus(operationsURL string) func(context.Context, http.ResponseWriter, proto.Message) error {
	return func(ctx context.Context, w http.ResponseWriter, m proto.Message) error {
		if a, ok := m.(*omsv1.CommandAcceptance); ok {
			if a.Operation != "" && operationsURL != "" {
				w.Header().Set("Location", operationsURL+"/v1/"+a.Operation)
			}
			w.WriteHeader(http.StatusAccepted)
		}
		return nil
	}
}
