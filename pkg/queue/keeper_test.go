package queue_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/omsdev/oms/pkg/queue"
)

// When the endpoint loses a queue, the keeper re-creates it (creation
// allowed) or reports it (not allowed).
func TestKeeperRecreatesLostQueues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, client, urls := testQueues(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	k := queue.NewKeeper(client, c, urls, log)
	if err := k.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := client.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(urls.Command)}); err != nil {
		t.Fatal(err)
	}
	noCreate := c
	noCreate.CreateQueues = false
	if err := queue.NewKeeper(client, noCreate, urls, log).Check(ctx); err == nil {
		t.Fatal("a lost queue went unreported where creating queues is not allowed")
	}
	if err := k.Check(ctx); err != nil {
		t.Fatalf("re-create: %v", err)
	}
	if _, err := client.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl: aws.String(k.URLs().Command), MessageBody: aws.String("x"),
		MessageGroupId: aws.String("g"), MessageDeduplicationId: aws.String("d"),
	}); err != nil {
		t.Fatalf("send to the re-created queue: %v", err)
	}
}
