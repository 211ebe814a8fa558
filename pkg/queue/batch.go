package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	wsqs "github.com/ThreeDotsLabs/watermill-aws/sqs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
)

// SendAPI is the part of the SQS client the batch publisher uses.
type SendAPI interface {
	SendMessageBatch(context.Context, *sqs.SendMessageBatchInput, ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
	SendMessage(context.Context, *sqs.SendMessageInput, ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
}

// BatchConfig tunes coalescing.
type BatchConfig struct {
	// MaxEntries per SendMessageBatch call: 1 to 10.
	MaxEntries int
	// Linger is how long the first message of a batch waits for company.
	Linger time.Duration
	// MaxInFlight bounds concurrent SendMessageBatch calls.
	MaxInFlight int
}

// maxBatchBytes is SQS's limit on the total payload of one batch call.
const maxBatchBytes = 256 * 1024

// SendError is an entry SQS refused.
type SendError struct {
	Code, Message string
	// SenderFault: the request itself is bad; resending will not help.
	SenderFault bool
}

func (e *SendError) Error() string {
	return fmt.Sprintf("sqs refused message: %s: %s", e.Code, e.Message)
}

// BatchPublisher is a Watermill publisher for one FIFO queue that coalesces
// concurrent Publish calls into SendMessageBatch calls. Publish returns only
// once SQS has confirmed each of its messages: a caller never reports
// success for a message that is not durably enqueued.
//
// Real FIFO queues allow 300 calls/s per API action; batches of 10 reach
// 3,000 messages/s (more in high-throughput mode).
type BatchPublisher struct {
	api   SendAPI
	topic string
	url   string
	cfg   BatchConfig

	marshaler wsqs.Marshaler
	in        chan *entry
	sem       chan struct{}
	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

type entry struct {
	msgID string
	ctx   context.Context
	req   types.SendMessageBatchRequestEntry
	size  int
	done  chan error
}

// NewBatchPublisher publishes to the queue named topic at url.
func NewBatchPublisher(api SendAPI, topic, url string, cfg BatchConfig) (*BatchPublisher, error) {
	if cfg.MaxEntries < 1 || cfg.MaxEntries > 10 {
		return nil, fmt.Errorf("batch max entries %d: must be 1 to 10", cfg.MaxEntries)
	}
	if cfg.MaxInFlight < 1 {
		cfg.MaxInFlight = 1
	}
	p := &BatchPublisher{
		api: api, topic: topic, url: url, cfg: cfg,
		marshaler: wsqs.DefaultMarshalerUnmarshaler{},
		in:        make(chan *entry),
		sem:       make(chan struct{}, cfg.MaxInFlight),
		closing:   make(chan struct{}),
	}
	p.wg.Add(1)
	go p.loop()
	return p, nil
}

// ErrClosed: Publish after Close.
var ErrClosed = errors.New("publisher closed")

// Publish sends msgs to the queue and waits until SQS has accepted each one
// or the message's context ends. It fails if any message failed.
func (p *BatchPublisher) Publish(topic string, msgs ...*message.Message) error {
	if topic != p.topic {
		return fmt.Errorf("batch publisher for %s cannot publish to %s", p.topic, topic)
	}
	// Every message is checked before any is sent: a bad one fails the call
	// with nothing sent, rather than after its predecessors went out.
	entries := make([]*entry, len(msgs))
	for i, m := range msgs {
		e, err := p.newEntry(m)
		if err != nil {
			return err
		}
		entries[i] = e
	}
	var errs []error
	sent := entries
	for i, e := range entries {
		var err error
		select {
		case p.in <- e:
			continue
		case <-e.ctx.Done():
			err = e.ctx.Err()
		case <-p.closing:
			err = ErrClosed
		}
		// Those before it are on their way; name the ones that are not.
		for _, n := range entries[i:] {
			errs = append(errs, fmt.Errorf("message %s not sent: %w", n.msgID, err))
		}
		sent = entries[:i]
		break
	}
	for _, e := range sent {
		select {
		case err := <-e.done:
			if err != nil {
				errs = append(errs, fmt.Errorf("message %s: %w", e.msgID, err))
			}
		case <-e.ctx.Done():
			// It may still be sent; a retry with the same deduplication id is safe.
			errs = append(errs, fmt.Errorf("message %s: %w", e.msgID, e.ctx.Err()))
		}
	}
	return errors.Join(errs...)
}

// PublishEach sends msgs at once, without lingering, in calls of up to
// MaxEntries (fewer where SQS's 256 KiB per call would be passed), one
// after another in order, and returns each message's outcome: nil once
// SQS confirmed it. A message SQS would refuse fails with
// ErrInvalidMessage, unsent; the others are sent all the same.
func (p *BatchPublisher) PublishEach(msgs ...*message.Message) []error {
	errs := make([]error, len(msgs))
	type call struct {
		entries []*entry
		index   []int // of each entry in msgs
		size    int
	}
	var calls []*call
	for i, m := range msgs {
		e, err := p.newEntry(m)
		if err != nil {
			errs[i] = err
			continue
		}
		if len(calls) == 0 || len(calls[len(calls)-1].entries) == p.cfg.MaxEntries || calls[len(calls)-1].size+e.size > maxBatchBytes {
			calls = append(calls, &call{})
		}
		c := calls[len(calls)-1]
		c.entries, c.index, c.size = append(c.entries, e), append(c.index, i), c.size+e.size
	}
	for _, c := range calls {
		p.sendBatch(c.entries)
		for j, e := range c.entries {
			errs[c.index[j]] = <-e.done
		}
	}
	return errs
}

// ErrInvalidMessage: SQS would refuse the message as it is (no group id,
// too large, too many attributes); sending it again cannot help.
var ErrInvalidMessage = errors.New("message SQS would refuse")

func (p *BatchPublisher) newEntry(m *message.Message) (*entry, error) {
	sm, err := p.marshaler.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%w: marshal message %s: %w", ErrInvalidMessage, m.UUID, err)
	}
	in, err := FIFOSendInput(m.Context(), wsqs.QueueURL(p.url), sm)
	if err != nil {
		return nil, fmt.Errorf("%w: message %s: %w", ErrInvalidMessage, m.UUID, err)
	}
	size := len(aws.ToString(in.MessageBody))
	for k, v := range in.MessageAttributes {
		size += len(k) + len(aws.ToString(v.DataType)) + len(aws.ToString(v.StringValue)) + len(v.BinaryValue)
	}
	if size > maxBatchBytes {
		return nil, fmt.Errorf("%w: message %s is %d bytes; SQS allows %d", ErrInvalidMessage, m.UUID, size, maxBatchBytes)
	}
	return &entry{
		msgID: m.UUID,
		ctx:   m.Context(),
		size:  size,
		done:  make(chan error, 1),
		req: types.SendMessageBatchRequestEntry{
			MessageBody:            in.MessageBody,
			MessageAttributes:      in.MessageAttributes,
			MessageGroupId:         in.MessageGroupId,
			MessageDeduplicationId: in.MessageDeduplicationId,
		},
	}, nil
}

// loop gathers entries into batches: a batch is sent when it is full, when
// the next entry would push it past the size limit, or when its first entry
// has lingered long enough.
func (p *BatchPublisher) loop() {
	defer p.wg.Done()
	for {
		var first *entry
		select {
		case first = <-p.in:
		case <-p.closing:
			return
		}
		batch, size := []*entry{first}, first.size
		timer := time.NewTimer(p.cfg.Linger)
	gather:
		for len(batch) < p.cfg.MaxEntries {
			select {
			case e := <-p.in:
				if size+e.size > maxBatchBytes {
					p.send(batch)
					batch, size = nil, 0
				}
				batch, size = append(batch, e), size+e.size
			case <-timer.C:
				break gather
			case <-p.closing:
				break gather
			}
		}
		timer.Stop()
		p.send(batch)
	}
}

// send runs one batch call in the background, bounded by MaxInFlight.
func (p *BatchPublisher) send(batch []*entry) {
	p.sem <- struct{}{}
	p.wg.Add(1)
	go func() {
		defer func() { <-p.sem; p.wg.Done() }()
		p.sendBatch(batch)
	}()
}

func (p *BatchPublisher) sendBatch(batch []*entry) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	// An entry whose caller gave up has been answered with an error; do
	// not enqueue it behind the caller's back.
	live := batch[:0]
	for _, e := range batch {
		if err := e.ctx.Err(); err != nil {
			e.done <- err
			continue
		}
		live = append(live, e)
	}
	batch = live
	if len(batch) == 0 {
		return
	}
	if len(batch) == 1 {
		batch[0].done <- p.sendOne(ctx, batch[0])
		return
	}
	reqs := make([]types.SendMessageBatchRequestEntry, len(batch))
	for i, e := range batch {
		reqs[i] = e.req
		reqs[i].Id = aws.String(strconv.Itoa(i))
	}
	out, err := p.api.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(p.url), Entries: reqs})
	if err != nil {
		for _, e := range batch {
			e.done <- fmt.Errorf("send message batch: %w", err)
		}
		return
	}
	answered := make([]bool, len(batch))
	for _, s := range out.Successful {
		if i, ok := index(s.Id, len(batch)); ok && !answered[i] {
			answered[i] = true
			batch[i].done <- nil
		}
	}
	for _, f := range out.Failed {
		if i, ok := index(f.Id, len(batch)); ok && !answered[i] {
			answered[i] = true
			batch[i].done <- &SendError{Code: aws.ToString(f.Code), Message: aws.ToString(f.Message), SenderFault: f.SenderFault}
		}
	}
	// An entry in neither list is unconfirmed (goaws's batch reply is
	// unreadable to the SDK). Resending it alone with the same
	// deduplication id cannot duplicate it on a FIFO queue.
	for i, e := range batch {
		if !answered[i] {
			e.done <- p.sendOne(ctx, e)
		}
	}
}

// sendOne sends an entry alone: a batch of one, or an unconfirmed entry.
func (p *BatchPublisher) sendOne(ctx context.Context, e *entry) error {
	_, err := p.api.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:               aws.String(p.url),
		MessageBody:            e.req.MessageBody,
		MessageAttributes:      e.req.MessageAttributes,
		MessageGroupId:         e.req.MessageGroupId,
		MessageDeduplicationId: e.req.MessageDeduplicationId,
	})
	var apiErr smithy.APIError
	if Refused(err) && errors.As(err, &apiErr) {
		return &SendError{Code: apiErr.ErrorCode(), Message: apiErr.ErrorMessage(), SenderFault: true}
	}
	if err != nil {
		return fmt.Errorf("send message: %w", err)
	}
	return nil
}

// Refused reports whether SQS refused the message itself: resending it
// will not help, the request must change.
func Refused(err error) bool {
	var apiErr smithy.APIError
	return errors.As(err, &apiErr) && refusedCodes[apiErr.ErrorCode()]
}

// refusedCodes are SQS errors about the message itself.
var refusedCodes = map[string]bool{
	"InvalidMessageContents":      true,
	"InvalidParameterValue":       true,
	"MissingParameter":            true,
	"InvalidAttributeName":        true,
	"InvalidAttributeValue":       true,
	"InvalidParameterCombination": true,
}

func index(id *string, n int) (int, bool) {
	i, err := strconv.Atoi(aws.ToString(id))
	return i, err == nil && i >= 0 && i < n
}

// Close stops accepting messages and waits for batches in flight.
func (p *BatchPublisher) Close() error {
	p.closeOnce.Do(func() { close(p.closing) })
	p.wg.Wait()
	return nil
}
