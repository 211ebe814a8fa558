// Package operation names the long-running operation (AIP-151) that
// reports a command's outcome. Ingest names it when it accepts the command,
// before anything is stored; the processor records the outcome under its
// Key; the query service serves it.
//
// A name is "operations/" and the base64url of
//
//	version (1) | order id (16) | command kind (1) | Key (16) | MAC (16)
//
// where the MAC is HMAC-SHA256 under OPERATION_SECRET of the caller's
// principal and the 34 bytes before it. The query service can therefore
// answer "pending" for a command that has not reached the processor yet,
// with its order and kind, to the caller that sent it, and to nobody else;
// a forged or altered name is not found.
package operation

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"

	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/order"
)

// Key identifies one request: the principal that sent it, its request id
// and what it asks for (order.Command.Fingerprint). A retry of the request
// has the same key; the same request id reused for another request has
// another, so each gets its own outcome.
type Key [16]byte

// KeyOf returns cmd's key.
func KeyOf(cmd order.Command) Key {
	h := sha256.New()
	h.Write([]byte("oms-operation\x00"))
	h.Write([]byte(cmd.Actor.ID))
	h.Write([]byte{0})
	h.Write([]byte(cmd.ID))
	h.Write([]byte{0})
	h.Write(cmd.Fingerprint())
	var k Key
	copy(k[:], h.Sum(nil))
	return k
}

// Name is what an operation's name carries.
type Name struct {
	OrderID string // a UUID
	Kind    order.Kind
	Key     Key
}

// Prefix starts every operation name (its collection, AIP-122).
const Prefix = "operations/"

const (
	version = 1
	bodyLen = 1 + 16 + 1 + 16
	macLen  = 16
)

var kinds = []order.Kind{"", order.KindCreate, order.KindPay, order.KindShip, order.KindDeliver, order.KindCancel}

func kindByte(k order.Kind) byte {
	for i, x := range kinds {
		if i > 0 && x == k {
			return byte(i)
		}
	}
	return 0
}

// For names cmd's operation for its principal.
func For(secret []byte, cmd order.Command) (string, error) {
	return Format(secret, cmd.Actor.ID, Name{OrderID: cmd.OrderID, Kind: cmd.Kind(), Key: KeyOf(cmd)})
}

// Format names the operation n for principal: the name For gave the
// command, rebuilt from a recorded operation (its principal, order, kind
// and key), so that a list of operations names each as its 202 did.
func Format(secret []byte, principal string, n Name) (string, error) {
	id, err := uuid.Parse(n.OrderID)
	if err != nil {
		return "", err
	}
	if kindByte(n.Kind) == 0 {
		return "", errors.New("operation: unknown command kind")
	}
	b := make([]byte, 0, bodyLen+macLen)
	b = append(b, version)
	b = append(b, id[:]...)
	b = append(b, kindByte(n.Kind))
	b = append(b, n.Key[:]...)
	b = append(b, mac(secret, principal, b)...)
	return Prefix + base64.RawURLEncoding.EncodeToString(b), nil
}

func mac(secret []byte, principal string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("oms-operation-name\x00"))
	m.Write([]byte(principal))
	m.Write([]byte{0})
	m.Write(body)
	return m.Sum(nil)[:macLen]
}

var (
	// ErrMalformed: not an operation name at all (INVALID_ARGUMENT).
	ErrMalformed = errors.New("not an operation name: want operations/{id} as returned by a command")
	// ErrNotIssued: well formed, but not issued to this principal, or
	// altered (NOT_FOUND, so as not to tell which).
	ErrNotIssued = errors.New("no such operation")
)

// Parse reads name and checks that it was issued to principal. On
// ErrNotIssued it still returns what the name says, so that staff can look
// up a recorded operation another principal's command started; nothing
// unverified may be shown without that record.
func Parse(secret []byte, principal, name string) (Name, error) {
	id, ok := strings.CutPrefix(name, Prefix)
	if !ok {
		return Name{}, ErrMalformed
	}
	b, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(b) != bodyLen+macLen || b[0] != version {
		return Name{}, ErrMalformed
	}
	k := int(b[17])
	if k == 0 || k >= len(kinds) {
		return Name{}, ErrMalformed
	}
	n := Name{OrderID: uuid.UUID(b[1:17]).String(), Kind: kinds[k]}
	copy(n.Key[:], b[18:34])
	if !hmac.Equal(mac(secret, principal, b[:bodyLen]), b[bodyLen:]) {
		return n, ErrNotIssued
	}
	return n, nil
}
