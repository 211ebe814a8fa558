package orderstore_test

import (
	"context"
	"encoding/hex"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/driver/pgdriver"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/orderstore"
)

// listener is a LISTEN on the announcement channels, on a connection of
// its own. The channels are the database's, shared by every test schema,
// so each test looks only for its own orders' payloads.
type listener struct {
	t  *testing.T
	ln *pgdriver.Listener
}

func listen(t *testing.T, db *bun.DB) *listener {
	t.Helper()
	ln := pgdriver.NewListener(db)
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ln.Listen(ctx, "oms_order_changed", "oms_operation_done"); err != nil {
		t.Fatal(err)
	}
	// Listen does not wait for the server's answer: a notification of our
	// own, sent until one comes back, shows the LISTENs in effect.
	l := &listener{t: t, ln: ln}
	ready := "ready-" + uuid.NewString()
	for l.next(50*time.Millisecond, ready) == "" {
		if ctx.Err() != nil {
			t.Fatal("LISTEN did not take effect within 5s")
		}
		if _, err := db.ExecContext(ctx, "SELECT pg_notify('oms_order_changed', ?)", ready); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// next is the next notification whose payload is one of want, or "" when
// none comes within d.
func (l *listener) next(d time.Duration, want ...string) string {
	l.t.Helper()
	deadline := time.Now().Add(d)
	for {
		wait := time.Until(deadline)
		if wait <= 0 {
			return ""
		}
		_, payload, err := l.ln.ReceiveTimeout(context.Background(), wait)
		if err != nil {
			return "" // the timeout
		}
		for _, w := range want {
			if payload == w {
				return payload
			}
		}
	}
}

func insertOrder(t *testing.T, db bun.IDB, id string) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), `
INSERT INTO orders (id, customer_id, state, currency_code, version, create_time, update_time, created_by)
VALUES (?, 'c-1', 'CREATED', 'USD', 1, now(), now(), 'customer:c-1')`, id); err != nil {
		t.Fatal(err)
	}
}

func bumpOrder(t *testing.T, db bun.IDB, id string) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), `UPDATE orders SET version = version + 1 WHERE id = ?`, id); err != nil {
		t.Fatal(err)
	}
}

func doneOperation(t *testing.T, db *bun.DB, orderID string, b byte) string {
	t.Helper()
	now := time.Now()
	insertOperation(t, db, orderstore.Operation{ID: opKey(b), Principal: "service:shop", CommandID: "req", OrderID: orderID,
		Command: "pay", Done: true, AcceptTime: now, UpdateTime: now})
	k := opKey(b)
	return hex.EncodeToString(k[:])
}

// Only a watched order's changes and outcomes are announced; an unwatched
// one's commit notifies nobody (migration 10: notifying serialises commits).
func TestWatchOrderAnnouncesOnlyWatchedOrders(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	s := orderstore.New(db)
	l := listen(t, db)
	id := uuid.NewString()
	insertOrder(t, db, id)
	bumpOrder(t, db, id) // version 2
	op1 := doneOperation(t, db, id, 1)
	if got := l.next(300*time.Millisecond, id+":1", id+":2", op1); got != "" {
		t.Fatalf("unwatched: %q announced", got)
	}

	if err := s.WatchOrder(ctx, id, "w-1", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	bumpOrder(t, db, id)
	if got := l.next(5*time.Second, id+":3"); got == "" {
		t.Fatal("watched: version 3 not announced")
	}
	op2 := doneOperation(t, db, id, 2)
	if got := l.next(5*time.Second, op2); got == "" {
		t.Fatal("watched: the done operation not announced")
	}
	// Registering again only moves the expiry.
	if err := s.WatchOrder(ctx, id, "w-1", time.Now().Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.NewRaw(`SELECT count(*) FROM order_watches WHERE order_id = ?`, id).Scan(ctx, &n); err != nil || n != 1 {
		t.Fatalf("%d watches, %v; want 1", n, err)
	}

	if err := s.UnwatchOrder(ctx, id, "w-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.UnwatchOrder(ctx, id, "w-1"); err != nil {
		t.Fatalf("unwatch again: %v", err)
	}
	bumpOrder(t, db, id)
	op3 := doneOperation(t, db, id, 3)
	if got := l.next(300*time.Millisecond, id+":4", op3); got != "" {
		t.Fatalf("unwatched again: %q announced", got)
	}
}

// An expired watch announces nothing, and the purge deletes it and only it.
func TestExpiredWatchAnnouncesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	s := orderstore.New(db)
	l := listen(t, db)
	expired, live := uuid.NewString(), uuid.NewString()
	insertOrder(t, db, expired)
	insertOrder(t, db, live)
	if err := s.WatchOrder(ctx, expired, "w-1", time.Now().Add(300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := s.WatchOrder(ctx, live, "w-1", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	bumpOrder(t, db, expired)
	op := doneOperation(t, db, expired, 1)
	if got := l.next(300*time.Millisecond, expired+":2", op); got != "" {
		t.Fatalf("expired: %q announced", got)
	}
	n, err := s.PurgeWatches(ctx)
	if err != nil || n != 1 {
		t.Fatalf("purged %d, %v; want 1", n, err)
	}
	var left []string
	if err := db.NewRaw(`SELECT order_id::text FROM order_watches`).Scan(ctx, &left); err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0] != live {
		t.Fatalf("left %v, want only %s", left, live)
	}
	bumpOrder(t, db, live)
	if got := l.next(5*time.Second, live+":2"); got == "" {
		t.Fatal("the live watch's order: not announced")
	}
}

// A command that changed the order before the watch was visible has had
// its trigger run already and announced nothing. The registration waits
// for that command's commit, so the watcher's first read after it sees
// the change; and a command after the registration is announced.
func TestWatchOrderWaitsForTheCommandInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	s := orderstore.New(db)
	l := listen(t, db)
	id := uuid.NewString()
	insertOrder(t, db, id)

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	bumpOrder(t, tx, id) // version 2, not committed: its trigger saw no watch

	registered := make(chan time.Time, 1)
	go func() {
		if err := s.WatchOrder(ctx, id, "w-1", time.Now().Add(time.Minute)); err != nil {
			t.Error(err)
		}
		registered <- time.Now()
	}()
	select {
	case <-registered:
		t.Fatal("the registration did not wait for the command holding the order")
	case <-time.After(500 * time.Millisecond):
	}
	committed := time.Now()
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	var at time.Time
	select {
	case at = <-registered:
	case <-time.After(5 * time.Second):
		t.Fatal("the registration did not return after the commit")
	}
	if at.Before(committed) {
		t.Fatalf("registered at %v, before the commit at %v", at, committed)
	}
	if got := l.next(300*time.Millisecond, id+":2"); got != "" {
		t.Fatal("the change before the watch was announced; this test no longer shows the gap")
	}
	o, err := s.Get(ctx, id, []string{"version"}, staff)
	if err != nil || o.Version != 2 {
		t.Fatalf("the read after registering: %v, %v; want version 2", o, err)
	}
	bumpOrder(t, db, id)
	if got := l.next(5*time.Second, id+":3"); got == "" {
		t.Fatal("the change after the watch: not announced")
	}
}

// A watch may be registered before its order exists: nothing to lock.
func TestWatchOrderOfAMissingOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	s := orderstore.New(db)
	l := listen(t, db)
	id := uuid.NewString()
	if err := s.WatchOrder(ctx, id, "w-1", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	insertOrder(t, db, id)
	if got := l.next(5*time.Second, id+":1"); got == "" {
		t.Fatal("the create after the watch: not announced")
	}
}
