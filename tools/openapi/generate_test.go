package main

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// The overlay's merge: RFC 7386, plus $ref objects replacing whole, and a
// patch never shared with (or changed through) what it was merged into.
func TestMerge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, target, patch, want string }{
		{"objects merge", `{"a":1,"b":{"c":2,"d":3}}`, `{"b":{"c":4}}`, `{"a":1,"b":{"c":4,"d":3}}`},
		{"null deletes", `{"a":1,"b":2}`, `{"b":null}`, `{"a":1}`},
		{"arrays replace", `{"a":[1,2]}`, `{"a":[3]}`, `{"a":[3]}`},
		{"$ref replaces whole", `{"r":{"description":"x","content":{}}}`, `{"r":{"$ref":"#/y"}}`, `{"r":{"$ref":"#/y"}}`},
		{"new keys", `{}`, `{"a":{"b":{"c":1}}}`, `{"a":{"b":{"c":1}}}`},
	} {
		var target, patch, want any
		for _, j := range []struct {
			s string
			v *any
		}{{tc.target, &target}, {tc.patch, &patch}, {tc.want, &want}} {
			if err := json.Unmarshal([]byte(j.s), j.v); err != nil {
				t.Fatal(err)
			}
		}
		if got := merge(target, patch); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %v, want %v", tc.name, got, want)
		}
	}

	patch := map[string]any{"a": map[string]any{"$ref": "#/x"}, "l": []any{map[string]any{"k": "v"}}}
	one, two := merge(nil, patch).(map[string]any), merge(nil, patch).(map[string]any)
	one["a"].(map[string]any)["$ref"] = "#/changed"
	one["l"].([]any)[0].(map[string]any)["k"] = "changed"
	if two["a"].(map[string]any)["$ref"] != "#/x" || two["l"].([]any)[0].(map[string]any)["k"] != "v" ||
		patch["a"].(map[string]any)["$ref"] != "#/x" {
		t.Errorf("merged results share the patch: %v %v", two, patch)
	}
}

const swaggerPay = `{"swagger":"2.0","info":{"title":"t","version":"1"},"paths":{
 "/v1/{name}:pay":{"post":{"operationId":"Pay","tags":["Cmd"],"parameters":[{"name":"name","in":"path","required":true,"type":"string","pattern":"PATTERN"}],
  "responses":{"200":{"description":"ok"}}}}}}`

// A resource-name path parameter is expanded into the path; one the
// generator does not understand stops it rather than being documented
// wrong.
func TestGenerateExpandsResourceNames(t *testing.T) {
	t.Parallel()
	overlay := []byte("x-oms-operation-defaults:\n  Cmd:\n    responses:\n      \"202\": {description: accepted}\n      \"200\": null\n")
	out, err := Generate(t.Context(), []byte(strings.Replace(swaggerPay, "PATTERN", "orders/[^/]+", 1)), overlay)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]struct {
			Parameters []struct{ Name, In string }
			Responses  map[string]any
		}
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	op, ok := doc.Paths["/v1/orders/{order}:pay"]["post"]
	if !ok || len(op.Parameters) != 1 || op.Parameters[0].Name != "order" {
		t.Fatalf("paths %+v", doc.Paths)
	}
	if _, ok := op.Responses["202"]; !ok || len(op.Responses) != 1 {
		t.Errorf("responses %v, want the overlay's 202 alone", op.Responses)
	}

	_, err = Generate(t.Context(), []byte(strings.Replace(swaggerPay, "PATTERN", "shops/[^/]+/orders/[^/]+", 1)), []byte("{}"))
	if err == nil || !strings.Contains(err.Error(), "not one resource name") {
		t.Errorf("a nested resource name: %v", err)
	}
	_, err = Generate(t.Context(), []byte(strings.Replace(swaggerPay, "PATTERN", "orders/[^/]+", 1)), []byte("x-oms-operation-defaults:\n  Nope: {}\n"))
	if err == nil || !strings.Contains(err.Error(), "no operation has") {
		t.Errorf("defaults for a tag no operation has: %v", err)
	}
}
