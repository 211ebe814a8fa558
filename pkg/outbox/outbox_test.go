package outbox_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"maps"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsqs "github.com/ThreeDotsLabs/watermill-aws/sqs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/outbox"
	"github.com/omsdev/oms/pkg/queue"
	"github.com/omsdev/oms/pkg/sqslocal"
)

var emulator *sqslocal.Emulator

func TestMain(m *testing.M) {
	var err error
	if emulator, err = sqslocal.Start("127.0.0.1:0", 100*time.Millisecond); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	emulator.Close()
	os.Exit(code)
}

func note(id, group string) *message.Message {
	m := message.NewMessage(id, []byte(`{"id":"`+id+`"}`))
	if group != "" {
		m.Metadata.Set(queue.MetaGroupID, group)
	}
	m.Metadata.Set(queue.MetaDedupID, "dedup-"+id)
	return m
}

// fifo is a FIFO queue of its own on the emulator.
type fifo struct {
	cfg    queue.Config
	client *sqs.Client
	name   string
	url    string
}

func newFIFO(t *testing.T) fifo { return newFIFOWith(t, nil) }

// newFIFOWith creates the queue with attrs.
func newFIFOWith(t *testing.T, attrs map[string]string) fifo {
	t.Helper()
	ctx := context.Background()
	f := fifo{cfg: queue.Config{Endpoint: emulator.URL, Region: "us-east-1"}, name: "t" + strings.ReplaceAll(uuid.NewString()[:8], "-", "") + ".fifo"}
	var err error
	if f.client, err = queue.NewClient(ctx, f.cfg); err != nil {
		t.Fatal(err)
	}
	out, err := f.client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(f.name), Attributes: attrs})
	if err != nil {
		t.Fatal(err)
	}
	f.url = aws.ToString(out.QueueUrl)
	return f
}

func (f fifo) publisher(t *testing.T) message.Publisher {
	t.Helper()
	pub, err := queue.NewPublisher(context.Background(), f.cfg, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// drain receives (and deletes) until want distinct bodies have arrived,
// and returns how often each arrived.
func (f fifo) drain(t *testing.T, want int) map[string]int {
	t.Helper()
	ctx := context.Background()
	got := map[string]int{}
	deadline := time.Now().Add(60 * time.Second)
	for len(got) < want && time.Now().Before(deadline) {
		r, err := f.client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(f.url), MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range r.Messages {
			got[aws.ToString(m.Body)]++
			if _, err := f.client.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(f.url), ReceiptHandle: m.ReceiptHandle}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(got) < want {
		t.Fatalf("the queue delivered %d distinct messages, want %d", len(got), want)
	}
	return got
}

// ledger records what a destination accepted: how often each message, and
// the order in which each group's messages first arrived.
type ledger struct {
	mu    sync.Mutex
	count map[string]int
	first map[string][]string // group -> UUIDs
	msgs  map[string]*message.Message
}

func newLedger() *ledger {
	return &ledger{count: map[string]int{}, first: map[string][]string{}, msgs: map[string]*message.Message{}}
}

func (l *ledger) add(m *message.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count[m.UUID]++
	if l.count[m.UUID] == 1 {
		g := m.Metadata.Get(queue.MetaGroupID)
		l.first[g] = append(l.first[g], m.UUID)
		c := message.NewMessage(m.UUID, bytes.Clone(m.Payload))
		c.Metadata = maps.Clone(m.Metadata)
		l.msgs[m.UUID] = c
	}
}

func (l *ledger) delivered() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.count)
}

// duplicates are the messages accepted more than once.
func (l *ledger) duplicates() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var d []string
	for id, n := range l.count {
		if n > 1 {
			d = append(d, id)
		}
	}
	return d
}

func (l *ledger) order(group string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.first[group]...)
}

// faulty is the destination for failure injection: it fails the messages
// fail picks, otherwise hands them to the real publisher next (if any) and
// records each one it accepted.
type faulty struct {
	mu     sync.Mutex
	next   message.Publisher
	fail   func(*message.Message) error
	before func(*message.Message)
	after  func(*message.Message)
	l      *ledger
}

func (f *faulty) set(fn func(*faulty)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *faulty) Publish(topic string, msgs ...*message.Message) error {
	f.mu.Lock()
	next, fail, before, after := f.next, f.fail, f.before, f.after
	f.mu.Unlock()
	for _, m := range msgs {
		if before != nil {
			before(m)
		}
		if fail != nil {
			if err := fail(m); err != nil {
				return err
			}
		}
		if next != nil {
			if err := next.Publish(topic, m); err != nil {
				return err
			}
		}
		f.l.add(m)
		if after != nil {
			after(m)
		}
	}
	return nil
}

func (f *faulty) Close() error { return nil }

// write commits msgs to the outbox in one transaction.
func write(t *testing.T, db *bun.DB, destination string, msgs ...*message.Message) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := outbox.Publish(ctx, tx.Tx, destination, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// start runs relay until the test ends.
func start(t *testing.T, db *sql.DB, out message.Publisher, cfg outbox.RelayConfig) *outbox.Relay {
	t.Helper()
	relay, err := outbox.NewRelay(db, out, cfg, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- relay.Run(context.Background()) }()
	t.Cleanup(func() {
		relay.Close()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})
	return relay
}

// eventually polls cond for up to a minute: generous, for slow machines.
func eventually(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stats(t *testing.T, db *sql.DB) outbox.Stats {
	t.Helper()
	s, err := outbox.ReadStats(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Only committed writes are relayed, each once, and relayed rows leave the
// outbox.
func TestRelaySendsCommittedWritesOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	q := newFIFO(t)

	for i, commit := range []bool{true, false, true} {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := outbox.Publish(ctx, tx.Tx, q.name, note(fmt.Sprintf("%d-%v", i, commit), "g")); err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	start(t, db.DB, q.publisher(t), outbox.RelayConfig{PollInterval: 20 * time.Millisecond, BatchSize: 10})

	got := q.drain(t, 2)
	want := map[string]int{`{"id":"0-true"}`: 1, `{"id":"2-true"}`: 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("relayed %v, want %v", got, want)
	}
	eventually(t, "the outbox to empty", func() (bool, error) {
		n, _, err := outbox.Backlog(ctx, db.DB)
		return n == 0, err
	})
}

// The destination gets a Watermill message with the written UUID, payload
// (any bytes) and metadata, which the FIFO publisher turns into the group
// and deduplication ids.
func TestRelayKeepsUUIDPayloadAndMetadata(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	q := newFIFO(t)

	binary := message.NewMessage("bin-1", []byte{0, 0xff, '\'', '\\', 'x', 0x80})
	binary.Metadata = message.Metadata{queue.MetaGroupID: "g", "quote": `it's "q" \x00`}
	empty := message.NewMessage("empty-1", nil)
	empty.Metadata = nil
	text := note("text-1", "g")
	text.Metadata.Set("event_type", "order.created")
	write(t, db, q.name, binary, empty)
	write(t, db, q.name, text)

	l := newLedger()
	// Only the text message goes on to SQS: its body must be a string.
	real := q.publisher(t)
	start(t, db.DB, &faulty{l: l, after: func(m *message.Message) {
		if m.UUID == "text-1" {
			if err := real.Publish(q.name, m); err != nil {
				t.Errorf("publish to SQS: %v", err)
			}
		}
	}}, outbox.RelayConfig{PollInterval: 20 * time.Millisecond})
	eventually(t, "three deliveries", func() (bool, error) { return l.delivered() == 3, nil })

	for _, want := range []*message.Message{binary, empty, text} {
		got := l.msgs[want.UUID]
		wantMeta := want.Metadata
		if wantMeta == nil {
			wantMeta = message.Metadata{}
		}
		if !bytes.Equal(got.Payload, want.Payload) || !maps.Equal(got.Metadata, wantMeta) {
			t.Errorf("%s: got payload %q metadata %v, want %q %v", want.UUID, got.Payload, got.Metadata, want.Payload, wantMeta)
		}
	}
	r, err := q.client.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{
		QueueUrl: aws.String(q.url), WaitTimeSeconds: 5, MessageAttributeNames: []string{"All"},
	})
	if err != nil || len(r.Messages) != 1 {
		t.Fatalf("receive: %v, %d messages", err, len(r.Messages))
	}
	m := r.Messages[0]
	if aws.ToString(m.Body) != `{"id":"text-1"}` ||
		aws.ToString(m.MessageAttributes[wsqs.UUIDAttribute].StringValue) != "text-1" ||
		aws.ToString(m.MessageAttributes["event_type"].StringValue) != "order.created" {
		t.Errorf("SQS got %s with %v", aws.ToString(m.Body), m.MessageAttributes)
	}
	if _, ok := m.MessageAttributes[queue.MetaGroupID]; ok {
		t.Errorf("the group id went as an attribute: %v", m.MessageAttributes)
	}
}
