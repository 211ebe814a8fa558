package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/devissuer"
)

// demo walks three orders through the running stack: a full lifecycle, a
// paid order cancelled (refund due), and an illegal command that is
// rejected and recorded. It acts as the storefront service, and as the
// staff console for shipping, which the storefront may not do; $OMS_TOKEN
// replaces both.
func demo(ctx context.Context, ingest, query string) error {
	if _, err := http.Get(query + "/readyz"); err != nil {
		return fmt.Errorf("no stack answers at %s; start it with `make run` in another terminal", query)
	}
	token := devissuer.LocalToken(devissuer.EnvService)
	staff := devissuer.LocalToken(devissuer.EnvStaff)
	if staff == "" {
		staff = token
	}
	body := `{"customerId":"demo-customer","currencyCode":"USD","lineItems":[` +
		`{"sku":"MUG-1","name":"Mug","quantity":2,"unitPriceMinor":"1200"},` +
		`{"sku":"TEA-7","name":"Green tea","quantity":1,"unitPriceMinor":"650"}]}`
	steps := []struct {
		title string
		verbs []string // ":verb body" after create
	}{
		{"the whole lifecycle", []string{`pay {"paymentReference":"ch_demo_1","amountMinor":"3050"}`,
			`ship {"carrier":"UPS","trackingNumber":"1Z999AA10123456784"}`, `deliver {}`}},
		{"paid, then cancelled (refund due)", []string{`pay {"paymentReference":"ch_demo_2","amountMinor":"3050"}`,
			`cancel {"reason":"customer changed their mind"}`}},
		{"cancelled, then an illegal ship", []string{`cancel {"reason":"duplicate"}`,
			`ship {"carrier":"DHL","trackingNumber":"JD0001"}`}},
	}
	for _, s := range steps {
		fmt.Printf("\n=== %s\n", s.title)
		acc, err := post(ctx, ingest+"/v1/orders", body, token)
		if err != nil {
			return err
		}
		name := acc["name"].(string)
		fmt.Printf("POST /v1/orders -> 202 %s\n", name)
		if err := waitVersion(ctx, query, name, token, 1); err != nil {
			return err
		}
		for i, v := range s.verbs {
			verb, payload, _ := strings.Cut(v, " ")
			as := token
			if verb == "ship" || verb == "deliver" { // orders:fulfil is the staff console's
				as = staff
			}
			if _, err := post(ctx, ingest+"/v1/"+name+":"+verb, payload, as); err != nil {
				return err
			}
			fmt.Printf("POST :%s -> 202\n", verb)
			if err := waitEvents(ctx, query, name, token, i+2); err != nil {
				return err
			}
		}
		o, _ := get(ctx, query+"/v1/"+name+"?read_mask=id,state,version,totalMinor,payment,shipment,cancellation", token)
		pretty("order", o)
		evs, _ := get(ctx, query+"/v1/"+name+"/events", token)
		for _, e := range evs["events"].([]any) {
			e := e.(map[string]any)
			fmt.Printf("  #%v %-17v %v -> %v %v\n", e["sequence"], e["type"], or(e["fromState"], "-"), e["toState"], or(e["reason"], ""))
		}
	}
	return nil
}

func or(v any, def string) any {
	if v == nil {
		return def
	}
	return v
}

func post(ctx context.Context, url, body, token string) (map[string]any, error) {
	req, _ := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	req.Header.Set("Idempotency-Key", uuid.NewString())
	return call(req, token, http.StatusAccepted)
}

func get(ctx context.Context, url, token string) (map[string]any, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	return call(req, token, http.StatusOK)
}

// call sends req with the bearer token (none when it is empty, as a stack
// in insecure dev mode wants).
func call(req *http.Request, token string, want int) (map[string]any, error) {
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusUnauthorized {
		return nil, fmt.Errorf("%s %s: %s %s\n(the token comes from $OMS_TOKEN, $%s or %s, which `make run` writes; is the stack running?)",
			req.Method, req.URL.Path, resp.Status, b, devissuer.EnvService, devissuer.TokensFile())
	}
	if resp.StatusCode != want {
		return nil, fmt.Errorf("%s %s: %s %s", req.Method, req.URL.Path, resp.Status, b)
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

func waitVersion(ctx context.Context, query, name, token string, v int) error {
	return poll(ctx, func() bool {
		o, err := get(ctx, query+"/v1/"+name+"?read_mask=version", token)
		return err == nil && o["version"] == fmt.Sprint(v)
	})
}

func waitEvents(ctx context.Context, query, name, token string, n int) error {
	return poll(ctx, func() bool {
		evs, err := get(ctx, query+"/v1/"+name+"/events", token)
		list, _ := evs["events"].([]any)
		return err == nil && len(list) >= n
	})
}

func poll(ctx context.Context, done func() bool) error {
	deadline := time.Now().Add(30 * time.Second)
	for !done() {
		if time.Now().After(deadline) {
			return fmt.Errorf("the processor did not apply the command within 30s; is it running?")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func pretty(label string, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("  ", "  ")
	enc.Encode(v)
	fmt.Printf("%s: %s", label, b.String())
}
