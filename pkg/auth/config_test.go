package auth_test

import (
	"strings"
	"testing"
	"time"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/config"
)

func TestLoadConfig(t *testing.T) {
	full := map[string]string{"AUTH_ISSUER": "https://idp.example", "AUTH_AUDIENCE": "oms", "AUTH_JWKS_URL": "https://idp.example/jwks.json"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range full {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	tests := []struct {
		name    string
		vars    map[string]string
		wantErr []string // substrings of the one error line; none means valid
		check   func(t *testing.T, c auth.Config)
	}{
		{"JWKS URL", full, nil, func(t *testing.T, c auth.Config) {
			if c.Issuer != "https://idp.example" || c.Audience != "oms" || c.JWKSURL == "" || c.ClockSkew != 30*time.Second || c.InsecureDevMode {
				t.Errorf("config = %+v", c)
			}
		}},
		{"JWKS file", with("AUTH_JWKS_URL", "", "AUTH_JWKS_FILE", "/etc/oms/jwks.json"), nil, func(t *testing.T, c auth.Config) {
			if c.JWKSFile != "/etc/oms/jwks.json" {
				t.Errorf("config = %+v", c)
			}
		}},
		{"skew", with("AUTH_CLOCK_SKEW", "2m"), nil, func(t *testing.T, c auth.Config) {
			if c.ClockSkew != 2*time.Minute {
				t.Errorf("skew = %s", c.ClockSkew)
			}
		}},
		{"dev mode alone", map[string]string{"AUTH_INSECURE_DEV_MODE": "true"}, nil, func(t *testing.T, c auth.Config) {
			if !c.InsecureDevMode {
				t.Error("dev mode off")
			}
		}},
		{"nothing", map[string]string{}, []string{"AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_JWKS_URL or AUTH_JWKS_FILE", "AUTH_INSECURE_DEV_MODE"}, nil},
		{"no audience", with("AUTH_AUDIENCE", ""), []string{`AUTH_AUDIENCE="": token verification needs`, "missing: AUTH_AUDIENCE)"}, nil},
		{"no keys", with("AUTH_JWKS_URL", ""), []string{"missing: AUTH_JWKS_URL or AUTH_JWKS_FILE"}, nil},
		{"dev mode off explicitly", map[string]string{"AUTH_INSECURE_DEV_MODE": "false"}, []string{"AUTH_ISSUER"}, nil},
		{"dev mode with an issuer", with("AUTH_INSECURE_DEV_MODE", "true"), []string{"AUTH_INSECURE_DEV_MODE", "cannot be combined"}, nil},
		{"both key sources", with("AUTH_JWKS_FILE", "/jwks.json"), []string{"AUTH_JWKS_FILE", "only one"}, nil},
		{"JWKS URL not http", with("AUTH_JWKS_URL", "file:///jwks.json"), []string{"AUTH_JWKS_URL"}, nil},
		{"JWKS over plain http across a network", with("AUTH_JWKS_URL", "http://idp.example/jwks.json"), []string{"AUTH_JWKS_URL", "https unless it is on loopback"}, nil},
		{"JWKS over plain http on loopback", with("AUTH_JWKS_URL", "http://127.0.0.1:8099/jwks.json"), nil, func(t *testing.T, c auth.Config) {}},
		{"service client allow-list", with("AUTH_SERVICE_CLIENT_IDS", "storefront, warehouse"), nil, func(t *testing.T, c auth.Config) {
			if strings.Join(c.ServiceClients, "|") != "storefront|warehouse" {
				t.Errorf("service clients %q", c.ServiceClients)
			}
		}},
		{"skew too large", with("AUTH_CLOCK_SKEW", "10m"), []string{"AUTH_CLOCK_SKEW"}, nil},
		{"dev mode not a bool", map[string]string{"AUTH_INSECURE_DEV_MODE": "yes please"}, []string{"AUTH_INSECURE_DEV_MODE"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := config.FromMap(tc.vars)
			c := auth.LoadConfig(env)
			err := env.Err()
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if err := c.Validate(); err != nil {
					t.Fatalf("Validate: %v", err)
				}
				tc.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("no error for %v", tc.vars)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func TestLoadRateLimitConfig(t *testing.T) {
	env := config.FromMap(nil)
	if got := auth.LoadRateLimitConfig(env); got != (auth.RateLimitConfig{CommandsPerSecond: 20, CommandBurst: 40, ReadsPerSecond: 100, ReadBurst: 200}) || env.Err() != nil {
		t.Errorf("defaults = %+v, %v", got, env.Err())
	}
	env = config.FromMap(map[string]string{"RATE_LIMIT_COMMANDS_PER_SECOND": "0", "RATE_LIMIT_READ_BURST": "5", "RATE_LIMIT_READS_PER_SECOND": "2.5"})
	if got := auth.LoadRateLimitConfig(env); got != (auth.RateLimitConfig{CommandsPerSecond: 0, CommandBurst: 40, ReadsPerSecond: 2.5, ReadBurst: 5}) || env.Err() != nil {
		t.Errorf("set = %+v, %v", got, env.Err())
	}
	env = config.FromMap(map[string]string{"RATE_LIMIT_COMMAND_BURST": "0", "RATE_LIMIT_READS_PER_SECOND": "-1"})
	auth.LoadRateLimitConfig(env)
	if err := env.Err(); err == nil || !strings.Contains(err.Error(), "RATE_LIMIT_COMMAND_BURST") || !strings.Contains(err.Error(), "RATE_LIMIT_READS_PER_SECOND") {
		t.Errorf("bad values: %v", err)
	}
}
