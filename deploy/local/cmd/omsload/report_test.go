package main

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	seq := func(n int) []time.Duration {
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = time.Duration(i+1) * time.Millisecond
		}
		return s
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"no samples", nil, 50, 0},
		{"one sample p50", seq(1), 50, time.Millisecond},
		{"one sample p99", seq(1), 99, time.Millisecond},
		{"two samples p50 is the lower", seq(2), 50, 1 * time.Millisecond},
		{"two samples p51 is the upper", seq(2), 51, 2 * time.Millisecond},
		{"ten p50", seq(10), 50, 5 * time.Millisecond},
		{"ten p90", seq(10), 90, 9 * time.Millisecond},
		{"ten p99 rounds up to the max", seq(10), 99, 10 * time.Millisecond},
		{"hundred p99", seq(100), 99, 99 * time.Millisecond},
		{"p100 is the max", seq(100), 100, 100 * time.Millisecond},
		{"tiny p is the min", seq(100), 0.001, time.Millisecond},
		{"p0 clamps to the min", seq(100), 0, time.Millisecond},
		{"above 100 clamps to the max", seq(3), 150, 3 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%d samples, %v) = %v, want %v", len(tt.sorted), tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarizeLeavesSamplesUnsorted(t *testing.T) {
	t.Parallel()
	samples := []time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond}
	got := summarize(samples)
	if got.Count != 3 || got.P50 != 2 || got.Max != 3 {
		t.Errorf("summarize = %+v, want count 3, p50 2ms, max 3ms", got)
	}
	if samples[0] != 3*time.Millisecond {
		t.Errorf("summarize sorted its input in place: %v", samples)
	}
}
