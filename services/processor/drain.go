package main

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
)

// gate wraps the queue subscriber so shutdown can drain: once closed it
// hands the router no more messages, and it counts messages in flight so
// the router is closed only after they are acked. (Closing the router
// first would cancel their contexts mid-transaction.)
type gate struct {
	message.Subscriber
	closed   atomic.Bool
	inflight sync.WaitGroup
}

func (g *gate) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	in, err := g.Subscriber.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for msg := range in {
			if g.closed.Load() {
				// Hold it unacked: SQS redelivers it after its visibility
				// timeout. Reading on lets the subscriber close.
				continue
			}
			g.inflight.Add(1)
			select {
			case out <- msg:
			case <-ctx.Done():
				g.inflight.Done()
				continue
			}
			go func() {
				defer g.inflight.Done()
				select {
				case <-msg.Acked():
				case <-msg.Nacked():
				case <-ctx.Done():
				}
			}()
		}
	}()
	return out, nil
}

// Stop stops handing out messages. Wait returns once those handed out are
// done or ctx ends. (Close, from the embedded subscriber, is the router's.)
func (g *gate) Stop() { g.closed.Store(true) }

func (g *gate) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { g.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
