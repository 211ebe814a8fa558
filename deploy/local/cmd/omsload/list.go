package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"time"
)

// lister notices creates becoming visible with ListOrders instead of one
// GET per order per poll: every poll interval it lists, oldest first, the
// orders created since a watermark, by id, and resolves the pending ones
// among them. Its cost grows with the orders applied per interval, not
// with how long each waits, so a backlog does not make the load generator
// take the CPU of the system it measures (on a small machine, polling each
// order of a backlog cost query more CPU than the order itself).
//
// The watermark is causal, so that a listing covers only what a pending
// order can be among. Before a create is sent it takes as its floor the
// newest create time the lister has seen (at the start, the server's
// newest order): an order seen has committed, so it was applied before
// the create was sent and therefore before the create is applied, and the
// create's own create time is later. A listing starts at the lowest floor
// of the orders pending, less clockSlack for processors whose clocks
// differ. (It once started a minute back, then at the newest order seen
// less 2 s: after make bench's drain the first listing paged through
// 25,000 earlier orders while the run's first orders waited, the fixed
// rate's 1.5 s tail, and every later listing re-read 2 s of orders.)
//
// An order pending for longer than handOverAfter, or every order once
// listing fails, is handed to a GET watcher, so none is missed.
type lister struct {
	ctx  context.Context
	l    *loader
	gets *watcher

	mu      sync.Mutex
	pending map[string]listed
	closed  bool
	failed  bool
	// seen is the newest create time listed (the server's clock), or
	// before any, the server's newest at the start; zero: it had none.
	seen time.Time

	wake chan struct{}
	done chan struct{}
}

type listed struct {
	o    acceptedOrder
	at   time.Time // when it was handed over
	done func(ok bool)
}

const (
	// clockSlack is how far apart processors' clocks may be.
	clockSlack    = 100 * time.Millisecond
	handOverAfter = 10 * time.Second
	listPageSize  = 500
)

// newLister starts a lister; call it before the first create is sent.
func newLister(ctx context.Context, l *loader, gets *watcher) *lister {
	w := &lister{ctx: ctx, l: l, gets: gets, pending: map[string]listed{},
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	var err error
	if w.seen, err = w.newest(); err != nil {
		// The first listing will most likely fail too, and hand every
		// order to GETs; if not, it reaches back a minute, for a server
		// whose clock is behind this machine's.
		w.seen = time.Now().Add(-time.Minute)
	}
	go w.run()
	return w
}

// newest returns the create time of the newest order the server holds
// (the server's clock), or the zero time if it holds none.
func (w *lister) newest() (time.Time, error) {
	q := url.Values{"order_by": {"create_time desc"}, "page_size": {"1"}, "read_mask": {"id,create_time"}}
	page, err := w.page(q)
	if err != nil || len(page.Orders) == 0 {
		return time.Time{}, err
	}
	return page.Orders[0].CreateTime, nil
}

// floor is the create time below which no create sent from now on can
// be: take it before sending.
func (w *lister) floor() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen
}

// listPage is a page of ListOrders as the lister reads it.
type listPage struct {
	Orders []struct {
		ID         string    `json:"id"`
		CreateTime time.Time `json:"createTime"`
	} `json:"orders"`
	NextPageToken string `json:"nextPageToken"`
}

func (w *lister) page(q url.Values) (listPage, error) {
	var page listPage
	body, err := w.l.do(w.ctx, "GET", w.l.cfg.Query+"/v1/orders?"+q.Encode(), nil, nil)
	if err != nil {
		return page, err
	}
	if err := json.Unmarshal(body, &page); err != nil {
		return page, fmt.Errorf("list: %w: %.200s", err, body)
	}
	return page, nil
}

func (w *lister) watch(o acceptedOrder, done func(ok bool)) {
	w.mu.Lock()
	if w.failed {
		w.mu.Unlock()
		w.gets.watch(o, done)
		return
	}
	w.pending[o.id] = listed{o, time.Now(), done}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// wait returns once every order handed over is resolved, the GET
// watcher's included; no more may be handed over then.
func (w *lister) wait() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.done
	w.gets.wait()
}

func (w *lister) run() {
	defer close(w.done)
	t := time.NewTicker(w.l.cfg.Poll)
	defer t.Stop()
	for {
		w.mu.Lock()
		n, closed := len(w.pending), w.closed
		w.mu.Unlock()
		if n == 0 {
			if closed {
				return
			}
			// Nothing to look for: wait for an order (or for wait) rather
			// than list.
			<-w.wake
			continue
		}
		select {
		case <-t.C:
		case <-w.ctx.Done():
			w.handOver(func(listed) bool { return true })
			continue
		}
		if err := w.list(); err != nil {
			if w.ctx.Err() == nil {
				w.l.st.fail("list", err)
				w.mu.Lock()
				w.failed = true
				w.mu.Unlock()
			}
			w.handOver(func(listed) bool { return true })
			continue
		}
		now := time.Now()
		w.handOver(func(p listed) bool { return now.Sub(p.at) > handOverAfter })
	}
}

// handOver moves the pending orders that pick chooses to the GET watcher.
func (w *lister) handOver(pick func(listed) bool) {
	w.mu.Lock()
	var moved []listed
	for id, p := range w.pending {
		if pick(p) {
			moved = append(moved, p)
			delete(w.pending, id)
		}
	}
	w.mu.Unlock()
	for _, p := range moved {
		w.gets.watch(p.o, p.done)
	}
}

// list reads every page of orders created since the watermark, the
// lowest floor of the pending orders, and resolves the pending ones it
// finds.
func (w *lister) list() error {
	w.mu.Lock()
	var since time.Time
	first := true
	for _, p := range w.pending {
		if first || p.o.floor.Before(since) {
			since, first = p.o.floor, false
		}
	}
	w.mu.Unlock()
	q := url.Values{
		"order_by":  {"create_time asc"},
		"page_size": {fmt.Sprint(listPageSize)},
		"read_mask": {"id,create_time"},
	}
	if !since.IsZero() {
		q.Set("filter", fmt.Sprintf("create_time >= %q", since.Add(-clockSlack).UTC().Format(time.RFC3339Nano)))
	}
	for {
		page, err := w.page(q)
		if err != nil {
			return err
		}
		var found []listed
		w.mu.Lock()
		for _, o := range page.Orders {
			if o.CreateTime.After(w.seen) {
				w.seen = o.CreateTime
			}
			if p, ok := w.pending[o.ID]; ok {
				found = append(found, p)
				delete(w.pending, o.ID)
			}
		}
		w.mu.Unlock()
		for _, p := range found {
			p.done(true)
		}
		if page.NextPageToken == "" {
			return nil
		}
		q.Set("page_token", page.NextPageToken)
	}
}
