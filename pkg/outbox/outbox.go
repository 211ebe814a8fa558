// Package outbox is the transactional outbox: messages are written to the
// watermill_outbox table inside the business transaction, and a Relay sends
// them on after commit. A rolled-back transaction sends nothing; a committed
// one is sent at least once, in order within its FIFO group, or parked with
// the reason it could not be sent.
package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omsdev/oms/pkg/queue"
)

// Publish writes msgs, bound for the destination topic (a queue name), in
// tx. They are relayed only if tx commits. A message's queue.MetaGroupID
// metadata is its group: the relay sends a group's messages one at a time,
// in the order they were written.
func Publish(ctx context.Context, tx *sql.Tx, destination string, msgs ...*message.Message) error {
	if destination == "" {
		return errors.New("outbox write: no destination")
	}
	if len(msgs) == 0 {
		return nil
	}
	var q strings.Builder
	q.WriteString(`INSERT INTO watermill_outbox (uuid, destination, group_id, body, metadata) VALUES `)
	args := make([]any, 0, 5*len(msgs))
	for i, m := range msgs {
		meta := m.Metadata
		if meta == nil {
			meta = message.Metadata{}
		}
		metaJSON, err := json.Marshal(meta)
		if err != nil {
			return fmt.Errorf("outbox write %s: metadata: %w", m.UUID, err)
		}
		var group any // NULL: no order to keep
		if g := meta.Get(queue.MetaGroupID); g != "" {
			group = g
		}
		body := m.Payload
		if body == nil {
			body = []byte{}
		}
		if i > 0 {
			q.WriteString(", ")
		}
		n := len(args)
		fmt.Fprintf(&q, "($%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5)
		args = append(args, m.UUID, destination, group, body, string(metaJSON))
	}
	if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
		return fmt.Errorf("outbox write: %w", err)
	}
	return nil
}

// Backlog is the rows not yet relayed and not parked, and the age of the
// oldest: the relay's lag. Parked rows are counted by ReadStats.
func Backlog(ctx context.Context, db *sql.DB) (rows int64, oldest time.Duration, err error) {
	s, err := ReadStats(ctx, db)
	return s.Pending, s.OldestPending, err
}

// Stats describe the outbox at one moment.
type Stats struct {
	// Pending rows wait to be relayed (in backoff or leased included);
	// OldestPending is the age of the oldest.
	Pending       int64
	OldestPending time.Duration
	// Parked rows are set aside until an operator re-drives them.
	Parked int64
}

// ReadStats counts pending and parked rows in one query.
func ReadStats(ctx context.Context, db *sql.DB) (Stats, error) {
	var s Stats
	var secs float64
	err := db.QueryRowContext(ctx, `SELECT
			count(*) FILTER (WHERE parked_at IS NULL),
			COALESCE(EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE parked_at IS NULL)), 0)::float8,
			count(*) FILTER (WHERE parked_at IS NOT NULL)
		FROM watermill_outbox`).Scan(&s.Pending, &secs, &s.Parked)
	if err != nil {
		return Stats{}, fmt.Errorf("outbox stats: %w", err)
	}
	s.OldestPending = time.Duration(secs * float64(time.Second))
	return s, nil
}

// ParkedRow is a notification set aside, with why.
type ParkedRow struct {
	// Offset is the row's key, for the re-drive UPDATE.
	Offset      int64
	UUID        string
	Destination string
	GroupID     string
	Attempts    int
	LastError   string
	CreatedAt   time.Time
	ParkedAt    time.Time
}

// Parked lists up to limit parked rows, oldest first, for operators. See
// docs/operations.md (Outbox) for how to re-drive them.
func Parked(ctx context.Context, db *sql.DB, limit int) ([]ParkedRow, error) {
	rows, err := db.QueryContext(ctx, `SELECT "offset", uuid, destination, COALESCE(group_id, ''), attempts,
			COALESCE(last_error, ''), created_at, parked_at
		FROM watermill_outbox WHERE parked_at IS NOT NULL ORDER BY "offset" LIMIT $1`, int64(limit))
	if err != nil {
		return nil, fmt.Errorf("outbox parked: %w", err)
	}
	defer rows.Close()
	var out []ParkedRow
	for rows.Next() {
		var p ParkedRow
		var attempts int64
		if err := rows.Scan(&p.Offset, &p.UUID, &p.Destination, &p.GroupID, &attempts, &p.LastError, &p.CreatedAt, &p.ParkedAt); err != nil {
			return nil, fmt.Errorf("outbox parked: %w", err)
		}
		p.Attempts = int(attempts)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox parked: %w", err)
	}
	return out, nil
}
