package order

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Kind names a command.
type Kind string

const (
	KindCreate  Kind = "create"
	KindPay     Kind = "pay"
	KindShip    Kind = "ship"
	KindDeliver Kind = "deliver"
	KindCancel  Kind = "cancel"
)

// Kinds lists every command kind.
func Kinds() []Kind { return []Kind{KindCreate, KindPay, KindShip, KindDeliver, KindCancel} }

// Command is one request to change an order. ID is the client's idempotency
// key: a command with an ID that was already processed has no second effect.
type Command struct {
	ID      string
	OrderID string
	// Actor sent the command; ID is unique per actor, not globally.
	Actor         Actor
	IssueTime     time.Time
	CorrelationID string
	Body          Body
}

// Kind reports the kind of the command's body.
func (c Command) Kind() Kind {
	if c.Body == nil {
		return ""
	}
	return c.Body.Kind()
}

// Fingerprint hashes what the command asks for (not when or by whom), so a
// reused idempotency key with a different request can be told apart from a
// retry.
func (c Command) Fingerprint() []byte {
	b, _ := json.Marshal(struct {
		OrderID string
		Kind    Kind
		Body    Body
	}{c.OrderID, c.Kind(), c.Body})
	sum := sha256.Sum256(b)
	return sum[:]
}

// Body is one of CreateOrder, PayOrder, ShipOrder, DeliverOrder, CancelOrder.
type Body interface{ Kind() Kind }

type CreateOrder struct {
	CustomerID      string
	Currency        string
	Lines           []LineItem
	ShippingAddress *Address
	// ExpectedTotalMinor is the client's own total, checked against the
	// lines; nil when the client sent none.
	ExpectedTotalMinor *int64
}

type PayOrder struct {
	Reference   string
	AmountMinor int64
}

type ShipOrder struct {
	Carrier        string
	TrackingNumber string
}

type DeliverOrder struct{}

type CancelOrder struct {
	Reason string
}

func (CreateOrder) Kind() Kind  { return KindCreate }
func (PayOrder) Kind() Kind     { return KindPay }
func (ShipOrder) Kind() Kind    { return KindShip }
func (DeliverOrder) Kind() Kind { return KindDeliver }
func (CancelOrder) Kind() Kind  { return KindCancel }

// ValidateRequestID checks an idempotency key. It becomes the SQS
// MessageDeduplicationId, so it takes that field's rules: 1 to 128
// characters, printable ASCII without spaces.
func ValidateRequestID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("must be 1 to %d characters", MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return fmt.Errorf("must be printable ASCII without spaces")
		}
	}
	return nil
}

// ParseID checks an order id and returns it in canonical form.
func ParseID(id string) (string, error) {
	u, err := uuid.Parse(id)
	if err != nil || len(id) != 36 {
		return "", fmt.Errorf("must be a UUID such as %s, got %q", uuid.Nil, id)
	}
	return u.String(), nil
}
