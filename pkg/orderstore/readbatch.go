package orderstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/order"
)

// Gets share statements when they pile up. A statement by primary key
// costs PostgreSQL mostly its fixed part (a SELECT 1 costs half as much),
// and the service a round trip: a socket write that wakes a backend and
// the read of its answer. So at most getBatchSlots get statements run at
// once; a get that arrives while they all do waits in a queue, and the
// next statement to start answers the whole queue (up to maxGetBatch) at
// once, one index lookup per key. Alone, a get runs at once, as one
// statement of its own: the wait happens only under load, and is at most
// one statement long, which the shared statement then repays.
const maxGetBatch = 64

var getBatchSlots = max(2, runtime.GOMAXPROCS(0))

// getKey is one get: the order's id and whom it must be visible to (see
// visibility; empty for seesAll).
type getKey struct{ id, who string }

type getWaiter struct {
	key  getKey
	done chan getResult // buffered: a sender never waits
}

// getResult is a waiter's answer, or, with lead set, its turn to run the
// statement for lead (itself first).
type getResult struct {
	o    *order.Order
	err  error
	lead []*getWaiter
}

// getBatches is one database handle's queue, by statement.
type getBatches struct {
	mu      sync.Mutex
	running int
	queued  map[*getQuery][]*getWaiter
}

func (r *readStmts) get(ctx context.Context, gq *getQuery, k getKey) (*order.Order, error) {
	if _, err := uuid.Parse(k.id); err != nil || len(k.id) != 36 {
		// Not an id a shared statement can hold: alone, it fails alone.
		return r.getOne(ctx, gq, k)
	}
	b := &r.gets
	b.mu.Lock()
	if b.running < getBatchSlots {
		b.running++
		b.mu.Unlock()
		w := &getWaiter{key: k}
		return r.runGets(ctx, gq, []*getWaiter{w})
	}
	w := &getWaiter{key: k, done: make(chan getResult, 1)}
	if b.queued == nil {
		b.queued = map[*getQuery][]*getWaiter{}
	}
	b.queued[gq] = append(b.queued[gq], w)
	b.mu.Unlock()

	var res getResult
	select {
	case res = <-w.done:
	case <-ctx.Done():
		b.mu.Lock()
		q := b.queued[gq]
		i := slices.Index(q, w)
		if i >= 0 {
			b.queued[gq] = slices.Delete(q, i, i+1)
		}
		b.mu.Unlock()
		if i >= 0 {
			return nil, ctx.Err()
		}
		// Taken already: its statement runs, or is this waiter's to run
		// for the others.
		if res = <-w.done; res.lead != nil {
			r.runGets(ctx, gq, res.lead)
		}
		return nil, ctx.Err()
	}
	if res.lead != nil {
		return r.runGets(ctx, gq, res.lead)
	}
	return res.o, res.err
}

// runGets runs the statement for batch, whose first waiter is the caller,
// hands the slot on, answers the others and returns the caller's answer.
func (r *readStmts) runGets(ctx context.Context, gq *getQuery, batch []*getWaiter) (*order.Order, error) {
	handedOn := false
	defer func() {
		if !handedOn { // a panic, which goes on to the caller's recovery
			r.nextGets(gq)
			for _, w := range batch[1:] {
				w.done <- getResult{err: errors.New("the shared statement failed")}
			}
		}
	}()
	var out []*order.Order
	var err error
	if len(batch) == 1 {
		var o *order.Order
		o, err = r.getOne(ctx, gq, batch[0].key)
		out = []*order.Order{o}
	} else {
		// The statement answers others too: the caller going away must
		// not cancel it.
		out, err = r.getMany(context.WithoutCancel(ctx), gq, batch)
	}
	handedOn = true
	r.nextGets(gq)
	for i, w := range batch[1:] {
		w.done <- getResult{o: out[i+1], err: notFoundIfNil(out[i+1], err)}
	}
	return out[0], notFoundIfNil(out[0], err)
}

func notFoundIfNil(o *order.Order, err error) error {
	if err == nil && o == nil {
		return ErrNotFound
	}
	return err
}

// nextGets gives the slot of a statement that ended to the queue: the
// same statement's first, else any other's.
func (r *readStmts) nextGets(gq *getQuery) {
	b := &r.gets
	b.mu.Lock()
	defer b.mu.Unlock()
	next := gq
	if len(b.queued[next]) == 0 {
		next = nil
		for q, ws := range b.queued {
			if len(ws) > 0 {
				next = q
				break
			}
		}
	}
	if next == nil {
		b.running--
		return
	}
	q := b.queued[next]
	n := min(len(q), maxGetBatch)
	batch := slices.Clone(q[:n])
	if n == len(q) {
		delete(b.queued, next)
	} else {
		b.queued[next] = q[n:]
	}
	batch[0].done <- getResult{lead: batch}
}

// getOne reads one order with gq's own statement: nil when there is
// none.
func (r *readStmts) getOne(ctx context.Context, gq *getQuery, k getKey) (*order.Order, error) {
	var rows *sql.Rows
	var err error
	if k.who == "" {
		rows, err = r.query(ctx, gq.sql, k.id)
	} else {
		rows, err = r.query(ctx, gq.sql, k.id, k.who)
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	// One allocation for everything the row scans into.
	sc := new(struct {
		row   orderRow
		lines []order.LineItem
		dest  [40]any
	})
	dest := sc.dest[:0]
	for _, c := range gq.cols {
		dest = append(dest, sc.row.dest(c))
	}
	if gq.lines {
		dest = append(dest, linesValue{&sc.lines})
	}
	if !rows.Next() {
		return nil, rows.Err()
	}
	if err := rows.Scan(dest...); err != nil {
		return nil, err
	}
	o := sc.row.toOrder()
	if gq.lines {
		o.Lines = sc.lines
	}
	return &o, nil
}

// getMany reads the orders of batch's keys with gq's batch statement, in
// batch's order: nil where there is none.
func (r *readStmts) getMany(ctx context.Context, gq *getQuery, batch []*getWaiter) ([]*order.Order, error) {
	var ids, whos strings.Builder
	ids.WriteByte('{')
	whos.WriteByte('{')
	for i, w := range batch {
		if i > 0 {
			ids.WriteByte(',')
			whos.WriteByte(',')
		}
		ids.WriteString(w.key.id) // a parsed uuid: nothing to quote
		arrayElem(&whos, w.key.who)
	}
	ids.WriteByte('}')
	whos.WriteByte('}')
	rows, err := r.query(ctx, gq.batch, ids.String(), whos.String())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]*order.Order, len(batch))
	dest := make([]any, 0, len(gq.cols)+2)
	for rows.Next() {
		var i int64
		dest = append(dest[:0], nullInt{&i})
		var row orderRow
		var lines []order.LineItem
		for _, c := range gq.cols {
			dest = append(dest, row.dest(c))
		}
		if gq.lines {
			dest = append(dest, linesValue{&lines})
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		if i < 1 || int(i) > len(batch) {
			return nil, fmt.Errorf("batch row %d of %d keys", i, len(batch))
		}
		o := row.toOrder()
		if gq.lines {
			o.Lines = lines
		}
		out[i-1] = &o
	}
	return out, rows.Err()
}

// arrayElem writes s as a quoted element of a PostgreSQL array literal.
func arrayElem(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := range len(s) {
		if c := s[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
}
