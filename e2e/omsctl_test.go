package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/omsdev/oms/pkg/devissuer"
)

// omsctl builds the command-line client once, next to the services.
var omsctlBuild = sync.OnceValues(func() (string, error) {
	path := filepath.Join(sys.bin, "omsctl")
	cmd := exec.Command("go", "build", "-o", path, "github.com/omsdev/oms/cmd/omsctl")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", errors.New("build omsctl: " + err.Error() + "\n" + string(out))
	}
	return path, nil
})

type omsctlResult struct {
	code           int
	stdout, stderr string
}

// omsctl runs the client against the stack as the staff client, with the
// endpoints and token from the environment, as a script would.
func omsctl(t *testing.T, args ...string) omsctlResult {
	t.Helper()
	bin, err := omsctlBuild()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{
		"OMS_INGEST_ADDR=" + sys.ingestGRPC,
		"OMS_QUERY_ADDR=" + sys.queryGRPC,
		"OMS_TOKEN=" + sys.tokens[devissuer.EnvStaff],
		"PATH=" + os.Getenv("PATH"),
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	r := omsctlResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("omsctl %q: %v", args, err)
	}
	return r
}

// omsctlOK runs omsctl and fails the test unless it exits 0 with a quiet stderr.
func omsctlOK(t *testing.T, args ...string) string {
	t.Helper()
	r := omsctl(t, args...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("omsctl %q: exit %d\nstdout:\n%s\nstderr:\n%s\n%s", args, r.code, r.stdout, r.stderr, sys.logs())
	}
	return r.stdout
}

// waited is what a command with --wait -o json prints.
type waited struct {
	RequestID  string `json:"requestId"`
	Acceptance struct {
		Name, Operation, CommandID string
	}
	Operation struct {
		Name     string
		Done     bool
		Error    *struct{ Code int }
		Response struct {
			Type    string `json:"@type"`
			State   string
			Version string
		}
	}
}

func parseWaited(t *testing.T, out string) waited {
	t.Helper()
	var w waited
	if err := json.Unmarshal([]byte(out), &w); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, out)
	}
	return w
}

// TestOmsctlLifecycle drives an order from create to delivered with the
// client alone, each command waiting for its operation, then reads it back
// every way the client can.
func TestOmsctlLifecycle(t *testing.T) {
	t.Parallel()
	customer := randomName("c-omsctl-")

	w := parseWaited(t, omsctlOK(t, "create", "--customer", customer, "--currency", "USD",
		"--line", "SKU-1:Mug:2:1200", "--recipient", "Ann", "--address-line", "1 Main St", "--region-code", "US",
		"--wait", "-o", "json"))
	name := w.Acceptance.Name
	if !strings.HasPrefix(name, "orders/") || w.RequestID == "" || w.Acceptance.CommandID != w.RequestID ||
		w.Operation.Name != w.Acceptance.Operation || !w.Operation.Done || w.Operation.Error != nil ||
		w.Operation.Response.Type != "type.googleapis.com/oms.v1.Order" || w.Operation.Response.State != "CREATED" {
		t.Fatalf("create --wait: %+v", w)
	}

	// People get tables; the order a command produced is shown under it.
	out := omsctlOK(t, "pay", name, "--amount", "2400", "--reference", "ch_1", "--wait")
	if !strings.Contains(out, "REQUEST ID") || !strings.Contains(out, name) || !regexpLine(out, `PAID\s+`+customer+`\s+2400 USD\s+2\s`) {
		t.Errorf("pay --wait table:\n%s", out)
	}
	// The bare id names the order too.
	out = omsctlOK(t, "ship", strings.TrimPrefix(name, "orders/"), "--carrier", "UPS", "--tracking", "1Z999", "--wait")
	if !regexpLine(out, `SHIPPED\s+`+customer) {
		t.Errorf("ship --wait table:\n%s", out)
	}
	w = parseWaited(t, omsctlOK(t, "deliver", name, "--wait", "-o", "json"))
	if w.Operation.Response.State != "DELIVERED" || w.Operation.Response.Version != "4" {
		t.Errorf("deliver --wait: %+v", w.Operation)
	}

	var got map[string]any
	if err := json.Unmarshal([]byte(omsctlOK(t, "get", name, "-o", "json")), &got); err != nil {
		t.Fatal(err)
	}
	if got["state"] != "DELIVERED" || got["version"] != "4" || got["totalMinor"] != "2400" ||
		got["shipment"].(map[string]any)["trackingNumber"] != "1Z999" || got["shippingAddress"].(map[string]any)["recipient"] != "Ann" {
		t.Errorf("get -o json: %v", got)
	}
	got = nil
	if err := json.Unmarshal([]byte(omsctlOK(t, "get", name, "--fields", "id,state", "-o", "json")), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["state"] != "DELIVERED" {
		t.Errorf("get --fields id,state: %v", got)
	}
	if out := omsctlOK(t, "get", name); !regexpLine(out, `^`+name+`\s+DELIVERED\s+`+customer+`\s+2400 USD\s+4\s+\d{4}-`) {
		t.Errorf("get table:\n%s", out)
	}

	// list --all: one order per line, this customer's only.
	out = omsctlOK(t, "list", "--filter", `customer_id = "`+customer+`" AND state = DELIVERED`, "--page-size", "1", "--all", "-o", "json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var listed map[string]any
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &listed) != nil || listed["name"] != name {
		t.Errorf("list --filter --all -o json:\n%s", out)
	}

	var evs struct {
		Events []struct{ Type, OrderVersion string }
	}
	if err := json.Unmarshal([]byte(omsctlOK(t, "events", name, "-o", "json")), &evs); err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range evs.Events {
		types = append(types, e.Type)
	}
	if strings.Join(types, ",") != "order.created,order.paid,order.shipped,order.delivered" {
		t.Errorf("events: %v", types)
	}
	if out := omsctlOK(t, "events", name); !regexpLine(out, `^4\s+order.delivered\s+SHIPPED\s+DELIVERED`) {
		t.Errorf("events table:\n%s", out)
	}

	// The order's operations: four commands, each done.
	var ops struct {
		Operations []struct {
			Name string
			Done bool
		}
	}
	if err := json.Unmarshal([]byte(omsctlOK(t, "operation", "list", "--order", name, "-o", "json")), &ops); err != nil {
		t.Fatal(err)
	}
	if len(ops.Operations) != 4 {
		t.Errorf("operation list: %+v", ops)
	}
	for _, op := range ops.Operations {
		if !op.Done {
			t.Errorf("operation %s not done", op.Name)
		}
	}

	// A watch of a delivered order shows its state and ends at --timeout,
	// which is not a failure.
	out = omsctlOK(t, "watch", name, "--timeout", "2s", "-o", "json")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	var watched map[string]any
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &watched) != nil || watched["state"] != "DELIVERED" || watched["version"] != "4" {
		t.Errorf("watch:\n%s", out)
	}
}

// TestOmsctlWaitFailure: a command that is accepted and then refused exits
// 1, with the refusal on one line of stderr, and a retry with the same
// request id names the same operation.
func TestOmsctlWaitFailure(t *testing.T) {
	t.Parallel()
	name := parseWaited(t, omsctlOK(t, "create", "--customer", "c-omsctl", "--currency", "USD",
		"--line", "SKU-1:Mug:2:1200", "--wait", "-o", "json")).Acceptance.Name

	reqID := randomName("pay-")
	r := omsctl(t, "pay", name, "--amount", "100", "--reference", "ch_x", "--request-id", reqID, "--wait")
	prefix := "omsctl: pay " + name + ": FAILED_PRECONDITION: "
	if r.code != 1 || strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, prefix) ||
		!strings.Contains(r.stderr, "100") || !strings.Contains(r.stderr, "2400") {
		t.Fatalf("pay --wait, wrong amount: exit %d, stderr %q, stdout\n%s", r.code, r.stderr, r.stdout)
	}
	if !strings.Contains(r.stdout, reqID) {
		t.Errorf("the acceptance with the request id was not printed:\n%s", r.stdout)
	}

	// The retry is the same request: same operation, same outcome.
	again := omsctl(t, "pay", name, "--amount", "100", "--reference", "ch_x", "--request-id", reqID, "--wait", "-o", "json")
	w := parseWaited(t, again.stdout)
	if again.code != 1 || again.stderr != r.stderr || w.Operation.Error == nil || w.Operation.Error.Code != 9 {
		t.Errorf("retry: exit %d, stderr %q, operation %+v", again.code, again.stderr, w.Operation)
	}
	op := w.Acceptance.Operation
	if r := omsctl(t, "operation", "wait", op); r.code != 1 || !strings.HasPrefix(r.stderr, "omsctl: operation wait "+op+": FAILED_PRECONDITION: ") ||
		!strings.Contains(r.stdout, "FAILED_PRECONDITION") {
		t.Errorf("operation wait: exit %d, stderr %q\n%s", r.code, r.stderr, r.stdout)
	}
	// Reading a failed operation is a read that worked.
	if out := omsctlOK(t, "operation", "get", strings.TrimPrefix(op, "operations/")); !strings.Contains(out, "FAILED_PRECONDITION") || !strings.Contains(out, name) {
		t.Errorf("operation get:\n%s", out)
	}

	// The order is untouched and still payable.
	if out := omsctlOK(t, "pay", name, "--amount", "2400", "--reference", "ch_y", "--wait"); !regexpLine(out, `PAID`) {
		t.Errorf("pay after the refusal:\n%s", out)
	}

	// Bad input is refused at once, with its field violations.
	r = omsctl(t, "create", "--currency", "USD", "--customer", "c-omsctl", "--line", "SKU-1:Mug:0:1200")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "omsctl: create: INVALID_ARGUMENT: order.line_items[0].quantity: ") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("create, quantity 0: exit %d, stderr %q", r.code, r.stderr)
	}
	// A usage mistake is exit 2.
	if r := omsctl(t, "pay", name); r.code != 2 {
		t.Errorf("pay without --amount: exit %d, stderr %q", r.code, r.stderr)
	}
}

// regexpLine reports whether a line of out matches expr.
func regexpLine(out, expr string) bool {
	re := regexp.MustCompile(expr)
	for _, l := range strings.Split(out, "\n") {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}
