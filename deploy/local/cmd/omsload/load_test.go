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
	// commitLag: every third create commits this long after its create
	// time, after creates applied later have committed.
	commitLag time.Duration

	mu      sync.Mutex
	created map[string]time.Time
	paid    map[string]time.Time
	listed  map[string]int // times each order was in a page of ListOrders oldest first
	late    map[string]bool
	creates int
	gets    int // GetOrder calls
}

// createTime is when the create of id was applied; visible, when it
// committed.
func (f *fakeOMS) createTime(id string) time.Time { return f.created[id].Add(f.lag) }

func (f *fakeOMS) visible(id string) bool {
	v := f.createTime(id)
	if f.late[id] {
		v = v.Add(f.commitLag)
	}
	return !v.After(time.Now())
}

func newFakeOMS(lag time.Duration) *fakeOMS {
	return &fakeOMS{lag: lag, created: map[string]time.Time{}, paid: map[string]time.Time{}, listed: map[string]int{}, late: map[string]bool{}}
}

func (f *fakeOMS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/orders":
		id := uuid.NewString()
		f.created[id] = time.Now()
		if f.creates++; f.commitLag > 0 && f.creates%3 == 0 {
			f.late[id] = true
		}
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
		f.gets++
		id := strings.TrimPrefix(r.URL.Path, "/v1/orders/")
		if _, ok := f.created[id]; !ok || !f.visible(id) {
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

// list answers ListOrders as omsload asks it: optionally create_time >= a
// time, oldest or newest first, ids and create times; an order's create
// time is when it became visible.
func (f *fakeOMS) list(w http.ResponseWriter, r *http.Request) {
	filter, order := r.URL.Query().Get("filter"), r.URL.Query().Get("order_by")
	if f.noList || filter != "" && !strings.HasPrefix(filter, "create_time >= ") || order != "create_time asc" && order != "create_time desc" {
		http.Error(w, `{"code":3}`, http.StatusBadRequest)
		return
	}
	var since time.Time
	if filter != "" {
		var err error
		if since, err = time.Parse(time.RFC3339Nano, strings.Trim(strings.TrimPrefix(filter, "create_time >= "), `"`)); err != nil {
			http.Error(w, `{"code":3}`, http.StatusBadRequest)
			return
		}
	}
	type row struct {
		ID         string    `json:"id"`
		CreateTime time.Time `json:"createTime"`
	}
	var rows []row
	for id := range f.created {
		if ct := f.createTime(id); f.visible(id) && !ct.Before(since) {
			rows = append(rows, row{id, ct})
		}
	}
	slices.SortFunc(rows, func(a, b row) int { return a.CreateTime.Compare(b.CreateTime) })
	if order == "create_time desc" {
		slices.Reverse(rows)
	}
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
	if order == "create_time asc" {
		for _, o := range page.Orders {
			f.listed[o.ID]++
		}
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
			f := newFakeOMS(lag)
			f.noList = tt.noList
			srv := httptest.NewServer(f)
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

// The lister looks only for the run's orders: it must not page through
// those of earlier runs before it finds them. (It once started a minute
// back, and after make bench's drain paged through 25,000 orders while the
// run's first orders waited, a 1.5 s tail that was the lister's.)
func TestListerSkipsEarlierOrders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		earlier int
	}{
		{"no earlier orders", 0},
		{"earlier orders", 300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeOMS(5 * time.Millisecond)
			earlier := map[string]bool{}
			for i := range tt.earlier {
				id := uuid.NewString()
				// A second apart, the newest a second ago: further apart
				// than processors' clocks may be (clockSlack).
				f.created[id] = time.Now().Add(-time.Duration(tt.earlier-i) * time.Second)
				earlier[id] = true
			}
			srv := httptest.NewServer(f)
			defer srv.Close()
			cfg, err := parseFlags([]string{"-n", "40", "-rate", "400", "-ingest", srv.URL, "-query", srv.URL, "-poll", "5ms", "-ceiling=false", "-timeout", "20s"})
			if err != nil {
				t.Fatal(err)
			}
			l := newLoader(cfg, newClient(cfg))
			start := time.Now()
			post := l.run(context.Background())
			if r := l.st.report(cfg, time.Since(start), post); !r.complete(cfg) || r.Errors != 0 {
				t.Fatalf("incomplete run: %+v", r)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			var old, ours int
			for id := range f.listed {
				if earlier[id] {
					old++
				} else {
					ours++
				}
			}
			// Only the newest earlier order, where listing starts
			// (create_time >= it).
			if old > 1 {
				t.Errorf("listings returned %d earlier orders, want at most the newest", old)
			}
			if ours != cfg.N {
				t.Errorf("listings found %d of the run's %d orders", ours, cfg.N)
			}
		})
	}
}

// Creates that commit after others applied later than them are still
// found by listing, not left to the GETs after handOverAfter.
func TestListerFindsLateCommits(t *testing.T) {
	t.Parallel()
	f := newFakeOMS(5 * time.Millisecond)
	f.commitLag = 150 * time.Millisecond
	srv := httptest.NewServer(f)
	defer srv.Close()
	cfg, err := parseFlags([]string{"-n", "60", "-rate", "300", "-ingest", srv.URL, "-query", srv.URL, "-poll", "5ms", "-ceiling=false", "-timeout", "20s"})
	if err != nil {
		t.Fatal(err)
	}
	l := newLoader(cfg, newClient(cfg))
	start := time.Now()
	post := l.run(context.Background())
	if r := l.st.report(cfg, time.Since(start), post); !r.complete(cfg) || r.Errors != 0 {
		t.Fatalf("incomplete run: %+v", r)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.late) == 0 || f.gets != 0 || len(f.listed) != cfg.N {
		t.Errorf("%d of %d orders committed late; listings found %d of them all, and %d GETs were needed", len(f.late), cfg.N, len(f.listed), f.gets)
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
