package outbox_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/uptrace/bun"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/outbox"
)

// A claim's cost does not grow with the rows relayed before it. Relayed
// rows are deleted and stay in the indexes until VACUUM, which may be far
// off (autovacuum is off on the CI machine, and behind on a busy one). The
// claim used to bitmap-scan every one of them, every time: 20,000 relayed
// rows cost each claim about 700 buffers and 2.3 ms, growing without end.
// Counted in buffers, not time, so a slow machine does not change it.
func TestClaimCostStaysFlatAsRelayedRowsPileUp(t *testing.T) {
	t.Parallel()
	db := dbtest.NewDatabase(t)
	ctx := context.Background()

	// relayed leaves n deleted rows behind, as the relay does, and ten
	// live ones to claim; it returns the buffers of a claim that follows
	// a first one.
	relayed := func(n int) int {
		t.Helper()
		exec(t, db, `DELETE FROM watermill_outbox`)
		exec(t, db, `INSERT INTO watermill_outbox (uuid, destination, group_id, body)
			SELECT g::text, 'q', md5(g::text), 'x' FROM generate_series(1, ?) g`, n)
		exec(t, db, `DELETE FROM watermill_outbox`)
		exec(t, db, `INSERT INTO watermill_outbox (uuid, destination, group_id, body)
			SELECT 'live' || g, 'q', 'live' || g, 'x' FROM generate_series(1, 10) g`)
		var buffers int
		for range 2 {
			tx, err := db.DB.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			var plan []byte
			// The relay's own statement and arguments: a batch of 10.
			err = tx.QueryRowContext(ctx, `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) `+outbox.ClaimQuery, 10, 60000, "test").Scan(&plan)
			tx.Rollback()
			if err != nil {
				t.Fatal(err)
			}
			var p []struct {
				Plan struct {
					Rows int `json:"Actual Rows"`
					Hit  int `json:"Shared Hit Blocks"`
					Read int `json:"Shared Read Blocks"`
				}
			}
			if err := json.Unmarshal(plan, &p); err != nil || len(p) != 1 {
				t.Fatalf("plan %s: %v", plan, err)
			}
			if p[0].Plan.Rows != 10 {
				t.Fatalf("claimed %d rows, want 10", p[0].Plan.Rows)
			}
			buffers = p[0].Plan.Hit + p[0].Plan.Read
		}
		return buffers
	}
	few := relayed(200)
	many := relayed(20000)
	t.Logf("claim of 10 after 200 relayed rows: %d buffers; after 20,200: %d", few, many)
	if many > 2*few+100 {
		t.Errorf("a claim after 20,200 relayed rows costs %d buffers, after 200 %d: it grows with the rows relayed", many, few)
	}
}

func exec(t *testing.T, db *bun.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), query, args...); err != nil {
		t.Fatal(err)
	}
}
