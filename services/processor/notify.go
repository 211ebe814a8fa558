package main

import (
	"context"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/logging"
	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderapp"
	"github.com/omsdev/oms/pkg/orderpb"
	"github.com/omsdev/oms/pkg/queue"
	"github.com/omsdev/oms/pkg/tracing"
)

var eventIDSpace = uuid.MustParse("2c3b9d7e-0f5a-4e61-b2a4-7d8e9f1a0b3c")

// notifier makes "the order has been processed" for the outbox, written
// with the command's own change: the notification exists if and only if
// the change does.
type notifier struct{ queue string }

func (n notifier) entry(ctx context.Context, e order.Event) (*orderapp.Notification, error) {
	// Stable per history entry, so a relay resend is deduplicated by SQS.
	id := uuid.NewSHA1(eventIDSpace, []byte(e.OrderID+"/"+strconv.FormatInt(e.Seq, 10))).String()
	note := &omsv1.OrderNotification{
		EventId: id, OrderId: e.OrderID, Event: orderpb.Event(e),
		State: orderpb.State(e.To), Version: e.OrderVersion, CorrelationId: logging.CorrelationID(ctx),
	}
	body, err := orderpb.EncodeNotification(note)
	if err != nil {
		return nil, err
	}
	msg := message.NewMessage(id, body)
	msg.Metadata.Set(queue.MetaGroupID, e.OrderID)
	msg.Metadata.Set(queue.MetaDedupID, id)
	msg.Metadata.Set("event_type", string(e.Type))
	if c := note.CorrelationId; c != "" {
		middleware.SetCorrelationID(c, msg)
	}
	tracing.Inject(ctx, msg.Metadata) // consumers of notifications join the trace
	return &orderapp.Notification{ID: id, Destination: n.queue, GroupID: e.OrderID, Body: msg.Payload, Metadata: msg.Metadata}, nil
}
