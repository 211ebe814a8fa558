package main

import (
	"os"
	"regexp"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"
)

// The README's grpcurl GetOrder example parses as the request it means.
//
// It uses the text format on purpose. grpcurl (1.9.3) reads JSON with
// golang/protobuf's jsonpb into jhump/protoreflect dynamic messages, which
// give google.protobuf.FieldMask no special JSON form: they want
// {"paths":["id","state"]} and refuse "id,state". protojson (the proto3
// JSON mapping, which the HTTP gateway uses) wants exactly "id,state" and
// refuses the object. The text format has one spelling for both parsers.
func TestREADMEGrpcurlGetOrderExample(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^grpcurl .*-format text -d '([^']*)' \S+ oms\.v1\.OrderQueryService/GetOrder$`).FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no grpcurl GetOrder example in the text format")
	}
	var req omsv1.GetOrderRequest
	if err := prototext.Unmarshal(m[1], &req); err != nil {
		t.Fatalf("README example %s: %v", m[1], err)
	}
	if req.Name != "orders/<id>" || !slices.Equal(req.GetReadMask().GetPaths(), []string{"id", "state"}) {
		t.Errorf("README example parses as %v", &req)
	}
	if _, err := parseMask(req.ReadMask); err != nil {
		t.Errorf("its read mask is refused: %v", err)
	}
}
