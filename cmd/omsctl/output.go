package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"cloud.google.com/go/longrunning/autogen/longrunningpb"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"
)

// JSON output is protojson (the HTTP API's shape), re-indented by
// encoding/json: protojson varies its whitespace on purpose, and scripts
// diffing outputs should not see that. A single result is one indented
// object; a stream (list --all, watch) is one compact object per line.
var marshal = protojson.MarshalOptions{}

func (a *app) writeJSON(m proto.Message) error {
	b, err := marshal.Marshal(m)
	if err != nil {
		return err
	}
	return writeIndented(a.stdout, b)
}

func (a *app) writeJSONLine(m proto.Message) error {
	b, err := marshal.Marshal(m)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err = a.stdout.Write(out.Bytes())
	return err
}

// jsonPart is one member of an object assembled from several messages.
type jsonPart struct {
	key   string
	value any // proto.Message or rawString
}

type rawString string

// writeJSONObject writes one object whose members keep the given order.
func (a *app) writeJSONObject(parts []jsonPart) error {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, p := range parts {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(p.key)
		b.Write(k)
		b.WriteByte(':')
		switch v := p.value.(type) {
		case proto.Message:
			m, err := marshal.Marshal(v)
			if err != nil {
				return err
			}
			b.Write(m)
		case rawString:
			s, _ := json.Marshal(string(v))
			b.Write(s)
		default:
			return fmt.Errorf("writeJSONObject: %T", v)
		}
	}
	b.WriteByte('}')
	return writeIndented(a.stdout, b.Bytes())
}

func writeIndented(w io.Writer, b []byte) error {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 3, ' ', 0) }

func row(w io.Writer, cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(w, strings.Join(cells, "\t"))
}

var orderHeader = []string{"NAME", "STATE", "CUSTOMER", "TOTAL", "VERSION", "UPDATED"}

// orderCells are an order's table cells. Fields left out by --fields are
// blank, not zero, so a partial read does not pass for a real value.
func orderCells(o *omsv1.Order) []string {
	state, total, version := "", "", ""
	if o.GetState() != omsv1.Order_STATE_UNSPECIFIED {
		state = o.GetState().String()
	}
	if o.GetCurrencyCode() != "" || o.GetTotalMinor() != 0 {
		total = strings.TrimSpace(strconv.FormatInt(o.GetTotalMinor(), 10) + " " + o.GetCurrencyCode())
	}
	if o.GetVersion() != 0 {
		version = strconv.FormatInt(o.GetVersion(), 10)
	}
	return []string{o.GetName(), state, o.GetCustomerId(), total, version, timeText(o.GetUpdateTime())}
}

func printOrders(w io.Writer, orders []*omsv1.Order) error {
	t := newTable(w)
	row(t, orderHeader...)
	for _, o := range orders {
		row(t, orderCells(o)...)
	}
	return t.Flush()
}

func printEvents(w io.Writer, events []*omsv1.OrderEvent) error {
	t := newTable(w)
	row(t, "SEQ", "TYPE", "FROM", "TO", "COMMAND", "VERSION", "REASON", "TIME")
	for _, e := range events {
		from, to := "", ""
		if e.GetFromState() != omsv1.Order_STATE_UNSPECIFIED {
			from = e.GetFromState().String()
		}
		if e.GetToState() != omsv1.Order_STATE_UNSPECIFIED {
			to = e.GetToState().String()
		}
		row(t, strconv.FormatInt(e.GetSequence(), 10), e.GetType(), from, to, e.GetCommand(),
			strconv.FormatInt(e.GetOrderVersion(), 10), oneLine(e.GetReason()), timeText(e.GetOccurTime()))
	}
	return t.Flush()
}

func printOperations(w io.Writer, ops []*longrunningpb.Operation) error {
	t := newTable(w)
	row(t, "NAME", "COMMAND", "ORDER", "STATUS", "ATTEMPTS", "UPDATED")
	for _, op := range ops {
		md := operationMetadata(op)
		row(t, op.GetName(), md.GetCommand(), md.GetOrder(), operationStatus(op, md),
			strconv.Itoa(int(md.GetAttempts())), timeText(md.GetUpdateTime()))
	}
	return t.Flush()
}

// operationStatus is one cell: how the operation ended, or why it has not.
func operationStatus(op *longrunningpb.Operation, md *omsv1.CommandMetadata) string {
	switch {
	case op.GetError() != nil:
		return oneLine(describeStatus(status.FromProto(op.GetError())))
	case op.GetDone():
		return fmt.Sprintf("done (version %d)", md.GetOrderVersion())
	case md.GetLastErrorClass() != "":
		return "pending (retrying: " + md.GetLastErrorClass() + ")"
	}
	return "pending"
}

// operationMetadata is op's CommandMetadata; empty when absent or of
// another type.
func operationMetadata(op *longrunningpb.Operation) *omsv1.CommandMetadata {
	md := &omsv1.CommandMetadata{}
	if op.GetMetadata() != nil {
		if err := op.GetMetadata().UnmarshalTo(md); err != nil {
			return &omsv1.CommandMetadata{}
		}
	}
	return md
}

// operationOrder is the order a done operation produced; nil when it has
// none.
func operationOrder(op *longrunningpb.Operation) (*omsv1.Order, error) {
	if op.GetResponse() == nil {
		return nil, nil
	}
	o := &omsv1.Order{}
	if err := op.GetResponse().UnmarshalTo(o); err != nil {
		return nil, fmt.Errorf("operation %s: response: %w", op.GetName(), err)
	}
	return o, nil
}

// timeText is a timestamp for a table: UTC to the second; blank when unset.
func timeText(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Truncate(time.Second).Format(time.RFC3339)
}
