package outbox_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/uptrace/bun/driver/pgdriver"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/orderstore"
	"github.com/omsdev/oms/pkg/outbox"
	"github.com/omsdev/oms/pkg/queue"
)

// While SQS refuses connections the relay holds no transaction open and no
// row lock: another transaction can lock and update every row without
// waiting. When SQS is back, everything is delivered; an outage shorter
// than MaxAttempts backoffs parks nothing.
func TestOutageHoldsNoTransactionOrLock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	q := newFIFO(t)

	// The relay gets a pool of its own, named, so pg_stat_activity tells
	// its sessions apart.
	var schema string
	if err := db.DB.QueryRowContext(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	rand.Read(b)
	app := "outbox-relay-" + hex.EncodeToString(b)
	rdb := orderstore.Open(dbtest.URL(), pgdriver.WithConnParams(map[string]any{"search_path": schema}), pgdriver.WithApplicationName(app))
	t.Cleanup(func() { rdb.Close() })

	// SQS is down: an endpoint that refuses connections.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	refusing, err := queue.NewPublisher(ctx, queue.Config{Endpoint: down, Region: "us-east-1"}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}

	const n = 6
	for i := range n {
		write(t, db, q.name, note(fmt.Sprintf("n%d", i), fmt.Sprintf("g%d", i%3)))
	}

	// Each send first hands the test a channel and waits until the test
	// closes it: the test looks at the database while a send is under way.
	sending := make(chan chan struct{})
	testDone := make(chan struct{})
	l := newLedger()
	dest := &faulty{l: l, next: refusing, before: func(*message.Message) {
		release := make(chan struct{})
		select {
		case sending <- release:
			select {
			case <-release:
			case <-testDone:
			}
		case <-testDone:
		}
	}}
	start(t, rdb.DB, dest, outbox.RelayConfig{
		PollInterval: 10 * time.Millisecond, BatchSize: 10, Lease: time.Minute, SendTimeout: 40 * time.Second,
		MaxAttempts: 1000, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	})
	t.Cleanup(func() { close(testDone) }) // runs before the relay's Close

	// openTxns describes the relay's sessions inside a transaction, or
	// (when olderThan > 0) inside one that began over olderThan ago.
	openTxns := func(olderThan time.Duration) []string {
		t.Helper()
		rows, err := db.DB.QueryContext(ctx, `SELECT state || ' for ' || (now() - xact_start)::text || ': ' || query FROM pg_stat_activity
			WHERE application_name = $1 AND xact_start IS NOT NULL AND xact_start <= now() - $2 * interval '1 millisecond'`,
			app, olderThan.Milliseconds())
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var open []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			open = append(open, s)
		}
		return open
	}
	// lockAll takes and updates every row without waiting for any lock.
	lockAll := func() {
		t.Helper()
		tx, err := db.DB.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		var locked int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT "offset" FROM watermill_outbox FOR UPDATE NOWAIT) l`).Scan(&locked); err != nil {
			t.Fatalf("rows are locked while a send is under way: %v", err)
		}
		res, err := tx.ExecContext(ctx, `UPDATE watermill_outbox SET last_error = last_error`)
		if err != nil {
			t.Fatal(err)
		}
		if u, _ := res.RowsAffected(); locked != n || u != n {
			t.Fatalf("locked %d and updated %d rows, want %d", locked, u, n)
		}
	}

	for range 4 {
		var release chan struct{}
		select {
		case release = <-sending:
		case <-time.After(60 * time.Second):
			t.Fatal("no send began")
		}
		// The send has been under way for over a second.
		time.Sleep(1100 * time.Millisecond)
		if open := openTxns(0); len(open) > 0 {
			t.Fatalf("relay sessions are in a transaction during a send: %q", open)
		}
		lockAll()
		close(release)
	}

	// Now let the sends fail freely for a while.
	dest.set(func(f *faulty) { f.before = nil })
	go func() { // sends that were already waiting for the test
		for {
			select {
			case r := <-sending:
				close(r)
			case <-testDone:
				return
			}
		}
	}()
	// Only the head of each group is tried: the rows behind it wait.
	eventually(t, "the head of each group to fail twice", func() (bool, error) {
		// No transaction lives across sends: a generous bound, so a slow
		// machine's short transactions cannot trip it.
		if open := openTxns(5 * time.Second); len(open) > 0 {
			return false, fmt.Errorf("relay sessions hold a transaction open: %q", open)
		}
		var heads, behind int
		err := db.DB.QueryRowContext(ctx, `SELECT
				count(*) FILTER (WHERE attempts >= 2 AND last_error LIKE '%connection refused%' AND parked_at IS NULL),
				count(*) FILTER (WHERE attempts = 0)
			FROM watermill_outbox`).Scan(&heads, &behind)
		if behind != n/2 {
			return false, fmt.Errorf("%d rows behind the heads were never tried, want %d", behind, n/2)
		}
		return heads == n/2, err
	})
	lockAll()
	if s := stats(t, db.DB); s.Pending != n || s.Parked != 0 {
		t.Fatalf("during the outage: %+v, want %d pending and none parked", s, n)
	}

	// SQS is back.
	dest.set(func(f *faulty) { f.next = q.publisher(t) })
	got := q.drain(t, n)
	for body, c := range got {
		if c != 1 {
			t.Errorf("%s arrived %d times", body, c)
		}
	}
	eventually(t, "the outbox to empty", func() (bool, error) {
		s, err := outbox.ReadStats(ctx, db.DB)
		return s.Pending == 0 && s.Parked == 0, err
	})
}
