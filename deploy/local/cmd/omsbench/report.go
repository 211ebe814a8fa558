package main

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// results is everything one run measured.
type results struct {
	Config config
	// Tuning is the services' environment that shapes performance.
	Tuning  map[string]string
	Started time.Time
	// Finished is when the last phase ended.
	Finished time.Time

	GoVersion, CPUModel, Memory, Kernel, LoadAvg, Commit string
	// Notes is appended to the report as it is (-notes).
	Notes           string
	NProc           int
	PostgresVersion string
	Subscriptions   int

	CreateCeiling    float64
	CreateCeilingErr error
	// The create ceiling's script and where it came from.
	CreateScript string
	CreateSource string
	CaptureErr   error
	SQS          sqsCeiling
	SQSErr       error

	Drain            drainResult
	Saturation, Rate e2eResult
	Get, GetHTTP     readResult
	List             readResult
	ReadsErr         error

	// The opt-in phases: nil or empty when not asked for.
	Soak     *soakResult
	Scale    []scaleStep
	ScaleErr error

	PeakRSS map[string]int64
	Exited  string
}

// failures lists what did not measure, for the exit status.
func (r *results) failures() []string {
	var out []string
	add := func(what string, err error) {
		if err != nil {
			out = append(out, what+": "+err.Error())
		}
	}
	add("recording the processor's create statements", r.CaptureErr)
	add("create ceiling", r.CreateCeilingErr)
	add("SQS ceiling", r.SQSErr)
	add("drain", r.Drain.Err)
	add("end to end at saturation", r.Saturation.Err)
	add("end to end at a fixed rate", r.Rate.Err)
	add("reads", r.ReadsErr)
	add("GetOrder over gRPC", r.Get.Err)
	add("GetOrder over HTTP", r.GetHTTP.Err)
	add("ListOrders", r.List.Err)
	add("GetOrder ceiling", r.Get.CeilingErr)
	add("ListOrders ceiling", r.List.CeilingErr)
	if r.Soak != nil {
		add("soak", r.Soak.Err)
	}
	add("ListOrders as the table grows", r.ScaleErr)
	for _, st := range r.Scale {
		for _, c := range st.Calls {
			add(fmt.Sprintf("ListOrders at %s orders, %s", num(float64(st.Orders)), c.Shape.Name), c.Read.Err)
		}
	}
	if r.Exited != "" {
		out = append(out, r.Exited)
	}
	return out
}

// The report's section headings; the smoke test looks for each.
var sections = []string{
	"## Summary",
	"## Ceilings",
	"## Drain",
	"## End to end",
	"## Reads",
	"## CPU per unit of work",
	"## Peak memory",
	"## Profiles",
	"## Machine and configuration",
	"## How each figure is measured",
	"## ListOrders as the table grows",
	"## Memory over a soak",
}

func (r *results) write(w io.Writer) error {
	b := bufio.NewWriter(w)
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	cfg := r.Config
	sat, rate := r.Saturation.Load, r.Rate.Load

	p("# Performance\n\n")
	p("Written by `make bench` (`deploy/local/cmd/omsbench`) on %s, in %s. Every figure is measured against a ceiling measured in the same run, on the same machine; the targets are those of issue 9.\n\n",
		r.Started.Format("2006-01-02 15:04 MST"), r.Finished.Sub(r.Started).Round(time.Second))
	if f := r.failures(); len(f) > 0 {
		p("**Some measurements failed** (a failed figure reads \"failed\"):\n\n")
		for _, e := range f {
			p("- %s\n", oneLine(e))
		}
		p("\n")
	}

	p("%s\n\n", sections[0])
	p("| What | Figure | Ceiling, same run | Ratio | Target | Met |\n|---|---|---|---|---|---|\n")
	d := r.Drain
	drainOK := d.Err == nil
	p("| Processor draining %s queued creates | %s | pgbench, the processor's create transaction, %d clients: %s | %s | ≥ 1,000 orders/s and ≥ 0.3 | %s |\n",
		num(float64(d.Fill.Accepted)), fig(drainOK, num(d.PerSec)+" orders/s"), r.Subscriptions, fig(r.CreateCeilingErr == nil, num(r.CreateCeiling)+" tps"),
		ratio(drainOK && r.CreateCeilingErr == nil, d.PerSec, r.CreateCeiling),
		met(drainOK && r.CreateCeilingErr == nil, d.PerSec >= 1000 && d.PerSec/r.CreateCeiling >= 0.3))
	total := d.CPU.per(nameProcessor, float64(d.Applied)) + d.CPU.per(namePostgres, float64(d.Applied)) + d.CPU.per(nameSQS, float64(d.Applied))
	proc := d.CPU.per(nameProcessor, float64(d.Applied))
	p("| CPU per order while draining: processor + PostgreSQL + SQS endpoint | %s (processor %s) | | | ≤ 1.5 ms, processor ≤ 0.5 ms | %s |\n",
		fig(drainOK, msec(total)), fig(drainOK, msec(proc)), met(drainOK, total <= 1500*time.Microsecond && proc <= 500*time.Microsecond))
	satOK := r.Saturation.Err == nil
	p("| End to end, `omsload -c %d`: visible/s against accepted/s | %s visible/s, %s accepted/s | accepted/s | %s | ≥ 0.9 and ≥ 800 orders/s | %s |\n",
		cfg.E2EClients, fig(satOK, num(sat.VisiblePerSec)), fig(satOK, num(sat.AcceptedPerSec)), ratio(satOK, sat.VisiblePerSec, sat.AcceptedPerSec),
		met(satOK && sat.AcceptedPerSec > 0, sat.VisiblePerSec >= 0.9*sat.AcceptedPerSec && sat.VisiblePerSec >= 800))
	rateOK := r.Rate.Err == nil && rate.VisibleLatency != nil
	p("| End to end, open loop at %s orders/s (half the saturation rate): POST→visible p99 | %s | | | ≤ 250 ms | %s |\n",
		fig(rateOK, num(rate.Rate)), fig(rateOK, latMs(rate.VisibleLatency, 99)), met(rateOK, rateOK && rate.VisibleLatency.P99 <= 250))
	for _, x := range []struct {
		name   string
		rr     readResult
		target float64
	}{{"GetOrder over gRPC", r.Get, 0.6}, {"GetOrder over HTTP", r.GetHTTP, 0.5}} {
		ok := x.rr.Err == nil && r.ReadsErr == nil
		ceilOK := x.rr.CeilingErr == nil && r.ReadsErr == nil
		extra, cond := "", true
		if x.name == "GetOrder over gRPC" {
			q := x.rr.CPU.per(nameQuery, float64(x.rr.Calls))
			extra, cond = fmt.Sprintf("; query CPU ≤ 60 µs per call (%s)", fig(ok, usec(q))), q <= 60*time.Microsecond
		}
		p("| %s, %d clients | %s calls/s | pgbench, the same SELECTs by primary key, %d clients: %s | %s | ≥ %.1f%s | %s |\n",
			x.name, x.rr.Clients, fig(ok, num(x.rr.PerSec)), x.rr.CeilingClients, fig(ceilOK, num(x.rr.Ceiling)+" tps"),
			ratio(ok && ceilOK, x.rr.PerSec, x.rr.Ceiling), x.target, extra,
			met(ok && ceilOK, x.rr.PerSec/x.rr.Ceiling >= x.target && cond))
	}
	l := r.List
	listOK := l.Err == nil && r.ReadsErr == nil
	lq := l.CPU.per(nameQuery, float64(l.Calls))
	p("| ListOrders, page of 50, %d clients: query CPU per call | %s (%s calls/s) | pgbench, the same SELECTs, %d clients: %s | %s | ≤ 0.5 ms | %s |\n",
		l.Clients, fig(listOK, msec(lq)), fig(listOK, num(l.PerSec)), l.CeilingClients, fig(l.CeilingErr == nil && r.ReadsErr == nil, num(l.Ceiling)+" tps"),
		ratio(listOK && l.CeilingErr == nil, l.PerSec, l.Ceiling), met(listOK, lq <= 500*time.Microsecond))
	var worst string
	var worstRSS int64
	for _, name := range []string{nameProcessor, nameIngest, nameQuery} {
		if r.PeakRSS[name] > worstRSS {
			worst, worstRSS = name, r.PeakRSS[name]
		}
	}
	p("| Peak RSS of the largest service (%s) | %s | | | ≤ 64 MiB | %s |\n\n", worst, fig(worstRSS > 0, mib(worstRSS)), met(worstRSS > 0, worstRSS <= 64<<20))

	p("%s\n\n", sections[1])
	p("Raw, without project code, on the same machine in the same run.\n\n")
	p("| Ceiling | Figure |\n|---|---|\n")
	p("| pgbench, the processor's statements for one create (%s; %s), %d clients, %s | %s tps |\n",
		r.CreateSource, roundTrips(r.CreateScript), r.Subscriptions, cfg.PGDuration, fig(r.CreateCeilingErr == nil, num(r.CreateCeiling)))
	p("| pgbench, GetOrder's SELECTs by primary key (order, then lines), %d clients, prepared | %s tps |\n",
		r.Get.CeilingClients, fig(r.Get.CeilingErr == nil && r.ReadsErr == nil, num(r.Get.Ceiling)))
	p("| pgbench, ListOrders' first page of 50 (page, then lines), %d clients, prepared | %s tps |\n",
		r.List.CeilingClients, fig(r.List.CeilingErr == nil && r.ReadsErr == nil, num(r.List.Ceiling)))
	p("| SQS endpoint, bare SDK: SendMessageBatch(10), %d senders, %s messages | %s msgs/s |\n",
		r.SQS.Senders, num(float64(r.SQS.Messages)), fig(r.SQSErr == nil, num(r.SQS.SendPerSec)))
	p("| SQS endpoint, bare SDK: ReceiveMessage(10) + DeleteMessageBatch, %d receivers | %s msgs/s |\n\n",
		r.SQS.Receivers, fig(r.SQSErr == nil, num(r.SQS.ReceivePerSec)))
	p("<details><summary>The create ceiling's pgbench script</summary>\n\n```sql\n%s```\n\n</details>\n\n", r.CreateScript)

	p("%s\n\n", sections[2])
	p("| Step | Figure |\n|---|---|\n")
	p("| Creates queued through ingest with the processor stopped (`omsload -c %d -visible=false`) | %s accepted (%s accepted/s); %s visible in the queue |\n",
		cfg.FillClients, num(float64(d.Fill.Accepted)), num(d.Fill.AcceptedPerSec), num(float64(d.Queued)))
	p("| Processor start → every order applied | %s s for %s orders: %s orders/s |\n", dec(d.Seconds), num(float64(d.Applied)), fig(drainOK, num(d.PerSec)))
	p("| Against the create ceiling (%s tps) | %s |\n", num(r.CreateCeiling), ratio(drainOK && r.CreateCeilingErr == nil, d.PerSec, r.CreateCeiling))
	p("| Processor start → every notification relayed | %s s |\n", dec(d.RelaySeconds))
	p("| The bench's own monitoring meanwhile: %d looks at the command queue, then the outbox polled until empty, and the CPU sampling (PostgreSQL CPU of its one connection, counted in no figure above) | %s |\n\n", d.Polls, msec(d.ProbeCPU))

	p("%s\n\n", sections[3])
	p("| Run | Orders | Accepted/s | Visible/s | Visible/accepted | POST p99 | POST→visible p50 | p95 | p99 | max | Errors |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range []struct {
		name string
		e    e2eResult
	}{
		{fmt.Sprintf("saturation, `omsload -n %d -c %d` (closed loop; looks every %s)", cfg.E2EOrders, cfg.E2EClients, r.Saturation.Poll), r.Saturation},
		{fmt.Sprintf("fixed rate, `omsload -rate %s` for %s (open loop, from each scheduled send; looks every %s)", dec(r.Rate.Load.Rate), cfg.RateDuration, r.Rate.Poll), r.Rate},
	} {
		ld, ok := x.e.Load, x.e.Err == nil
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", x.name, num(float64(ld.Orders)),
			fig(ok, num(ld.AcceptedPerSec)), fig(ok, num(ld.VisiblePerSec)), ratio(ok, ld.VisiblePerSec, ld.AcceptedPerSec),
			fig(ok, dec(ld.PostLatency.P99)+" ms"), fig(ok, latMs(ld.VisibleLatency, 50)), fig(ok, latMs(ld.VisibleLatency, 95)),
			fig(ok, latMs(ld.VisibleLatency, 99)), fig(ok, latMs(ld.VisibleLatency, 100)), ld.Errors)
	}
	if lag := r.Rate.Load.SendLag; lag != nil {
		p("\nThe open loop sent its creates %s ms late at p99 (%s ms at most) against its schedule; that lateness is inside its POST→visible figures.\n", dec(lag.P99), dec(lag.Max))
	}
	p("\n")

	p("%s\n\n", sections[4])
	p("| Call | Clients | Calls/s | p50 | p99 | Ceiling | Ratio | query CPU per call | PostgreSQL CPU per call | Errors |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range []struct {
		name string
		rr   readResult
	}{{"GetOrder, gRPC", r.Get}, {"GetOrder, HTTP", r.GetHTTP}, {"ListOrders, page of 50, gRPC", r.List}} {
		ok := x.rr.Err == nil && r.ReadsErr == nil
		ceilOK := x.rr.CeilingErr == nil && r.ReadsErr == nil
		p("| %s | %d | %s | %s ms | %s ms | %s tps | %s | %s | %s | %d |\n", x.name, x.rr.Clients, fig(ok, num(x.rr.PerSec)),
			dec(x.rr.P50), dec(x.rr.P99), fig(ceilOK, num(x.rr.Ceiling)), ratio(ok && ceilOK, x.rr.PerSec, x.rr.Ceiling),
			fig(ok, usec(x.rr.CPU.per(nameQuery, float64(x.rr.Calls)))), fig(ok, usec(x.rr.CPU.per(namePostgres, float64(x.rr.Calls)))), x.rr.Errors)
	}
	p("\n")

	p("%s\n\n", sections[5])
	p("CPU time (user + system) each process used during a phase, divided by the orders (or calls) of the phase. PostgreSQL is the bench database's backends plus the cluster's background processes (WAL writer, checkpointer, ...), which anything else using the server shares.\n\n")
	p("| Phase | Per | processor | ingest | query | SQS endpoint | PostgreSQL | Total | Wall |\n|---|---|---|---|---|---|---|---|---|\n")
	cpuRow := func(phase, unit string, c cpu, units float64, ok bool, f func(time.Duration) string) {
		var sum time.Duration
		cells := make([]string, 0, len(measured))
		for _, name := range measured {
			v := c.per(name, units)
			sum += v
			cells = append(cells, fig(ok && units > 0, f(v)))
		}
		p("| %s | %s | %s | %s | %s s |\n", phase, unit, strings.Join(cells, " | "), fig(ok && units > 0, f(sum)), dec(c.Wall.Seconds()))
	}
	cpuRow("queueing the drain's creates", "order accepted", d.FillCPU, float64(d.Fill.Accepted), d.Fill.Accepted > 0, msec)
	cpuRow("drain (processor start → outbox empty)", "order applied", d.CPU, float64(d.Applied), drainOK, msec)
	cpuRow("end to end, saturation", "order visible", r.Saturation.CPU, float64(sat.Visible), satOK, msec)
	cpuRow("end to end, fixed rate", "order visible", r.Rate.CPU, float64(rate.Visible), r.Rate.Err == nil, msec)
	cpuRow("GetOrder, gRPC", "call", r.Get.CPU, float64(r.Get.Calls), r.Get.Err == nil && r.ReadsErr == nil, usec)
	cpuRow("GetOrder, HTTP", "call", r.GetHTTP.CPU, float64(r.GetHTTP.Calls), r.GetHTTP.Err == nil && r.ReadsErr == nil, usec)
	cpuRow("ListOrders, page of 50", "call", r.List.CPU, float64(r.List.Calls), r.List.Err == nil && r.ReadsErr == nil, usec)
	p("\nThe end-to-end rows include the query service answering omsload's ListOrders calls that look for newly visible orders.\n\n")

	p("%s\n\n", sections[6])
	p("Peak resident set (VmHWM) of each process over the whole run.\n\n| Process | Peak RSS |\n|---|---|\n")
	for _, name := range []string{nameProcessor, nameIngest, nameQuery, nameSQS} {
		p("| %s | %s |\n", name, fig(r.PeakRSS[name] > 0, mib(r.PeakRSS[name])))
	}
	p("\n")

	r.writeScale(b)
	r.writeSoak(b)

	p("%s\n\n", sections[7])
	switch {
	case cfg.CPUProfile == "":
		p("None taken: `-cpuprofile DIR` fetches each service's `/debug/pprof/profile` during the drain.\n\n")
	default:
		for _, name := range slices.Sorted(maps.Keys(r.Drain.Profiles)) {
			p("- %s: %s\n", name, r.Drain.Profiles[name])
		}
		p("\n")
	}

	p("%s\n\n", sections[8])
	p("| | |\n|---|---|\n")
	p("| Date | %s |\n", r.Started.Format(time.RFC3339))
	if r.Commit != "" {
		p("| Commit | %s (plus any uncommitted changes) |\n", r.Commit)
	}
	p("| CPUs (nproc) | %d × %s |\n", r.NProc, r.CPUModel)
	p("| Memory | %s |\n", r.Memory)
	p("| Load average at the start | %s |\n", r.LoadAvg)
	p("| Kernel | Linux %s |\n", r.Kernel)
	p("| Go | %s |\n", r.GoVersion)
	p("| PostgreSQL | %s (database %s, created for the run) |\n", r.PostgresVersion, cfg.DBName)
	p("| SQS endpoint | sqslocal (goaws with FIFO group locks), its own process |\n")
	var tuning []string
	for _, k := range slices.Sorted(maps.Keys(r.Tuning)) {
		tuning = append(tuning, "`"+k+"="+r.Tuning[k]+"`")
	}
	p("| Services' tuning | %s (`make run`'s defaults under the caller's environment) |\n", strings.Join(tuning, ", "))
	p("| Bounds | drain %s creates; saturation %s orders; fixed rate %s; reads %s each; pgbench %s each; SQS %s messages |\n\n",
		num(float64(cfg.DrainOrders)), num(float64(cfg.E2EOrders)), cfg.RateDuration, cfg.ReadDuration, cfg.PGDuration, num(float64(cfg.SQSMessages)))

	p("%s\n\n", sections[9])
	p(`- **Stack.** omsbench drops and creates its own database, starts the SQS emulator (sqslocal), ingest, query and later the processor from the binaries of ` + "`make build-local`" + `, each a process of its own on free ports, with a development token issuer in the bench. Everything the services print goes to log files, not through the bench.
- **Create ceiling.** The bench runs the processor once through a proxy that records what it sends PostgreSQL, has ingest accept one create, and keeps that command's statements (on the connection that first names the order, to the last that does, widened to an enclosing transaction). pgbench runs them as sent, with fresh ids in every transaction, in a scratch schema, with as many clients as PROCESSOR_SUBSCRIPTIONS; the script is above. ` + "`-create-script FILE`" + ` replaces it.
- **SQS ceilings.** The bare aws-sdk-go-v2 client, one FIFO group per message as one create has, against the same endpoint the services use.
- **Drain.** omsload queues the creates through ingest while no processor runs; the clock starts when the processor process starts and stops at the newest order's create_time, which the processor sets just before the one statement that writes the order. The bench looks at the command queue's depth every 250 ms and counts the orders only once it is empty, so the probe costs PostgreSQL next to nothing and the figure does not depend on the poll interval. CPU is counted until the outbox is empty too, since relaying the notification is part of an order's work.
- **End to end.** omsload as a separate process, as the storefront service. Saturation is the closed loop (` + "`-c`" + ` workers, at most 20×c orders pending); the fixed rate is half of the visible/s reached there, sent open loop (` + "`-rate`" + `): POST→visible is counted from each create's scheduled send time. omsload notices visibility by listing, once per interval, the orders created since the last look (ListOrders, oldest first, ids only), not by a GET per pending order, so that its own reads cost little however long the queue; POST→visible's resolution is that interval.
- **Reads.** Go clients in the bench over one gRPC connection or a pool of HTTP connections, on up to 10,000 of the run's orders picked at random, for a fixed time; the ceiling is pgbench running the same SELECTs with prepared statements on the same rows.
- **CPU** is utime + stime from /proc/<pid>/stat, sampled every 200 ms, differenced over the phase. **Peak RSS** is VmHWM from /proc/<pid>/status.
`)
	if r.Notes != "" {
		p("\n%s", r.Notes)
	}
	return b.Flush()
}

// roundTrips counts a pgbench script's SQL commands: each is one round
// trip (statements joined by "\;" are sent together).
func roundTrips(script string) string {
	n := 0
	for line := range strings.Lines(script) {
		if strings.HasSuffix(strings.TrimSpace(line), ";") && !strings.HasPrefix(strings.TrimSpace(line), `\`) {
			n++
		}
	}
	if n == 1 {
		return "1 round trip"
	}
	return strconv.Itoa(n) + " round trips"
}

// fig is s, or "failed" when the measurement behind it failed.
func fig(ok bool, s string) string {
	if !ok {
		return "failed"
	}
	return s
}

func met(ok, cond bool) string {
	switch {
	case !ok:
		return "–"
	case cond:
		return "yes"
	default:
		return "no"
	}
}

func ratio(ok bool, a, b float64) string {
	if !ok || b <= 0 {
		return "–"
	}
	return strconv.FormatFloat(a/b, 'f', 2, 64)
}

// num is a figure with thousands separators, or with decimals when small.
func num(f float64) string {
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return "–"
	case math.Abs(f) < 10:
		return strconv.FormatFloat(f, 'f', 2, 64)
	case math.Abs(f) < 100:
		return strconv.FormatFloat(f, 'f', 1, 64)
	}
	s := strconv.FormatInt(int64(math.Round(f)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// whole is a count, with thousands separators.
func whole(n int64) string {
	if n > -100 && n < 100 {
		return strconv.FormatInt(n, 10)
	}
	return num(float64(n))
}

func dec(f float64) string {
	if f >= 100 {
		return num(f)
	}
	return strconv.FormatFloat(f, 'f', 1, 64)
}

func msec(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64) + " ms"
}

func usec(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 0, 64) + " µs"
}

func mib(b int64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + " MiB" }

// latMs is a percentile of l (100: the max), or "–" without samples.
func latMs(l *latency, p int) string {
	if l == nil || l.Count == 0 {
		return "–"
	}
	v := map[int]float64{50: l.P50, 95: l.P95, 99: l.P99, 100: l.Max}[p]
	return dec(v) + " ms"
}

// oneLine keeps a multi-line error on one markdown list line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
