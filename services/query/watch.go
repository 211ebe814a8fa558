package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/changefeed"
	"github.com/omsdev/oms/pkg/metrics"
	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderpb"
	"github.com/omsdev/oms/pkg/orderstore"
)

// orderChangedChannel is where migration 10 announces each committed change
// of an order, as "{id}:{version}".
const orderChangedChannel = "oms_order_changed"

var watchers = prometheus.NewGauge(prometheus.GaugeOpts{
	Name: "oms_query_watchers",
	Help: "WatchOrder streams open on this process (bounded by QUERY_MAX_WATCHERS).",
})

func init() { metrics.Register(watchers) }

// changes is what WatchOrder and GetOrder's min_version wait with: the
// process's one changefeed and the watches registered for it (follow.go),
// the bounds on watchers, and the server's shutdown. A waiter reads the
// order when it starts, and again when the feed announces a newer version
// (or that announcements may have been missed); it re-reads on a timer
// only while the order does not exist, which an announcement may not
// cover (a create in flight when the watch began).
type changes struct {
	follow *follower
	// shutdown ends when the server starts to drain: watches then end
	// with OK, so that they do not hold the drain up.
	shutdown <-chan struct{}
	// maxWait bounds a min_version wait, and a watch's wait for an order
	// that does not exist (yet, or for this caller).
	maxWait time.Duration

	mu           sync.Mutex
	max, perCall int
	open         int
	byPrincipal  map[string]int
}

func newChanges(follow *follower, shutdown <-chan struct{}, cfg Config) *changes {
	return &changes{
		follow: follow, shutdown: shutdown, maxWait: cfg.MaxWait,
		max: cfg.MaxWatchers, perCall: cfg.MaxWatchersPerPrincipal, byPrincipal: map[string]int{},
	}
}

// acquire takes a watcher slot for principal; release gives it back.
func (c *changes) acquire(principal string) (release func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.open >= c.max:
		return nil, exhausted(fmt.Sprintf("this server holds its limit of %d watches (QUERY_MAX_WATCHERS): retry later, or on another replica", c.max),
			"watches on one server", "QUERY_MAX_WATCHERS")
	case c.byPrincipal[principal] >= c.perCall:
		return nil, exhausted(fmt.Sprintf("this caller holds its limit of %d watches on this server (QUERY_MAX_WATCHERS_PER_PRINCIPAL): end one first", c.perCall),
			"watches of one caller", "QUERY_MAX_WATCHERS_PER_PRINCIPAL")
	}
	c.open++
	c.byPrincipal[principal]++
	watchers.Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.open--
			if c.byPrincipal[principal]--; c.byPrincipal[principal] == 0 {
				delete(c.byPrincipal, principal)
			}
			watchers.Dec()
		})
	}, nil
}

func exhausted(msg, subject, limit string) error {
	st := status.New(codes.ResourceExhausted, msg)
	if d, err := st.WithDetails(&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{
		{Subject: subject, Description: limit},
	}}); err == nil {
		st = d
	}
	return st.Err()
}

// announced is the version a notification announces, or 0 when it says
// nothing of one (Lost, or a payload this code does not know): then the
// order must be read to know.
func announced(e changefeed.Event) int64 {
	if e.Lost {
		return 0
	}
	_, v, _ := strings.Cut(e.Payload, ":")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// withVersion is the mask to read with: the caller's, and version, which
// the waiting compares (a watch sends it whatever the mask says).
func withVersion(fm *fieldmaskpb.FieldMask) *fieldmaskpb.FieldMask {
	if len(fm.GetPaths()) == 0 {
		return fm
	}
	return &fieldmaskpb.FieldMask{Paths: append(fm.GetPaths()[:len(fm.GetPaths()):len(fm.GetPaths())], "version")}
}

// WatchOrder sends the order's state, then each newer state as it commits.
// The order is read when the watch starts and after each announcement of a
// version newer than the last sent; a subscriber that may have missed
// announcements (the feed reconnected, or it fell behind) registers its
// watch again and reads once more. Until the order exists it is also
// re-read on a backoff (follow.go: a create in flight). The watch's
// registration is renewed while the stream lasts.
func (s *queryService) WatchOrder(req *omsv1.WatchOrderRequest, stream grpc.ServerStreamingServer[omsv1.WatchOrderResponse]) error {
	ctx := stream.Context()
	actor, err := auth.ActorFromContext(ctx)
	if err != nil {
		return err
	}
	id, err := orderpb.ParseName(req.Name)
	if err != nil {
		return badRequest("name", err.Error())
	}
	if req.SinceVersion < 0 {
		return badRequest("since_version", "must not be negative")
	}
	mask, err := parseMask(withVersion(req.ReadMask))
	if err != nil {
		return badRequest("read_mask", err.Error())
	}
	c := s.changes
	if c == nil {
		return status.Error(codes.Unimplemented, "this server does not watch orders")
	}
	release, err := c.acquire(actor.ID)
	if err != nil {
		return err
	}
	defer release()

	// Subscribe and register before the first read: a change committed
	// after it is then announced, not missed.
	w, err := c.follow.follow(ctx, orderChangedChannel, id, id, c.maxWait)
	if err != nil {
		return watchError(ctx, err)
	}
	defer w.Close()
	last, seen := req.SinceVersion, false
	read := func() error {
		o, err := s.store.Get(ctx, id, mask.columns(), actor)
		if errors.Is(err, orderstore.ErrNotFound) {
			return nil
		}
		if err != nil {
			return storeError(err)
		}
		seen = true
		if o.Version <= last {
			return nil
		}
		out := orderpb.Order(o)
		mask.apply(out)
		if err := stream.Send(&omsv1.WatchOrderResponse{Order: out}); err != nil {
			return err
		}
		last = o.Version
		return nil
	}
	if err := read(); err != nil {
		return err
	}
	// An order that does not exist may be about to: a client may watch
	// right after its create was accepted. It is NOT_FOUND only once it has
	// not appeared for maxWait, as for GetOrder's min_version, and the
	// same for an order the caller may not see, so that a watch does not
	// tell the two apart.
	var notYet, backstopC <-chan time.Time
	var retry backstop
	if !seen {
		t := time.NewTimer(c.maxWait)
		defer t.Stop()
		notYet, backstopC = t.C, retry.after()
	}
	renew := w.renewal(ctx)
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-c.shutdown:
			return nil
		case <-notYet:
			return status.Errorf(codes.NotFound, "order %s not found", req.Name)
		case <-renew:
			// Half the watch's life is left, so a renewal that fails is
			// tried again, every backstopMax, while the watch lasts; the
			// stream ends only when it would lapse.
			if err := w.renew(ctx); err != nil {
				if ctx.Err() != nil || time.Until(w.until) < 2*backstopMax {
					return watchError(ctx, err)
				}
				renew = time.After(backstopMax)
				continue
			}
			renew = w.renewal(ctx)
		case <-backstopC:
			if err := read(); err != nil {
				return err
			}
			if backstopC = retry.after(); seen {
				notYet, backstopC = nil, nil
			}
		case e, ok := <-w.C:
			if !ok {
				return nil
			}
			if e.Lost {
				// The server may have restarted and lost the watches
				// (order_watches is unlogged): register again, then read.
				if err := w.renew(ctx); err != nil {
					return watchError(ctx, err)
				}
				renew = w.renewal(ctx)
			} else if v := announced(e); v != 0 && v <= last {
				continue
			}
			if err := read(); err != nil {
				return err
			}
			if seen {
				notYet, backstopC = nil, nil
			}
		}
	}
}

// getMinVersion is GetOrder with min_version: the order once it has reached
// that version, waiting for its announcements up to the call's deadline
// and at most maxWait. An order already there is one read; a wait
// registers a watch first (follow.go), and re-reads on a backoff while the
// order does not exist.
func (s *queryService) getMinVersion(ctx context.Context, req *omsv1.GetOrderRequest, id string, mask mask, actor order.Actor) (*omsv1.Order, error) {
	if req.MinVersion < 0 {
		return nil, badRequest("min_version", "must not be negative")
	}
	read, err := parseMask(withVersion(req.ReadMask))
	if err != nil {
		return nil, badRequest("read_mask", err.Error())
	}
	var o *order.Order
	get := func() (bool, error) {
		got, err := s.store.Get(ctx, id, read.columns(), actor)
		if errors.Is(err, orderstore.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, storeError(err)
		}
		o = got
		return o.Version >= req.MinVersion, nil
	}
	// Reached already, the common case: one read, and no watch.
	done, err := get()
	c := s.changes
	var events <-chan changefeed.Event
	var backstopC <-chan time.Time
	var stop <-chan struct{}
	var retry backstop
	var w *following
	wait := time.Duration(0) // without a feed: one read
	if !done && err == nil && c != nil {
		// A wait holds what a watch does: it counts against the same limits.
		var release func()
		if release, err = c.acquire(actor.ID); err != nil {
			return nil, err
		}
		defer release()
		if w, err = c.follow.follow(ctx, orderChangedChannel, id, id, c.maxWait); err != nil {
			return nil, watchError(ctx, err)
		}
		defer w.Close()
		events, stop, wait = w.C, c.shutdown, c.maxWait
		// Read again: the watch now covers whatever this read misses.
		done, err = get()
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for !done && err == nil {
		if o == nil && backstopC == nil {
			backstopC = retry.after()
		}
		select {
		case <-ctx.Done():
			// The caller has gone, or its deadline has passed: gRPC tells
			// it so whatever this returns.
			return nil, tooSoon(req, o)
		case e, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if e.Lost {
				// The watch may be lost with the server (see WatchOrder).
				if err = w.renew(ctx); err != nil {
					return nil, watchError(ctx, err)
				}
			} else if v := announced(e); v != 0 && v < req.MinVersion {
				continue
			}
			done, err = get()
		case <-backstopC:
			backstopC = nil
			done, err = get()
		case <-timer.C:
			// The last chance, should an announcement have gone astray.
			if done, err = get(); !done && err == nil {
				return nil, tooSoon(req, o)
			}
		case <-stop:
			// The feed stops with the server: this replica will not hear
			// of the version, another one may.
			if done, err = get(); !done && err == nil {
				return nil, status.Error(codes.Unavailable, "the server is shutting down; retry")
			}
		}
	}
	if err != nil {
		return nil, err
	}
	out := orderpb.Order(o)
	mask.apply(out)
	return out, nil
}

// tooSoon says how far the order got: NOT_FOUND if it never appeared.
func tooSoon(req *omsv1.GetOrderRequest, o *order.Order) error {
	if o == nil {
		return status.Errorf(codes.NotFound, "order %s not found", req.Name)
	}
	return status.Errorf(codes.DeadlineExceeded, "order %s is at version %d, not yet %d", req.Name, o.Version, req.MinVersion)
}

// streamDeadlines lets a watch over HTTP last: the server's read deadline
// (HTTP_READ_TIMEOUT) is lifted, since net/http cancels a request whose
// connection outlives it, and the write deadline (HTTP_WRITE_TIMEOUT)
// applies to each line rather than to the whole response, so a client that
// stops reading is still dropped.
func streamDeadlines(writeTimeout time.Duration) runtime.Middleware {
	return func(next runtime.HandlerFunc) runtime.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, ":watch") {
				rc := http.NewResponseController(w)
				_ = rc.SetReadDeadline(time.Time{})
				w = &lineDeadline{ResponseWriter: w, rc: rc, timeout: writeTimeout}
			}
			next(w, r, params)
		}
	}
}

// lineDeadline renews the write deadline before each write.
type lineDeadline struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (w *lineDeadline) Write(b []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.ResponseWriter.Write(b)
}

func (w *lineDeadline) Unwrap() http.ResponseWriter { return w.ResponseWriter }
