package auth

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omsdev/oms/pkg/config"
)

// The classes a method's calls are counted in.
const (
	ClassCommand = "command"
	ClassRead    = "read"
)

// RateLimitConfig sets each principal's budget per class: a sustained rate
// and a burst. A rate of 0 turns that class's limit off.
type RateLimitConfig struct {
	CommandsPerSecond float64 // RATE_LIMIT_COMMANDS_PER_SECOND, default 20
	CommandBurst      int     // RATE_LIMIT_COMMAND_BURST, default 40
	ReadsPerSecond    float64 // RATE_LIMIT_READS_PER_SECOND, default 100
	ReadBurst         int     // RATE_LIMIT_READ_BURST, default 200
}

// LoadRateLimitConfig reads the RATE_LIMIT_* variables.
func LoadRateLimitConfig(env *config.Env) RateLimitConfig {
	return RateLimitConfig{
		CommandsPerSecond: env.Float("RATE_LIMIT_COMMANDS_PER_SECOND", 20, 0, 1e6),
		CommandBurst:      env.Int("RATE_LIMIT_COMMAND_BURST", 40, 1, 1e6),
		ReadsPerSecond:    env.Float("RATE_LIMIT_READS_PER_SECOND", 100, 0, 1e6),
		ReadBurst:         env.Int("RATE_LIMIT_READ_BURST", 200, 1, 1e6),
	}
}

// Bounds of the per-principal table: entries idle this long are swept
// (their buckets have long refilled, so forgetting them changes nothing),
// and the table never holds more than maxEntries.
const (
	defaultIdleAfter  = 10 * time.Minute
	defaultSweepEvery = time.Minute
	defaultMaxEntries = 100_000
)

// RateLimiter limits each principal's calls per class with a token bucket.
type RateLimiter struct {
	limits map[string]classLimit
	class  func(fullMethod string) string

	now        func() time.Time
	idleAfter  time.Duration
	sweepEvery time.Duration
	maxEntries int

	mu        sync.Mutex
	buckets   map[bucketKey]*bucket
	lastSweep time.Time
}

type classLimit struct {
	every rate.Limit
	burst int
}

type bucketKey struct{ principal, class string }

type bucket struct {
	lim      *rate.Limiter
	lastSeen time.Time
}

// NewRateLimiter limits by cfg; class names the class of a full method
// name (ClassCommand, ClassRead), and a method of any other class, or
// of a class whose rate is 0, is not limited.
func NewRateLimiter(cfg RateLimitConfig, class func(fullMethod string) string) *RateLimiter {
	l := &RateLimiter{
		limits:     map[string]classLimit{},
		class:      class,
		now:        time.Now,
		idleAfter:  defaultIdleAfter,
		sweepEvery: defaultSweepEvery,
		maxEntries: defaultMaxEntries,
		buckets:    map[bucketKey]*bucket{},
	}
	if cfg.CommandsPerSecond > 0 {
		l.limits[ClassCommand] = classLimit{rate.Limit(cfg.CommandsPerSecond), max(cfg.CommandBurst, 1)}
	}
	if cfg.ReadsPerSecond > 0 {
		l.limits[ClassRead] = classLimit{rate.Limit(cfg.ReadsPerSecond), max(cfg.ReadBurst, 1)}
	}
	return l
}

// UnaryInterceptor refuses a call over its principal's budget with
// RESOURCE_EXHAUSTED, a RetryInfo detail and a "retry-after" response
// header (whole seconds, at least 1) the HTTP gateway can pass on. Install
// it after the Verifier's interceptor: calls without a principal (health
// checks) are not limited.
func (l *RateLimiter) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := l.check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

func (l *RateLimiter) check(ctx context.Context, method string) error {
	p, ok := FromContext(ctx)
	if !ok {
		return nil
	}
	class := l.class(method)
	wait := l.reserve(p.ID(), class)
	if wait <= 0 {
		return nil
	}
	secs := max(int64(math.Ceil(wait.Seconds())), 1)
	// Without a server transport (a direct call in a test) there is no
	// header to set; the status still says when to retry.
	_ = grpc.SetHeader(ctx, metadata.Pairs("retry-after", strconv.FormatInt(secs, 10)))
	st := status.New(codes.ResourceExhausted, fmt.Sprintf("too many %s calls for this caller: retry in %ds", class, secs))
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); err == nil {
		st = d
	}
	return st.Err()
}

// reserve takes one token from the principal's bucket for class and
// returns 0, or how long until a token would be free (taking none).
func (l *RateLimiter) reserve(principal, class string) time.Duration {
	lim, ok := l.limits[class]
	if !ok {
		return 0
	}
	now := l.now()
	b := l.bucket(bucketKey{principal, class}, lim, now)
	r := b.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

func (l *RateLimiter) bucket(k bucketKey, lim classLimit, now time.Time) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= l.sweepEvery {
		l.sweep(now)
	}
	b, ok := l.buckets[k]
	if !ok {
		if len(l.buckets) >= l.maxEntries {
			// Full of active callers: forget one at random (map order),
			// in constant time. At worst it gets a fresh, full bucket.
			for victim := range l.buckets {
				delete(l.buckets, victim)
				break
			}
		}
		b = &bucket{lim: rate.NewLimiter(lim.every, lim.burst)}
		l.buckets[k] = b
	}
	b.lastSeen = now
	return b.lim
}

func (l *RateLimiter) sweep(now time.Time) {
	l.lastSweep = now
	for k, b := range l.buckets {
		if now.Sub(b.lastSeen) > l.idleAfter {
			delete(l.buckets, k)
		}
	}
}
