package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/devissuer"
)

func TestLocalSecretIsStable(t *testing.T) {
	t.Parallel()
	state := filepath.Join(t.TempDir(), ".oms")
	first, err := localSecret(state, "order-id-secret")
	if err != nil {
		t.Fatal(err)
	}
	again, err := localSecret(state, "order-id-secret")
	if err != nil || again != first || len(first) != 64 {
		t.Fatalf("second run: %q %v, first %q", again, err, first)
	}
	if fi, _ := os.Stat(state); fi.Mode().Perm() != 0o700 {
		t.Errorf(".oms mode %v, want 0700", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(filepath.Join(state, "order-id-secret")); fi.Mode().Perm() != 0o600 {
		t.Errorf("secret mode %v, want 0600", fi.Mode().Perm())
	}
	os.WriteFile(filepath.Join(state, "order-id-secret"), []byte("short\n"), 0o600)
	if _, err := localSecret(state, "order-id-secret"); err == nil {
		t.Error("a damaged secret file was accepted")
	}
	other, err := localSecret(state, "operation-secret")
	if err != nil || other == first || len(other) != 64 {
		t.Errorf("another secret: %q %v, first %q", other, err, first)
	}
}

// The tokens omsstack writes are accepted by a verifier configured as the
// services are.
func TestStartIssuer(t *testing.T) {
	t.Setenv("AUTH_AUDIENCE", audience)
	t.Setenv("AUTH_ISSUER", "")
	tokens := filepath.Join(t.TempDir(), ".oms", "tokens.env")
	// Port 0 would not match the URL the services are told, so pick one.
	addr := "127.0.0.1:0"
	iss, _ := devissuer.New()
	url, stop, err := iss.Serve(addr)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	addr = url[len("http://"):]
	t.Setenv("AUTH_ISSUER", url)
	stopIssuer, toks, err := startIssuer(addr, url, tokens)
	if err != nil {
		t.Fatal(err)
	}
	defer stopIssuer()
	v, err := auth.NewVerifier(t.Context(), auth.Config{Issuer: url, Audience: audience, JWKSURL: url + devissuer.JWKSPath}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	file, err := devissuer.ReadTokens(tokens)
	if err != nil || len(file) != len(toks) {
		t.Fatalf("tokens file: %v %v", file, err)
	}
	for _, tok := range toks {
		if file[tok.Env] != tok.Token {
			t.Errorf("%s differs in the file", tok.Env)
		}
		if _, err := v.Verify(t.Context(), tok.Token); err != nil {
			t.Errorf("%s: %v", tok.Env, err)
		}
	}
}
