// Package auth is the trust boundary: it verifies OAuth 2.0 bearer JWTs
// against the issuer's JWKS and turns them into a Principal, the caller
// every API method acts for.
package auth

import (
	"context"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/omsdev/oms/pkg/order"
)

// The scopes a token may carry (space-separated in its "scope" claim, or a
// list in "scp"), in the style of Shopify's and commercetools' order scopes.
const (
	ScopeCreate = "orders:create" // CreateOrder
	ScopeRead   = "orders:read"   // GetOrder, ListOrders, ListOrderEvents
	ScopePay    = "orders:pay"    // PayOrder
	ScopeFulfil = "orders:fulfil" // ShipOrder, DeliverOrder (service clients only)
	ScopeCancel = "orders:cancel" // CancelOrder
	// ScopeStaff lifts owner scoping: every order, not only the caller's
	// own. Each method still needs its own scope. Service clients only.
	ScopeStaff = "orders:staff"
)

// Kind says who a principal is.
type Kind int

const (
	// Customer: a shopper; the token's sub is the customer id. A customer
	// only ever sees and acts on its own orders.
	Customer Kind = iota + 1
	// Service: a backend holding a client-credentials token (RFC 9068: its
	// sub equals its client_id). It owns the orders it created, and every
	// order when it holds ScopeStaff.
	Service
)

func (k Kind) String() string {
	switch k {
	case Customer:
		return "customer"
	case Service:
		return "service"
	}
	return "unknown"
}

// Principal is an authenticated caller.
type Principal struct {
	Kind    Kind
	Subject string // the token's sub: the customer id, or the client id
	Scopes  []string
	// Dev marks the principal of the insecure local-development mode.
	Dev bool
}

// ID names the principal for idempotency and ownership: unique across
// kinds, so a customer and a client with the same sub never collide.
func (p Principal) ID() string { return p.Kind.String() + ":" + p.Subject }

// Has reports whether the principal holds scope. Customers never hold the
// service-only scopes, whatever their token says.
func (p Principal) Has(scope string) bool {
	if p.Kind == Customer && (scope == ScopeFulfil || scope == ScopeStaff) {
		return false
	}
	return slices.Contains(p.Scopes, scope)
}

// AllOrders reports whether owner scoping is lifted.
func (p Principal) AllOrders() bool { return p.Has(ScopeStaff) }

// ParseScopes splits a space-separated scope claim.
func ParseScopes(s string) []string { return strings.Fields(s) }

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal the interceptors authenticated.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// Actor is what the order domain knows of the principal: its id, the
// customer it is confined to, and whether it may touch every order.
func (p Principal) Actor() order.Actor {
	a := order.Actor{ID: p.ID(), AllOrders: p.AllOrders()}
	if p.Kind == Customer {
		a.CustomerID = p.Subject
	}
	return a
}

// ActorFromContext is the order actor of the authenticated caller. Its
// absence is a wiring bug, reported as UNAUTHENTICATED rather than served.
func ActorFromContext(ctx context.Context) (order.Actor, error) {
	p, ok := FromContext(ctx)
	if !ok {
		return order.Actor{}, status.Error(codes.Unauthenticated, "no authenticated caller")
	}
	return p.Actor(), nil
}
