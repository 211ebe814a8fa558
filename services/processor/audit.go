package main

// The dead-letter audit: a command that SQS itself moved to the
// dead-letter queue, because its receives ran out while processors kept
// crashing or timing out on it, never reached the poison path that records
// its outcome. Without the audit its operation would stay pending for
// ever, and its sender, who was answered 202, would never learn that it
// was not applied.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/omsdev/oms/pkg/logging"
	"github.com/omsdev/oms/pkg/metrics"
	"github.com/omsdev/oms/pkg/operation"
	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderapp"
	"github.com/omsdev/oms/pkg/orderpb"
	"github.com/omsdev/oms/pkg/orderstore"
	"github.com/omsdev/oms/pkg/queue"
)

var auditTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "oms_dead_letter_audit_total",
	Help: "Commands SQS dead-lettered on its own, by what the audit did: aborted (their pending operation recorded done ABORTED), settled (already done; left), failed (reading or writing the operation failed; tried again next round).",
}, []string{"outcome"})

func init() { metrics.Register(auditTotal) }

const (
	// auditRead bounds the messages one round looks at, as it does the
	// dlq tool's.
	auditRead = maxRead
	// auditWrites bounds the operations one round reads and writes; the
	// rest wait for the next round, which skips the ones settled.
	auditWrites = 100
	// auditHold is how long a round may hold messages in flight should it
	// never hand them back (the process dies). A round hands them back as
	// soon as it is done, normally within a second or two.
	auditHold = 30 * time.Second
)

// auditQueue is the part of the SQS client the audit uses.
type auditQueue interface {
	queue.DeadLetterAPI
	queue.AttributesAPI
}

// operationReader reads a command's operation.
type operationReader interface {
	GetOperation(ctx context.Context, id operation.Key) (*orderstore.Operation, error)
}

// deadLetterAudit gives every command SQS dead-lettered on its own an
// outcome: done ABORTED, through orderapp like the poison path's, so it
// stays Provisional and a redrive that applies the command replaces it.
// It only reads the dead-letter queue and hands every message back: it
// never deletes or moves one. Every processor runs one; two rounds at the
// same moment each see the messages the other is not holding, which is
// harmless.
type deadLetterAudit struct {
	sqs           auditQueue
	dlq, commands string // URLs
	app           *orderapp.Service
	ops           operationReader
	every         time.Duration
	log           *slog.Logger

	// settled are dead-letter message ids whose operation is done, seen in
	// recent rounds: a round does not look them up again, so a backlog of
	// more than auditWrites is worked through round after round.
	settled map[string]bool
}

// Run audits every interval until ctx ends, first after one interval (the
// queues were just looked up; nothing is urgent at start).
func (d *deadLetterAudit) Run(ctx context.Context) {
	t := time.NewTicker(d.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := d.round(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("dead-letter audit failed; trying again at the next interval", "err", err)
		}
	}
}

// auditResult counts what one round did.
type auditResult struct {
	Aborted, Settled, Failed int
	// More: the round stopped at auditWrites with messages left to look
	// at.
	More bool
}

// round looks at the dead-letter queue once.
func (d *deadLetterAudit) round(ctx context.Context) (auditResult, error) {
	var res auditResult
	msgs, err := queue.Peek(ctx, d.sqs, d.dlq, auditHold, auditRead)
	defer d.release(ctx, msgs)
	if err != nil {
		return res, err
	}
	reason := d.reason(ctx)
	seen := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		id := aws.ToString(m.MessageId)
		seen[id] = true
		if d.settled[id] {
			continue
		}
		// The poison path recorded this one's outcome before it
		// dead-lettered it.
		if _, ok := m.MessageAttributes[queue.AttrPoisonedAt]; ok {
			continue
		}
		// A message that is no command has no operation.
		cmd, err := orderpb.DecodeCommandAs([]byte(aws.ToString(m.Body)), stringAttrs(m)[orderpb.ContentTypeKey])
		if err != nil {
			continue
		}
		if res.Aborted+res.Settled+res.Failed == auditWrites {
			res.More = true
			break
		}
		aborted, err := d.abort(ctx, cmd, reason)
		lctx := logging.WithCorrelationID(ctx, cmd.CorrelationID)
		attrs := []any{"command", cmd.Kind(), "command_id", cmd.ID, "order_id", cmd.OrderID, "message_id", id}
		switch {
		case err != nil:
			res.Failed++
			auditTotal.WithLabelValues("failed").Inc()
			d.log.WarnContext(lctx, "could not record the outcome of a command SQS dead-lettered; trying again next round",
				append(attrs, "err", err)...)
		case aborted:
			res.Aborted++
			auditTotal.WithLabelValues("aborted").Inc()
			d.log.WarnContext(lctx, "command dead-lettered by SQS; its operation is now done ABORTED", append(attrs, "reason", reason)...)
		default:
			res.Settled++
			auditTotal.WithLabelValues("settled").Inc()
		}
		if err == nil {
			d.remember(id)
		}
	}
	// Forget what has left the queue, when the round saw all of it.
	if len(msgs) < auditRead {
		for id := range d.settled {
			if !seen[id] {
				delete(d.settled, id)
			}
		}
	}
	if res.Aborted > 0 || res.Failed > 0 || res.More {
		d.log.Info("dead-letter audit", "aborted", res.Aborted, "settled", res.Settled, "failed", res.Failed, "more", res.More)
	}
	return res, nil
}

func (d *deadLetterAudit) remember(id string) {
	if d.settled == nil {
		d.settled = map[string]bool{}
	}
	d.settled[id] = true
}

// abort records cmd's operation done ABORTED with reason unless it is done
// already, and says whether it did. A done operation is left as it is:
// a real outcome must stay, and a Provisional one was written by the
// poison path, whose reason (NOT_FOUND, say) is the more telling.
func (d *deadLetterAudit) abort(ctx context.Context, cmd order.Command, reason string) (bool, error) {
	op, err := d.ops.GetOperation(ctx, operation.KeyOf(cmd))
	switch {
	case errors.Is(err, orderstore.ErrNoOperation):
	case err != nil:
		return false, err
	case op.Done:
		return false, nil
	}
	// orderapp keeps any real outcome written in between.
	if err := d.app.GiveUp(ctx, cmd, errors.New(reason)); err != nil {
		return false, err
	}
	return true, nil
}

// reason is what an aborted operation says: the count comes from the
// command queue's redrive policy, which is what ran out.
func (d *deadLetterAudit) reason(ctx context.Context) string {
	const rest = " without an outcome: processors kept failing or timing out on it; an operator can redrive it"
	n, err := queue.MaxReceiveCount(ctx, d.sqs, d.commands)
	if err != nil || n == 0 {
		return "dead-lettered by SQS after repeated receives" + rest
	}
	return fmt.Sprintf("dead-lettered by SQS after %d receives (the command queue's maxReceiveCount)", n) + rest
}

// release hands the messages back at once, even when ctx has ended, so
// that the dlq tool and other processors see them.
func (d *deadLetterAudit) release(ctx context.Context, msgs []types.Message) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := queue.ReleaseAll(ctx, d.sqs, d.dlq, msgs); err != nil {
		d.log.Warn("dead-letter audit could not hand messages back; they reappear after the hold", "hold", auditHold, "err", err)
	}
}
