package outbox_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/uptrace/bun"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/outbox"
)

const (
	groups   = 50
	perGroup = 10
)

func noteID(g, i int) string { return fmt.Sprintf("g%02d-%02d", g, i) }

// writeAll writes perGroup notifications to each group, each group's in
// order, from several writers at once, one transaction per notification.
func writeAll(t *testing.T, db *bun.DB, destination string) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range 5 {
		wg.Go(func() {
			for i := range perGroup {
				for g := w; g < groups; g += 5 {
					write(t, db, destination, note(noteID(g, i), fmt.Sprintf("g%02d", g)))
				}
			}
		})
	}
	wg.Wait()
}

// checkDelivery: every notification reached the destination, each group's
// first deliveries in the order written; it returns the duplicates.
func checkDelivery(t *testing.T, l *ledger) []string {
	t.Helper()
	if n := l.delivered(); n != groups*perGroup {
		t.Fatalf("%d notifications delivered, want %d", n, groups*perGroup)
	}
	for g := range groups {
		want := make([]string, perGroup)
		for i := range want {
			want[i] = noteID(g, i)
		}
		if got := l.order(fmt.Sprintf("g%02d", g)); !slices.Equal(got, want) {
			t.Errorf("group g%02d delivered in the order %v", g, got)
		}
	}
	d := l.duplicates()
	slices.Sort(d)
	return d
}

// Two relays share the outbox: every notification is delivered once, in
// order within its group.
func TestTwoRelaysKeepGroupOrder(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	q := newFIFO(t)
	l := newLedger()
	cfg := outbox.RelayConfig{PollInterval: 5 * time.Millisecond, BatchSize: 20, Concurrency: 8}
	var sent [2]int
	var mu sync.Mutex
	for i := range 2 {
		cfg.Name = fmt.Sprintf("relay-%d", i)
		start(t, db.DB, &faulty{l: l, next: q.publisher(t), after: func(*message.Message) {
			mu.Lock()
			sent[i]++
			mu.Unlock()
		}}, cfg)
	}
	writeAll(t, db, q.name)

	eventually(t, "every notification to be delivered", func() (bool, error) {
		s, err := outbox.ReadStats(context.Background(), db.DB)
		return s.Pending == 0 && l.delivered() == groups*perGroup, err
	})
	dups := checkDelivery(t, l)
	mu.Lock()
	t.Logf("relay-0 sent %d, relay-1 sent %d; %d duplicates", sent[0], sent[1], len(dups))
	mu.Unlock()
	if len(dups) != 0 {
		t.Errorf("duplicates with no relay dying: %v", dups)
	}
	if got := q.drain(t, groups*perGroup); len(got) != groups*perGroup {
		t.Errorf("the queue holds %d distinct notifications", len(got))
	}
}

// One of two relays dies mid-batch (its context is cancelled between the
// claim and the delete). Its leased rows are sent again by the other once
// the lease expires: every notification arrives, in order within its
// group, and only rows the dead relay had leased arrive twice.
func TestRelayKilledMidBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	q := newFIFO(t)
	writeAll(t, db, q.name)

	l := newLedger()
	cfg := outbox.RelayConfig{
		PollInterval: 5 * time.Millisecond, BatchSize: 20, Lease: 4 * time.Second, SendTimeout: 3 * time.Second,
	}

	// The victim sends one message at a time; after its fifth, it notes
	// what it holds leased and dies before recording anything.
	victimCtx, kill := context.WithCancel(ctx)
	var leased []string
	dead := make(chan struct{})
	var sends atomic.Int32
	victimCfg := cfg
	victimCfg.Name, victimCfg.Concurrency = "victim", 1
	victim, err := outbox.NewRelay(db.DB, &faulty{l: l, next: q.publisher(t), after: func(*message.Message) {
		if sends.Add(1) != 5 {
			return
		}
		rows, err := db.DB.QueryContext(ctx, `SELECT uuid FROM watermill_outbox WHERE leased_by = 'victim'`)
		if err != nil {
			t.Error(err)
		}
		for rows != nil && rows.Next() {
			var id string
			rows.Scan(&id)
			leased = append(leased, id)
		}
		kill()
	}}, victimCfg, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(dead)
		victim.Run(victimCtx)
	}()
	t.Cleanup(func() { victim.Close() })

	// The survivor starts once the victim holds its first batch.
	eventually(t, "the victim to claim", func() (bool, error) {
		var c int
		err := db.DB.QueryRowContext(ctx, `SELECT count(*) FROM watermill_outbox WHERE leased_by = 'victim'`).Scan(&c)
		return c > 0, err
	})
	cfg.Name = "survivor"
	start(t, db.DB, &faulty{l: l, next: q.publisher(t)}, cfg)

	select {
	case <-dead:
	case <-time.After(60 * time.Second):
		t.Fatal("the victim did not die")
	}
	eventually(t, "every notification to be delivered", func() (bool, error) {
		s, err := outbox.ReadStats(ctx, db.DB)
		return s.Pending == 0 && l.delivered() == groups*perGroup, err
	})
	dups := checkDelivery(t, l)
	t.Logf("the victim died holding %d leased rows; %d duplicates: %v", len(leased), len(dups), dups)
	if len(leased) == 0 {
		t.Fatal("the victim held no rows when it died")
	}
	if len(dups) == 0 {
		t.Error("no duplicates: the rows the victim sent but did not delete were not sent again")
	}
	for _, d := range dups {
		if !slices.Contains(leased, d) {
			t.Errorf("%s arrived twice but was not leased by the dead relay", d)
		}
	}
	if got := q.drain(t, groups*perGroup); len(got) != groups*perGroup {
		t.Errorf("the queue holds %d distinct notifications", len(got))
	}
}
