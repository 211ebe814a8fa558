package orderstore_test

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/orderapp"
	"github.com/omsdev/oms/pkg/orderstore"
)

// A read on a pooled connection the server has since closed (as after a
// PostgreSQL restart) is retried on a fresh one instead of failing.
func TestReadsSurviveABrokenPooledConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	db.SetMaxOpenConns(1) // one connection, so we know which one to break
	s := newApp(db)
	id := uuid.NewString()
	mustApply(t, s, createCmd(id), orderapp.Applied)

	admin := orderstore.Open(dbtest.URL())
	defer admin.Close()
	for _, read := range []struct {
		name string
		f    func() error
	}{
		{"Get", func() error { _, err := s.Get(ctx, id, nil, staff); return err }},
		{"List", func() error { _, err := s.List(ctx, orderstore.ListQuery{Actor: staff, Limit: 5}); return err }},
		{"Events", func() error { _, err := s.Events(ctx, id, 0, 10, staff); return err }},
	} {
		var pid int
		if err := db.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		var killed bool
		if err := admin.QueryRowContext(ctx, "SELECT pg_terminate_backend(?)", pid).Scan(&killed); err != nil || !killed {
			t.Fatalf("terminate backend %d: %v %v", pid, killed, err)
		}
		if err := read.f(); err != nil {
			t.Errorf("%s after the server closed the pooled connection: %v", read.name, err)
		}
	}
}
