// Package sqslocal runs goaws, an SQS emulator speaking the JSON protocol,
// inside this process. It is for local stacks and tests; production uses
// real SQS.
//
// goaws v0.5.4 locks only one FIFO message group at a time (its LockGroup
// replaces the lock map; goaws issue #212), so a group's order breaks as
// soon as two groups are in flight. sqslocal therefore answers
// ReceiveMessage and SendMessage for FIFO queues itself, from goaws's
// queue state under goaws's lock, with SQS FIFO's rule: while a group has
// a message in flight, nothing more of it is delivered. It also answers
// SendMessageBatch, whose goaws reply the AWS SDK cannot read, and deletes,
// which goaws makes by copying or shifting the whole queue. Everything else
// (visibility changes, queues, standard receives) is goaws's.
//
// Memory is bounded by what is queued: deleted messages and sqslocal's
// records of them go at once; messages past their queue's retention period
// (optionally capped, Options.MaxRetention), expired deduplication ids, and
// what goaws's own paths leave behind go at each tick. See docs/sqs.md.
package sqslocal

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/Admiral-Piett/goaws/app/gosqs"
	"github.com/Admiral-Piett/goaws/app/models"
	"github.com/Admiral-Piett/goaws/app/router"
	"github.com/sirupsen/logrus"
)

// AccountID is the account in the emulator's queue URLs and ARNs.
const AccountID = "000000000000"

// Emulator is a running goaws.
type Emulator struct {
	// URL is the endpoint to give the SQS client, e.g. http://127.0.0.1:4100.
	URL     string
	srv     *http.Server
	st      *state
	quit    chan bool
	closing chan struct{}
	done    sync.WaitGroup // the server and the sweeper

	mu       sync.Mutex
	closed   bool
	requests sync.WaitGroup
}

var running sync.Mutex // goaws keeps its queues in package globals

// Start serves goaws on addr ("127.0.0.1:0" picks a port). Only one
// emulator may run per process. tick is how often goaws's periodic task
// ends visibility timeouts and redrives (FIFO receives do both themselves
// when they look) and how often sqslocal releases memory; a waiting FIFO
// receive wakes on every change to its queue, and looks at least every
// tick (at most 1 s) for the changes goaws's periodic task makes.
func Start(addr string, tick time.Duration) (*Emulator, error) {
	return StartWith(addr, Options{Tick: tick})
}

// Options tune an emulator.
type Options struct {
	// Tick: see Start. Required.
	Tick time.Duration
	// MaxRetention caps every queue's MessageRetentionPeriod; 0 keeps each
	// queue's own (SQS's default, 4 days, if it sets none). Locally a
	// queue nobody consumes, such as the notification queue, otherwise
	// holds every message sent to it for its whole retention period.
	MaxRetention time.Duration
}

// StartWith is Start with options.
func StartWith(addr string, o Options) (*Emulator, error) {
	tick := o.Tick
	if tick <= 0 {
		return nil, errors.New("sqslocal: tick must be positive")
	}
	if o.MaxRetention < 0 {
		return nil, errors.New("sqslocal: max retention must not be negative")
	}
	if !running.TryLock() {
		return nil, errors.New("sqslocal: an emulator is already running in this process")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		running.Unlock()
		return nil, err
	}
	// goaws logs every message body at info level, and a warning on every
	// empty long poll.
	logrus.SetLevel(logrus.ErrorLevel)
	logrus.SetOutput(io.Discard)

	host, port, _ := net.SplitHostPort(ln.Addr().String())
	env := &models.CurrentEnvironment
	env.Host, env.Port, env.Region, env.AccountID = host, port, "", AccountID
	env.EnableDuplicates = true // FIFO deduplication (the flag's name is inverted)
	env.QueueAttributeDefaults.VisibilityTimeout = 30
	models.SyncQueues.Lock()
	models.SyncQueues.Queues = map[string]*models.Queue{}
	models.SyncQueues.Unlock()

	e := &Emulator{
		URL:     "http://" + ln.Addr().String(),
		st:      newState(o.MaxRetention),
		quit:    make(chan bool),
		closing: make(chan struct{}),
	}
	h := &handler{goaws: router.New(), st: e.st, poll: min(tick, time.Second), closing: e.closing}
	e.srv = &http.Server{Handler: e.track(h), ReadHeaderTimeout: 10 * time.Second}
	go gosqs.PeriodicTasks(tick, e.quit)
	e.done.Add(2)
	go func() {
		defer e.done.Done()
		e.srv.Serve(ln)
	}()
	go func() {
		defer e.done.Done()
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				e.st.sweep(now)
			case <-e.closing:
				return
			}
		}
	}()
	return e, nil
}

// track counts requests in progress, so Close can wait for them: a long
// poll outliving its emulator would take messages from the next one.
func (e *Emulator) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			http.Error(w, "sqslocal is closing", http.StatusServiceUnavailable)
			return
		}
		e.requests.Add(1)
		e.mu.Unlock()
		defer e.requests.Done()
		h.ServeHTTP(w, r)
	})
}

// Close stops the emulator; its queues are gone.
func (e *Emulator) Close() error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	close(e.quit)
	close(e.closing)
	err := e.srv.Close()
	e.done.Wait()
	e.requests.Wait()
	running.Unlock()
	return err
}
