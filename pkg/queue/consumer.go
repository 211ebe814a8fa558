package queue

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/omsdev/oms/pkg/metrics"
)

// ConsumerConfig tunes a Consumer.
type ConsumerConfig struct {
	// MaxMessages is the most messages one receive asks for (1–10), and the
	// most one subscription holds at once: a subscription receives again
	// once half its places are free, or any after receiveLinger, so a
	// message being retried keeps one place, not the subscription.
	MaxMessages int
	// WaitTime is the long poll (at most 20 s). Stop lets polls in progress
	// return instead of cancelling them, so shutdown takes up to this long.
	WaitTime time.Duration
	// Visibility is the queue's visibility timeout, and Budget the longest
	// a message may take from hand-out to ack (every retry included). A
	// message that waited behind its group's earlier messages until less
	// than Budget of its visibility is left has its visibility extended
	// before it is handed out: once handed out, SQS never redelivers it
	// while it is still being worked on. (Extending, unlike giving back,
	// adds nothing to its receive count, which the queue's redrive
	// counts.)
	Visibility, Budget time.Duration
}

func (c ConsumerConfig) check() error {
	switch {
	case c.MaxMessages < 1 || c.MaxMessages > 10:
		return fmt.Errorf("receive batch %d: SQS allows 1 to 10", c.MaxMessages)
	case c.WaitTime < 0 || c.WaitTime > 20*time.Second:
		return fmt.Errorf("receive wait %s: SQS allows 0 to 20 s", c.WaitTime)
	case c.Budget >= c.Visibility:
		return fmt.Errorf("a message can take %s to process but the queue's visibility timeout is %s, so SQS would redeliver a message still being retried", c.Budget, c.Visibility)
	}
	return nil
}

// Consumer is the command queue's subscriber for a Watermill router. It
// keeps watermill-aws's message format (see receiptUnmarshaler) and adds
// what that subscriber lacks for a FIFO command consumer:
//
//   - messages of different groups received together are handed out
//     together; those of one group one after another, each only once the
//     one before it is acked (SQS keeps the group locked meanwhile);
//   - acks are deleted in batches (DeleteMessageBatch), and messages that
//     will not be processed are given back at once
//     (ChangeMessageVisibilityBatch to 0) rather than left to their
//     visibility timeout;
//   - Stop drains: it lets long polls in progress return rather than
//     cancelling them (a cancelled poll can lose a message the endpoint
//     already handed out, until its visibility timeout), gives back what
//     they bring, and Wait returns once everything handed out is acked or
//     nacked and its delete sent;
//   - Pause and Resume hold receiving while the database cannot take
//     commands.
type Consumer struct {
	client *sqs.Client
	cfg    ConsumerConfig
	log    *slog.Logger
	unm    receiptUnmarshaler

	// hard ends polls and message contexts: Close, after the drain.
	hard   context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	polling int    // receives in progress
	held    []held // to give back when polling is 0
	stopped bool
	paused  chan struct{} // non-nil while paused; closed on Resume or Stop
	work    sync.WaitGroup
	// deleters send acked messages' deletes; they end after work does.
	deleters []chan string
	deleting sync.WaitGroup
	closed   bool
}

// NewConsumer returns a Consumer receiving with client.
func NewConsumer(client *sqs.Client, cfg ConsumerConfig, log *slog.Logger) (*Consumer, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	hard, cancel := context.WithCancel(context.Background())
	return &Consumer{client: client, cfg: cfg, log: log, hard: hard, cancel: cancel}, nil
}

// Subscribe starts one receive loop on the queue named topic.
func (c *Consumer) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	url, err := c.resolve(ctx, topic)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(chan *message.Message)
	if c.stopped {
		// Stopped before the router got to subscribe (a SIGTERM right at
		// start): nothing to receive, and the router's handler ends.
		close(out)
		return out, nil
	}
	acks := make(chan string, 10*c.cfg.MaxMessages)
	c.deleters = append(c.deleters, acks)
	c.deleting.Add(1)
	go c.deleteLoop(url, acks)
	s := &subscription{c: c, topic: topic, url: url, out: out, acks: acks, room: make(chan struct{}, 1), free: c.cfg.MaxMessages}
	c.work.Add(1)
	go s.receiveLoop()
	return out, nil
}

func (c *Consumer) resolve(ctx context.Context, name string) (string, error) {
	r, err := c.client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
	if err != nil {
		return "", fmt.Errorf("look up queue %s: %w", name, err)
	}
	return aws.ToString(r.QueueUrl), nil
}

// Stop stops receiving and handing out. Messages handed out are still
// processed; messages received from now on are given back.
func (c *Consumer) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	c.stopped = true
	if c.paused != nil {
		close(c.paused)
		c.paused = nil
	}
}

// Wait returns once, after Stop, every message handed out is settled and
// deleted if acked, and every poll has returned and its messages are
// given back; or when ctx ends.
func (c *Consumer) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		c.work.Wait()
		c.mu.Lock()
		if !c.closed {
			c.closed = true
			for _, d := range c.deleters {
				close(d)
			}
		}
		c.mu.Unlock()
		c.deleting.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops at once: polls in progress are cancelled and messages not
// yet settled see their contexts end. Call it after Stop and Wait, as the
// router does when closed.
func (c *Consumer) Close() error {
	c.Stop()
	c.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	return c.Wait(ctx)
}

// Pause stops receiving until Resume; what is received meanwhile is given
// back, so nothing counts towards the dead-letter redrive while paused. It
// reports whether the consumer was running.
func (c *Consumer) Pause() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || c.paused != nil {
		return false
	}
	c.paused = make(chan struct{})
	return true
}

// Resume receives again after Pause.
func (c *Consumer) Resume() {
	c.mu.Lock()
	if c.paused != nil {
		close(c.paused)
		c.paused = nil
	}
	flush := c.takeHeld()
	c.mu.Unlock()
	c.flush(flush)
}

// beginPoll counts a receive about to start, if the consumer is running.
func (c *Consumer) beginPoll() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || c.paused != nil {
		return false
	}
	c.polling++
	return true
}

// endPoll counts a receive returned with msgs and reports whether the
// consumer is still running. If not, msgs are not handed out but given
// back, and not before the last poll in progress has returned: a message
// given back while other polls still wait is received by one of them,
// which gives it back in turn, each time adding to its receive count
// until SQS moves it to the dead-letter queue.
func (c *Consumer) endPoll(url string, msgs []types.Message) bool {
	c.mu.Lock()
	c.polling--
	running := !c.stopped && c.paused == nil
	if !running && len(msgs) > 0 {
		c.held = append(c.held, held{url, msgs})
	}
	flush := c.takeHeld()
	c.mu.Unlock()
	c.flush(flush)
	return running
}

// held are messages to give back once no poll is in progress.
type held struct {
	url  string
	msgs []types.Message
}

// takeHeld returns the held messages if they may be given back now: when
// running (a poll that receives them hands them out), or when no poll is
// in progress. Call it with mu held.
func (c *Consumer) takeHeld() []held {
	running := !c.stopped && c.paused == nil
	if len(c.held) == 0 || (!running && c.polling > 0) {
		return nil
	}
	h := c.held
	c.held = nil
	return h
}

func (c *Consumer) flush(hs []held) {
	n := 0
	for _, h := range hs {
		c.giveBackNow(h.url, h.msgs)
		n += len(h.msgs)
	}
	if n > 0 {
		c.log.Info("gave back messages received while draining or paused", "messages", n)
	}
}

// giveBack gives msgs back now, or, while polls that would only give them
// back again are in progress, once those have returned (see endPoll).
func (c *Consumer) giveBack(url string, msgs []types.Message) {
	if len(msgs) == 0 {
		return
	}
	c.mu.Lock()
	if c.polling > 0 && (c.stopped || c.paused != nil) {
		c.held = append(c.held, held{url, msgs})
		c.mu.Unlock()
		return
	}
	stopped := c.stopped || c.paused != nil
	c.mu.Unlock()
	if stopped {
		c.flush([]held{{url, msgs}})
		return
	}
	c.giveBackNow(url, msgs)
}

// running reports whether messages may be handed out, and the channel to
// wait on while paused.
func (c *Consumer) running() (ok bool, paused <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.stopped && c.paused == nil, c.paused
}

// subscription is one receive loop and the messages it holds.
type subscription struct {
	c          *Consumer
	topic, url string
	out        chan<- *message.Message
	acks       chan<- string

	// handing counts the groups being handed out.
	handing sync.WaitGroup

	mu   sync.Mutex
	free int           // places for received messages
	room chan struct{} // signalled when places free up
}

func (s *subscription) receiveLoop() {
	c := s.c
	defer c.work.Done()
	// The router reads out until it is closed: after the last message this
	// subscription handed out is settled.
	defer close(s.out)
	defer s.handing.Wait()
	pause := time.Duration(0)
	for {
		ok, paused := c.running()
		if !ok && paused == nil {
			return // stopped
		}
		if paused != nil {
			select {
			case <-paused:
			case <-c.hard.Done():
				return
			}
			continue
		}
		n := s.wait()
		if n == 0 {
			return
		}
		if !c.beginPoll() {
			continue
		}
		r, err := c.client.ReceiveMessage(c.hard, &sqs.ReceiveMessageInput{
			QueueUrl:                    aws.String(s.url),
			MaxNumberOfMessages:         int32(n),
			WaitTimeSeconds:             int32(c.cfg.WaitTime / time.Second),
			MessageAttributeNames:       []string{"All"},
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameMessageGroupId, types.MessageSystemAttributeNameApproximateReceiveCount},
		})
		var got []types.Message
		if err == nil {
			got = r.Messages
		}
		if !c.endPoll(s.url, got) {
			continue // given back, or held to be
		}
		if err != nil {
			if c.hard.Err() != nil {
				return
			}
			pause = min(max(2*pause, 100*time.Millisecond), 5*time.Second)
			c.log.Warn("receive failed; trying again", "queue", s.topic, "in", pause, "err", err)
			if QueueMissing(err) {
				// Re-created under the same name, perhaps at a new URL.
				if url, err := c.resolve(c.hard, s.topic); err == nil {
					s.url = url
				}
			}
			select {
			case <-time.After(pause):
			case <-c.hard.Done():
				return
			}
			continue
		}
		pause = 0
		if len(r.Messages) == 0 {
			consumerReceives.WithLabelValues("empty").Inc()
			continue
		}
		consumerReceives.WithLabelValues("messages").Inc()
		consumerReceived.Add(float64(len(r.Messages)))
		s.take(len(r.Messages))
		// The visibility clock started when SQS answered, a network hop
		// ago: within the margins of Budget (every wait at its jittered
		// maximum, every attempt timing out).
		deadline := time.Now().Add(c.cfg.Visibility - c.cfg.Budget)
		for _, group := range byGroup(r.Messages) {
			s.handing.Add(1)
			go s.handOut(group, deadline)
		}
	}
}

// receiveLinger is how long a subscription with some room, but less than
// half its places, waits for more before receiving. Under load, places
// free up one ack at a time, and receiving at each one made a receive per
// one or two messages; a receive costs the consumer and the endpoint
// about the same whatever it brings. The wait is bounded, so messages
// held a long time (retrying) never stop a subscription receiving.
const receiveLinger = 20 * time.Millisecond

// wait blocks until the subscription has room worth a receive (half its
// places, or any after receiveLinger), and returns how much; 0 means stop.
func (s *subscription) wait() int {
	want := (s.c.cfg.MaxMessages + 1) / 2
	var lingered <-chan time.Time
	for {
		s.mu.Lock()
		n := s.free
		s.mu.Unlock()
		if n >= want {
			return n
		}
		if n > 0 && lingered == nil {
			t := time.NewTimer(receiveLinger)
			defer t.Stop()
			lingered = t.C
		}
		select {
		case <-s.room:
		case <-lingered:
			s.mu.Lock()
			n = s.free
			s.mu.Unlock()
			return n
		case <-s.c.hard.Done():
			return 0
		}
	}
}

func (s *subscription) take(n int) {
	s.mu.Lock()
	s.free -= n
	s.mu.Unlock()
}

func (s *subscription) put(n int) {
	s.mu.Lock()
	s.free += n
	s.mu.Unlock()
	select {
	case s.room <- struct{}{}:
	default:
	}
}

// handOut hands one group's messages to the router in order, each after
// the one before it is acked.
func (s *subscription) handOut(group []types.Message, deadline time.Time) {
	c := s.c
	defer s.handing.Done()
	for i, m := range group {
		rest := group[i:]
		if ok, _ := c.running(); !ok {
			c.giveBack(s.url, rest)
			s.put(len(rest))
			return
		}
		if time.Now().After(deadline) {
			// Waited behind its group: extend the visibility of what is
			// left, or, failing that, give it back.
			if !c.extend(s.url, rest) {
				c.giveBack(s.url, rest)
				s.put(len(rest))
				return
			}
			deadline = time.Now().Add(c.cfg.Visibility - c.cfg.Budget)
		}
		msg, err := s.c.unm.Unmarshal(&m)
		if err != nil {
			// Left to its visibility timeout and the queue's redrive to
			// the dead-letter queue; the group waits behind it, as SQS
			// keeps it locked.
			c.log.Error("cannot decode a message's envelope; SQS redrives it to the dead-letter queue after the queue's maximum receives",
				"queue", s.topic, "message_id", aws.ToString(m.MessageId), "err", err)
			c.giveBack(s.url, group[i+1:])
			s.put(len(rest))
			return
		}
		ctx, cancel := context.WithCancel(c.hard)
		msg.SetContext(ctx)
		select {
		case s.out <- msg:
		case <-c.hard.Done():
			cancel()
			s.put(len(rest))
			return
		}
		var acked bool
		select {
		case <-msg.Acked():
			acked = true
		case <-msg.Nacked():
		case <-c.hard.Done():
		}
		cancel()
		if !acked {
			// Failed after its retries (or abandoned at Close): it comes
			// back after its visibility timeout; what follows it in its
			// group goes back now and waits behind it.
			c.giveBack(s.url, group[i+1:])
			s.put(len(rest))
			return
		}
		s.acks <- aws.ToString(m.ReceiptHandle)
		s.put(1)
	}
}

// byGroup splits a receive into its groups, each in order. Messages with
// no group id (a standard queue) are each their own group.
func byGroup(msgs []types.Message) [][]types.Message {
	var groups [][]types.Message
	index := map[string]int{}
	for _, m := range msgs {
		g, ok := m.Attributes[string(types.MessageSystemAttributeNameMessageGroupId)]
		if !ok {
			groups = append(groups, []types.Message{m})
			continue
		}
		i, seen := index[g]
		if !seen {
			i = len(groups)
			index[g] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], m)
	}
	return groups
}

// deleteLinger is how long an ack waits for others to share its
// DeleteMessageBatch call. A late delete costs nothing but the message's
// place in flight: its group moves on as soon as it is acked.
const deleteLinger = 5 * time.Millisecond

// deleteLoop deletes acked messages, up to 10 per call: those acked
// within deleteLinger of the first.
func (c *Consumer) deleteLoop(url string, acks <-chan string) {
	defer c.deleting.Done()
	timer := time.NewTimer(deleteLinger)
	timer.Stop()
	for h := range acks {
		batch := []string{h}
		timer.Reset(deleteLinger)
	more:
		for len(batch) < 10 {
			select {
			case h, ok := <-acks:
				if !ok {
					break more
				}
				batch = append(batch, h)
			case <-timer.C:
				break more
			}
		}
		timer.Stop()
		c.batch(url, batch, "delete", func(ctx context.Context, entries []string) ([]string, error) {
			in := &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(url)}
			for i, h := range entries {
				in.Entries = append(in.Entries, types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(h)})
			}
			r, err := c.client.DeleteMessageBatch(ctx, in)
			if err != nil {
				return nil, err
			}
			return failedIDs(r.Failed), nil
		})
	}
}

// extend restarts the visibility timeout of messages held back, and
// reports whether it did for all of them.
func (c *Consumer) extend(url string, msgs []types.Message) bool {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	for _, m := range msgs {
		_, err := c.client.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
			QueueUrl: aws.String(url), ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: int32(c.cfg.Visibility / time.Second),
		})
		if err != nil {
			c.log.Warn("could not extend the visibility of a message waiting behind its group; giving it back", "queue_url", url, "err", err)
			return false
		}
	}
	consumerCalls.WithLabelValues("extend", "ok").Add(float64(len(msgs)))
	return true
}

// giveBackNow makes received messages visible again at once.
func (c *Consumer) giveBackNow(url string, msgs []types.Message) {
	for len(msgs) > 0 {
		chunk := msgs[:min(len(msgs), 10)]
		msgs = msgs[len(chunk):]
		handles := make([]string, len(chunk))
		for i, m := range chunk {
			handles[i] = aws.ToString(m.ReceiptHandle)
		}
		c.batch(url, handles, "give back", func(ctx context.Context, entries []string) ([]string, error) {
			in := &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: aws.String(url)}
			for i, h := range entries {
				in.Entries = append(in.Entries, types.ChangeMessageVisibilityBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(h), VisibilityTimeout: 0})
			}
			r, err := c.client.ChangeMessageVisibilityBatch(ctx, in)
			if err == nil {
				return failedIDs(r.Failed), nil
			}
			// The whole call failed (or the endpoint lacks it, as goaws
			// does): one call per message.
			return nil, ReleaseAll(ctx, c.client, url, chunk)
		})
	}
}

// batch runs one batch call. Its failures cost time, not correctness: a
// message not deleted is redelivered and found already processed; one not
// given back returns after its visibility timeout. So they are logged.
func (c *Consumer) batch(url string, handles []string, what string, call func(context.Context, []string) ([]string, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	failed, err := call(ctx, handles)
	if err == nil && len(failed) == 0 {
		consumerCalls.WithLabelValues(what, "ok").Inc()
		return
	}
	consumerCalls.WithLabelValues(what, "failed").Inc()
	c.log.Warn("batch "+what+" failed for some messages; they return after their visibility timeout", "queue_url", url, "messages", len(handles), "failed", len(failed), "err", err)
}

func failedIDs(f []types.BatchResultErrorEntry) []string {
	ids := make([]string, len(f))
	for i, e := range f {
		ids[i] = aws.ToString(e.Id)
	}
	return ids
}

var consumerCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "oms_queue_consumer_batch_calls_total",
	Help: "The consumer's calls to SQS besides receives: deletes of acked messages, give-backs and visibility extensions, by result (failed means at least one entry was not confirmed).",
}, []string{"call", "result"})

// The receives, and what they bring: messages per receive shows whether
// receiving is batched.
var (
	consumerReceives = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oms_queue_consumer_receives_total",
		Help: "The consumer's ReceiveMessage calls that returned, by whether they brought messages (empty: a long poll that ended with none).",
	}, []string{"result"})
	consumerReceived = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "oms_queue_consumer_received_messages_total",
		Help: "Messages the consumer's receives brought, including any given back.",
	})
)

func init() { metrics.Register(consumerCalls, consumerReceives, consumerReceived) }
