package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill"
	wsqs "github.com/ThreeDotsLabs/watermill-aws/sqs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// Metadata keys that carry FIFO ids from a Watermill message to SQS. They
// become MessageGroupId and MessageDeduplicationId, not message attributes,
// so they do not count against SQS's limit of 10 attributes.
const (
	MetaGroupID = "oms_group_id"
	MetaDedupID = "oms_dedup_id"
	// MetaReceiptHandle is set on received messages so a consumer can hand
	// one back (ChangeMessageVisibility) instead of waiting out its
	// visibility timeout. It is never sent.
	MetaReceiptHandle = "oms_receipt_handle"
	// MetaMessageID is the SQS message id of a received message: unique per
	// message sent, the same on every redelivery. It is never sent.
	MetaMessageID = "oms_message_id"
	// MetaReceiveCount is how often SQS has handed the message out,
	// this time included (when the receive asked for it). It is never sent.
	MetaReceiveCount = "oms_receive_count"
)

// ErrNoGroupID: a FIFO message without a group id. Real SQS rejects it;
// goaws accepts it, so this check keeps local runs honest.
var ErrNoGroupID = errors.New("FIFO message without " + MetaGroupID + " metadata")

// FIFOSendInput is watermill-aws's GenerateSendMessageInput for FIFO
// queues: the group id and deduplication id come from the message's
// metadata (the deduplication id defaults to the message UUID, which the
// services set to a stable id such as the command id).
func FIFOSendInput(ctx context.Context, url wsqs.QueueURL, m *types.Message) (*sqs.SendMessageInput, error) {
	in, err := wsqs.GenerateSendMessageInputDefault(ctx, url, m)
	if err != nil {
		return nil, err
	}
	attrs := make(map[string]types.MessageAttributeValue, len(m.MessageAttributes))
	for k, v := range m.MessageAttributes {
		attrs[k] = v
	}
	group := attrs[MetaGroupID].StringValue
	if aws.ToString(group) == "" {
		return nil, ErrNoGroupID
	}
	dedup := attrs[MetaDedupID].StringValue
	if aws.ToString(dedup) == "" {
		dedup = attrs[wsqs.UUIDAttribute].StringValue
	}
	delete(attrs, MetaGroupID)
	delete(attrs, MetaDedupID)
	delete(attrs, MetaReceiptHandle)
	delete(attrs, MetaMessageID)
	delete(attrs, MetaReceiveCount)
	in.MessageAttributes = attrs
	in.MessageGroupId, in.MessageDeduplicationId = group, dedup
	if len(attrs) > 10 {
		return nil, fmt.Errorf("message has %d attributes; SQS allows 10", len(attrs))
	}
	return in, nil
}

// NewPublisher returns a watermill-aws publisher that sends one message per
// call to FIFO queues named by topic. The services use it for the
// dead-letter and notification queues; ingest batches with BatchPublisher.
func NewPublisher(ctx context.Context, c Config, logger watermill.LoggerAdapter) (*wsqs.Publisher, error) {
	cfg, opts, err := c.AWS(ctx)
	if err != nil {
		return nil, err
	}
	return wsqs.NewPublisher(wsqs.PublisherConfig{
		AWSConfig:                   cfg,
		OptFns:                      opts,
		DoNotCreateQueueIfNotExists: true,
		GenerateSendMessageInput:    FIFOSendInput,
	}, logger)
}

// receiptUnmarshaler is watermill-aws's default, plus the receipt handle
// and the SQS message id.
type receiptUnmarshaler struct {
	wsqs.DefaultMarshalerUnmarshaler
}

func (u receiptUnmarshaler) Unmarshal(m *types.Message) (*message.Message, error) {
	msg, err := u.DefaultMarshalerUnmarshaler.Unmarshal(m)
	if err == nil && m.ReceiptHandle != nil {
		msg.Metadata.Set(MetaReceiptHandle, *m.ReceiptHandle)
	}
	if err == nil && m.MessageId != nil {
		msg.Metadata.Set(MetaMessageID, *m.MessageId)
	}
	if n, ok := m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)]; err == nil && ok {
		msg.Metadata.Set(MetaReceiveCount, n)
	}
	return msg, err
}
