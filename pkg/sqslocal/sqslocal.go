// Package sqslocal runs goaws, an SQS emulator speaking the JSON protocol,
// inside this process. It is for local stacks and tests; production uses
// real SQS. See docs/sqs.md for where goaws differs from SQS.
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
	URL  string
	srv  *http.Server
	quit chan bool
	done chan struct{}
}

var running sync.Mutex // goaws keeps its queues in package globals

// Start serves goaws on addr ("127.0.0.1:0" picks a port). Only one
// emulator may run per process. tick is how often visibility timeouts,
// redrive and deduplication expiry are processed.
func Start(addr string, tick time.Duration) (*Emulator, error) {
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
		URL:  "http://" + ln.Addr().String(),
		srv:  &http.Server{Handler: router.New(), ReadHeaderTimeout: 10 * time.Second},
		quit: make(chan bool),
		done: make(chan struct{}),
	}
	go gosqs.PeriodicTasks(tick, e.quit)
	go func() {
		defer close(e.done)
		e.srv.Serve(ln)
	}()
	return e, nil
}

// Close stops the emulator; its queues are gone.
func (e *Emulator) Close() error {
	close(e.quit)
	err := e.srv.Close()
	<-e.done
	running.Unlock()
	return err
}
