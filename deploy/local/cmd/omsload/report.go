package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const maxErrorBodies = 5

// stats is what the workers record; report turns it into figures.
type stats struct {
	posted, accepted, visible, paid atomic.Int64

	mu                               sync.Mutex
	post, toVisible, payPost, toPaid []time.Duration
	lag                              []time.Duration // open loop: actual send minus scheduled
	errs                             map[string]int
	bodies                           []string // distinct, at most maxErrorBodies
	// traces are each visible create's times, kept with -trace.
	traces  []orderTrace
	tracing bool
}

// orderTrace is one create's times as omsload saw them, for joining with
// the services' own (the order's create_time, the queue's timestamps).
type orderTrace struct {
	id                          string
	from, sent, answered, found time.Time
}

func (s *stats) trace(o acceptedOrder, found time.Time) {
	if !s.tracing {
		return
	}
	s.mu.Lock()
	s.traces = append(s.traces, orderTrace{o.id, o.from, o.sent, o.answered, found})
	s.mu.Unlock()
}

// writeTrace writes one CSV line per visible create: its id and its times
// in Unix microseconds (scheduled or sent, POST sent, POST answered,
// noticed visible).
func (s *stats) writeTrace(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b bytes.Buffer
	b.WriteString("id,from_us,sent_us,answered_us,visible_us\n")
	for _, t := range s.traces {
		fmt.Fprintf(&b, "%s,%d,%d,%d,%d\n", t.id, t.from.UnixMicro(), t.sent.UnixMicro(), t.answered.UnixMicro(), t.found.UnixMicro())
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func newStats(n int) *stats {
	return &stats{post: make([]time.Duration, 0, n), toVisible: make([]time.Duration, 0, n), errs: map[string]int{}}
}

func (s *stats) add(samples *[]time.Duration, d time.Duration) {
	s.mu.Lock()
	*samples = append(*samples, d)
	s.mu.Unlock()
}

// fail counts err under op and its status code, or "transport" when no
// response came back.
func (s *stats) fail(op string, err error) {
	kind, body := "transport", err.Error()
	var he *httpError
	var ue *url.Error
	switch {
	case errors.As(err, &he):
		kind, body = strconv.Itoa(he.status), he.body
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		kind = "cancelled"
	}
	if errors.As(err, &ue) {
		body = ue.Err.Error() // the URL holds a unique id: every body would be distinct
	}
	if len(body) > 300 {
		body = body[:300] + "…"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs[op+" "+kind]++
	if len(s.bodies) < maxErrorBodies && !slices.Contains(s.bodies, op+" "+kind+": "+body) {
		s.bodies = append(s.bodies, op+" "+kind+": "+body)
	}
}

type report struct {
	// Mode is "closed" (-c workers) or "open" (-rate).
	Mode           string         `json:"mode"`
	Rate           float64        `json:"rate,omitempty"`
	Orders         int            `json:"orders"`
	Posted         int64          `json:"posted"`
	Accepted       int64          `json:"accepted"`
	Visible        int64          `json:"visible"`
	Paid           int64          `json:"paid,omitempty"`
	Errors         int            `json:"errors"`
	ErrorsByKind   map[string]int `json:"errorsByKind,omitempty"`
	ErrorBodies    []string       `json:"errorBodies,omitempty"`
	WallSeconds    float64        `json:"wallSeconds"`
	PostSeconds    float64        `json:"postPhaseSeconds"`
	AcceptedPerSec float64        `json:"acceptedPerSec"`
	VisiblePerSec  float64        `json:"visiblePerSec"`
	PostLatency    latency        `json:"postLatency"`
	VisibleLatency *latency       `json:"postToVisibleLatency,omitempty"`
	PayLatency     *latency       `json:"payPostLatency,omitempty"`
	PayPaidLatency *latency       `json:"payToPaidLatency,omitempty"`
	// SendLag is how late the open loop sent creates against its schedule.
	SendLag *latency `json:"sendLag,omitempty"`
}

// latency is in milliseconds, for a readable JSON report.
type latency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50Ms"`
	P90   float64 `json:"p90Ms"`
	P95   float64 `json:"p95Ms"`
	P99   float64 `json:"p99Ms"`
	Max   float64 `json:"maxMs"`
}

func (s *stats) report(cfg config, wall, postPhase time.Duration) report {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := report{
		Mode: "closed", Orders: cfg.N, Posted: s.posted.Load(), Accepted: s.accepted.Load(), Visible: s.visible.Load(), Paid: s.paid.Load(),
		ErrorsByKind: s.errs, ErrorBodies: s.bodies,
		WallSeconds: wall.Seconds(), PostSeconds: postPhase.Seconds(),
		PostLatency: summarize(s.post),
	}
	if cfg.Rate > 0 {
		r.Mode, r.Rate, r.SendLag = "open", cfg.Rate, ptr(summarize(s.lag))
	}
	for _, n := range s.errs {
		r.Errors += n
	}
	// POST throughput is over the posting phase only: the wall time also
	// holds the tail spent waiting for the last orders to be applied.
	r.AcceptedPerSec = float64(r.Accepted) / postPhase.Seconds()
	r.VisiblePerSec = float64(r.Visible) / wall.Seconds()
	if cfg.Visible {
		r.VisibleLatency = ptr(summarize(s.toVisible))
	}
	if cfg.Lifecycle {
		r.PayLatency, r.PayPaidLatency = ptr(summarize(s.payPost)), ptr(summarize(s.toPaid))
	}
	return r
}

func ptr[T any](v T) *T { return &v }

// complete says whether every order was accepted and reached the end the
// run was asked to wait for.
func (r report) complete(cfg config) bool {
	n := int64(cfg.N)
	return r.Accepted == n && (!cfg.Visible || r.Visible == n) && (!cfg.Lifecycle || r.Paid == n)
}

func (r report) print(w io.Writer) {
	if r.Mode == "open" {
		fmt.Fprintf(w, "open loop   %.1f orders/s scheduled; POST→visible from each scheduled send\n", r.Rate)
	}
	fmt.Fprintf(w, "orders      %d (posted %d, accepted %d, visible %d", r.Orders, r.Posted, r.Accepted, r.Visible)
	if r.PayLatency != nil {
		fmt.Fprintf(w, ", paid %d", r.Paid)
	}
	fmt.Fprintf(w, ")\nerrors      %d\n", r.Errors)
	fmt.Fprintf(w, "wall        %.2fs (posting %.2fs)\n", r.WallSeconds, r.PostSeconds)
	fmt.Fprintf(w, "throughput  %.1f accepted/s", r.AcceptedPerSec)
	if r.VisibleLatency != nil {
		fmt.Fprintf(w, ", %.1f visible/s end to end", r.VisiblePerSec)
	}
	fmt.Fprintln(w)

	fmt.Fprintf(w, "%-14s %6s %9s %9s %9s %9s %9s\n", "latency (ms)", "n", "p50", "p90", "p95", "p99", "max")
	row := func(name string, l *latency) {
		if l != nil {
			fmt.Fprintf(w, "%-14s %6d %9.1f %9.1f %9.1f %9.1f %9.1f\n", name, l.Count, l.P50, l.P90, l.P95, l.P99, l.Max)
		}
	}
	row("POST", &r.PostLatency)
	row("POST→visible", r.VisibleLatency)
	row("pay POST", r.PayLatency)
	row("pay→PAID", r.PayPaidLatency)
	row("send lag", r.SendLag)

	for _, k := range slices.Sorted(maps.Keys(r.ErrorsByKind)) {
		fmt.Fprintf(w, "error %-16s %d\n", k, r.ErrorsByKind[k])
	}
	for _, b := range r.ErrorBodies {
		fmt.Fprintf(w, "  body: %s\n", b)
	}
}

func (r report) printJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeJSON writes the report to path, beside and renamed, so a reader
// never sees half of it.
func (r report) writeJSON(path string) error {
	var b bytes.Buffer
	if err := r.printJSON(&b); err != nil {
		return err
	}
	if err := os.WriteFile(path+".tmp", b.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

func summarize(samples []time.Duration) latency {
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return latency{
		Count: len(sorted),
		P50:   ms(percentile(sorted, 50)),
		P90:   ms(percentile(sorted, 90)),
		P95:   ms(percentile(sorted, 95)),
		P99:   ms(percentile(sorted, 99)),
		Max:   ms(percentile(sorted, 100)),
	}
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of sorted
// samples: always an observed value, never an interpolation; 0 with none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}
