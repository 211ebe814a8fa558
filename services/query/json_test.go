package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/serve"
)

// strs are string values to try: escapes, non-ASCII, HTML.
var strs = []string{"", "a", "Zoë 東京 🚚", `quote " and \ backslash`, "tab\tnew\nline\rcr\bbs\fff", "ctl \x00\x01\x1f\x7f",
	"</script><b>&amp;", "\u2028\u2029", strings.Repeat("x", 300)}

// populate sets every field of m (recursively, each message field set) to
// a value drawn from r, zero values included, so a field added to Order
// that the encoder does not write fails the test.
func populate(r *rand.Rand, m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.IsList() {
			l := m.Mutable(fd).List()
			for range r.IntN(3) {
				if fd.Kind() == protoreflect.MessageKind {
					e := l.NewElement()
					populate(r, e.Message(), depth+1)
					l.Append(e)
				} else {
					l.Append(scalar(r, fd))
				}
			}
			continue
		}
		if fd.Kind() == protoreflect.MessageKind {
			if r.IntN(4) > 0 {
				populate(r, m.Mutable(fd).Message(), depth+1)
			}
			continue
		}
		if v := scalar(r, fd); r.IntN(5) > 0 {
			m.Set(fd, v)
		}
	}
}

func scalar(r *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(strs[r.IntN(len(strs))])
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64([]int64{0, 1, -1, 2950, 1 << 53, -1 << 63, 1<<63 - 1}[r.IntN(7)])
	case protoreflect.Int32Kind:
		return protoreflect.ValueOfInt32([]int32{0, 1, -5, 10000, 1<<31 - 1}[r.IntN(5)])
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(r.IntN(2) == 0)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(r.IntN(fd.Enum().Values().Len())))
	}
	panic(fmt.Sprintf("populate: no values for %s (%s): teach the test and orderJSON about it", fd.FullName(), fd.Kind()))
}

// times are Timestamps with each number of fractional digits protojson
// writes, and the ends of the range.
var times = []*timestamppb.Timestamp{
	timestamppb.New(time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)),
	timestamppb.New(time.Date(2026, 3, 4, 5, 6, 7, 120_000_000, time.UTC)),
	timestamppb.New(time.Date(2026, 3, 4, 5, 6, 7, 123_456_000, time.UTC)),
	timestamppb.New(time.Date(2026, 3, 4, 5, 6, 7, 1, time.UTC)),
	timestamppb.New(time.Date(2026, 3, 4, 5, 6, 7, 100_000_000, time.FixedZone("", 3600))),
	{Seconds: -62135596800}, {Seconds: 253402300799, Nanos: 999_999_999},
}

// setTimes puts real times in every Timestamp populate filled with
// arbitrary seconds and nanos.
func setTimes(r *rand.Rand, m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Kind() != protoreflect.MessageKind:
		case fd.Message().FullName() == "google.protobuf.Timestamp":
			m.Set(fd, protoreflect.ValueOfMessage(proto.Clone(times[r.IntN(len(times))]).ProtoReflect()))
		case fd.IsList():
			for i := range v.List().Len() {
				setTimes(r, v.List().Get(i).Message())
			}
		default:
			setTimes(r, v.Message())
		}
		return true
	})
}

func randomPage(r *rand.Rand) *omsv1.ListOrdersResponse {
	page := &omsv1.ListOrdersResponse{NextPageToken: strs[r.IntN(3)]}
	for range r.IntN(4) {
		o := &omsv1.Order{}
		populate(r, o.ProtoReflect(), 0)
		setTimes(r, o.ProtoReflect())
		page.Orders = append(page.Orders, o)
	}
	return page
}

// The hand-written encoding is protojson's, field for field.
func TestOrderJSONIsProtoJSON(t *testing.T) {
	t.Parallel()
	m := orderJSON{serve.JSONMarshaler()}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		page := randomPage(r)
		msgs := []proto.Message{page}
		if len(page.Orders) > 0 {
			msgs = append(msgs, page.Orders[0])
		}
		for _, msg := range msgs {
			got, err := m.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			want, err := protojson.MarshalOptions{}.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("case %d: not JSON: %v\n%s", i, err, got)
			}
			json.Unmarshal(want, &w)
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("case %d:\n got %s\nwant %s", i, got, want)
			}
			back := msg.ProtoReflect().New().Interface()
			if err := protojson.Unmarshal(got, back); err != nil || !proto.Equal(back, msg) {
				t.Fatalf("case %d: %s reads back as %v (%v)", i, got, back, err)
			}
		}
	}
}

// What protojson refuses or writes its own way goes to protojson.
func TestOrderJSONLeavesTheOddToProtoJSON(t *testing.T) {
	t.Parallel()
	m := orderJSON{serve.JSONMarshaler()}
	for _, o := range []*omsv1.Order{
		{CustomerId: "bad \xff utf-8"},
		{State: 99},
		{CreateTime: &timestamppb.Timestamp{Seconds: 253402300800}},
		{Payment: &omsv1.Payment{PayTime: &timestamppb.Timestamp{Nanos: -1}}},
	} {
		got, gotErr := m.Marshal(o)
		want, wantErr := m.JSONPb.Marshal(o)
		if (gotErr == nil) != (wantErr == nil) || (gotErr == nil && string(got) != string(want)) {
			t.Errorf("%v: %s %v, protojson: %s %v", o, got, gotErr, want, wantErr)
		}
	}
	// Other messages are protojson's.
	ev := &omsv1.ListOrderEventsResponse{NextPageToken: "t"}
	got, _ := m.Marshal(ev)
	want, _ := m.JSONPb.Marshal(ev)
	if string(got) != string(want) {
		t.Errorf("ListOrderEventsResponse: %s, want %s", got, want)
	}
}

func BenchmarkOrderJSON(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	page := &omsv1.ListOrdersResponse{}
	for len(page.Orders) < 50 {
		page.Orders = append(page.Orders, randomPage(r).Orders...)
	}
	page.Orders = page.Orders[:50]
	for _, enc := range []struct {
		name string
		m    interface{ Marshal(any) ([]byte, error) }
	}{{"hand", orderJSON{serve.JSONMarshaler()}}, {"protojson", serve.JSONMarshaler()}} {
		b.Run(enc.name, func(b *testing.B) {
			for b.Loop() {
				enc.m.Marshal(page)
			}
		})
	}
}

// sizeBound never undercounts, whatever fields an order has set.
func TestSizeBoundIsABound(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	for range 5000 {
		for _, o := range randomPage(r).Orders {
			if b, n := sizeBound(o), proto.Size(o); b < n {
				t.Fatalf("sizeBound = %d < proto.Size = %d for %v", b, n, o)
			}
		}
	}
}
