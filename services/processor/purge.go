package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/omsdev/oms/pkg/orderstore"
)

// purgeBatch bounds one purge statement: a backlog is deleted a batch at a
// time, never holding many row locks at once.
const purgeBatch = 1000

// operationPurger deletes done operations older than the retention, every
// interval. Every processor runs one; they skip each other's rows.
type operationPurger struct {
	store     *orderstore.Store
	retention time.Duration
	every     time.Duration
	log       *slog.Logger
}

// Run purges until ctx ends, first at start.
func (p operationPurger) Run(ctx context.Context) {
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		p.purge(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// purge deletes batches until one comes back short. A failure waits for
// the next tick: the rows are still there then.
func (p operationPurger) purge(ctx context.Context) {
	var total int64
	for ctx.Err() == nil {
		n, err := p.store.PurgeOperations(ctx, p.retention, purgeBatch)
		total += n
		if err != nil {
			if ctx.Err() == nil {
				p.log.Warn("operation purge failed; trying again at the next interval", "err", err, "deleted", total)
			}
			return
		}
		if n < purgeBatch {
			break
		}
	}
	if total > 0 {
		p.log.Info("purged done operations", "deleted", total, "retention", p.retention)
	}
}
