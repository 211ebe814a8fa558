package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"go.einride.tech/aip/filtering"
	expr "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
	"google.golang.org/protobuf/types/known/timestamppb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderpb"
	"github.com/omsdev/oms/pkg/orderstore"
)

// The filter language is AIP-160 over three fields, with AND, OR, NOT (or
// a leading -) and parentheses:
//
//	state = PAID                                (=, !=; also "PAID")
//	customer_id = "c-1"                         (=, !=)
//	create_time >= "2026-01-01T00:00:00Z"       (<, <=, >, >=; or timestamp("…"))
//	(state = PAID OR state = SHIPPED) AND NOT customer_id = "c-1"
//
// Two habits of the filter this one replaced are kept: a value compared
// with customer_id or create_time may be left unquoted when it is one word
// (2026-01-01T00:00:00Z, c-1), and AND may be written in any case.
var filterDecls = func() *filtering.Declarations {
	stateType := filtering.TypeEnum(omsv1.Order_State(0).Type())
	std := func(d *expr.Decl) filtering.DeclarationOption {
		return filtering.DeclareFunction(d.GetName(), d.GetFunction().GetOverloads()...)
	}
	overload := filtering.NewFunctionOverload
	bool_, str, ts := filtering.TypeBool, filtering.TypeString, filtering.TypeTimestamp
	opts := []filtering.DeclarationOption{
		std(filtering.StandardFunctionAnd()),
		std(filtering.StandardFunctionOr()),
		std(filtering.StandardFunctionNot()),
		std(filtering.StandardFunctionTimestamp()),
		filtering.DeclareEnumIdent("state", omsv1.Order_State(0).Type()),
		filtering.DeclareIdent("customer_id", str),
		filtering.DeclareIdent("create_time", ts),
	}
	for _, fn := range []string{filtering.FunctionEquals, filtering.FunctionNotEquals} {
		opts = append(opts, filtering.DeclareFunction(fn,
			overload(fn+"_string", bool_, str, str),
			// state = "PAID", which the old filter took as state = PAID.
			overload(fn+"_state_string", bool_, stateType, str)))
	}
	for _, fn := range []string{filtering.FunctionLessThan, filtering.FunctionLessEquals, filtering.FunctionGreaterThan, filtering.FunctionGreaterEquals} {
		opts = append(opts, filtering.DeclareFunction(fn,
			overload(fn+"_timestamp", bool_, ts, ts),
			overload(fn+"_timestamp_string", bool_, ts, str)))
	}
	d, err := filtering.NewDeclarations(opts...)
	if err != nil {
		panic(fmt.Sprintf("filter declarations: %v", err))
	}
	return d
}()

// filterFields are the fields a filter may name, for messages.
const filterFields = "state, customer_id or create_time"

// Compiled filters are kept by their text, as parsed masks are: clients
// repeat the same few filters, and a compiled condition is never changed.
const maxCachedFilters = 256

// maxFilterBytes bounds a filter before it is parsed. The parser recurses
// once per nesting level with no limit of its own: 400,000 nested
// parentheses (800 KB, well inside gRPC's 4 MiB request) overflowed the
// goroutine stack, a fatal error no recovery catches, and 320,000 took
// 1.5 s of CPU. 2 KiB is far more than any real filter needs, nests a
// thousand levels at most, and keeps a filter's SQL far below PostgreSQL's
// 65,535 parameters. ListOperations' filter has the same bound.
const maxFilterBytes = 2048

// filterSize refuses a filter longer than maxFilterBytes.
func filterSize(f string) error {
	if len(f) > maxFilterBytes {
		return fmt.Errorf("is %d bytes; at most %d are accepted", len(f), maxFilterBytes)
	}
	return nil
}

var filters struct {
	sync.RWMutex
	m map[string]filterResult
}

type filterResult struct {
	c   orderstore.Cond
	err error
}

// parseFilter compiles an AIP-160 filter into the store's condition; nil
// for an empty filter. Its errors are meant for the client.
func parseFilter(f string) (orderstore.Cond, error) {
	if strings.TrimSpace(f) == "" {
		return nil, nil
	}
	if err := filterSize(f); err != nil {
		return nil, err
	}
	filters.RLock()
	r, ok := filters.m[f]
	filters.RUnlock()
	if ok {
		return r.c, r.err
	}
	c, err := compileFilter(f)
	filters.Lock()
	if filters.m == nil {
		filters.m = map[string]filterResult{}
	}
	if len(filters.m) < maxCachedFilters {
		filters.m[f] = filterResult{c, err}
	}
	filters.Unlock()
	return c, err
}

func compileFilter(f string) (orderstore.Cond, error) {
	if !utf8.ValidString(f) {
		return nil, errors.New("must be valid UTF-8")
	}
	f = normalizeFilter(f)
	checked, err := filtering.ParseFilterString(f, filterDecls)
	if err == nil {
		return toCond(checked.CheckedExpr.GetExpr())
	}
	// The library's own errors name a parse error's position but not
	// which field a type error is about: walk the parsed filter for the
	// first thing it cannot take, and say that instead.
	type syntaxError interface {
		Position() filtering.Position
		Message() string
	}
	var syntax syntaxError // the innermost says what was wrong where
	for e := err; e != nil; e = errors.Unwrap(e) {
		if s, ok := e.(syntaxError); ok {
			syntax = s
		}
	}
	if syntax != nil {
		at, msg := syntax.Position(), syntax.Message()
		if errors.Is(err, io.EOF) {
			msg = "the filter ends too soon"
		}
		if at.Line > 1 {
			return nil, fmt.Errorf("cannot parse at line %d, column %d: %s", at.Line, at.Column, msg)
		}
		return nil, fmt.Errorf("cannot parse at column %d: %s", at.Column, msg)
	}
	var p filtering.Parser
	p.Init(f)
	if parsed, perr := p.Parse(); perr == nil {
		if _, werr := toCond(parsed.GetExpr()); werr != nil {
			return nil, werr
		}
	}
	return nil, fmt.Errorf("%s", strings.ReplaceAll(err.Error(), "check call expr: ", ""))
}

// toCond translates a filter's expression, type-checked or only parsed,
// into the store's condition, refusing what the store cannot run.
func toCond(e *expr.Expr) (orderstore.Cond, error) {
	switch k := e.GetExprKind().(type) {
	case *expr.Expr_IdentExpr:
		return nil, unknownField(k.IdentExpr.GetName(), "is a field, not a condition; compare it, as in state = PAID")
	case *expr.Expr_CallExpr:
	default:
		return nil, errors.New("must be a condition such as state = PAID")
	}
	call := e.GetCallExpr()
	args := call.GetArgs()
	switch fn := call.GetFunction(); fn {
	case filtering.FunctionAnd, filtering.FunctionOr:
		// a AND b AND c is one And of three, not nested pairs.
		var cs []orderstore.Cond
		for _, a := range args {
			c, err := toCond(a)
			if err != nil {
				return nil, err
			}
			switch c := c.(type) {
			case orderstore.And:
				if fn == filtering.FunctionAnd {
					cs = append(cs, c...)
					continue
				}
			case orderstore.Or:
				if fn == filtering.FunctionOr {
					cs = append(cs, c...)
					continue
				}
			}
			cs = append(cs, c)
		}
		if fn == filtering.FunctionOr {
			return orderstore.Or(cs), nil
		}
		return orderstore.And(cs), nil
	case filtering.FunctionNot:
		if len(args) != 1 {
			return nil, errors.New("NOT takes one condition")
		}
		c, err := toCond(args[0])
		return orderstore.Not{Cond: c}, err
	case filtering.FunctionEquals, filtering.FunctionNotEquals, filtering.FunctionLessThan,
		filtering.FunctionLessEquals, filtering.FunctionGreaterThan, filtering.FunctionGreaterEquals:
		if len(args) != 2 {
			return nil, fmt.Errorf("%s compares two things", fn)
		}
		return compare(fn, args[0], args[1])
	case filtering.FunctionFuzzyAnd:
		return nil, errors.New("join conditions with AND or OR, as in state = PAID AND customer_id = \"c-1\"")
	case filtering.FunctionHas:
		return nil, errors.New(`the ":" (has) operator is not supported; compare with = instead`)
	default:
		return nil, fmt.Errorf("unknown function %q", fn)
	}
}

func compare(op string, lhs, rhs *expr.Expr) (orderstore.Cond, error) {
	field := lhs.GetIdentExpr().GetName()
	if field == "" {
		if sel := fieldPath(lhs); sel != "" {
			return nil, unknownField(sel, "")
		}
		return nil, fmt.Errorf("%s needs a field on its left, as in state = PAID", op)
	}
	equality := op == filtering.FunctionEquals || op == filtering.FunctionNotEquals
	switch field {
	case "state":
		if !equality {
			return nil, errors.New("state supports only = and !=")
		}
		name := rhs.GetIdentExpr().GetName()
		if s, ok := rhs.GetConstExpr().GetConstantKind().(*expr.Constant_StringValue); ok {
			name = s.StringValue
		} else if name == "" {
			return nil, errors.New("state takes a state name, as in state = PAID")
		}
		s, err := parseStateName(name)
		if err != nil {
			return nil, fmt.Errorf("state: %v", err)
		}
		return orderstore.Compare{Field: field, Op: op, Value: s}, nil
	case "customer_id":
		if !equality {
			return nil, errors.New("customer_id supports only = and !=")
		}
		id, ok := stringValue(rhs)
		if !ok {
			return nil, errors.New(`customer_id takes a string, as in customer_id = "c-1"`)
		}
		if err := checkCustomerID(id); err != nil {
			return nil, fmt.Errorf("customer_id %v", err)
		}
		return orderstore.Compare{Field: field, Op: op, Value: id}, nil
	case "create_time":
		if equality {
			return nil, errors.New("create_time supports <, <=, > and >=")
		}
		v := rhs
		if c := rhs.GetCallExpr(); c.GetFunction() == filtering.FunctionTimestamp && len(c.GetArgs()) == 1 {
			v = c.GetArgs()[0]
		}
		s, ok := stringValue(v)
		if !ok {
			return nil, errors.New(`create_time takes an RFC 3339 time, as in create_time >= "2026-01-02T15:04:05Z"`)
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, fmt.Errorf("create_time: %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", s)
		}
		if !inTimestampRange(t) {
			return nil, fmt.Errorf("create_time: %q is outside %s", s, timestampRange)
		}
		return orderstore.Compare{Field: field, Op: op, Value: t}, nil
	}
	return nil, unknownField(field, "")
}

func unknownField(name, why string) error {
	switch name {
	case "state", "customer_id", "create_time":
		return fmt.Errorf("%s %s", name, why)
	}
	return fmt.Errorf("cannot filter on %q; use %s", name, filterFields)
}

// fieldPath is the dotted name of a field path such as payment.reference.
func fieldPath(e *expr.Expr) string {
	if s := e.GetSelectExpr(); s != nil {
		if p := fieldPath(s.GetOperand()); p != "" {
			return p + "." + s.GetField()
		}
	}
	return e.GetIdentExpr().GetName()
}

func stringValue(e *expr.Expr) (string, bool) {
	s, ok := e.GetConstExpr().GetConstantKind().(*expr.Constant_StringValue)
	if !ok || s == nil {
		return "", false
	}
	return s.StringValue, true
}

// normalizeFilter keeps the old filter's unquoted values and lower-case
// and: it quotes the unquoted value of each comparison with customer_id
// or create_time, which AIP-160's grammar would otherwise split at a "-"
// (2026-01-01T00:00:00Z, c-1) or read as a field name, and writes a
// free-standing "and" in any case as AND. What it cannot read it leaves
// for the parser to report.
func normalizeFilter(f string) string {
	var lx filtering.Lexer
	lx.Init(f)
	var toks []filtering.Token
	for {
		t, err := lx.Lex()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return f
		}
		toks = append(toks, t)
	}
	var b strings.Builder
	b.Grow(len(f) + 8)
	field := "" // the last field name read, while a comparison may follow
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.Type == filtering.TokenTypeText && t.Value != "AND" && strings.EqualFold(t.Value, "and") &&
			i > 0 && i+1 < len(toks) && toks[i-1].Type == filtering.TokenTypeWhitespace && toks[i+1].Type == filtering.TokenTypeWhitespace:
			b.WriteString("AND")
			continue
		case t.Type.IsComparator() && (field == "customer_id" || field == "create_time"):
			b.WriteString(t.Value)
			j := i + 1
			for j < len(toks) && toks[j].Type == filtering.TokenTypeWhitespace {
				b.WriteString(toks[j].Value)
				j++
			}
			k := j
			for k < len(toks) && bareValuePart(toks[k].Type) {
				k++
			}
			isCall := k < len(toks) && toks[k].Type == filtering.TokenTypeLeftParen
			if k > j && !isCall {
				b.WriteByte('"')
				for _, v := range toks[j:k] {
					b.WriteString(strings.ReplaceAll(v.Value, `\`, `\\`))
				}
				b.WriteByte('"')
			} else {
				k = j
			}
			i, field = k-1, ""
			continue
		}
		if t.Type == filtering.TokenTypeText {
			field = t.Value
		} else if t.Type != filtering.TokenTypeWhitespace {
			field = ""
		}
		b.WriteString(t.Value)
	}
	return b.String()
}

// bareValuePart reports whether a token of type t continues an unquoted
// value: anything up to a space, a parenthesis, a quoted string or a
// keyword.
func bareValuePart(t filtering.TokenType) bool {
	switch t {
	case filtering.TokenTypeWhitespace, filtering.TokenTypeLeftParen, filtering.TokenTypeRightParen, filtering.TokenTypeString:
		return false
	}
	return !t.IsKeyword()
}

// parseStateName takes the API's state names.
func parseStateName(s string) (order.State, error) {
	v, ok := omsv1.Order_State_value[s]
	if !ok || v == 0 {
		return 0, fmt.Errorf("unknown state %q; use CREATED, PAID, SHIPPED, DELIVERED, CANCELLED or REJECTED", s)
	}
	return orderpb.StateFromProto(omsv1.Order_State(v)), nil
}

// checkCustomerID refuses what no stored customer id can be. An empty id
// would mean "any customer" to the store, and PostgreSQL refuses NUL and
// invalid UTF-8 in text outright.
func checkCustomerID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("must not be empty")
	case !utf8.ValidString(id):
		return fmt.Errorf("must be valid UTF-8")
	case strings.IndexFunc(id, unicode.IsControl) >= 0:
		return fmt.Errorf("must not contain control characters")
	}
	return nil
}

// timestampRange is the span of google.protobuf.Timestamp, which the API's
// times are; PostgreSQL has no year 0, so earlier times cannot even be
// compared with.
const timestampRange = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z"

func inTimestampRange(t time.Time) bool { return timestamppb.New(t).IsValid() }
