// Command omsload is the load generator for the local stack. It creates
// orders through ingest and measures how long each one takes to be accepted
// and then to become visible through query.
//
// By default it runs a closed loop: -c workers each send the next create
// when the last one is answered. With -rate it runs an open loop instead:
// creates are sent on a fixed schedule whatever the answers, and
// POST→visible is measured from each create's scheduled send time, so a
// stalled system shows up as latency rather than as fewer requests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/omsdev/oms/pkg/devissuer"
)

type config struct {
	N, C int
	// Rate, when set, is the open loop's orders per second.
	Rate       float64
	MaxPending int
	Pollers    int
	Ingest     string
	Query      string
	Timeout    time.Duration
	Poll       time.Duration
	Visible    bool
	// Watch is how visibility is noticed: "list" or "get".
	Watch     string
	Lifecycle bool
	JSON      bool
	JSONFile  string
	// TraceFile gets each visible create's times, as CSV.
	TraceFile string
	// Ceiling: measure pgbench on DatabaseURL first, with PGClients.
	Ceiling     bool
	DatabaseURL string
	PGClients   int
	// Token is the bearer token every request carries: the storefront
	// service's unless $OMS_TOKEN says otherwise; none when empty.
	Token string
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("omsload", flag.ContinueOnError)
	fs.IntVar(&c.N, "n", 1000, "orders to create")
	fs.IntVar(&c.C, "c", 16, "concurrent POSTing workers (closed loop)")
	fs.Float64Var(&c.Rate, "rate", 0, "open loop: send creates at this many per second on a fixed schedule, not waiting for answers; latency is measured from each scheduled send (0: closed loop with -c)")
	fs.IntVar(&c.MaxPending, "max-pending", 0, "closed loop: most orders accepted but not yet visible; workers wait above it (default 20*c)")
	fs.IntVar(&c.Pollers, "pollers", 0, "most concurrent visibility polls per stage (default c)")
	fs.StringVar(&c.Ingest, "ingest", "http://127.0.0.1:8080", "ingest base URL")
	fs.StringVar(&c.Query, "query", "http://127.0.0.1:8081", "query base URL")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Minute, "overall time limit")
	// Polling competes with the system it measures for the same cores;
	// 100ms and c pollers keep that share small.
	fs.DurationVar(&c.Poll, "poll", 100*time.Millisecond, "interval between visibility polls of one order")
	fs.BoolVar(&c.Visible, "visible", true, "measure POST→visible by polling query")
	fs.StringVar(&c.Watch, "watch", "list", "how to poll for visibility: list (ListOrders of what was created since the last poll, one call per -poll) or get (GetOrder per pending order per -poll)")
	fs.BoolVar(&c.Lifecycle, "lifecycle", false, "after the create is visible, pay the order and wait for PAID")
	fs.BoolVar(&c.JSON, "json", false, "also print the final report as JSON")
	fs.StringVar(&c.JSONFile, "json-file", "", "also write the final report as JSON to this file")
	fs.StringVar(&c.TraceFile, "trace", "", "write each visible create's times to this CSV file (id, then Unix µs: scheduled or sent, POST sent, POST answered, noticed visible), to join with the order's create_time")
	fs.BoolVar(&c.Ceiling, "ceiling", true, "first measure the raw database ceiling with pgbench, to report throughput against")
	fs.StringVar(&c.DatabaseURL, "database-url", envOr("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/oms?sslmode=disable"), "the stack's database, for the ceiling")
	fs.IntVar(&c.PGClients, "pg-clients", 1, "pgbench clients: match the processor's PROCESSOR_SUBSCRIPTIONS")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.MaxPending == 0 {
		c.MaxPending = 20 * c.C
	}
	if c.Pollers == 0 {
		c.Pollers = c.C
	}
	switch {
	case c.N < 1 || c.C < 1 || c.MaxPending < 1 || c.Pollers < 1:
		return c, errors.New("-n, -c, -max-pending and -pollers must be at least 1")
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return c, errors.New("-rate must be a positive number of orders per second, or 0 for the closed loop")
	case c.Poll <= 0 || c.Timeout <= 0:
		return c, errors.New("-poll and -timeout must be positive")
	case c.Watch != "list" && c.Watch != "get":
		return c, errors.New("-watch must be list or get")
	case c.Lifecycle && !c.Visible:
		return c, errors.New("-lifecycle needs -visible: the pay waits for the create to be applied")
	}
	return c, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "omsload:", err)
		os.Exit(2)
	}
	cfg.Token = devissuer.LocalToken(devissuer.EnvService)
	if cfg.Token == "" {
		fmt.Fprintf(os.Stderr, "omsload: no token in $%s, $%s or %s: sending requests without one (only a stack in AUTH_INSECURE_DEV_MODE takes them)\n",
			devissuer.EnvOverride, devissuer.EnvService, devissuer.TokensFile())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "omsload:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// errIncomplete means the run finished but not every order made it.
var errIncomplete = errors.New("not every order was accepted and applied")

func run(ctx context.Context, cfg config) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	var ceil ceiling
	if cfg.Ceiling && cfg.Visible {
		fmt.Fprintf(os.Stderr, "measuring the pgbench ceiling (%d client(s), 5s)...\n", cfg.PGClients)
		var err error
		if ceil, err = measureCeiling(ctx, cfg.DatabaseURL, cfg.PGClients); err != nil {
			// The load is worth measuring without it.
			fmt.Fprintf(os.Stderr, "omsload: no ceiling (-ceiling=false skips it): %v\n", err)
			ceil = ceiling{}
		}
	}

	l := newLoader(cfg, newClient(cfg))
	stopProgress := l.progress(time.Second)
	start := time.Now()
	postPhase := l.run(ctx)
	wall := time.Since(start)
	stopProgress()

	r := l.st.report(cfg, wall, postPhase)
	r.print(os.Stdout)
	ceil.print(os.Stdout, r.VisiblePerSec)
	if cfg.JSON {
		if err := r.printJSON(os.Stdout); err != nil {
			return err
		}
	}
	if cfg.JSONFile != "" {
		if err := r.writeJSON(cfg.JSONFile); err != nil {
			return err
		}
	}
	if cfg.TraceFile != "" {
		if err := l.st.writeTrace(cfg.TraceFile); err != nil {
			return err
		}
	}
	if !r.complete(cfg) {
		return fmt.Errorf("%w: %d of %d accepted, %d visible", errIncomplete, r.Accepted, cfg.N, r.Visible)
	}
	return nil
}

// newClient shares one connection pool across workers. The default of two
// idle connections per host would make most requests dial anew at this
// concurrency; up to 2*Pollers requests reach query at once, and an open
// loop has as many POSTs in flight as the answers are slow.
func newClient(cfg config) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = max(2*cfg.C, 2*cfg.Pollers)
	if cfg.Rate > 0 {
		t.MaxIdleConnsPerHost = max(t.MaxIdleConnsPerHost, 128)
	}
	t.MaxIdleConns = 2 * t.MaxIdleConnsPerHost
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}
