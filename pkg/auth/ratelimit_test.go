package auth_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/omsdev/oms/pkg/auth"
)

// transport records the headers an interceptor sets.
type transport struct {
	mu     sync.Mutex
	header metadata.MD
}

func (s *transport) Method() string { return payMethod }
func (s *transport) SetHeader(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.header = metadata.Join(s.header, md)
	return nil
}
func (s *transport) SendHeader(md metadata.MD) error { return s.SetHeader(md) }
func (s *transport) SetTrailer(metadata.MD) error    { return nil }

// fakeClock only moves when told to: no test depends on the machine's speed.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func classOf(method string) string {
	switch method {
	case payMethod, shipMethod:
		return auth.ClassCommand
	case "/oms.v1.OrderQueryService/GetOrder":
		return auth.ClassRead
	}
	return ""
}

type limited struct {
	t     *testing.T
	i     grpc.UnaryServerInterceptor
	clock *fakeClock
}

func newLimited(t *testing.T, cfg auth.RateLimitConfig) (*auth.RateLimiter, *limited) {
	l := auth.NewRateLimiter(cfg, classOf)
	clock := &fakeClock{now: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
	auth.SetClock(l, clock.Now)
	return l, &limited{t, l.UnaryInterceptor(), clock}
}

// do calls method as subject ("" for no principal) and returns the
// error and the response headers set.
func (l *limited) do(subject, method string) (error, metadata.MD) {
	ctx := context.Background()
	if subject != "" {
		ctx = auth.WithPrincipal(ctx, auth.Principal{Kind: auth.Customer, Subject: subject})
	}
	tr := &transport{}
	ctx = grpc.NewContextWithServerTransportStream(ctx, tr)
	_, err := l.i(ctx, nil, &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) { return "ok", nil })
	return err, tr.header
}

func (l *limited) allowN(subject, method string, n int) {
	l.t.Helper()
	for k := range n {
		if err, _ := l.do(subject, method); err != nil {
			l.t.Fatalf("%s call %d of %d by %q refused: %v", method, k+1, n, subject, err)
		}
	}
}

func retryOf(t *testing.T, err error) time.Duration {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("status %v %q, want RESOURCE_EXHAUSTED", st.Code(), st.Message())
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	t.Fatalf("no RetryInfo in %v", st.Details())
	return 0
}

func TestRateLimiterBurstThenExhausted(t *testing.T) {
	_, l := newLimited(t, auth.RateLimitConfig{CommandsPerSecond: 0.4, CommandBurst: 3, ReadsPerSecond: 100, ReadBurst: 5})
	l.allowN("a", payMethod, 3)
	err, hdr := l.do("a", payMethod)
	if d := retryOf(t, err); d != 2500*time.Millisecond {
		t.Errorf("RetryDelay = %s, want 2.5s (one token at 0.4/s)", d)
	}
	if got := hdr.Get("retry-after"); len(got) != 1 || got[0] != "3" {
		t.Errorf("retry-after = %v, want [3] (seconds, rounded up)", got)
	}
	// A refused call takes no token: after the delay exactly one is free.
	l.clock.Add(2500 * time.Millisecond)
	l.allowN("a", payMethod, 1)
	if err, _ := l.do("a", payMethod); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("second call after refill: %v", err)
	}

	// Another principal has its own budget, and reads their own class.
	l.allowN("b", payMethod, 3)
	l.allowN("a", "/oms.v1.OrderQueryService/GetOrder", 5)
	if err, _ := l.do("a", "/oms.v1.OrderQueryService/GetOrder"); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("sixth read: %v", err)
	}
}

func TestRateLimiterRetryAfterIsAtLeastOneSecond(t *testing.T) {
	_, l := newLimited(t, auth.RateLimitConfig{CommandsPerSecond: 50, CommandBurst: 1})
	l.allowN("a", payMethod, 1)
	err, hdr := l.do("a", payMethod)
	if d := retryOf(t, err); d != 20*time.Millisecond {
		t.Errorf("RetryDelay = %s, want 20ms", d)
	}
	if got := hdr.Get("retry-after"); len(got) != 1 || got[0] != "1" {
		t.Errorf("retry-after = %v, want [1]", got)
	}
}

func TestRateLimiterUnlimited(t *testing.T) {
	_, l := newLimited(t, auth.RateLimitConfig{CommandsPerSecond: 1, CommandBurst: 1, ReadsPerSecond: 0, ReadBurst: 1})
	l.allowN("a", "/oms.v1.OrderQueryService/GetOrder", 1000) // rate 0: off
	l.allowN("a", "/oms.v1.Other/Unclassified", 1000)         // no class
	l.allowN("", payMethod, 1000)                             // no principal: health checks
}

func TestRateLimiterTableIsBounded(t *testing.T) {
	lim, l := newLimited(t, auth.RateLimitConfig{CommandsPerSecond: 1, CommandBurst: 1})
	auth.SetMaxEntries(lim, 10)
	for n := range 100 {
		l.allowN(fmt.Sprint("p", n), payMethod, 1)
	}
	if got := auth.Entries(lim); got != 10 {
		t.Errorf("%d entries, want the cap of 10", got)
	}
	// Idle principals are swept.
	l.clock.Add(time.Hour)
	l.allowN("late", payMethod, 1)
	if got := auth.Entries(lim); got != 1 {
		t.Errorf("%d entries after an idle hour, want 1", got)
	}
}

func TestRateLimiterConcurrent(t *testing.T) {
	_, l := newLimited(t, auth.RateLimitConfig{CommandsPerSecond: 1, CommandBurst: 50})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 100 {
		wg.Go(func() {
			if err, _ := l.do("a", payMethod); err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if ok != 50 {
		t.Errorf("%d of 100 concurrent calls allowed, want the burst of 50", ok)
	}
}
