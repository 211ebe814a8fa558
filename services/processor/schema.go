package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/uptrace/bun"

	"github.com/omsdev/oms/pkg/orderstore"
)

// schemaGuard keeps the processor from taking commands while the database
// is not what this binary expects (migrations not applied, privileges
// missing): such failures are the deployment's, not the commands', so the
// commands wait on the queue instead of being retried into the dead-letter
// queue. Readiness reports the guard's state.
type schemaGuard struct {
	db    *bun.DB
	gate  pauser
	every time.Duration
	log   *slog.Logger

	mu       sync.Mutex
	err      error // why commands are held back; nil when running
	watching bool
}

// pauser holds commands back: the queue consumer.
type pauser interface {
	Pause() bool
	Resume()
}

// Start checks the schema once, and holds commands back until it is right.
func (s *schemaGuard) Start(ctx context.Context) {
	if err := s.check(ctx); err != nil {
		s.Trip(ctx, err)
	}
}

// check: every migration applied, and the tables writable by this role.
func (s *schemaGuard) check(ctx context.Context) error {
	if err := orderstore.CheckSchema(ctx, s.db); err != nil {
		return err
	}
	return orderstore.CheckWritable(ctx, s.db)
}

// Trip holds commands back because of err, until a check passes.
func (s *schemaGuard) Trip(ctx context.Context, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
	if s.watching {
		return
	}
	s.watching = true
	s.gate.Pause()
	s.log.Error("not taking commands until the database is ready for this binary", "err", err)
	go s.watch(ctx)
}

func (s *schemaGuard) watch(ctx context.Context) {
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.check(cctx)
		cancel()
		s.mu.Lock()
		if err == nil {
			s.err, s.watching = nil, false
			s.gate.Resume()
			s.mu.Unlock()
			s.log.Info("the database is ready; taking commands again")
			return
		}
		s.err = err
		s.mu.Unlock()
	}
}

// Err is why commands are held back, or nil.
func (s *schemaGuard) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
