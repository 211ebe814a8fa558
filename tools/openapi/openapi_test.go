package main

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"
	"github.com/omsdev/oms/proto/openapi"
)

// load is the embedded document (what the services serve), loaded and
// validated with kin-openapi.
func load(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(openapi.JSON)
	if err != nil {
		t.Fatalf("load oms.openapi.json: %v", err)
	}
	return doc
}

// The served document is valid OpenAPI 3, by kin-openapi's validator.
func TestDocumentIsValid(t *testing.T) {
	t.Parallel()
	doc := load(t)
	if err := doc.Validate(t.Context()); err != nil {
		t.Fatalf("oms.openapi.json is not valid OpenAPI 3: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi %q, want 3.x", doc.OpenAPI)
	}
}

// The committed document is what the generator makes of the committed
// swagger and overlay: an overlay edited without `make generate` fails here,
// offline (make check-generated also reruns buf).
func TestDocumentIsGenerated(t *testing.T) {
	t.Parallel()
	swagger, err := os.ReadFile("../../proto/oms.swagger.json")
	if err != nil {
		t.Fatal(err)
	}
	overlay, err := os.ReadFile("../../proto/openapi/overlay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Generate(t.Context(), swagger, overlay)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, openapi.JSON) {
		t.Error("proto/openapi/oms.openapi.json is stale: run 'make generate' (or scripts/generate.sh) and commit")
	}
}

// handWritten are the routes no proto HTTP rule declares: the
// google.longrunning operations routes of the query gateway, and what
// pkg/serve serves on every gateway.
var handWritten = []string{
	"GET /v1/operations/{operation}",
	"GET /v1/operations/{operation}:wait",
	"GET /v1/operations",
	"GET /openapi.json",
	"GET /healthz",
	"GET /readyz",
}

// Every google.api.http rule of the oms.v1 services is documented, under
// its operation id, and every documented route is either one of them or
// one of the hand-written ones: neither side can drift.
func TestEveryHTTPRuleIsDocumented(t *testing.T) {
	t.Parallel()
	doc := load(t)
	documented := map[string]*openapi3.Operation{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			documented[method+" "+path] = op
		}
	}

	want := map[string]string{} // route → operation id
	services := 0
	protoregistry.GlobalFiles.RangeFilesByPackage("oms.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			services++
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
				if rule == nil {
					t.Errorf("%s has no HTTP rule", md.FullName())
					continue
				}
				for _, r := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
					method, tmpl := httpRule(r)
					route := method + " " + openAPIPath(tmpl)
					want[route] = string(sd.Name()) + "_" + string(md.Name())
				}
			}
		}
		return true
	})
	if services < 2 || len(want) < 9 {
		t.Fatalf("found %d services, %d HTTP rules: are the oms.v1 descriptors registered?", services, len(want))
	}
	for _, r := range handWritten {
		want[r] = ""
	}
	for route, id := range want {
		op, ok := documented[route]
		switch {
		case !ok:
			t.Errorf("%s is served but not documented", route)
		case id != "" && op.OperationID != id:
			t.Errorf("%s: operationId %q, want %q", route, op.OperationID, id)
		}
	}
	for route := range documented {
		if _, ok := want[route]; !ok {
			t.Errorf("%s is documented but no HTTP rule or hand-written route serves it", route)
		}
	}
	// The reference to a registered descriptor keeps omsv1 imported for
	// its registration, whatever else this test stops using.
	_ = omsv1.File_oms_v1_query_service_proto
}

// Every API route says where it is served and that it needs a bearer
// token, with the 401 that answers when it is missing; the routes of
// pkg/serve need none.
func TestEveryRouteHasServerAndSecurity(t *testing.T) {
	t.Parallel()
	doc := load(t)
	if _, ok := doc.Components.SecuritySchemes["bearer"]; !ok {
		t.Fatal("no bearer security scheme")
	}
	if len(doc.Security) != 1 || doc.Security[0]["bearer"] == nil {
		t.Fatalf("document security %v, want bearer", doc.Security)
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			route := method + " " + path
			if op.Servers == nil || len(*op.Servers) == 0 {
				t.Errorf("%s: no servers", route)
			}
			for _, s := range ptrValue(op.Servers) {
				if svc := s.Extensions["x-oms-service"]; svc != "ingest" && svc != "query" {
					t.Errorf("%s: server %s has x-oms-service %v", route, s.URL, svc)
				}
			}
			public := op.Security != nil && len(*op.Security) == 0
			if public != strings.HasPrefix(op.OperationID, "Service_") {
				t.Errorf("%s: security %v", route, op.Security)
			}
			if public {
				continue
			}
			r := op.Responses.Status(401)
			if r == nil || r.Value.Headers["WWW-Authenticate"] == nil {
				t.Errorf("%s: no 401 with WWW-Authenticate", route)
			}
			if op.Responses.Default() == nil {
				t.Errorf("%s: no default (error) response", route)
			}
		}
	}
}

func ptrValue[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// The hand-written CommandMetadata schema has exactly the message's fields,
// by their JSON names, with the JSON types protojson gives them.
func TestCommandMetadataSchemaMatchesProto(t *testing.T) {
	t.Parallel()
	doc := load(t)
	s := doc.Components.Schemas["v1CommandMetadata"]
	if s == nil {
		t.Fatal("no v1CommandMetadata schema")
	}
	md := (&omsv1.CommandMetadata{}).ProtoReflect().Descriptor()
	var fields, props []string
	for i := range md.Fields().Len() {
		f := md.Fields().Get(i)
		fields = append(fields, f.JSONName())
		p := s.Value.Properties[f.JSONName()]
		if p == nil {
			continue
		}
		wantType, wantFormat := jsonType(f)
		if got := p.Value.Type.Slice(); !reflect.DeepEqual(got, []string{wantType}) || p.Value.Format != wantFormat {
			t.Errorf("%s: type %v format %q, want %s %q", f.JSONName(), got, p.Value.Format, wantType, wantFormat)
		}
	}
	for name := range s.Value.Properties {
		props = append(props, name)
	}
	slices.Sort(fields)
	slices.Sort(props)
	if !slices.Equal(fields, props) {
		t.Errorf("v1CommandMetadata properties %v, want the message's fields %v", props, fields)
	}
}

// jsonType is protojson's JSON type of a singular scalar or timestamp field.
func jsonType(f protoreflect.FieldDescriptor) (string, string) {
	switch f.Kind() {
	case protoreflect.StringKind:
		return "string", ""
	case protoreflect.Int32Kind:
		return "integer", "int32"
	case protoreflect.Int64Kind:
		return "string", "int64"
	case protoreflect.BoolKind:
		return "boolean", ""
	case protoreflect.MessageKind:
		if f.Message().FullName() == "google.protobuf.Timestamp" {
			return "string", "date-time"
		}
	}
	return fmt.Sprintf("unmapped %s", f.Kind()), ""
}

func httpRule(r *annotations.HttpRule) (method, path string) {
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		return "GET", p.Get
	case *annotations.HttpRule_Post:
		return "POST", p.Post
	case *annotations.HttpRule_Put:
		return "PUT", p.Put
	case *annotations.HttpRule_Patch:
		return "PATCH", p.Patch
	case *annotations.HttpRule_Delete:
		return "DELETE", p.Delete
	case *annotations.HttpRule_Custom:
		return p.Custom.GetKind(), p.Custom.GetPath()
	}
	return "", ""
}

// openAPIPath writes an HTTP rule's template as the document does: a
// variable bound to one resource name, {name=orders/*}, becomes
// orders/{order}.
func openAPIPath(tmpl string) string {
	return resourceVar.ReplaceAllString(tmpl, "${1}s/{${1}}")
}

var resourceVar = regexp.MustCompile(`\{\w+=([a-z][A-Za-z]*)s/\*\}`)
