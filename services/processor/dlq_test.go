package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	wsqs "github.com/ThreeDotsLabs/watermill-aws/sqs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/logging"
	oms "github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderpb"
	"github.com/omsdev/oms/pkg/queue"
)

// actorless is a command the processor dead-letters at once.
func actorless(commandID, orderID string) string {
	return `{"commandId":"` + commandID + `","orderId":"` + orderID + `","correlationId":"corr-` + orderID[:8] +
		`","cancel":{"reason":"no actor"}}`
}

// capture is a publisher that keeps what it is given.
type capture struct {
	mu   sync.Mutex
	msgs []*message.Message
	err  error
}

func (c *capture) Publish(_ string, msgs ...*message.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	c.msgs = append(c.msgs, msgs...)
	return nil
}
func (c *capture) Close() error { return nil }

func logLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		out = append(out, rec)
	}
	return out
}

// Two different commands that share a request id both reach the
// dead-letter queue, each with one log line saying why.
func TestDeadLetteringIsUniqueAndLogged(t *testing.T) {
	var logs bytes.Buffer
	log := logging.New(&logs, "processor", "info")
	dlq := &capture{}
	poison, err := middleware.PoisonQueueWithFilter(deadLetterPublisher{dlq, log}, "dlq.fifo", permanent)
	if err != nil {
		t.Fatal(err)
	}
	a := &applier{log: log}
	h := poison(func(m *message.Message) ([]*message.Message, error) { return nil, a.handle(m) })

	orders := []string{uuid.NewString(), uuid.NewString()}
	for i, o := range orders {
		m := message.NewMessage("req-1", []byte(actorless("req-1", o))) // ingest's UUID is the request id
		m.Metadata.Set(queue.MetaMessageID, fmt.Sprintf("sqs-%d", i))
		m.Metadata.Set("correlation_id", "corr-"+o[:8])
		m.Metadata.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		if _, err := h(m); err != nil {
			t.Fatalf("poisoned message not acked: %v", err)
		}
	}
	garbage := message.NewMessage("g", []byte("not a command"))
	garbage.Metadata.Set(queue.MetaMessageID, "sqs-g")
	if _, err := h(garbage); err != nil {
		t.Fatal(err)
	}

	if len(dlq.msgs) != 3 {
		t.Fatalf("dead-lettered %d, want 3", len(dlq.msgs))
	}
	dedup := map[string]bool{}
	for i, m := range dlq.msgs {
		// What SQS would be sent.
		sm, err := wsqs.DefaultMarshalerUnmarshaler{}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		in, err := queue.FIFOSendInput(context.Background(), "http://q/dlq.fifo", sm)
		if err != nil {
			t.Fatal(err)
		}
		dedup[aws.ToString(in.MessageDeduplicationId)] = true
		wantGroup := "undecodable"
		if i < 2 {
			wantGroup = orders[i]
		}
		if g := aws.ToString(in.MessageGroupId); g != wantGroup {
			t.Errorf("message %d: group %s, want %s", i, g, wantGroup)
		}
		if _, ok := in.MessageAttributes[queue.AttrPoisonedAt]; !ok {
			t.Errorf("message %d: no %s", i, queue.AttrPoisonedAt)
		}
		if _, ok := in.MessageAttributes[middleware.PoisonedSubscriberKey]; ok {
			t.Errorf("message %d: %s kept", i, middleware.PoisonedSubscriberKey)
		}
		if n := len(in.MessageAttributes); n > 9 {
			t.Errorf("message %d: %d attributes, leaving no room (SQS allows 10)", i, n)
		}
	}
	if len(dedup) != 3 {
		t.Errorf("deduplication ids not unique: %v", dedup)
	}

	var warned []map[string]any
	for _, rec := range logLines(t, &logs) {
		if rec["msg"] == "command dead-lettered" {
			warned = append(warned, rec)
		}
	}
	if len(warned) != 3 {
		t.Fatalf("%d dead-letter log lines, want 3:\n%s", len(warned), logs.String())
	}
	for i, o := range orders {
		rec := warned[i]
		if rec["level"] != "WARN" || rec["command_id"] != "req-1" || rec["order_id"] != o || rec["command"] != "cancel" ||
			rec["correlation_id"] != "corr-"+o[:8] || !strings.Contains(fmt.Sprint(rec["reason"]), "has no actor") ||
			rec["message_id"] != fmt.Sprintf("sqs-%d", i) {
			t.Errorf("log line %v", rec)
		}
	}
	if rec := warned[2]; rec["order_id"] != "undecodable" || !strings.Contains(fmt.Sprint(rec["reason"]), "decode command") {
		t.Errorf("garbage log line %v", rec)
	}
}

// A dead-letter queue that refuses the message: the command is nacked (SQS
// redelivers it) and the line says so.
func TestDeadLetterFailureIsLoggedAsError(t *testing.T) {
	var logs bytes.Buffer
	p := deadLetterPublisher{&capture{err: errors.New("queue gone")}, logging.New(&logs, "processor", "info")}
	m := message.NewMessage("x", []byte("garbage"))
	m.Metadata.Set(middleware.ReasonForPoisonedKey, "decode command: bad")
	if err := p.Publish("dlq.fifo", m); err == nil {
		t.Fatal("error swallowed")
	}
	lines := logLines(t, &logs)
	if len(lines) != 1 || lines[0]["level"] != "ERROR" || lines[0]["reason"] != "decode command: bad" || lines[0]["err"] != "queue gone" {
		t.Errorf("log: %v", lines)
	}
}

func TestDescribe(t *testing.T) {
	order := uuid.NewString()
	pb, err := orderpb.EncodeCommandAs(oms.Command{ID: "c-2", OrderID: order, CorrelationID: "pb-corr",
		Actor: oms.Actor{ID: "service:s"}, Body: oms.ShipOrder{Carrier: "c"}}, orderpb.ContentTypeProtobuf)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		body, contentType, group string
		want                     deadLetter
	}{
		"command": {actorless("c-1", order), "", "",
			deadLetter{OrderID: order, Command: "cancel", CommandID: "c-1", Reason: "r", CorrelationID: "corr-" + order[:8]}},
		"group wins": {actorless("c-1", order), "", "g",
			deadLetter{OrderID: "g", Command: "cancel", CommandID: "c-1", Reason: "r", CorrelationID: "corr-" + order[:8]}},
		"garbage": {"garbage", "", "",
			deadLetter{OrderID: "undecodable", Command: "pay", Reason: "r", CorrelationID: "attr-corr"}},
		"protobuf": {string(pb), orderpb.ContentTypeProtobuf, "",
			deadLetter{OrderID: order, Command: "ship", CommandID: "c-2", Reason: "r", CorrelationID: "pb-corr"}},
	} {
		attrs := map[string]string{middleware.ReasonForPoisonedKey: "r", "command": "pay", "correlation_id": "attr-corr",
			orderpb.ContentTypeKey: tc.contentType}
		get := func(k string) string { return attrs[k] }
		if got := describe([]byte(tc.body), get, tc.group); fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", name, got, tc.want)
		}
	}
}

func TestParseDLQArgs(t *testing.T) {
	for _, tc := range []struct {
		args string
		want string // the parsed command, or "usage"
	}{
		{"list", "list table 1000 false []"},
		{"list --output json --limit 5", "list json 5 false []"},
		{"list --output yaml", "usage"},
		{"list x", "usage"},
		{"list --limit 0", "usage"},
		{"show m-1", "show text 1000 false [m-1]"},
		{"show m-1 --output json", "show json 1000 false [m-1]"},
		{"show", "usage"},
		{"show a b", "usage"},
		{"redrive m-1 m-2", "redrive  1000 false [m-1 m-2]"},
		{"redrive --all", "redrive  1000 true []"},
		{"redrive", "usage"},
		{"redrive --all m-1", "usage"},
		{"redrive --output json m-1", "usage"},
		{"purge", "usage"},
		{"list --bogus", "usage"},
	} {
		c, err := parseDLQArgs(strings.Fields(tc.args))
		got := fmt.Sprintf("%s %s %d %v %v", c.name, c.output, c.limit, c.all, c.ids)
		if err != nil {
			if !errors.Is(err, errUsage) {
				t.Errorf("%q: %v is not a usage error", tc.args, err)
			}
			got = "usage"
		}
		if got != tc.want {
			t.Errorf("%q: %s, want %s", tc.args, got, tc.want)
		}
	}
}

// fakeSQS is an in-memory SQS: messages in order, visibility, FIFO
// deduplication, and the group reported on receive as real SQS does.
type fakeSQS struct {
	mu       sync.Mutex
	queues   map[string][]*fakeMsg // by URL
	dedup    map[string]bool       // url + dedup id
	n        int
	failSend func(*sqs.SendMessageInput) error
	onSend   func(*sqs.SendMessageInput) // after a send, outside the lock
}

type fakeMsg struct {
	m        types.Message
	receipt  string
	inFlight bool
}

func newFakeSQS() *fakeSQS {
	return &fakeSQS{queues: map[string][]*fakeMsg{}, dedup: map[string]bool{}}
}

func (f *fakeSQS) ReceiveMessage(_ context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &sqs.ReceiveMessageOutput{}
	for _, m := range f.queues[aws.ToString(in.QueueUrl)] {
		if len(out.Messages) == int(in.MaxNumberOfMessages) {
			break
		}
		if m.inFlight {
			continue
		}
		f.n++
		m.inFlight, m.receipt = true, fmt.Sprintf("r-%d", f.n)
		c := m.m
		c.ReceiptHandle = aws.String(m.receipt)
		out.Messages = append(out.Messages, c)
	}
	return out, nil
}

func (f *fakeSQS) find(url string, receipt *string) (int, *fakeMsg) {
	for i, m := range f.queues[url] {
		if m.inFlight && m.receipt == aws.ToString(receipt) {
			return i, m
		}
	}
	return -1, nil
}

func (f *fakeSQS) ChangeMessageVisibility(_ context.Context, in *sqs.ChangeMessageVisibilityInput, _ ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, m := f.find(aws.ToString(in.QueueUrl), in.ReceiptHandle)
	if m == nil {
		return nil, errors.New("MessageNotInFlight")
	}
	if in.VisibilityTimeout == 0 {
		m.inFlight = false
	}
	return &sqs.ChangeMessageVisibilityOutput{}, nil
}

func (f *fakeSQS) DeleteMessage(_ context.Context, in *sqs.DeleteMessageInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	url := aws.ToString(in.QueueUrl)
	i, _ := f.find(url, in.ReceiptHandle)
	if i < 0 {
		return nil, errors.New("ReceiptHandleIsInvalid")
	}
	f.queues[url] = append(f.queues[url][:i], f.queues[url][i+1:]...)
	return &sqs.DeleteMessageOutput{}, nil
}

func (f *fakeSQS) SendMessage(_ context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	if f.failSend != nil {
		if err := f.failSend(in); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	url := aws.ToString(in.QueueUrl)
	key := url + "/" + aws.ToString(in.MessageDeduplicationId)
	f.n++
	id := fmt.Sprintf("m-%d", f.n)
	if !f.dedup[key] {
		f.dedup[key] = true
		f.queues[url] = append(f.queues[url], &fakeMsg{m: types.Message{
			MessageId: aws.String(id), Body: in.MessageBody, MessageAttributes: in.MessageAttributes,
			Attributes: map[string]string{"MessageGroupId": aws.ToString(in.MessageGroupId)},
		}})
	}
	f.mu.Unlock()
	if f.onSend != nil {
		f.onSend(in)
	}
	return &sqs.SendMessageOutput{MessageId: aws.String(id)}, nil
}

// put adds a dead-letter message as the processor would and returns its id.
func (f *fakeSQS) put(t *testing.T, url, group, body, reason string, at time.Time) string {
	t.Helper()
	attrs := map[string]types.MessageAttributeValue{
		middleware.ReasonForPoisonedKey: {DataType: aws.String("String"), StringValue: aws.String(reason)},
		queue.AttrPoisonedAt:            {DataType: aws.String("String"), StringValue: aws.String(at.Format(time.RFC3339Nano))},
	}
	out, err := f.SendMessage(context.Background(), &sqs.SendMessageInput{
		QueueUrl: aws.String(url), MessageBody: aws.String(body), MessageAttributes: attrs,
		MessageGroupId: aws.String(group), MessageDeduplicationId: aws.String(uuid.NewString()),
	})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.MessageId)
}

func (f *fakeSQS) snapshot(url string) (visible, inFlight []types.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.queues[url] {
		if m.inFlight {
			inFlight = append(inFlight, m.m)
		} else {
			visible = append(visible, m.m)
		}
	}
	return visible, inFlight
}

var dlqNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func newTool(f *fakeSQS) (*dlqTool, *bytes.Buffer) {
	var out bytes.Buffer
	return &dlqTool{api: f, dlq: "dlq", commands: "cmds", commandQueue: "cmds.fifo", out: &out,
		now: func() time.Time { return dlqNow }, hold: time.Minute}, &out
}

func runTool(t *testing.T, tool *dlqTool, args string) error {
	t.Helper()
	c, err := parseDLQArgs(strings.Fields(args))
	if err != nil {
		t.Fatal(err)
	}
	return tool.exec(context.Background(), c)
}

func TestDLQListAndShow(t *testing.T) {
	f := newFakeSQS()
	o := uuid.NewString()
	id := f.put(t, "dlq", o, actorless("c-1", o), "command c-1 has no actor", dlqNow.Add(-90*time.Second))
	gid := f.put(t, "dlq", "undecodable", "garbage", "decode command: bad\nsecond line", dlqNow.Add(-time.Hour))
	tool, out := newTool(f)

	if err := runTool(t, tool, "list --output json"); err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := []map[string]any{
		{"message_id": id, "order_id": o, "command": "cancel", "command_id": "c-1", "reason": "command c-1 has no actor",
			"correlation_id": "corr-" + o[:8], "dead_lettered_at": "2026-11-26T11:58:30Z", "age_seconds": 90.0},
		{"message_id": gid, "order_id": "undecodable", "reason": "decode command: bad\nsecond line",
			"dead_lettered_at": "2026-11-26T11:00:00Z", "age_seconds": 3600.0},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("list json:\n got %v\nwant %v", rows, want)
	}
	if _, held := f.snapshot("dlq"); len(held) != 0 {
		t.Errorf("list left %d messages in flight", len(held))
	}

	out.Reset()
	if err := runTool(t, tool, "list"); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	for _, s := range []string{"MESSAGE ID", id, o, "cancel", "c-1", "1m30s", "command c-1 has no actor", "decode command: bad second line", "2 message(s)"} {
		if !strings.Contains(table, s) {
			t.Errorf("table lacks %q:\n%s", s, table)
		}
	}
	if n := strings.Count(table, "\n"); n != 4 {
		t.Errorf("table has %d lines, want 4 (header, 2 rows, count):\n%s", n, table)
	}

	out.Reset()
	if err := runTool(t, tool, "show "+id); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"message id", id, "reason", "has no actor", "attributes:", "reason_poisoned: command c-1 has no actor", "body:", actorless("c-1", o)} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("show lacks %q:\n%s", s, out)
		}
	}
	out.Reset()
	if err := runTool(t, tool, "show --output json "+gid); err != nil {
		t.Fatal(err)
	}
	var shown map[string]any
	if err := json.Unmarshal(out.Bytes(), &shown); err != nil || shown["body"] != "garbage" || shown["order_id"] != "undecodable" {
		t.Errorf("show json: %v %s", err, out)
	}
	if err := runTool(t, tool, "show m-404"); err == nil || !strings.Contains(err.Error(), "m-404") {
		t.Errorf("show of a missing message: %v", err)
	}
	if visible, held := f.snapshot("dlq"); len(visible) != 2 || len(held) != 0 {
		t.Errorf("after show: %d visible, %d held", len(visible), len(held))
	}
}

func TestDLQRedrive(t *testing.T) {
	f := newFakeSQS()
	o1, o2 := uuid.NewString(), uuid.NewString()
	id1 := f.put(t, "dlq", o1, actorless("c-1", o1), "r1", dlqNow)
	f.put(t, "dlq", o2, actorless("c-2", o2), "r2", dlqNow)
	tool, out := newTool(f)

	if err := runTool(t, tool, "redrive "+id1); err != nil {
		t.Fatal(err)
	}
	cmds, _ := f.snapshot("cmds")
	if len(cmds) != 1 || aws.ToString(cmds[0].Body) != actorless("c-1", o1) || cmds[0].Attributes["MessageGroupId"] != o1 {
		t.Fatalf("command queue: %+v", cmds)
	}
	if _, ok := cmds[0].MessageAttributes[middleware.ReasonForPoisonedKey]; ok {
		t.Error("redriven message still carries its reason")
	}
	if !strings.Contains(out.String(), "redriven "+id1) {
		t.Errorf("output: %s", out)
	}
	visible, held := f.snapshot("dlq")
	if len(visible) != 1 || len(held) != 0 || aws.ToString(visible[0].Body) != actorless("c-2", o2) {
		t.Errorf("dead-letter queue after redrive: %d visible, %d held", len(visible), len(held))
	}
	// Again: it is gone, and nothing more is enqueued.
	if err := runTool(t, tool, "redrive "+id1); err == nil || !strings.Contains(err.Error(), id1) {
		t.Errorf("second redrive: %v", err)
	}
	if cmds, _ := f.snapshot("cmds"); len(cmds) != 1 {
		t.Errorf("command queue holds %d", len(cmds))
	}
}

// A send that fails leaves the message on the dead-letter queue, visible;
// the others are redriven.
func TestDLQRedriveSendFails(t *testing.T) {
	f := newFakeSQS()
	o1, o2 := uuid.NewString(), uuid.NewString()
	id1 := f.put(t, "dlq", o1, actorless("c-1", o1), "r1", dlqNow)
	id2 := f.put(t, "dlq", o2, actorless("c-2", o2), "r2", dlqNow)
	f.failSend = func(in *sqs.SendMessageInput) error {
		if aws.ToString(in.MessageGroupId) == o1 {
			return errors.New("throttled")
		}
		return nil
	}
	tool, _ := newTool(f)
	err := runTool(t, tool, "redrive "+id1+" "+id2+" m-404")
	if err == nil || !strings.Contains(err.Error(), "throttled") || !strings.Contains(err.Error(), "m-404") {
		t.Errorf("err = %v", err)
	}
	visible, held := f.snapshot("dlq")
	if len(visible) != 1 || len(held) != 0 || aws.ToString(visible[0].MessageId) != id1 {
		t.Errorf("dead-letter queue: %d visible, %d held", len(visible), len(held))
	}
	if cmds, _ := f.snapshot("cmds"); len(cmds) != 1 || cmds[0].Attributes["MessageGroupId"] != o2 {
		t.Errorf("command queue: %+v", cmds)
	}
}

// --all moves everything there was, but not what the processor
// dead-letters again meanwhile.
func TestDLQRedriveAll(t *testing.T) {
	f := newFakeSQS()
	o := uuid.NewString()
	for i := range 12 { // more than one receive
		f.put(t, "dlq", o, actorless(fmt.Sprintf("c-%d", i), o), "r", dlqNow.Add(-time.Minute))
	}
	f.put(t, "dlq", "undecodable", "garbage", "decode", dlqNow.Add(-time.Minute))
	// The processor fails each redriven command again at once.
	f.onSend = func(in *sqs.SendMessageInput) {
		if aws.ToString(in.QueueUrl) == "cmds" {
			f.put(t, "dlq", aws.ToString(in.MessageGroupId), aws.ToString(in.MessageBody), "again", dlqNow.Add(time.Second))
		}
	}
	tool, out := newTool(f)
	if err := runTool(t, tool, "redrive --all"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "redrove 13 message(s) to cmds.fifo") {
		t.Errorf("output: %s", out)
	}
	cmds, _ := f.snapshot("cmds")
	visible, held := f.snapshot("dlq")
	if len(cmds) != 13 || len(visible) != 13 || len(held) != 0 {
		t.Errorf("command queue %d, dead-letter queue %d visible %d held; want 13, 13, 0", len(cmds), len(visible), len(held))
	}
	for i, m := range cmds[:12] { // in order, in the order's group
		if aws.ToString(m.Body) != actorless(fmt.Sprintf("c-%d", i), o) || m.Attributes["MessageGroupId"] != o {
			t.Errorf("command %d: %s in %s", i, aws.ToString(m.Body), m.Attributes["MessageGroupId"])
		}
	}
	for _, m := range visible {
		if aws.ToString(m.MessageAttributes[middleware.ReasonForPoisonedKey].StringValue) != "again" {
			t.Errorf("left %s, which was there before", aws.ToString(m.Body))
		}
	}
}
