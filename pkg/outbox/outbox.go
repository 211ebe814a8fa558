// Package outbox is the transactional outbox: messages are written to a
// PostgreSQL table inside the business transaction, and a relay (Watermill's
// forwarder) sends them on after commit. A rolled-back transaction sends
// nothing; a committed one is sent at least once.
package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Topic is the outbox's Watermill topic; its table, watermill_outbox, is
// created by the orderstore migrations.
const Topic = "outbox"

// schema is watermill-sql's PostgreSQL queue layout, adjusted for bun's
// pgdriver, which inlines arguments into the SQL text: []byte becomes a
// bytea literal that a json column refuses, so JSON goes in as text.
type schema struct{ wsql.PostgreSQLQueueSchema }

func (s schema) InsertQuery(p wsql.InsertQueryParams) (wsql.Query, error) {
	q, err := s.PostgreSQLQueueSchema.InsertQuery(p)
	for i, a := range q.Args {
		if b, ok := a.([]byte); ok {
			q.Args[i] = string(b)
		}
	}
	return q, err
}

// Publish writes msgs, bound for the destination topic (a queue name), in
// tx. They are relayed only if tx commits.
func Publish(ctx context.Context, tx *sql.Tx, destination string, msgs ...*message.Message) error {
	pub, err := wsql.NewPublisher(wsql.TxFromStdSQL(tx), wsql.PublisherConfig{SchemaAdapter: schema{}}, watermill.NopLogger{})
	if err != nil {
		return fmt.Errorf("outbox publisher: %w", err)
	}
	for _, m := range msgs {
		m.SetContext(ctx)
	}
	env := forwarder.NewPublisher(pub, forwarder.PublisherConfig{ForwarderTopic: Topic})
	if err := env.Publish(destination, msgs...); err != nil {
		return fmt.Errorf("outbox write: %w", err)
	}
	return nil
}

// RelayConfig tunes the relay.
type RelayConfig struct {
	PollInterval time.Duration
	// BatchSize rows are read per poll; a crash mid-batch resends up to
	// that many, which the destination's deduplication absorbs.
	BatchSize int
}

// NewRelay returns a forwarder that moves outbox rows to out and deletes
// each row once out has accepted it. Several relays may run: rows are
// locked while being sent.
func NewRelay(db *sql.DB, out message.Publisher, cfg RelayConfig, logger watermill.LoggerAdapter) (*forwarder.Forwarder, error) {
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromStdSQL(db), wsql.SubscriberConfig{
		SchemaAdapter:  schema{wsql.PostgreSQLQueueSchema{SubscribeBatchSize: cfg.BatchSize}},
		OffsetsAdapter: wsql.PostgreSQLQueueOffsetsAdapter{DeleteOnAck: true},
		PollInterval:   cfg.PollInterval,
		ResendInterval: time.Second,
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("outbox subscriber: %w", err)
	}
	return forwarder.NewForwarder(sub, out, logger, forwarder.Config{
		ForwarderTopic: Topic,
		CloseTimeout:   5 * time.Second,
		// An envelope that cannot be read would block the outbox forever.
		AckWhenCannotUnwrap: true,
	})
}

// Backlog is the rows not yet relayed and the age of the oldest: the
// relay's lag.
func Backlog(ctx context.Context, db *sql.DB) (rows int64, oldest time.Duration, err error) {
	var secs float64
	err = db.QueryRowContext(ctx,
		`SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 FROM watermill_outbox`).Scan(&rows, &secs)
	return rows, time.Duration(secs * float64(time.Second)), err
}
