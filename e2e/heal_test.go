package e2e

import (
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/omsdev/oms/pkg/orderstore"
	"github.com/omsdev/oms/pkg/queue"
)

// The first read after PostgreSQL went away and came back succeeds: the
// broken pooled connection is replaced, not reported as 503.
func TestQueryHealsAfterADatabaseRestart(t *testing.T) {
	t.Parallel()
	name := create(t)
	waitOrder(t, name, inState("CREATED"))
	px, err := newProxy(mustHostPort(sys.dbURL))
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	qBase, _ := isolatedQuery(t, "DATABASE_URL="+strings.Replace(sys.dbURL, mustHostPort(sys.dbURL), px.Addr(), 1))
	for range 3 { // fill the pool
		if r := do(t, "GET", qBase+"/v1/"+name, ""); r.status != http.StatusOK {
			t.Fatalf("before: %d %s", r.status, r.raw)
		}
	}
	px.Block() // every pooled connection dies, as in a restart
	if err := px.Unblock(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if r := do(t, "GET", qBase+"/v1/"+name, ""); r.status != http.StatusOK {
			t.Errorf("read %d after the restart: %d %s", i+1, r.status, r.raw)
		}
	}
}

// When the SQS endpoint restarts and loses its queues, ingest re-creates
// them and recovers by itself: readiness and accepting commands come back
// without a restart of ingest.
func TestIngestHealsAfterTheQueueEndpointRestarts(t *testing.T) {
	t.Parallel()
	sqsAddr, httpAddr := freeAddr(), freeAddr()
	startEmu := func() *proc {
		emu, err := sys.start("sqslocal", nil, "-addr", sqsAddr)
		if err != nil {
			t.Fatal(err)
		}
		if err := waitFor(10*time.Second, func() error { _, err := http.Get("http://" + sqsAddr + "/health"); return err }); err != nil {
			t.Fatal(err)
		}
		return emu
	}
	emu := startEmu()
	env := append(sys.ingestEnv(sys.queues, httpAddr, freeAddr()), "SQS_ENDPOINT=http://"+sqsAddr, "INGEST_ENQUEUE_TIMEOUT=2s")
	ing, err := sys.start("ingest", env)
	if err != nil {
		t.Fatal(err)
	}
	defer ing.stop(15 * time.Second)
	if err := waitReady(httpAddr); err != nil {
		t.Fatal(err)
	}
	base := "http://" + httpAddr
	if r := do(t, "POST", base+"/v1/orders", orderBody); r.status != http.StatusAccepted {
		t.Fatalf("before: %d %s", r.status, r.raw)
	}
	if err := emu.stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	emu = startEmu() // empty: every queue is gone
	defer emu.stop(10 * time.Second)
	start := time.Now()
	if err := waitReady(httpAddr); err != nil {
		t.Fatalf("ingest never became ready again: %v\n%s", err, tail(ing.out.String(), 20))
	}
	key := uuid.NewString()
	var r httpResult
	waitFor(30*time.Second, func() error {
		if r = do(t, "POST", base+"/v1/orders", orderBody, "Idempotency-Key", key); r.status != http.StatusAccepted {
			return context.DeadlineExceeded
		}
		return nil
	})
	if r.status != http.StatusAccepted {
		t.Fatalf("after the restart: %d %s", r.status, r.raw)
	}
	t.Logf("recovered in %s", time.Since(start).Round(time.Millisecond))
}

// A processor started before its migration takes no command (nothing is
// dead-lettered), is not ready, and applies everything once the schema is
// migrated.
func TestProcessorWaitsForItsMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbName := randomName("oms_late_")
	if _, err := sys.db.ExecContext(ctx, "CREATE DATABASE "+dbName); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.db.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+dbName+" WITH (FORCE)") })
	dbURL := strings.Replace(sys.dbURL, sys.dbURL[strings.LastIndex(sys.dbURL, "/")+1:strings.Index(sys.dbURL, "?")], dbName, 1)

	q, urls := ownQueues(t, "late")
	ingestHTTP, procHTTP := freeAddr(), freeAddr()
	ing, err := sys.start("ingest", sys.ingestEnv(q, ingestHTTP, freeAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer ing.stop(15 * time.Second)
	proc, err := sys.start("processor", append(sys.ingestEnv(q, procHTTP, freeAddr()),
		"DATABASE_URL="+dbURL, "PROCESSOR_RETRY_INITIAL_INTERVAL=200ms", "PROCESSOR_HANDLER_TIMEOUT=1s"))
	if err != nil {
		t.Fatal(err)
	}
	defer proc.stop(15 * time.Second)
	if err := waitReady(ingestHTTP); err != nil {
		t.Fatal(err)
	}

	var names []string
	for range 5 {
		r := do(t, "POST", "http://"+ingestHTTP+"/v1/orders", orderBody, "Idempotency-Key", uuid.NewString())
		if r.status != http.StatusAccepted {
			t.Fatalf("%d %s", r.status, r.raw)
		}
		names = append(names, strings.TrimPrefix(r.body["name"].(string), "orders/"))
	}
	// Not ready, and nothing dead-lettered, for a while.
	time.Sleep(3 * time.Second)
	if r := do(t, "GET", "http://"+procHTTP+"/readyz", ""); r.status != http.StatusServiceUnavailable {
		t.Errorf("readyz before the migration: %d", r.status)
	}
	if d, err := queue.QueueDepth(ctx, sys.sqs, urls.DeadLetter); err != nil || d.Visible+d.InFlight != 0 {
		t.Fatalf("dead-lettered before the migration: %+v %v\n%s", d, err, tail(proc.out.String(), 20))
	}

	migrate := exec.Command(filepath.Join(sys.bin, "processor"), "migrate", "up")
	migrate.Env = sys.env("DATABASE_URL=" + dbURL)
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v: %s", err, out)
	}
	if err := waitReady(procHTTP); err != nil {
		t.Fatalf("not ready after the migration: %v\n%s", err, tail(proc.out.String(), 20))
	}
	late := orderstore.Open(dbURL)
	defer late.Close()
	if err := waitFor(60*time.Second, func() error {
		n, err := late.NewSelect().Table("orders").Where("id IN (?)", bun.In(names)).Count(ctx)
		if err == nil && n != int64(len(names)) {
			err = context.DeadlineExceeded
		}
		return err
	}); err != nil {
		t.Fatalf("orders applied after the migration: %v\n%s", err, tail(proc.out.String(), 30))
	}
	if d, err := queue.QueueDepth(ctx, sys.sqs, urls.DeadLetter); err != nil || d.Visible+d.InFlight != 0 {
		t.Errorf("dead-letter queue: %+v %v", d, err)
	}
}

// An order's create left in flight (a processor killed while holding it)
// keeps its group locked: the pay behind it is not handed out first, and
// both apply, in order, once the create's visibility lapses. Nothing is
// dead-lettered.
func TestPayWaitsForItsCreateLeftInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q, urls := ownQueues(t, "inflight")
	ingestHTTP := freeAddr()
	ing, err := sys.start("ingest", sys.ingestEnv(q, ingestHTTP, freeAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer ing.stop(15 * time.Second)
	if err := waitReady(ingestHTTP); err != nil {
		t.Fatal(err)
	}
	base := "http://" + ingestHTTP
	r := do(t, "POST", base+"/v1/orders", orderBody, "Idempotency-Key", uuid.NewString())
	if r.status != http.StatusAccepted {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	name := r.body["name"].(string)
	if r := do(t, "POST", base+"/v1/"+name+":pay", `{"paymentReference":"ch_1","amountMinor":"2400"}`, "Idempotency-Key", uuid.NewString()); r.status != http.StatusAccepted {
		t.Fatalf("pay: %d %s", r.status, r.raw)
	}

	// Other orders' commands keep flowing around it (with goaws's own
	// receive, locking their groups unlocked this one).
	var others []string
	for range 5 {
		r := do(t, "POST", base+"/v1/orders", orderBody, "Idempotency-Key", uuid.NewString())
		if r.status != http.StatusAccepted {
			t.Fatalf("create: %d %s", r.status, r.raw)
		}
		others = append(others, r.body["name"].(string))
	}

	// A consumer takes the create and dies with it.
	out, err := sys.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl: aws.String(urls.Command), MaxNumberOfMessages: 1, VisibilityTimeout: 3, WaitTimeSeconds: 5,
		MessageAttributeNames: []string{"All"},
	})
	if err != nil || len(out.Messages) != 1 || aws.ToString(out.Messages[0].MessageAttributes["command"].StringValue) != "create" {
		t.Fatalf("took %v, %v; want the create", out, err)
	}

	procHTTP := freeAddr()
	proc, err := sys.start("processor", append(sys.ingestEnv(q, procHTTP, freeAddr()),
		"PROCESSOR_SUBSCRIPTIONS=8", "PROCESSOR_RETRY_INITIAL_INTERVAL=200ms", "PROCESSOR_HANDLER_TIMEOUT=1s"))
	if err != nil {
		t.Fatal(err)
	}
	defer proc.stop(15 * time.Second)
	for _, n := range others {
		waitOrder(t, n, inState("CREATED"))
	}
	o := waitOrder(t, name, inState("PAID"))
	if got := eventTypes(events(t, name)); got != "order.created,order.paid" || o["version"] != "2" {
		t.Errorf("history %s, order %v", got, o)
	}
	if d, err := queue.QueueDepth(ctx, sys.sqs, urls.DeadLetter); err != nil || d.Visible+d.InFlight != 0 {
		t.Errorf("dead-letter queue: %+v %v\n%s", d, err, tail(proc.out.String(), 20))
	}
}
