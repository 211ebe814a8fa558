// Package dbtest gives each test its own freshly migrated PostgreSQL schema
// on the real server, so tests run in parallel without sharing rows.
package dbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/driver/pgdriver"

	"github.com/omsdev/oms/pkg/orderstore"
)

// DefaultURL is the machine's PostgreSQL; OMS_TEST_DATABASE_URL overrides it.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// URL is the server tests run against.
func URL() string {
	if u := os.Getenv("OMS_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// New returns a handle whose search_path is a new schema with every
// migration applied. The schema is dropped when the test ends. A missing
// server fails the test: it is never skipped.
func New(t testing.TB) *bun.DB {
	t.Helper()
	db, _ := NewUnmigrated(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := orderstore.Migrate(ctx, db); err != nil {
		t.Fatalf("dbtest: migrate: %v", err)
	}
	return db
}

// NewUnmigrated is New without the migrations; it also returns the schema.
func NewUnmigrated(t testing.TB) (*bun.DB, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	b := make([]byte, 6)
	rand.Read(b)
	schema := "test_" + hex.EncodeToString(b)

	admin := orderstore.Open(URL())
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		t.Fatalf("dbtest: PostgreSQL at %s is required (start it with `pg_ctlcluster --skip-systemctl-redirect 15 main start`): %v", URL(), err)
	}
	db := orderstore.Open(URL(), pgdriver.WithConnParams(map[string]any{"search_path": schema}))
	t.Cleanup(func() {
		db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Logf("dbtest: drop schema %s: %v", schema, err)
		}
		admin.Close()
	})
	return db, schema
}

// NewDatabase is New in a database of its own rather than a schema: for a
// test whose result depends on which dead rows every session can no longer
// see, which PostgreSQL decides per database, so that other tests' open
// transactions cannot hold them back.
func NewDatabase(t testing.TB) *bun.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b := make([]byte, 6)
	rand.Read(b)
	name := "test_" + hex.EncodeToString(b)
	admin := orderstore.Open(URL())
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		t.Fatalf("dbtest: PostgreSQL at %s is required: %v", URL(), err)
	}
	u, err := url.Parse(URL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	db := orderstore.Open(u.String())
	t.Cleanup(func() {
		db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Logf("dbtest: drop database %s: %v", name, err)
		}
		admin.Close()
	})
	if _, err := orderstore.Migrate(ctx, db); err != nil {
		t.Fatalf("dbtest: migrate: %v", err)
	}
	return db
}
