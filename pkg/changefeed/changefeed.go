// Package changefeed holds one LISTEN connection per process and fans
// PostgreSQL notifications out to subscribers by key.
//
// Watchers do not poll what exists: each subscribes to the key it watches
// (an order's id, an operation's id), and re-reads what it watches when
// told of a change. (What does not exist yet, an order whose create is in
// flight, is re-read on a backoff by the query service: see
// services/query/follow.go.)
// A subscriber that may have missed a notification, because the connection
// was lost or because it fell behind, is told so with a Lost event and
// re-reads too; so no notification is ever needed for correctness, only for
// promptness.
package changefeed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/driver/pgdriver"
)

// bufferSize is each subscription's buffer: a watcher reads the order after
// each event, so a few events cover a burst of changes; beyond that they
// are coalesced into one Lost.
const bufferSize = 8

// firstPingRetry is how often a new connection is pinged until it answers.
const firstPingRetry = 20 * time.Millisecond

// pingTimeout bounds one ping: a pool too busy to send it within this is
// treated as an unanswered ping, not waited on.
const pingTimeout = time.Second

// Feed fans the notifications of one LISTEN connection out to subscribers.
type Feed struct {
	db       *bun.DB
	log      *slog.Logger
	channels []string
	// ping is this feed's own channel: a notification sent on it through
	// the pool and received on the listening connection proves that the
	// connection is alive and that its LISTENs are in effect.
	ping string

	// pingEvery is how long the connection may be silent before it is
	// pinged; a ping unanswered for as long again means it is dead.
	pingEvery time.Duration
	// minBackoff and maxBackoff bound the wait between reconnects.
	minBackoff, maxBackoff time.Duration

	mu   sync.Mutex
	subs map[subKey]map[*Subscription]struct{}
}

type subKey struct{ channel, key string }

// New returns a feed over db's server for the given channels
// (e.g. "oms_order_changed", "oms_operation_done"). Nothing is listened to
// until Run.
func New(db *bun.DB, log *slog.Logger, channels ...string) *Feed {
	b := make([]byte, 8)
	rand.Read(b)
	return &Feed{
		db:         db,
		log:        log,
		channels:   channels,
		ping:       "oms_changefeed_ping_" + hex.EncodeToString(b),
		pingEvery:  5 * time.Second,
		minBackoff: 100 * time.Millisecond,
		maxBackoff: 5 * time.Second,
		subs:       make(map[subKey]map[*Subscription]struct{}),
	}
}

// Event is one notification, or the news that some may have been missed.
type Event struct {
	// Payload is the notification's payload, e.g. "5f0c...:3" on
	// oms_order_changed (order id:version), the hex of an operation's id on
	// oms_operation_done. It is empty when Lost.
	Payload string
	// Lost: notifications may have been missed, so re-read.
	Lost bool
}

// Subscription receives the events of one key on one channel.
type Subscription struct {
	// C is buffered and never blocks the feed; it is closed by Close.
	C <-chan Event

	c      chan Event
	feed   *Feed
	key    subKey
	closed bool // guarded by feed.mu
}

// Subscribe delivers the notifications on channel whose key (the payload
// up to its first ':', or the whole payload when it has none) equals key. C
// is buffered; when a subscriber falls behind, older undelivered events are
// coalesced into one Lost event rather than blocking the feed.
//
// Subscribe before reading the current state, so that a change committed
// between the read and the subscription is not missed.
func (f *Feed) Subscribe(channel, key string) *Subscription {
	c := make(chan Event, bufferSize)
	s := &Subscription{C: c, c: c, feed: f, key: subKey{channel, key}}
	f.mu.Lock()
	defer f.mu.Unlock()
	set := f.subs[s.key]
	if set == nil {
		set = make(map[*Subscription]struct{})
		f.subs[s.key] = set
	}
	set[s] = struct{}{}
	return s
}

// Close ends the subscription and closes C. It may be called more than once.
func (s *Subscription) Close() {
	f := s.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	set := f.subs[s.key]
	delete(set, s)
	if len(set) == 0 {
		delete(f.subs, s.key)
	}
	close(s.c)
}

// deliver sends e without blocking; f.mu is held, so the feed is the only
// sender. When C is full its events are dropped in favour of one Lost: the
// subscriber re-reads and so sees at least what they announced.
func (s *Subscription) deliver(e Event) {
	select {
	case s.c <- e:
		return
	default:
	}
	for drained := false; !drained; {
		select {
		case <-s.c:
		default:
			drained = true
		}
	}
	s.c <- Event{Lost: true}
}

func (f *Feed) dispatch(channel, payload string) {
	key, _, _ := strings.Cut(payload, ":")
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs[subKey{channel, key}] {
		s.deliver(Event{Payload: payload})
	}
}

// lost tells every subscriber to re-read.
func (f *Feed) lost() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, set := range f.subs {
		for s := range set {
			s.deliver(Event{Lost: true})
		}
	}
}

// Run listens until ctx ends, reconnecting with backoff. After a reconnect
// (notifications may have been missed) every live subscription receives an
// Event with Lost=true, so it re-reads what it watches; so does the first
// connection, for subscriptions made before it. Run returns nil when ctx
// ends.
func (f *Feed) Run(ctx context.Context) error {
	backoff := f.minBackoff
	for ctx.Err() == nil {
		healthy, err := f.session(ctx)
		if ctx.Err() != nil {
			break
		}
		if healthy {
			backoff = f.minBackoff
		}
		f.log.Warn("changefeed: listening connection lost; reconnecting", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, f.maxBackoff)
	}
	return nil
}

var errPingTimeout = errors.New("no answer to ping")

// session runs one listening connection until it fails or ctx ends. It
// reports whether the connection ever became healthy (its first ping came
// back), so that Run resets its backoff only then.
func (f *Feed) session(ctx context.Context) (healthy bool, err error) {
	ln := pgdriver.NewListener(f.db)
	defer ln.Close()
	// A read blocks until its timeout whatever ctx says; closing the
	// listener ends it at once.
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	// The ping channel goes last: LISTENs take effect in order, so once a
	// ping comes back every channel is listened to.
	if err := ln.Listen(ctx, append(f.channels[:len(f.channels):len(f.channels)], f.ping)...); err != nil {
		return false, fmt.Errorf("listen: %w", err)
	}
	// pingSent is when the outstanding ping went out, zero when none is;
	// lastTry when it was last repeated.
	var pingSent, lastTry, lastHeard time.Time
	ping := func() {
		lastTry = time.Now()
		// A failure here shows as an unanswered ping. Bounded: it runs on
		// the shared pool, and while it waits for a connection nothing is
		// dispatched to the subscribers.
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		defer cancel()
		if _, err := f.db.ExecContext(pctx, "SELECT pg_notify(?, '')", f.ping); err != nil && ctx.Err() == nil {
			f.log.Debug("changefeed: ping", "err", err)
		}
	}
	pingSent = time.Now()
	ping()
	for {
		var wait time.Duration
		switch {
		case !healthy:
			// The LISTENs were sent without waiting for their answer, so a
			// ping may come before they take effect and not come back:
			// it is repeated every few milliseconds until one does.
			if time.Since(pingSent) > f.pingEvery {
				return false, errPingTimeout
			}
			if wait = time.Until(lastTry.Add(firstPingRetry)); wait <= 0 {
				ping()
				continue
			}
		case !pingSent.IsZero():
			if wait = time.Until(pingSent.Add(f.pingEvery)); wait <= 0 {
				return healthy, errPingTimeout
			}
		default:
			if wait = time.Until(lastHeard.Add(f.pingEvery)); wait <= 0 {
				pingSent = time.Now()
				ping()
				continue
			}
		}
		channel, payload, err := ln.ReceiveTimeout(ctx, max(wait, time.Millisecond))
		if err != nil {
			if ctx.Err() != nil {
				return healthy, nil
			}
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return healthy, err
		}
		lastHeard = time.Now()
		if channel == f.ping {
			pingSent = time.Time{}
			if !healthy {
				healthy = true
				f.lost()
			}
			continue
		}
		if healthy {
			// Any notification shows the connection alive; before the
			// first ping is back, only it shows that every LISTEN is in
			// effect.
			pingSent = time.Time{}
		}
		f.dispatch(channel, payload)
	}
}
