// Package orderapp applies order commands: the application layer between
// the processor's queue handler and the order repository. A command is
// applied exactly once: the service reads what deciding it needs (one
// round trip), decides with the domain (package order), and hands the
// repository one Change that it writes atomically (one round trip) or not
// at all. The policy lives here: idempotency per actor, reused keys,
// authorization, how much of a rejection the history records, and what
// each command's operation (AIP-151) tells its sender. The repository only
// persists.
package orderapp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/omsdev/oms/pkg/operation"
	"github.com/omsdev/oms/pkg/order"
)

var (
	// ErrNotFound: a command other than create for an order that does not
	// exist (yet: its create may still be in flight).
	ErrNotFound = errors.New("order not found")
	// ErrConflict: the order changed between the read and the write (the
	// version guard failed, or a concurrent create won). Applying again
	// is safe.
	ErrConflict = errors.New("order changed concurrently")
	// ErrClaimed: the command's id was claimed between the read and the
	// write, by a concurrent delivery of it (or a reused key). Applying
	// again finds the claim.
	ErrClaimed = errors.New("command claimed concurrently")
)

// Outcome says what processing a command did.
type Outcome string

const (
	Applied  Outcome = "applied"
	Rejected Outcome = "rejected"
	// Refused: the command's actor may not touch the order. Nothing was
	// written to the order or its history; only the command's own record
	// (scoped to its actor) says so.
	Refused Outcome = "refused"
	// Duplicate: the command id was processed before; nothing changed.
	Duplicate Outcome = "duplicate"
)

// Result describes a processed command.
type Result struct {
	Outcome Outcome
	// Order is the order after the command; nil for duplicates, refusals
	// and rejections of commands on orders that do not exist.
	Order *order.Order
	// Event is the history entry written; zero (Seq 0) when none was: for
	// duplicates, refusals, and a rejection already recorded for the
	// order's version.
	Event order.Event
	// Reason is why the command was rejected or refused: for duplicates,
	// the original reason.
	Reason string
	// Mismatch is set on a duplicate whose request differs from the one
	// first processed under that id: a reused idempotency key.
	Mismatch bool
}

// Record is a processed command's record: its idempotency claim, keyed by
// (Principal, CommandID), and its outcome.
type Record struct {
	Principal, CommandID, OrderID string
	Command                       order.Kind
	Outcome                       Outcome
	Reason                        string
	// Fingerprint identifies what the command asked for, to tell a
	// redelivery from a reused key.
	Fingerprint []byte
	ProcessedAt time.Time
}

// Snapshot is what deciding a command needs, read in one round trip.
type Snapshot struct {
	// Order is nil when there is none.
	Order *order.Order
	// Version is the order's version and history length, the guard of
	// any write to it.
	Version Version
	// Prior is the command's record if its (actor, id) was processed
	// before.
	Prior *Record
	// RejectionRecorded: the history already holds a rejection of a
	// command of this kind at the order's version, or one of this very
	// command. (See Service.recordable.)
	RejectionRecorded bool
}

// Version guards a write to an existing order.
type Version struct {
	Version, LastSeq int64
}

// Change is everything one command writes, atomically: all of it or none.
type Change struct {
	// OrderID is the order the command names.
	OrderID string
	// Claim is the command's record; nil when it has one already (a reused
	// key being reported).
	Claim *Record
	// Expect guards an existing order: nothing is written unless it is
	// still at this version and history length. Nil for a new order.
	Expect *Version
	// Create is a new order, with its lines; Update an existing order's
	// new state. At most one is set.
	Create, Update *order.Order
	// Event is appended to the order's history (its Seq set), by Actor.
	Event *order.Event
	Actor string
	// Notification is written to the outbox, relayed after commit.
	Notification *Notification
	// Operation is the command's outcome for its sender. It is written
	// with the rest, over a pending record of it or one that is
	// Provisional; a Change may carry only this.
	Operation *Operation
}

// Operation is a command's record as a long-running operation (AIP-151),
// under operation.KeyOf the command: the query service serves it to the
// command's sender by the name ingest answered with.
type Operation struct {
	ID                            operation.Key
	Principal, CommandID, OrderID string
	Command                       order.Kind
	// Done with Code OK when the command was applied, else with the code
	// and Message saying why not. Not done: it failed and is retried.
	Done    bool
	Code    codes.Code
	Message string
	// ErrorClass is a failed attempt's class of error (transient,
	// not_found, ...); the record keeps the last one.
	ErrorClass string
	// Attempts is how many processing attempts this write adds to the
	// record's count: one per attempt, none for giving up.
	Attempts int32
	// OrderVersion is the order's version after the command, which GetOrder
	// min_version waits for; 0 when it would tell the sender about an
	// order it may not see.
	OrderVersion int64
	// AcceptTime is when ingest accepted the command.
	AcceptTime, UpdateTime time.Time
}

// Provisional are the codes of done operations that a later attempt at the
// command may still overwrite with its real outcome: the dead-letter
// path's. A redriven dead letter is applied after all, and its operation
// must not keep saying otherwise. Every other done operation was written
// with the command's claim, so the command is never applied again.
var Provisional = []codes.Code{codes.Aborted, codes.NotFound}

// Notification is a message for the transactional outbox: it exists if
// and only if the change it reports does.
type Notification struct {
	// ID is the message's id, stable per history entry so that a resend
	// is deduplicated.
	ID string
	// Destination is the queue it goes to, GroupID its FIFO group: a
	// group's messages are relayed one at a time, in the order written.
	Destination, GroupID string
	Body                 []byte
	Metadata             map[string]string
}

// Repository stores orders and command records.
type Repository interface {
	// Load reads the snapshot cmd is decided on.
	Load(ctx context.Context, cmd order.Command) (Snapshot, error)
	// Save writes c atomically. It fails with ErrConflict when the order
	// is not as Expect says (or a create finds one), and with ErrClaimed
	// when the claim exists already; then nothing is written.
	Save(ctx context.Context, c Change) error
	// SaveAttempt records a failed attempt on a command's operation, which
	// stays pending: it adds op.Attempts and keeps op's ErrorClass and
	// UpdateTime. A done operation is left as it is.
	SaveAttempt(ctx context.Context, op Operation) error
}

// Notifier is the "order processed" notification for a history entry, or
// nil for none.
type Notifier func(ctx context.Context, e order.Event) (*Notification, error)

// Service applies commands.
type Service struct {
	repo   Repository
	notify Notifier
	now    func() time.Time
}

// New returns a Service. notify may be nil.
func New(repo Repository, notify Notifier) *Service {
	return &Service{repo: repo, notify: notify, now: func() time.Time {
		// PostgreSQL keeps microseconds; keyset cursors must compare equal.
		return time.Now().UTC().Truncate(time.Microsecond)
	}}
}

// attempts bounds how often Apply reads and decides again after losing a
// race: a second delivery of the command or a concurrent change of the
// order.
const attempts = 3

// Apply processes cmd exactly once. A business rejection is not an error:
// it is stored and reported as Outcome Rejected. Errors are the
// repository's, ErrConflict after repeated races, or ErrNotFound for a
// non-create command on an order that does not exist.
func (s *Service) Apply(ctx context.Context, cmd order.Command) (res Result, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("apply command %s (%s) to order %s: %w", cmd.ID, cmd.Kind(), cmd.OrderID, err)
		}
	}()
	// A create usually names an order that does not exist yet, sent for
	// the first time: it is decided on that assumption and written in one
	// round trip. If the order or the claim exists after all, the write
	// fails on its key, and the create is decided again on what is there.
	if cmd.Kind() == order.KindCreate {
		res, err = s.apply(ctx, cmd, true)
		if !raced(err) || ctx.Err() != nil {
			return res, err
		}
	}
	for i := 1; ; i++ {
		res, err = s.apply(ctx, cmd, false)
		if !raced(err) || i == attempts || ctx.Err() != nil {
			return res, err
		}
	}
}

// raced: the write lost a race with another; deciding again is safe.
func raced(err error) bool { return errors.Is(err, ErrConflict) || errors.Is(err, ErrClaimed) }

func (s *Service) apply(ctx context.Context, cmd order.Command, assumeNew bool) (Result, error) {
	var snap Snapshot
	if !assumeNew {
		var err error
		if snap, err = s.repo.Load(ctx, cmd); err != nil {
			return Result{}, err
		}
	}
	now := s.now()
	fp := cmd.Fingerprint()
	if snap.Prior != nil {
		return s.duplicate(ctx, cmd, snap, fp, now)
	}
	cur := snap.Order
	if cur == nil && cmd.Kind() != order.KindCreate {
		return Result{}, ErrNotFound
	}
	// The claim makes the command's effect happen once: ids are per
	// actor, so the same key from two callers never collides.
	claim := &Record{
		Principal: cmd.Actor.ID, CommandID: cmd.ID, OrderID: cmd.OrderID, Command: cmd.Kind(),
		Outcome: Applied, Fingerprint: fp, ProcessedAt: now,
	}
	ch := Change{OrderID: cmd.OrderID, Claim: claim, Expect: expect(snap)}
	if err := order.Authorize(cur, cmd); err != nil {
		claim.Outcome, claim.Reason = Refused, err.Error()
		// Answered as a read of the order would be: the operation tells
		// the sender nothing GetOrder would not.
		ch.Operation = done(cmd, now, codes.NotFound, notFoundMessage(cmd.OrderID), nil)
		return Result{Outcome: Refused, Reason: err.Error()}, s.repo.Save(ctx, ch)
	}

	d := order.Decide(cur, cmd, now)
	res := Result{Outcome: Applied, Order: d.Order}
	if res.Order == nil {
		res.Order = cur
	}
	if d.Err != nil {
		res.Outcome, res.Reason = Rejected, d.Err.Error()
		claim.Outcome, claim.Reason = Rejected, res.Reason
		ch.Operation = done(cmd, now, codes.FailedPrecondition, res.Reason, res.Order)
		if !recordable(snap) {
			return res, s.repo.Save(ctx, ch)
		}
	} else {
		ch.Operation = done(cmd, now, codes.OK, "", res.Order)
	}
	switch {
	case d.Order != nil && cur == nil:
		ch.Create = d.Order
	case d.Order != nil:
		ch.Update = d.Order
	}
	res.Event = d.Event
	return res, s.record(ctx, cmd, ch, &res, snap.Version.LastSeq+1)
}

// recordable bounds what rejections add to an order's history: a
// command's rejection is recorded at most once, and at most one rejection
// per command kind for each version of the order. An owner repeating a
// rejected command (with new keys each time) adds nothing more; its
// outcome stays in the command's own record. With five kinds and at most
// five versions, a history has a fixed upper size.
func recordable(snap Snapshot) bool {
	return snap.Order == nil || !snap.RejectionRecorded // a rejected create is a new REJECTED order
}

// duplicate handles a command id seen before. A plain redelivery changes
// nothing. A reused id carrying a different request is not applied either,
// but the client was told "accepted", so the order's history records the
// refusal, once.
func (s *Service) duplicate(ctx context.Context, cmd order.Command, snap Snapshot, fp []byte, now time.Time) (Result, error) {
	prior := snap.Prior
	res := Result{Outcome: Duplicate, Reason: prior.Reason, Mismatch: !bytes.Equal(prior.Fingerprint, fp)}
	if !res.Mismatch {
		// A redelivery: its operation was written with its claim.
		return res, nil
	}
	refusal := &order.PreconditionError{Reason: fmt.Sprintf(
		"request id %s was already used for a different request; this one was not applied", cmd.ID)}
	// The reused key's own operation says so, always: the sender was told
	// "accepted" and has no other way to learn that nothing happened. The
	// key is the sender's, so this tells it nothing about the order.
	cur := snap.Order
	opOnly := Change{OrderID: cmd.OrderID, Operation: done(cmd, now, codes.AlreadyExists, refusal.Reason, nil)}
	// Only the actor's own orders hear about its reused key.
	if order.Authorize(cur, cmd) != nil {
		return res, s.repo.Save(ctx, opOnly)
	}
	ch := Change{OrderID: cmd.OrderID, Expect: expect(snap), Operation: opOnly.Operation}
	if cur != nil {
		if !recordable(snap) {
			return res, s.repo.Save(ctx, opOnly)
		}
		res.Order = cur
		res.Event = order.Event{
			Type: order.EventCommandRejected, From: cur.State, To: cur.State, CommandID: cmd.ID, Command: cmd.Kind(),
			Reason: refusal.Reason, OccurTime: now, OrderVersion: cur.Version,
		}
	} else {
		// A create naming a new order: without a record the order would be
		// a 404 forever. It becomes a REJECTED order saying why.
		create, ok := cmd.Body.(order.CreateOrder)
		if !ok {
			return res, s.repo.Save(ctx, opOnly) // no order to record it on
		}
		d := order.RejectCreate(cmd, create, now, refusal)
		res.Order, res.Event = d.Order, d.Event
		ch.Create = d.Order
	}
	return res, s.record(ctx, cmd, ch, &res, snap.Version.LastSeq+1)
}

// record saves ch with res.Event appended to the order's history as entry
// seq, and its notification.
func (s *Service) record(ctx context.Context, cmd order.Command, ch Change, res *Result, seq int64) error {
	res.Event.OrderID, res.Event.Seq = cmd.OrderID, seq
	ch.Event, ch.Actor = &res.Event, cmd.Actor.ID
	if s.notify != nil {
		n, err := s.notify(ctx, res.Event)
		if err != nil {
			return fmt.Errorf("notification: %w", err)
		}
		ch.Notification = n
	}
	return s.repo.Save(ctx, ch)
}

func expect(snap Snapshot) *Version {
	if snap.Order == nil {
		return nil
	}
	v := snap.Version
	return &v
}

// newOperation is cmd's operation as of now, not yet done: one attempt.
func newOperation(cmd order.Command, now time.Time) *Operation {
	accept := cmd.IssueTime
	if accept.IsZero() {
		accept = now // queued by an ingest that did not stamp commands
	}
	return &Operation{
		ID: operation.KeyOf(cmd), Principal: cmd.Actor.ID, CommandID: cmd.ID, OrderID: cmd.OrderID, Command: cmd.Kind(),
		Attempts: 1, AcceptTime: accept.UTC().Truncate(time.Microsecond), UpdateTime: now,
	}
}

// done is cmd's finished operation, with the order's version when the
// sender may see the order.
func done(cmd order.Command, now time.Time, code codes.Code, msg string, o *order.Order) *Operation {
	op := newOperation(cmd, now)
	op.Done, op.Code, op.Message = true, code, msg
	if o != nil {
		op.OrderVersion = o.Version
	}
	return op
}

// notFoundMessage is GetOrder's answer for an order the reader may not
// see, or that does not exist: the two must not be told apart.
func notFoundMessage(orderID string) string {
	return fmt.Sprintf("order orders/%s not found", orderID)
}

// Failed records that an attempt at cmd failed with an error of class (the
// processor's classification) and will be retried: its operation stays
// pending, with the attempt counted.
func (s *Service) Failed(ctx context.Context, cmd order.Command, class string) error {
	op := newOperation(cmd, s.now())
	op.ErrorClass = class
	if err := s.repo.SaveAttempt(ctx, *op); err != nil {
		return fmt.Errorf("record failed attempt at command %s: %w", cmd.ID, err)
	}
	return nil
}

// GiveUp records the outcome of cmd, given up after err (dead-lettered):
// NOT_FOUND when its order does not exist, as GetOrder would say, else
// ABORTED with err as the reason. Both are Provisional: a redrive that
// applies the command after all replaces them.
func (s *Service) GiveUp(ctx context.Context, cmd order.Command, err error) error {
	op := done(cmd, s.now(), codes.Aborted, err.Error(), nil)
	if errors.Is(err, ErrNotFound) {
		op.Code, op.Message = codes.NotFound, notFoundMessage(cmd.OrderID)
	}
	op.Attempts = 0 // the failed attempts were counted as they failed
	if err := s.repo.Save(ctx, Change{OrderID: cmd.OrderID, Operation: op}); err != nil {
		return fmt.Errorf("record given-up command %s: %w", cmd.ID, err)
	}
	return nil
}
