package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/devissuer"
	"github.com/omsdev/oms/proto/openapi"
)

// apiCase is one real request against the running stack, checked against
// the served OpenAPI document.
type apiCase struct {
	route   string // "METHOD /template" as documented
	service string // ingest or query: the server the document names
	name    string
	method  string
	target  string // path and query, as sent
	body    string
	token   string // "staff" (the default), "none", or "bad"
	header  []string
	status  int
	// lines: the response is newline-delimited JSON (watch), each line
	// checked on its own; the request is cut after the first one.
	lines bool
}

// Every route the served document lists is called for real, with a valid
// token (success), an invalid request (400) and no token (401), and each
// request and response is checked against the document with kin-openapi's
// openapi3filter: the status must be one the route documents, the body and
// headers must match its schema. A documented route without those cases
// fails the test, so a new route cannot go unchecked.
func TestOpenAPIConformance(t *testing.T) {
	doc, router := servedDocument(t)

	// Real resources for the cases to name.
	created := do(t, "POST", ingest("/v1/orders?request_id="+uuid.NewString()), orderBody)
	if created.status != http.StatusAccepted {
		t.Fatalf("create: %d %s", created.status, created.raw)
	}
	name, _ := created.body["name"].(string)
	opName, _ := created.body["operation"].(string)
	id := strings.TrimPrefix(name, "orders/")
	opID := strings.TrimPrefix(opName, "operations/")
	if id == "" || opID == "" || opID == opName {
		t.Fatalf("create answered %s: want name and operation", created.raw)
	}
	waitOrder(t, name, func(map[string]any) bool { return true })
	missing := uuid.NewString()
	pay := `{"paymentReference":"pay-1","amountMinor":"2400"}`
	ship := `{"carrier":"UPS","trackingNumber":"1Z999"}`

	cases := []apiCase{
		// Commands, on ingest.
		{route: "POST /v1/orders", name: "create", target: "/v1/orders?request_id=" + uuid.NewString(), body: orderBody, status: 202},
		{route: "POST /v1/orders", name: "create, Idempotency-Key", target: "/v1/orders", body: orderBody, header: []string{"Idempotency-Key", uuid.NewString()}, status: 202},
		{route: "POST /v1/orders", name: "no line items", target: "/v1/orders?request_id=" + uuid.NewString(), body: `{"customerId":"c-1","currencyCode":"USD"}`, status: 400},
		{route: "POST /v1/orders", name: "not JSON", target: "/v1/orders", body: `{"customerId":`, status: 400},
		{route: "POST /v1/orders", name: "bad Idempotency-Key", target: "/v1/orders", body: orderBody, header: []string{"Idempotency-Key", strings.Repeat("k", 200)}, status: 400},
		{route: "POST /v1/orders", name: "too large", target: "/v1/orders", body: `{"customerId":"` + strings.Repeat("c", 2<<20) + `"}`, status: 413},
		{route: "POST /v1/orders", name: "no token", target: "/v1/orders", body: orderBody, token: "none", status: 401},
		{route: "POST /v1/orders", name: "bad token", target: "/v1/orders", body: orderBody, token: "bad", status: 401},
	}
	for _, c := range []struct{ verb, body, bad string }{
		{"pay", pay, `{"paymentReference":"","amountMinor":"2400"}`},
		{"ship", ship, `{"carrier":""}`},
		{"deliver", `{}`, `{"unknownField":1}`},
		{"cancel", `{"reason":"changed my mind"}`, `{"requestId":"` + strings.Repeat("r", 200) + `"}`},
	} {
		route := "POST /v1/orders/{order}:" + c.verb
		target := "/v1/" + name + ":" + c.verb
		cases = append(cases,
			apiCase{route: route, name: c.verb, target: target, body: c.body, header: []string{"Idempotency-Key", uuid.NewString()}, status: 202},
			apiCase{route: route, name: "invalid body", target: target, body: c.bad, status: 400},
			apiCase{route: route, name: "no token", target: target, body: c.body, token: "none", status: 401},
		)
	}
	cases = append(cases,
		// Reads, on query.
		apiCase{route: "GET /v1/orders/{order}", name: "get", target: "/v1/" + name, status: 200},
		apiCase{route: "GET /v1/orders/{order}", name: "read mask, min version", target: "/v1/" + name + "?readMask=state,version&minVersion=1", status: 200},
		apiCase{route: "GET /v1/orders/{order}", name: "bad read mask", target: "/v1/" + name + "?readMask=nope", status: 400},
		apiCase{route: "GET /v1/orders/{order}", name: "missing", target: "/v1/orders/" + missing, status: 404},
		apiCase{route: "GET /v1/orders/{order}", name: "min version never reached", target: "/v1/" + name + "?minVersion=1000", header: []string{"Grpc-Timeout", "300m"}, status: 504},
		apiCase{route: "GET /v1/orders/{order}", name: "no token", target: "/v1/" + name, token: "none", status: 401},
		apiCase{route: "GET /v1/orders/{order}", name: "bad token", target: "/v1/" + name, token: "bad", status: 401},
		apiCase{route: "GET /v1/orders", name: "list", target: "/v1/orders?pageSize=2", status: 200},
		apiCase{route: "GET /v1/orders", name: "filter", target: "/v1/orders?filter=" + url.QueryEscape(`state = CREATED`) + "&readMask=name,state", status: 200},
		apiCase{route: "GET /v1/orders", name: "bad filter", target: "/v1/orders?filter=" + url.QueryEscape(`colour = "red"`), status: 400},
		apiCase{route: "GET /v1/orders", name: "no token", target: "/v1/orders", token: "none", status: 401},
		apiCase{route: "GET /v1/orders/{order}/events", name: "events", target: "/v1/" + name + "/events", status: 200},
		apiCase{route: "GET /v1/orders/{order}/events", name: "bad page token", target: "/v1/" + name + "/events?pageToken=garbage", status: 400},
		apiCase{route: "GET /v1/orders/{order}/events", name: "no token", target: "/v1/" + name + "/events", token: "none", status: 401},
		apiCase{route: "GET /v1/orders/{order}:watch", name: "watch", target: "/v1/" + name + ":watch", status: 200, lines: true},
		apiCase{route: "GET /v1/orders/{order}:watch", name: "bad read mask", target: "/v1/" + name + ":watch?readMask=nope", status: 400},
		apiCase{route: "GET /v1/orders/{order}:watch", name: "missing", target: "/v1/orders/" + missing + ":watch", status: 404},
		apiCase{route: "GET /v1/orders/{order}:watch", name: "no token", target: "/v1/" + name + ":watch", token: "none", status: 401},
		apiCase{route: "GET /v1/orders/{order}:watch", name: "bad token", target: "/v1/" + name + ":watch", token: "bad", status: 401},

		// Operations, on query.
		apiCase{route: "GET /v1/operations/{operation}", name: "get", target: "/v1/" + opName, status: 200},
		apiCase{route: "GET /v1/operations/{operation}", name: "malformed", target: "/v1/operations/not-an-operation", status: 400},
		apiCase{route: "GET /v1/operations/{operation}", name: "no token", target: "/v1/" + opName, token: "none", status: 401},
		apiCase{route: "GET /v1/operations/{operation}:wait", name: "wait", target: "/v1/" + opName + ":wait?timeout=5s", status: 200},
		apiCase{route: "GET /v1/operations/{operation}:wait", name: "bad timeout", target: "/v1/" + opName + ":wait?timeout=soon", status: 400},
		apiCase{route: "GET /v1/operations/{operation}:wait", name: "no token", target: "/v1/" + opName + ":wait", token: "none", status: 401},
		apiCase{route: "GET /v1/operations", name: "list", target: "/v1/operations?filter=" + url.QueryEscape(`order = "`+name+`"`) + "&pageSize=10", status: 200},
		apiCase{route: "GET /v1/operations", name: "bad filter", target: "/v1/operations?filter=" + url.QueryEscape(`state = "done"`), status: 400},
		apiCase{route: "GET /v1/operations", name: "no token", target: "/v1/operations?filter=" + url.QueryEscape(`order = "`+name+`"`), token: "none", status: 401},
	)
	// What every gateway serves, on both services.
	for _, svc := range []string{"ingest", "query"} {
		cases = append(cases,
			apiCase{route: "GET /openapi.json", service: svc, name: "document", target: "/openapi.json", token: "none", status: 200},
			apiCase{route: "GET /healthz", service: svc, name: "live", target: "/healthz", token: "none", status: 200},
			apiCase{route: "GET /readyz", service: svc, name: "ready", target: "/readyz", token: "none", status: 200},
		)
	}

	exercised := map[string][]int{}
	for _, c := range cases {
		c.method, _, _ = strings.Cut(c.route, " ")
		if c.service == "" {
			c.service = "query"
			if c.method == "POST" {
				c.service = "ingest"
			}
		}
		t.Run(c.route+" "+c.name, func(t *testing.T) {
			checkCase(t, doc, router, c)
		})
		exercised[c.route] = append(exercised[c.route], c.status)
	}

	// Every documented route got its cases.
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			route := method + " " + path
			got := exercised[route]
			if !slices.ContainsFunc(got, func(s int) bool { return s/100 == 2 }) {
				t.Errorf("%s is documented but no case calls it successfully: add one", route)
			}
			if op.Security != nil && len(*op.Security) == 0 {
				continue // public
			}
			if !slices.Contains(got, 400) || !slices.Contains(got, 401) {
				t.Errorf("%s: cases answered %v; want a 400 (invalid request) and a 401 (no token) among them", route, got)
			}
		}
	}
}

// servedDocument fetches /openapi.json from both gateways (without a token),
// checks they serve the same document, the one embedded in proto/openapi,
// and loads it, with a router for it.
func servedDocument(t *testing.T) (*openapi3.T, routers.Router) {
	t.Helper()
	var served []byte
	for _, u := range []string{ingest("/openapi.json"), query("/openapi.json")} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", u, resp.Status)
		}
		if served != nil && !bytes.Equal(b, served) {
			t.Fatal("ingest and query serve different documents")
		}
		served = b
	}
	if !bytes.Equal(served, openapi.JSON) {
		t.Fatal("the served document is not proto/openapi's")
	}
	doc, err := openapi3.NewLoader().LoadFromData(served)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(t.Context()); err != nil {
		t.Fatalf("served document: %v", err)
	}
	// The router matches paths only: the servers name the services'
	// default addresses, not this stack's; checkCase checks them apart.
	bare, err := openapi3.NewLoader().LoadFromData(served)
	if err != nil {
		t.Fatal(err)
	}
	bare.Servers = nil
	for _, item := range bare.Paths.Map() {
		item.Servers = nil
		for _, op := range item.Operations() {
			op.Servers = nil
		}
	}
	router, err := gorillamux.NewRouter(bare)
	if err != nil {
		t.Fatal(err)
	}
	return doc, router
}

func checkCase(t *testing.T, doc *openapi3.T, router routers.Router, c apiCase) {
	base := ingest("")
	if c.service == "query" {
		base = query("")
	}
	req, err := http.NewRequest(c.method, base+c.target, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if c.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	switch c.token {
	case "", "staff":
		req.Header.Set("Authorization", "Bearer "+sys.tokens[devissuer.EnvStaff])
	case "bad":
		req.Header.Set("Authorization", "Bearer not.a.jwt")
	}
	for i := 0; i+1 < len(c.header); i += 2 {
		req.Header.Set(c.header[i], c.header[i+1])
	}

	// The request resolves to the documented route, which the named
	// service serves.
	route, params, err := router.FindRoute(req)
	if err != nil {
		t.Fatalf("%s %s: no documented route: %v", c.method, c.target, err)
	}
	if got := route.Method + " " + route.Path; got != c.route {
		t.Fatalf("%s %s resolves to %s, want %s", c.method, c.target, got, c.route)
	}
	op := doc.Paths.Value(route.Path).GetOperation(route.Method)
	if !servedBy(op, c.service) {
		t.Errorf("%s: the document does not name %s among its servers", c.route, c.service)
	}
	route.Spec, route.PathItem, route.Operation = doc, doc.Paths.Value(route.Path), op

	opts := &openapi3filter.Options{
		IncludeResponseStatus: true,
		MultiError:            true,
		// The document's bearer scheme holds when a bearer token is sent;
		// whether it verifies is the service's to say (401).
		AuthenticationFunc: func(ctx context.Context, in *openapi3filter.AuthenticationInput) error {
			scheme, tok, _ := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
			if in.SecurityScheme.Type != "http" || !strings.EqualFold(scheme, in.SecurityScheme.Scheme) || tok == "" {
				return fmt.Errorf("no %s token", in.SecurityScheme.Scheme)
			}
			return nil
		},
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	reqErr := openapi3filter.ValidateRequest(t.Context(), in)
	var secErr *openapi3filter.SecurityRequirementsError
	switch {
	case c.token == "none" && c.status == http.StatusUnauthorized:
		// The document must say the route needs the token it lacks.
		if !errors.As(reqErr, &secErr) {
			t.Errorf("request without a token: the document does not require one (%v)", reqErr)
		}
	case c.status/100 == 2 && reqErr != nil:
		t.Errorf("a request the service accepts is invalid by the document: %v", reqErr)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var bodies [][]byte
	if c.lines && resp.StatusCode == http.StatusOK {
		// The stream runs until its deadline: check the first line, the
		// current state, and hang up.
		line, err := bufio.NewReader(resp.Body).ReadBytes('\n')
		if err != nil {
			t.Fatalf("first line of the stream: %v", err)
		}
		bodies = append(bodies, bytes.TrimSuffix(line, []byte("\n")))
		cancel()
	} else {
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, raw)
	}
	if resp.StatusCode != c.status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, clipBody(bodies[0]))
	}
	if op.Responses.Status(resp.StatusCode) == nil {
		t.Errorf("status %d is not among the route's documented responses (only default would take it)", resp.StatusCode)
	}
	for _, body := range bodies {
		out := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Options: opts,
		}
		out.SetBodyBytes(body)
		if err := openapi3filter.ValidateResponse(t.Context(), out); err != nil {
			t.Errorf("response does not match the document: %v\nbody: %s", err, clipBody(body))
		}
	}
}

// servedBy reports whether op names the service among its servers.
func servedBy(op *openapi3.Operation, service string) bool {
	if op.Servers == nil {
		return false
	}
	for _, s := range *op.Servers {
		if s.Extensions["x-oms-service"] == service {
			return true
		}
	}
	return false
}

func clipBody(b []byte) string {
	if len(b) > 600 {
		return string(b[:600]) + "..."
	}
	return string(b)
}
