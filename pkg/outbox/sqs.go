package outbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omsdev/oms/pkg/queue"
)

// BatchSender is a publisher that can send several messages to one
// destination in one call and answer for each. The relay sends through
// SendBatch, up to MaxBatch messages a call, when its publisher has it;
// through Publish, one message a call, otherwise.
type BatchSender interface {
	message.Publisher
	// SendBatch sends msgs (at most MaxBatch) to destination and returns
	// each one's outcome: errs[i] is nil once msgs[i] is confirmed sent. It
	// returns once every message is answered or ctx has ended.
	SendBatch(ctx context.Context, destination string, msgs []*message.Message) (errs []error)
}

// MaxBatch is the most messages a SendBatch call carries: SQS's limit for
// SendMessageBatch.
const MaxBatch = 10

// SQSSender relays to SQS FIFO queues with SendMessageBatch: a round's
// messages to one queue cost one call per ten. It sends through pkg/queue's
// BatchPublisher, so the messages are the ones ingest sends (Watermill's
// attributes; group and deduplication ids from queue.MetaGroupID and
// queue.MetaDedupID), every entry's answer is checked, and an entry SQS
// neither confirmed nor refused is sent again alone with the same
// deduplication id (FIFO deduplication makes that safe), and failed if that
// fails too.
type SQSSender struct {
	api  queue.SendAPI
	urls map[string]string

	mu         sync.Mutex
	publishers map[string]*queue.BatchPublisher
}

// NewSQSSender sends to the queues named by urls (destination -> queue
// URL); a row bound elsewhere fails, and is parked after MaxAttempts.
func NewSQSSender(api queue.SendAPI, urls map[string]string) *SQSSender {
	return &SQSSender{api: api, urls: urls, publishers: map[string]*queue.BatchPublisher{}}
}

// SendBatch sends msgs in one SendMessageBatch call (more only past SQS's
// 256 KiB per call), with ctx as each message's context. A message that can
// never be sent (no group id, over SQS's size or attribute limits) fails
// with ErrUnsendable, unsent.
func (s *SQSSender) SendBatch(ctx context.Context, destination string, msgs []*message.Message) []error {
	for _, m := range msgs {
		m.SetContext(ctx)
	}
	return s.send(destination, msgs)
}

// Publish sends msgs to topic, ten to a call, each within its own context,
// and fails if any failed.
func (s *SQSSender) Publish(topic string, msgs ...*message.Message) error {
	var errs []error
	for i, err := range s.send(topic, msgs) {
		if err != nil {
			errs = append(errs, fmt.Errorf("message %s: %w", msgs[i].UUID, err))
		}
	}
	return errors.Join(errs...)
}

// Close closes the publishers.
func (s *SQSSender) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.publishers {
		p.Close()
	}
	return nil
}

func (s *SQSSender) send(destination string, msgs []*message.Message) []error {
	p, err := s.publisher(destination)
	if err != nil {
		errs := make([]error, len(msgs))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	errs := p.PublishEach(msgs...)
	for i, err := range errs {
		if errors.Is(err, queue.ErrInvalidMessage) {
			errs[i] = fmt.Errorf("%w: %w", ErrUnsendable, err)
		}
	}
	return errs
}

// publisher is destination's batch publisher, made on first use.
func (s *SQSSender) publisher(destination string) (*queue.BatchPublisher, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.publishers[destination]; ok {
		return p, nil
	}
	url, ok := s.urls[destination]
	if !ok {
		return nil, fmt.Errorf("no SQS queue URL for destination %q", destination)
	}
	p, err := queue.NewBatchPublisher(s.api, destination, url, queue.BatchConfig{MaxEntries: MaxBatch, Linger: time.Millisecond, MaxInFlight: 1})
	if err != nil {
		return nil, err
	}
	s.publishers[destination] = p
	return p, nil
}
