package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"
	"go.yaml.in/yaml/v4"
)

// operationDefaults is the overlay key whose entries, by tag, are merged
// into every operation of that tag (the servers, the 202, the error
// responses of a whole service) before the rest of the overlay. It is not
// part of the output.
const operationDefaults = "x-oms-operation-defaults"

// Generate converts swagger (Swagger 2.0 JSON) to OpenAPI 3, expands
// resource-name path parameters, applies the overlay (YAML) and returns the
// document as indented JSON, after kin-openapi has validated it.
//
// The overlay is applied as an RFC 7386 JSON merge patch (an object merges
// into an object, null deletes, anything else replaces), with one rule
// more: an object holding "$ref" replaces what it patches whole, since a
// reference cannot sit beside the fields it stands for.
func Generate(ctx context.Context, swagger, overlay []byte) ([]byte, error) {
	var doc2 openapi2.T
	if err := json.Unmarshal(swagger, &doc2); err != nil {
		return nil, fmt.Errorf("swagger: %w", err)
	}
	doc3, err := openapi2conv.ToV3(&doc2)
	if err != nil {
		return nil, fmt.Errorf("convert to OpenAPI 3: %w", err)
	}
	if err := expandResourceNames(doc3); err != nil {
		return nil, err
	}
	doc, err := asJSONValue(doc3)
	if err != nil {
		return nil, err
	}

	var patch any
	if err := yaml.Unmarshal(overlay, &patch); err != nil {
		return nil, fmt.Errorf("overlay: %w", err)
	}
	patch, err = jsonValue(patch)
	if err != nil {
		return nil, fmt.Errorf("overlay: %w", err)
	}
	root, ok := patch.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("overlay: not a mapping")
	}
	if defaults, ok := root[operationDefaults].(map[string]any); ok {
		if err := applyByTag(doc.(map[string]any), defaults); err != nil {
			return nil, err
		}
		delete(root, operationDefaults)
	}
	doc = merge(doc, root)

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	loaded, err := openapi3.NewLoader().LoadFromData(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("load the result: %w", err)
	}
	if err := loaded.Validate(ctx); err != nil {
		return nil, fmt.Errorf("the result is not valid OpenAPI 3: %w", err)
	}
	return buf.Bytes(), nil
}

// resourceName is the pattern protoc-gen-openapiv2 gives a path parameter
// bound to a resource name, {name=orders/*}: "orders/[^/]+".
var resourceName = regexp.MustCompile(`^([a-z][A-Za-z]*)s/\[\^/\]\+$`)

// expandResourceNames rewrites /v1/{name}:pay, whose parameter holds
// "orders/x", to /v1/orders/{order}:pay, whose parameter is the id alone:
// an OpenAPI path parameter cannot hold a "/", so a validator or a
// generated client could not match or build the path as the gateway
// serves it.
func expandResourceNames(doc *openapi3.T) error {
	out := openapi3.NewPathsWithCapacity(doc.Paths.Len())
	for path, item := range doc.Paths.Map() {
		renames := map[string]string{} // parameter → its collection
		for method, op := range item.Operations() {
			for _, p := range op.Parameters {
				if p.Value == nil || p.Value.In != openapi3.ParameterInPath || p.Value.Schema == nil || p.Value.Schema.Value == nil {
					continue
				}
				pattern := p.Value.Schema.Value.Pattern
				if !strings.Contains(pattern, "/") {
					continue
				}
				m := resourceName.FindStringSubmatch(pattern)
				if m == nil {
					return fmt.Errorf("%s %s: path parameter %s has pattern %q, which is not one resource name", method, path, p.Value.Name, pattern)
				}
				if c, ok := renames[p.Value.Name]; ok && c != m[1] {
					return fmt.Errorf("%s: path parameter %s names %ss and %ss", path, p.Value.Name, c, m[1])
				}
				renames[p.Value.Name] = m[1]
			}
		}
		for param, singular := range renames {
			path = strings.Replace(path, "{"+param+"}", singular+"s/{"+singular+"}", 1)
			for _, op := range item.Operations() {
				for _, p := range op.Parameters {
					if p.Value.In != openapi3.ParameterInPath || p.Value.Name != param {
						continue
					}
					// A fresh parameter: the converted ones may share values.
					v := *p.Value
					s := *v.Schema.Value
					s.Pattern = "^[^/]+$"
					v.Schema = openapi3.NewSchemaRef("", &s)
					v.Name = singular
					v.Description = strings.TrimSpace(fmt.Sprintf("The %s's id: the last segment of its resource name, %ss/{%s} (the request's %s). %s",
						singular, singular, singular, param, v.Description))
					p.Value = &v
				}
			}
		}
		if out.Value(path) != nil {
			return fmt.Errorf("two paths expand to %s", path)
		}
		out.Set(path, item)
	}
	doc.Paths = out
	return nil
}

// applyByTag merges each tag's patch into every operation of that tag.
func applyByTag(doc map[string]any, byTag map[string]any) error {
	paths, _ := doc["paths"].(map[string]any)
	used := map[string]bool{}
	for _, item := range paths {
		item, _ := item.(map[string]any)
		for method, op := range item {
			op, ok := op.(map[string]any)
			if !ok || !slices.Contains(httpMethods, method) {
				continue
			}
			tags, _ := op["tags"].([]any)
			for _, tag := range tags {
				p, ok := byTag[fmt.Sprint(tag)].(map[string]any)
				if !ok {
					continue
				}
				used[fmt.Sprint(tag)] = true
				// Parameters are added: the operation's own stay.
				own, _ := op["parameters"].([]any)
				added, _ := p["parameters"].([]any)
				rest := maps.Clone(p)
				delete(rest, "parameters")
				op = merge(op, rest).(map[string]any)
				if len(own)+len(added) > 0 {
					op["parameters"] = append(slices.Clone(own), deepCopy(added).([]any)...)
				}
				item[method] = op
			}
		}
	}
	for tag := range byTag {
		if !used[tag] {
			return fmt.Errorf("overlay: %s names tag %s, which no operation has", operationDefaults, tag)
		}
	}
	return nil
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// merge applies patch to target as described at Generate and returns the
// result; target's maps are changed in place, patch is not (nor shared with
// the result, so that one patch can go into many operations).
func merge(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return deepCopy(patch)
	}
	if ref, ok := p["$ref"]; ok && ref != nil {
		return deepCopy(patch)
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
			continue
		}
		t[k] = merge(t[k], v)
	}
	return t
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

// asJSONValue turns v into the maps, slices and scalars of its JSON.
func asJSONValue(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil {
		return nil, err
	}
	return out, nil
}

// jsonValue makes a decoded YAML value one JSON can hold: mapping keys
// become strings (a response code may be written unquoted).
func jsonValue(v any) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			e, err := jsonValue(e)
			if err != nil {
				return nil, err
			}
			v[k] = e
		}
		return v, nil
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			e, err := jsonValue(e)
			if err != nil {
				return nil, err
			}
			out[fmt.Sprint(k)] = e
		}
		return out, nil
	case []any:
		for i, e := range v {
			e, err := jsonValue(e)
			if err != nil {
				return nil, err
			}
			v[i] = e
		}
		return v, nil
	}
	return v, nil
}
