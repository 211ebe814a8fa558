package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/uptrace/bun"
	"google.golang.org/protobuf/encoding/protojson"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/orderstore"
	"github.com/omsdev/oms/pkg/queue"
)

// chaosEnv is one scenario's own system: a database, an SQS emulator with
// its queues, and an ingest, a query service and a processor, all on
// addresses that stay the same across restarts so the load keeps going.
type chaosEnv struct {
	res *chaosResult

	adminURL string // the server the database lives on
	dbName   string
	dbURL    string
	db       *bun.DB
	// procDBURL is the processor's DATABASE_URL (through a proxy in the
	// scenarios that cut the network path).
	procDBURL string

	sqsAddr string
	q       queue.Config
	sqs     *sqs.Client
	urls    queue.URLs
	notes   *chaosNotes

	ingestHTTP, ingestGRPC, ingestAdmin string
	queryHTTP, queryGRPC, queryAdmin    string
	procHTTP                            string
	ingestEnv, queryEnv, processorEnv   []string

	faultEnd  time.Time     // when the last fault ended
	settleFor time.Duration // overrides chaosSettleTimeout

	mu                            sync.Mutex
	emu, ingest, query, processor *proc   // the current ones
	all                           []*proc // every process started, for the logs
	shutDown                      bool
}

type chaosEnvOptions struct {
	adminURL    string // the server to create the database on; "" is the shared cluster
	unmigrated  bool   // leave the schema to the scenario
	noProcessor bool   // the scenario starts it
	procDBURL   func(dbURL string) string
}

func newChaosEnv(t *testing.T, res *chaosResult, o chaosEnvOptions) *chaosEnv {
	t.Helper()
	ctx := context.Background()
	e := &chaosEnv{res: res, adminURL: o.adminURL}
	if e.adminURL == "" {
		e.adminURL = dbtest.URL()
	}
	e.dbName = randomName("oms_chaos_")
	admin := orderstore.Open(e.adminURL)
	_, err := admin.ExecContext(ctx, "CREATE DATABASE "+e.dbName)
	admin.Close()
	if err != nil {
		t.Fatalf("create database on %s: %v", e.adminURL, err)
	}
	e.dbURL = chaosDatabaseURL(t, e.adminURL, e.dbName)
	e.db = orderstore.Open(e.dbURL)
	t.Cleanup(func() {
		e.shutdown()
		e.db.Close()
		admin := orderstore.Open(e.adminURL)
		defer admin.Close()
		admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+e.dbName+" WITH (FORCE)")
	})
	e.procDBURL = e.dbURL
	if o.procDBURL != nil {
		e.procDBURL = o.procDBURL(e.dbURL)
	}
	if !o.unmigrated {
		if err := e.migrate(); err != nil {
			t.Fatal(err)
		}
	}

	e.sqsAddr = freeAddr()
	if err := e.startEmulator(); err != nil {
		t.Fatal(err)
	}
	prefix := randomName("chaos")
	e.q = queue.Config{
		Endpoint: "http://" + e.sqsAddr, Region: "us-east-1", CreateQueues: true,
		CommandQueue: prefix + "-c.fifo", DeadLetterQueue: prefix + "-d.fifo", NotificationQueue: prefix + "-n.fifo",
		VisibilityTimeout: chaosVisibilityTimeout, MaxReceiveCount: 5,
	}
	if e.sqs, err = queue.NewClient(ctx, e.q); err != nil {
		t.Fatal(err)
	}
	if e.urls, err = queue.EnsureQueues(ctx, e.sqs, e.q); err != nil {
		t.Fatal(err)
	}

	e.ingestHTTP, e.ingestGRPC, e.ingestAdmin = freeAddr(), freeAddr(), freeAddr()
	e.queryHTTP, e.queryGRPC, e.queryAdmin = freeAddr(), freeAddr(), freeAddr()
	e.procHTTP = freeAddr()
	e.ingestEnv = append(sys.ingestEnv(e.q, e.ingestHTTP, e.ingestGRPC), e.common(
		"ADMIN_ADDR="+e.ingestAdmin,
		"INGEST_ENQUEUE_TIMEOUT=3s",
	)...)
	e.queryEnv = sys.env(e.common("HTTP_ADDR="+e.queryHTTP, "GRPC_ADDR="+e.queryGRPC, "ADMIN_ADDR="+e.queryAdmin)...)
	// The retries of stack_test.go's startProcessor: waits of 0.5, 1, 2
	// and 4 s, one second per attempt (chaosRetryBudget in all).
	e.processorEnv = sys.env(e.common(
		"DATABASE_URL="+e.procDBURL,
		"HTTP_ADDR="+e.procHTTP,
		"PROCESSOR_SUBSCRIPTIONS="+strconv.Itoa(chaosSubscriptions),
		"PROCESSOR_RETRY_INITIAL_INTERVAL=500ms",
		"PROCESSOR_HANDLER_TIMEOUT=1s",
		"OUTBOX_POLL_INTERVAL=20ms",
	)...)
	if err := e.startIngest(); err != nil {
		t.Fatal(err)
	}
	// The query service is not ready before the migration.
	if err := e.startQuery(!o.unmigrated); err != nil {
		t.Fatal(err)
	}
	if !o.noProcessor {
		if err := e.startProcessor(true); err != nil {
			t.Fatal(err)
		}
	}
	e.notes = newChaosNotes(e.sqs, e.urls.Notification)
	return e
}

// common is the environment every service of the scenario shares, plus
// extra.
func (e *chaosEnv) common(extra ...string) []string {
	return append([]string{
		"DATABASE_URL=" + e.dbURL,
		"SQS_ENDPOINT=http://" + e.sqsAddr,
		"SQS_COMMAND_QUEUE=" + e.q.CommandQueue,
		"SQS_DEAD_LETTER_QUEUE=" + e.q.DeadLetterQueue,
		"SQS_NOTIFICATION_QUEUE=" + e.q.NotificationQueue,
		"SQS_VISIBILITY_TIMEOUT=" + chaosVisibilityTimeout.String(),
		// Spans on stderr cost CPU that the load needs; log lines stay.
		"OTEL_TRACES_EXPORTER=none",
	}, extra...)
}

func chaosDatabaseURL(t *testing.T, serverURL, name string) string {
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

func (e *chaosEnv) migrate() error {
	cmd := exec.Command(filepath.Join(sys.bin, "processor"), "migrate", "up")
	cmd.Env = sys.env("DATABASE_URL="+e.dbURL, "OTEL_TRACES_EXPORTER=none")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("migrate %s: %v: %s", e.dbName, err, out)
	}
	return nil
}

func (e *chaosEnv) track(p *proc) {
	e.mu.Lock()
	e.all = append(e.all, p)
	e.mu.Unlock()
}

func (e *chaosEnv) startEmulator() error {
	p, err := sys.start("sqslocal", nil, "-addr", e.sqsAddr, "-tick", "100ms")
	if err != nil {
		return err
	}
	e.track(p)
	e.mu.Lock()
	e.emu = p
	e.mu.Unlock()
	return waitFor(15*time.Second, func() error {
		resp, err := http.Get("http://" + e.sqsAddr + "/health")
		if err == nil {
			resp.Body.Close()
		}
		return err
	})
}

func (e *chaosEnv) startIngest() error {
	p, err := sys.start("ingest", e.ingestEnv)
	if err != nil {
		return err
	}
	e.track(p)
	e.mu.Lock()
	e.ingest = p
	e.mu.Unlock()
	if err := waitReady(e.ingestHTTP); err != nil {
		return fmt.Errorf("ingest not ready: %v\n%s", err, tail(p.out.String(), 20))
	}
	return nil
}

func (e *chaosEnv) startQuery(wait bool) error {
	p, err := sys.start("query", e.queryEnv)
	if err != nil {
		return err
	}
	e.track(p)
	e.mu.Lock()
	e.query = p
	e.mu.Unlock()
	if !wait {
		return nil
	}
	if err := waitReady(e.queryHTTP); err != nil {
		return fmt.Errorf("query not ready: %v\n%s", err, tail(p.out.String(), 20))
	}
	return nil
}

// startProcessor starts the processor and, if wait, waits until it is ready.
func (e *chaosEnv) startProcessor(wait bool) error {
	p, err := sys.start("processor", e.processorEnv)
	if err != nil {
		return err
	}
	e.track(p)
	e.mu.Lock()
	e.processor = p
	e.mu.Unlock()
	if !wait {
		return nil
	}
	if err := waitReady(e.procHTTP); err != nil {
		return fmt.Errorf("processor not ready: %v\n%s", err, tail(p.out.String(), 20))
	}
	return nil
}

// waitInFlight polls the command queue until a message is in flight
// (received, not yet deleted), for at most d, and reports whether one was.
func (e *chaosEnv) waitInFlight(d time.Duration) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if q, err := queue.QueueDepth(context.Background(), e.sqs, e.urls.Command); err == nil && q.InFlight > 0 {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return false
}

// kill is kill -9: no drain, no goodbye. The process is dropped from the
// stack's list, whose final stop counts a non-zero exit as a failure.
func (e *chaosEnv) kill(p *proc) {
	p.cmd.Process.Kill()
	<-p.done
	sys.chaosForget(p)
}

// term sends SIGTERM and expects a clean exit within the drain timeout:
// status 0, which also means the race detector found nothing.
func (e *chaosEnv) term(p *proc) {
	if err := p.stop(30 * time.Second); err != nil {
		e.res.problem("%s did not stop cleanly on SIGTERM: %v", p.name, err)
	}
	sys.chaosForget(p)
}

// shutdown stops the notification collector and every process still
// running, each with SIGTERM, and reports unclean exits.
func (e *chaosEnv) shutdown() {
	e.mu.Lock()
	if e.shutDown {
		e.mu.Unlock()
		return
	}
	e.shutDown = true
	procs := []*proc{e.processor, e.ingest, e.query, e.emu}
	e.mu.Unlock()
	if e.notes != nil {
		e.notes.Stop()
	}
	for _, p := range procs {
		if p == nil {
			continue
		}
		select {
		case <-p.done:
			// Killed and stopped processes are forgotten; this one ended
			// on its own.
			if !sys.chaosForgotten(p) {
				e.res.problem("%s exited by itself (%v)\n%s", p.name, p.err, tail(p.out.String(), 30))
			}
			sys.chaosForget(p)
		default:
			e.term(p)
		}
	}
}

// logs is the tail of every process of the scenario, for failure reports.
func (e *chaosEnv) logs(lines int) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var b strings.Builder
	for i, p := range e.all {
		if p.name == "sqslocal" {
			continue
		}
		fmt.Fprintf(&b, "==== %s #%d\n%s\n", p.name, i, tail(p.out.String(), lines))
	}
	return b.String()
}

// processorCounts counts what the scenario's processors logged about
// redeliveries and retries.
func (e *chaosEnv) processorCounts() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var parts []string
	for _, m := range []struct{ label, msg string }{
		{"duplicate deliveries ignored", "duplicate delivery ignored"},
		{"transient failures retried", "transient failure"},
		{"retried because the order was not there yet", "order not found yet; retrying"},
		{"give-backs while draining", "gave back messages received while draining or paused"},
		{"failed give-backs", "batch give back failed for some messages; they return after their visibility timeout"},
		{"starts", "processing"},
	} {
		n := 0
		for _, p := range e.all {
			if p.name == "processor" {
				n += strings.Count(p.out.String(), `"msg":"`+m.msg+`"`)
			}
		}
		parts = append(parts, fmt.Sprintf("%d %s", n, m.label))
	}
	return strings.Join(parts, ", ")
}

// forget drops p from the processes the stack stops (and checks) at exit.
func (s *stack) chaosForget(p *proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.procs = slices.DeleteFunc(s.procs, func(q *proc) bool { return q == p })
}

func (s *stack) chaosForgotten(p *proc) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !slices.Contains(s.procs, p)
}

// chaosNotes drains a notification queue for the whole scenario, one
// receive at a time, deleting each batch before the next receive, so the
// order in which it records notifications is the order a single consumer
// of the FIFO queue sees them in.
type chaosNotes struct {
	client *sqs.Client
	url    string

	mu        sync.Mutex
	got       []chaosNote
	undecoded int
	lastAt    time.Time

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type chaosNote struct {
	order   string
	seq     int64
	version int64
	typ     string
}

func newChaosNotes(client *sqs.Client, url string) *chaosNotes {
	c := &chaosNotes{client: client, url: url, stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

func (c *chaosNotes) run() {
	defer close(c.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-c.stop; cancel() }()
	for ctx.Err() == nil {
		out, err := c.client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(c.url), MaxNumberOfMessages: 10, WaitTimeSeconds: 1, VisibilityTimeout: 30,
		})
		if err != nil {
			// The emulator restarting, or the queue not re-created yet.
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		if len(out.Messages) == 0 {
			continue
		}
		var del []types.DeleteMessageBatchRequestEntry
		c.mu.Lock()
		for i, m := range out.Messages {
			var n omsv1.OrderNotification
			if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(aws.ToString(m.Body)), &n); err != nil {
				c.undecoded++
			} else {
				c.got = append(c.got, chaosNote{order: n.GetOrderId(), seq: n.GetEvent().GetSequence(), version: n.GetVersion(), typ: n.GetEvent().GetType()})
			}
			del = append(del, types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle})
		}
		c.lastAt = time.Now()
		c.mu.Unlock()
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		c.client.DeleteMessageBatch(dctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(c.url), Entries: del})
		dcancel()
	}
}

// Snapshot returns what was received so far, in receive order.
func (c *chaosNotes) Snapshot() ([]chaosNote, int, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got), c.undecoded, c.lastAt
}

func (c *chaosNotes) Stop() {
	c.once.Do(func() { close(c.stop) })
	<-c.done
}

// chaosCluster is a PostgreSQL cluster of the suite's own, for the scenarios
// that stop the server: the machine's shared cluster is never stopped.
type chaosCluster struct {
	name string
	port int
}

func (c *chaosCluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

func newChaosCluster(t *testing.T) *chaosCluster {
	t.Helper()
	if _, err := exec.LookPath("pg_createcluster"); err != nil {
		t.Fatalf("the full chaos variant needs pg_createcluster (postgresql-common) to run a cluster of its own: %v", err)
	}
	addr := freeAddr()
	port, _ := strconv.Atoi(addr[strings.LastIndex(addr, ":")+1:])
	c := &chaosCluster{name: randomName("chaos"), port: port}
	if out, err := exec.Command("pg_createcluster", "15", c.name, "--port", strconv.Itoa(port), "--", "--auth=trust").CombinedOutput(); err != nil {
		t.Fatalf("pg_createcluster: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("pg_dropcluster", "--stop", "15", c.name).CombinedOutput(); err != nil {
			t.Errorf("pg_dropcluster %s: %v: %s", c.name, err, out)
		}
	})
	if err := c.ctl("start"); err != nil {
		t.Fatal(err)
	}
	return c
}

// ctl runs pg_ctlcluster start or stop (fast mode: connections are cut,
// as in a crash or a failover).
func (c *chaosCluster) ctl(action string) error {
	out, err := exec.Command("pg_ctlcluster", "--skip-systemctl-redirect", "-m", "fast", "15", c.name, action).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctlcluster %s %s: %v: %s", c.name, action, err, out)
	}
	return nil
}
