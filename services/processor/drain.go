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
	// paused, while set, holds the next message back (see Pause); it is
	// closed on Resume.
	paused chan struct{}
	// held are messages received after Stop, given back by GiveBack.
	held []*message.Message
	// gaveBack is set once GiveBack has run: a message a still-open long
	// poll returns later is given back at once, but only once per message,
	// so draining adds at most two receives to any message's count.
	gaveBack bool
	given    map[string]bool
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
				// Not processed, not acked: held, to be given back once the
				// drain is over. Unacked, it keeps its subscription from
				// receiving more (each receive counts towards the redrive
				// to the dead-letter queue); reading on lets the
				// subscriber close.
				g.hold(msg)
				continue
			}
			if !g.waitRunning(ctx) {
				g.hold(msg)
				g.release()
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

func (g *gate) hold(msg *message.Message) {
	g.mu.Lock()
	if !g.gaveBack || g.given[msg.UUID] {
		// Held: until GiveBack, or, if given back once already, until its
		// visibility timeout (another give-back would be another receive).
		g.held = append(g.held, msg)
		g.mu.Unlock()
		return
	}
	g.given[msg.UUID] = true
	g.mu.Unlock()
	g.giveBack(msg)
}

// GiveBack returns the messages received after Stop to the queue at once,
// so they need not wait out their visibility timeout (nor block their FIFO
// groups that long). Call it after Wait, before closing the router.
func (g *gate) GiveBack() {
	g.mu.Lock()
	held := g.held
	g.held = nil
	if g.given == nil {
		g.given = map[string]bool{}
	}
	for _, m := range held {
		g.given[m.UUID] = true
	}
	g.gaveBack = true
	g.mu.Unlock()
	for _, m := range held {
		g.giveBack(m)
	}
}

// Pause holds back every message not yet handed out until Resume. Each
// subscription holds the one message it has received, invisible on the
// queue, so nothing is received (or counted towards redrive) meanwhile. It
// reports whether the gate was running.
func (g *gate) Pause() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.paused != nil || g.stopped {
		return false
	}
	g.paused = make(chan struct{})
	return true
}

// Resume hands out messages again.
func (g *gate) Resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.resume()
}

func (g *gate) resume() {
	if g.paused != nil {
		close(g.paused)
		g.paused = nil
	}
}

// waitRunning waits while the gate is paused; false means stop instead.
func (g *gate) waitRunning(ctx context.Context) bool {
	g.mu.Lock()
	p := g.paused
	g.mu.Unlock()
	if p != nil {
		select {
		case <-p:
		case <-ctx.Done():
			return false
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.stopped
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
	g.resume() // a held message goes back to the queue
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
