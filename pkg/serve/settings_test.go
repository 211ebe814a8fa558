package serve

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omsdev/oms/pkg/config"
)

var testDefaults = Defaults{HTTPAddr: "127.0.0.1:8080", GRPCAddr: "127.0.0.1:9090", AdminAddr: "127.0.0.1:9180"}

func TestLoadSettingsDefaults(t *testing.T) {
	t.Parallel()
	env := config.FromMap(nil)
	s := LoadSettings(env, testDefaults)
	if err := env.Err(); err != nil {
		t.Fatal(err)
	}
	want := DefaultSettings()
	want.HTTPAddr, want.GRPCAddr, want.AdminAddr = testDefaults.HTTPAddr, testDefaults.GRPCAddr, testDefaults.AdminAddr
	if s != want {
		t.Errorf("LoadSettings = %+v\nwant %+v", s, want)
	}
	if s.HTTP.ReadTimeout != 30*time.Second || s.HTTP.IdleTimeout != time.Minute || s.HTTP.MaxConns != 1024 ||
		s.GRPCMaxSendBytes != 8<<20 || s.GRPCMaxRecvBytes != 4<<20 || !s.GRPCReflection || s.GRPCClientAuth != ClientAuthNone {
		t.Errorf("defaults changed: %+v", s)
	}
}

// Plaintext is for loopback; beyond it, TLS or an explicit
// ALLOW_PLAINTEXT. Related variables are checked together, each problem in
// one line.
func TestLoadSettingsRules(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	cert, key := pki.writePair(1)
	for _, tc := range []struct {
		name string
		vars map[string]string
		want string // in the error; empty: accepted
	}{
		{"loopback", map[string]string{"HTTP_ADDR": "localhost:8080", "GRPC_ADDR": "[::1]:9090"}, ""},
		{"all interfaces", map[string]string{"HTTP_ADDR": "0.0.0.0:8080"}, `HTTP_ADDR="0.0.0.0:8080": plaintext beyond loopback`},
		{"empty host", map[string]string{"GRPC_ADDR": ":9090"}, `GRPC_ADDR=":9090": plaintext beyond loopback`},
		{"both", map[string]string{"HTTP_ADDR": "10.0.0.1:8080", "GRPC_ADDR": "0.0.0.0:9090"}, `HTTP_ADDR="10.0.0.1:8080", GRPC_ADDR="0.0.0.0:9090"`},
		{"mesh", map[string]string{"HTTP_ADDR": "0.0.0.0:8080", "GRPC_ADDR": "0.0.0.0:9090", "ALLOW_PLAINTEXT": "true"}, ""},
		{"TLS", map[string]string{"HTTP_ADDR": "0.0.0.0:8080", "TLS_CERT_FILE": cert, "TLS_KEY_FILE": key}, ""},
		{"mTLS", map[string]string{"TLS_CERT_FILE": cert, "TLS_KEY_FILE": key, "TLS_CLIENT_CA_FILE": pki.CAFile, "GRPC_CLIENT_AUTH": "require"}, ""},
		{"cert only", map[string]string{"TLS_CERT_FILE": cert}, "set both or neither"},
		{"bad pair", map[string]string{"TLS_CERT_FILE": cert, "TLS_KEY_FILE": cert}, "TLS_KEY_FILE"},
		{"missing file", map[string]string{"TLS_CERT_FILE": "/nonexistent/cert.pem", "TLS_KEY_FILE": key}, "no such file"},
		{"client auth without CA", map[string]string{"TLS_CERT_FILE": cert, "TLS_KEY_FILE": key, "GRPC_CLIENT_AUTH": "request"}, "needs TLS_CLIENT_CA_FILE"},
		{"client auth without TLS", map[string]string{"TLS_CLIENT_CA_FILE": pki.CAFile, "GRPC_CLIENT_AUTH": "require"}, "need TLS_CERT_FILE"},
		{"bad CA", map[string]string{"TLS_CERT_FILE": cert, "TLS_KEY_FILE": key, "TLS_CLIENT_CA_FILE": key, "GRPC_CLIENT_AUTH": "require"}, "no PEM certificate"},
		{"bad client auth", map[string]string{"GRPC_CLIENT_AUTH": "optional"}, `GRPC_CLIENT_AUTH="optional": must be one of none, request, require`},
		{"bad timeout", map[string]string{"HTTP_READ_TIMEOUT": "forever"}, "HTTP_READ_TIMEOUT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := config.FromMap(tc.vars)
			LoadSettings(env, testDefaults)
			err := env.Err()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("rejected: %v", err)
			case tc.want != "" && err == nil:
				t.Errorf("accepted, want an error with %q", tc.want)
			case err != nil && (!strings.Contains(err.Error(), tc.want) || strings.Count(err.Error(), "\n") > 0):
				t.Errorf("error %q: want one line with %q", err, tc.want)
			}
		})
	}
}

// Listen applies the plaintext rule too, to Settings built by hand.
func TestListenRefusesPlaintextBeyondLoopback(t *testing.T) {
	t.Parallel()
	a := API{Name: "test", HTTPAddr: "0.0.0.0:0", GRPCAddr: "127.0.0.1:0"}
	if _, err := Listen(a); err == nil || !strings.Contains(err.Error(), "plaintext beyond loopback") {
		t.Errorf("Listen on 0.0.0.0 without TLS: %v", err)
	}
	a.Settings.AllowPlaintext = true
	srv, err := Listen(a)
	if err != nil {
		t.Fatalf("with AllowPlaintext: %v", err)
	}
	srv.grpcLis.Close()
	srv.httpLis.Close()
}

func TestHTTPErrorHeaders(t *testing.T) {
	t.Parallel()
	retry := func(d time.Duration) error {
		st, _ := status.New(codes.ResourceExhausted, "slow down").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		return st.Err()
	}
	for _, tc := range []struct {
		name, auth   string
		err          error
		code         int
		header, want string
		absentHeader string
	}{
		{"no credentials", "", status.Error(codes.Unauthenticated, "missing bearer token"), 401, "WWW-Authenticate", `Bearer realm="oms"`, ""},
		{"basic credentials", "Basic dTpw", status.Error(codes.Unauthenticated, "missing bearer token"), 401, "WWW-Authenticate", `Bearer realm="oms"`, ""},
		{"bad token", "Bearer x", status.Error(codes.Unauthenticated, "token \"expired\"\n\\ é"), 401, "WWW-Authenticate",
			`Bearer realm="oms", error="invalid_token", error_description="token expired "`, ""},
		{"no message", "Bearer x", status.Error(codes.Unauthenticated, ""), 401, "WWW-Authenticate", `Bearer realm="oms", error="invalid_token"`, ""},
		{"retry 1.2s", "", retry(1200 * time.Millisecond), 429, "Retry-After", "2", ""},
		{"retry 3s", "", retry(3 * time.Second), 429, "Retry-After", "3", ""},
		{"no RetryInfo", "", status.Error(codes.ResourceExhausted, "full"), 429, "", "", "Retry-After"},
		{"not found", "", status.Error(codes.NotFound, "no"), 404, "", "", "WWW-Authenticate"},
	} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/v1/orders/1", nil)
		if tc.auth != "" {
			r.Header.Set("Authorization", tc.auth)
		}
		httpError(context.Background(), runtime.NewServeMux(), &runtime.JSONPb{}, w, r, tc.err)
		if w.Code != tc.code {
			t.Errorf("%s: status %d, want %d", tc.name, w.Code, tc.code)
		}
		if tc.header != "" && w.Header().Get(tc.header) != tc.want {
			t.Errorf("%s: %s = %q, want %q", tc.name, tc.header, w.Header().Get(tc.header), tc.want)
		}
		if tc.absentHeader != "" && w.Header().Get(tc.absentHeader) != "" {
			t.Errorf("%s: %s = %q, want none", tc.name, tc.absentHeader, w.Header().Get(tc.absentHeader))
		}
	}
}

func TestNewHTTPServer(t *testing.T) {
	t.Parallel()
	h := http.NotFoundHandler()
	s := NewHTTPServer(h, HTTPSettings{ReadTimeout: time.Second})
	if s.ReadTimeout != time.Second || s.ReadHeaderTimeout != 5*time.Second || s.WriteTimeout != 30*time.Second ||
		s.IdleTimeout != time.Minute || s.MaxHeaderBytes != 64<<10 {
		t.Errorf("NewHTTPServer: %+v", s)
	}
}
