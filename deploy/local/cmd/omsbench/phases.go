package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/queue"
)

// loadReport is the part of omsload's -json-file report the bench reads.
type loadReport struct {
	Mode           string         `json:"mode"`
	Rate           float64        `json:"rate"`
	Orders         int            `json:"orders"`
	Accepted       int64          `json:"accepted"`
	Visible        int64          `json:"visible"`
	Errors         int            `json:"errors"`
	ErrorsByKind   map[string]int `json:"errorsByKind"`
	ErrorBodies    []string       `json:"errorBodies"`
	WallSeconds    float64        `json:"wallSeconds"`
	PostSeconds    float64        `json:"postPhaseSeconds"`
	AcceptedPerSec float64        `json:"acceptedPerSec"`
	VisiblePerSec  float64        `json:"visiblePerSec"`
	PostLatency    latency        `json:"postLatency"`
	VisibleLatency *latency       `json:"postToVisibleLatency"`
	SendLag        *latency       `json:"sendLag"`
}

// latency is in milliseconds, as omsload reports it.
type latency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50Ms"`
	P95   float64 `json:"p95Ms"`
	P99   float64 `json:"p99Ms"`
	Max   float64 `json:"maxMs"`
}

var loadRuns atomic.Int64

// omsload runs the load generator against the stack, as the storefront
// service, and returns its report. A run that did not get every order
// through still returns its report: how far it got is the finding.
func (s *stack) omsload(ctx context.Context, args ...string) (loadReport, error) {
	n := loadRuns.Add(1)
	jsonFile := filepath.Join(s.logDir, fmt.Sprintf("omsload-%d.json", n))
	logPath := filepath.Join(s.logDir, fmt.Sprintf("omsload-%d.log", n))
	log, err := os.Create(logPath)
	if err != nil {
		return loadReport{}, err
	}
	defer log.Close()
	args = append(args, "-ingest", "http://"+s.ingestHTTP, "-query", "http://"+s.queryHTTP, "-ceiling=false", "-json-file", jsonFile)
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "omsload"), args...)
	cmd.Env = append(os.Environ(), "OMS_TOKEN="+s.token)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = childProcAttr()
	runErr := cmd.Run()
	var r loadReport
	b, err := os.ReadFile(jsonFile)
	if err != nil {
		return r, fmt.Errorf("omsload %v: %v (no report; its output: %s)", args, runErr, logPath)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("omsload report %s: %w", jsonFile, err)
	}
	return r, nil
}

// quiesce waits until the command queue is empty and every notification
// has left the outbox, so that one phase's tail is not billed to the next.
func (s *stack) quiesce(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		d, err := queue.QueueDepth(ctx, s.sqs, s.urls.Command)
		if err != nil {
			return err
		}
		// Whether any row is left, not how many: the probe stops at the
		// first, so its cost does not grow with the backlog.
		pending, err := s.count(ctx, `SELECT count(*) FROM (SELECT FROM watermill_outbox WHERE parked_at IS NULL LIMIT 1) t`)
		if err != nil {
			return err
		}
		if d.Visible+d.InFlight == 0 && pending == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			outbox, _ := s.count(ctx, `SELECT count(*) FROM watermill_outbox WHERE parked_at IS NULL`)
			return fmt.Errorf("still %d commands queued and %d notifications in the outbox after %s", d.Visible+d.InFlight, outbox, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// drainResult is the processor working off a backlog of queued creates.
type drainResult struct {
	Fill    loadReport
	FillCPU cpu
	Queued  int // visible in the command queue when the processor started
	Applied int64
	// Seconds is from the processor's start to the last order applied;
	// RelaySeconds to the last notification relayed.
	Seconds, RelaySeconds float64
	PerSec                float64
	// Polls is how often the bench looked whether the drain was over;
	// ProbeCPU what its monitoring backend spent (left out of CPU) from the
	// processor's start to the outbox empty.
	Polls    int
	ProbeCPU time.Duration
	CPU      cpu // processor start → outbox empty
	Profiles map[string]string
	Err      error
}

// drain queues cfg.DrainOrders creates with the processor stopped, then
// starts it and times it until all are applied.
func (s *stack) drain(ctx context.Context, cfg config) (r drainResult) {
	s.say("drain: queueing %d creates with the processor stopped", cfg.DrainOrders)
	m := s.startMeter(ctx)
	r.Fill, r.Err = s.omsload(ctx, "-n", strconv.Itoa(cfg.DrainOrders), "-c", strconv.Itoa(cfg.FillClients),
		"-visible=false", "-timeout", cfg.DrainTimeout.String())
	r.FillCPU = m.finish(ctx)
	if r.Err != nil {
		return r
	}
	if r.Fill.Accepted == 0 {
		r.Err = fmt.Errorf("ingest accepted no creates: %v %v", r.Fill.ErrorsByKind, r.Fill.ErrorBodies)
		return r
	}
	if d, err := queue.QueueDepth(ctx, s.sqs, s.urls.Command); err == nil {
		r.Queued = d.Visible
	}

	s.say("drain: %d queued (%.0f accepted/s); starting the processor", r.Fill.Accepted, r.Fill.AcceptedPerSec)
	m = s.startMeter(ctx)
	start := time.Now()
	if r.Err = s.startProcessor(ctx); r.Err != nil {
		return r
	}
	var profiles sync.WaitGroup
	if cfg.CPUProfile != "" {
		r.Profiles = map[string]string{}
		var mu sync.Mutex
		for name, addr := range map[string]string{nameProcessor: s.processorHTTP, nameIngest: s.ingestAdmin, nameQuery: s.queryAdmin} {
			profiles.Go(func() {
				got := s.profile(ctx, name, addr, cfg)
				mu.Lock()
				r.Profiles[name] = got
				mu.Unlock()
			})
		}
	}
	monCPU, _ := cpuTime(s.monPID)
	r.Err = s.awaitApplied(ctx, start, r.Fill.Accepted, cfg.DrainTimeout, &r)
	if r.Seconds <= 0 { // nothing applied
		r.Seconds = time.Since(start).Seconds()
	}
	r.PerSec = float64(r.Applied) / r.Seconds
	if r.Err == nil {
		r.Err = s.quiesce(ctx, max(30*time.Second, cfg.DrainTimeout-time.Since(start)))
	}
	r.RelaySeconds = time.Since(start).Seconds()
	r.CPU = m.finish(ctx)
	if t, err := cpuTime(s.monPID); err == nil {
		r.ProbeCPU = t - monCPU
	}
	profiles.Wait()
	s.say("drain: %d applied in %.1fs: %.0f orders/s", r.Applied, r.Seconds, r.PerSec)
	return r
}

// profile fetches a CPU profile from a service's admin port during the
// drain, and says where it went or why there is none.
func (s *stack) profile(ctx context.Context, name, addr string, cfg config) string {
	if name == nameProcessor {
		// Started just now: wait for its health server.
		if err := s.waitReady(ctx, name, addr, true); err != nil {
			return "not captured: " + err.Error()
		}
	}
	secs := max(1, int(cfg.ProfileDuration/time.Second))
	c := http.Client{Timeout: time.Duration(secs+30) * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs))
	if err != nil {
		return "not captured: " + err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("not captured: the admin port (%s) answers %s to /debug/pprof/profile", addr, resp.Status)
	}
	if err := os.MkdirAll(cfg.CPUProfile, 0o755); err != nil {
		return "not captured: " + err.Error()
	}
	path := filepath.Join(cfg.CPUProfile, name+"-drain.pprof")
	f, err := os.Create(path)
	if err != nil {
		return "not captured: " + err.Error()
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		return "not captured: " + err.Error()
	}
	return path
}

// drainPoll is how often the drain looks whether it is over: coarse, since
// the end time comes from the data, not from the poll.
const drainPoll = 250 * time.Millisecond

// awaitApplied waits until the processor has applied accepted creates
// since start, and sets r.Applied and r.Seconds. It watches the command
// queue, which costs PostgreSQL nothing, and counts the orders only when
// the queue is empty; the drain's end is then the newest order's
// create_time, which the processor sets just before the one statement
// that writes the order (its commit follows within a round trip). So the
// figure is exact to a round trip whatever the poll interval, and the
// probe takes next to no CPU from the drain it times.
func (s *stack) awaitApplied(ctx context.Context, start time.Time, accepted int64, limit time.Duration, r *drainResult) error {
	deadline := start.Add(limit)
	for {
		r.Polls++
		d, err := queue.QueueDepth(ctx, s.sqs, s.urls.Command)
		if err != nil {
			return err
		}
		if d.Visible+d.InFlight == 0 {
			var last time.Time
			s.monMu.Lock()
			err := s.mon.QueryRowContext(ctx, `SELECT count(*), coalesce(max(create_time), $1) FROM orders WHERE create_time >= $1`, start).Scan(&r.Applied, &last)
			s.monMu.Unlock()
			if err != nil {
				return fmt.Errorf("count the drain's orders: %w", err)
			}
			r.Seconds = last.Sub(start).Seconds()
			if r.Applied >= accepted {
				return nil
			}
		}
		if p := s.exited(); p != "" {
			r.Seconds = time.Since(start).Seconds()
			return fmt.Errorf("%s exited during the drain; its log: %s", p, s.logPath(p))
		}
		if time.Now().After(deadline) {
			r.Seconds = time.Since(start).Seconds()
			return fmt.Errorf("%d of %d applied after %s (-drain-timeout); %d commands still queued", r.Applied, accepted, limit, d.Visible+d.InFlight)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(drainPoll):
		}
	}
}

// e2eResult is one omsload run with the processor running.
type e2eResult struct {
	Load loadReport
	CPU  cpu
	Poll time.Duration
	Err  error
}

func (s *stack) endToEnd(ctx context.Context, cfg config, args ...string) (r e2eResult) {
	if r.Err = s.quiesce(ctx, 60*time.Second); r.Err != nil {
		return r
	}
	m := s.startMeter(ctx)
	r.Load, r.Err = s.omsload(ctx, append(args, "-timeout", cfg.LoadTimeout.String())...)
	if r.Err == nil {
		// The notifications of the last orders are part of their cost.
		r.Err = s.quiesce(ctx, 30*time.Second)
	}
	r.CPU = m.finish(ctx)
	if r.Err == nil && r.Load.Visible < int64(r.Load.Orders) {
		r.Err = fmt.Errorf("%d of %d orders visible (accepted %d): %v %v", r.Load.Visible, r.Load.Orders, r.Load.Accepted, r.Load.ErrorsByKind, r.Load.ErrorBodies)
	}
	return r
}

// readResult is one read benchmark: Go clients for a fixed time.
type readResult struct {
	Clients        int
	Calls, Errors  int64
	FirstError     string
	PerSec         float64
	P50, P99       float64 // ms
	CPU            cpu
	Ceiling        float64
	CeilingClients int
	CeilingErr     error
	Err            error
}

// reads measures GetOrder over gRPC and over HTTP and ListOrders, each
// against pgbench running the same SELECTs on the same rows.
func (s *stack) reads(ctx context.Context, cfg config) (get, getHTTP, list readResult, err error) {
	// The orders were just written: give the planner and the visibility map
	// what a settled table has.
	if _, err := s.db.ExecContext(ctx, `VACUUM ANALYZE orders, order_line_items`); err != nil {
		return get, getHTTP, list, err
	}
	if _, err := s.db.ExecContext(ctx, `DROP TABLE IF EXISTS omsbench_ids;
		CREATE TABLE omsbench_ids AS SELECT (row_number() OVER ())::int AS n, id FROM (SELECT id FROM orders ORDER BY random() LIMIT 10000) t;
		ALTER TABLE omsbench_ids ADD PRIMARY KEY (n); ANALYZE omsbench_ids`); err != nil {
		return get, getHTTP, list, fmt.Errorf("id list: %w", err)
	}
	var ids []string
	rows, err := s.db.QueryContext(ctx, `SELECT id::text FROM omsbench_ids ORDER BY n`)
	if err != nil {
		return get, getHTTP, list, err
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return get, getHTTP, list, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if len(ids) == 0 {
		return get, getHTTP, list, errors.New("no orders to read")
	}
	var owner string
	if err := s.db.QueryRowContext(ctx, `SELECT created_by FROM orders LIMIT 1`).Scan(&owner); err != nil {
		return get, getHTTP, list, err
	}
	secs := max(1, int(cfg.ReadDuration/time.Second))

	s.say("reads: pgbench GetOrder's SELECTs by primary key, %d clients", cfg.ReadClients)
	ceiling, ceilingErr := pgbenchRun{URL: s.dbURL, Script: getScript, Clients: cfg.ReadClients, Seconds: secs, Prepared: true,
		Vars: map[string]string{"ids": strconv.Itoa(len(ids))}}.run(ctx)

	conn, err := grpc.NewClient(s.queryGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return get, getHTTP, list, err
	}
	defer conn.Close()
	client := omsv1.NewOrderQueryServiceClient(conn)
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.token)

	s.say("reads: GetOrder over gRPC, %d clients, %s", cfg.ReadClients, cfg.ReadDuration)
	get = s.drive(authed, cfg.ReadClients, cfg.ReadDuration, func(ctx context.Context, i int) error {
		_, err := client.GetOrder(ctx, &omsv1.GetOrderRequest{Name: "orders/" + ids[i%len(ids)]})
		return err
	})
	get.Ceiling, get.CeilingClients, get.CeilingErr = ceiling, cfg.ReadClients, ceilingErr

	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 2 * cfg.ReadClients
	hc := &http.Client{Transport: t, Timeout: 30 * time.Second}
	defer t.CloseIdleConnections()
	s.say("reads: GetOrder over HTTP, %d clients, %s", cfg.ReadClients, cfg.ReadDuration)
	getHTTP = s.drive(ctx, cfg.ReadClients, cfg.ReadDuration, func(ctx context.Context, i int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.queryHTTP+"/v1/orders/"+ids[i%len(ids)], nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+s.token)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %.200s", resp.Status, b)
		}
		return nil
	})
	getHTTP.Ceiling, getHTTP.CeilingClients, getHTTP.CeilingErr = ceiling, cfg.ReadClients, ceilingErr

	s.say("reads: pgbench ListOrders' first page of 50, %d clients", cfg.ListClients)
	list.Ceiling, list.CeilingErr = pgbenchRun{URL: s.dbURL, Script: listScript, Clients: cfg.ListClients, Seconds: secs, Prepared: true,
		Vars: map[string]string{"owner": owner}}.run(ctx)
	list.CeilingClients = cfg.ListClients
	s.say("reads: ListOrders (page of 50) over gRPC, %d clients, %s", cfg.ListClients, cfg.ReadDuration)
	ceil := list
	list = s.drive(authed, cfg.ListClients, cfg.ReadDuration, func(ctx context.Context, i int) error {
		resp, err := client.ListOrders(ctx, &omsv1.ListOrdersRequest{PageSize: 50})
		if err == nil && len(resp.Orders) == 0 {
			err = errors.New("an empty page")
		}
		return err
	})
	list.Ceiling, list.CeilingClients, list.CeilingErr = ceil.Ceiling, ceil.CeilingClients, ceil.CeilingErr
	return get, getHTTP, list, nil
}

// drive calls call from clients goroutines for d, and measures the calls
// and the CPU they cost. A call in flight at the end is let finish, and
// counted: cutting it off would turn it into an error (or, over gRPC, the
// server's deadline answer) that says nothing about the service.
func (s *stack) drive(ctx context.Context, clients int, d time.Duration, call func(ctx context.Context, i int) error) readResult {
	r := readResult{Clients: clients}
	m := s.startMeter(ctx)
	var (
		mu       sync.Mutex
		all      []time.Duration
		calls    atomic.Int64
		failures atomic.Int64
		wg       sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	for g := range clients {
		wg.Go(func() {
			var mine []time.Duration
			for i := g; ctx.Err() == nil && time.Now().Before(end); i += clients {
				t := time.Now()
				if err := call(ctx, i); err != nil {
					if failures.Add(1) == 1 {
						mu.Lock()
						r.FirstError = err.Error()
						mu.Unlock()
					}
					continue
				}
				mine = append(mine, time.Since(t))
				calls.Add(1)
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	wall := time.Since(start)
	r.CPU = m.finish(ctx)
	r.Calls, r.Errors = calls.Load(), failures.Load()
	r.PerSec = float64(r.Calls) / wall.Seconds()
	slices.Sort(all)
	r.P50, r.P99 = ms(nearestRank(all, 50)), ms(nearestRank(all, 99))
	if r.Errors > 0 {
		r.Err = fmt.Errorf("%d of %d calls failed; the first: %s", r.Errors, r.Errors+r.Calls, r.FirstError)
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// nearestRank is the p-th percentile of sorted samples, an observed value.
func nearestRank(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100 + 0.999999)
	return sorted[min(max(rank, 1), len(sorted))-1]
}
