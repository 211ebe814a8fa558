package sqslocal

import (
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/Admiral-Piett/goaws/app/models"
	"github.com/google/uuid"
)

// state is what sqslocal keeps beside goaws's queues: FIFO sequence
// numbers, first-receive times and deduplication records, and which
// receives wait on which queue. Everything but the waiters is guarded by
// goaws's own lock, models.SyncQueues, so it changes atomically with the
// queues.
type state struct {
	queues      map[*models.Queue]*queueState // keyed by pointer: a re-created queue starts afresh
	dedupWindow time.Duration
	// maxRetention caps every queue's MessageRetentionPeriod (0: no cap).
	maxRetention time.Duration

	mu      sync.Mutex
	changed map[string]chan struct{} // by queue name; closed when the queue may have changed
}

// queueState is kept small per message: with a backlog, or a 5-minute
// deduplication window at a thousand sends a second, these records are
// most of what the emulator holds besides the messages themselves.
type queueState struct {
	seq uint64
	// messages is by message id. A record goes when sqslocal deletes its
	// message, or at the next sweep when goaws removed it (purge, its own
	// redrive).
	messages     map[string]messageInfo
	messagesPeak int
	dedup        map[dedupKey]sentMessage
	dedupPeak    int
	dedupLog     []dedupRecord // in send order, for expiry
}

// dedupKey stands for a deduplication id: 128 bits of its SHA-256, so
// that the records of a window (a million at a thousand orders a second)
// hold no pointers, which the garbage collector then never scans. Two ids
// share a key as rarely as two random UUIDs are equal.
type dedupKey [16]byte

func keyOf(id string) dedupKey {
	h := sha256.Sum256([]byte(id))
	return dedupKey(h[:16])
}

type messageInfo struct {
	seq          uint64
	firstReceive int64 // Unix milliseconds; 0 until received
}

type sentMessage struct {
	at        int64 // Unix nanoseconds
	seq       uint64
	messageID uuid.UUID // not its string: the message may be long gone
}

type dedupRecord struct {
	key dedupKey
	at  int64 // as in sentMessage
}

// defaultRetention is SQS's MessageRetentionPeriod when a queue sets none.
const defaultRetention = 4 * 24 * time.Hour

func newState(maxRetention time.Duration) *state {
	return &state{
		queues:       map[*models.Queue]*queueState{},
		dedupWindow:  models.DeduplicationPeriod,
		maxRetention: maxRetention,
		changed:      map[string]chan struct{}{},
	}
}

// queue returns q's state. The caller holds models.SyncQueues.
func (s *state) queue(q *models.Queue) *queueState {
	qs, ok := s.queues[q]
	if !ok {
		qs = &queueState{messages: map[string]messageInfo{}, dedup: map[dedupKey]sentMessage{}}
		s.queues[q] = qs
	}
	return qs
}

// nextSeq numbers a message.
func (qs *queueState) nextSeq() uint64 {
	qs.seq++
	return qs.seq
}

// seqString is a sequence number as SQS shows it. Zero-padded, so the
// strings sort as numbers.
func seqString(n uint64) string { return fmt.Sprintf("%020d", n) }

func (qs *queueState) add(id string, i messageInfo) {
	qs.messages[id] = i
	qs.messagesPeak = max(qs.messagesPeak, len(qs.messages))
}

// info returns what sqslocal knows of m, numbering it if it has no number
// yet (a message goaws moved into a dead-letter queue).
func (qs *queueState) info(m *models.SqsMessage) messageInfo {
	i, ok := qs.messages[m.Uuid]
	if !ok {
		i = messageInfo{seq: qs.nextSeq()}
		qs.add(m.Uuid, i)
	}
	return i
}

// duplicate reports the message first sent with deduplication id id, if
// that was within the window.
func (qs *queueState) duplicate(id string, now time.Time, window time.Duration) (sentMessage, bool) {
	s, ok := qs.dedup[keyOf(id)]
	return s, ok && now.UnixNano()-s.at < int64(window)
}

func (qs *queueState) remember(id string, s sentMessage) {
	k := keyOf(id)
	qs.dedup[k] = s
	qs.dedupPeak = max(qs.dedupPeak, len(qs.dedup))
	qs.dedupLog = append(qs.dedupLog, dedupRecord{key: k, at: s.at})
}

func (qs *queueState) expireDedup(now time.Time, window time.Duration) {
	i := 0
	for ; i < len(qs.dedupLog) && now.UnixNano()-qs.dedupLog[i].at >= int64(window); i++ {
		r := qs.dedupLog[i]
		if s, ok := qs.dedup[r.key]; ok && s.at == r.at {
			delete(qs.dedup, r.key)
		}
	}
	switch rest := qs.dedupLog[i:]; {
	case len(rest) == 0:
		qs.dedupLog = nil
	case i >= len(rest):
		// The expired head would stay in the array until an append moved
		// it; copying now costs no more than the expiry.
		qs.dedupLog = append([]dedupRecord(nil), rest...)
	default:
		qs.dedupLog = rest
	}
	qs.dedup = shrink(qs.dedup, &qs.dedupPeak)
}

// shrink rebuilds m once it holds under a quarter of its peak: a Go map
// keeps the size of its peak after entries are deleted.
func shrink[K comparable, V any](m map[K]V, peak *int) map[K]V {
	if *peak < 256 || len(m) >= *peak/4 {
		return m
	}
	c := make(map[K]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	*peak = len(c)
	return c
}

// sweep releases memory: the state of deleted queues, messages past their
// queue's retention period, expired deduplication ids, the records of
// messages goaws removed, and what goaws's own deletes leave in a queue's
// slice (the tail of the array keeps copies of removed messages; its
// capacity stays at the largest backlog).
func (s *state) sweep(now time.Time) {
	var expired []string
	defer func() {
		for _, name := range expired {
			s.notify(name)
		}
	}()
	models.SyncQueues.Lock()
	defer models.SyncQueues.Unlock()
	for q := range s.queues {
		if models.SyncQueues.Queues[q.Name] != q {
			delete(s.queues, q)
		}
	}
	for _, q := range models.SyncQueues.Queues {
		qs := s.queues[q]
		if s.expire(q, qs, now) {
			expired = append(expired, q.Name)
		}
		n, c := len(q.Messages), cap(q.Messages)
		switch {
		case n == 0 && c > 0:
			q.Messages = nil
		case c > 64 && c > 4*n:
			msgs := make([]models.SqsMessage, n, 2*n)
			copy(msgs, q.Messages)
			q.Messages = msgs
		default:
			clear(q.Messages[n:c])
		}
		if qs == nil {
			continue
		}
		qs.expireDedup(now, s.dedupWindow)
		if len(qs.messages) > 2*len(q.Messages)+64 {
			live := make(map[string]messageInfo, len(q.Messages))
			for i := range q.Messages {
				if info, ok := qs.messages[q.Messages[i].Uuid]; ok {
					live[q.Messages[i].Uuid] = info
				}
			}
			qs.messages, qs.messagesPeak = live, len(live)
		}
		qs.messages = shrink(qs.messages, &qs.messagesPeak)
	}
}

// retention is how long q keeps a message.
func (s *state) retention(q *models.Queue) time.Duration {
	r := defaultRetention
	if q.MessageRetentionPeriod > 0 {
		r = time.Duration(q.MessageRetentionPeriod) * time.Second
	}
	if s.maxRetention > 0 {
		r = min(r, s.maxRetention)
	}
	return r
}

// expire drops q's messages sent longer ago than its retention period, in
// flight or not, as SQS does; goaws keeps every message until it is
// deleted. It reports whether it dropped any. The caller holds
// models.SyncQueues.
func (s *state) expire(q *models.Queue, qs *queueState, now time.Time) bool {
	cutoff := now.Add(-s.retention(q))
	n := 0
	for i := range q.Messages {
		m := &q.Messages[i]
		if m.SentTime.Before(cutoff) {
			if qs != nil {
				delete(qs.messages, m.Uuid)
			}
			continue
		}
		if n != i {
			q.Messages[n] = *m
		}
		n++
	}
	if n == len(q.Messages) {
		return false
	}
	clear(q.Messages[n:])
	q.Messages = q.Messages[:n]
	return true
}

// purged forgets a purged queue's deduplication ids, as goaws does.
// Sequence numbers keep increasing.
func (s *state) purged(name string) {
	models.SyncQueues.Lock()
	defer models.SyncQueues.Unlock()
	if q, ok := models.SyncQueues.Queues[name]; ok {
		if qs, ok := s.queues[q]; ok {
			qs.dedup, qs.dedupLog, qs.dedupPeak = map[dedupKey]sentMessage{}, nil, 0
		}
	}
}

// watch returns a channel that is closed when the named queue may have
// changed. Take it before looking at the queue, so no change is missed.
func (s *state) watch(name string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.changed[name]
	if !ok {
		ch = make(chan struct{})
		s.changed[name] = ch
	}
	return ch
}

func (s *state) notify(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch, ok := s.changed[name]; ok {
		close(ch)
		delete(s.changed, name)
	}
}
