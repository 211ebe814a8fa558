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
// An order whose create commits later than others created after it (its
// processor's clock read before theirs) is still listed while within
// listSlack of the newest seen. An order pending for longer than
// handOverAfter, or every order once listing fails, is handed to a GET
// watcher, so none is missed.
type lister struct {
	ctx  context.Context
	l    *loader
	gets *watcher

	mu      sync.Mutex
	pending map[string]listed
	closed  bool
	failed  bool
	since   time.Time // list orders created from here (the server's clock)

	wake chan struct{}
	done chan struct{}
}

type listed struct {
	o    acceptedOrder
	at   time.Time // when it was handed over
	done func(ok bool)
}

const (
	listSlack     = 2 * time.Second
	handOverAfter = 10 * time.Second
	listPageSize  = 500
)

func newLister(ctx context.Context, l *loader, gets *watcher) *lister {
	w := &lister{ctx: ctx, l: l, gets: gets, pending: map[string]listed{},
		// The first listing reaches back a minute, for a server whose
		// clock is behind this machine's.
		since: time.Now().Add(-time.Minute),
		wake:  make(chan struct{}, 1), done: make(chan struct{})}
	go w.run()
	return w
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

// list reads every page of orders created since the watermark and
// resolves the pending ones it finds.
func (w *lister) list() error {
	w.mu.Lock()
	since := w.since
	w.mu.Unlock()
	q := url.Values{
		"filter":    {fmt.Sprintf("create_time >= %q", since.UTC().Format(time.RFC3339Nano))},
		"order_by":  {"create_time asc"},
		"page_size": {fmt.Sprint(listPageSize)},
		"read_mask": {"id,create_time"},
	}
	var newest time.Time
	for {
		body, err := w.l.do(w.ctx, "GET", w.l.cfg.Query+"/v1/orders?"+q.Encode(), nil, nil)
		if err != nil {
			return err
		}
		var page struct {
			Orders []struct {
				ID         string    `json:"id"`
				CreateTime time.Time `json:"createTime"`
			} `json:"orders"`
			NextPageToken string `json:"nextPageToken"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return fmt.Errorf("list: %w: %.200s", err, body)
		}
		var found []listed
		w.mu.Lock()
		for _, o := range page.Orders {
			if o.CreateTime.After(newest) {
				newest = o.CreateTime
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
			break
		}
		q.Set("page_token", page.NextPageToken)
	}
	if !newest.IsZero() {
		w.mu.Lock()
		if s := newest.Add(-listSlack); s.After(w.since) {
			w.since = s
		}
		w.mu.Unlock()
	}
	return nil
}
