package orderstore

import "github.com/uptrace/bun"

// GetSlots is how many get statements run at once.
var GetSlots = getBatchSlots

// HoldGetSlots takes every get slot of db's statements, so that gets queue.
func HoldGetSlots(db *bun.DB) {
	g := &statements(db.DB).gets
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running = getBatchSlots
}

// ReleaseGetSlot ends one statement's hold on a slot, as a statement that
// ends does: the slot goes to the queue if anything waits.
func ReleaseGetSlot(db *bun.DB) { statements(db.DB).nextGets(nil) }

// GetQueue is how many gets wait and how many slots are taken.
func GetQueue(db *bun.DB) (queued, running int) {
	g := &statements(db.DB).gets
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, ws := range g.queued {
		queued += len(ws)
	}
	return queued, g.running
}
