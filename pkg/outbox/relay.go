package outbox

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/omsdev/oms/pkg/metrics"
	"github.com/omsdev/oms/pkg/queue"
)

var (
	relayed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oms_outbox_relayed_total",
		Help: "Outbox rows by send outcome: sent, resent (sent after an earlier claim that may have reached the queue: a possible duplicate), failed (will be retried after a backoff), parked (set aside).",
	}, []string{"outcome"})
	parkedRows = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "oms_outbox_parked",
		Help: "Outbox rows parked: set aside after a permanent error or too many failed sends, waiting for an operator to re-drive them (sampled by the relay).",
	})
	relayErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "oms_outbox_relay_errors_total",
		Help: "Database errors of the outbox relay (claiming rows or recording outcomes).",
	})
	sendCalls = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "oms_outbox_send_calls_total",
		Help: "Calls the outbox relay made to its publisher: one per batch (SendBatch) or per message (Publish). Divided by oms_outbox_relayed_total, about the SQS calls per notification.",
	})
)

func init() { metrics.Register(relayed, parkedRows, relayErrors, sendCalls) }

// ErrUnsendable marks an error no retry can fix: wrap it (or return a
// queue.SendError with SenderFault) and the relay parks the row at once.
var ErrUnsendable = errors.New("the message can never be sent")

// IsPermanent is the default RelayConfig.Permanent: the destination refused
// the message itself (queue.SendError with SenderFault, or an SQS error
// about the request's parameters), the message has no FIFO group, or the
// error wraps ErrUnsendable. Anything else, an outage included, is retried.
func IsPermanent(err error) bool {
	var se *queue.SendError
	if errors.As(err, &se) {
		return se.SenderFault
	}
	if errors.Is(err, ErrUnsendable) || errors.Is(err, queue.ErrNoGroupID) {
		return true
	}
	return queue.Refused(err)
}

// RelayConfig tunes the relay. A zero field takes its default.
type RelayConfig struct {
	// PollInterval is the wait after a claim found nothing (100ms).
	PollInterval time.Duration
	// BatchSize rows are claimed at once, at most one per group (50). A
	// relay that dies mid-batch leaves them to be sent again after Lease.
	BatchSize int
	// Concurrency bounds the calls to the publisher in flight (16): sends
	// of up to MaxBatch messages with a BatchSender, of one otherwise. A
	// batch's rows are of different groups, so their order does not
	// matter.
	Concurrency int
	// Lease is how long a claimed row is this relay's (30s): after it,
	// another relay may claim the row and send it again.
	Lease time.Duration
	// SendTimeout bounds the sends of a batch, counted from its claim
	// (Lease/3). It must be shorter than Lease, so a live relay stops
	// waiting for a send before another relay may take the row over.
	SendTimeout time.Duration
	// MaxAttempts failed sends park a row (20). With the default backoff
	// that is about an hour of failures: a shorter outage parks nothing.
	MaxAttempts int
	// InitialBackoff is the wait after a row's first failed send (1s); it
	// doubles with each further failure, up to MaxBackoff (5m).
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// Permanent reports errors no retry can fix; such a row is parked at
	// once (IsPermanent).
	Permanent func(error) bool
	// Name identifies the relay in the leased_by column (host/pid/random).
	Name string
}

func (c RelayConfig) withDefaults() (RelayConfig, error) {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.PollInterval, 100*time.Millisecond)
	def(&c.Lease, 30*time.Second)
	def(&c.SendTimeout, c.Lease/3)
	def(&c.InitialBackoff, time.Second)
	def(&c.MaxBackoff, 5*time.Minute)
	if c.BatchSize == 0 {
		c.BatchSize = 50
	}
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 20
	}
	if c.Permanent == nil {
		c.Permanent = IsPermanent
	}
	if c.Name == "" {
		host, _ := os.Hostname()
		b := make([]byte, 3)
		rand.Read(b)
		c.Name = fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
	}
	switch {
	case c.PollInterval < 0, c.Lease < 0, c.SendTimeout < 0, c.InitialBackoff < 0, c.MaxBackoff < 0:
		return c, errors.New("outbox relay: durations must not be negative")
	case c.BatchSize < 0, c.Concurrency < 0, c.MaxAttempts < 0:
		return c, errors.New("outbox relay: batch size, concurrency and max attempts must be positive")
	case c.SendTimeout >= c.Lease:
		return c, fmt.Errorf("outbox relay: send timeout %s must be shorter than the lease %s", c.SendTimeout, c.Lease)
	case c.MaxBackoff < c.InitialBackoff:
		return c, fmt.Errorf("outbox relay: max backoff %s is below the initial backoff %s", c.MaxBackoff, c.InitialBackoff)
	}
	return c, nil
}

// backoff is the wait after the attempts-th failed send.
func (c RelayConfig) backoff(attempts int64) time.Duration {
	d := c.InitialBackoff
	for i := int64(1); i < attempts && d < c.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, c.MaxBackoff)
}

// Relay moves outbox rows to a publisher. Any number of relays may run on
// one table. Each round it claims a batch in one statement (a lease, no
// lock kept), sends outside any transaction, and records the outcomes in
// one statement: sent rows are deleted, failed ones wait out a backoff, and
// rows that cannot be sent are parked. A publisher that is a BatchSender
// (SQSSender) gets a round's messages to one destination ten to a call.
//
// A row is claimed only when it is the oldest unparked row of its group
// and no row of the group is leased, so a group's messages leave one at a
// time, in order, whichever relay sends them: a round, and so a batch, holds
// at most one message of a group.
type Relay struct {
	db    *sql.DB
	out   message.Publisher
	batch BatchSender // out, if it is one
	cfg   RelayConfig
	log   watermill.LoggerAdapter

	mu        sync.Mutex
	started   bool
	closing   chan struct{}
	closeOnce sync.Once
	done      chan struct{}

	statsAt time.Time
}

// NewRelay returns a relay from db's outbox to out: through
// out.SendBatch if out is a BatchSender, such as an SQSSender, otherwise
// one message per Publish call.
func NewRelay(db *sql.DB, out message.Publisher, cfg RelayConfig, logger watermill.LoggerAdapter) (*Relay, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	batch, _ := out.(BatchSender)
	return &Relay{
		db: db, out: out, batch: batch, cfg: cfg,
		log:     logger.With(watermill.LogFields{"component": "outbox_relay", "relay": cfg.Name}),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}, nil
}

// Run relays until Close, which lets the batch in flight finish, or until
// ctx ends, which abandons it as a crash would: its rows keep their lease
// and are sent again once it expires. Database errors are logged and
// retried; Run returns nil.
func (r *Relay) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return errors.New("outbox relay: already running")
	}
	r.started = true
	r.mu.Unlock()
	defer close(r.done)

	errWait := r.cfg.PollInterval
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-r.closing:
			return nil
		case <-ctx.Done():
			return nil
		default:
		}
		n, parked, err := r.round(ctx)
		if ctx.Err() != nil {
			return nil
		}
		r.sampleParked(ctx, parked)
		var wait time.Duration
		switch {
		case err != nil:
			relayErrors.Inc()
			r.log.Error("Outbox relay round failed", err, watermill.LogFields{"retry_in": errWait})
			wait, errWait = errWait, max(min(2*errWait, 10*time.Second), r.cfg.PollInterval)
		case n == 0:
			wait, errWait = r.cfg.PollInterval, r.cfg.PollInterval
		default:
			errWait = r.cfg.PollInterval
			continue
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-r.closing:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// Close stops the relay after the batch in flight (its sends are bounded
// by SendTimeout) and waits for Run to return.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() { close(r.closing) })
	r.mu.Lock()
	started := r.started
	r.mu.Unlock()
	if started {
		<-r.done
	}
	return nil
}

// row is a claimed outbox row.
type row struct {
	offset   int64
	uuid     string
	dest     string
	group    sql.NullString
	body     []byte
	meta     []byte
	attempts int64
}

func (w row) message() (*message.Message, error) {
	msg := message.NewMessage(w.uuid, w.body)
	if len(w.meta) > 0 {
		if err := json.Unmarshal(w.meta, &msg.Metadata); err != nil {
			return nil, fmt.Errorf("%w: metadata: %v", ErrUnsendable, err)
		}
	}
	if msg.Metadata == nil {
		msg.Metadata = message.Metadata{}
	}
	return msg, nil
}

type outcome int

const (
	sent    outcome = iota
	failed          // retried after a backoff
	park            // set aside
	untried         // the batch ran out of time before its send began
)

type result struct {
	outcome outcome
	err     error
}

// claimQuery leases up to $1 rows for $2 milliseconds to relay $3: each the
// oldest unparked row of its group, with no row of the group leased, not
// in backoff. SKIP LOCKED lets concurrent claims pass each other; a row
// another claim has just leased fails the lease test when re-checked. The
// statement is a function (migration 20261126000008) only so that it can
// carry planner settings: walked in offset order by a plain index scan, a
// claim marks the relayed rows it passes dead in the index, so the next
// skips them instead of revisiting every row relayed since the last VACUUM.
const claimQuery = `SELECT * FROM watermill_outbox_claim($1, $2, $3)`

// round claims, sends and records one batch. It reports how many rows it
// claimed and whether it parked any.
func (r *Relay) round(ctx context.Context) (claimed int, parked bool, err error) {
	start := time.Now()
	rows, err := r.claim(ctx)
	if err != nil || len(rows) == 0 {
		return 0, false, err
	}
	results := r.sendAll(ctx, start.Add(r.cfg.SendTimeout), rows)
	if ctx.Err() != nil {
		return len(rows), false, nil // abandoned: the leases expire
	}
	for attempt := 1; ; attempt++ {
		err = r.record(ctx, rows, results)
		if err == nil || attempt == 3 || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
	}
	if err != nil {
		// Sent rows stay leased and are sent again after the lease: the
		// destination's deduplication absorbs that within its window.
		return len(rows), false, fmt.Errorf("record the outcome of %d sends: %w", len(rows), err)
	}
	r.count(rows, results)
	for _, res := range results {
		parked = parked || res.outcome == park
	}
	return len(rows), parked, nil
}

func (r *Relay) claim(ctx context.Context) ([]row, error) {
	q, err := r.db.QueryContext(ctx, claimQuery, int64(r.cfg.BatchSize), r.cfg.Lease.Milliseconds(), r.cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	defer q.Close()
	var rows []row
	for q.Next() {
		var w row
		if err := q.Scan(&w.offset, &w.uuid, &w.dest, &w.group, &w.body, &w.meta, &w.attempts); err != nil {
			return nil, fmt.Errorf("claim: %w", err)
		}
		rows = append(rows, w)
	}
	if err := q.Err(); err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	slices.SortFunc(rows, func(a, b row) int { return cmp.Compare(a.offset, b.offset) })
	return rows, nil
}

// sendAll sends the rows, concurrently, until deadline: a destination's
// rows in calls of up to MaxBatch (with a BatchSender) or one by one, in
// offset order.
func (r *Relay) sendAll(ctx context.Context, deadline time.Time, rows []row) []result {
	sctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	results := make([]result, len(rows))
	msgs := make([]*message.Message, len(rows))
	var dests []string
	byDest := map[string][]int{} // row indexes
	groups := map[string]bool{}
	for i, w := range rows {
		// Past MaxAttempts only through leases that expired without an
		// outcome: relays keep dying or stalling on this row.
		if w.attempts > int64(r.cfg.MaxAttempts) {
			results[i] = result{park, fmt.Errorf("claimed %d times without an outcome: a relay died or stalled while sending it", w.attempts)}
			continue
		}
		// The claim takes one row per group. Were there two, the later
		// would wait for the next round rather than go out beside, or
		// ahead of, one that fails.
		if w.group.Valid {
			if groups[w.group.String] {
				results[i] = result{outcome: untried}
				continue
			}
			groups[w.group.String] = true
		}
		msg, err := w.message()
		if err != nil {
			results[i] = result{park, err}
			continue
		}
		msg.SetContext(sctx)
		msgs[i] = msg
		if _, ok := byDest[w.dest]; !ok {
			dests = append(dests, w.dest)
		}
		byDest[w.dest] = append(byDest[w.dest], i)
	}
	per := 1
	if r.batch != nil {
		per = MaxBatch
	}
	sem := make(chan struct{}, r.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, dest := range dests {
		for call := range slices.Chunk(byDest[dest], per) {
			select {
			case sem <- struct{}{}:
			case <-sctx.Done():
			}
			if sctx.Err() != nil { // the deadline passed, or the relay is abandoning the batch
				for _, i := range call {
					results[i] = result{outcome: untried}
				}
				continue
			}
			batch := make([]*message.Message, len(call))
			for k, i := range call {
				batch[k] = msgs[i]
			}
			wg.Go(func() {
				defer func() { <-sem }()
				for k, err := range r.send(sctx, dest, batch) {
					results[call[k]] = r.classify(rows[call[k]], err)
				}
			})
		}
	}
	wg.Wait()
	return results
}

// send publishes msgs, waiting at most until ctx ends: a publisher that
// ignores the message's context (watermill-aws uses its own) may still be
// sending then, and the rows are retried later like any failure. It
// returns each message's outcome.
func (r *Relay) send(ctx context.Context, dest string, msgs []*message.Message) []error {
	sendCalls.Inc()
	done := make(chan []error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- each(len(msgs), fmt.Errorf("publisher panicked: %v", p))
			}
		}()
		if r.batch == nil {
			done <- []error{r.out.Publish(dest, msgs[0])}
			return
		}
		errs := r.batch.SendBatch(ctx, dest, msgs)
		if len(errs) != len(msgs) {
			errs = each(len(msgs), fmt.Errorf("the publisher answered for %d of %d messages", len(errs), len(msgs)))
		}
		done <- errs
	}()
	select {
	case errs := <-done:
		return errs
	case <-ctx.Done():
		select {
		case errs := <-done:
			return errs
		default:
			return each(len(msgs), fmt.Errorf("no answer from the publisher in time: %w", ctx.Err()))
		}
	}
}

func each(n int, err error) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

func (r *Relay) classify(w row, err error) result {
	switch {
	case err == nil:
		return result{outcome: sent}
	case r.cfg.Permanent(err):
		return result{park, err}
	case w.attempts >= int64(r.cfg.MaxAttempts):
		return result{park, fmt.Errorf("%d sends failed, the last: %w", w.attempts, err)}
	default:
		return result{failed, err}
	}
}

// recordQuery deletes the sent rows and writes back the others, given as
// a JSON array of {o: offset, a: attempts, k: outcome, b: backoff in ms,
// e: error}. Write-backs are fenced by attempts: if this relay's lease
// expired and another relay claimed the row since, they change nothing. A
// row given back untried loses the attempt its claim counted.
const recordQuery = `
WITH r AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS r(o bigint, a integer, k text, b bigint, e text)
), sent AS (
    DELETE FROM watermill_outbox o USING r WHERE r.k = 'sent' AND o."offset" = r.o
)
UPDATE watermill_outbox o
SET leased_until = NULL, leased_by = NULL,
    attempts        = CASE r.k WHEN 'untried' THEN o.attempts - 1 ELSE o.attempts END,
    next_attempt_at = CASE r.k WHEN 'failed' THEN now() + r.b * interval '1 millisecond' WHEN 'parked' THEN NULL ELSE o.next_attempt_at END,
    parked_at       = CASE r.k WHEN 'parked' THEN now() ELSE o.parked_at END,
    last_error      = CASE WHEN r.k IN ('failed', 'parked') THEN r.e ELSE o.last_error END
FROM r
WHERE r.k <> 'sent' AND o."offset" = r.o AND o.attempts = r.a`

type recorded struct {
	Offset   int64  `json:"o"`
	Attempts int64  `json:"a"`
	Outcome  string `json:"k"`
	Backoff  int64  `json:"b,omitempty"`
	Err      string `json:"e,omitempty"`
}

// record writes the outcomes of a round in one statement.
func (r *Relay) record(ctx context.Context, rows []row, results []result) error {
	out := make([]recorded, len(rows))
	for i, w := range rows {
		res := results[i]
		rec := recorded{Offset: w.offset, Attempts: w.attempts}
		switch res.outcome {
		case sent:
			rec.Outcome = "sent"
		case failed:
			rec.Outcome, rec.Backoff, rec.Err = "failed", r.cfg.backoff(w.attempts).Milliseconds(), reason(res.err)
		case park:
			rec.Outcome, rec.Err = "parked", reason(res.err)
		case untried:
			rec.Outcome = "untried"
		}
		out[i] = rec
	}
	doc, err := json.Marshal(out)
	if err != nil {
		return err
	}
	_, err = r.db.ExecContext(ctx, recordQuery, string(doc))
	return err
}

// reason is err as last_error keeps it: at most 2,000 bytes of valid
// UTF-8 without NUL, which text cannot hold.
func reason(err error) string {
	s := err.Error()
	if len(s) > 2000 {
		s = s[:2000]
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

func (r *Relay) count(rows []row, results []result) {
	var nFailed int
	var last error
	for i, w := range rows {
		res := results[i]
		switch res.outcome {
		case sent:
			if w.attempts > 1 {
				relayed.WithLabelValues("resent").Inc()
			} else {
				relayed.WithLabelValues("sent").Inc()
			}
		case failed:
			relayed.WithLabelValues("failed").Inc()
			nFailed, last = nFailed+1, res.err
		case park:
			relayed.WithLabelValues("parked").Inc()
			r.log.Error("Outbox row parked: it is no longer relayed and no longer blocks its group", res.err, watermill.LogFields{
				"offset": w.offset, "message_uuid": w.uuid, "group_id": w.group.String, "destination": w.dest, "attempts": w.attempts,
			})
		}
	}
	if nFailed > 0 {
		r.log.Info("Outbox sends failed; retrying after a backoff", watermill.LogFields{
			"failed": nFailed, "claimed": len(rows), "last_error": last.Error(),
		})
	}
}

// sampleParked refreshes the parked gauge every 15 s, and at once after
// this relay parked a row.
func (r *Relay) sampleParked(ctx context.Context, now bool) {
	if !now && time.Since(r.statsAt) < 15*time.Second {
		return
	}
	r.statsAt = time.Now()
	if s, err := ReadStats(ctx, r.db); err == nil {
		parkedRows.Set(float64(s.Parked))
	}
}
