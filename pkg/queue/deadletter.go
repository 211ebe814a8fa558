package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/uuid"
)

// AttrPoisonedAt is the time (RFC 3339) the processor dead-lettered a
// message. SQS's SentTimestamp would say the same, but goaws reports the
// receive time there.
const AttrPoisonedAt = "poisoned_at"

// poisonAttrs are the attributes dead-lettering adds. A redriven message
// leaves them behind: it is a command again, and if it fails again it gets
// fresh ones (SQS allows 10 attributes).
var poisonAttrs = []string{
	middleware.ReasonForPoisonedKey, middleware.PoisonedTopicKey,
	middleware.PoisonedHandlerKey, middleware.PoisonedSubscriberKey, AttrPoisonedAt,
}

// DeadLetterDedupID is the dead-letter queue's deduplication id for the
// command message messageID failing with reason. It is unique per failed
// message: two commands sharing a request id (which the command's own
// deduplication id is built from) both reach the queue, while one message
// dead-lettered twice for the same reason within SQS's five-minute window
// is kept once. Without a message id it is random.
func DeadLetterDedupID(messageID, reason string) string {
	if messageID == "" {
		return uuid.NewString()
	}
	return hashID("dead-letter", messageID, reason)
}

// RedriveDedupID is the command queue's deduplication id for redriving the
// dead-letter message dlqMessageID: redriving it twice within five minutes
// (say after a crash between the send and the delete) enqueues it once.
func RedriveDedupID(dlqMessageID string) string {
	return hashID("redrive", dlqMessageID)
}

func hashID(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)) // 64 characters; SQS allows 128
}

// DeadLetterAPI is the part of the SQS client the dead-letter tools use.
type DeadLetterAPI interface {
	ReceiveMessage(context.Context, *sqs.ReceiveMessageInput, ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	ChangeMessageVisibility(context.Context, *sqs.ChangeMessageVisibilityInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
	SendMessage(context.Context, *sqs.SendMessageInput, ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
	DeleteMessage(context.Context, *sqs.DeleteMessageInput, ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
}

// Peek receives every message SQS will hand out from the queue at url, up
// to limit, and keeps them in flight for hold so that each is seen once.
// The caller must Redrive or ReleaseAll each one. SQS FIFO hands out no
// message of a group while an earlier one of it is in flight, so a group
// shows only its first messages (up to 10 on real SQS) until those are
// deleted.
func Peek(ctx context.Context, api DeadLetterAPI, url string, hold time.Duration, limit int) ([]types.Message, error) {
	var out []types.Message
	seen := map[string]bool{}
	for len(out) < limit {
		r, err := api.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:                    aws.String(url),
			MaxNumberOfMessages:         int32(min(10, limit-len(out))),
			VisibilityTimeout:           int32(max(hold/time.Second, 1)),
			WaitTimeSeconds:             1,
			MessageAttributeNames:       []string{"All"},
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
		})
		if err != nil {
			return out, fmt.Errorf("receive from %s: %w", url, err)
		}
		fresh := 0
		for _, m := range r.Messages {
			// One seen again outlived hold: stop rather than loop.
			if id := aws.ToString(m.MessageId); !seen[id] {
				seen[id] = true
				out = append(out, m)
				fresh++
			}
		}
		if fresh == 0 {
			return out, nil
		}
	}
	return out, nil
}

// ReleaseAll makes messages received by Peek visible again at once.
func ReleaseAll(ctx context.Context, api DeadLetterAPI, url string, msgs []types.Message) error {
	var errs []error
	for _, m := range msgs {
		_, err := api.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
			QueueUrl: aws.String(url), ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: 0,
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("release %s: %w", aws.ToString(m.MessageId), err))
		}
	}
	return errors.Join(errs...)
}

// RedriveInput is the command-queue message for the dead-letter message m:
// the same body and attributes, less the dead-lettering ones, in group.
func RedriveInput(toURL string, m types.Message, group string) *sqs.SendMessageInput {
	attrs := make(map[string]types.MessageAttributeValue, len(m.MessageAttributes))
	for k, v := range m.MessageAttributes {
		attrs[k] = v
	}
	for _, k := range poisonAttrs {
		delete(attrs, k)
	}
	return &sqs.SendMessageInput{
		QueueUrl: aws.String(toURL), MessageBody: m.Body, MessageAttributes: attrs,
		MessageGroupId: aws.String(group), MessageDeduplicationId: aws.String(RedriveDedupID(aws.ToString(m.MessageId))),
	}
}

// Redrive sends the dead-letter message m (received by Peek from fromURL)
// to toURL in group, then deletes it from fromURL. A failed delete leaves
// it in the dead-letter queue; redriving it again within five minutes is
// deduplicated by SQS.
func Redrive(ctx context.Context, api DeadLetterAPI, fromURL, toURL string, m types.Message, group string) error {
	if group == "" {
		return ErrNoGroupID
	}
	if _, err := api.SendMessage(ctx, RedriveInput(toURL, m, group)); err != nil {
		return fmt.Errorf("send %s: %w", aws.ToString(m.MessageId), err)
	}
	_, err := api.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(fromURL), ReceiptHandle: m.ReceiptHandle})
	if err != nil {
		return fmt.Errorf("sent %s, but could not delete it from the dead-letter queue (redriving it again is harmless): %w", aws.ToString(m.MessageId), err)
	}
	return nil
}

// GroupID is a received message's group, where the endpoint reports it
// (real SQS does; goaws does not).
func GroupID(m types.Message) string {
	return m.Attributes[string(types.MessageSystemAttributeNameMessageGroupId)]
}

// PoisonedAt is when a message was dead-lettered: AttrPoisonedAt if the
// processor put it there, else when SQS says it was sent (moved there by
// SQS after maxReceiveCount receives); zero if neither is known.
func PoisonedAt(m types.Message) time.Time {
	if v, ok := m.MessageAttributes[AttrPoisonedAt]; ok {
		if t, err := time.Parse(time.RFC3339Nano, aws.ToString(v.StringValue)); err == nil {
			return t
		}
	}
	if ms, err := strconv.ParseInt(m.Attributes[string(types.MessageSystemAttributeNameSentTimestamp)], 10, 64); err == nil {
		return time.UnixMilli(ms)
	}
	return time.Time{}
}

// AttributesAPI is the part of the SQS client that reads queue attributes.
type AttributesAPI interface {
	GetQueueAttributes(context.Context, *sqs.GetQueueAttributesInput, ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
}

// MaxReceiveCount is how many receives SQS allows a message of the queue
// at url before it moves it to the dead-letter queue: its RedrivePolicy's
// maxReceiveCount, read from the queue itself, since the infrastructure
// code rather than SQS_MAX_RECEIVE_COUNT sets it when the services do not
// create the queues. 0 when the queue has no redrive policy.
func MaxReceiveCount(ctx context.Context, api AttributesAPI, url string) (int, error) {
	out, err := api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameRedrivePolicy},
	})
	if err != nil {
		return 0, fmt.Errorf("queue attributes: %w", err)
	}
	raw := out.Attributes[string(types.QueueAttributeNameRedrivePolicy)]
	if raw == "" {
		return 0, nil
	}
	// SQS documents the count as a number; the services write it as a
	// string, which SQS accepts too.
	var p struct {
		MaxReceiveCount json.RawMessage `json:"maxReceiveCount"`
	}
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		return 0, fmt.Errorf("redrive policy %q: %w", raw, err)
	}
	n, err := strconv.Atoi(strings.Trim(string(p.MaxReceiveCount), `"`))
	if err != nil || n < 1 {
		return 0, fmt.Errorf("redrive policy %q: no maxReceiveCount", raw)
	}
	return n, nil
}
