package main

import (
	"context"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
)

// gate wraps the queue subscriber so shutdown can drain: once stopped it
// hands the router no more messages, and it counts messages in flight so
// the router is closed only after they are acked. (Closing the router
// first would cancel their contexts mid-transaction.)
type gate struct {
	message.Subscriber
	// giveBack returns a message received after Stop to the queue, so it
	// need not wait out its visibility timeout (nor block its FIFO group).
	giveBack func(*message.Message)

	mu       sync.Mutex
	stopped  bool
	inflight int
	idle     chan struct{} // closed once stopped with nothing in flight
}

func newGate(sub message.Subscriber, giveBack func(*message.Message)) *gate {
	return &gate{Subscriber: sub, giveBack: giveBack, idle: make(chan struct{})}
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
			if !g.take() {
				// Not processed, not acked: give it back. Reading on lets
				// the subscriber close.
				g.giveBack(msg)
				continue
			}
			select {
			case out <- msg:
			case <-ctx.Done():
				g.release()
				continue
			}
			go func() {
				defer g.release()
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

func (g *gate) take() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return false
	}
	g.inflight++
	return true
}

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inflight--
	if g.stopped && g.inflight == 0 {
		close(g.idle)
	}
}

// Stop stops handing out messages. (Close, from the embedded subscriber, is
// the router's.)
func (g *gate) Stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return
	}
	g.stopped = true
	if g.inflight == 0 {
		close(g.idle)
	}
}

// Wait returns once every message handed out is done, or ctx ends.
func (g *gate) Wait(ctx context.Context) error {
	select {
	case <-g.idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
