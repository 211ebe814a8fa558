// Command omsstack runs the whole OMS locally: a development token issuer,
// the SQS emulator, the migrations, the queues and the three services as
// separate processes. `make run` builds the binaries into ./bin and starts
// it; Ctrl-C stops everything. `omsstack demo` walks a few orders through a
// running stack.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/omsdev/oms/pkg/config"
	"github.com/omsdev/oms/pkg/devissuer"
	"github.com/omsdev/oms/pkg/queue"
)

// audience is the aud the local services accept and the local tokens carry.
const audience = "oms"

// defaults is the local stack's environment; anything already set in the
// caller's environment wins.
var defaults = map[string]string{
	"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/oms?sslmode=disable",
	"SQS_ENDPOINT": "http://127.0.0.1:4100",
	"AWS_REGION":   "us-east-1",
	// sqslocal keeps SQS FIFO's group locks with any number of consumers
	// and answers batches readably, so the local stack runs as production.
	"PROCESSOR_SUBSCRIPTIONS":  "8",
	"INGEST_BATCH_MAX_ENTRIES": "10",
	"LOG_LEVEL":                "info",
	// One token drives all of `make load`: a per-caller limit would
	// measure the limiter, not the pipeline.
	"RATE_LIMIT_COMMANDS_PER_SECOND": "0",
	"RATE_LIMIT_READS_PER_SECOND":    "0",
}

type service struct {
	name string
	args []string
	env  []string
	// ready is the HTTP address whose /readyz must answer, or the address
	// that must accept connections when health is false.
	addr   string
	health bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if len(os.Args) > 1 && os.Args[1] == "demo" {
		err = demo(ctx, env("INGEST_URL", "http://127.0.0.1:8080"), env("QUERY_URL", "http://127.0.0.1:8081"))
	} else {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		watchParent(ctx, time.Second, func(why string) {
			fmt.Printf("\nomsstack: %s\n", why)
			cancel()
		})
		err = run(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "omsstack:", err)
		os.Exit(1)
	}
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context) error {
	bin, err := binDir()
	if err != nil {
		return err
	}
	// Tokens come from a development issuer in this process, unless the
	// caller asked for the insecure dev mode, which takes no tokens.
	devMode, _ := strconv.ParseBool(os.Getenv("AUTH_INSECURE_DEV_MODE"))
	issuerAddr := env("OMS_ISSUER_ADDR", "127.0.0.1:8099")
	issuerURL := "http://" + issuerAddr
	if !devMode {
		defaults["AUTH_ISSUER"] = issuerURL
		defaults["AUTH_AUDIENCE"] = audience
		defaults["AUTH_JWKS_URL"] = issuerURL + devissuer.JWKSPath
	}
	state := devissuer.StateDir()
	for name, file := range map[string]string{"ORDER_ID_SECRET": "order-id-secret", "OPERATION_SECRET": "operation-secret"} {
		if os.Getenv(name) == "" {
			secret, err := localSecret(state, file)
			if err != nil {
				return err
			}
			defaults[name] = secret
		}
	}
	for k, v := range defaults {
		if os.Getenv(k) == "" {
			os.Setenv(k, v)
		}
	}
	unlock, err := lock()
	if err != nil {
		return err
	}
	defer unlock()

	sqsAddr := strings.TrimPrefix(os.Getenv("SQS_ENDPOINT"), "http://")
	services := []service{
		// Nobody reads the local notification queue: keep two minutes of it.
		{name: "sqslocal", args: []string{"-addr", sqsAddr, "-max-retention", "2m"}, addr: sqsAddr},
		{name: "processor", env: []string{"HTTP_ADDR=" + env("PROCESSOR_HTTP_ADDR", "127.0.0.1:8082")}, addr: env("PROCESSOR_HTTP_ADDR", "127.0.0.1:8082"), health: true},
		{name: "ingest", env: []string{"HTTP_ADDR=" + env("INGEST_HTTP_ADDR", "127.0.0.1:8080"), "GRPC_ADDR=" + env("INGEST_GRPC_ADDR", "127.0.0.1:9090"),
			// A 202's Location: the operation, on query.
			"INGEST_OPERATIONS_URL=" + env("INGEST_OPERATIONS_URL", "http://"+env("QUERY_HTTP_ADDR", "127.0.0.1:8081"))}, addr: env("INGEST_HTTP_ADDR", "127.0.0.1:8080"), health: true},
		{name: "query", env: []string{"HTTP_ADDR=" + env("QUERY_HTTP_ADDR", "127.0.0.1:8081"), "GRPC_ADDR=" + env("QUERY_GRPC_ADDR", "127.0.0.1:9091")}, addr: env("QUERY_HTTP_ADDR", "127.0.0.1:8081"), health: true},
	}
	// Fail on a taken port before starting anything.
	addrs := []string{sqsAddr, services[1].addr, services[2].addr, services[3].addr,
		env("INGEST_GRPC_ADDR", "127.0.0.1:9090"), env("QUERY_GRPC_ADDR", "127.0.0.1:9091")}
	if !devMode {
		addrs = append(addrs, issuerAddr)
	}
	for _, addr := range addrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s is already in use; stop whatever holds it or choose other ports (see README: configuration)", addr)
		}
		ln.Close()
	}

	tokens := filepath.Join(state, "tokens.env")
	var toks []devissuer.NamedToken
	if devMode {
		// Clients would send its stale tokens, which dev mode refuses.
		os.Remove(tokens)
	} else {
		stopIssuer, t, err := startIssuer(issuerAddr, issuerURL, tokens)
		if err != nil {
			return err
		}
		defer stopIssuer()
		toks = t
	}

	g := &group{}
	defer g.stop()
	if err := g.start(bin, services[0]); err != nil {
		return err
	}
	fmt.Println("omsstack: applying migrations to", config.Redact(os.Getenv("DATABASE_URL")))
	if out, err := exec.CommandContext(ctx, filepath.Join(bin, "processor"), "migrate", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("migrations failed: %v\n%s", err, out)
	}
	qc := queue.Load(config.FromOS())
	qc.CreateQueues = true
	client, err := queue.NewClient(ctx, qc)
	if err != nil {
		return err
	}
	if _, err := queue.EnsureQueues(ctx, client, qc); err != nil {
		return fmt.Errorf("create queues: %w", err)
	}
	fmt.Printf("omsstack: queues %s, %s, %s ready\n", qc.CommandQueue, qc.DeadLetterQueue, qc.NotificationQueue)
	for _, s := range services[1:] {
		if err := g.start(bin, s); err != nil {
			return err
		}
	}
	banner(devMode, tokens, toks)

	select {
	case <-ctx.Done():
		fmt.Println("\nomsstack: stopping")
		return nil
	case p := <-g.exited:
		return fmt.Errorf("%s exited unexpectedly; stopping the stack", p)
	}
}

// startIssuer serves the development issuer's keys on addr and writes the
// standard local tokens, for the audience the services will accept, to
// the tokens file.
func startIssuer(addr, url, tokens string) (stop func() error, toks []devissuer.NamedToken, err error) {
	iss, err := devissuer.New()
	if err != nil {
		return nil, nil, err
	}
	iss.URL = url // as the services are told, whatever the listener reports
	if _, stop, err = iss.Serve(addr); err != nil {
		return nil, nil, fmt.Errorf("OMS_ISSUER_ADDR: %w", err)
	}
	if toks, err = iss.MintStandard(os.Getenv("AUTH_AUDIENCE")); err != nil {
		stop()
		return nil, nil, err
	}
	if err := devissuer.WriteTokens(tokens, toks); err != nil {
		stop()
		return nil, nil, fmt.Errorf("write the local tokens: %w", err)
	}
	fmt.Println("omsstack: development token issuer at", url)
	if got := os.Getenv("AUTH_ISSUER"); got != url {
		fmt.Printf("omsstack: note: AUTH_ISSUER is %s, so the services will refuse the local tokens\n", got)
	}
	return stop, toks, nil
}

// localSecret returns one of the local stack's secrets (ORDER_ID_SECRET,
// OPERATION_SECRET), made once and kept in the state directory as file,
// so order ids and operation names stay valid across runs.
func localSecret(state, file string) (string, error) {
	path := filepath.Join(state, file)
	if b, err := os.ReadFile(path); err == nil {
		if s := strings.TrimSpace(string(b)); len(s) == 64 {
			if _, err := hex.DecodeString(s); err == nil {
				return s, nil
			}
		}
		return "", fmt.Errorf("%s is not 64 hex digits; delete it to make a new secret", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return "", err
	}
	b := make([]byte, 32)
	rand.Read(b)
	secret := hex.EncodeToString(b)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", err
	}
	return secret, nil
}

// binDir finds the binaries `make build-local` put next to this one.
func binDir() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(exe)
	for _, b := range []string{"sqslocal", "processor", "ingest", "query"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("%s is missing next to omsstack in %s; start the stack with `make run`", b, dir)
		}
	}
	return dir, nil
}

// lock makes a second `make run` fail with a clear message.
func lock() (func(), error) {
	path := filepath.Join(os.TempDir(), "oms-stack.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := io.ReadAll(f)
		f.Close()
		return nil, fmt.Errorf("another `make run` is already running (pid %s); stop it with Ctrl-C first", strings.TrimSpace(string(b)))
	}
	f.Truncate(0)
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return func() { f.Close(); os.Remove(path) }, nil
}

// group is the running processes, stopped in reverse order.
type group struct {
	mu     sync.Mutex
	procs  []proc
	exited chan string
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (g *group) start(bin string, s service) error {
	if g.exited == nil {
		g.exited = make(chan string, 8)
	}
	cmd := exec.Command(filepath.Join(bin, s.name), s.args...)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.SysProcAttr = serviceProcAttr()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	go prefix(s.name, out)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done); g.exited <- s.name }()
	g.mu.Lock()
	g.procs = append(g.procs, proc{cmd, done})
	g.mu.Unlock()

	deadline := time.Now().Add(30 * time.Second)
	for {
		if ready(s) == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited during start-up (its log is above)", s.name)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 30s: %v", s.name, ready(s))
		}
	}
}

// serviceProcAttr starts a service in its own process group, so a Ctrl-C
// reaches omsstack alone and it stops the services in order; and, on
// Linux, with SIGTERM as its parent-death signal, so no service outlives
// an omsstack that was killed outright. (Pdeathsig exists only in Linux's
// SysProcAttr; it is set by name so this file builds everywhere.)
func serviceProcAttr() *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	if f := reflect.ValueOf(a).Elem().FieldByName("Pdeathsig"); f.IsValid() {
		f.Set(reflect.ValueOf(syscall.SIGTERM))
	}
	return a
}

// watchParent calls stop, once, when the process that started omsstack is
// gone or dying, so the stack never outlives the `make run` that started
// it, however that make was stopped:
//
//   - the parent exited (killed outright, say): omsstack is re-parented,
//     and Getppid changes;
//   - the parent is make and got SIGINT, SIGHUP or SIGQUIT by itself (a
//     `kill -INT`, not a Ctrl-C, which the terminal sends to omsstack too).
//     GNU make does not exit then: it resets the signal to its default,
//     waits for its children, and only then dies by it. So a make that no
//     longer catches a signal it caught is dying. (This reads /proc, so it
//     works on Linux only.)
//
// It reads the parent's state before it returns, so a signal to make right
// after the call is noticed; the watching goes on in the background.
func watchParent(ctx context.Context, every time.Duration, stop func(why string)) {
	ppid := os.Getppid()
	var watched uint64 // the fatal signals the parent catches, when it is make
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", ppid)); err == nil {
		if name := strings.TrimSpace(string(comm)); name == "make" || name == "gmake" {
			watched = caughtSignals(ppid) & fatalSignals
		}
	}
	go watchFrom(ctx, ppid, watched, every, stop)
}

func watchFrom(ctx context.Context, ppid int, watched uint64, every time.Duration, stop func(why string)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if os.Getppid() != ppid {
			stop(fmt.Sprintf("parent process %d exited; stopping", ppid))
			return
		}
		if watched != 0 && caughtSignals(ppid)&watched != watched {
			stop(fmt.Sprintf("make (pid %d) was interrupted; stopping", ppid))
			return
		}
	}
}

// fatalSignals is SIGHUP, SIGINT, SIGQUIT and SIGTERM as a signal mask:
// bit n-1 is signal n.
const fatalSignals = 1<<(syscall.SIGHUP-1) | 1<<(syscall.SIGINT-1) | 1<<(syscall.SIGQUIT-1) | 1<<(syscall.SIGTERM-1)

// caughtSignals is the mask of signals pid has handlers for (SigCgt in
// /proc/pid/status), or 0 when it cannot be read.
func caughtSignals(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			mask, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return mask
		}
	}
	return 0
}

func ready(s service) error {
	if !s.health {
		c, err := net.Dial("tcp", s.addr)
		if err == nil {
			c.Close()
		}
		return err
	}
	resp, err := http.Get("http://" + s.addr + "/readyz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}

func (g *group) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := len(g.procs) - 1; i >= 0; i-- {
		p := g.procs[i]
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(25 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	g.procs = nil
}

func prefix(name string, r io.Reader) {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64*1024), 1<<20)
	for s.Scan() {
		fmt.Printf("%-9s | %s\n", name, s.Text())
	}
}

func banner(devMode bool, tokens string, toks []devissuer.NamedToken) {
	ingest, query := env("INGEST_HTTP_ADDR", "127.0.0.1:8080"), env("QUERY_HTTP_ADDR", "127.0.0.1:8081")
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, tokens); err == nil && !strings.HasPrefix(rel, "..") {
			tokens = rel
		}
	}
	authA, authB, auth := ` -H "Authorization: Bearer $OMS_TOKEN_CUSTOMER_A"`, ` -H "Authorization: Bearer $OMS_TOKEN_CUSTOMER_B"`, ""
	grpcA := ` -H "authorization: Bearer $OMS_TOKEN_CUSTOMER_A"`
	// omsctl reads OMS_TOKEN; set per command, since make demo and make
	// load read it too and need the staff scopes.
	ctlA, ctlStaff := "OMS_TOKEN=$OMS_TOKEN_CUSTOMER_A ", "OMS_TOKEN=$OMS_TOKEN_STAFF "
	tokenHelp := fmt.Sprintf(` Callers (tokens from the local dev issuer, valid %s; the file is rewritten each run):
   customer A, customer B, the storefront service, the staff console
   source %s        # sets OMS_TOKEN_CUSTOMER_A, _B, OMS_TOKEN_SERVICE, OMS_TOKEN_STAFF
`, devissuer.LocalTTL, tokens)
	if devMode {
		authA, authB, grpcA = "", "", ""
		ctlA, ctlStaff = "", ""
		auth = " (AUTH_INSECURE_DEV_MODE: no token)"
		tokenHelp = " AUTH_INSECURE_DEV_MODE is on: every caller is trusted and requests carry no token.\n"
	}
	fmt.Printf(`
================================================================================
 OMS is running. Ctrl-C stops everything.

   ingest   HTTP http://%[1]s   gRPC %[3]s
   query    HTTP http://%[2]s   gRPC %[4]s
   processor health http://%[5]s/readyz
   SQS emulator (goaws) %[6]s      PostgreSQL %[7]s

%[8]s
 Create an order as customer A%[11]s (202 Accepted):
   curl -s -X POST 'http://%[1]s/v1/orders'%[9]s -H 'Idempotency-Key: demo-1' \
     -d '{"customerId":"customer-a","currencyCode":"USD","lineItems":[{"sku":"SKU-1","name":"Mug","quantity":2,"unitPriceMinor":"1200"}]}'
 Read it back (use the name from the answer); customer B's token cannot see it:
   curl -s 'http://%[2]s/v1/orders/<id>?read_mask=id,state'%[9]s
   curl -s 'http://%[2]s/v1/orders/<id>'%[10]s
   grpcurl -plaintext%[12]s -d '{"name":"orders/<id>"}' %[4]s oms.v1.OrderQueryService/GetOrder
 Or with omsctl (bin/omsctl --help); --wait waits for the command's outcome:
   export OMS_INGEST_ADDR=%[3]s OMS_QUERY_ADDR=%[4]s
   %[13]sbin/omsctl create --currency USD --line 'SKU-1:Mug:2:1200' --wait
   %[13]sbin/omsctl pay <id> --amount 2400 --reference ch_1 --wait
   %[14]sbin/omsctl list --filter 'state = PAID' --page-size 5
 Walk a few orders through their lifecycle:  make demo
================================================================================
`, ingest, query, env("INGEST_GRPC_ADDR", "127.0.0.1:9090"), env("QUERY_GRPC_ADDR", "127.0.0.1:9091"),
		env("PROCESSOR_HTTP_ADDR", "127.0.0.1:8082"), os.Getenv("SQS_ENDPOINT"), config.Redact(os.Getenv("DATABASE_URL")),
		tokenHelp, authA, authB, auth, grpcA, ctlA, ctlStaff)
	if len(toks) > 0 {
		fmt.Println(" Or paste:")
		for _, t := range toks {
			fmt.Printf("export %s=%s\n", t.Env, t.Token)
		}
		fmt.Println("================================================================================")
	}
}
