package operation_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/omsdev/oms/pkg/operation"
	"github.com/omsdev/oms/pkg/order"
)

var secret = []byte(strings.Repeat("k", 32))

func pay(actor, id string, amount int64) order.Command {
	return order.Command{ID: id, OrderID: "5f0c0f52-4b0a-4f7e-9a59-3f0f2b8b1d11", Actor: order.Actor{ID: actor},
		Body: order.PayOrder{Reference: "p-1", AmountMinor: amount}}
}

func TestNameRoundTripsForItsPrincipalOnly(t *testing.T) {
	cmd := pay("service:shop", "req-1", 100)
	name, err := operation.For(secret, cmd)
	if err != nil {
		t.Fatal(err)
	}
	n, err := operation.Parse(secret, "service:shop", name)
	if err != nil {
		t.Fatal(err)
	}
	if n.OrderID != cmd.OrderID || n.Kind != order.KindPay || n.Key != operation.KeyOf(cmd) {
		t.Errorf("parsed %+v from %s", n, name)
	}
	if _, err := operation.Parse(secret, "service:other", name); !errors.Is(err, operation.ErrNotIssued) {
		t.Errorf("another principal: %v, want ErrNotIssued", err)
	}
	if _, err := operation.Parse([]byte(strings.Repeat("x", 32)), "service:shop", name); !errors.Is(err, operation.ErrNotIssued) {
		t.Errorf("another secret: %v, want ErrNotIssued", err)
	}
}

func TestKeySeparatesRetriesFromReusedKeys(t *testing.T) {
	a := operation.KeyOf(pay("service:shop", "req-1", 100))
	if a != operation.KeyOf(pay("service:shop", "req-1", 100)) {
		t.Error("a retry of the same request has another key")
	}
	if a == operation.KeyOf(pay("service:shop", "req-1", 200)) {
		t.Error("a reused request id with a different request has the same key")
	}
	if a == operation.KeyOf(pay("service:other", "req-1", 100)) {
		t.Error("two principals' requests share a key")
	}
}

func TestAlteredOrMalformedNames(t *testing.T) {
	name, _ := operation.For(secret, pay("service:shop", "req-1", 100))
	b, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(name, operation.Prefix))
	b[5] ^= 1 // another order
	if _, err := operation.Parse(secret, "service:shop", operation.Prefix+base64.RawURLEncoding.EncodeToString(b)); !errors.Is(err, operation.ErrNotIssued) {
		t.Errorf("altered name: %v, want ErrNotIssued", err)
	}
	for _, s := range []string{"", "operations/", "orders/x", "operations/!!!", "operations/" + strings.Repeat("A", 67), name + "A"} {
		if _, err := operation.Parse(secret, "service:shop", s); !errors.Is(err, operation.ErrMalformed) {
			t.Errorf("%q: %v, want ErrMalformed", s, err)
		}
	}
}

func TestFormatRebuildsTheIssuedName(t *testing.T) {
	cmd := pay("service:shop", "req-1", 100)
	name, err := operation.For(secret, cmd)
	if err != nil {
		t.Fatal(err)
	}
	n, err := operation.Parse(secret, "service:shop", name)
	if err != nil {
		t.Fatal(err)
	}
	again, err := operation.Format(secret, "service:shop", n)
	if err != nil || again != name {
		t.Errorf("Format = %q, %v; want %q", again, err, name)
	}
	if other, _ := operation.Format(secret, "service:other", n); other == name {
		t.Error("another principal's name is the same")
	}
	if _, err := operation.Format(secret, "service:shop", operation.Name{OrderID: "x", Kind: order.KindPay}); err == nil {
		t.Error("an order id that is not a UUID was formatted")
	}
	if _, err := operation.Format(secret, "service:shop", operation.Name{OrderID: cmd.OrderID}); err == nil {
		t.Error("a name without a command kind was formatted")
	}
}
