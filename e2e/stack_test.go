// Package e2e runs the three OMS services as separate processes against the
// real PostgreSQL and an SQS endpoint (goaws, in its own process), and
// checks the whole path over HTTP and gRPC.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/uptrace/bun"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/devissuer"
	"github.com/omsdev/oms/pkg/orderstore"
	"github.com/omsdev/oms/pkg/queue"
)

// stack is one running system shared by the tests of this package.
type stack struct {
	bin     string // directory of the built binaries
	dbURL   string // the database, direct
	db      *bun.DB
	sqsURL  string
	queues  queue.Config
	sqs     *sqs.Client
	urls    queue.URLs
	pgProxy *proxy // the processor reaches PostgreSQL through it

	// issuer signs the tests' tokens; the services fetch its JWKS over
	// HTTP and verify every call through the production path.
	issuer     *devissuer.Issuer
	stopIssuer func() error
	tokens     map[string]string // the standard local principals, by env name

	ingestHTTP, ingestGRPC, ingestAdmin string
	queryHTTP, queryGRPC, queryAdmin    string
	processorHTTP                       string

	mu        sync.Mutex
	ingest    *proc // the shared one; some tests start more
	processor *proc
	procs     []*proc
}

var sys *stack

// orderIDSecret is the stack's ORDER_ID_SECRET.
var orderIDSecret = randomName("secret-") + randomName("") + randomName("") + randomName("")

// operationSecret is the stack's OPERATION_SECRET, shared by ingest and
// query, so tests can check the operation names ingest issues.
var operationSecret = randomName("opsecret-") + randomName("") + randomName("") + randomName("")

func TestMain(m *testing.M) {
	code, err := runMain(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		code = 1
	}
	os.Exit(code)
}

func runMain(m *testing.M) (int, error) {
	bin, err := os.MkdirTemp("", "oms-e2e-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(bin)
	if err := build(bin); err != nil {
		return 0, err
	}
	s, err := startStack(bin)
	if s != nil {
		defer s.close()
	}
	if err != nil {
		return 0, err
	}
	sys = s
	code := m.Run()
	if err := s.stopAll(); err != nil && code == 0 {
		return 1, err
	}
	return code, nil
}

// build compiles the services with the race detector (a race fails the run
// through their exit codes) and the emulator without.
func build(dir string) error {
	run := func(args ...string) error {
		cmd := exec.Command("go", args...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		return cmd.Run()
	}
	if err := run("build", "-race", "-o", dir+"/",
		"github.com/omsdev/oms/services/ingest", "github.com/omsdev/oms/services/processor", "github.com/omsdev/oms/services/query"); err != nil {
		return fmt.Errorf("build services: %w", err)
	}
	if err := run("build", "-o", dir+"/", "github.com/omsdev/oms/deploy/local/cmd/sqslocal"); err != nil {
		return fmt.Errorf("build sqslocal: %w", err)
	}
	return nil
}

func randomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Ports handed to services come from below Linux's ephemeral range
// (32768-60999), so no outgoing connection's source port can take one
// between this check and the service's bind, and each is handed out once.
var (
	portsMu sync.Mutex
	ports   = map[int]bool{}
)

func freeAddr() string {
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		p := 20000 + mrand.IntN(12000)
		if ports[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue // taken by something else
		}
		ln.Close()
		ports[p] = true
		return ln.Addr().String()
	}
}

func startStack(bin string) (*stack, error) {
	ctx := context.Background()
	s := &stack{bin: bin}

	// A database of its own, created and dropped here.
	dbName := randomName("oms_e2e_")
	admin := orderstore.Open(dbtest.URL())
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+dbName); err != nil {
		return nil, fmt.Errorf("PostgreSQL at %s is required: %w", dbtest.URL(), err)
	}
	s.dbURL = strings.Replace(dbtest.URL(), "/test?", "/"+dbName+"?", 1)
	s.db = orderstore.Open(s.dbURL)

	var err error
	s.issuer, err = devissuer.New()
	if err != nil {
		return s, err
	}
	if _, s.stopIssuer, err = s.issuer.Serve("127.0.0.1:0"); err != nil {
		return s, err
	}
	toks, err := s.issuer.MintStandard(audience)
	if err != nil {
		return s, err
	}
	s.tokens = map[string]string{}
	for _, t := range toks {
		s.tokens[t.Env] = t.Token
	}

	pgAddr, err := hostPort(s.dbURL)
	if err != nil {
		return s, err
	}
	if s.pgProxy, err = newProxy(pgAddr); err != nil {
		return s, err
	}

	sqsAddr := freeAddr()
	s.sqsURL = "http://" + sqsAddr
	emu, err := s.start("sqslocal", nil, "-addr", sqsAddr, "-tick", "100ms")
	if err != nil {
		return s, err
	}
	_ = emu
	if err := waitFor(10*time.Second, func() error { _, err := net.Dial("tcp", sqsAddr); return err }); err != nil {
		return s, fmt.Errorf("sqslocal did not start: %w", err)
	}

	prefix := randomName("e2e")
	s.queues = queue.Config{
		Endpoint: s.sqsURL, Region: "us-east-1", CreateQueues: true,
		CommandQueue: prefix + "-commands.fifo", DeadLetterQueue: prefix + "-commands-dlq.fifo",
		NotificationQueue: prefix + "-notifications.fifo", VisibilityTimeout: 15 * time.Second, MaxReceiveCount: 5,
	}
	if s.sqs, err = queue.NewClient(ctx, s.queues); err != nil {
		return s, err
	}
	if s.urls, err = queue.EnsureQueues(ctx, s.sqs, s.queues); err != nil {
		return s, err
	}

	migrate := exec.Command(filepath.Join(bin, "processor"), "migrate", "up")
	migrate.Env = s.env()
	if out, err := migrate.CombinedOutput(); err != nil {
		return s, fmt.Errorf("migrate: %v: %s", err, out)
	}

	s.ingestHTTP, s.ingestGRPC = freeAddr(), freeAddr()
	s.queryHTTP, s.queryGRPC = freeAddr(), freeAddr()
	s.processorHTTP = freeAddr()
	s.ingestAdmin, s.queryAdmin = freeAddr(), freeAddr()
	if s.ingest, err = s.start("ingest", append(s.ingestEnv(s.queues, s.ingestHTTP, s.ingestGRPC), "ADMIN_ADDR="+s.ingestAdmin)); err != nil {
		return s, err
	}
	if _, err := s.start("query", s.env("HTTP_ADDR="+s.queryHTTP, "GRPC_ADDR="+s.queryGRPC, "ADMIN_ADDR="+s.queryAdmin)); err != nil {
		return s, err
	}
	if err := s.startProcessor(); err != nil {
		return s, err
	}
	for _, addr := range []string{s.ingestHTTP, s.queryHTTP} {
		if err := waitReady(addr); err != nil {
			return s, err
		}
	}
	return s, nil
}

// ownQueues is the stack's queue configuration with queues of a test's
// own, created on the stack's emulator.
func ownQueues(t *testing.T, prefix string) (queue.Config, queue.URLs) {
	t.Helper()
	q := sys.queues
	p := randomName(prefix)
	q.CommandQueue, q.DeadLetterQueue, q.NotificationQueue = p+"-c.fifo", p+"-d.fifo", p+"-n.fifo"
	urls, err := queue.EnsureQueues(context.Background(), sys.sqs, q)
	if err != nil {
		t.Fatal(err)
	}
	return q, urls
}

func hostPort(dbURL string) (string, error) {
	rest := dbURL[strings.Index(dbURL, "@")+1:]
	if i := strings.Index(rest, "/"); i > 0 {
		return rest[:i], nil
	}
	return "", fmt.Errorf("no host in %s", dbURL)
}

// env is the environment shared by the services.
func (s *stack) env(extra ...string) []string {
	base := []string{
		"DATABASE_URL=" + s.dbURL,
		"SQS_ENDPOINT=" + s.sqsURL,
		"AWS_REGION=us-east-1",
		"SQS_COMMAND_QUEUE=" + s.queues.CommandQueue,
		"SQS_DEAD_LETTER_QUEUE=" + s.queues.DeadLetterQueue,
		"SQS_NOTIFICATION_QUEUE=" + s.queues.NotificationQueue,
		"SQS_VISIBILITY_TIMEOUT=15s",
		"LOG_LEVEL=info",
		"DRAIN_TIMEOUT=10s",
		"OTEL_TRACES_EXPORTER=console", // spans to stderr; trace ids on log lines
		"AUTH_ISSUER=" + s.issuer.URL,
		"AUTH_AUDIENCE=" + audience,
		"AUTH_JWKS_URL=" + s.issuer.JWKSURL(),
		"ORDER_ID_SECRET=" + orderIDSecret,
		"OPERATION_SECRET=" + operationSecret,
		// The shared services are not rate limited: tests of the limits
		// start services of their own.
		"RATE_LIMIT_COMMANDS_PER_SECOND=0",
		"RATE_LIMIT_READS_PER_SECOND=0",
		"PATH=" + os.Getenv("PATH"),
	}
	return append(base, extra...)
}

func (s *stack) ingestEnv(q queue.Config, httpAddr, grpcAddr string) []string {
	return s.env("HTTP_ADDR="+httpAddr, "GRPC_ADDR="+grpcAddr, "ADMIN_ADDR="+freeAddr(),
		"INGEST_OPERATIONS_URL=http://"+s.queryHTTP,
		"SQS_COMMAND_QUEUE="+q.CommandQueue, "SQS_DEAD_LETTER_QUEUE="+q.DeadLetterQueue,
		"SQS_NOTIFICATION_QUEUE="+q.NotificationQueue)
}

// startProcessor runs the processor with retries short enough for tests:
// waits of 0.5, 1, 2 and 4 s cover a database outage of a few seconds.
func (s *stack) startProcessor() error {
	p, err := s.start("processor", s.env(
		"DATABASE_URL="+strings.Replace(s.dbURL, mustHostPort(s.dbURL), s.pgProxy.Addr(), 1),
		"HTTP_ADDR="+s.processorHTTP,
		"PROCESSOR_SUBSCRIPTIONS=8", // as production: sqslocal keeps FIFO group locks (docs/sqs.md)
		"PROCESSOR_RETRY_INITIAL_INTERVAL=500ms",
		"PROCESSOR_HANDLER_TIMEOUT=1s",
		"OUTBOX_POLL_INTERVAL=20ms",
		// The dead-letter audit holds dead letters while it reads them;
		// the tests that list and redrive them would race it. Its own test
		// runs a processor of its own with it.
		"PROCESSOR_DLQ_AUDIT_INTERVAL=0",
	))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.processor = p
	s.mu.Unlock()
	return waitReady(s.processorHTTP)
}

func mustHostPort(u string) string {
	hp, err := hostPort(u)
	if err != nil {
		panic(err)
	}
	return hp
}

// proc is a service process whose output is kept for failure reports.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

func (s *stack) start(name string, env []string, args ...string) (*proc, error) {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	if env != nil {
		cmd.Env = env
	}
	p := &proc{name: name, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

// stop sends SIGTERM and waits for a clean exit: status 0, which also
// means the race detector found nothing.
func (p *proc) stop(timeout time.Duration) error {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(timeout):
			p.cmd.Process.Kill()
			<-p.done
			return fmt.Errorf("%s did not stop within %s", p.name, timeout)
		}
	}
	if p.err != nil {
		return fmt.Errorf("%s exited with %v; output:\n%s", p.name, p.err, tail(p.out.String(), 60))
	}
	return nil
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

func (s *stack) stopAll() error {
	s.mu.Lock()
	procs := append([]*proc(nil), s.procs...)
	s.mu.Unlock()
	var errs []string
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].stop(30 * time.Second); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

func (s *stack) close() {
	s.stopAll()
	if s.stopIssuer != nil {
		s.stopIssuer()
	}
	if s.pgProxy != nil {
		s.pgProxy.Close()
	}
	if s.db != nil {
		s.db.Close()
	}
	if s.dbURL != "" {
		admin := orderstore.Open(dbtest.URL())
		defer admin.Close()
		name := s.dbURL[strings.LastIndex(s.dbURL, "/")+1 : strings.Index(s.dbURL, "?")]
		admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	}
}

func waitReady(addr string) error {
	return waitFor(30*time.Second, func() error {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s/readyz: %d", addr, resp.StatusCode)
		}
		return nil
	})
}

func waitFor(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logs returns every service's output, for failure messages.
func (s *stack) logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, p := range s.procs {
		fmt.Fprintf(&b, "==== %s\n%s\n", p.name, tail(logLines(p.out.String()), 30))
	}
	return b.String()
}

// logLines drops the trace spans the services print (OTEL_TRACES_EXPORTER
// =console), which would crowd the log lines out of a failure report.
func logLines(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, `{"Name":`) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// output returns what the shared ingest or the current processor printed.
func (s *stack) output(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name == "ingest" {
		return s.ingest.out.String()
	}
	return s.processor.out.String()
}
