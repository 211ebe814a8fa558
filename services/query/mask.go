package main

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode"

	"go.einride.tech/aip/fieldmask"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/orderstore"
)

// mask is a validated read mask (AIP-157). An empty mask means every field.
type mask struct {
	paths []string
	tree  map[string]*maskNode
	cols  []string // columns()
}

type maskNode struct{ children map[string]*maskNode }

// Parsed masks are kept by their paths as sent: clients send the same few
// masks again and again, and parsing one walks the Order descriptor. A
// mask is never changed once parsed, so callers share it.
const maxCachedMasks = 256

var masks struct {
	sync.RWMutex
	m map[string]maskResult
}

type maskResult struct {
	m   mask
	err error
}

// parseMask accepts snake_case or lowerCamelCase paths ("customer_id" or
// "customerId"), paths into singular messages ("payment.reference"), and
// "*".
func parseMask(fm *fieldmaskpb.FieldMask) (mask, error) {
	paths := fm.GetPaths()
	if len(paths) == 0 {
		return mask{}, nil
	}
	key := strings.Join(paths, "\x00")
	masks.RLock()
	r, ok := masks.m[key]
	masks.RUnlock()
	if ok {
		return r.m, r.err
	}
	m, err := parseMaskPaths(paths)
	masks.Lock()
	if masks.m == nil {
		masks.m = map[string]maskResult{}
	}
	if len(masks.m) < maxCachedMasks {
		masks.m[key] = maskResult{m, err}
	}
	masks.Unlock()
	return m, err
}

func parseMaskPaths(paths []string) (mask, error) {
	var m mask
	for _, p := range paths {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if p == "*" {
			return mask{}, nil
		}
		parts := strings.Split(p, ".")
		for i, s := range parts {
			parts[i] = snake(s)
		}
		m.paths = append(m.paths, strings.Join(parts, "."))
	}
	if len(m.paths) == 0 {
		return mask{}, nil
	}
	fm := &fieldmaskpb.FieldMask{Paths: m.paths}
	err := fieldmask.Validate(fm, &omsv1.Order{})
	if err == nil {
		err = singularSubPaths(fm.Paths)
	}
	if err != nil {
		return mask{}, fmt.Errorf("%v; fields are those of Order, such as id,state", err)
	}
	// A mask is a union: "payment,payment.reference" is all of payment.
	// Normalize drops paths a parent path covers (and duplicates).
	fm.Normalize()
	m.paths = fm.GetPaths()
	m.tree = map[string]*maskNode{}
	for _, p := range m.paths {
		level := m.tree
		for _, s := range strings.Split(p, ".") {
			n, ok := level[s]
			if !ok {
				n = &maskNode{children: map[string]*maskNode{}}
				level[s] = n
			}
			level = n.children
		}
	}
	for f := range m.tree {
		if orderstore.KnownField(f) {
			m.cols = append(m.cols, f)
		}
	}
	slices.Sort(m.cols)
	return m, nil
}

// columns names the top-level fields to read, in order, nil for all.
// Callers must not change it.
func (m mask) columns() []string { return m.cols }

// apply clears every field the mask does not name.
func (m mask) apply(msg proto.Message) {
	if m.tree != nil {
		prune(msg.ProtoReflect(), m.tree)
	}
}

func prune(msg protoreflect.Message, keep map[string]*maskNode) {
	msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		n, ok := keep[string(fd.Name())]
		switch {
		case !ok:
			msg.Clear(fd)
		case len(n.children) > 0:
			// fieldmaskpb.New allows sub-paths only into singular messages.
			prune(v.Message(), n.children)
		}
		return true
	})
}

// singularSubPaths refuses a path into a repeated field (line_items.sku):
// AIP-161 masks name sub-fields of singular messages only, which is all
// prune can apply.
func singularSubPaths(paths []string) error {
	order := (&omsv1.Order{}).ProtoReflect().Descriptor()
	for _, p := range paths {
		md := order
		parts := strings.Split(p, ".")
		for _, s := range parts[:len(parts)-1] {
			fd := md.Fields().ByName(protoreflect.Name(s))
			if fd.IsList() || fd.IsMap() {
				return fmt.Errorf("invalid field path: %s: %s is repeated, so only all of it can be read", p, s)
			}
			md = fd.Message()
		}
	}
	return nil
}

func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
