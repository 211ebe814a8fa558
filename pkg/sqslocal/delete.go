package sqslocal

import (
	"net/http"

	"github.com/Admiral-Piett/goaws/app/models"
	"github.com/Admiral-Piett/goaws/app/utils"
)

// deleteMessage serves DeleteMessage on every queue, answering as goaws
// does. goaws shifts the whole queue for each delete.
func (h *handler) deleteMessage(w http.ResponseWriter, c call) {
	in := models.NewDeleteMessageRequest()
	if !utils.TransformRequest(in, c.request(), false) {
		c.goawsError(w, "InvalidParameterValue")
		return
	}
	found, ok := h.remove(c.queue, []string{in.ReceiptHandle})
	switch {
	case !ok:
		c.goawsError(w, "QueueNotFound")
	case !found[0]:
		c.goawsError(w, "MessageDoesNotExist")
	default:
		h.st.notify(c.queue)
		c.reply(w, http.StatusOK, nil, models.DeleteMessageResponse{Xmlns: models.BaseXmlns, Metadata: models.BaseResponseMetadata})
	}
}

// deleteMessageBatch serves DeleteMessageBatch on every queue, answering as
// goaws does. goaws copies the whole queue into a new slice for each call:
// with a backlog, every call made garbage the size of the queue.
func (h *handler) deleteMessageBatch(w http.ResponseWriter, c call) {
	in := models.NewDeleteMessageBatchRequest()
	if !utils.TransformRequest(in, c.request(), false) {
		c.goawsError(w, "InvalidParameterValue")
		return
	}
	if code := batchSizeError(len(in.Entries)); code != "" {
		c.goawsError(w, code)
		return
	}
	ids := map[string]bool{}
	handles := make([]string, len(in.Entries))
	for i, e := range in.Entries {
		if ids[e.Id] {
			c.goawsError(w, "BatchEntryIdsNotDistinct")
			return
		}
		ids[e.Id] = true
		handles[i] = e.ReceiptHandle
	}
	found, ok := h.remove(c.queue, handles)
	if !ok {
		c.goawsError(w, "QueueNotFound")
		return
	}
	res := models.DeleteMessageBatchResult{Successful: []models.DeleteMessageBatchResultEntry{}}
	for i, e := range in.Entries {
		if found[i] {
			res.Successful = append(res.Successful, models.DeleteMessageBatchResultEntry{Id: e.Id})
		} else {
			res.Failed = append(res.Failed, models.BatchResultErrorEntry{Id: e.Id, Code: "1", Message: "Message not found", SenderFault: true})
		}
	}
	if len(res.Successful) > 0 {
		h.st.notify(c.queue)
	}
	c.reply(w, http.StatusOK, res, models.DeleteMessageBatchResponse{Xmlns: models.BaseXmlns, Result: res, Metadata: models.BaseResponseMetadata})
}

// remove deletes from the named queue the messages that hold the given
// receipt handles, in one pass that keeps the rest in order and clears the
// slots it vacates, and drops sqslocal's records of them. It reports which
// handles it found, and whether the queue exists.
func (h *handler) remove(name string, handles []string) (found []bool, ok bool) {
	want := make(map[string][]int, len(handles)) // handle -> entries
	for i, rh := range handles {
		if rh != "" {
			want[rh] = append(want[rh], i)
		}
	}
	found = make([]bool, len(handles))
	models.SyncQueues.Lock()
	defer models.SyncQueues.Unlock()
	q, ok := models.SyncQueues.Queues[name]
	if !ok {
		return found, false
	}
	qs := h.st.queues[q]
	n := 0
	for i := 0; i < len(q.Messages); i++ {
		if len(want) == 0 {
			// Received messages are mostly the oldest: the rest moves in
			// one copy, or not at all.
			if n != i {
				n += copy(q.Messages[n:], q.Messages[i:])
			} else {
				n = len(q.Messages)
			}
			break
		}
		m := &q.Messages[i]
		if entries, hit := want[m.ReceiptHandle]; hit {
			for _, e := range entries {
				found[e] = true
			}
			delete(want, m.ReceiptHandle)
			// goaws's own FIFO lock and deduplication ids, as its delete
			// does (sqslocal uses neither).
			q.UnlockGroup(m.GroupID)
			delete(q.Duplicates, m.DeduplicationID)
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
	clear(q.Messages[n:])
	q.Messages = q.Messages[:n]
	return found, true
}
