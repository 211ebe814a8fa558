package queue_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/omsdev/oms/pkg/queue"
)

// consumerQueue is a fresh command queue with a short visibility timeout,
// and a Consumer on it.
func consumerQueue(t *testing.T, visibility time.Duration, wait time.Duration) (*sqs.Client, queue.Config, queue.URLs, *queue.Consumer) {
	t.Helper()
	c, client, _ := testQueues(t)
	c.CommandQueue = "v" + c.CommandQueue // new names: the visibility timeout is set at creation
	c.DeadLetterQueue = "v" + c.DeadLetterQueue
	c.NotificationQueue = "v" + c.NotificationQueue
	c.VisibilityTimeout = visibility
	urls, err := queue.EnsureQueues(context.Background(), client, c)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := queue.NewConsumer(client, queue.ConsumerConfig{MaxMessages: 10, WaitTime: wait, Visibility: visibility, Budget: visibility / 2},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cons.Close() })
	return client, c, urls, cons
}

func send(t *testing.T, client *sqs.Client, url string, msgs ...*message.Message) {
	t.Helper()
	p, err := queue.NewBatchPublisher(client, "commands", url, queue.BatchConfig{MaxEntries: 10, Linger: time.Millisecond, MaxInFlight: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// One at a time: Publish sends a call's messages in order, and a
	// group's order is what the tests check.
	for _, m := range msgs {
		if err := p.Publish("commands", m); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConsumerKeepsGroupOrderWithSeveralSubscriptions: four subscriptions,
// twelve groups, random handling times and random nacks (each comes back
// after the visibility timeout). Every message is acked exactly once, and
// within a group in the order sent.
func TestConsumerKeepsGroupOrderWithSeveralSubscriptions(t *testing.T) {
	client, c, urls, cons := consumerQueue(t, 2*time.Second, time.Second)
	const groups, per = 12, 15
	var msgs []*message.Message
	for i := range per {
		for g := range groups {
			msgs = append(msgs, fifoMessage(fmt.Sprintf("g%02d-%03d", g, i), fmt.Sprintf("g%02d", g)))
		}
	}
	send(t, client, urls.Command, msgs...)

	var mu sync.Mutex
	acked := map[string]int{}   // message -> times acked
	last := map[string]int{}    // group -> last index acked
	nacked := map[string]bool{} // nacked once already
	var wg sync.WaitGroup
	ctx := context.Background()
	for range 4 {
		ch, err := cons.Subscribe(ctx, c.CommandQueue)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for m := range ch {
				go func() {
					time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
					mu.Lock()
					defer mu.Unlock()
					if !nacked[m.UUID] && rand.IntN(20) == 0 {
						nacked[m.UUID] = true
						m.Nack()
						return
					}
					group, idx := m.UUID[:3], m.UUID[4:]
					n, _ := strconv.Atoi(idx)
					if prev, ok := last[group]; ok && n != prev+1 {
						t.Errorf("group %s: %d handled after %d", group, n, prev)
					} else if !ok && n != 0 {
						t.Errorf("group %s: %d handled first", group, n)
					}
					last[group] = n
					acked[m.UUID]++
					m.Ack()
				}()
			}
		})
	}
	waitUntil(60*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) == len(msgs) })
	cons.Stop()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cons.Wait(wctx); err != nil {
		t.Fatalf("wait: %v", err)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(acked) != len(msgs) {
		t.Fatalf("acked %d of %d messages", len(acked), len(msgs))
	}
	for id, n := range acked {
		if n != 1 {
			t.Errorf("%s acked %d times", id, n)
		}
	}
	if d, err := queue.QueueDepth(ctx, client, urls.Command); err != nil || d.Visible+d.InFlight != 0 {
		t.Errorf("queue after every ack: %+v, %v (acked messages must be deleted)", d, err)
	}
}

// TestConsumerStopGivesBackWhatPollsBringAfterIt is the drain regression:
// a processor stopped while its long polls wait must not strand a message
// those polls then receive. It is given back at once, not left invisible
// for the queue's visibility timeout.
func TestConsumerStopGivesBackWhatPollsBringAfterIt(t *testing.T) {
	const visibility = 60 * time.Second
	client, c, urls, cons := consumerQueue(t, visibility, 2*time.Second)
	ctx := context.Background()
	var handed []*message.Message
	var wg sync.WaitGroup
	for range 4 {
		ch, err := cons.Subscribe(ctx, c.CommandQueue)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for m := range ch {
				handed = append(handed, m)
				m.Ack()
			}
		})
	}
	time.Sleep(200 * time.Millisecond) // the polls are waiting
	cons.Stop()
	var msgs []*message.Message
	for i := range 8 {
		msgs = append(msgs, fifoMessage(fmt.Sprintf("late-%d", i), fmt.Sprintf("g%d", i)))
	}
	send(t, client, urls.Command, msgs...) // the waiting polls receive these
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cons.Wait(wctx); err != nil {
		t.Fatalf("wait: %v", err)
	}
	wg.Wait()
	if len(handed) != 0 {
		t.Fatalf("%d messages handed out after Stop", len(handed))
	}
	// All eight are visible again now, far sooner than the visibility
	// timeout would allow, each received once by the drained consumer:
	// a message given back while other polls still waited would have
	// bounced between them, each bounce a receive towards the redrive.
	got := map[string]string{}
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < len(msgs) && time.Now().Before(deadline) {
		out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: &urls.Command, MaxNumberOfMessages: 10, WaitTimeSeconds: 1,
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount},
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range out.Messages {
			got[*m.MessageId] = m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)]
			client.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &urls.Command, ReceiptHandle: m.ReceiptHandle})
		}
	}
	if len(got) != len(msgs) {
		t.Fatalf("after the drain %d of %d messages could be received; the rest were stranded until their visibility timeout", len(got), len(msgs))
	}
	for id, n := range got {
		if n != "1" && n != "2" {
			t.Errorf("message %s: received %s times; the drain may add one receive, no more", id, n)
		}
	}
}

// TestConsumerPauseHoldsMessagesOnTheQueue: while paused nothing is handed
// out and nothing stays in flight; Resume hands it out.
func TestConsumerPauseHoldsMessagesOnTheQueue(t *testing.T) {
	client, c, urls, cons := consumerQueue(t, 30*time.Second, time.Second)
	ctx := context.Background()
	ch, err := cons.Subscribe(ctx, c.CommandQueue)
	if err != nil {
		t.Fatal(err)
	}
	if !cons.Pause() {
		t.Fatal("pause: consumer was not running")
	}
	send(t, client, urls.Command, fifoMessage("held", "g"))
	// A poll under way when Pause came returns within its wait (1 s) and
	// gives back what it got; then nothing polls.
	time.Sleep(2500 * time.Millisecond)
	select {
	case m := <-ch:
		t.Fatalf("message %s handed out while paused", m.UUID)
	default:
	}
	if d, err := queue.QueueDepth(ctx, client, urls.Command); err != nil || d.Visible != 1 || d.InFlight != 0 {
		t.Fatalf("queue while paused: %+v, %v; want the message visible", d, err)
	}
	cons.Resume()
	select {
	case m := <-ch:
		if m.UUID != "held" {
			t.Fatalf("got %s", m.UUID)
		}
		m.Ack()
	case <-time.After(20 * time.Second):
		t.Fatal("nothing handed out after Resume")
	}
	cons.Stop()
	if err := cons.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if d, err := queue.QueueDepth(ctx, client, urls.Command); err != nil || d.Visible+d.InFlight != 0 {
		t.Errorf("queue after the ack: %+v, %v", d, err)
	}
}

func TestConsumerConfigRefusesARetryBudgetBeyondVisibility(t *testing.T) {
	_, err := queue.NewConsumer(nil, queue.ConsumerConfig{MaxMessages: 10, WaitTime: time.Second, Visibility: time.Minute, Budget: 2 * time.Minute}, slog.Default())
	if err == nil {
		t.Fatal("a budget beyond the visibility timeout was accepted")
	}
}

// TestConsumerExtendsMessagesWaitingBehindTheirGroup: one receive brings
// a group's five messages; each takes 400 ms, so the later ones would
// outlive their 2 s visibility before they are acked. Their visibility is
// extended as they are handed out, so none is delivered twice.
func TestConsumerExtendsMessagesWaitingBehindTheirGroup(t *testing.T) {
	client, c, urls, _ := consumerQueue(t, 2*time.Second, time.Second)
	cons, err := queue.NewConsumer(client, queue.ConsumerConfig{MaxMessages: 10, WaitTime: time.Second, Visibility: 2 * time.Second, Budget: 1500 * time.Millisecond},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var msgs []*message.Message
	for i := range 5 {
		msgs = append(msgs, fifoMessage(fmt.Sprintf("slow-%d", i), "g"))
	}
	send(t, client, urls.Command, msgs...)
	ctx := context.Background()
	var mu sync.Mutex
	var order []string
	for range 2 {
		ch, err := cons.Subscribe(ctx, c.CommandQueue)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for m := range ch {
				time.Sleep(400 * time.Millisecond)
				mu.Lock()
				order = append(order, m.UUID)
				if n := m.Metadata.Get(queue.MetaReceiveCount); n != "1" {
					t.Errorf("%s handed out at receive %q, want the first: extending must not add receives", m.UUID, n)
				}
				mu.Unlock()
				m.Ack()
			}
		}()
	}
	waitUntil(30*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(order) >= len(msgs) })
	time.Sleep(2500 * time.Millisecond) // a redelivery would come by now
	cons.Stop()
	if err := cons.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := "slow-0,slow-1,slow-2,slow-3,slow-4"
	if got := strings.Join(order, ","); got != want {
		t.Fatalf("handled %s, want %s once each, in order", got, want)
	}
}

// waitUntil polls done until it holds or d has passed; the caller checks
// the outcome.
func waitUntil(d time.Duration, done func() bool) {
	for deadline := time.Now().Add(d); !done() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
}

// TestConsumerSubscribeAfterStopEnds: a router that subscribes only after
// the drain began (a SIGTERM right at start) gets a closed channel, so its
// handler ends instead of waiting out the router's close timeout.
func TestConsumerSubscribeAfterStopEnds(t *testing.T) {
	_, c, _, cons := consumerQueue(t, 30*time.Second, time.Second)
	cons.Stop()
	ch, err := cons.Subscribe(context.Background(), c.CommandQueue)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case _, open := <-ch:
		if open {
			t.Fatal("a message after Stop")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the channel of a subscription made after Stop stays open")
	}
}

// TestConsumerReceivesWithMostPlacesHeld: a subscription waits for room
// worth a receive (half its places), but only a little while; with nine
// of its ten places held by messages not yet settled (retrying, say), the
// next message is still handed out.
func TestConsumerReceivesWithMostPlacesHeld(t *testing.T) {
	client, c, urls, cons := consumerQueue(t, 20*time.Second, time.Second)
	ch, err := cons.Subscribe(context.Background(), c.CommandQueue)
	if err != nil {
		t.Fatal(err)
	}
	var held []*message.Message
	defer func() {
		for _, m := range held {
			m.Ack()
		}
	}()
	for i := range 9 {
		send(t, client, urls.Command, fifoMessage(fmt.Sprintf("held-%d", i), fmt.Sprintf("g%d", i)))
	}
	for len(held) < 9 {
		select {
		case m := <-ch:
			held = append(held, m)
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of 9 messages handed out", len(held))
		}
	}
	send(t, client, urls.Command, fifoMessage("next", "g-next"))
	select {
	case m := <-ch:
		if m.UUID != "next" {
			t.Fatalf("handed out %s, want next", m.UUID)
		}
		m.Ack()
	case <-time.After(30 * time.Second):
		t.Fatal("a subscription with one free place of ten stopped receiving")
	}
}
