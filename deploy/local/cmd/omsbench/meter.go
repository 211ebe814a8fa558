package main

import (
	"context"
	"sync"
	"time"
)

// namePostgres labels PostgreSQL's CPU: the bench database's backends
// (the bench's own monitoring connection left out) and the cluster's
// background processes (WAL writer, checkpointer, ...), which other users
// of the server share.
const namePostgres = "postgres"

// namePGBackends labels the bench database's backends alone: without the
// cluster's background processes, which other users of the server keep
// busy (a checkpoint after a bulk load, say).
const namePGBackends = "postgres backends"

// measured lists the processes whose CPU every phase reports, in order.
var measured = []string{nameProcessor, nameIngest, nameQuery, nameSQS, namePostgres}

// meter is the CPU each process used during one phase. Processes are
// sampled every tick while it runs, so that a PostgreSQL backend that
// comes and goes within the phase is counted up to its last sample, and a
// service started during the phase from zero.
type meter struct {
	s    *stack
	stop func()
	done chan struct{}

	mu sync.Mutex
	// by process label, then pid: CPU at the first and the last sample.
	first, last map[string]map[int]time.Duration
	start, end  time.Time
}

func (s *stack) startMeter(ctx context.Context) *meter {
	m := &meter{s: s, done: make(chan struct{}),
		first: map[string]map[int]time.Duration{}, last: map[string]map[int]time.Duration{}}
	m.sample(ctx, true)
	m.start = time.Now()
	ctx, cancel := context.WithCancel(ctx)
	m.stop = cancel
	go func() {
		defer close(m.done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				m.sample(ctx, false)
			}
		}
	}()
	return m
}

// sample reads every measured process's CPU. A process first seen at the
// phase's start counts from there; one first seen later began during the
// phase and counts from zero.
func (m *meter) sample(ctx context.Context, atStart bool) {
	pids := map[string][]int{}
	for _, name := range []string{nameProcessor, nameIngest, nameQuery, nameSQS} {
		if pid := m.s.pid(name); pid != 0 {
			pids[name] = []int{pid}
		}
	}
	pids[namePostgres], pids[namePGBackends] = m.s.postgresPIDs(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, list := range pids {
		if m.first[name] == nil {
			m.first[name], m.last[name] = map[int]time.Duration{}, map[int]time.Duration{}
		}
		for _, pid := range list {
			t, err := cpuTime(pid)
			if err != nil {
				continue // gone since it was listed
			}
			if _, seen := m.first[name][pid]; !seen {
				if atStart {
					m.first[name][pid] = t
				} else {
					m.first[name][pid] = 0
				}
			}
			m.last[name][pid] = t
		}
	}
}

// postgresPIDs lists the bench database's backends, but for the bench's
// own, and the cluster's background processes; and the backends alone.
func (s *stack) postgresPIDs(ctx context.Context) (all, backends []int) {
	s.monMu.Lock()
	defer s.monMu.Unlock()
	rows, err := s.mon.QueryContext(ctx,
		`SELECT pid, datname IS NOT NULL FROM pg_stat_activity WHERE (datname = $1 OR datname IS NULL) AND pid <> pg_backend_pid()`, s.dbName)
	if err != nil {
		return nil, nil
	}
	defer rows.Close()
	for rows.Next() {
		var pid int
		var backend bool
		if rows.Scan(&pid, &backend) == nil {
			all = append(all, pid)
			if backend {
				backends = append(backends, pid)
			}
		}
	}
	return all, backends
}

// cpu is the CPU each process used in a phase, and the phase's length.
type cpu struct {
	By   map[string]time.Duration
	Wall time.Duration
}

// finish takes the last sample and returns what each process used.
func (m *meter) finish(ctx context.Context) cpu {
	m.stop()
	<-m.done
	m.sample(ctx, false)
	m.end = time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := cpu{By: map[string]time.Duration{}, Wall: m.end.Sub(m.start)}
	for name, last := range m.last {
		for pid, t := range last {
			out.By[name] += t - m.first[name][pid]
		}
	}
	return out
}

// per is a process's CPU per unit of work done in the phase.
func (c cpu) per(name string, units float64) time.Duration {
	if units <= 0 {
		return 0
	}
	return time.Duration(float64(c.By[name]) / units)
}
