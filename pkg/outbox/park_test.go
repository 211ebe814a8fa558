package outbox_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/outbox"
	"github.com/omsdev/oms/pkg/queue"
)

// A notification that cannot be sent is parked with its reason: at once
// when the destination refuses it as invalid, after MaxAttempts when it
// keeps failing. The rows behind it, in its group and others, are
// delivered in order; the documented UPDATE re-drives it.
func TestUnsendableRowIsParkedAndItsGroupFlows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	q := newFIFO(t)

	var msgs []*message.Message
	for _, id := range []string{"g-1", "h-1", "g-2", "g-3", "h-2", "g-4", "g-5", "h-3", "g-6"} {
		msgs = append(msgs, note(id, id[:1]))
	}
	// No group id: the real FIFO publisher refuses it (queue.ErrNoGroupID).
	msgs = append(msgs, note("nogroup", ""))
	write(t, db, q.name, msgs[:4]...)
	write(t, db, q.name, msgs[4:]...)

	l := newLedger()
	dest := &faulty{l: l, next: q.publisher(t), fail: func(m *message.Message) error {
		switch m.UUID {
		case "g-2": // what pkg/queue reports for an entry SQS refuses
			return &queue.SendError{Code: "InvalidMessageContents", Message: "invalid character", SenderFault: true}
		case "g-4":
			return errors.New("injected: g-4 fails every time")
		}
		return nil
	}}
	start(t, db.DB, dest, outbox.RelayConfig{
		PollInterval: 10 * time.Millisecond, MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
	})

	eventually(t, "all but the unsendable to be relayed", func() (bool, error) {
		s, err := outbox.ReadStats(ctx, db.DB)
		return s.Pending == 0 && s.Parked == 3, err
	})
	if got, want := l.order("g"), []string{"g-1", "g-3", "g-5", "g-6"}; !slices.Equal(got, want) {
		t.Errorf("group g delivered %v, want %v", got, want)
	}
	if got, want := l.order("h"), []string{"h-1", "h-2", "h-3"}; !slices.Equal(got, want) {
		t.Errorf("group h delivered %v, want %v", got, want)
	}
	if d := l.duplicates(); len(d) > 0 {
		t.Errorf("duplicates: %v", d)
	}
	q.drain(t, 7)

	parked, err := outbox.Parked(ctx, db.DB, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		uuid, group string
		attempts    int
		reason      string
	}{
		{"g-2", "g", 1, "InvalidMessageContents"},
		{"g-4", "g", 3, "3 sends failed, the last: injected"},
		{"nogroup", "", 1, queue.MetaGroupID},
	}
	if len(parked) != len(want) {
		t.Fatalf("parked %+v", parked)
	}
	for i, w := range want {
		p := parked[i]
		if p.UUID != w.uuid || p.GroupID != w.group || p.Attempts != w.attempts || !strings.Contains(p.LastError, w.reason) ||
			p.Destination != q.name || p.ParkedAt.IsZero() {
			t.Errorf("parked[%d] = %+v, want %s in group %q after %d attempts for %q", i, p, w.uuid, w.group, w.attempts, w.reason)
		}
	}

	// The operator fixes the cause and re-drives g-4 (docs/operations.md).
	dest.set(func(f *faulty) { f.fail = nil })
	if _, err := db.DB.ExecContext(ctx, `UPDATE watermill_outbox
		SET parked_at = NULL, attempts = 0, next_attempt_at = NULL, last_error = NULL
		WHERE parked_at IS NOT NULL AND "offset" IN ($1)`, parked[1].Offset); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the re-driven row to be relayed", func() (bool, error) {
		s, err := outbox.ReadStats(ctx, db.DB)
		return s.Pending == 0 && s.Parked == 2, err
	})
	if got := l.order("g"); got[len(got)-1] != "g-4" {
		t.Errorf("group g delivered %v, want g-4 last", got)
	}
}

// A re-driven row older than a leased row of its group waits for that
// lease: a group never has two rows in flight.
func TestRedrivenRowWaitsForItsGroupsLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	write(t, db, "q.fifo", note("old", "g"), note("new", "g"))
	// "old" was parked; another relay is sending "new".
	if _, err := db.DB.ExecContext(ctx, `UPDATE watermill_outbox SET parked_at = now(), last_error = 'x' WHERE uuid = 'old';
		UPDATE watermill_outbox SET leased_until = now() + interval '1 hour', leased_by = 'other', attempts = 1 WHERE uuid = 'new'`); err != nil {
		t.Fatal(err)
	}
	l := newLedger()
	start(t, db.DB, &faulty{l: l}, outbox.RelayConfig{PollInterval: 5 * time.Millisecond})
	if _, err := db.DB.ExecContext(ctx, `UPDATE watermill_outbox SET parked_at = NULL, attempts = 0, last_error = NULL WHERE uuid = 'old'`); err != nil {
		t.Fatal(err)
	}
	// A row written after the re-drive is claimed by a claim that also
	// saw "old".
	write(t, db, "q.fifo", note("other-group", "h"))
	eventually(t, "the other group's row", func() (bool, error) { return len(l.order("h")) == 1, nil })
	if got := l.order("g"); len(got) != 0 {
		t.Fatalf("sent %v while the group had a leased row", got)
	}
	// The other relay finishes "new".
	if _, err := db.DB.ExecContext(ctx, `DELETE FROM watermill_outbox WHERE uuid = 'new'`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the re-driven row", func() (bool, error) { return slices.Equal(l.order("g"), []string{"old"}), nil })
}
