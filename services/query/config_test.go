package main

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/omsdev/oms/pkg/config"
	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/operation"
	"github.com/omsdev/oms/pkg/orderstore"
)

// secure is the least configuration query starts with.
var secure = map[string]string{
	"AUTH_ISSUER": "https://idp.example.org/", "AUTH_AUDIENCE": "oms", "AUTH_JWKS_URL": "https://idp.example.org/jwks.json",
	"OPERATION_SECRET": strings.Repeat("o", 32),
}

func with(extra map[string]string) *config.Env { return config.FromMaps(secure, extra) }

func TestLoadConfig(t *testing.T) {
	c, err := LoadConfig(with(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:8081" || c.GRPCAddr != "127.0.0.1:9091" || c.AdminAddr != "127.0.0.1:9181" || c.GRPCMaxSendBytes != 8<<20 {
		t.Errorf("defaults: %+v", c.Settings)
	}
	if string(c.OperationSecret) != secure["OPERATION_SECRET"] {
		t.Errorf("operation secret %q", c.OperationSecret)
	}
	for _, tc := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"HTTP_ADDR": "0.0.0.0:8081"}, "plaintext beyond loopback"},
		{map[string]string{"DATABASE_URL": "host=db password=hunter2"}, "DATABASE_URL: must be a postgres:// URL"},
		{map[string]string{"LOG_LEVEL": "trace"}, "LOG_LEVEL"},
		{map[string]string{"AUTH_JWKS_URL": ""}, "AUTH_JWKS_URL"},
		{map[string]string{"QUERY_MAX_PAGE_BYTES": "8388608"}, "QUERY_MAX_PAGE_BYTES"},
		{map[string]string{"OPERATION_SECRET": ""}, "OPERATION_SECRET is required"},
		{map[string]string{"OPERATION_SECRET": "short-secret-hunter2"}, "OPERATION_SECRET: must be at least 32 characters"},
		// An HTTP wait would be cut off by the server's own timeouts.
		{map[string]string{"QUERY_MAX_WAIT": "30s"}, `QUERY_MAX_WAIT="30s": must be below HTTP_READ_TIMEOUT and HTTP_WRITE_TIMEOUT (30s)`},
		{map[string]string{"HTTP_WRITE_TIMEOUT": "5s"}, "QUERY_MAX_WAIT=\"\": must be below HTTP_READ_TIMEOUT and HTTP_WRITE_TIMEOUT (5s)"},
	} {
		_, err := LoadConfig(with(tc.vars))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%v: %v, want an error with %q", tc.vars, err, tc.want)
		}
	}
	if _, err := LoadConfig(with(map[string]string{
		"HTTP_ADDR": "0.0.0.0:8081", "GRPC_ADDR": "0.0.0.0:9091", "ALLOW_PLAINTEXT": "true",
	})); err != nil {
		t.Errorf("ALLOW_PLAINTEXT: %v", err)
	}
	// Insecure dev mode runs without one, and agrees with ingest's.
	c, err = LoadConfig(config.FromMap(map[string]string{"AUTH_INSECURE_DEV_MODE": "true"}))
	if err != nil || string(c.OperationSecret) != operation.InsecureDevSecret {
		t.Errorf("dev mode: %q, %v", c.OperationSecret, err)
	}
}

// Query's pool plans its prepared statements once (genericPlans), unless
// the operator's DATABASE_URL says otherwise.
func TestQueryPoolUsesGenericPlans(t *testing.T) {
	auto, err := url.Parse(dbtest.URL())
	if err != nil {
		t.Fatal(err)
	}
	q := auto.Query()
	q.Set("plan_cache_mode", "auto")
	auto.RawQuery = q.Encode()
	for _, tc := range []struct{ dsn, want string }{
		{dbtest.URL(), "force_generic_plan"},
		{auto.String(), "auto"},
	} {
		db := orderstore.OpenPool(genericPlans(tc.dsn), 1)
		var got string
		err := db.QueryRowContext(context.Background(), "SHOW plan_cache_mode").Scan(&got)
		db.Close()
		if err != nil || got != tc.want {
			t.Errorf("%s: plan_cache_mode %q, %v; want %q", tc.dsn, got, err, tc.want)
		}
	}
}
