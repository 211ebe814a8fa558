package main

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
)

// The gate hands out messages until stopped, then waits for the ones in
// flight; messages arriving after Stop are held, not handed out.
func TestGateDrains(t *testing.T) {
	pubsub, g, out, givenBack := subscribedGate(t)
	go pubsub.Publish("t", message.NewMessage("1", nil))
	first := <-out

	g.Stop()
	wctx, wcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer wcancel()
	if err := g.Wait(wctx); err == nil {
		t.Fatal("Wait returned with a message in flight")
	}
	go pubsub.Publish("t", message.NewMessage("2", nil))
	select {
	case m := <-out:
		t.Fatalf("message %s handed out after Stop", m.UUID)
	case id := <-givenBack:
		t.Fatalf("message %s given back before the drain is over", id)
	case <-time.After(200 * time.Millisecond):
	}
	first.Ack()
	if err := g.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Held until now, so its subscription received nothing more.
	g.GiveBack()
	select {
	case id := <-givenBack:
		if id != "2" {
			t.Errorf("gave back %s, want 2", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("message received after Stop was not given back")
	}
}

// A paused gate holds messages back until Resume; stopping it while paused
// gives the held message back.
func TestGatePauses(t *testing.T) {
	pubsub, g, out, givenBack := subscribedGate(t)
	if !g.Pause() {
		t.Fatal("Pause of a running gate")
	}
	go pubsub.Publish("t", message.NewMessage("1", nil))
	select {
	case m := <-out:
		t.Fatalf("message %s handed out while paused", m.UUID)
	case <-time.After(200 * time.Millisecond):
	}
	g.Resume()
	select {
	case m := <-out:
		m.Ack()
	case <-time.After(5 * time.Second):
		t.Fatal("message not handed out after Resume")
	}

	g.Pause()
	go pubsub.Publish("t", message.NewMessage("2", nil))
	time.Sleep(100 * time.Millisecond) // let the gate take it and hold it
	g.Stop()
	if err := g.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.GiveBack()
	select {
	case id := <-givenBack:
		if id != "2" {
			t.Errorf("gave back %s, want 2", id)
		}
	case m := <-out:
		t.Fatalf("message %s handed out after Stop", m.UUID)
	case <-time.After(5 * time.Second):
		t.Fatal("held message neither given back nor handed out after Stop")
	}
}

// After GiveBack, a message a still-open receive returns is given back at
// once (not held for its visibility timeout), but a message given back
// once already is not given back again: each give-back costs a receive.
func TestGateGivesBackLateMessagesOnce(t *testing.T) {
	pubsub, g, _, givenBack := subscribedGate(t)
	g.Stop()
	if err := g.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.GiveBack()
	go pubsub.Publish("t", message.NewMessage("late", nil))
	select {
	case id := <-givenBack:
		if id != "late" {
			t.Fatalf("gave back %s", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a message received after GiveBack was held")
	}
	go pubsub.Publish("t", message.NewMessage("late", nil)) // the same one, received again
	select {
	case id := <-givenBack:
		t.Fatalf("gave back %s a second time", id)
	case <-time.After(200 * time.Millisecond):
	}
}

// subscribedGate is a gate over an in-memory pub/sub, subscribed to "t",
// recording the messages it gives back.
func subscribedGate(t *testing.T) (*gochannel.GoChannel, *gate, <-chan *message.Message, chan string) {
	t.Helper()
	pubsub := gochannel.NewGoChannel(gochannel.Config{}, nil)
	givenBack := make(chan string, 4)
	g := newGate(pubsub, func(m *message.Message) { givenBack <- m.UUID })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	out, err := g.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	return pubsub, g, out, givenBack
}
