package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// URLs are the queue URLs the services use.
type URLs struct {
	Command, DeadLetter, Notification string
}

// EnsureQueues creates the queues if c.CreateQueues, otherwise looks them
// up; either way it returns their URLs. The command queue redrives to the
// dead-letter queue after MaxReceiveCount receives, a second line of
// defence behind the processor's own poison handling.
func EnsureQueues(ctx context.Context, client *sqs.Client, c Config) (URLs, error) {
	if !c.CreateQueues {
		var u URLs
		for _, q := range []struct {
			name string
			url  *string
		}{{c.CommandQueue, &u.Command}, {c.DeadLetterQueue, &u.DeadLetter}, {c.NotificationQueue, &u.Notification}} {
			out, err := client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(q.name)})
			if err != nil {
				return URLs{}, fmt.Errorf("look up queue %s: %w", q.name, err)
			}
			*q.url = aws.ToString(out.QueueUrl)
		}
		return u, nil
	}
	fifo := map[string]string{
		"FifoQueue":                 "true",
		"ContentBasedDeduplication": "false",
		"VisibilityTimeout":         strconv.Itoa(int(c.VisibilityTimeout / time.Second)),
		"MessageRetentionPeriod":    strconv.Itoa(14 * 24 * 3600),
	}
	var u URLs
	var err error
	if u.DeadLetter, err = createQueue(ctx, client, c.DeadLetterQueue, fifo); err != nil {
		return URLs{}, err
	}
	attrs, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(u.DeadLetter), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn},
	})
	if err != nil {
		return URLs{}, fmt.Errorf("dead-letter queue ARN: %w", err)
	}
	redrive, _ := json.Marshal(map[string]string{
		"deadLetterTargetArn": attrs.Attributes[string(types.QueueAttributeNameQueueArn)],
		"maxReceiveCount":     strconv.Itoa(c.MaxReceiveCount),
	})
	cmd := map[string]string{"RedrivePolicy": string(redrive)}
	for k, v := range fifo {
		cmd[k] = v
	}
	if u.Command, err = createQueue(ctx, client, c.CommandQueue, cmd); err != nil {
		return URLs{}, err
	}
	if u.Notification, err = createQueue(ctx, client, c.NotificationQueue, fifo); err != nil {
		return URLs{}, err
	}
	return u, nil
}

func createQueue(ctx context.Context, client *sqs.Client, name string, attrs map[string]string) (string, error) {
	out, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: attrs})
	if err != nil {
		return "", fmt.Errorf("create queue %s: %w", name, err)
	}
	return aws.ToString(out.QueueUrl), nil
}

// VisibilityTimeout reads a queue's visibility timeout.
func VisibilityTimeout(ctx context.Context, client *sqs.Client, url string) (time.Duration, error) {
	out, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameVisibilityTimeout},
	})
	if err != nil {
		return 0, fmt.Errorf("queue attributes: %w", err)
	}
	s, err := strconv.Atoi(out.Attributes[string(types.QueueAttributeNameVisibilityTimeout)])
	if err != nil {
		return 0, fmt.Errorf("queue visibility timeout %q: %w", out.Attributes[string(types.QueueAttributeNameVisibilityTimeout)], err)
	}
	return time.Duration(s) * time.Second, nil
}

// Depth is a queue's backlog as SQS reports it (approximate).
type Depth struct {
	Visible, InFlight int
}

// QueueDepth reads a queue's approximate message counts.
func QueueDepth(ctx context.Context, client *sqs.Client, url string) (Depth, error) {
	out, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url),
		AttributeNames: []types.QueueAttributeName{
			types.QueueAttributeNameApproximateNumberOfMessages, types.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
		},
	})
	if err != nil {
		return Depth{}, fmt.Errorf("queue attributes: %w", err)
	}
	v, _ := strconv.Atoi(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)])
	nv, _ := strconv.Atoi(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
	return Depth{Visible: v, InFlight: nv}, nil
}
