package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/cenkalti/backoff/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/omsdev/oms/pkg/logging"
	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderapp"
	"github.com/omsdev/oms/pkg/orderpb"
	"github.com/omsdev/oms/pkg/orderstore"
	"github.com/omsdev/oms/pkg/queue"
	"github.com/omsdev/oms/pkg/tracing"
)

// permanentError fails the same way however often it is retried: the
// message goes to the dead-letter queue with this reason at once.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// pendingError waits for something that may still arrive (the order's
// create): retried, and dead-lettered with this reason only when the
// retries run out.
type pendingError struct{ err error }

func (e pendingError) Error() string { return e.err.Error() }
func (e pendingError) Unwrap() error { return e.err }

// stopsRetries reports whether retrying err is pointless.
func stopsRetries(err error) bool {
	var pe permanentError
	var panicked middleware.RecoveredPanicError
	return errors.As(err, &pe) || errors.As(err, &panicked)
}

// permanent is the dead-letter filter, seen after the retries: permanent
// failures, and pending ones whose retries ran out. Transient and
// operational failures are never dead-lettered here.
func permanent(err error) bool {
	var pending pendingError
	return stopsRetries(err) || errors.As(err, &pending)
}

// applier applies one command message.
type applier struct {
	app             *orderapp.Service
	acceptActorless bool
	// operational is told of failures that mean the deployment is wrong
	// (schema not migrated, privileges missing), to stop taking commands
	// until it is fixed.
	operational func(error)
	log         *slog.Logger
}

// handle decodes the command and applies it in one transaction. A business
// rejection is stored and acked like a success. Errors are permanent
// (undecodable, bad data, no such order: dead-lettered with the reason) or
// else retried, then left to SQS redelivery.
func (a *applier) handle(msg *message.Message) error {
	// The dead-letter queue is FIFO too: it needs a group even for a body
	// that names no order.
	msg.Metadata.Set(queue.MetaGroupID, "undecodable")
	// An older ingest sent JSON without a content type.
	cmd, err := orderpb.DecodeCommandAs(msg.Payload, msg.Metadata.Get(orderpb.ContentTypeKey))
	if err != nil {
		return permanentError{fmt.Errorf("message %s: %w", msg.UUID, err)}
	}
	msg.Metadata.Set(queue.MetaGroupID, cmd.OrderID)
	msg.Metadata.Set("command", string(cmd.Kind()))
	if cmd.Actor.ID == "" && !a.acceptActorless {
		// Only holders of SQS send rights could have put it there.
		return permanentError{fmt.Errorf("command %s has no actor: it was queued before principals existed or by something other than ingest (PROCESSOR_ACCEPT_ACTORLESS=true applies such commands while an upgrade drains them)", cmd.ID)}
	}
	if cmd.CorrelationID == "" {
		cmd.CorrelationID = middleware.MessageCorrelationID(msg)
	}
	// Continue the trace ingest started for the request.
	ctx, span := tracing.Tracer().Start(tracing.Extract(msg.Context(), msg.Metadata), "apply "+string(cmd.Kind()),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("oms.command_id", cmd.ID), attribute.String("oms.order_id", cmd.OrderID)))
	defer span.End()
	ctx = logging.WithCorrelationID(ctx, cmd.CorrelationID)
	// Each line names the command. Not Logger.With: that clones and
	// preformats a handler for every message, most of which log once.
	log := func(level slog.Level, msg string, attrs ...slog.Attr) {
		a.log.LogAttrs(ctx, level, msg, append([]slog.Attr{slog.String("command", string(cmd.Kind())),
			slog.String("command_id", cmd.ID), slog.String("order_id", cmd.OrderID)}, attrs...)...)
	}

	start := time.Now()
	res, err := a.app.Apply(ctx, cmd)
	applyDuration.WithLabelValues(string(cmd.Kind())).Observe(time.Since(start).Seconds())
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "apply failed")
	}
	switch {
	case err == nil:
	case msg.Context().Err() != nil:
		// Timed out or shutting down: says nothing about the command.
		return err
	default:
		class := orderstore.Classify(err)
		if class != orderstore.ClassOperational {
			// (An operational failure would fail this write the same way.)
			a.recordFailure(ctx, cmd, err, log)
		}
		switch class {
		case orderstore.ClassPermanent:
			return permanentError{err}
		case orderstore.ClassPending:
			// No such order yet: its create may still be in flight (left
			// there by a crash or an outage). Dead-lettered only when the
			// retries run out.
			log(slog.LevelWarn, "order not found yet; retrying", slog.Any("err", err))
			commandsTotal.WithLabelValues(string(cmd.Kind()), "retried").Inc()
			return pendingError{err}
		case orderstore.ClassOperational:
			log(slog.LevelError, "the database is not ready for this binary; retrying, never dead-lettering", slog.Any("err", err))
			commandsTotal.WithLabelValues(string(cmd.Kind()), "retried").Inc()
			if a.operational != nil {
				a.operational(err)
			}
			return err
		default:
			// Connection loss, serialization failure, a rolled-back
			// commit...: anything not known to be permanent is worth
			// another attempt.
			log(slog.LevelWarn, "transient failure", slog.Any("err", err))
			commandsTotal.WithLabelValues(string(cmd.Kind()), "retried").Inc()
			return err
		}
	}
	span.SetAttributes(attribute.String("oms.outcome", string(res.Outcome)))
	commandsTotal.WithLabelValues(string(cmd.Kind()), string(res.Outcome)).Inc()
	switch res.Outcome {
	case orderapp.Applied:
		log(slog.LevelInfo, "command applied", slog.String("state", res.Order.State.String()), slog.Int64("version", res.Order.Version))
	case orderapp.Rejected:
		log(slog.LevelInfo, "command rejected", slog.String("reason", res.Reason))
	case orderapp.Refused:
		// Not the actor's order: no trace on it; the outcome is the
		// command's own record.
		log(slog.LevelWarn, "command refused: the sender may not act on this order", slog.String("actor", cmd.Actor.ID))
	case orderapp.Duplicate:
		if res.Mismatch {
			log(slog.LevelWarn, "request id reused for a different command; ignored")
		} else {
			log(slog.LevelInfo, "duplicate delivery ignored")
		}
	}
	return nil
}

// recordFailure counts a failed attempt on the command's operation, which
// stays pending with the error's class, so its sender can see it is being
// retried and why. It never fails the message: the attempt's own error
// decides what happens to it, and a lost count is only a lost count. It
// runs within the attempt's deadline, so the retries' worst case, which
// the queue's visibility timeout must exceed, still holds.
func (a *applier) recordFailure(ctx context.Context, cmd order.Command, err error, log func(slog.Level, string, ...slog.Attr)) {
	if err := a.app.Failed(ctx, cmd, errorClass(err)); err != nil {
		log(slog.LevelWarn, "could not record the failed attempt on the command's operation", slog.Any("err", err))
	}
}

// errorClass names a failed attempt's error on its operation
// (CommandMetadata.last_error_class): the processor's classification,
// with the two failures a client can act on told apart.
func errorClass(err error) string {
	switch {
	case errors.Is(err, orderapp.ErrNotFound):
		return "not_found"
	case errors.Is(err, orderapp.ErrConflict), errors.Is(err, orderapp.ErrClaimed):
		return "conflict"
	}
	return orderstore.Classify(err).String()
}

// stopRetrying sits just inside Retry and ends the retries of a permanent
// error. (Retry's ShouldRetry hook would also work but advances the backoff
// an extra step per attempt, doubling the configured waits.)
func stopRetrying(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		if err != nil && stopsRetries(err) {
			return out, backoff.Permanent(err)
		}
		return out, err
	}
}
