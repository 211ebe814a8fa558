package sqslocal

import (
	"net/http"
	"time"

	"github.com/Admiral-Piett/goaws/app/models"
	"github.com/Admiral-Piett/goaws/app/utils"
	"github.com/google/uuid"
)

// outgoing is one message to enqueue, from SendMessage or a batch entry.
type outgoing struct {
	body         string
	attributes   map[string]models.MessageAttribute
	group, dedup string
	delaySeconds int
}

// sent is what a send answers with.
type sent struct {
	messageID, seq, md5Body, md5Attributes string
}

// refusal is a send SQS refuses: an error code and message.
type refusal struct{ code, message string }

// check applies the rules goaws skips or applies only to single sends.
func (o outgoing) check(q *models.Queue) *refusal {
	if q.MaximumMessageSize > 0 && len(o.body) > q.MaximumMessageSize {
		return &refusal{"InvalidParameterValue", "One or more parameters are invalid. Reason: Message must be shorter than the queue's MaximumMessageSize."}
	}
	if q.IsFIFO && o.group == "" {
		return &refusal{"MissingParameter", "The request must contain the parameter MessageGroupId."}
	}
	return nil
}

// enqueue appends the message to q, unless it is a FIFO duplicate within
// the deduplication window: then it answers as for the first copy. The
// caller holds models.SyncQueues.
func (h *handler) enqueue(q *models.Queue, o outgoing, now time.Time) sent {
	s := sent{md5Body: utils.GetMD5Hash(o.body)}
	if len(o.attributes) > 0 {
		s.md5Attributes = utils.HashAttributes(o.attributes)
	}
	delay := q.DelaySeconds
	if o.delaySeconds != 0 {
		delay = o.delaySeconds
	}
	id := uuid.New()
	m := models.SqsMessage{
		MessageBody:            o.body,
		Uuid:                   id.String(),
		MD5OfMessageBody:       s.md5Body,
		MD5OfMessageAttributes: s.md5Attributes,
		MessageAttributes:      o.attributes,
		GroupID:                o.group,
		DeduplicationID:        o.dedup,
		SentTime:               now,
		DelaySecs:              delay,
	}
	if len(o.attributes) == 0 {
		m.MessageAttributes = nil
	}
	if !q.IsFIFO {
		q.Messages = append(q.Messages, m)
		s.messageID = m.Uuid
		return s
	}
	qs := h.st.queue(q)
	// goaws's flag: EnableDuplicates on means deduplicate.
	dedup := q.EnableDuplicates && o.dedup != ""
	if dedup {
		if first, ok := qs.duplicate(o.dedup, now, h.st.dedupWindow); ok {
			s.messageID, s.seq = first.messageID.String(), seqString(first.seq)
			return s
		}
	}
	seq := qs.nextSeq()
	s.messageID, s.seq = m.Uuid, seqString(seq)
	q.Messages = append(q.Messages, m)
	qs.add(m.Uuid, messageInfo{seq: seq})
	if dedup {
		qs.remember(o.dedup, sentMessage{at: now.UnixNano(), messageID: id, seq: seq})
	}
	return s
}

// sendMessage serves SendMessage on a FIFO queue, so that sequence numbers
// and deduplication are sqslocal's.
func (h *handler) sendMessage(w http.ResponseWriter, c call) {
	in := models.NewSendMessageRequest()
	if !utils.TransformRequest(in, c.request(), false) {
		c.goawsError(w, "InvalidParameterValue")
		return
	}
	o := outgoing{body: in.MessageBody, attributes: in.MessageAttributes, group: in.MessageGroupId, dedup: in.MessageDeduplicationId, delaySeconds: in.DelaySeconds}
	models.SyncQueues.Lock()
	q, ok := models.SyncQueues.Queues[c.queue]
	var s sent
	var refused *refusal
	if ok {
		if refused = o.check(q); refused == nil {
			s = h.enqueue(q, o, time.Now())
		}
	}
	models.SyncQueues.Unlock()
	switch {
	case !ok:
		c.goawsError(w, "QueueNotFound")
		return
	case refused != nil:
		c.fail(w, refused.code, refused.message)
		return
	}
	h.st.notify(c.queue)
	res := models.SendMessageResult{MD5OfMessageAttributes: s.md5Attributes, MD5OfMessageBody: s.md5Body, MessageId: s.messageID, SequenceNumber: s.seq}
	c.reply(w, http.StatusOK, res, models.SendMessageResponse{Xmlns: models.BaseXmlns, Result: res, Metadata: models.BaseResponseMetadata})
}

// batchResult is SendMessageBatch's answer in the JSON protocol. goaws
// names the lists as in the XML protocol, which the SDK does not read.
type batchResult struct {
	Successful []batchResultEntry             `json:"Successful"`
	Failed     []models.BatchResultErrorEntry `json:"Failed"`
}

type batchResultEntry struct {
	Id                     string
	MessageId              string
	MD5OfMessageBody       string
	MD5OfMessageAttributes string `json:",omitempty"`
	SequenceNumber         string `json:",omitempty"`
}

// sendMessageBatch serves SendMessageBatch on any queue: every entry is
// enqueued, or refused, under one lock.
func (h *handler) sendMessageBatch(w http.ResponseWriter, c call) {
	in := models.NewSendMessageBatchRequest()
	if !utils.TransformRequest(in, c.request(), false) {
		c.goawsError(w, "InvalidParameterValue")
		return
	}
	if code := batchSizeError(len(in.Entries)); code != "" {
		c.goawsError(w, code)
		return
	}
	ids := map[string]bool{}
	for _, e := range in.Entries {
		if ids[e.Id] {
			c.goawsError(w, "BatchEntryIdsNotDistinct")
			return
		}
		ids[e.Id] = true
	}

	res := batchResult{Successful: []batchResultEntry{}, Failed: []models.BatchResultErrorEntry{}}
	models.SyncQueues.Lock()
	q, ok := models.SyncQueues.Queues[c.queue]
	if ok {
		now := time.Now()
		for _, e := range in.Entries {
			o := outgoing{body: e.MessageBody, attributes: e.MessageAttributes, group: e.MessageGroupId, dedup: e.MessageDeduplicationId, delaySeconds: e.DelaySeconds}
			if r := o.check(q); r != nil {
				res.Failed = append(res.Failed, models.BatchResultErrorEntry{Id: e.Id, Code: r.code, Message: r.message, SenderFault: true})
				continue
			}
			s := h.enqueue(q, o, now)
			res.Successful = append(res.Successful, batchResultEntry{
				Id: e.Id, MessageId: s.messageID, MD5OfMessageBody: s.md5Body, MD5OfMessageAttributes: s.md5Attributes, SequenceNumber: s.seq,
			})
		}
	}
	models.SyncQueues.Unlock()
	if !ok {
		c.goawsError(w, "QueueNotFound")
		return
	}
	h.st.notify(c.queue)
	xmlRes := models.SendMessageBatchResult{Entry: make([]models.SendMessageBatchResultEntry, len(res.Successful)), Error: res.Failed}
	for i, s := range res.Successful {
		xmlRes.Entry[i] = models.SendMessageBatchResultEntry(s)
	}
	c.reply(w, http.StatusOK, res, models.SendMessageBatchResponse{Xmlns: models.BaseXmlns, Result: xmlRes, Metadata: models.BaseResponseMetadata})
}

// batchSizeError is SQS's error code for a batch of n entries, or "".
func batchSizeError(n int) string {
	switch {
	case n == 0:
		return "EmptyBatchRequest"
	case n > 10:
		return "TooManyEntriesInBatchRequest"
	}
	return ""
}
