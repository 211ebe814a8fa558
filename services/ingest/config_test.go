package main

import (
	"strings"
	"testing"

	"github.com/omsdev/oms/pkg/config"
	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderpb"
)

// secure is the least configuration ingest starts with: an issuer to
// verify tokens against, the order id secret and the operation secret.
var secure = map[string]string{
	"AUTH_ISSUER": "https://idp.example.org/", "AUTH_AUDIENCE": "oms", "AUTH_JWKS_URL": "https://idp.example.org/jwks.json",
	"ORDER_ID_SECRET": strings.Repeat("s", 32), "OPERATION_SECRET": strings.Repeat("o", 32),
}

func with(extra map[string]string) *config.Env { return config.FromMaps(secure, extra) }

func TestLoadConfig(t *testing.T) {
	c, err := LoadConfig(with(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:8080" || c.GRPCAddr != "127.0.0.1:9090" || c.AdminAddr != "127.0.0.1:9180" || !c.GRPCReflection {
		t.Errorf("defaults: %+v", c.Settings)
	}
	if c.CommandEncoding != orderpb.ContentTypeProtobuf {
		t.Errorf("command encoding %q, want protobuf", c.CommandEncoding)
	}
	if c, err := LoadConfig(with(map[string]string{"INGEST_COMMAND_ENCODING": "json"})); err != nil || c.CommandEncoding != orderpb.ContentTypeJSON {
		t.Errorf("INGEST_COMMAND_ENCODING=json: %q, %v", c.CommandEncoding, err)
	}
	if c.Guard.Limits.CommandsPerSecond != 20 || string(c.OrderIDSecret) != secure["ORDER_ID_SECRET"] {
		t.Errorf("guard %+v", c.Guard)
	}
	if string(c.OperationSecret) != secure["OPERATION_SECRET"] {
		t.Errorf("operation secret %q", c.OperationSecret)
	}
	for _, tc := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"GRPC_ADDR": ":9090"}, "plaintext beyond loopback"},
		{map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{map[string]string{"INGEST_COMMAND_ENCODING": "xml"}, "INGEST_COMMAND_ENCODING"},
		{map[string]string{"AUTH_ISSUER": "", "AUTH_AUDIENCE": "", "AUTH_JWKS_URL": ""}, "AUTH_ISSUER"},
		{map[string]string{"ORDER_ID_SECRET": ""}, "ORDER_ID_SECRET is required"},
		{map[string]string{"ORDER_ID_SECRET": "short-secret-hunter2"}, "ORDER_ID_SECRET: must be at least 32 characters"},
		{map[string]string{"OPERATION_SECRET": ""}, "OPERATION_SECRET is required"},
		{map[string]string{"OPERATION_SECRET": "short-secret-hunter2"}, "OPERATION_SECRET: must be at least 32 characters"},
		{map[string]string{"AUTH_INSECURE_DEV_MODE": "true"}, "AUTH_INSECURE_DEV_MODE"},
	} {
		_, err := LoadConfig(with(tc.vars))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%v: %v, want an error with %q and no secret", tc.vars, err, tc.want)
		}
	}
	// Only the explicit development switch runs without an issuer.
	c, err = LoadConfig(config.FromMap(map[string]string{"AUTH_INSECURE_DEV_MODE": "true"}))
	if err != nil || !c.Guard.Auth.InsecureDevMode || len(c.OrderIDSecret) < 32 || len(c.OperationSecret) < 32 {
		t.Errorf("dev mode: %+v, %v", c.Guard, err)
	}
}

// Order ids are stable for one caller's retries, differ between callers
// using the same key, and depend on the secret.
func TestOrderIDs(t *testing.T) {
	a, b := actorFor("customer:a"), actorFor("customer:b")
	s1, s2 := []byte(strings.Repeat("1", 32)), []byte(strings.Repeat("2", 32))
	if orderID(s1, a, "k") != orderID(s1, a, "k") {
		t.Error("a retry names another order")
	}
	if orderID(s1, a, "k") == orderID(s1, b, "k") {
		t.Error("two callers' keys name one order")
	}
	if orderID(s1, a, "k") == orderID(s2, a, "k") {
		t.Error("the id does not depend on the secret")
	}
}

func actorFor(id string) order.Actor { return order.Actor{ID: id} }
