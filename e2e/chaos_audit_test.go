package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/queue"
)

// chaosResult is one row of the table.
type chaosResult struct {
	name    string
	skipped string

	accepted, appliedOnce, rejected int
	inDLQ, dlqTotal                 int
	dupEffects                      int
	notesMissing, notesOutOfOrder   int
	notesDup                        int
	recovery                        time.Duration
	recoveryKnown                   bool
	elapsed                         time.Duration
	info                            []string // facts for the report, not failures
	problems                        []string // each one fails the scenario
}

func (r *chaosResult) problem(format string, a ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, a...))
}

func (r *chaosResult) note(format string, a ...any) {
	r.info = append(r.info, fmt.Sprintf(format, a...))
}

func (r *chaosResult) pass() bool { return r.skipped == "" && len(r.problems) == 0 }

// settle waits until every accepted command has been processed, the
// command queue and the outbox are empty, and every history entry has had
// its notification; or until nothing moves any more; or the deadline.
func (e *chaosEnv) settle(accepted []chaosAccepted, deadline time.Duration) {
	ctx := context.Background()
	end := time.Now().Add(deadline)
	var quietSince time.Time
	for {
		done, quiet, why := e.settled(ctx, accepted)
		if done {
			return
		}
		switch {
		case !quiet:
			quietSince = time.Time{}
		case quietSince.IsZero():
			quietSince = time.Now()
		case time.Since(quietSince) > 2*chaosVisibilityTimeout:
			// Nothing queued, nothing in flight, nothing to relay for two
			// visibility timeouts: what is missing will not come.
			e.res.note("stopped waiting: %s", why)
			return
		}
		if time.Now().After(end) {
			e.res.note("stopped waiting after %s: %s", deadline, why)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// settled reports whether everything is accounted for, and whether the
// system is idle (no command queued or in flight, nothing in the outbox).
func (e *chaosEnv) settled(ctx context.Context, accepted []chaosAccepted) (done, quiet bool, why string) {
	processed := map[chaosKey]bool{}
	rows, err := e.db.QueryContext(ctx, `SELECT principal, command_id FROM processed_commands`)
	if err != nil {
		return false, false, "processed_commands: " + err.Error()
	}
	for rows.Next() {
		var k chaosKey
		rows.Scan(&k.principal, &k.id)
		processed[k] = true
	}
	rows.Close()
	missing := 0
	for _, c := range accepted {
		if !processed[c.chaosKey] {
			missing++
		}
	}
	d, err := queue.QueueDepth(ctx, e.sqs, e.urls.Command)
	if err != nil {
		return false, false, "command queue: " + err.Error()
	}
	var outbox, events int
	if err := e.db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM watermill_outbox), (SELECT count(*) FROM order_events)`).Scan(&outbox, &events); err != nil {
		return false, false, "outbox: " + err.Error()
	}
	notes, _, lastNote := e.notes.Snapshot()
	distinct := map[[2]any]bool{}
	for _, n := range notes {
		distinct[[2]any{n.order, n.seq}] = true
	}
	why = fmt.Sprintf("%d accepted commands not processed, command queue %d visible + %d in flight, outbox %d rows, notifications for %d of %d history entries",
		missing, d.Visible, d.InFlight, outbox, len(distinct), events)
	idle := d.Visible+d.InFlight == 0 && outbox == 0
	done = missing == 0 && idle && len(distinct) >= events
	return done, idle && time.Since(lastNote) > 2*time.Second, why
}

type chaosProcessed struct {
	order, command, outcome, reason string
	at                              time.Time
}

type chaosEvent struct {
	order, typ, command, commandID, actor, from string
	seq, version                                int64
}

// audit checks the scenario's books after settle: see docs/reliability.md.
func (e *chaosEnv) audit(loads ...*chaosLoad) {
	r := e.res
	ctx := context.Background()
	var accepted []chaosAccepted
	for _, l := range loads {
		acc, refused, gaveUp, resent, replayed, unfollow := l.snapshot()
		accepted = append(accepted, acc...)
		for _, s := range refused {
			r.problem("ingest refused a valid request: %s", s)
		}
		if gaveUp > 0 {
			r.note("%d requests never answered 2xx (not accepted; not accounted)", gaveUp)
		}
		if resent > 0 {
			r.note("%d accepted requests resent to ingest with the same key", resent)
		}
		if replayed > 0 {
			r.note("%d accepted commands delivered twice (replayed on the command queue)", replayed)
		}
		if unfollow > 0 {
			r.problem("%d orders were never created, so their pays were never sent", unfollow)
		}
	}
	r.accepted = len(accepted)
	settle := chaosSettleTimeout
	if e.settleFor > 0 {
		settle = e.settleFor
	}
	settling := time.Now()
	e.settle(accepted, settle)
	r.note("settled %s after the load stopped", time.Since(settling).Round(100*time.Millisecond))

	processed := map[chaosKey]chaosProcessed{}
	rows, err := e.db.QueryContext(ctx, `SELECT principal, command_id, order_id::text, command, outcome, reason, processed_at FROM processed_commands`)
	if err != nil {
		r.problem("read processed_commands: %v", err)
		return
	}
	for rows.Next() {
		var k chaosKey
		var p chaosProcessed
		if err := rows.Scan(&k.principal, &k.id, &p.order, &p.command, &p.outcome, &p.reason, &p.at); err != nil {
			r.problem("scan processed_commands: %v", err)
		}
		processed[k] = p
	}
	rows.Close()

	history := map[string][]chaosEvent{}
	byCommand := map[chaosKey][]chaosEvent{}
	rows, err = e.db.QueryContext(ctx, `SELECT order_id::text, seq, type, command, command_id, actor, from_state, order_version FROM order_events ORDER BY order_id, seq`)
	if err != nil {
		r.problem("read order_events: %v", err)
		return
	}
	for rows.Next() {
		var ev chaosEvent
		if err := rows.Scan(&ev.order, &ev.seq, &ev.typ, &ev.command, &ev.commandID, &ev.actor, &ev.from, &ev.version); err != nil {
			r.problem("scan order_events: %v", err)
		}
		history[ev.order] = append(history[ev.order], ev)
		byCommand[chaosKey{ev.actor, ev.commandID}] = append(byCommand[chaosKey{ev.actor, ev.commandID}], ev)
	}
	rows.Close()

	dead := e.deadLetters()

	// Every accepted command: processed once, and its one history entry.
	var lastBefore, firstAfter time.Time
	var slowest chaosAccepted
	for _, c := range accepted {
		p, ok := processed[c.chaosKey]
		if !ok {
			where := "not in the dead-letter queue"
			if dead[c.chaosKey] != "" {
				where = "dead-lettered: " + dead[c.chaosKey]
			}
			r.problem("LOST: %s %s of order %s by %s, accepted at %s: no processed_commands row; %s",
				c.kind, c.id, c.order, c.principal, c.at.Format("15:04:05.000"), where)
			continue
		}
		if why := chaosCheckCommand(c, p, byCommand[c.chaosKey], history[c.order]); why != "" {
			r.problem("%s %s of order %s by %s: %s", c.kind, c.id, c.order, c.principal, why)
			continue
		}
		r.appliedOnce++
		if p.outcome == "rejected" {
			r.rejected++
		}
		if !e.faultEnd.IsZero() {
			if c.at.Before(e.faultEnd) {
				if p.at.After(lastBefore) {
					lastBefore, slowest = p.at, c
				}
			} else if firstAfter.IsZero() || p.at.Before(firstAfter) {
				firstAfter = p.at
			}
		}
	}
	if !e.faultEnd.IsZero() {
		last := lastBefore
		if firstAfter.After(last) {
			last = firstAfter
		}
		if !last.IsZero() {
			r.recovery, r.recoveryKnown = max(last.Sub(e.faultEnd), 0), true
		}
		if lastBefore.After(e.faultEnd) {
			r.note("the last command accepted before the fault ended: %s %s of order %s, accepted %s, applied %s (fault ended %s)",
				slowest.kind, slowest.id, slowest.order, slowest.at.Format("15:04:05.000"), lastBefore.Local().Format("15:04:05.000"), e.faultEnd.Format("15:04:05.000"))
		}
	}

	// The dead-letter queue: no accepted command, and nothing else either
	// (the load sends only valid commands).
	acceptedSet := map[chaosKey]bool{}
	for _, c := range accepted {
		acceptedSet[c.chaosKey] = true
	}
	for k, reason := range dead {
		r.dlqTotal++
		if acceptedSet[k] {
			r.inDLQ++
		}
		r.problem("dead-lettered: command %s by %s (accepted: %v): %s", k.id, k.principal, acceptedSet[k], reason)
	}

	// No duplicate effects, and versions that match the history.
	orders := map[string][2]int64{}
	rows, err = e.db.QueryContext(ctx, `SELECT id::text, version, last_event_seq FROM orders`)
	if err != nil {
		r.problem("read orders: %v", err)
		return
	}
	for rows.Next() {
		var id string
		var v, last int64
		rows.Scan(&id, &v, &last)
		orders[id] = [2]int64{v, last}
	}
	rows.Close()
	for id, ov := range orders {
		if why := chaosCheckHistory(ov[0], ov[1], history[id]); why != "" {
			r.dupEffects++
			r.problem("order %s: %s", id, why)
		}
	}

	// Notifications: every history entry has one, in order per order.
	notes, undecoded, _ := e.notes.Snapshot()
	if undecoded > 0 {
		r.problem("%d notifications could not be decoded", undecoded)
	}
	var t chaosNoteTally
	t.count(notes, history)
	r.notesMissing, r.notesOutOfOrder, r.notesDup = t.missing, t.outOfOrder, t.dup
	r.problems = append(r.problems, t.problems...)
	if r.rejected > 0 {
		r.note("%d accepted commands legally rejected (e.g. pay after cancel), each recorded once", r.rejected)
	}
}

// chaosNoteTally compares the notifications, in the order they were received,
// with the histories.
type chaosNoteTally struct {
	missing, outOfOrder, dup int
	problems                 []string
}

func (t *chaosNoteTally) count(notes []chaosNote, history map[string][]chaosEvent) {
	type seqKey struct {
		order string
		seq   int64
	}
	events := map[seqKey]chaosEvent{}
	for _, evs := range history {
		for _, ev := range evs {
			events[seqKey{ev.order, ev.seq}] = ev
		}
	}
	got := map[seqKey]bool{}
	maxSeq := map[string]int64{}
	maxVersion := map[string]int64{}
	for i, n := range notes {
		k := seqKey{n.order, n.seq}
		ev, known := events[k]
		switch {
		case got[k]:
			t.dup++
			continue
		case !known:
			t.problems = append(t.problems, fmt.Sprintf("notification #%d announces %s entry %d, which is not in the history", i, n.order, n.seq))
		case ev.version != n.version || ev.typ != n.typ:
			t.problems = append(t.problems, fmt.Sprintf("notification #%d for %s entry %d says %s version %d; the history says %s version %d",
				i, n.order, n.seq, n.typ, n.version, ev.typ, ev.version))
		}
		got[k] = true
		if n.seq < maxSeq[n.order] || n.version < maxVersion[n.order] {
			t.outOfOrder++
			if t.outOfOrder <= 5 {
				t.problems = append(t.problems, fmt.Sprintf("notification #%d for %s entry %d (version %d) came after entry %d (version %d)",
					i, n.order, n.seq, n.version, maxSeq[n.order], maxVersion[n.order]))
			}
		}
		maxSeq[n.order] = max(maxSeq[n.order], n.seq)
		maxVersion[n.order] = max(maxVersion[n.order], n.version)
	}
	var missing []string
	for k := range events {
		if !got[k] {
			t.missing++
			missing = append(missing, fmt.Sprintf("%s/%d", k.order, k.seq))
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		t.problems = append(t.problems, fmt.Sprintf("%d history entries have no notification, e.g. %s",
			len(missing), strings.Join(missing[:min(len(missing), 5)], ", ")))
	}
}

// checkCommand says what is wrong with an accepted command's processing,
// or "" when it was applied exactly once or legally rejected once.
func chaosCheckCommand(c chaosAccepted, p chaosProcessed, evs, history []chaosEvent) string {
	if p.order != c.order || p.command != c.kind {
		return fmt.Sprintf("recorded as %s of order %s", p.command, p.order)
	}
	switch p.outcome {
	case "applied":
		if len(evs) != 1 {
			return fmt.Sprintf("applied, with %d history entries (want exactly 1): %s", len(evs), chaosDescribe(evs))
		}
		if ev := evs[0]; ev.command != c.kind || ev.typ == string(order.EventCommandRejected) || ev.typ == string(order.EventOrderRejected) {
			return "applied, but its history entry is " + chaosDescribe(evs)
		}
		return ""
	case "rejected":
		if !chaosLegalRejection(c.kind, p.reason) {
			return "rejected, and it should not have been: " + p.reason
		}
		switch {
		case len(evs) == 1 && evs[0].typ == string(order.EventCommandRejected):
			if order.Allowed(chaosState(evs[0].from), order.Kind(c.kind)) {
				return fmt.Sprintf("rejected in state %s, where %s is allowed", evs[0].from, c.kind)
			}
			return ""
		case len(evs) == 0:
			// The history records one rejection per kind and version (see
			// orderstore.recordable): another one must be there.
			for _, ev := range history {
				if ev.typ == string(order.EventCommandRejected) && ev.command == c.kind {
					return ""
				}
			}
			return "rejected, with no history entry and no earlier rejection of a " + c.kind
		}
		return fmt.Sprintf("rejected, with %d history entries: %s", len(evs), chaosDescribe(evs))
	}
	return fmt.Sprintf("outcome %q: %s", p.outcome, p.reason)
}

// legalRejection: a transition the order's state forbids (pay a cancelled
// order, cancel a cancelled one). The load's commands are otherwise valid.
func chaosLegalRejection(kind, reason string) bool {
	prefix := "cannot " + kind + " an order in state "
	if !strings.HasPrefix(reason, prefix) || kind == string(order.KindCreate) {
		return false
	}
	return !order.Allowed(chaosState(strings.TrimPrefix(reason, prefix)), order.Kind(kind))
}

func chaosState(s string) order.State {
	st, _ := order.ParseState(s)
	return st
}

// checkHistory finds duplicate effects in one order's history: entries
// numbered 1..n with n the order's last_event_seq, one effect of each kind
// at most, one entry per command, and a version equal to the number of
// changes, each change raising it by one.
func chaosCheckHistory(version, lastSeq int64, evs []chaosEvent) string {
	if int64(len(evs)) != lastSeq {
		return fmt.Sprintf("%d history entries, last_event_seq %d", len(evs), lastSeq)
	}
	effects := map[string]int{}
	perCommand := map[chaosKey]int{}
	var changes int64
	for i, ev := range evs {
		if ev.seq != int64(i+1) {
			return fmt.Sprintf("entry %d has sequence %d", i+1, ev.seq)
		}
		perCommand[chaosKey{ev.actor, ev.commandID}]++
		if perCommand[chaosKey{ev.actor, ev.commandID}] > 1 {
			return fmt.Sprintf("command %s by %s has %d history entries", ev.commandID, ev.actor, perCommand[chaosKey{ev.actor, ev.commandID}])
		}
		if ev.typ == string(order.EventCommandRejected) {
			if ev.version != changes {
				return fmt.Sprintf("rejection at entry %d records version %d, the order was at %d", ev.seq, ev.version, changes)
			}
			continue
		}
		effects[ev.typ]++
		if effects[ev.typ] > 1 {
			return fmt.Sprintf("%d %s events: %s", effects[ev.typ], ev.typ, chaosDescribe(evs))
		}
		changes++
		if ev.version != changes {
			return fmt.Sprintf("change at entry %d has version %d, want %d", ev.seq, ev.version, changes)
		}
	}
	if version != changes {
		return fmt.Sprintf("version %d after %d changes: %s", version, changes, chaosDescribe(evs))
	}
	return ""
}

func chaosDescribe(evs []chaosEvent) string {
	var s []string
	for _, ev := range evs {
		s = append(s, fmt.Sprintf("#%d %s (%s %s v%d)", ev.seq, ev.typ, ev.command, ev.commandID, ev.version))
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// deadLetters reads the scenario's dead-letter queue without deleting:
// each message is received once with a visibility timeout longer than the
// read, and left to come back. It returns the commands found, with why.
func (e *chaosEnv) deadLetters() map[chaosKey]string {
	ctx := context.Background()
	out := map[chaosKey]string{}
	seen := map[string]bool{}
	d, err := queue.QueueDepth(ctx, e.sqs, e.urls.DeadLetter)
	if err != nil {
		e.res.problem("dead-letter queue depth: %v", err)
		return out
	}
	for empty := 0; empty < 2; {
		m, err := e.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(e.urls.DeadLetter), MaxNumberOfMessages: 10, WaitTimeSeconds: 1,
			VisibilityTimeout: 120, MessageAttributeNames: []string{"All"},
		})
		if err != nil {
			e.res.problem("read the dead-letter queue: %v", err)
			return out
		}
		if len(m.Messages) == 0 {
			empty++
			continue
		}
		for _, msg := range m.Messages {
			if seen[aws.ToString(msg.MessageId)] {
				continue
			}
			seen[aws.ToString(msg.MessageId)] = true
			reason := "moved by SQS after its receives ran out"
			if a, ok := msg.MessageAttributes["reason_poisoned"]; ok {
				reason = aws.ToString(a.StringValue)
			}
			cmd, err := decodeMessage(msg)
			if err != nil {
				out[chaosKey{"?", aws.ToString(msg.MessageId)}] = "undecodable: " + reason
				continue
			}
			out[chaosKey{cmd.Actor.ID, cmd.ID}] = fmt.Sprintf("%s of order %s: %s", cmd.Kind(), cmd.OrderID, reason)
		}
	}
	if n := d.Visible + d.InFlight; n > len(seen) {
		e.res.problem("the dead-letter queue holds %d messages; %d could be read", n, len(seen))
	}
	return out
}
