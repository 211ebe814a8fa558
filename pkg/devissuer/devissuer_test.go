package devissuer_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/devissuer"
)

func TestJWKSHoldsPublicKeysOnly(t *testing.T) {
	t.Parallel()
	iss, err := devissuer.New()
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(iss.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 2 {
		t.Fatalf("%d keys, want 2", len(set.Keys))
	}
	for _, k := range set.Keys {
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
			if _, ok := k[private]; ok {
				t.Errorf("key %v publishes private member %q", k["kid"], private)
			}
		}
		alg, _ := k["alg"].(string)
		kid, _ := k["kid"].(string)
		if !strings.HasPrefix(kid, "dev-"+strings.ToLower(alg)+"-") || k["use"] != "sig" {
			t.Errorf("key kid=%q alg=%q use=%v", kid, alg, k["use"])
		}
	}
}

func TestServe(t *testing.T) {
	t.Parallel()
	iss, err := devissuer.New()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := iss.Serve("0.0.0.0:0"); err == nil {
		t.Fatal("Serve listened on every interface")
	}
	url, stop, err := iss.Serve("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if url != iss.URL || !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("URL %q, issuer URL %q", url, iss.URL)
	}
	get := func(path string) []byte {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("GET %s: %s %s", path, resp.Status, resp.Header.Get("Content-Type"))
		}
		return b
	}
	if got := get(devissuer.JWKSPath); string(got) != string(iss.JWKS()) {
		t.Errorf("served JWKS differs")
	}
	var disc map[string]any
	json.Unmarshal(get(devissuer.DiscoveryPath), &disc)
	if disc["issuer"] != url || disc["jwks_uri"] != iss.JWKSURL() {
		t.Errorf("discovery = %v", disc)
	}
}

// The standard tokens verify through pkg/auth, against the JWKS served
// on a real socket, as the principals they are meant to be.
func TestStandardTokensVerify(t *testing.T) {
	t.Parallel()
	iss, err := devissuer.New()
	if err != nil {
		t.Fatal(err)
	}
	_, stop, err := iss.Serve("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	v, err := auth.NewVerifier(t.Context(), auth.Config{Issuer: iss.URL, Audience: "oms", JWKSURL: iss.JWKSURL()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	toks, err := iss.MintStandard("oms")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		kind    auth.Kind
		subject string
		staff   bool
	}{
		devissuer.EnvCustomerA: {auth.Customer, "customer-a", false},
		devissuer.EnvCustomerB: {auth.Customer, "customer-b", false},
		devissuer.EnvService:   {auth.Service, "storefront", false},
		devissuer.EnvStaff:     {auth.Service, "staff-console", true},
	}
	if len(toks) != len(want) {
		t.Fatalf("%d standard tokens, want %d", len(toks), len(want))
	}
	for _, tok := range toks {
		p, err := v.Verify(t.Context(), tok.Token)
		if err != nil {
			t.Fatalf("%s: %v", tok.Env, err)
		}
		w := want[tok.Env]
		if p.Kind != w.kind || p.Subject != w.subject || p.AllOrders() != w.staff || p.Has(auth.ScopeFulfil) != w.staff {
			t.Errorf("%s verifies as %+v, want %+v", tok.Env, p, w)
		}
		for _, s := range []string{auth.ScopeCreate, auth.ScopeRead, auth.ScopePay, auth.ScopeCancel} {
			if !p.Has(s) {
				t.Errorf("%s lacks %s", tok.Env, s)
			}
		}
	}
}

func TestTokensFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".oms", "tokens.env")
	toks := []devissuer.NamedToken{{Env: devissuer.EnvService, Token: "aaa.bbb.ccc"}, {Env: devissuer.EnvStaff, Token: "ddd.eee.fff"}}
	if err := devissuer.WriteTokens(path, toks); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("tokens file mode %v, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(filepath.Dir(path)); di.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700", di.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if !slices.Contains(strings.Split(string(b), "\n"), "OMS_TOKEN_SERVICE=aaa.bbb.ccc") {
		t.Errorf("file lacks a NAME=token line:\n%s", b)
	}
	got, err := devissuer.ReadTokens(path)
	if err != nil || got[devissuer.EnvService] != "aaa.bbb.ccc" || got[devissuer.EnvStaff] != "ddd.eee.fff" || len(got) != 2 {
		t.Errorf("ReadTokens = %v, %v", got, err)
	}
}

func TestLocalToken(t *testing.T) {
	// Not parallel: it sets the environment and the working directory.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "go.work"), []byte("go 1.26\n"), 0o600)
	sub := filepath.Join(dir, "services", "query")
	os.MkdirAll(sub, 0o700)
	t.Chdir(sub)
	if got := devissuer.StateDir(); got != filepath.Join(dir, ".oms") {
		t.Fatalf("StateDir = %q, want the repository root's .oms", got)
	}
	t.Setenv(devissuer.EnvOverride, "")
	t.Setenv(devissuer.EnvService, "")
	if got := devissuer.LocalToken(devissuer.EnvService); got != "" {
		t.Errorf("no token anywhere: %q", got)
	}
	devissuer.WriteTokens(devissuer.TokensFile(), []devissuer.NamedToken{{Env: devissuer.EnvService, Token: "from-file"}})
	if got := devissuer.LocalToken(devissuer.EnvService); got != "from-file" {
		t.Errorf("from the file: %q", got)
	}
	t.Setenv(devissuer.EnvService, "from-env")
	if got := devissuer.LocalToken(devissuer.EnvService); got != "from-env" {
		t.Errorf("from the environment: %q", got)
	}
	t.Setenv(devissuer.EnvOverride, "override")
	if got := devissuer.LocalToken(devissuer.EnvService); got != "override" {
		t.Errorf("OMS_TOKEN: %q", got)
	}
}
