package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/uuid"
	"github.com/uptrace/bun/driver/pgdriver"

	"github.com/omsdev/oms/pkg/orderstore"
)

// orderColumns is every column of orders, as the store reads them.
const orderColumns = `"order_row"."id", "order_row"."customer_id", "order_row"."state", "order_row"."currency_code", "order_row"."subtotal_minor", "order_row"."total_minor", "order_row"."shipping_address", "order_row"."payment_reference", "order_row"."payment_amount_minor", "order_row"."pay_time", "order_row"."carrier", "order_row"."tracking_number", "order_row"."ship_time", "order_row"."deliver_time", "order_row"."cancel_reason", "order_row"."cancel_time", "order_row"."refund_due", "order_row"."rejection_reason", "order_row"."created_by", "order_row"."version", "order_row"."last_event_seq", "order_row"."create_time", "order_row"."update_time"`

// getScript is GetOrder's reads, by primary key: the order, then its
// lines. Ids are picked at random from the orders the run created (listed
// in omsbench_ids; the lookup is one more index probe inside the same
// statement).
const getScript = `\set n random(1, :ids)
SELECT ` + orderColumns + ` FROM "orders" AS "order_row" WHERE (id = (SELECT id FROM omsbench_ids WHERE n = :n));
SELECT "order_id", "line_no", "sku", "name", "quantity", "unit_price_minor" FROM "order_line_items" WHERE order_id = (SELECT id FROM omsbench_ids WHERE n = :n) ORDER BY line_no;
`

// listScript is ListOrders' first page of 50 for the storefront: a page
// plus one row to know there is more, and the page's lines.
const listScript = `SELECT ` + orderColumns + ` FROM "orders" AS "order_row" WHERE created_by = :owner ORDER BY create_time DESC, id DESC LIMIT 51;
SELECT "order_id", "line_no", "sku", "name", "quantity", "unit_price_minor" FROM "order_line_items" WHERE order_id IN (SELECT id FROM orders WHERE created_by = :owner ORDER BY create_time DESC, id DESC LIMIT 50) ORDER BY order_id, line_no;
`

// pgbenchRun says what pgbench runs.
type pgbenchRun struct {
	URL      string
	Schema   string // search_path; empty for the default
	Script   string
	Clients  int
	Seconds  int
	Prepared bool              // -M prepared
	Vars     map[string]string // -D name=value
}

var (
	tpsRE    = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	failedRE = regexp.MustCompile(`number of failed transactions: ([0-9]+)`)
)

// run runs pgbench and returns its transactions per second. Any failed
// transaction is an error: a ceiling must be of the statements that work.
func (r pgbenchRun) run(ctx context.Context) (float64, error) {
	f, err := os.CreateTemp("", "omsbench-*.sql")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(r.Script); err != nil {
		return 0, err
	}
	f.Close()
	args := []string{"-n", "-c", strconv.Itoa(r.Clients), "-j", strconv.Itoa(min(r.Clients, 4)), "-T", strconv.Itoa(max(r.Seconds, 1))}
	if r.Prepared {
		args = append(args, "-M", "prepared")
	}
	for k, v := range r.Vars {
		args = append(args, "-D", k+"="+v)
	}
	args = append(args, "-f", f.Name(), r.URL)
	cmd := exec.CommandContext(ctx, "pgbench", args...)
	cmd.Env = os.Environ()
	if r.Schema != "" {
		cmd.Env = append(cmd.Env, "PGOPTIONS=-c search_path="+r.Schema)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("pgbench: %v: %s", err, lastLines(out.String(), 8))
	}
	if m := failedRE.FindStringSubmatch(out.String()); m != nil && m[1] != "0" {
		return 0, fmt.Errorf("pgbench: %s failed transactions: %s", m[1], lastLines(out.String(), 8))
	}
	m := tpsRE.FindStringSubmatch(out.String())
	if m == nil {
		return 0, fmt.Errorf("pgbench printed no tps: %s", lastLines(out.String(), 8))
	}
	return strconv.ParseFloat(m[1], 64)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// createCeiling runs the create transaction in a scratch schema of the
// bench database (dropped afterwards), so the orders the run counts are
// only the processor's.
func (s *stack) createCeiling(ctx context.Context, script string, clients, seconds int) (float64, error) {
	const schema = "omsbench_ceiling"
	if _, err := s.db.ExecContext(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE; CREATE SCHEMA "+schema); err != nil {
		return 0, fmt.Errorf("scratch schema: %w", err)
	}
	defer s.db.ExecContext(context.WithoutCancel(ctx), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
	db := orderstore.Open(s.dbURL, pgdriver.WithConnParams(map[string]any{"search_path": schema}))
	defer db.Close()
	if _, err := orderstore.Migrate(ctx, db); err != nil {
		return 0, fmt.Errorf("migrate the scratch schema: %w", err)
	}
	return pgbenchRun{URL: s.dbURL, Schema: schema, Script: script, Clients: clients, Seconds: seconds}.run(ctx)
}

// sqsCeiling is the endpoint's raw throughput with the bare SDK client and
// no project code, on a FIFO queue of its own (deleted afterwards): n
// messages sent with SendMessageBatch(10) from senders goroutines, then
// received 10 at a time and removed with DeleteMessageBatch by receivers.
// Each message has a group of its own, as each create has.
type sqsCeiling struct {
	Messages         int
	Senders          int
	Receivers        int
	SendPerSec       float64
	ReceivePerSec    float64
	Sent, Received   int64
	SendSecs, RcvSec float64
}

func (s *stack) measureSQS(ctx context.Context, n, senders, receivers int, limit time.Duration) (sqsCeiling, error) {
	res := sqsCeiling{Messages: n, Senders: senders, Receivers: receivers}
	out, err := s.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName:  aws.String("omsbench-raw-" + uuid.NewString()[:8] + ".fifo"),
		Attributes: map[string]string{"FifoQueue": "true", "VisibilityTimeout": "30"},
	})
	if err != nil {
		return res, fmt.Errorf("create queue: %w", err)
	}
	qurl := out.QueueUrl
	defer s.sqs.DeleteQueue(context.WithoutCancel(ctx), &sqs.DeleteQueueInput{QueueUrl: qurl})
	// The size and attributes of a command message.
	body := aws.String(`{"command_id":"` + uuid.NewString() + `","order_id":"` + uuid.NewString() + `","create":{"customer_id":"c-1","currency_code":"USD","line_items":[{"sku":"SKU-1","name":"Mug","quantity":2,"unit_price_minor":"1200"}]},"actor":{"id":"storefront"},"issue_time":"2026-11-26T00:00:00Z"}`)
	attrs := map[string]types.MessageAttributeValue{
		"_watermill_message_uuid": {DataType: aws.String("String"), StringValue: aws.String(uuid.NewString())},
		"correlation_id":          {DataType: aws.String("String"), StringValue: aws.String("corr-" + uuid.NewString())},
	}

	sctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var next, sent atomic.Int64
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) {
		if sctx.Err() == nil {
			errOnce.Do(func() { firstErr = err })
		}
		cancel()
	}
	var wg sync.WaitGroup
	start := time.Now()
	for range senders {
		wg.Go(func() {
			for sctx.Err() == nil {
				from := next.Add(10) - 10
				if from >= int64(n) {
					return
				}
				k := min(10, int64(n)-from)
				entries := make([]types.SendMessageBatchRequestEntry, k)
				for j := range entries {
					id := strconv.FormatInt(from+int64(j), 10)
					entries[j] = types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(j)), MessageBody: body,
						MessageAttributes: attrs, MessageGroupId: aws.String(id), MessageDeduplicationId: aws.String(id)}
				}
				if _, err := s.sqs.SendMessageBatch(sctx, &sqs.SendMessageBatchInput{QueueUrl: qurl, Entries: entries}); err != nil {
					fail(err)
					return
				}
				sent.Add(k)
			}
		})
	}
	wg.Wait()
	res.Sent, res.SendSecs = sent.Load(), time.Since(start).Seconds()
	res.SendPerSec = float64(res.Sent) / res.SendSecs
	if firstErr != nil {
		return res, fmt.Errorf("send: %w", firstErr)
	}

	rctx, rcancel := context.WithTimeout(ctx, limit)
	defer rcancel()
	var received, lastAt atomic.Int64 // lastAt: when the last message was deleted
	start = time.Now()
	for range receivers {
		wg.Go(func() {
			for rctx.Err() == nil && received.Load() < res.Sent {
				out, err := s.sqs.ReceiveMessage(rctx, &sqs.ReceiveMessageInput{QueueUrl: qurl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
				if err != nil {
					if rctx.Err() == nil {
						errOnce.Do(func() { firstErr = err })
					}
					return
				}
				if len(out.Messages) == 0 {
					continue
				}
				del := make([]types.DeleteMessageBatchRequestEntry, len(out.Messages))
				for j, m := range out.Messages {
					del[j] = types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(j)), ReceiptHandle: m.ReceiptHandle}
				}
				if _, err := s.sqs.DeleteMessageBatch(rctx, &sqs.DeleteMessageBatchInput{QueueUrl: qurl, Entries: del}); err != nil {
					if rctx.Err() == nil {
						errOnce.Do(func() { firstErr = err })
					}
					return
				}
				if received.Add(int64(len(out.Messages))) >= res.Sent {
					lastAt.CompareAndSwap(0, int64(time.Since(start)))
					rcancel() // the others' long polls would find nothing
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Duration(lastAt.Load())
	if elapsed == 0 {
		elapsed = time.Since(start)
	}
	res.Received, res.RcvSec = received.Load(), elapsed.Seconds()
	res.ReceivePerSec = float64(res.Received) / res.RcvSec
	if firstErr != nil {
		return res, fmt.Errorf("receive: %w", firstErr)
	}
	if res.Received < res.Sent {
		return res, errors.New("not every message sent was received within the time limit")
	}
	return res, nil
}
