package main

import (
	"bufio"
	"context"
	"crypto/md5"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/driver/pgdriver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/config"
	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/devissuer"
	"github.com/omsdev/oms/pkg/logging"
	"github.com/omsdev/oms/pkg/orderstore"
)

// The read benchmarks run the query service in this process, wired as
// main wires it (real signed tokens through the production verifier, the
// rate limiter, the gateway), over a fresh schema on the real PostgreSQL.
// The load comes from a second process, this test binary started again
// as a client, so the CPU this process uses is the service's alone:
// cpu-us/op is the query service's CPU per call, and -cpuprofile
// profiles only the service. client-cpu-us/op and pg-cpu-us/op are the
// client process's and the service's PostgreSQL backends' CPU per call
// (from /proc: the server must run on this machine).
//
//	go test -run '^$' -bench 'GetOrder|ListOrders' -benchtime 20000x ./services/query
//
// Each figure is reported against pgbench running the SELECTs GetOrder
// (ListOrders) used to make, an order's row and its lines by primary key,
// as prepared statements with as many clients, on the same schema, in the
// same run; the log line also gives pgbench for the row alone and for the
// one statement GetOrder makes now.

// -ceilings=false skips the pgbench runs (their figures read 0), for
// profiling the service alone.
var benchCeilings = flag.Bool("ceilings", true, "run the pgbench ceilings of the read benchmarks")

const (
	benchOrders   = 1000 // orders of the benchmark's customer
	benchCustomer = "bench-customer"
	benchAudience = "oms-bench"
	// clientEnv carries the client's configuration to the child process.
	clientEnv = "OMS_QUERY_BENCH_CLIENT"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(clientEnv); spec != "" {
		if err := runClient(spec, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench client:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// benchID is the id of the benchmark's order n, the same in Go and in the
// pgbench script: md5(n) read as a uuid.
func benchID(n int) string {
	h := md5.Sum([]byte(strconv.Itoa(n)))
	x := hex.EncodeToString(h[:])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// benchStack is a query service over a seeded schema.
type benchStack struct {
	b                                 *testing.B // the parent benchmark, which outlives the client processes
	schema, grpcAddr, httpAddr, token string
	clients                           map[string]*benchClient
	admin                             *bun.DB // the seeding handle
	app                               string  // the service's application_name
}

func startBench(b *testing.B) *benchStack {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	admin, schema := dbtest.NewUnmigrated(b)
	if err := migrateAndSeed(ctx, admin); err != nil {
		b.Fatal(err)
	}
	// The service's own pool, named so that its backends' CPU can be told
	// from everything else the server runs.
	app := "oms-query-bench-" + schema
	db := orderstore.Open(dbtest.URL(), pgdriver.WithConnParams(map[string]any{"search_path": schema}), pgdriver.WithApplicationName(app))
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	b.Cleanup(func() { db.Close() })

	iss, issURL := startIssuer(b)
	token, err := iss.Mint(devissuer.TokenSpec{Subject: benchCustomer, Scopes: []string{auth.ScopeRead}, Audience: benchAudience})
	if err != nil {
		b.Fatal(err)
	}

	cfg, err := LoadConfig(config.FromMaps(serviceEnv(iss, issURL, benchAudience), map[string]string{
		// The limiter runs, but never refuses: the load is one principal.
		"RATE_LIMIT_READS_PER_SECOND": "1000000", "RATE_LIMIT_READ_BURST": "1000000",
	}))
	if err != nil {
		b.Fatal(err)
	}
	log := logging.New(io.Discard, "query", cfg.LogLevel)
	config.TuneGC(os.Getenv, defaultGCPercent, defaultMemoryLimit) // as main does
	srv, err := listen(ctx, cfg, log, db)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Serve: %v", err)
		}
	})
	s := &benchStack{b: b, clients: map[string]*benchClient{}, schema: schema, admin: admin, app: app, grpcAddr: srv.GRPCAddr(), httpAddr: srv.HTTPAddr(), token: token}
	// Wait until the JWKS is loaded and a call goes through.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.probe()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("query service never answered: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

func (s *benchStack) probe() error {
	req, _ := http.NewRequest("GET", "http://"+s.httpAddr+"/v1/orders/"+benchID(1), nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	return nil
}

// migrateAndSeed creates the schema and benchOrders paid orders of
// benchCustomer, each with two line items, one minute apart.
func migrateAndSeed(ctx context.Context, db *bun.DB) error {
	if _, err := orderstore.Migrate(ctx, db); err != nil {
		return err
	}
	_, err := db.ExecContext(ctx, `
INSERT INTO orders (id, customer_id, state, currency_code, subtotal_minor, total_minor, shipping_address,
    payment_reference, payment_amount_minor, pay_time, version, last_event_seq, create_time, update_time, created_by)
SELECT md5(n::text)::uuid, ?, 'PAID', 'USD', 2950, 2950,
    '{"recipient":"Ada Lovelace","address_lines":["12 St James Square"],"locality":"London","postal_code":"SW1Y 4JH","region_code":"GB"}',
    'pay-' || n, 2950, now() - n * interval '1 minute' + interval '1 second', 2, 2,
    now() - n * interval '1 minute', now() - n * interval '1 minute' + interval '1 second', 'customer:' || ?
FROM generate_series(1, ?) n;
INSERT INTO order_line_items (order_id, line_no, sku, name, quantity, unit_price_minor)
SELECT md5(n::text)::uuid, l, 'SKU-' || l, CASE l WHEN 1 THEN 'Mug' ELSE 'Tea' END, 3 - l, 1200 - (l - 1) * 650
FROM generate_series(1, ?) n, generate_series(1, 2) l;
ANALYZE orders; ANALYZE order_line_items;`, benchCustomer, benchCustomer, benchOrders, benchOrders)
	return err
}

// benchClient is the child process that makes the calls.
type benchClient struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// clientSpec is what a client calls, encoded in clientEnv.
type clientSpec struct {
	Transport string // grpc or http
	Method    string // get, getmask or list
	Addr      string
	Token     string
	Clients   int
}

func (c clientSpec) String() string {
	return strings.Join([]string{c.Transport, c.Method, c.Addr, c.Token, strconv.Itoa(c.Clients)}, " ")
}

func parseClientSpec(s string) (clientSpec, error) {
	f := strings.Fields(s)
	if len(f) != 5 {
		return clientSpec{}, fmt.Errorf("bad spec %q", s)
	}
	n, err := strconv.Atoi(f[4])
	return clientSpec{f[0], f[1], f[2], f[3], n}, err
}

func startClient(b *testing.B, spec clientSpec) *benchClient {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), clientEnv+"="+spec.String())
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &benchClient{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	b.Cleanup(func() {
		in.Close()
		cmd.Wait()
	})
	// Warm up: connections, the JWKS, PostgreSQL's plans and caches.
	if _, err := c.run(2000); err != nil {
		b.Fatal(err)
	}
	return c
}

// run makes n calls and returns how long they took.
func (c *benchClient) run(n int) (time.Duration, error) {
	if _, err := fmt.Fprintln(c.in, n); err != nil {
		return 0, err
	}
	if !c.out.Scan() {
		return 0, fmt.Errorf("client ended: %v", c.out.Err())
	}
	f := strings.Fields(c.out.Text())
	if len(f) != 2 {
		return 0, fmt.Errorf("client said %q", c.out.Text())
	}
	if f[1] != "0" {
		return 0, fmt.Errorf("client: %s of %d calls failed", f[1], n)
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	return time.Duration(ns), err
}

// runClient is the client process: for each line n on in, it makes n
// calls with spec.Clients workers and writes "<elapsed ns> <errors>".
func runClient(specStr string, in io.Reader, out io.Writer) error {
	spec, err := parseClientSpec(specStr)
	if err != nil {
		return err
	}
	call, err := newCaller(spec)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		n, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil {
			return err
		}
		var next, failed atomic.Int64
		var firstErr atomic.Value
		start := time.Now()
		var wg sync.WaitGroup
		for range spec.Clients {
			wg.Go(func() {
				for {
					i := next.Add(1)
					if i > int64(n) {
						return
					}
					if err := call(int(i)); err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
					}
				}
			})
		}
		wg.Wait()
		if e := firstErr.Load(); e != nil {
			fmt.Fprintln(os.Stderr, "bench client: first error:", e)
		}
		fmt.Fprintln(out, time.Since(start).Nanoseconds(), failed.Load())
	}
	return sc.Err()
}

func newCaller(spec clientSpec) (func(i int) error, error) {
	ctx := context.Background()
	mask := "id,state,version"
	switch spec.Transport {
	case "grpc":
		conn, err := grpc.NewClient(spec.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		c := omsv1.NewOrderQueryServiceClient(conn)
		authCtx := metadataCtx(ctx, spec.Token)
		switch spec.Method {
		case "get", "getmask":
			return func(i int) error {
				req := &omsv1.GetOrderRequest{Name: "orders/" + benchID(i%benchOrders+1)}
				if spec.Method == "getmask" {
					req.ReadMask = &fieldmaskpb.FieldMask{Paths: strings.Split(mask, ",")}
				}
				_, err := c.GetOrder(authCtx, req)
				return err
			}, nil
		case "list":
			return func(i int) error {
				resp, err := c.ListOrders(authCtx, &omsv1.ListOrdersRequest{PageSize: 50})
				if err == nil && len(resp.Orders) != 50 {
					err = fmt.Errorf("a page of %d orders", len(resp.Orders))
				}
				return err
			}, nil
		}
	case "http":
		tr := &http.Transport{MaxIdleConnsPerHost: spec.Clients, MaxConnsPerHost: spec.Clients}
		hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		get := func(path string) error {
			req, _ := http.NewRequest("GET", "http://"+spec.Addr+path, nil)
			req.Header.Set("Authorization", "Bearer "+spec.Token)
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("%s: %s", resp.Status, body)
			}
			return nil
		}
		switch spec.Method {
		case "get":
			return func(i int) error { return get("/v1/orders/" + benchID(i%benchOrders+1)) }, nil
		case "getmask":
			return func(i int) error { return get("/v1/orders/" + benchID(i%benchOrders+1) + "?read_mask=" + mask) }, nil
		case "list":
			return func(i int) error { return get("/v1/orders?page_size=50") }, nil
		}
	}
	return nil, fmt.Errorf("unknown transport or method in %q", spec)
}

// cpuTime is this process's user and system CPU so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the user and system CPU process pid has used, from
// /proc/<pid>/stat (in clock ticks of 10 ms); 0 if it cannot be read.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	_, after, _ := strings.Cut(string(b), ") ") // the command name may hold spaces
	f := strings.Fields(after)
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func procsCPU(pids []int) time.Duration {
	var sum time.Duration
	for _, p := range pids {
		sum += procCPU(p)
	}
	return sum
}

// backends are the PostgreSQL processes serving the service's pool (the
// server runs on this machine).
func (s *benchStack) backends(b *testing.B) []int {
	var pids []int
	if err := s.admin.NewRaw("SELECT pid FROM pg_stat_activity WHERE application_name = ?", s.app).Scan(context.Background(), &pids); err != nil {
		b.Fatal(err)
	}
	return pids
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

func metadataCtx(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// The pgbench ceilings: what GetOrder and ListOrders ask PostgreSQL, as
// prepared statements, for a random order of the benchmark's customer.
const (
	pickOrder = "\\set n random(1, 1000)\n"
	// GetOrder with every field: the order's row and its line items.
	ceilingGet = pickOrder +
		"SELECT * FROM orders WHERE id = md5(:n::text)::uuid AND customer_id = '" + benchCustomer + "';\n" +
		"SELECT * FROM order_line_items WHERE order_id = md5(:n::text)::uuid ORDER BY line_no;\n"
	// The one statement GetOrder runs now: the row and its lines as JSON.
	ceilingGetOne = pickOrder +
		"SELECT o.*, (SELECT json_agg(json_build_array(l.sku, l.name, l.quantity, l.unit_price_minor) ORDER BY l.line_no) " +
		"FROM order_line_items l WHERE l.order_id = o.id) FROM orders o WHERE o.id = md5(:n::text)::uuid AND o.customer_id = '" + benchCustomer + "';\n"
	// The row alone: a SELECT by primary key.
	ceilingGetRow = pickOrder +
		"SELECT * FROM orders WHERE id = md5(:n::text)::uuid AND customer_id = '" + benchCustomer + "';\n"
	// GetOrder with read_mask=id,state,version.
	ceilingGetMask = pickOrder +
		"SELECT id, state, version FROM orders WHERE id = md5(:n::text)::uuid AND customer_id = '" + benchCustomer + "';\n"
	// ListOrders' first page of 50 and its line items.
	ceilingList = "SELECT * FROM orders WHERE customer_id = '" + benchCustomer + "' ORDER BY create_time DESC, id DESC LIMIT 51;\n" +
		"SELECT * FROM order_line_items WHERE order_id IN (SELECT id FROM orders WHERE customer_id = '" + benchCustomer +
		"' ORDER BY create_time DESC, id DESC LIMIT 50) ORDER BY order_id, line_no;\n"
)

// pgbench runs script with clients for 5 s on the benchmark's schema and
// returns its transactions per second.
func (s *benchStack) pgbench(b *testing.B, script string, clients int) float64 {
	b.Helper()
	if !*benchCeilings {
		return 0
	}
	f, err := os.CreateTemp(b.TempDir(), "*.sql")
	if err != nil {
		b.Fatal(err)
	}
	f.WriteString(script)
	f.Close()
	cmd := exec.Command("pgbench", "-n", "-M", "prepared", "-c", strconv.Itoa(clients), "-j", "2", "-T", "5", "-f", f.Name(), dbtest.URL())
	cmd.Env = append(os.Environ(), "PGOPTIONS=-c search_path="+s.schema)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("pgbench: %v: %s", err, out)
	}
	m := tpsRE.FindSubmatch(out)
	if m == nil {
		b.Fatalf("pgbench printed no tps: %s", out)
	}
	tps, _ := strconv.ParseFloat(string(m[1]), 64)
	return tps
}

func (s *benchStack) measure(b *testing.B, spec clientSpec, ceiling float64) {
	// One client process per spec across the runs of a benchmark.
	c, ok := s.clients[spec.String()]
	if !ok {
		c = startClient(s.b, spec)
		s.clients[spec.String()] = c
	}
	backends := s.backends(b)
	cpu0, client0, pg0 := cpuTime(), procCPU(c.cmd.Process.Pid), procsCPU(backends)
	b.ResetTimer()
	elapsed, err := c.run(b.N)
	b.StopTimer()
	cpu, client, pg := cpuTime()-cpu0, procCPU(c.cmd.Process.Pid)-client0, procsCPU(backends)-pg0
	if err != nil {
		b.Fatal(err)
	}
	perOp := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(b.N) }
	rate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate, "req/s")
	b.ReportMetric(perOp(cpu), "cpu-us/op")
	b.ReportMetric(perOp(client), "client-cpu-us/op")
	b.ReportMetric(perOp(pg), "pg-cpu-us/op")
	if ceiling > 0 {
		b.ReportMetric(ceiling, "pgbench_tps")
		b.ReportMetric(rate/ceiling, "x_pgbench")
	}
}

// BenchmarkGetOrder: GetOrder at 16 concurrent calls, every field and a
// read mask, over gRPC and over HTTP.
func BenchmarkGetOrder(b *testing.B) {
	s := startBench(b)
	const conc = 16
	ceilings := map[string]float64{"get": s.pgbench(b, ceilingGet, conc), "getmask": s.pgbench(b, ceilingGetMask, conc)}
	row, one := s.pgbench(b, ceilingGetRow, conc), s.pgbench(b, ceilingGetOne, conc)
	b.Logf("pgbench c=%d: order+lines %.0f tps, order row %.0f tps, GetOrder's statement %.0f tps, masked row %.0f tps",
		conc, ceilings["get"], row, one, ceilings["getmask"])
	for _, method := range []string{"get", "getmask"} {
		for _, tr := range []string{"grpc", "http"} {
			b.Run(method+"/"+tr, func(b *testing.B) {
				addr := s.grpcAddr
				if tr == "http" {
					addr = s.httpAddr
				}
				s.measure(b, clientSpec{tr, method, addr, s.token, conc}, ceilings[method])
			})
		}
	}
}

// BenchmarkListOrders: the first page of 50, with every field, 4 calls at
// a time.
func BenchmarkListOrders(b *testing.B) {
	s := startBench(b)
	const conc = 4
	ceiling := s.pgbench(b, ceilingList, conc)
	for _, tr := range []string{"grpc", "http"} {
		b.Run(tr, func(b *testing.B) {
			addr := s.grpcAddr
			if tr == "http" {
				addr = s.httpAddr
			}
			s.measure(b, clientSpec{tr, "list", addr, s.token, conc}, ceiling)
		})
	}
}
