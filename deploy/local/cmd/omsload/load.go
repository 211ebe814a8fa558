package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Every order is the same: what is measured is the pipeline, not the domain.
var (
	createBody = []byte(`{"customerId":"c-1","currencyCode":"USD","lineItems":[{"sku":"SKU-1","name":"Mug","quantity":2,"unitPriceMinor":"1200"}]}`)
	payBody    = []byte(`{"paymentReference":"ch_1","amountMinor":"2400"}`)
)

type loader struct {
	cfg    config
	client *http.Client
	st     *stats
	// pending holds a slot for each order in flight until it is visible:
	// goaws drains far slower with a big backlog, so an unbounded one would
	// measure the emulator rather than OMS. Closed loop only: an open loop
	// sends on schedule whatever is pending.
	pending chan struct{}
	// floor, when set, is the lister's: see lister.floor.
	floor func() time.Time
}

// acceptedOrder is a create that ingest answered 202 for.
type acceptedOrder struct {
	id string
	// from is when its POST was sent, or in an open loop when it was
	// scheduled to be: visibility is measured from here.
	from time.Time
	// sent and answered are when its POST went out and was answered.
	sent, answered time.Time
	// floor is the lister's floor when it was sent: its create time is
	// later.
	floor time.Time
}

// maxOpenInFlight bounds an open loop's POSTs in flight, so that a stalled
// ingest costs goroutines only up to here; a send held back by it is late,
// and its lateness is in its POST→visible latency.
const maxOpenInFlight = 4096

func newLoader(cfg config, client *http.Client) *loader {
	st := newStats(cfg.N)
	st.tracing = cfg.TraceFile != ""
	return &loader{cfg: cfg, client: client, st: st, pending: make(chan struct{}, cfg.MaxPending)}
}

// closedLoop says whether workers wait for pending slots.
func (l *loader) closedLoop() bool { return l.cfg.Rate == 0 && l.cfg.Visible }

// run posts cfg.N creates, from cfg.C workers or at cfg.Rate, and follows
// each accepted order until it is visible (and, with -lifecycle, paid). It
// returns how long the posting took.
func (l *loader) run(ctx context.Context) time.Duration {
	start := time.Now()
	// Paying has its own pollers, so that orders waiting for PAID do not
	// delay noticing that later creates became visible. The channel never
	// fills: each order in it holds one of MaxPending slots, or in an open
	// loop it is as large as the run.
	toPay := make(chan acceptedOrder, max(l.cfg.MaxPending, l.cfg.N))
	gets := newWatcher(ctx, l, "", l.cfg.Pollers)
	var visible visibility = gets
	if l.cfg.Watch == "list" {
		ls := newLister(ctx, l, gets)
		visible, l.floor = ls, ls.floor
	}
	paid := newWatcher(ctx, l, "PAID", l.cfg.Pollers)
	accepted := func(o acceptedOrder) {
		if !l.cfg.Visible {
			return
		}
		visible.watch(o, func(ok bool) {
			if !ok {
				l.release()
				return
			}
			now := time.Now()
			l.st.add(&l.st.toVisible, now.Sub(o.from))
			l.st.visible.Add(1)
			l.st.trace(o, now)
			if l.cfg.Lifecycle {
				toPay <- o // passing on its pending slot
				return
			}
			l.release()
		})
	}
	payers := 0
	if l.cfg.Lifecycle {
		payers = l.cfg.Pollers
	}
	paying := pool(payers, toPay, func(o acceptedOrder) { l.pay(ctx, o, paid) })

	if l.cfg.Rate > 0 {
		l.openLoop(ctx, accepted)
	} else {
		var posting sync.WaitGroup
		var next atomic.Int64
		for range l.cfg.C {
			posting.Go(func() {
				for ctx.Err() == nil && next.Add(1) <= int64(l.cfg.N) {
					if !l.acquire(ctx) {
						return
					}
					now := time.Now()
					l.createOne(ctx, now, now, accepted)
				}
			})
		}
		posting.Wait()
	}
	postPhase := time.Since(start)
	visible.wait()
	close(toPay)
	paying.Wait()
	paid.wait()
	return postPhase
}

// openLoop sends create i at start + i/Rate, each from its own goroutine,
// without waiting for earlier ones to be answered.
func (l *loader) openLoop(ctx context.Context, accepted func(acceptedOrder)) {
	var posting sync.WaitGroup
	defer posting.Wait()
	inFlight := make(chan struct{}, maxOpenInFlight)
	timer := time.NewTimer(0)
	defer timer.Stop()
	start := time.Now()
	for i := range l.cfg.N {
		at := start.Add(time.Duration(float64(i) * float64(time.Second) / l.cfg.Rate))
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		select {
		case inFlight <- struct{}{}:
		case <-ctx.Done():
			return
		}
		posting.Go(func() {
			defer func() { <-inFlight }()
			sent := time.Now()
			l.st.add(&l.st.lag, sent.Sub(at))
			l.createOne(ctx, at, sent, accepted)
		})
	}
}

// pool runs fn on everything sent on in, from n goroutines.
func pool(n int, in <-chan acceptedOrder, fn func(acceptedOrder)) *sync.WaitGroup {
	wg := new(sync.WaitGroup)
	for range n {
		wg.Go(func() {
			for o := range in {
				fn(o)
			}
		})
	}
	return wg
}

// acquire takes a pending slot in a closed loop; false when ctx ended.
func (l *loader) acquire(ctx context.Context) bool {
	if !l.closedLoop() {
		return true
	}
	select {
	case l.pending <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (l *loader) release() {
	if l.closedLoop() {
		<-l.pending
	}
}

// createOne posts a create sent at sent (scheduled at from) and hands an
// accepted one to accepted.
func (l *loader) createOne(ctx context.Context, from, sent time.Time, accepted func(acceptedOrder)) {
	l.st.posted.Add(1)
	var floor time.Time
	if l.floor != nil {
		floor = l.floor()
	}
	id, err := l.create(ctx)
	if err != nil {
		l.st.fail("create", err)
		l.release()
		return
	}
	answered := time.Now()
	l.st.add(&l.st.post, answered.Sub(sent))
	l.st.accepted.Add(1)
	if !l.cfg.Visible {
		return
	}
	accepted(acceptedOrder{id: id, from: from, sent: sent, answered: answered, floor: floor})
}

// pay pays a visible order and has paid watch for PAID; the order's
// pending slot goes with it.
func (l *loader) pay(ctx context.Context, o acceptedOrder, paid *watcher) {
	sent := time.Now()
	// The request id goes in a header: with body "*" the gateway reads no
	// query parameters.
	h := http.Header{"Idempotency-Key": {uuid.NewString()}}
	if _, err := l.do(ctx, http.MethodPost, l.cfg.Ingest+"/v1/orders/"+o.id+":pay", payBody, h); err != nil {
		l.st.fail("pay", err)
		l.release()
		return
	}
	l.st.add(&l.st.payPost, time.Since(sent))
	paid.watch(acceptedOrder{id: o.id, from: sent}, func(ok bool) {
		defer l.release()
		if ok {
			l.st.add(&l.st.toPaid, time.Since(sent))
			l.st.paid.Add(1)
		}
	})
}

// visibility tells when orders become visible: a watcher (a GET per
// order per poll) or a lister (ListOrders, handing orders it does not find
// to a watcher).
type visibility interface {
	watch(o acceptedOrder, done func(ok bool))
	wait()
}

// watcher polls query until orders reach a state, with at most n GETs in
// flight. An order waiting for its next poll holds no poller, so how many
// orders can be followed at once does not depend on how slow they are.
type watcher struct {
	ctx   context.Context
	l     *loader
	want  string // "" for "exists"
	work  chan watch
	polls sync.WaitGroup // the pollers
	open  sync.WaitGroup // orders not yet decided
}

type watch struct {
	o    acceptedOrder
	done func(ok bool)
}

func newWatcher(ctx context.Context, l *loader, want string, n int) *watcher {
	w := &watcher{ctx: ctx, l: l, want: want, work: make(chan watch, n)}
	for range n {
		w.polls.Go(w.poll)
	}
	return w
}

// watch polls for o until it is in the wanted state (done(true)) or the
// run's context ends (done(false)).
func (w *watcher) watch(o acceptedOrder, done func(ok bool)) {
	w.open.Add(1)
	w.work <- watch{o, done}
}

func (w *watcher) poll() {
	for x := range w.work {
		ok, final := w.l.check(w.ctx, x.o.id, w.want)
		if !final {
			// Sent from a goroutine of its own: a poller must never wait
			// for room in its own queue.
			time.AfterFunc(w.l.cfg.Poll, func() { w.work <- x })
			continue
		}
		x.done(ok)
		w.open.Done()
	}
}

// wait returns once every watched order is decided, and stops the pollers.
func (w *watcher) wait() {
	w.open.Wait()
	close(w.work)
	w.polls.Wait()
}

func (l *loader) create(ctx context.Context) (string, error) {
	u := l.cfg.Ingest + "/v1/orders?request_id=" + uuid.NewString()
	body, err := l.do(ctx, http.MethodPost, u, createBody, nil)
	if err != nil {
		return "", err
	}
	var acc struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(body, &acc); err != nil || !strings.HasPrefix(acc.Name, "orders/") {
		return "", fmt.Errorf("202 without an order name: %.200s", body)
	}
	return strings.TrimPrefix(acc.Name, "orders/"), nil
}

// check polls query once for the order: final is true when it exists and,
// if want is set, is in that state (ok), or when the run's context ended.
func (l *loader) check(ctx context.Context, id, want string) (ok, final bool) {
	body, err := l.do(ctx, http.MethodGet, l.cfg.Query+"/v1/orders/"+id+"?read_mask=id,state,version", nil, nil)
	var he *httpError
	switch {
	case err == nil:
		var o struct {
			State string `json:"state"`
		}
		if want == "" || json.Unmarshal(body, &o) == nil && o.State == want {
			return true, true
		}
	case ctx.Err() != nil:
		return false, true
	case errors.As(err, &he) && he.status == http.StatusNotFound:
		// Not applied yet.
	default:
		l.st.fail("get", err)
	}
	return false, ctx.Err() != nil
}

// httpError is a response outside 2xx.
type httpError struct {
	status int
	body   string
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s", e.status, e.body) }

// do sends one request and returns the body of a 2xx response. Nothing is
// retried: a failure is data for the report.
func (l *loader) do(ctx context.Context, method, url string, body []byte, h http.Header) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if l.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+l.cfg.Token)
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, &httpError{status: resp.StatusCode, body: strings.TrimSpace(string(b))}
	}
	return b, nil
}

// progress prints a line a second to stderr until the returned stop is called.
func (l *loader) progress(every time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		var last int64
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			acc := l.st.accepted.Load()
			fmt.Fprintf(os.Stderr, "%6.1fs posted=%d accepted=%d visible=%d paid=%d pending=%d post/s=%.0f\n",
				time.Since(start).Seconds(), l.st.posted.Load(), acc, l.st.visible.Load(), l.st.paid.Load(),
				len(l.pending), float64(acc-last)/every.Seconds())
			last = acc
		}
	})
	return func() { close(done); wg.Wait() }
}
