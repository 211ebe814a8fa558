package changefeed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/driver/pgdriver"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/orderstore"
)

// harness is a feed over the real server on a channel of the test's own,
// with a connection application name of its own so the test can find (and
// kill) its listening backend among other tests'.
type harness struct {
	t       *testing.T
	db      *bun.DB
	app     string
	channel string
	feed    *Feed
	done    chan error
	cancel  context.CancelFunc
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	id := hex.EncodeToString(b)
	h := &harness{t: t, app: "changefeed_test_" + id, channel: "changefeed_test_" + id}
	h.db = orderstore.Open(dbtest.URL(), pgdriver.WithApplicationName(h.app))
	t.Cleanup(func() { h.db.Close() })
	h.feed = New(h.db, slog.New(slog.NewTextHandler(t.Output(), nil)), h.channel)
	h.feed.minBackoff, h.feed.maxBackoff = 10*time.Millisecond, 100*time.Millisecond
	return h
}

// start runs the feed until the test ends.
func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- h.feed.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		<-h.done
	})
}

// subscribeAndStart subscribes n times to key "k", starts the feed, and
// reads from each subscription the Lost of the first connection: only then
// is the channel known to be listened to.
func (h *harness) subscribeAndStart(n int) []*Subscription {
	h.t.Helper()
	subs := make([]*Subscription, n)
	for i := range subs {
		subs[i] = h.feed.Subscribe(h.channel, "k")
	}
	h.start()
	for _, s := range subs {
		if e := next(h.t, s); !e.Lost {
			h.t.Fatalf("first event %+v, want Lost", e)
		}
	}
	return subs
}

func (h *harness) notify(payload string) {
	h.t.Helper()
	if _, err := h.db.ExecContext(context.Background(), "SELECT pg_notify(?, ?)", h.channel, payload); err != nil {
		h.t.Fatal(err)
	}
}

// next is the subscription's next event, failing after a few seconds.
func next(t *testing.T, s *Subscription) Event {
	t.Helper()
	select {
	case e, ok := <-s.C:
		if !ok {
			t.Fatal("subscription closed")
		}
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	panic("unreachable")
}

// none checks that nothing more arrives for a moment.
func none(t *testing.T, s *Subscription) {
	t.Helper()
	select {
	case e := <-s.C:
		t.Fatalf("unexpected event %+v", e)
	case <-time.After(200 * time.Millisecond):
	}
}

// listeners lists the harness's listening backends.
func (h *harness) listeners() []int {
	h.t.Helper()
	var pids []int
	err := h.db.NewRaw("SELECT pid FROM pg_stat_activity WHERE application_name = ? AND query LIKE 'LISTEN%'", h.app).
		Scan(context.Background(), &pids)
	if err != nil {
		h.t.Fatal(err)
	}
	return pids
}

func TestDeliveryByKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a1, a2, b := h.feed.Subscribe(h.channel, "a"), h.feed.Subscribe(h.channel, "a"), h.feed.Subscribe(h.channel, "b")
	other := h.feed.Subscribe("another_channel", "a")
	h.start()
	// The first connection tells earlier subscribers to re-read: only then
	// is the channel known to be listened to.
	for _, s := range []*Subscription{a1, a2, b} {
		if e := next(t, s); !e.Lost {
			t.Fatalf("first event %+v, want Lost", e)
		}
	}
	<-other.C

	for _, p := range []string{"a:1", "c:1", "b:1", "ab:1", "a", "a:2:x"} {
		h.notify(p)
	}
	for _, s := range []*Subscription{a1, a2} {
		for _, want := range []string{"a:1", "a", "a:2:x"} {
			if e := next(t, s); e.Lost || e.Payload != want {
				t.Fatalf("got %+v, want %q", e, want)
			}
		}
		none(t, s)
	}
	if e := next(t, b); e.Payload != "b:1" {
		t.Fatalf("b got %+v", e)
	}
	none(t, b)
	none(t, other)

	// One connection listens, whatever the number of subscribers.
	if pids := h.listeners(); len(pids) != 1 {
		t.Fatalf("listening backends %v, want one", pids)
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	subs := h.subscribeAndStart(2)
	s, kept := subs[0], subs[1]
	s.Close()
	s.Close()
	if _, ok := <-s.C; ok {
		t.Fatal("C is open after Close")
	}
	h.notify("k:1")
	if e := next(t, kept); e.Payload != "k:1" {
		t.Fatalf("got %+v", e)
	}
	kept.Close()
	h.feed.mu.Lock()
	defer h.feed.mu.Unlock()
	if len(h.feed.subs) != 0 {
		t.Fatalf("subscriptions left: %v", h.feed.subs)
	}
}

func TestSlowSubscriberGetsLost(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	subs := h.subscribeAndStart(2)
	slow, fast := subs[0], subs[1]

	const n = 5 * bufferSize
	// The fast one gets every event, in order, although the slow one reads
	// none and is full after bufferSize.
	for i := range n {
		h.notify(fmt.Sprintf("k:%d", i))
		if e, want := next(t, fast), fmt.Sprintf("k:%d", i); e.Payload != want {
			t.Fatalf("fast got %+v, want %q", e, want)
		}
	}
	// The slow one holds at most a buffer: a Lost for what it missed,
	// then the newest events, ending with the last.
	var got []Event
	for len(slow.C) > 0 {
		got = append(got, <-slow.C)
	}
	if len(got) == 0 || len(got) > bufferSize || !got[0].Lost {
		t.Fatalf("slow got %+v, want Lost then the newest events", got)
	}
	// After the Lost come the newest events, consecutive, up to the last.
	for i, e := range got[1:] {
		if want := fmt.Sprintf("k:%d", n-len(got)+1+i); e.Lost || e.Payload != want {
			t.Fatalf("slow got %+v, want Lost then k:%d..k:%d", got, n-len(got)+1, n-1)
		}
	}
}

func TestLostAfterConnectionKilled(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.subscribeAndStart(1)[0]
	pids := h.listeners()
	if len(pids) != 1 {
		t.Fatalf("listening backends %v, want one", pids)
	}
	if _, err := h.db.ExecContext(context.Background(), "SELECT pg_terminate_backend(?)", pids[0]); err != nil {
		t.Fatal(err)
	}
	if e := next(t, s); !e.Lost {
		t.Fatalf("after the kill got %+v, want Lost", e)
	}
	// Listening again on a new connection.
	if now := h.listeners(); len(now) != 1 || now[0] == pids[0] {
		t.Fatalf("listening backends %v after killing %d", now, pids[0])
	}
	h.notify("k:2")
	if e := next(t, s); e.Payload != "k:2" {
		t.Fatalf("got %+v", e)
	}
}

// A silent connection is pinged and kept: no reconnect, so no Lost.
func TestPingKeepsSilentConnection(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.feed.pingEvery = 50 * time.Millisecond
	s := h.subscribeAndStart(1)[0]
	pids := h.listeners()
	select {
	case e := <-s.C:
		t.Fatalf("unexpected event %+v on a silent channel", e)
	case <-time.After(time.Second):
	}
	if now := h.listeners(); len(now) != 1 || now[0] != pids[0] {
		t.Fatalf("listening backends %v, were %v", now, pids)
	}
}

func TestRunReturnsOnCancel(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.subscribeAndStart(1)
	start := time.Now()
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		h.done <- err // for the cleanup
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2s of cancel")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Run took %v to return", d)
	}
	// The connection is closed, not left listening.
	deadline := time.Now().Add(5 * time.Second)
	for len(h.listeners()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still listening: %v", h.listeners())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
