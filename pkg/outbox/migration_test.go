package outbox_test

import (
	"bytes"
	"context"
	"database/sql"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/outbox"
	"github.com/omsdev/oms/pkg/queue"
)

// The previous release's outbox: watermill-sql's PostgreSQL queue schema
// holding the forwarder's envelopes, JSON passed as text for pgdriver.
type legacySchema struct{ wsql.PostgreSQLQueueSchema }

func (s legacySchema) InsertQuery(p wsql.InsertQueryParams) (wsql.Query, error) {
	q, err := s.PostgreSQLQueueSchema.InsertQuery(p)
	for i, a := range q.Args {
		if b, ok := a.([]byte); ok {
			q.Args[i] = string(b)
		}
	}
	return q, err
}

func legacyPublish(t *testing.T, db *sql.DB, destination string, msgs ...*message.Message) {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	pub, err := wsql.NewPublisher(wsql.TxFromStdSQL(tx), wsql.PublisherConfig{SchemaAdapter: legacySchema{}}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	if err := forwarder.NewPublisher(pub, forwarder.PublisherConfig{ForwarderTopic: "outbox"}).Publish(destination, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// migrate applies the orderstore migration files whose names match glob,
// in order, each in its own transaction as bun's migrator does.
func migrate(t *testing.T, db *sql.DB, glob string, reverse bool) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "orderstore", "migrations", glob))
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations match %s: %v", glob, err)
	}
	slices.Sort(files)
	if reverse {
		slices.Reverse(files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(string(b)); err != nil {
			tx.Rollback()
			t.Fatalf("%s: %v", filepath.Base(f), err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

func sameMessage(t *testing.T, got, want *message.Message) {
	t.Helper()
	if got == nil {
		t.Errorf("%s was not delivered", want.UUID)
		return
	}
	if got.UUID != want.UUID || !bytes.Equal(got.Payload, want.Payload) || !maps.Equal(got.Metadata, want.Metadata) {
		t.Errorf("delivered %s %q %v, want %s %q %v", got.UUID, got.Payload, got.Metadata, want.UUID, want.Payload, want.Metadata)
	}
}

// Migration 20261126000004 carries the forwarder's unsent rows over; rows
// the previous release writes during the rollout are unwrapped on insert;
// the down migration turns rows back into envelopes the forwarder relays.
func TestMigrationCarriesOverForwarderRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bdb, _ := dbtest.NewUnmigrated(t)
	db := bdb.DB
	migrate(t, db, "2026112600000[123]_*.up.sql", false)

	before := []*message.Message{note("old-1", "g"), note("old-2", "g"), message.NewMessage("old-3", []byte{0, 0xff, 1})}
	before[2].Metadata.Set(queue.MetaGroupID, "h")
	legacyPublish(t, db, "dest.fifo", before[:2]...)
	legacyPublish(t, db, "other.fifo", before[2])

	migrate(t, db, "20261126000004_*.up.sql", false)
	var groups []string
	rows, err := db.QueryContext(ctx, `SELECT uuid || ' ' || destination || ' ' || COALESCE(group_id, '-') || ' ' || (payload IS NULL)::text
		FROM watermill_outbox ORDER BY "offset"`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		rows.Scan(&s)
		groups = append(groups, s)
	}
	rows.Close()
	if want := []string{"old-1 dest.fifo g true", "old-2 dest.fifo g true", "old-3 other.fifo h true"}; !slices.Equal(groups, want) {
		t.Fatalf("carried over %q, want %q", groups, want)
	}

	// The later migrations (6 narrows the unwrapping trigger, 8 moves the
	// claim into a function) change nothing of what follows.
	migrate(t, db, "2026112600000[5-8]_*.up.sql", false)

	// The previous release, still running during the rollout, keeps
	// writing envelopes; its forwarder can no longer take rows.
	during := note("during-1", "g")
	legacyPublish(t, db, "dest.fifo", during)
	sel, err := legacySchema{}.SelectQuery(wsql.SelectQueryParams{Topic: "outbox"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.QueryContext(ctx, sel.Query, sel.Args...); err == nil {
		t.Error("the previous release's forwarder can still take rows it cannot read")
	}

	l := newLedger()
	relay, err := outbox.NewRelay(db, &faulty{l: l}, outbox.RelayConfig{PollInterval: 5 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	go relay.Run(ctx)
	eventually(t, "the carried-over rows", func() (bool, error) { return l.delivered() == 4, nil })
	relay.Close()
	for _, m := range append(before, during) {
		sameMessage(t, l.msgs[m.UUID], m)
	}
	if got := l.order("g"); !slices.Equal(got, []string{"old-1", "old-2", "during-1"}) {
		t.Errorf("group g in the order %v", got)
	}

	// Down: rows, parked ones included, become envelopes again.
	after := []*message.Message{note("new-1", "g"), note("new-2", "h")}
	write(t, bdb, "dest.fifo", after...)
	if _, err := db.ExecContext(ctx, `UPDATE watermill_outbox SET parked_at = now(), last_error = 'x' WHERE uuid = 'new-2'`); err != nil {
		t.Fatal(err)
	}
	migrate(t, db, "2026112600000[4-8]_*.down.sql", true)

	l = newLedger()
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromStdSQL(db), wsql.SubscriberConfig{
		SchemaAdapter:  legacySchema{wsql.PostgreSQLQueueSchema{SubscribeBatchSize: 10}},
		OffsetsAdapter: wsql.PostgreSQLQueueOffsetsAdapter{DeleteOnAck: true},
		PollInterval:   10 * time.Millisecond,
	}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := forwarder.NewForwarder(sub, &faulty{l: l}, watermill.NopLogger{}, forwarder.Config{ForwarderTopic: "outbox"})
	if err != nil {
		t.Fatal(err)
	}
	go fwd.Run(ctx)
	// Relayed and acked: the forwarder deletes a row after its publish
	// returns, so closing it on delivery alone could leave the rows.
	eventually(t, "the forwarder to relay and delete", func() (bool, error) {
		var left int
		err := db.QueryRowContext(ctx, `SELECT count(*) FROM watermill_outbox`).Scan(&left)
		return l.delivered() == 2 && left == 0, err
	})
	fwd.Close()
	for _, m := range after {
		sameMessage(t, l.msgs[m.UUID], m)
	}

	// And up again.
	migrate(t, db, "20261126000004_*.up.sql", false)
	if s := stats(t, db); s.Pending != 0 || s.Parked != 0 {
		t.Errorf("after the round trip: %+v", s)
	}
}
