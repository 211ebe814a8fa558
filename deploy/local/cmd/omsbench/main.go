// Command omsbench is `make bench`: on a stack of its own (a fresh
// database, the SQS emulator and the three services, each on free ports)
// it measures
//
//   - the raw ceilings: pgbench running the processor's create
//     transaction at the processor's concurrency, and GetOrder's and
//     ListOrders' SELECTs; SQS SendMessageBatch and receive +
//     DeleteMessageBatch with the bare SDK client;
//   - the drain: the processor working off a backlog of queued creates;
//   - end to end: omsload at saturation, then open loop at half the rate
//     sustained there;
//   - the reads: GetOrder over gRPC and HTTP, and ListOrders, from Go
//     clients;
//
// and writes a markdown report: each figure against its ceiling, the CPU
// every process spends per order or per call, and each process's peak
// memory. Every phase is bounded in count and in time.
//
//	make bench                              # writes docs/performance.md
//	go run ./deploy/local/cmd/omsbench -h
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/omsdev/oms/pkg/pgbench"
)

type config struct {
	Out         string // the report; "-" for stdout
	Bin         string // the binaries `make build-local` makes
	LogDir      string // the processes' logs; a new temporary directory when empty
	DatabaseURL string // the server to use; its database name is replaced by DBName
	DBName      string
	KeepDB      bool
	Timeout     time.Duration

	PGDuration   time.Duration // each pgbench ceiling
	CreateScript string        // a file replacing the create transaction's script

	SQSMessages  int
	SQSSenders   int
	SQSReceivers int

	DrainOrders  int
	FillClients  int
	DrainTimeout time.Duration

	E2EOrders    int
	E2EClients   int
	RateDuration time.Duration
	RatePoll     time.Duration
	LoadTimeout  time.Duration

	ReadClients  int
	ListClients  int
	ReadDuration time.Duration

	ListScale    []int // -list-scale: sizes of the orders table to measure ListOrders at
	ListDuration time.Duration

	Soak       int     // creates of the soak; 0: none
	SoakRate   float64 // creates per second; 0: half the saturation rate
	SoakSample time.Duration

	CPUProfile      string
	ProfileDuration time.Duration
	Notes           string // a markdown file appended to the report
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("omsbench", flag.ContinueOnError)
	fs.StringVar(&c.Out, "out", "-", "write the markdown report here (- for stdout)")
	fs.StringVar(&c.LogDir, "log-dir", "", "write the processes' logs here (default: a new temporary directory)")
	fs.StringVar(&c.Bin, "bin", filepath.Join(repoRoot(), "bin"), "directory of the binaries `make build-local` builds")
	fs.StringVar(&c.DatabaseURL, "database-url", envOr("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/oms?sslmode=disable"), "the PostgreSQL server to use (its database name is replaced by -db)")
	fs.StringVar(&c.DBName, "db", "oms_bench", "the bench's own database, dropped and created anew at the start")
	fs.BoolVar(&c.KeepDB, "keep-db", false, "keep the database at the end, to look into")
	fs.DurationVar(&c.Timeout, "timeout", 20*time.Minute, "limit for the whole run")
	fs.DurationVar(&c.PGDuration, "pg-duration", 5*time.Second, "each pgbench ceiling's run (whole seconds)")
	fs.StringVar(&c.CreateScript, "create-script", "", "pgbench script for the create ceiling, instead of the statements recorded from the processor for one create")
	fs.IntVar(&c.SQSMessages, "sqs-messages", 20000, "messages for the raw SQS ceilings")
	fs.IntVar(&c.SQSSenders, "sqs-senders", 16, "goroutines sending SendMessageBatch(10) for the raw SQS ceiling")
	fs.IntVar(&c.SQSReceivers, "sqs-receivers", 4, "goroutines receiving and deleting for the raw SQS ceiling")
	fs.IntVar(&c.DrainOrders, "drain-orders", 20000, "creates queued before the processor starts")
	fs.IntVar(&c.FillClients, "fill-c", 64, "omsload workers queueing the drain's creates")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 3*time.Minute, "limit for queueing the creates, and for draining them")
	fs.IntVar(&c.E2EOrders, "e2e-orders", 5000, "orders of the end-to-end run at saturation")
	fs.IntVar(&c.E2EClients, "e2e-c", 64, "omsload workers of the end-to-end run at saturation")
	fs.DurationVar(&c.RateDuration, "rate-duration", 10*time.Second, "length of the open-loop run at half the saturation rate")
	fs.DurationVar(&c.RatePoll, "rate-poll", 50*time.Millisecond, "the open-loop run's visibility poll interval: POST→visible's resolution")
	fs.DurationVar(&c.LoadTimeout, "load-timeout", 2*time.Minute, "limit for each end-to-end run")
	fs.IntVar(&c.ReadClients, "read-c", 16, "concurrent GetOrder clients, and pgbench clients for their ceiling")
	fs.IntVar(&c.ListClients, "list-c", 4, "concurrent ListOrders clients, and pgbench clients for their ceiling")
	fs.DurationVar(&c.ReadDuration, "read-duration", 5*time.Second, "length of each read run (whole seconds for its pgbench ceiling)")
	fs.Func("list-scale", "grow the orders table to each of these sizes in turn (e.g. 100000,1000000,10000000) and measure ListOrders' first page at each (off by default)", func(v string) error {
		sizes, err := parseSizes(v)
		c.ListScale = sizes
		return err
	})
	fs.DurationVar(&c.ListDuration, "list-duration", 5*time.Second, "length of each -list-scale measurement")
	fs.IntVar(&c.Soak, "soak", 0, "after the reads, send this many creates at a fixed rate below saturation and sample every service's memory (off by default)")
	fs.Float64Var(&c.SoakRate, "soak-rate", 0, "the soak's creates per second (default: half the saturation rate measured in the run)")
	fs.DurationVar(&c.SoakSample, "soak-sample", time.Second, "interval between the soak's memory samples")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "fetch CPU profiles of the services during the drain into this directory (needs /debug/pprof on their admin ports)")
	fs.DurationVar(&c.ProfileDuration, "profile-duration", 10*time.Second, "length of each -cpuprofile profile")
	fs.StringVar(&c.Notes, "notes", "", "a markdown file appended to the report as it is (what the figures meant, and the history behind them)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for name, n := range map[string]int{"-sqs-messages": c.SQSMessages, "-sqs-senders": c.SQSSenders, "-sqs-receivers": c.SQSReceivers,
		"-drain-orders": c.DrainOrders, "-fill-c": c.FillClients, "-e2e-orders": c.E2EOrders, "-e2e-c": c.E2EClients,
		"-read-c": c.ReadClients, "-list-c": c.ListClients} {
		if n < 1 {
			return c, fmt.Errorf("%s must be at least 1", name)
		}
	}
	for name, d := range map[string]time.Duration{"-timeout": c.Timeout, "-pg-duration": c.PGDuration, "-drain-timeout": c.DrainTimeout,
		"-rate-duration": c.RateDuration, "-rate-poll": c.RatePoll, "-load-timeout": c.LoadTimeout, "-read-duration": c.ReadDuration,
		"-profile-duration": c.ProfileDuration, "-list-duration": c.ListDuration, "-soak-sample": c.SoakSample} {
		if d <= 0 {
			return c, fmt.Errorf("%s must be positive", name)
		}
	}
	if c.Soak < 0 || c.SoakRate < 0 {
		return c, errors.New("-soak and -soak-rate must not be negative")
	}
	timeoutSet := false
	fs.Visit(func(f *flag.Flag) { timeoutSet = timeoutSet || f.Name == "timeout" })
	if !timeoutSet {
		// Room for the opt-in phases at a slow machine's pace: 200 creates
		// a second for the soak, 2,500 orders a second added to the table.
		c.Timeout += time.Duration(c.Soak) * 5 * time.Millisecond
		if n := len(c.ListScale); n > 0 {
			c.Timeout += time.Duration(c.ListScale[n-1]) * 400 * time.Microsecond
		}
	}
	return c, nil
}

// parseSizes reads a comma-separated list of table sizes, in increasing
// order.
func parseSizes(v string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(v, ",") {
		n, err := strconv.Atoi(strings.ReplaceAll(strings.TrimSpace(f), "_", ""))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q: want positive whole numbers separated by commas", v)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			return nil, fmt.Errorf("%q: sizes must increase", v)
		}
		out = append(out, n)
	}
	return out, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "omsbench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "omsbench:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// repoRoot is the nearest directory above the working directory with a
// go.work, or the working directory.
func repoRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return wd
		}
	}
}

// saturationPoll is how often the saturation run looks for newly visible
// orders: omsload's default.
const saturationPoll = 100 * time.Millisecond

// errPhases means the report was written but some phase failed; the
// report says which and why.
var errPhases = errors.New("some measurements failed (see the report)")

// run measures everything and writes the report. Each phase that fails is
// reported as failed and the others still run.
func run(ctx context.Context, cfg config, log io.Writer) error {
	if err := procfsWorks(); err != nil {
		return err
	}
	if _, err := exec.LookPath("pgbench"); err != nil {
		return fmt.Errorf("pgbench (PostgreSQL's client tools) is needed for the ceilings: %w", err)
	}
	var fromFile string
	if cfg.CreateScript != "" {
		b, err := os.ReadFile(cfg.CreateScript)
		if err != nil {
			return err
		}
		fromFile = string(b)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	began := time.Now()
	say := func(format string, a ...any) {
		fmt.Fprintf(log, "omsbench: %5.1fs "+format+"\n", append([]any{time.Since(began).Seconds()}, a...)...)
	}

	r := &results{Config: cfg, Started: time.Now().UTC(), GoVersion: runtime.Version(), NProc: runtime.NumCPU()}
	if cfg.Notes != "" {
		notes, err := os.ReadFile(cfg.Notes)
		if err != nil {
			return err
		}
		r.Notes = string(notes)
	}
	r.CPUModel, r.Memory, r.Kernel, r.LoadAvg = machineInfo()
	r.Commit = gitCommit()

	say("starting the stack (database %s)", cfg.DBName)
	s, err := startStack(ctx, cfg, say)
	if err != nil {
		return err
	}
	defer func() {
		s.close(cfg.KeepDB)
		say("stopped")
	}()
	say("process logs in %s", s.logDir)
	r.Tuning = tuning(envMap(s.env))
	subs, err := strconv.Atoi(envMap(s.env)["PROCESSOR_SUBSCRIPTIONS"])
	if err != nil || subs < 1 {
		return fmt.Errorf("PROCESSOR_SUBSCRIPTIONS=%q: want a positive number", envMap(s.env)["PROCESSOR_SUBSCRIPTIONS"])
	}
	r.Subscriptions = subs
	_ = s.mon.QueryRowContext(ctx, "SHOW server_version").Scan(&r.PostgresVersion)
	pgSecs := max(1, int(cfg.PGDuration/time.Second))

	switch {
	case fromFile != "":
		r.CreateScript, r.CreateSource = fromFile, cfg.CreateScript
	default:
		say("ceiling: recording the processor's statements for one create")
		var err error
		r.CreateScript, err = s.captureCreate(ctx)
		r.CreateSource = "recorded from the processor"
		if err != nil {
			r.CaptureErr = err
			r.CreateScript, r.CreateSource = pgbench.CreateOrder, "pkg/pgbench.CreateOrder, as recording failed"
		}
	}
	say("ceiling: pgbench, the processor's create transaction, %d clients, %ds", subs, pgSecs)
	r.CreateCeiling, r.CreateCeilingErr = s.createCeiling(ctx, r.CreateScript, subs, pgSecs)
	say("ceiling: raw SQS, %d messages", cfg.SQSMessages)
	r.SQS, r.SQSErr = s.measureSQS(ctx, cfg.SQSMessages, cfg.SQSSenders, cfg.SQSReceivers, 60*time.Second)

	r.Drain = s.drain(ctx, cfg)
	if r.Drain.Err == nil || s.pid(nameProcessor) != 0 {
		if err := s.waitReady(ctx, nameProcessor, s.processorHTTP, true); err != nil {
			r.Drain.Err = errors.Join(r.Drain.Err, err)
		}
		say("end to end: omsload -n %d -c %d", cfg.E2EOrders, cfg.E2EClients)
		r.Saturation = s.endToEnd(ctx, cfg, "-n", strconv.Itoa(cfg.E2EOrders), "-c", strconv.Itoa(cfg.E2EClients), "-poll", saturationPoll.String())
		r.Saturation.Poll = saturationPoll
		if v := r.Saturation.Load.VisiblePerSec; v > 0 {
			rate := v / 2
			n := max(1, int(rate*cfg.RateDuration.Seconds()))
			say("end to end: omsload -rate %.0f -n %d (open loop at half the saturation rate)", rate, n)
			r.Rate = s.endToEnd(ctx, cfg, "-rate", strconv.FormatFloat(rate, 'f', 1, 64), "-n", strconv.Itoa(n),
				"-poll", cfg.RatePoll.String())
			r.Rate.Poll = cfg.RatePoll
		} else {
			r.Rate.Err = errors.New("no saturation rate to take half of")
		}
		say("reads")
		r.Get, r.GetHTTP, r.List, r.ReadsErr = s.reads(ctx, cfg)
		if cfg.Soak > 0 {
			rate := cfg.SoakRate
			if rate == 0 {
				rate = r.Saturation.Load.VisiblePerSec / 2
			}
			if rate <= 0 {
				r.Soak = &soakResult{Commands: cfg.Soak, Err: errNoSaturation}
			} else {
				say("soak: omsload -rate %.0f -n %d, sampling memory every %s", rate, cfg.Soak, cfg.SoakSample)
				sk := s.soak(ctx, cfg, rate)
				r.Soak = &sk
			}
		}
		// Last: it leaves the table at its largest size.
		if len(cfg.ListScale) > 0 {
			say("list scale: %v orders", cfg.ListScale)
			r.Scale, r.ScaleErr = s.listScale(ctx, cfg)
		}
	} else {
		r.Saturation.Err = errors.New("skipped: the drain failed")
		r.Rate.Err, r.ReadsErr = r.Saturation.Err, r.Saturation.Err
		if cfg.Soak > 0 {
			r.Soak = &soakResult{Commands: cfg.Soak, Err: r.Saturation.Err}
		}
		if len(cfg.ListScale) > 0 {
			r.ScaleErr = r.Saturation.Err
		}
	}
	r.PeakRSS = s.peaks()
	if p := s.exited(); p != "" {
		r.Exited = fmt.Sprintf("%s exited during the run; its log: %s", p, s.logPath(p))
	}
	r.Finished = time.Now().UTC()

	var out io.Writer = os.Stdout
	if cfg.Out != "-" {
		f, err := os.Create(cfg.Out)
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
	}
	if err := r.write(out); err != nil {
		return err
	}
	if cfg.Out != "-" {
		say("report written to %s", cfg.Out)
	}
	if failed := r.failures(); len(failed) > 0 {
		return fmt.Errorf("%w:\n  %s", errPhases, strings.Join(failed, "\n  "))
	}
	return nil
}

// tuning picks the settings that shape performance out of the services'
// environment.
func tuning(env map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range env {
		for _, p := range []string{"PROCESSOR_", "INGEST_", "QUERY_", "OUTBOX_", "DB_", "RATE_LIMIT_", "LOG_LEVEL", "GOMAXPROCS", "GOGC", "GOMEMLIMIT", "SQS_VISIBILITY_TIMEOUT", "OTEL_TRACES_EXPORTER"} {
			if strings.HasPrefix(k, p) {
				out[k] = v
			}
		}
	}
	return out
}

// gitCommit is the checked-out commit, read only ("" outside a checkout).
func gitCommit() string {
	out, err := exec.Command("git", "-C", repoRoot(), "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
