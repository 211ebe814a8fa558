package auth_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/devissuer"
)

const (
	payMethod    = "/oms.v1.OrderIngestService/PayOrder"
	shipMethod   = "/oms.v1.OrderIngestService/ShipOrder"
	healthMethod = "/grpc.health.v1.Health/Check"
	reflMethod   = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
)

// call runs a unary interceptor with the given authorization values and
// returns the principal the handler saw.
func call(t *testing.T, i grpc.UnaryServerInterceptor, method string, server any, authz ...string) (auth.Principal, bool, error) {
	t.Helper()
	ctx := t.Context()
	if len(authz) > 0 {
		md := metadata.MD{}
		for _, a := range authz {
			md.Append("authorization", a)
		}
		ctx = metadata.NewIncomingContext(ctx, md)
	}
	var (
		p      auth.Principal
		hasP   bool
		called bool
	)
	_, err := i(ctx, "req", &grpc.UnaryServerInfo{FullMethod: method, Server: server}, func(ctx context.Context, req any) (any, error) {
		called = true
		p, hasP = auth.FromContext(ctx)
		return "resp", nil
	})
	if err == nil && !called {
		t.Fatal("interceptor returned no error but did not call the handler")
	}
	if err != nil && called {
		t.Fatal("interceptor called the handler and failed")
	}
	return p, hasP, err
}

// overrider is a service that tries to skip verification through
// go-grpc-middleware's AuthFuncOverride.
type overrider struct{}

func (overrider) AuthFuncOverride(ctx context.Context, _ string) (context.Context, error) {
	return auth.WithPrincipal(ctx, auth.Principal{Kind: auth.Service, Subject: "sneaky", Scopes: auth.AllScopes()}), nil
}

func TestUnaryInterceptor(t *testing.T) {
	p := newIDP(t)
	v := newVerifier(t, p.config())
	i := v.UnaryInterceptor()
	good := p.mint(t, devissuer.TokenSpec{Subject: "customer-a", Scopes: []string{auth.ScopePay}})
	expired := p.mint(t, devissuer.TokenSpec{Subject: "customer-a", IssuedAt: time.Now().Add(-2 * time.Hour), TTL: time.Hour})

	tests := []struct {
		name    string
		method  string
		server  any
		authz   []string
		code    codes.Code
		msg     string // substring of the status message
		subject string // of the principal the handler saw; "" for none
	}{
		{"valid token", payMethod, nil, []string{"Bearer " + good}, codes.OK, "", "customer-a"},
		{"scheme in lower case", payMethod, nil, []string{"bearer " + good}, codes.OK, "", "customer-a"},
		{"health without a token", healthMethod, nil, nil, codes.OK, "", ""},
		{"health with a bad token", healthMethod, nil, []string{"Bearer junk"}, codes.OK, "", ""},
		{"no token", payMethod, nil, nil, codes.Unauthenticated, "missing bearer token", ""},
		{"reflection without a token", reflMethod, nil, nil, codes.Unauthenticated, "missing bearer token", ""},
		{"reflection with a token", reflMethod, nil, []string{"Bearer " + good}, codes.OK, "", "customer-a"},
		{"basic auth", payMethod, nil, []string{"Basic dXNlcjpwYXNz"}, codes.Unauthenticated, "Bearer <token>", ""},
		{"bearer without a token", payMethod, nil, []string{"Bearer "}, codes.Unauthenticated, "Bearer <token>", ""},
		{"no scheme", payMethod, nil, []string{good}, codes.Unauthenticated, "Bearer <token>", ""},
		{"two headers", payMethod, nil, []string{"Bearer " + good, "Bearer " + good}, codes.Unauthenticated, "one Authorization header", ""},
		{"expired", payMethod, nil, []string{"Bearer " + expired}, codes.Unauthenticated, "token expired", ""},
		{"garbage", payMethod, nil, []string{"Bearer junk"}, codes.Unauthenticated, "token is malformed", ""},
		{"service with AuthFuncOverride", payMethod, overrider{}, nil, codes.Unauthenticated, "missing bearer token", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, has, err := call(t, i, tc.method, tc.server, tc.authz...)
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("status %v %q, want %v containing %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
			if has != (tc.subject != "") || got.Subject != tc.subject {
				t.Errorf("handler saw principal %+v (present %v), want subject %q", got, has, tc.subject)
			}
		})
	}
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s fakeStream) Context() context.Context { return s.ctx }

func TestStreamInterceptor(t *testing.T) {
	p := newIDP(t)
	v := newVerifier(t, p.config())
	i := v.StreamInterceptor()
	good := p.mint(t, devissuer.TokenSpec{Subject: "storefront", ClientID: "storefront"})
	srv := &struct{ name string }{"the service"}
	run := func(method string, md metadata.MD) (auth.Principal, bool, error) {
		ctx := metadata.NewIncomingContext(t.Context(), md)
		var p auth.Principal
		var has bool
		err := i(srv, fakeStream{ctx: ctx}, &grpc.StreamServerInfo{FullMethod: method}, func(gotSrv any, ss grpc.ServerStream) error {
			if gotSrv != srv {
				t.Errorf("handler got service %v, want the real one", gotSrv)
			}
			p, has = auth.FromContext(ss.Context())
			return nil
		})
		return p, has, err
	}
	if p, has, err := run(payMethod, metadata.Pairs("authorization", "Bearer "+good)); err != nil || !has || p.Kind != auth.Service {
		t.Errorf("valid token: %+v %v %v", p, has, err)
	}
	if _, _, err := run(payMethod, metadata.MD{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no token: %v", err)
	}
	if _, has, err := run(healthMethod, metadata.MD{}); err != nil || has {
		t.Errorf("health: %v %v", has, err)
	}
}

func TestDevModeInterceptor(t *testing.T) {
	v, err := auth.NewVerifier(t.Context(), auth.Config{InsecureDevMode: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	i := v.UnaryInterceptor()
	p, has, err := call(t, i, shipMethod, nil)
	if err != nil || !has || !p.Dev || !p.Has(auth.ScopeStaff) {
		t.Errorf("no token in dev mode: %+v %v %v", p, has, err)
	}
	_, _, err = call(t, i, shipMethod, nil, "Bearer a.b.c")
	if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "without token verification") {
		t.Errorf("token in dev mode: %v", err)
	}
}

func TestRequireScopes(t *testing.T) {
	scopes := map[string]string{
		payMethod:                          auth.ScopePay,
		shipMethod:                         auth.ScopeFulfil,
		"/oms.v1.OrderQueryService/WhoAmI": "",
	}
	i, si := auth.RequireScopes(scopes), auth.RequireScopesStream(scopes)
	scopes[payMethod] = "" // the interceptors keep their own copies
	customer := auth.Principal{Kind: auth.Customer, Subject: "c", Scopes: []string{auth.ScopePay, auth.ScopeFulfil}}
	reader := auth.Principal{Kind: auth.Customer, Subject: "c", Scopes: []string{auth.ScopeRead}}
	service := auth.Principal{Kind: auth.Service, Subject: "s", Scopes: []string{auth.ScopeFulfil}}
	tests := []struct {
		name   string
		method string
		p      *auth.Principal
		code   codes.Code
		msg    string
	}{
		{"has the scope", payMethod, &customer, codes.OK, ""},
		{"lacks the scope", payMethod, &reader, codes.PermissionDenied, "this token lacks the orders:pay scope"},
		{"service scope on a customer", shipMethod, &customer, codes.PermissionDenied, "orders:fulfil scope is for service clients only"},
		{"service scope on a service", shipMethod, &service, codes.OK, ""},
		{"method not in the map", "/oms.v1.OrderIngestService/DeleteEverything", &service, codes.PermissionDenied, "not open"},
		{"empty scope: any principal", "/oms.v1.OrderQueryService/WhoAmI", &reader, codes.OK, ""},
		{"no principal", payMethod, nil, codes.Unauthenticated, ""},
		{"health", healthMethod, nil, codes.OK, ""},
		{"reflection", reflMethod, &reader, codes.OK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			if tc.p != nil {
				ctx = auth.WithPrincipal(ctx, *tc.p)
			}
			_, err := i(ctx, nil, &grpc.UnaryServerInfo{FullMethod: tc.method}, func(context.Context, any) (any, error) { return nil, nil })
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Errorf("status %v %q, want %v containing %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
			serr := si(nil, fakeStream{ctx: ctx}, &grpc.StreamServerInfo{FullMethod: tc.method},
				func(any, grpc.ServerStream) error { return nil })
			if status.Code(serr) != tc.code {
				t.Errorf("stream: %v, want %v", serr, tc.code)
			}
		})
	}
}
