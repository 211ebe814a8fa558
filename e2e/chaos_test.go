package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/queue"
)

// chaosSubscriptions is PROCESSOR_SUBSCRIPTIONS in every chaos scenario:
// 8, as in production, now that sqslocal keeps a FIFO group locked while
// any of its messages is in flight, with any number of consumers (goaws
// alone did not; docs/sqs.md). Set it to 1 to take concurrency out of a
// failing scenario.
const chaosSubscriptions = 8

// chaosImmediateFollowUps sends an order's pay (and cancel) right after its
// create is accepted, so a pay can sit behind a create that a killed
// processor left in flight: only the group lock keeps it from being
// applied first (and dead-lettered as "order not found"). Set it to false
// to send follow-ups only once the create is applied, for an emulator that
// loses group locks (goaws before sqslocal's fix).
const chaosImmediateFollowUps = true

const (
	// chaosVisibilityTimeout is the scenario queues' visibility timeout,
	// as in the shared stack; it must exceed chaosRetryBudget.
	chaosVisibilityTimeout = 15 * time.Second
	// chaosRetryBudget is the processor's worst case of in-process retries
	// with the settings of stack_test.go's startProcessor: 5 attempts of
	// at most 1 s, and waits of 0.5, 1, 2 and 4 s with 10 % jitter.
	chaosRetryBudget = 5*time.Second + 8250*time.Millisecond
	// chaosSettleTimeout bounds the wait for everything accepted to be
	// applied and announced, once the faults are over.
	chaosSettleTimeout = 4 * time.Minute
)

// chaosVariant sizes the suite: short (make test, CI) or full (make chaos,
// OMS_CHAOS=full).
type chaosVariant struct {
	name                   string
	full                   bool
	rate                   float64 // creates per second during the load
	warmup, between, after time.Duration
	processorKills         int
	ingestKills            int
	proxyCut               time.Duration
	pgStop                 time.Duration
	raceFor                time.Duration
	backlog                int
	backlogSettle          time.Duration
}

func chaosVariantFromEnv() chaosVariant {
	if os.Getenv("OMS_CHAOS") == "full" {
		return chaosVariant{
			name: "full", full: true, rate: 25,
			warmup: 5 * time.Second, between: 6 * time.Second, after: 5 * time.Second,
			processorKills: 5, ingestKills: 3, proxyCut: 5 * time.Second, pgStop: 30 * time.Second,
			raceFor: 20 * time.Second, backlog: 20000, backlogSettle: 20 * time.Minute,
		}
	}
	return chaosVariant{
		name: "short", rate: 12,
		warmup: 3 * time.Second, between: 3 * time.Second, after: 2 * time.Second,
		processorKills: 3, ingestKills: 2, proxyCut: 5 * time.Second, pgStop: 30 * time.Second, // full only
		raceFor: 6 * time.Second, backlog: 1000, backlogSettle: chaosSettleTimeout,
	}
}

// load is the mixed load of the fault scenarios: creates from several
// goroutines, a pay for each order, a cancel at the same time for a third
// of them, a tenth of the requests sent twice with the same key, and a
// tenth of the commands delivered twice.
func (v chaosVariant) load() chaosLoadOptions {
	return chaosLoadOptions{creators: 3, rate: v.rate, cancelShare: 0.33, resendShare: 0.1, replayShare: 0.1, immediate: chaosImmediateFollowUps}
}

// chaosJitter is d ± 30 %, so faults hit the load at different points.
func chaosJitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.7 + 0.6*rand.Float64()))
}

type chaosScenario struct {
	name     string
	fullOnly bool
	run      func(t *testing.T, v chaosVariant, res *chaosResult)
}

func chaosScenarios(v chaosVariant) []chaosScenario {
	return []chaosScenario{
		{name: fmt.Sprintf("processor kill -9 x%d", v.processorKills), run: chaosProcessorKills},
		{name: "SIGTERM ingest, query, processor", run: chaosGracefulRestarts},
		{name: fmt.Sprintf("postgres cut %s (proxy)", v.proxyCut), run: chaosProxyCut},
		{name: fmt.Sprintf("postgres stopped %s (own cluster)", v.pgStop), fullOnly: true, run: chaosPostgresStop},
		{name: fmt.Sprintf("ingest kill -9 x%d", v.ingestKills), run: chaosIngestKills},
		{name: "SQS endpoint restart", run: chaosQueueRestart},
		{name: "concurrent pay and cancel", run: chaosPayCancelRace},
		{name: fmt.Sprintf("backlog of %d creates", v.backlog), run: chaosBacklog},
		{name: "processor before migration", run: chaosBeforeMigration},
	}
}

// TestChaos runs each scenario against processes of its own (database,
// queues, emulator, ingest, query, processor), then checks the books from
// PostgreSQL and the queues, and prints one table. It is not parallel with
// the other tests, and it never stops the stack's shared parts.
// docs/reliability.md describes it.
func TestChaos(t *testing.T) {
	v := chaosVariantFromEnv()
	began := time.Now()
	var results []*chaosResult
	// The group returns once every scenario has, parallel ones included.
	t.Run("scenarios", func(t *testing.T) {
		for _, sc := range chaosScenarios(v) {
			res := &chaosResult{name: sc.name}
			results = append(results, res)
			if sc.fullOnly && !v.full {
				res.skipped = "skipped (full only)"
				continue
			}
			t.Run(strings.NewReplacer(" ", "_", ",", "").Replace(sc.name), func(t *testing.T) {
				if !v.full {
					// Scenarios share nothing, so the short variant runs
					// them side by side, -parallel (GOMAXPROCS) at a time,
					// to stay within CI's budget. The full variant runs
					// them one by one, for clean recovery times.
					t.Parallel()
				}
				start := time.Now()
				defer func() {
					res.elapsed = time.Since(start)
					if t.Failed() && len(res.problems) == 0 {
						res.problem("the scenario could not run; see its log")
					}
				}()
				sc.run(t, v, res)
			})
		}
	})
	fmt.Print(chaosTable(v, results, time.Since(began)))
	for _, r := range results {
		if r.skipped == "" && !r.pass() {
			t.Errorf("scenario %q failed its accounting (details in its subtest)", r.name)
		}
	}
}

// chaosFinish checks the books, stops the scenario's processes (a non-zero exit
// is a failure), and fails the subtest with the details and the logs.
func chaosFinish(t *testing.T, e *chaosEnv, loads ...*chaosLoad) {
	for _, l := range loads {
		l.stop()
	}
	e.audit(loads...)
	e.shutdown()
	r := e.res
	r.note("processor log: %s", e.processorCounts())
	for _, s := range r.info {
		t.Log(s)
	}
	t.Logf("accepted %d, applied once %d, dead-lettered %d, duplicate effects %d, notifications missing %d / out of order %d / duplicate %d, recovery %s",
		r.accepted, r.appliedOnce, r.inDLQ, r.dupEffects, r.notesMissing, r.notesOutOfOrder, r.notesDup, chaosRecoveryText(r))
	if !r.pass() {
		shown := r.problems[:min(len(r.problems), 40)]
		t.Errorf("%d problems:\n  %s\n%s", len(r.problems), strings.Join(shown, "\n  "), e.logs(40))
	}
}

// kill -9 of the processor, several times, under load; restarted each
// time. The command it held comes back after the visibility timeout.
func chaosProcessorKills(t *testing.T, v chaosVariant, res *chaosResult) {
	e := newChaosEnv(t, res, chaosEnvOptions{})
	l := startChaosLoad(t, e, v.load())
	time.Sleep(v.warmup)
	hit := 0
	for range v.processorKills {
		// Kill while a command is in flight, so it has to come back.
		if e.waitInFlight(5 * time.Second) {
			hit++
		}
		e.kill(e.processor)
		time.Sleep(500 * time.Millisecond)
		if err := e.startProcessor(true); err != nil {
			res.problem("restart after kill -9: %v", err)
			break
		}
		e.faultEnd = time.Now()
		time.Sleep(chaosJitter(v.between))
	}
	res.note("%d of %d kills with a command in flight", hit, v.processorKills)
	time.Sleep(v.after)
	chaosFinish(t, e, l)
}

// SIGTERM of each service in turn under load: each must drain and exit 0
// (race detector included), and its successor carries on.
func chaosGracefulRestarts(t *testing.T, v chaosVariant, res *chaosResult) {
	e := newChaosEnv(t, res, chaosEnvOptions{})
	l := startChaosLoad(t, e, v.load())
	time.Sleep(v.warmup)
	for _, svc := range []string{"ingest", "query", "processor"} {
		var err error
		switch svc {
		case "ingest":
			e.term(e.ingest)
			err = e.startIngest()
		case "query":
			e.term(e.query)
			if err = e.startQuery(true); err == nil {
				if r := do(t, "GET", "http://"+e.queryHTTP+"/v1/orders?pageSize=1", ""); r.status != http.StatusOK {
					err = fmt.Errorf("list after the restart: %d %s", r.status, r.raw)
				}
			}
		case "processor":
			e.term(e.processor)
			err = e.startProcessor(true)
		}
		if err != nil {
			res.problem("%s after SIGTERM: %v", svc, err)
			break
		}
		e.faultEnd = time.Now()
		time.Sleep(chaosJitter(v.between))
	}
	time.Sleep(v.after)
	chaosFinish(t, e, l)
}

// PostgreSQL unreachable for a few seconds: the processor's connections
// are cut by a TCP proxy (as in TestDatabaseOutageIsRetried); the
// in-process retries cover it.
func chaosProxyCut(t *testing.T, v chaosVariant, res *chaosResult) {
	px, err := newProxy(mustHostPort(dbtest.URL()))
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	e := newChaosEnv(t, res, chaosEnvOptions{procDBURL: func(u string) string {
		return strings.Replace(u, mustHostPort(u), px.Addr(), 1)
	}})
	l := startChaosLoad(t, e, v.load())
	time.Sleep(v.warmup)
	px.Block()
	time.Sleep(v.proxyCut)
	if err := px.Unblock(); err != nil {
		t.Fatal(err)
	}
	e.faultEnd = time.Now()
	time.Sleep(v.after + v.between)
	chaosFinish(t, e, l)
}

// PostgreSQL itself stopped (a cluster of the suite's own, fast shutdown)
// for longer than the processor's retry budget: commands in flight use up
// their retries, are left to SQS, and are redelivered once it is back.
func chaosPostgresStop(t *testing.T, v chaosVariant, res *chaosResult) {
	if v.pgStop <= chaosRetryBudget {
		t.Fatalf("the stop (%s) must outlast the retry budget (%s)", v.pgStop, chaosRetryBudget)
	}
	cluster := newChaosCluster(t)
	e := newChaosEnv(t, res, chaosEnvOptions{adminURL: cluster.URL()})
	l := startChaosLoad(t, e, v.load())
	time.Sleep(v.warmup)
	if err := cluster.ctl("stop"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(v.pgStop)
	if err := cluster.ctl("start"); err != nil {
		t.Fatal(err)
	}
	e.faultEnd = time.Now()
	res.note("PostgreSQL down %s; retry budget %s, visibility timeout %s", v.pgStop, chaosRetryBudget, chaosVisibilityTimeout)
	time.Sleep(v.after + v.between)
	chaosFinish(t, e, l)
}

// kill -9 of ingest under load: requests in flight fail, and clients retry
// them with the same key against the restarted ingest.
func chaosIngestKills(t *testing.T, v chaosVariant, res *chaosResult) {
	e := newChaosEnv(t, res, chaosEnvOptions{})
	l := startChaosLoad(t, e, v.load())
	time.Sleep(v.warmup)
	for range v.ingestKills {
		e.kill(e.ingest)
		time.Sleep(500 * time.Millisecond)
		if err := e.startIngest(); err != nil {
			res.problem("restart after kill -9: %v", err)
			break
		}
		e.faultEnd = time.Now()
		time.Sleep(chaosJitter(v.between))
	}
	time.Sleep(v.after)
	chaosFinish(t, e, l)
}

// The SQS endpoint restarted. The emulator keeps its queues in memory, so
// a restart loses everything queued, which real SQS never does: the load
// stops and the queues drain first. The point is self-healing: ingest and
// the processor re-create the queues and carry on without a restart.
func chaosQueueRestart(t *testing.T, v chaosVariant, res *chaosResult) {
	e := newChaosEnv(t, res, chaosEnvOptions{})
	before := startChaosLoad(t, e, v.load())
	time.Sleep(v.warmup + v.between)
	before.stop()
	acc, _, _, _, _, _ := before.snapshot()
	e.settle(acc, chaosSettleTimeout)
	if done, _, why := e.settled(context.Background(), acc); !done {
		res.problem("did not drain before the restart: %s", why)
	}
	e.term(e.emu)
	// While it is down, a command is refused as retryable, not as bad.
	if r := do(t, "POST", "http://"+e.ingestHTTP+"/v1/orders", orderBody, "Idempotency-Key", uuid.NewString()); r.status != http.StatusServiceUnavailable {
		res.problem("a create while the SQS endpoint is down: %d %s, want 503", r.status, r.raw)
	}
	if err := e.startEmulator(); err != nil {
		t.Fatal(err)
	}
	e.faultEnd = time.Now()
	for name, addr := range map[string]string{"ingest": e.ingestHTTP, "processor": e.procHTTP} {
		if err := waitFor(60*time.Second, func() error { return chaosReadyz(addr) }); err != nil {
			res.problem("%s not ready again after the SQS restart: %v", name, err)
		}
	}
	res.note("ingest and processor ready again %s after the emulator restarted", time.Since(e.faultEnd).Round(100*time.Millisecond))
	after := startChaosLoad(t, e, v.load())
	time.Sleep(v.warmup + v.between)
	chaosFinish(t, e, before, after)
}

func chaosReadyz(addr string) error {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/readyz: %d", addr, resp.StatusCode)
	}
	return nil
}

// Two pays and two cancels at once on every order, right after its create:
// at most one of each applies, the rest are recorded rejections.
func chaosPayCancelRace(t *testing.T, v chaosVariant, res *chaosResult) {
	e := newChaosEnv(t, res, chaosEnvOptions{})
	l := startChaosLoad(t, e, chaosLoadOptions{creators: 3, rate: v.rate, race: true, immediate: true, resendShare: 0.1, replayShare: 0.1})
	time.Sleep(v.raceFor)
	chaosFinish(t, e, l)
	if res.rejected == 0 && res.pass() {
		res.problem("no command was rejected: the race never happened")
		t.Error(res.problems[0])
	}
}

// A backlog of creates queued while no processor runs, then drained by
// one. Recovery is the time from the processor's start to the last create
// applied.
func chaosBacklog(t *testing.T, v chaosVariant, res *chaosResult) {
	e := newChaosEnv(t, res, chaosEnvOptions{noProcessor: true})
	l := startChaosLoad(t, e, chaosLoadOptions{creators: 16, total: v.backlog, noFollowUps: true})
	queued := time.Now()
	l.waitCreators()
	if d, err := queue.QueueDepth(context.Background(), e.sqs, e.urls.Command); err == nil {
		res.note("%d commands queued in %s", d.Visible+d.InFlight, time.Since(queued).Round(100*time.Millisecond))
	}
	if err := e.startProcessor(false); err != nil {
		t.Fatal(err)
	}
	e.faultEnd = time.Now()
	chaosFinishWithin(t, e, v.backlogSettle, l)
	if res.recoveryKnown && res.recovery > 0 {
		t.Logf("drained at %.0f commands/s", float64(res.appliedOnce)/res.recovery.Seconds())
	}
}

// chaosFinishWithin is chaosFinish with a longer wait for the backlog to drain.
func chaosFinishWithin(t *testing.T, e *chaosEnv, settle time.Duration, loads ...*chaosLoad) {
	e.settleFor = settle
	chaosFinish(t, e, loads...)
}

// The processor started on a database that is not migrated yet: it holds
// commands (nothing dead-lettered) and is not ready, then applies
// everything once the migration runs.
func chaosBeforeMigration(t *testing.T, v chaosVariant, res *chaosResult) {
	e := newChaosEnv(t, res, chaosEnvOptions{unmigrated: true, noProcessor: true})
	if err := e.startProcessor(false); err != nil {
		t.Fatal(err)
	}
	l := startChaosLoad(t, e, v.load())
	time.Sleep(v.warmup + v.between)
	if err := chaosReadyz(e.procHTTP); err == nil {
		res.problem("the processor is ready on a database that is not migrated")
	}
	if d, err := queue.QueueDepth(context.Background(), e.sqs, e.urls.DeadLetter); err != nil || d.Visible+d.InFlight != 0 {
		res.problem("dead-lettered before the migration: %+v %v", d, err)
	}
	if err := e.migrate(); err != nil {
		t.Fatal(err)
	}
	e.faultEnd = time.Now()
	for name, addr := range map[string]string{"processor": e.procHTTP, "query": e.queryHTTP} {
		if err := waitFor(60*time.Second, func() error { return chaosReadyz(addr) }); err != nil {
			res.problem("the %s is not ready after the migration: %v", name, err)
		}
	}
	time.Sleep(v.after + v.between)
	chaosFinish(t, e, l)
}

func chaosRecoveryText(r *chaosResult) string {
	if !r.recoveryKnown {
		return "n/a"
	}
	return fmt.Sprintf("%.1fs", r.recovery.Seconds())
}

// chaosTable is the one table the suite prints, in Markdown.
func chaosTable(v chaosVariant, results []*chaosResult, took time.Duration) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "\nChaos suite, %s variant, %d CPUs (%s/%s, %s), %s; processor subscriptions %d\n\n",
		v.name, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, host, took.Round(time.Second), chaosSubscriptions)
	fmt.Fprintln(&b, "| scenario | accepted | applied once | in DLQ | duplicate effects | notifications missing / out of order / duplicate | recovery time | result |")
	fmt.Fprintln(&b, "|---|---:|---:|---:|---:|---|---:|---|")
	for _, r := range results {
		if r.skipped != "" {
			fmt.Fprintf(&b, "| %s | | | | | | | %s |\n", r.name, r.skipped)
			continue
		}
		verdict := "PASS"
		if !r.pass() {
			verdict = fmt.Sprintf("FAIL (%d problems)", len(r.problems))
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d / %d / %d | %s | %s |\n", r.name, r.accepted, r.appliedOnce, r.inDLQ, r.dupEffects,
			r.notesMissing, r.notesOutOfOrder, r.notesDup, chaosRecoveryText(r), verdict)
	}
	b.WriteString("\n")
	return b.String()
}
