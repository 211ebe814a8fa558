package sqslocal

import (
	"fmt"
	"sync"
	"time"

	"github.com/Admiral-Piett/goaws/app/models"
)

// state is what sqslocal keeps beside goaws's queues: FIFO sequence
// numbers, first-receive times and deduplication records, and which
// receives wait on which queue. Everything but the waiters is guarded by
// goaws's own lock, models.SyncQueues, so it changes atomically with the
// queues.
type state struct {
	queues      map[*models.Queue]*queueState // keyed by pointer: a re-created queue starts afresh
	dedupWindow time.Duration

	mu      sync.Mutex
	changed map[string]chan struct{} // by queue name; closed when the queue may have changed
}

type queueState struct {
	seq      uint64
	messages map[string]*messageInfo // by message id; pruned by sweep once goaws drops the message
	dedup    map[string]sentMessage  // by deduplication id
	dedupLog []dedupRecord           // in send order, for expiry
}

type messageInfo struct {
	seq          string
	firstReceive time.Time
}

type sentMessage struct {
	at             time.Time
	messageID, seq string
}

type dedupRecord struct {
	id string
	at time.Time
}

func newState() *state {
	return &state{
		queues:      map[*models.Queue]*queueState{},
		dedupWindow: models.DeduplicationPeriod,
		changed:     map[string]chan struct{}{},
	}
}

// queue returns q's state. The caller holds models.SyncQueues.
func (s *state) queue(q *models.Queue) *queueState {
	qs, ok := s.queues[q]
	if !ok {
		qs = &queueState{messages: map[string]*messageInfo{}, dedup: map[string]sentMessage{}}
		s.queues[q] = qs
	}
	return qs
}

// nextSeq numbers a message. Zero-padded, so the strings sort as numbers.
func (qs *queueState) nextSeq() string {
	qs.seq++
	return fmt.Sprintf("%020d", qs.seq)
}

// info returns what sqslocal knows of m, numbering it if it has no number
// yet (a message goaws moved into a dead-letter queue).
func (qs *queueState) info(m *models.SqsMessage) *messageInfo {
	i, ok := qs.messages[m.Uuid]
	if !ok {
		i = &messageInfo{seq: qs.nextSeq()}
		qs.messages[m.Uuid] = i
	}
	return i
}

// duplicate reports the message first sent with deduplication id id, if
// that was within the window.
func (qs *queueState) duplicate(id string, now time.Time, window time.Duration) (sentMessage, bool) {
	s, ok := qs.dedup[id]
	return s, ok && now.Sub(s.at) < window
}

func (qs *queueState) remember(id string, s sentMessage) {
	qs.dedup[id] = s
	qs.dedupLog = append(qs.dedupLog, dedupRecord{id: id, at: s.at})
}

func (qs *queueState) expireDedup(now time.Time, window time.Duration) {
	i := 0
	for ; i < len(qs.dedupLog) && now.Sub(qs.dedupLog[i].at) >= window; i++ {
		r := qs.dedupLog[i]
		if s, ok := qs.dedup[r.id]; ok && s.at.Equal(r.at) {
			delete(qs.dedup, r.id)
		}
	}
	if i == len(qs.dedupLog) {
		qs.dedupLog = nil
	} else {
		qs.dedupLog = qs.dedupLog[i:]
	}
}

// sweep releases memory: the state of deleted queues, expired
// deduplication ids, the numbers of deleted messages, and the spare
// capacity goaws leaves in a queue's slice when it deletes messages one at
// a time (the tail of the old array keeps copies of deleted messages).
func (s *state) sweep(now time.Time) {
	models.SyncQueues.Lock()
	defer models.SyncQueues.Unlock()
	for q, qs := range s.queues {
		if models.SyncQueues.Queues[q.Name] != q {
			delete(s.queues, q)
			continue
		}
		qs.expireDedup(now, s.dedupWindow)
		if len(qs.messages) > 2*len(q.Messages)+64 {
			live := make(map[string]*messageInfo, len(q.Messages))
			for i := range q.Messages {
				if info, ok := qs.messages[q.Messages[i].Uuid]; ok {
					live[q.Messages[i].Uuid] = info
				}
			}
			qs.messages = live
		}
	}
	for _, q := range models.SyncQueues.Queues {
		if n, c := len(q.Messages), cap(q.Messages); c > 64 && c > 4*n {
			if n == 0 {
				q.Messages = nil
				continue
			}
			msgs := make([]models.SqsMessage, n, 2*n)
			copy(msgs, q.Messages)
			q.Messages = msgs
		}
	}
}

// purged forgets a purged queue's deduplication ids, as goaws does.
// Sequence numbers keep increasing.
func (s *state) purged(name string) {
	models.SyncQueues.Lock()
	defer models.SyncQueues.Unlock()
	if q, ok := models.SyncQueues.Queues[name]; ok {
		if qs, ok := s.queues[q]; ok {
			qs.dedup, qs.dedupLog = map[string]sentMessage{}, nil
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
