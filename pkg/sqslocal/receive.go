package sqslocal

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/Admiral-Piett/goaws/app/models"
	"github.com/Admiral-Piett/goaws/app/utils"
	"github.com/google/uuid"
)

// receiveInput is a ReceiveMessage request. Pointers tell "absent" from 0:
// an absent wait or visibility timeout means the queue's own.
type receiveInput struct {
	AttributeNames              []string
	MessageSystemAttributeNames []string
	MessageAttributeNames       []string
	MaxNumberOfMessages         *int
	VisibilityTimeout           *int
	WaitTimeSeconds             *int
}

func (c call) receiveInput() (receiveInput, bool) {
	var in receiveInput
	if c.json {
		return in, json.Unmarshal(c.body, &in) == nil
	}
	form := c.form()
	list := func(prefix string) []string {
		var out []string
		for i := 1; form.Has(prefix + "." + strconv.Itoa(i)); i++ {
			out = append(out, form.Get(prefix+"."+strconv.Itoa(i)))
		}
		return out
	}
	in.AttributeNames = list("AttributeName")
	in.MessageSystemAttributeNames = list("MessageSystemAttributeName")
	in.MessageAttributeNames = list("MessageAttributeName")
	ok := true
	for name, p := range map[string]**int{
		"MaxNumberOfMessages": &in.MaxNumberOfMessages, "VisibilityTimeout": &in.VisibilityTimeout, "WaitTimeSeconds": &in.WaitTimeSeconds,
	} {
		if form.Has(name) {
			n, err := strconv.Atoi(form.Get(name))
			ok = ok && err == nil
			*p = &n
		}
	}
	return in, ok
}

// check applies SQS's limits; goaws has none.
func (in receiveInput) check() string {
	switch {
	case in.MaxNumberOfMessages != nil && (*in.MaxNumberOfMessages < 1 || *in.MaxNumberOfMessages > 10):
		return "MaxNumberOfMessages must be between 1 and 10"
	case in.VisibilityTimeout != nil && (*in.VisibilityTimeout < 0 || *in.VisibilityTimeout > 43200):
		return "VisibilityTimeout must be between 0 and 43200"
	case in.WaitTimeSeconds != nil && (*in.WaitTimeSeconds < 0 || *in.WaitTimeSeconds > 20):
		return "WaitTimeSeconds must be between 0 and 20"
	}
	return ""
}

// receive serves ReceiveMessage on a FIFO queue, long polling until a
// message can be delivered, the wait ends, or the client goes away.
func (h *handler) receive(w http.ResponseWriter, c call) {
	in, ok := c.receiveInput()
	if !ok {
		c.goawsError(w, "InvalidParameterValue")
		return
	}
	if msg := in.check(); msg != "" {
		c.fail(w, "InvalidParameterValue", msg)
		return
	}
	ctx := c.req.Context()
	var deadline time.Time
	for first := true; ; first = false {
		changed := h.st.watch(c.queue)
		msgs, wake, found := h.take(c.queue, in)
		now := time.Now()
		if !found {
			c.goawsError(w, "QueueNotFound")
			return
		}
		if first {
			deadline = now.Add(time.Duration(h.waitSeconds(c.queue, in)) * time.Second)
		}
		if len(msgs) > 0 || !now.Before(deadline) {
			c.replyMessages(w, msgs)
			return
		}
		next := now.Add(h.poll)
		if deadline.Before(next) {
			next = deadline
		}
		if !wake.IsZero() && wake.Before(next) {
			next = wake.Add(time.Millisecond) // visibility ends strictly after its time
		}
		timer := time.NewTimer(time.Until(next))
		select {
		case <-changed:
		case <-timer.C:
		case <-ctx.Done():
		case <-h.closing:
		}
		timer.Stop()
		if ctx.Err() != nil || isClosed(h.closing) {
			c.replyMessages(w, nil)
			return
		}
		if d := minRescan - time.Since(now); d > 0 {
			time.Sleep(d)
		}
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (h *handler) waitSeconds(name string, in receiveInput) int {
	if in.WaitTimeSeconds != nil {
		return *in.WaitTimeSeconds
	}
	models.SyncQueues.RLock()
	defer models.SyncQueues.RUnlock()
	if q, ok := models.SyncQueues.Queues[name]; ok {
		return q.ReceiveMessageWaitTimeSeconds
	}
	return 0
}

func (c call) replyMessages(w http.ResponseWriter, msgs []*models.ResultMessage) {
	c.reply(w, http.StatusOK,
		struct {
			Messages []*models.ResultMessage `json:"Messages,omitempty"`
		}{msgs},
		models.ReceiveMessageResponse{
			Xmlns:    models.BaseXmlns,
			Result:   models.ReceiveMessageResult{Messages: msgs},
			Metadata: models.BaseResponseMetadata,
		})
}

// take delivers what SQS FIFO would deliver now, under goaws's lock: while
// a group has a message in flight, nothing more of it; otherwise the
// group's oldest messages, in order. The first group with a message ready
// fills the answer first, then the next. wake is when a message in flight
// or delayed may next become deliverable. found is false if the queue is
// gone.
func (h *handler) take(name string, in receiveInput) (out []*models.ResultMessage, wake time.Time, found bool) {
	var dlqs []string
	defer func() {
		for _, n := range dlqs {
			h.st.notify(n)
		}
	}()
	models.SyncQueues.Lock()
	defer models.SyncQueues.Unlock()
	q, ok := models.SyncQueues.Queues[name]
	if !ok || !q.IsFIFO {
		return nil, time.Time{}, false
	}
	now := time.Now()
	earliest := func(t time.Time) {
		if wake.IsZero() || t.Before(wake) {
			wake = t
		}
	}

	// End lapsed visibility timeouts (and redrive) as goaws's periodic
	// task does, whichever of the two gets there first; note the groups
	// that have a message in flight.
	busy := map[string]bool{}
	n := 0
	for i := range q.Messages {
		m := &q.Messages[i]
		if m.ReceiptHandle != "" && m.VisibilityTimeout.Before(now) {
			m.ReceiptHandle, m.ReceiptTime = "", now.UTC()
			m.Retry++
			if dlq := q.DeadLetterQueue; dlq != nil && dlq != q && q.MaxReceiveCount > 0 && m.Retry >= q.MaxReceiveCount {
				h.st.queue(dlq).info(m) // numbered in the dead-letter queue
				dlq.Messages = append(dlq.Messages, *m)
				dlqs = append(dlqs, dlq.Name)
				continue
			}
		}
		if m.ReceiptHandle != "" {
			busy[m.GroupID] = true
			earliest(m.VisibilityTimeout)
		}
		if n != i {
			q.Messages[n] = *m
		}
		n++
	}
	clear(q.Messages[n:])
	q.Messages = q.Messages[:n]

	max := 1
	if in.MaxNumberOfMessages != nil {
		max = *in.MaxNumberOfMessages
	}
	var groups []string
	picked := map[string][]int{}
	for i := range q.Messages {
		m := &q.Messages[i]
		if busy[m.GroupID] {
			continue
		}
		if showAt := m.SentTime.Add(time.Duration(m.DelaySecs) * time.Second); !showAt.Before(now) {
			busy[m.GroupID] = true // a delayed message holds back the rest of its group
			earliest(showAt)
			continue
		}
		if len(picked[m.GroupID]) == 0 {
			if len(groups) == max {
				// Each group before it gives at least one message: no
				// group after the max-th can be in the answer.
				continue
			}
			groups = append(groups, m.GroupID)
		}
		if len(picked[m.GroupID]) < max {
			picked[m.GroupID] = append(picked[m.GroupID], i)
		}
		if len(picked[groups[0]]) == max {
			break
		}
	}

	visibility := q.VisibilityTimeout
	if in.VisibilityTimeout != nil {
		visibility = *in.VisibilityTimeout
	}
	qs := h.st.queue(q)
	for _, g := range groups {
		for _, i := range picked[g] {
			if len(out) == max {
				return out, wake, true
			}
			m := &q.Messages[i]
			m.ReceiptHandle = m.Uuid + "#" + uuid.NewString() // goaws's form
			m.ReceiptTime = now.UTC()
			m.VisibilityTimeout = now.Add(time.Duration(visibility) * time.Second)
			m.NumberOfReceives++
			info := qs.info(m)
			if info.firstReceive == 0 {
				info.firstReceive = now.UnixMilli()
				qs.messages[m.Uuid] = info
			}
			out = append(out, result(m, info, in))
		}
	}
	return out, wake, true
}

// result is a received message as SQS returns it: only the attributes asked
// for.
func result(m *models.SqsMessage, info messageInfo, in receiveInput) *models.ResultMessage {
	r := &models.ResultMessage{
		MessageId:     m.Uuid,
		ReceiptHandle: m.ReceiptHandle,
		MD5OfBody:     m.MD5OfMessageBody,
		Body:          m.MessageBody,
	}
	if r.MD5OfBody == "" {
		r.MD5OfBody = utils.GetMD5Hash(m.MessageBody)
	}
	if attrs := messageAttributes(m.MessageAttributes, in.MessageAttributeNames); len(attrs) > 0 {
		r.MessageAttributes, r.MD5OfMessageAttributes = attrs, utils.HashAttributes(attrs)
	}
	names := append(append([]string(nil), in.AttributeNames...), in.MessageSystemAttributeNames...)
	all := map[string]string{
		"SenderId":                         models.CurrentEnvironment.AccountID,
		"SentTimestamp":                    millis(m.SentTime),
		"ApproximateReceiveCount":          strconv.Itoa(m.NumberOfReceives),
		"ApproximateFirstReceiveTimestamp": strconv.FormatInt(info.firstReceive, 10),
		"SequenceNumber":                   seqString(info.seq),
		"MessageGroupId":                   m.GroupID,
		"MessageDeduplicationId":           m.DeduplicationID,
	}
	for _, n := range names {
		if n == "All" {
			r.Attributes = all
			break
		}
		if v, ok := all[n]; ok {
			if r.Attributes == nil {
				r.Attributes = map[string]string{}
			}
			r.Attributes[n] = v
		}
	}
	if r.Attributes != nil && m.DeduplicationID == "" {
		delete(r.Attributes, "MessageDeduplicationId")
	}
	return r
}

func millis(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// messageAttributes selects by SQS's rules: "All" or ".*", a name, or a
// prefix such as "oms.*".
func messageAttributes(attrs map[string]models.MessageAttribute, names []string) map[string]models.MessageAttribute {
	var out map[string]models.MessageAttribute
	for k, v := range attrs {
		for _, n := range names {
			prefix, isPrefix := strings.CutSuffix(n, ".*")
			if n == "All" || n == ".*" || n == k || isPrefix && strings.HasPrefix(k, prefix+".") {
				if out == nil {
					out = map[string]models.MessageAttribute{}
				}
				out[k] = v
				break
			}
		}
	}
	return out
}
