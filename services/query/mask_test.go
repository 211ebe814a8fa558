package main

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"
)

// A read mask is the union of its paths: a parent path keeps the whole
// field whatever sub-paths of it are also named, in any order.
func TestMaskIsAUnion(t *testing.T) {
	t.Parallel()
	payment := &omsv1.Payment{Reference: "r", AmountMinor: 5, PayTime: timestamppb.New(time.Unix(9, 0))}
	for _, tc := range []struct {
		paths []string
		want  *omsv1.Order
	}{
		{[]string{"payment", "payment.reference"}, &omsv1.Order{Payment: payment}},
		{[]string{"payment.reference", "payment"}, &omsv1.Order{Payment: payment}},
		{[]string{"payment.reference", "id", "payment", "payment.payTime"}, &omsv1.Order{Id: "x", Payment: payment}},
		{[]string{"payment.reference", "payment.amount_minor"}, &omsv1.Order{Payment: &omsv1.Payment{Reference: "r", AmountMinor: 5}}},
		{[]string{"id", "id"}, &omsv1.Order{Id: "x"}},
	} {
		m, err := parseMask(&fieldmaskpb.FieldMask{Paths: tc.paths})
		if err != nil {
			t.Fatalf("%v: %v", tc.paths, err)
		}
		o := &omsv1.Order{Id: "x", CustomerId: "c", Payment: proto.Clone(payment).(*omsv1.Payment)}
		m.apply(o)
		if !proto.Equal(o, tc.want) {
			t.Errorf("mask %v kept %v, want %v", tc.paths, o, tc.want)
		}
	}
}
