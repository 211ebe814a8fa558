package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/status"

	"github.com/omsdev/oms/pkg/changefeed"
	"github.com/omsdev/oms/pkg/orderstore"
)

// How a waiter learns of a change. The process holds one LISTEN
// connection (pkg/changefeed); a waiter registers itself in order_watches,
// and commands announce only the changes of watched orders (migration
// 10: every notifying commit takes one global lock, so announcing every
// change cost a third of the write throughput). The order is:
//
//  1. subscribe to the feed, in process;
//  2. register the watch, which waits for any command holding the order's
//     row (orderstore.WatchOrder), so that
//  3. the first read sees every change that was not announced.
//
// The row lock cannot cover what has no row yet, or a write that does not
// take it: an order whose create is in flight (its INSERT's trigger may
// have run before the watch was visible), or an operation recorded
// without touching its order (a reused request key, a dead-lettered
// command). While what is waited for is missing or pending, the waiter
// also re-reads on a backoff (backstop), within the call's deadline.

const (
	// watchMargin is added to a watch's expiry beyond the call's own end:
	// it covers the skew between this host's clock and PostgreSQL's, and
	// the time an unwatch takes to come.
	watchMargin = 5 * time.Second
	// unwatchTimeout bounds the best-effort unwatch after a call ends; a
	// watch left behind lapses at its expiry.
	unwatchTimeout = 2 * time.Second
	// purgeEvery is how often each process deletes expired watches.
	purgeEvery = time.Minute

	// The backstop's re-reads: the first soon after the watch starts, then
	// less often, since a create in flight commits within milliseconds and
	// anything later is announced unless it bypasses the order's row.
	backstopFirst = 50 * time.Millisecond
	backstopMax   = time.Second
)

// follower subscribes waiters to the process's changefeed and registers
// their watches.
type follower struct {
	feed  *changefeed.Feed
	store *orderstore.Store
	log   *slog.Logger
	// maxWait (QUERY_MAX_WAIT) is how long a watch lasts at most before it
	// is renewed.
	maxWait time.Duration
	// process names this process's watches, and next numbers them.
	process string
	next    atomic.Uint64
}

func newFollower(feed *changefeed.Feed, store *orderstore.Store, log *slog.Logger, maxWait time.Duration) *follower {
	b := make([]byte, 8)
	rand.Read(b)
	return &follower{feed: feed, store: store, log: log, maxWait: maxWait, process: hex.EncodeToString(b)}
}

// following is one waiter's subscription and watch.
type following struct {
	*changefeed.Subscription
	f                *follower
	orderID, watcher string
	// wait is how long the waiter means to wait; until is the watch's
	// registered expiry.
	wait  time.Duration
	until time.Time
}

// follow subscribes to key's announcements on channel and then registers
// a watch of orderID, whose changes and outcomes those are, for wait (at
// most maxWait, and within ctx's deadline). Read after it returns.
func (f *follower) follow(ctx context.Context, channel, key, orderID string, wait time.Duration) (*following, error) {
	w := &following{
		Subscription: f.feed.Subscribe(channel, key),
		f:            f, orderID: orderID, wait: wait,
		watcher: f.process + "-" + strconv.FormatUint(f.next.Add(1), 10),
	}
	if err := w.renew(ctx); err != nil {
		w.Subscription.Close()
		return nil, err
	}
	return w, nil
}

// renew registers the watch again, until wait from now (or ctx's
// deadline) and the margin. Once registered it is also how a watch comes
// back after the table lost it (a server crash empties the unlogged
// table, and the feed reports Lost).
func (w *following) renew(ctx context.Context) error {
	d := min(w.wait, w.f.maxWait)
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	until := time.Now().Add(max(d, 0) + watchMargin)
	if err := w.f.store.WatchOrder(ctx, w.orderID, w.watcher, until); err != nil {
		return err
	}
	w.until = until
	return nil
}

// renewal fires when a long wait (a WatchOrder stream) should renew its
// watch: at half its remaining life, so that one failed renewal leaves
// time for another. It is nil when the watch outlives ctx's deadline.
func (w *following) renewal(ctx context.Context) <-chan time.Time {
	if dl, ok := ctx.Deadline(); ok && !w.until.Before(dl.Add(watchMargin)) {
		return nil
	}
	return time.After(time.Until(w.until) / 2)
}

// Close ends the subscription, and the watch in the background: the
// caller's answer does not wait for it, and one that fails lapses.
func (w *following) Close() {
	w.Subscription.Close()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), unwatchTimeout)
		defer cancel()
		if err := w.f.store.UnwatchOrder(ctx, w.orderID, w.watcher); err != nil {
			w.f.log.Debug("unwatch; the watch lapses at its expiry", "order_id", w.orderID, "err", err)
		}
	}()
}

// watchError is a failed registration's status: the caller's own end
// when it has gone, else as for a failed read.
func watchError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return storeError(err)
}

// purgeWatches deletes expired watches every purgeEvery until ctx ends:
// watches whose process died or whose unwatch failed. They announce
// nothing once expired; this keeps the table small.
func purgeWatches(ctx context.Context, store *orderstore.Store, log *slog.Logger) {
	t := time.NewTicker(purgeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := store.PurgeWatches(ctx); err != nil && ctx.Err() == nil {
			log.Warn("purge expired watches", "err", err)
		} else if n > 0 {
			log.Debug("purged expired watches", "count", n)
		}
	}
}

// backstop paces the re-reads of something missing or pending, which an
// announcement may not cover: backstopFirst, doubling to backstopMax.
type backstop struct{ next time.Duration }

// after is when to re-read next.
func (b *backstop) after() <-chan time.Time {
	b.next = min(max(2*b.next, backstopFirst), backstopMax)
	return time.After(b.next)
}
