package outbox_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/google/uuid"

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
	m.Metadata.Set(queue.MetaGroupID, group)
	return m
}

// Only committed writes are relayed, each exactly once, and relayed rows
// leave the outbox.
func TestRelaySendsCommittedWritesOnly(t *testing.T) {
	ctx := context.Background()
	db := dbtest.New(t)
	name := "t" + uuid.NewString()[:8] + ".fifo"
	c := queue.Config{Endpoint: emulator.URL, Region: "us-east-1"}
	client, _ := queue.NewClient(ctx, c)
	out, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}

	for i, commit := range []bool{true, false, true} {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := outbox.Publish(ctx, tx.Tx, name, note(fmt.Sprintf("%d-%v", i, commit), "g")); err != nil {
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

	pub, err := queue.NewPublisher(ctx, c, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	relay, err := outbox.NewRelay(db.DB, pub, outbox.RelayConfig{PollInterval: 20 * time.Millisecond, BatchSize: 10}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	defer func() { stop(); relay.Close(); <-done }()

	got := map[string]int{}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && len(got) < 2 {
		r, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: out.QueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range r.Messages {
			got[aws.ToString(m.Body)]++
			client.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: out.QueueUrl, ReceiptHandle: m.ReceiptHandle})
		}
	}
	want := map[string]int{`{"id":"0-true"}`: 1, `{"id":"2-true"}`: 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("relayed %v, want %v", got, want)
	}
	// Relayed rows are deleted on ack.
	deadline = time.Now().Add(5 * time.Second)
	for {
		n, _, err := outbox.Backlog(ctx, db.DB)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d rows", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
