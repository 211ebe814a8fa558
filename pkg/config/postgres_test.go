package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun/driver/pgdriver"
)

const secret = "s3cret"

// Every way DATABASE_URL can go wrong is reported in one line that does
// not carry the password.
func TestPostgresURLRejectsWithoutTheSecret(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, value, want string }{
		{"bad escape", "postgres://u:" + secret + "%zz@db:5432/x", "does not parse"},
		{"key=value", "host=db user=u password=" + secret + " dbname=x", "key=value form is not supported"},
		{"key=value quoted", "host=db password='" + secret + " x' dbname=x", "key=value form is not supported"},
		{"unescaped / after digits", "postgres://u:123/" + secret + "@db/x", "@"},
		{"unescaped /", "postgres://u:p/" + secret + "@db/x", "does not parse"},
		{"bogus sslmode", "postgres://u:" + secret + "@db/x?sslmode=bogus", "sslmode must be one of"},
		{"password parameter", "postgres://u@db/x?password=" + secret + "&sslmode=bogus", "sslmode must be one of"},
		{"other scheme", "mysql://u:" + secret + "@db/x", "postgres:// or postgresql://"},
		{"opaque", "postgres:u:" + secret + "@db", "@"},
		{"no host", "postgres://u:" + secret + "@/x", "must name a host"},
		{"empty user", "postgres://:" + secret + "@db/x", "user name is empty"},
		{"bad timeout", "postgres://u:" + secret + "@db/x?connect_timeout=soon", "connect_timeout"},
		{"missing root CA", "postgres://u:" + secret + "@db/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem", "sslrootcert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := FromMap(map[string]string{"DATABASE_URL": tc.value})
			got := e.PostgresURL("DATABASE_URL", "postgres://default@127.0.0.1/oms")
			err := e.Err()
			if err == nil {
				t.Fatalf("accepted %q as %q", tc.value, got)
			}
			msg := err.Error()
			if strings.Contains(msg, secret) || strings.Count(msg, "\n") > 0 || !strings.Contains(msg, "DATABASE_URL") || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q: want one line naming DATABASE_URL, saying %q, without the password", msg, tc.want)
			}
			if got != "postgres://default@127.0.0.1/oms" {
				t.Errorf("returned %q, want the default", got)
			}
		})
	}
}

// Every value PostgresURL accepts opens in pgdriver without a panic, and
// the values it rejects for pgdriver's sake do make pgdriver panic: the
// check is exactly pgdriver's.
func TestPostgresURLMatchesPgdriver(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, cert, key := writeCertFiles(t, dir)
	accepted := []string{
		"postgres://postgres@127.0.0.1:5432/oms?sslmode=disable",
		"postgresql://u:" + secret + "@db/x",
		"postgres://u@db/x?sslmode=verify-full&sslrootcert=" + ca,
		"postgres://u@db/x?sslmode=require&sslrootcert=" + ca + "&sslcert=" + cert + "&sslkey=" + key,
		"postgres://u@db/x?sslrootcert=" + ca,
		"postgres://u@db/x?sslmode=bogus&sslmode=require", // pgdriver reads the last
		"postgres://u@db/x?connect_timeout=5&read_timeout=2s&write_timeout=0&timeout=1m&dial_timeout=-1",
		"postgres:///x?host=/var/run/postgresql",
		"postgres://u@db/x?application_name=oms&search_path=oms",
		"postgres://u@db/x?sslmode=disable&sslrootcert=/nonexistent", // not read when TLS is off
	}
	for _, m := range sslModes {
		accepted = append(accepted, "postgres://u:"+secret+"@db:5432/x?sslmode="+m)
	}
	for _, v := range accepted {
		e := FromMap(map[string]string{"DATABASE_URL": v})
		if got := e.PostgresURL("DATABASE_URL", ""); got != v || e.Err() != nil {
			t.Errorf("%s: rejected: %v", v, e.Err())
		}
		if p := pgdriverPanic(v); p != nil {
			t.Errorf("%s: accepted, but pgdriver panics: %v", v, p)
		}
	}
	for _, v := range []string{
		"postgres://u@db/x?sslmode=bogus",
		"postgres://u@db/x?sslmode=require&sslmode=Require",
		"postgres://:pw@db/x",
		"postgres://u@db/x?read_timeout=soon",
		"postgres://u@db/x?sslmode=verify-ca&sslrootcert=/nonexistent",
		"postgres://u@db/x?sslmode=require&sslcert=" + cert + "&sslkey=" + ca,
	} {
		e := FromMap(map[string]string{"DATABASE_URL": v})
		e.PostgresURL("DATABASE_URL", "")
		if e.Err() == nil {
			t.Errorf("%s: accepted", v)
		}
		if pgdriverPanic(v) == nil {
			t.Errorf("%s: rejected, but pgdriver takes it", v)
		}
	}
}

func pgdriverPanic(dsn string) (p any) {
	defer func() { p = recover() }()
	pgdriver.NewConnector(pgdriver.WithDSN(dsn))
	return nil
}

func TestRedactNeverShowsThePassword(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"postgres://u:" + secret + "@db:5432/x", "postgres://u:xxxxx@db:5432/x"},
		{"postgres://u@db:5432/x?sslmode=disable", "postgres://u@db:5432/x?sslmode=disable"},
		{"postgres://u@db/x?password=" + secret, "postgres://u@db/x?password=xxxxx"},
		{"postgres://u@db/x?sslpassword=" + secret + "&sslmode=require", "postgres://u@db/x?sslmode=require&sslpassword=xxxxx"},
		{"postgres://u:" + secret + "%zz@db/x", HiddenURL},
		{"postgres://u:p@" + secret + "@db/x", "postgres://u:xxxxx@db/x"}, // the last @ ends the user info
		{"postgres://u:123/" + secret + "@db/x", HiddenURL},
		{"postgres:u:" + secret + "@db/x", HiddenURL},
		{"host=db password=" + secret + " user=u", "host=db password=xxxxx user=u"},
		{"host=db password = '" + secret + ` \' x' user=u`, "host=db password = xxxxx user=u"},
		{"host=db PASSWORD=" + secret + " sslpassword=" + secret, "host=db PASSWORD=xxxxx sslpassword=xxxxx"},
		{"http://localhost:4100", "http://localhost:4100"},
		{"", ""},
	} {
		if got := Redact(tc.in); got != tc.want || strings.Contains(got, secret) {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestOneOf(t *testing.T) {
	t.Parallel()
	e := FromMap(map[string]string{"LOG_LEVEL": "WARN", "BAD": "verbose"})
	if got := e.OneOf("LOG_LEVEL", "info", "debug", "info", "warn", "error"); got != "warn" {
		t.Errorf("OneOf = %q, want warn", got)
	}
	if got := e.OneOf("UNSET", "info", "debug", "info"); got != "info" || e.Err() != nil {
		t.Errorf("OneOf default = %q, %v", got, e.Err())
	}
	if got := e.OneOf("BAD", "info", "debug", "info", "warn", "error"); got != "info" {
		t.Errorf("OneOf of a bad value = %q, want the default", got)
	}
	if err := e.Err(); err == nil || !strings.Contains(err.Error(), `BAD="verbose": must be one of debug, info, warn, error`) {
		t.Errorf("Err = %v", err)
	}
}

// writeCertFiles writes a self-signed CA certificate and a key pair.
func writeCertFiles(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca = write("ca.pem", "CERTIFICATE", der)
	return ca, ca, write("key.pem", "PRIVATE KEY", kder)
}
