package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// fakeOMS accepts creates and pays at once and shows each change lag
// later, as the pipeline would.
type fakeOMS struct {
	lag time.Duration
	// noList makes ListOrders fail, as an older query service would.
	noList bool

	mu      sync.Mutex
	created map[string]time.Time
	paid    map[string]time.Time
}

func (f *fakeOMS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/orders":
		id := uuid.NewString()
		f.created[id] = time.Now()
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"name":"orders/` + id + `"}`))
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, ":pay"):
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/orders/"), ":pay")
		f.paid[id] = time.Now()
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{}`))
	case r.Method == http.MethodGet && r.URL.Path == "/v1/orders":
		f.list(w, r)
	case r.Method == http.MethodGet:
		id := strings.TrimPrefix(r.URL.Path, "/v1/orders/")
		at, ok := f.created[id]
		if !ok || time.Since(at) < f.lag {
			http.Error(w, `{"code":5}`, http.StatusNotFound)
			return
		}
		state := "CREATED"
		if p, ok := f.paid[id]; ok && time.Since(p) >= f.lag {
			state = "PAID"
		}
		w.Write([]byte(`{"state":"` + state + `"}`))
	default:
		http.NotFound(w, r)
	}
}

// list answers ListOrders as omsload asks it: create_time >= a time,
// oldest first, ids and create times; an order's create time is when it
// became visible.
func (f *fakeOMS) list(w http.ResponseWriter, r *http.Request) {
	filter := r.URL.Query().Get("filter")
	if f.noList || !strings.HasPrefix(filter, "create_time >= ") || r.URL.Query().Get("order_by") != "create_time asc" {
		http.Error(w, `{"code":3}`, http.StatusBadRequest)
		return
	}
	since, err := time.Parse(time.RFC3339Nano, strings.Trim(strings.TrimPrefix(filter, "create_time >= "), `"`))
	if err != nil {
		http.Error(w, `{"code":3}`, http.StatusBadRequest)
		return
	}
	type row struct {
		ID         string    `json:"id"`
		CreateTime time.Time `json:"createTime"`
	}
	var rows []row
	for id, at := range f.created {
		if v := at.Add(f.lag); !v.After(time.Now()) && !v.Before(since) {
			rows = append(rows, row{id, v})
		}
	}
	slices.SortFunc(rows, func(a, b row) int { return a.CreateTime.Compare(b.CreateTime) })
	from, _ := strconv.Atoi(r.URL.Query().Get("page_token"))
	size, _ := strconv.Atoi(r.URL.Query().Get("page_size"))
	size = min(size, 7) // small pages, to exercise paging
	page := struct {
		Orders        []row  `json:"orders"`
		NextPageToken string `json:"nextPageToken,omitempty"`
	}{Orders: rows[min(from, len(rows)):min(from+size, len(rows))]}
	if from+size < len(rows) {
		page.NextPageToken = strconv.Itoa(from + size)
	}
	json.NewEncoder(w).Encode(page)
}

func TestLoad(t *testing.T) {
	t.Parallel()
	const lag = 30 * time.Millisecond
	tests := []struct {
		name   string
		flags  []string
		noList bool
		errors int
	}{
		{"closed loop", []string{"-n", "60", "-c", "4"}, false, 0},
		{"closed loop, GETs", []string{"-n", "60", "-c", "4", "-watch", "get"}, false, 0},
		{"closed loop, a small pending bound", []string{"-n", "40", "-c", "4", "-max-pending", "2"}, false, 0},
		{"closed loop, lifecycle", []string{"-n", "30", "-c", "4", "-lifecycle"}, false, 0},
		{"closed loop, no visibility", []string{"-n", "50", "-c", "4", "-visible=false"}, false, 0},
		{"open loop", []string{"-n", "50", "-rate", "500"}, false, 0},
		{"open loop, GETs", []string{"-n", "50", "-rate", "500", "-watch", "get"}, false, 0},
		{"open loop, lifecycle", []string{"-n", "30", "-rate", "300", "-lifecycle"}, false, 0},
		{"listing fails: GETs take over", []string{"-n", "30", "-rate", "300"}, true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(&fakeOMS{lag: lag, noList: tt.noList, created: map[string]time.Time{}, paid: map[string]time.Time{}})
			defer srv.Close()
			cfg, err := parseFlags(append(tt.flags, "-ingest", srv.URL, "-query", srv.URL, "-poll", "5ms", "-ceiling=false", "-timeout", "20s"))
			if err != nil {
				t.Fatal(err)
			}
			l := newLoader(cfg, newClient(cfg))
			start := time.Now()
			post := l.run(context.Background())
			r := l.st.report(cfg, time.Since(start), post)
			if !r.complete(cfg) || r.Errors != tt.errors {
				t.Fatalf("incomplete run, or not %d errors: %+v", tt.errors, r)
			}
			if cfg.Visible && r.VisibleLatency.P50 < float64(lag.Milliseconds()) {
				t.Errorf("POST→visible p50 %.1f ms, below the %v the fake takes", r.VisibleLatency.P50, lag)
			}
			if cfg.Lifecycle && r.PayPaidLatency.Count != cfg.N {
				t.Errorf("%d pay→PAID samples, want %d", r.PayPaidLatency.Count, cfg.N)
			}
			open := cfg.Rate > 0
			if (r.Mode == "open") != open || (r.SendLag != nil) != open {
				t.Errorf("mode %q, send lag %v, for -rate %v", r.Mode, r.SendLag, cfg.Rate)
			}
			// An open loop sends on its schedule: n orders at rate r take
			// (n-1)/r, however fast the answers are.
			if open {
				if want := time.Duration(float64(cfg.N-1) / cfg.Rate * float64(time.Second)); post < want {
					t.Errorf("posting took %v, less than the schedule's %v", post, want)
				}
			}
		})
	}
}

func TestParseFlagsRate(t *testing.T) {
	t.Parallel()
	for _, bad := range [][]string{{"-rate", "-1"}, {"-rate", "NaN"}, {"-rate", "+Inf"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q) accepted it", bad)
		}
	}
	c, err := parseFlags([]string{"-rate", "250.5", "-n", "10"})
	if err != nil || c.Rate != 250.5 {
		t.Errorf("parseFlags(-rate 250.5) = %v, %v", c.Rate, err)
	}
}
