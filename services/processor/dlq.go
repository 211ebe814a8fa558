package main

// The dead-letter queue as a tool: the processor logs and counts every
// command it dead-letters, and "processor dlq" lists, shows and redrives
// them.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/omsdev/oms/pkg/logging"
	"github.com/omsdev/oms/pkg/orderapp"
	"github.com/omsdev/oms/pkg/orderpb"
	"github.com/omsdev/oms/pkg/queue"
)

// deadLetterPublisher is the poison queue's publisher. Each dead-lettering
// gets its own deduplication id (the command's own one is built from the
// client's request id, so a second failed command with the same key would
// be dropped by SQS as a duplicate), a timestamp, one log line and a count.
type deadLetterPublisher struct {
	message.Publisher
	log *slog.Logger
}

func (p deadLetterPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		reason := m.Metadata.Get(middleware.ReasonForPoisonedKey)
		m.Metadata.Set(queue.MetaDedupID, queue.DeadLetterDedupID(m.Metadata.Get(queue.MetaMessageID), reason))
		m.Metadata.Set(queue.AttrPoisonedAt, time.Now().UTC().Format(time.RFC3339Nano))
		// It only names the subscriber's Go type; SQS allows 10 attributes.
		delete(m.Metadata, middleware.PoisonedSubscriberKey)
	}
	err := p.Publisher.Publish(topic, msgs...)
	for _, m := range msgs {
		d := describe(m.Payload, m.Metadata.Get, m.Metadata.Get(queue.MetaGroupID))
		ctx := m.Context()
		if d.CorrelationID != "" {
			ctx = logging.WithCorrelationID(ctx, d.CorrelationID)
		}
		attrs := []any{"reason", d.Reason, "command", d.Command, "command_id", d.CommandID, "order_id", d.OrderID,
			"message_id", m.Metadata.Get(queue.MetaMessageID), "queue", topic}
		if err != nil {
			p.log.ErrorContext(ctx, "could not dead-letter a command; SQS will redeliver it", append(attrs, "err", err)...)
			continue
		}
		commandsTotal.WithLabelValues(commandKind(m), "poisoned").Inc()
		p.log.WarnContext(ctx, "command dead-lettered", attrs...)
	}
	return err
}

// deadLetterRecordTimeout bounds the write of a dead letter's outcome: one
// row, after the retries, beside the dead-letter publish itself.
const deadLetterRecordTimeout = 2 * time.Second

// recordDeadLetters sits just inside the poison queue middleware: a
// command about to be dead-lettered first gets its outcome on its
// operation (NOT_FOUND when its order never appeared, else ABORTED with
// the reason), so its sender learns it will not be applied. If that write
// fails, the message is not dead-lettered but left to SQS redelivery: no
// command reaches the dead-letter queue with its operation still pending.
// A message that is no command has no operation.
func (a *applier) recordDeadLetters(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		if err == nil || !permanent(err) {
			return out, err
		}
		cmd, derr := orderpb.DecodeCommandAs(msg.Payload, msg.Metadata.Get(orderpb.ContentTypeKey))
		if derr != nil {
			return out, err
		}
		// The last attempt's deadline has passed by now.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(msg.Context()), deadLetterRecordTimeout)
		defer cancel()
		if werr := a.app.GiveUp(ctx, cmd, clientReason(err, cmd.ID)); werr != nil {
			a.log.ErrorContext(logging.WithCorrelationID(ctx, cmd.CorrelationID),
				"could not record a dead-lettered command's outcome; not dead-lettering it, SQS will redeliver it",
				"command", cmd.Kind(), "command_id", cmd.ID, "order_id", cmd.OrderID, "reason", err.Error(), "err", werr)
			// Not wrapped: the poison queue must not see a dead-lettering
			// error in it.
			return out, fmt.Errorf("%s; recording its outcome failed: %w", err.Error(), werr)
		}
		return out, err
	}
}

// clientReason is what a dead-lettered command's operation tells its
// sender: the class of the failure and where the command now is, never
// the error's own text, which may carry a panic's stack trace or the
// database's words. That text stays in the logs and on the dead letter
// (docs/operations.md, Dead letters), where operators read it.
func clientReason(err error, commandID string) error {
	if errors.Is(err, orderapp.ErrNotFound) {
		return orderapp.ErrNotFound // answered NOT_FOUND, as GetOrder would
	}
	return fmt.Errorf("the command failed (%s) and was set aside in the dead-letter queue (command id %s); an operator can redrive it",
		errorClass(err), commandID)
}

// deadLetter is what the tools show of one dead-letter message.
type deadLetter struct {
	MessageID string `json:"message_id"`
	// OrderID is the message group: the order, or "undecodable".
	OrderID   string `json:"order_id"`
	Command   string `json:"command,omitempty"`
	CommandID string `json:"command_id,omitempty"`
	// Reason is empty for a message SQS moved after maxReceiveCount
	// receives, which the processor never gave up on.
	Reason         string  `json:"reason"`
	CorrelationID  string  `json:"correlation_id,omitempty"`
	DeadLetteredAt string  `json:"dead_lettered_at,omitempty"`
	AgeSeconds     float64 `json:"age_seconds,omitempty"`

	age time.Duration // -1 when unknown

	// show only
	Body       *string           `json:"body,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
}

// undecodable is the group of messages that name no order.
const undecodable = "undecodable"

// describe reads what a message says about its command: from the body if
// it is one, else from its attributes. group is the message group where
// known.
func describe(body []byte, attr func(string) string, group string) deadLetter {
	d := deadLetter{
		OrderID: group, Reason: attr(middleware.ReasonForPoisonedKey),
		Command: attr("command"), CorrelationID: attr(middleware.CorrelationIDMetadataKey),
	}
	if cmd, err := orderpb.DecodeCommandAs(body, attr(orderpb.ContentTypeKey)); err == nil {
		d.Command, d.CommandID = string(cmd.Kind()), cmd.ID
		if d.OrderID == "" {
			d.OrderID = cmd.OrderID
		}
		if cmd.CorrelationID != "" {
			d.CorrelationID = cmd.CorrelationID
		}
	}
	if d.OrderID == "" {
		d.OrderID = undecodable // as the processor groups it
	}
	return d
}

// describeSQS describes a received dead-letter message.
func describeSQS(m types.Message, now time.Time) deadLetter {
	attrs := stringAttrs(m)
	d := describe([]byte(aws.ToString(m.Body)), func(k string) string { return attrs[k] }, queue.GroupID(m))
	d.MessageID = aws.ToString(m.MessageId)
	d.age = -1
	if at := queue.PoisonedAt(m); !at.IsZero() {
		d.DeadLetteredAt = at.UTC().Format(time.RFC3339)
		d.age = max(now.Sub(at), 0)
		d.AgeSeconds = d.age.Round(time.Second).Seconds()
	}
	return d
}

func stringAttrs(m types.Message) map[string]string {
	out := make(map[string]string, len(m.MessageAttributes))
	for k, v := range m.MessageAttributes {
		if v.StringValue != nil {
			out[k] = *v.StringValue
		} else {
			out[k] = string(v.BinaryValue)
		}
	}
	return out
}

const dlqUsage = `usage: processor dlq COMMAND

  list [--output table|json] [--limit N]
        every message on the dead-letter queue: message id, order id (its
        group), command, command id, reason, correlation id and age
  show [--output text|json] MESSAGE_ID
        one message in full: body and attributes
  redrive (--all [--limit N] | MESSAGE_ID...)
        move messages back to the command queue, each in its order's group;
        redriving one twice within five minutes enqueues it once

Reading holds the messages in flight briefly and then hands back those not
redriven. The queues are the processor's: SQS_DEAD_LETTER_QUEUE and
SQS_COMMAND_QUEUE (with SQS_ENDPOINT and AWS_REGION).
`

// errUsage: bad arguments (exit status 2).
var errUsage = errors.New("bad arguments")

// deadLetterMain runs "processor dlq ARGS" and returns the exit status.
func deadLetterMain(ctx context.Context, c queue.Config, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, dlqUsage)
		return 0
	}
	err := func() error {
		cmd, err := parseDLQArgs(args)
		if err != nil {
			return err
		}
		client, err := queue.NewClient(ctx, c)
		if err != nil {
			return err
		}
		t := &dlqTool{api: client, out: stdout, now: time.Now, hold: time.Minute, commandQueue: c.CommandQueue}
		for _, q := range []struct {
			name string
			url  *string
		}{{c.DeadLetterQueue, &t.dlq}, {c.CommandQueue, &t.commands}} {
			out, err := client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(q.name)})
			if err != nil {
				return fmt.Errorf("look up queue %s: %w", q.name, err)
			}
			*q.url = aws.ToString(out.QueueUrl)
		}
		return t.exec(ctx, cmd)
	}()
	switch {
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "processor dlq: %v\n\n%s", err, dlqUsage)
		return 2
	case err != nil:
		fmt.Fprintln(stderr, "processor dlq:", err)
		return 1
	}
	return 0
}

// dlqTool runs the dlq subcommands against one dead-letter queue and the
// command queue it redrives to.
type dlqTool struct {
	api           queue.DeadLetterAPI
	dlq, commands string // URLs
	commandQueue  string // name, for messages
	out           io.Writer
	now           func() time.Time
	hold          time.Duration // how long reading keeps messages in flight
}

// maxRead bounds one run of list, show or redrive.
const maxRead = 1000

// dlqCommand is one parsed "processor dlq" command line.
type dlqCommand struct {
	name   string // list, show or redrive
	output string // list: table or json; show: text or json
	limit  int
	all    bool
	ids    []string
}

func parseDLQArgs(args []string) (dlqCommand, error) {
	fs := flag.NewFlagSet("dlq", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := dlqCommand{name: args[0]}
	fs.StringVar(&c.output, "output", "", "table or json (list); text or json (show)")
	fs.IntVar(&c.limit, "limit", maxRead, "read at most this many messages")
	fs.BoolVar(&c.all, "all", false, "redrive every message")
	ids, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return c, fmt.Errorf("%w: %v", errUsage, err)
	}
	c.ids = ids
	if c.limit < 1 || c.limit > maxRead {
		return c, fmt.Errorf("%w: --limit must be 1 to %d", errUsage, maxRead)
	}
	switch c.name {
	case "list":
		if c.output == "" {
			c.output = "table"
		}
		if len(ids) > 0 || c.all || (c.output != "table" && c.output != "json") {
			return c, fmt.Errorf("%w: list takes --output table|json and --limit", errUsage)
		}
	case "show":
		if c.output == "" {
			c.output = "text"
		}
		if len(ids) != 1 || c.all || (c.output != "text" && c.output != "json") {
			return c, fmt.Errorf("%w: show takes one message id and --output text|json", errUsage)
		}
	case "redrive":
		if c.all == (len(ids) > 0) || c.output != "" {
			return c, fmt.Errorf("%w: redrive takes --all or message ids", errUsage)
		}
	default:
		return c, fmt.Errorf("%w: unknown command %q", errUsage, c.name)
	}
	return c, nil
}

func (t *dlqTool) exec(ctx context.Context, c dlqCommand) error {
	switch {
	case c.name == "list":
		return t.list(ctx, c.output, c.limit)
	case c.name == "show":
		return t.show(ctx, c.ids[0], c.output)
	case c.all:
		return t.redriveAll(ctx, c.limit)
	default:
		return t.redrive(ctx, c.ids)
	}
}

// parseInterleaved parses flags given before, between or after the
// positional arguments, which it returns.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// peek reads the dead-letter queue; release hands back what is still held.
func (t *dlqTool) peek(ctx context.Context, limit int) ([]types.Message, error) {
	msgs, err := queue.Peek(ctx, t.api, t.dlq, t.hold, limit)
	if err != nil {
		t.release(ctx, msgs)
		return nil, err
	}
	return msgs, nil
}

// release runs even when ctx is cancelled (Ctrl-C), so nothing stays
// hidden for the rest of its visibility timeout.
func (t *dlqTool) release(ctx context.Context, msgs []types.Message) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := queue.ReleaseAll(ctx, t.api, t.dlq, msgs); err != nil {
		return fmt.Errorf("%w (those messages reappear after %s)", err, t.hold)
	}
	return nil
}

func (t *dlqTool) list(ctx context.Context, output string, limit int) error {
	msgs, err := t.peek(ctx, limit)
	if err != nil {
		return err
	}
	now := t.now()
	rows := make([]deadLetter, len(msgs))
	for i, m := range msgs {
		rows[i] = describeSQS(m, now)
	}
	if output == "json" {
		err = writeJSON(t.out, rows)
	} else {
		err = writeTable(t.out, rows)
		if err == nil && len(msgs) == limit {
			fmt.Fprintf(t.out, "(stopped at --limit %d; more may be waiting)\n", limit)
		}
	}
	return errors.Join(err, t.release(ctx, msgs))
}

func writeJSON(w io.Writer, v any) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

func writeTable(w io.Writer, rows []deadLetter) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MESSAGE ID\tORDER ID\tCOMMAND\tCOMMAND ID\tAGE\tCORRELATION ID\tREASON")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.MessageID, r.OrderID, dash(r.Command), dash(r.CommandID),
			age(r.age), dash(r.CorrelationID), reasonCell(r.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d message(s)\n", len(rows))
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func age(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return d.Round(time.Second).String()
}

// reasonCell keeps a table row on one line.
func reasonCell(r string) string {
	if r == "" {
		return "(moved by SQS after repeated failed receives)"
	}
	r = strings.Join(strings.Fields(r), " ")
	if rs := []rune(r); len(rs) > 100 {
		r = string(rs[:97]) + "..."
	}
	return r
}

func (t *dlqTool) show(ctx context.Context, id string, output string) error {
	msgs, err := t.peek(ctx, maxRead)
	if err != nil {
		return err
	}
	defer t.release(ctx, msgs)
	for _, m := range msgs {
		if aws.ToString(m.MessageId) != id {
			continue
		}
		d := describeSQS(m, t.now())
		d.Body, d.Attributes = m.Body, stringAttrs(m)
		if output == "json" {
			return writeJSON(t.out, d)
		}
		return writeDetail(t.out, d)
	}
	return notFound([]string{id})
}

func writeDetail(w io.Writer, d deadLetter) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	at := dash(d.DeadLetteredAt)
	if d.age >= 0 {
		at += " (" + age(d.age) + " ago)"
	}
	reason := d.Reason
	if reason == "" {
		reason = "(none: moved by SQS after repeated failed receives)"
	}
	for _, kv := range [][2]string{
		{"message id", d.MessageID}, {"order id", d.OrderID}, {"command", dash(d.Command)},
		{"command id", dash(d.CommandID)}, {"correlation id", dash(d.CorrelationID)},
		{"dead-lettered", at}, {"reason", reason},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", kv[0], kv[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "attributes:")
	keys := make([]string, 0, len(d.Attributes))
	for k := range d.Attributes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %s: %s\n", k, d.Attributes[k])
	}
	_, err := fmt.Fprintf(w, "body:\n%s\n", aws.ToString(d.Body))
	return err
}

func notFound(ids []string) error {
	return fmt.Errorf("not on the dead-letter queue (or held by another reader; try again): %s", strings.Join(ids, ", "))
}

// redrive moves the named messages, each in its order's group, and hands
// back the others.
func (t *dlqTool) redrive(ctx context.Context, ids []string) error {
	msgs, err := t.peek(ctx, maxRead)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var keep []types.Message
	var errs []error
	for _, m := range msgs {
		id := aws.ToString(m.MessageId)
		if !want[id] {
			keep = append(keep, m)
			continue
		}
		delete(want, id)
		if err := t.redriveOne(ctx, m); err != nil {
			errs = append(errs, err)
			keep = append(keep, m)
		}
	}
	if len(want) > 0 {
		var missing []string
		for _, id := range ids {
			if want[id] {
				missing = append(missing, id)
			}
		}
		errs = append(errs, notFound(missing))
	}
	return errors.Join(append(errs, t.release(ctx, keep))...)
}

// redriveAll moves every message, round after round: SQS FIFO hides a
// group's later messages until its earlier ones are gone. Messages the
// processor dead-letters again while this runs are left for next time.
func (t *dlqTool) redriveAll(ctx context.Context, limit int) error {
	start := t.now()
	failed := map[string]bool{}
	var errs []error
	n := 0
	for n < limit {
		msgs, err := t.peek(ctx, limit-n)
		if err != nil {
			errs = append(errs, err)
			break
		}
		var keep []types.Message
		moved := 0
		for _, m := range msgs {
			id := aws.ToString(m.MessageId)
			_, stamped := m.MessageAttributes[queue.AttrPoisonedAt]
			if failed[id] || (stamped && !queue.PoisonedAt(m).Before(start)) {
				keep = append(keep, m)
				continue
			}
			if err := t.redriveOne(ctx, m); err != nil {
				errs = append(errs, err)
				failed[id] = true
				keep = append(keep, m)
				continue
			}
			moved++
			n++
		}
		if err := t.release(ctx, keep); err != nil {
			errs = append(errs, err)
		}
		if moved == 0 {
			break
		}
	}
	fmt.Fprintf(t.out, "redrove %d message(s) to %s\n", n, t.commandQueue)
	return errors.Join(errs...)
}

func (t *dlqTool) redriveOne(ctx context.Context, m types.Message) error {
	d := describeSQS(m, t.now())
	if err := queue.Redrive(ctx, t.api, t.dlq, t.commands, m, d.OrderID); err != nil {
		return err
	}
	fmt.Fprintf(t.out, "redriven %s: order %s, %s %s\n", d.MessageID, d.OrderID, dash(d.Command), dash(d.CommandID))
	return nil
}
