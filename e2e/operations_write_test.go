package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/operation"
)

// staffPrincipal is the principal of the staff token do() sends.
const staffPrincipal = "service:staff-console"

// A 202 names the command's operation, for its sender only, and points at
// it; a retry of the request names the same one, over HTTP and gRPC.
func TestAcceptanceNamesItsOperation(t *testing.T) {
	t.Parallel()
	reqID := uuid.NewString()
	var names []string
	for range 2 {
		r := do(t, "POST", ingest("/v1/orders?request_id="+reqID), orderBody)
		if r.status != http.StatusAccepted {
			t.Fatalf("create: %d %s", r.status, r.raw)
		}
		name, _ := r.body["operation"].(string)
		if loc, want := r.header.Get("Location"), query("/v1/"+name); loc != want {
			t.Errorf("Location %q, want %s", loc, want)
		}
		names = append(names, name)
	}
	if names[0] != names[1] {
		t.Errorf("a retry named another operation: %s, %s", names[0], names[1])
	}
	n, err := operation.Parse([]byte(operationSecret), staffPrincipal, names[0])
	if err != nil {
		t.Fatalf("%s: %v", names[0], err)
	}
	if n.Kind != "create" {
		t.Errorf("operation of %s", n.Kind)
	}
	if _, err := operation.Parse([]byte(operationSecret), "service:storefront", names[0]); !errors.Is(err, operation.ErrNotIssued) {
		t.Errorf("another principal's parse: %v, want ErrNotIssued", err)
	}

	// gRPC, a custom method: the same name for each try.
	orderName := create(t)
	c := commandClient(t)
	payID := uuid.NewString()
	var grpcNames []string
	for range 2 {
		acc, err := c.PayOrder(ctxT(t), &omsv1.PayOrderRequest{Name: orderName, RequestId: payID, PaymentReference: "p", AmountMinor: 2400})
		if err != nil {
			t.Fatal(err)
		}
		grpcNames = append(grpcNames, acc.Operation)
	}
	if grpcNames[0] != grpcNames[1] || grpcNames[0] == "" {
		t.Errorf("gRPC names %v", grpcNames)
	}
	if n, err := operation.Parse([]byte(operationSecret), staffPrincipal, grpcNames[0]); err != nil || n.Kind != "pay" || "orders/"+n.OrderID != orderName {
		t.Errorf("%s: %+v, %v", grpcNames[0], n, err)
	}
}

// dbOperation is the processor's record of an operation.
type dbOperation struct {
	Done         bool   `bun:"done"`
	Code         int32  `bun:"code"`
	Message      string `bun:"message"`
	OrderVersion int64  `bun:"order_version"`
	Attempts     int32  `bun:"attempts"`
}

// waitOperation reads the record under the key the name carries until it
// is done.
func waitOperation(t *testing.T, name string) dbOperation {
	t.Helper()
	n, err := operation.Parse([]byte(operationSecret), staffPrincipal, name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var rows []dbOperation
		if err := sys.db.NewSelect().Table("operations").Column("done", "code", "message", "order_version", "attempts").
			Where("id = ?", n.Key[:]).Scan(context.Background(), &rows); err != nil {
			t.Fatal(err)
		}
		if len(rows) == 1 && rows[0].Done {
			return rows[0]
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("operation %s never done\n%s", name, sys.logs())
	return dbOperation{}
}

// The processor records each command's outcome under the key its name
// carries: applied, and, for a pay whose order never appears, NOT_FOUND
// once it is given up.
func TestOperationRecordedUnderItsName(t *testing.T) {
	t.Parallel()
	r := do(t, "POST", ingest("/v1/orders?request_id="+uuid.NewString()), orderBody)
	if r.status != http.StatusAccepted {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	if op := waitOperation(t, r.body["operation"].(string)); op.Code != int32(codes.OK) || op.OrderVersion != 1 || op.Attempts != 1 {
		t.Errorf("create's operation %+v, want OK at version 1 after one attempt", op)
	}

	missing := "orders/" + uuid.NewString()
	r = do(t, "POST", ingest("/v1/"+missing+":pay"), `{"paymentReference":"p","amountMinor":"100"}`, "Idempotency-Key", uuid.NewString())
	if r.status != http.StatusAccepted {
		t.Fatalf("pay: %d %s", r.status, r.raw)
	}
	op := waitOperation(t, r.body["operation"].(string))
	if want := fmt.Sprintf("order %s not found", missing); op.Code != int32(codes.NotFound) || op.Message != want || op.Attempts < 2 {
		t.Errorf("missing order's pay: %+v, want NOT_FOUND %q after its retries", op, want)
	}
}
