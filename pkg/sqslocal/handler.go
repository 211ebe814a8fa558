package sqslocal

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Admiral-Piett/goaws/app/interfaces"
	"github.com/Admiral-Piett/goaws/app/models"
	"github.com/Admiral-Piett/goaws/app/utils"
)

// handler sits in front of goaws's router. It serves ReceiveMessage and
// SendMessage for FIFO queues, and SendMessageBatch, DeleteMessage and
// DeleteMessageBatch for every queue itself, on goaws's queue state and
// under goaws's lock; everything else goes to goaws, which finds the
// messages and receipt handles it expects.
type handler struct {
	goaws http.Handler
	st    *state
	// gate keeps goaws's map writes (CreateQueue, DeleteQueue) apart from
	// the reads many of its handlers make of models.SyncQueues.Queues
	// without its lock.
	gate    sync.RWMutex
	poll    time.Duration // longest a waiting receive goes without looking
	closing <-chan struct{}
}

const (
	jsonContentType = "application/x-amz-json-1.0" // goaws's test for the JSON protocol
	maxRequestBytes = 64 << 20
	// minRescan spaces a waiting receive's looks when its queue changes
	// often but yields nothing for it (a busy group).
	minRescan = 5 * time.Millisecond
)

// call is what the interception needs to know of a request.
type call struct {
	json   bool // AWS JSON protocol; otherwise the query protocol
	action string
	queue  string // queue name; "" if the request names none
	req    *http.Request
	body   []byte
}

// request returns the request with a fresh copy of its body, for a parser
// that reads it.
func (c call) request() *http.Request {
	r := c.req.Clone(c.req.Context())
	r.Body = io.NopCloser(bytes.NewReader(c.body))
	r.Form, r.PostForm = nil, nil
	return r
}

// mutating actions go to goaws; a receive waiting on the queue looks again
// after them.
var mutating = map[string]bool{
	"SendMessage": true, "DeleteMessage": true, "DeleteMessageBatch": true,
	"ChangeMessageVisibility": true, "ChangeMessageVisibilityBatch": true,
	"PurgeQueue": true, "DeleteQueue": true, "SetQueueAttributes": true,
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err != nil {
		http.Error(w, "cannot read request body", http.StatusBadRequest)
		return
	}
	c := parseCall(r, body)
	switch c.action {
	case "ReceiveMessage":
		if queueIs(c.queue, true) {
			h.receive(w, c)
			return
		}
	case "SendMessage":
		if queueIs(c.queue, true) {
			h.sendMessage(w, c)
			return
		}
	case "SendMessageBatch":
		if queueIs(c.queue, false) {
			h.sendMessageBatch(w, c)
			return
		}
	case "DeleteMessage":
		if queueIs(c.queue, false) {
			h.deleteMessage(w, c)
			return
		}
	case "DeleteMessageBatch":
		if queueIs(c.queue, false) {
			h.deleteMessageBatch(w, c)
			return
		}
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	h.passThrough(rec, r, c)
	if mutating[c.action] && c.queue != "" {
		if c.action == "PurgeQueue" && rec.status == http.StatusOK {
			h.st.purged(c.queue)
		}
		h.st.notify(c.queue)
	}
}

func (h *handler) passThrough(w http.ResponseWriter, r *http.Request, c call) {
	switch {
	case c.action == "CreateQueue" || c.action == "DeleteQueue":
		h.gate.Lock()
		defer h.gate.Unlock()
	case c.action == "ReceiveMessage" && queueIs(c.queue, false):
		// A standard queue's long poll must not hold up queue creation;
		// its one unlocked read, at the start, remains goaws's race.
	default:
		h.gate.RLock()
		defer h.gate.RUnlock()
	}
	h.goaws.ServeHTTP(w, r)
}

// parseCall finds the action and queue as goaws's router does: the action
// from X-Amz-Target (JSON) or the Action parameter (query), the queue from
// QueueUrl or else from the path (/{account}/{queue}).
func parseCall(r *http.Request, body []byte) call {
	c := call{req: r, body: body, json: r.Header.Get("Content-Type") == jsonContentType}
	var queueURL string
	if c.json {
		_, c.action, _ = strings.Cut(r.Header.Get("X-Amz-Target"), ".")
		var in struct{ QueueUrl string }
		_ = json.Unmarshal(body, &in)
		queueURL = in.QueueUrl
	} else {
		form := c.form()
		c.action, queueURL = form.Get("Action"), form.Get("QueueUrl")
	}
	if queueURL != "" {
		c.queue = queueURL[strings.LastIndex(queueURL, "/")+1:]
	} else if segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/"); len(segs) == 2 {
		c.queue = segs[1]
	}
	return c
}

// form is the query protocol's parameters, parsed as goaws parses them.
func (c call) form() url.Values {
	r := c.request()
	if err := r.ParseForm(); err != nil {
		return url.Values{}
	}
	return r.Form
}

// queueIs reports whether the queue exists and, if fifo, is a FIFO queue.
// For a queue that does not exist goaws answers, with its own error.
func queueIs(name string, fifo bool) bool {
	models.SyncQueues.RLock()
	defer models.SyncQueues.RUnlock()
	q, ok := models.SyncQueues.Queues[name]
	return ok && (!fifo || q.IsFIFO)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// reply answers in the call's protocol: jsonBody as JSON (nil: no body),
// or xmlBody (one of goaws's response types) as XML, as goaws's router
// encodes them.
func (c call) reply(w http.ResponseWriter, status int, jsonBody, xmlBody any) {
	if c.json {
		w.Header().Set("x-amzn-RequestId", models.BaseResponseMetadata.RequestId)
		w.Header().Set("Content-Type", jsonContentType)
		w.WriteHeader(status)
		if jsonBody != nil {
			_ = json.NewEncoder(w).Encode(jsonBody)
		}
		return
	}
	out, err := xml.Marshal(xmlBody)
	if err != nil {
		http.Error(w, "cannot encode response", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	_, _ = w.Write(out)
}

// goawsError answers with one of goaws's own errors, e.g. "QueueNotFound".
func (c call) goawsError(w http.ResponseWriter, key string) {
	status, resp := utils.CreateErrorResponseV1(key, true)
	c.replyError(w, status, resp)
}

// fail answers with an SQS error that goaws does not define.
func (c call) fail(w http.ResponseWriter, code, message string) {
	c.replyError(w, http.StatusBadRequest, models.ErrorResponse{
		Result:    models.ErrorResult{Type: "Sender", Code: code, Message: message},
		RequestId: models.BaseResponseMetadata.RequestId,
	})
}

func (c call) replyError(w http.ResponseWriter, status int, resp interfaces.AbstractResponseBody) {
	if e, ok := resp.(models.ErrorResponse); ok && c.json {
		// How SQS's JSON protocol carries the query-protocol error code.
		w.Header().Set("x-amzn-query-error", e.Result.Code+";Sender")
	}
	c.reply(w, status, resp.GetResult(), resp)
}
