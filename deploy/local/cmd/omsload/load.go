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
	// measure the emulator rather than OMS.
	pending chan struct{}
}

// acceptedOrder is a create that ingest answered 202 for.
type acceptedOrder struct {
	id   string
	sent time.Time // when its POST was sent: visibility is measured from here
}

func newLoader(cfg config, client *http.Client) *loader {
	return &loader{cfg: cfg, client: client, st: newStats(cfg.N), pending: make(chan struct{}, cfg.MaxPending)}
}

// run posts cfg.N creates from cfg.C workers and follows each accepted order
// until it is visible (and, with -lifecycle, paid). It returns how long the
// posting took.
func (l *loader) run(ctx context.Context) time.Duration {
	start := time.Now()
	// Paying has its own pollers, so that orders waiting for PAID do not
	// delay noticing that later creates became visible. Neither channel
	// fills up: each order in them holds one of MaxPending slots.
	toFollow := make(chan acceptedOrder, l.cfg.MaxPending)
	toPay := make(chan acceptedOrder, l.cfg.MaxPending)
	// Pollers are bounded because their GETs share the CPU with the
	// services being measured.
	followers, payers := 0, 0
	if l.cfg.Visible {
		followers = l.cfg.Pollers
	}
	if l.cfg.Lifecycle {
		payers = l.cfg.Pollers
	}
	following := pool(followers, toFollow, func(o acceptedOrder) { l.follow(ctx, o, toPay) })
	paying := pool(payers, toPay, func(o acceptedOrder) { l.payAndWait(ctx, o) })
	var posting sync.WaitGroup
	var next atomic.Int64
	for range l.cfg.C {
		posting.Go(func() {
			for ctx.Err() == nil && next.Add(1) <= int64(l.cfg.N) {
				l.createOne(ctx, toFollow)
			}
		})
	}
	posting.Wait()
	postPhase := time.Since(start)
	close(toFollow)
	following.Wait()
	close(toPay)
	paying.Wait()
	return postPhase
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

func (l *loader) createOne(ctx context.Context, toFollow chan<- acceptedOrder) {
	if l.cfg.Visible {
		select {
		case l.pending <- struct{}{}:
		case <-ctx.Done():
			return
		}
	}
	sent := time.Now()
	l.st.posted.Add(1)
	id, err := l.create(ctx)
	if err != nil {
		l.st.fail("create", err)
		l.release()
		return
	}
	l.st.add(&l.st.post, time.Since(sent))
	l.st.accepted.Add(1)
	if l.cfg.Visible {
		toFollow <- acceptedOrder{id: id, sent: sent}
	}
}

func (l *loader) release() {
	if l.cfg.Visible {
		<-l.pending
	}
}

// follow waits for an accepted order to be applied. With -lifecycle it
// passes the order, and its pending slot, on to the pay stage.
func (l *loader) follow(ctx context.Context, o acceptedOrder, toPay chan<- acceptedOrder) {
	if !l.waitState(ctx, o.id, "") {
		l.release()
		return
	}
	l.st.add(&l.st.toVisible, time.Since(o.sent))
	l.st.visible.Add(1)
	if l.cfg.Lifecycle {
		toPay <- o
		return
	}
	l.release()
}

func (l *loader) payAndWait(ctx context.Context, o acceptedOrder) {
	defer l.release()
	sent := time.Now()
	// The request id goes in a header: with body "*" the gateway reads no
	// query parameters.
	h := http.Header{"Idempotency-Key": {uuid.NewString()}}
	if _, err := l.do(ctx, http.MethodPost, l.cfg.Ingest+"/v1/orders/"+o.id+":pay", payBody, h); err != nil {
		l.st.fail("pay", err)
		return
	}
	l.st.add(&l.st.payPost, time.Since(sent))
	if !l.waitState(ctx, o.id, "PAID") {
		return
	}
	l.st.add(&l.st.toPaid, time.Since(sent))
	l.st.paid.Add(1)
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

// waitState polls query until the order exists and, if want is set, is in
// that state. It gives up only when ctx ends.
func (l *loader) waitState(ctx context.Context, id, want string) bool {
	u := l.cfg.Query + "/v1/orders/" + id + "?read_mask=id,state,version"
	for {
		body, err := l.do(ctx, http.MethodGet, u, nil, nil)
		var he *httpError
		switch {
		case err == nil:
			var o struct {
				State string `json:"state"`
			}
			if want == "" || json.Unmarshal(body, &o) == nil && o.State == want {
				return true
			}
		case ctx.Err() != nil:
			return false
		case errors.As(err, &he) && he.status == http.StatusNotFound:
			// Not applied yet.
		default:
			l.st.fail("get", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(l.cfg.Poll):
		}
	}
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
