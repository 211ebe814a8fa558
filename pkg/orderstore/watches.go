package orderstore

import (
	"context"
	"fmt"
	"time"
)

// watchSQL registers a watch and takes a share lock on the order's row in
// one statement. The lock closes the gap between a command's trigger,
// which announces a change only to an order that is watched (migration
// 10), and the watcher's first read: a command that changed the order
// before the watch was visible still holds the row's lock, so the
// registration waits for it to commit and the read that follows sees its
// change; a command that takes the lock after the registration commits
// runs its trigger with a fresh snapshot, which sees the watch. An order
// that does not exist yet has no row to lock: the caller must cover a
// create in flight itself (see the query service).
const watchSQL = `WITH watch AS (
	INSERT INTO order_watches (order_id, watcher, expires_at) VALUES ($1::uuid, $2, $3::timestamptz)
	ON CONFLICT (order_id, watcher) DO UPDATE SET expires_at = excluded.expires_at
)
SELECT 1 FROM orders WHERE id = $1::uuid FOR SHARE`

// WatchOrder registers watcher's interest in the order until the given
// time, or moves its expiry there: until then, every committed change of
// the order, and every operation of it that is done, is announced
// (oms_order_changed, oms_operation_done). It returns once any command
// that was writing the order has committed, so a read after it sees that
// command's change. The order need not exist.
func (s *Store) WatchOrder(ctx context.Context, orderID, watcher string, until time.Time) error {
	err := s.retryBrokenConn(ctx, func() error {
		rows, err := statements(s.db.DB).query(ctx, watchSQL, orderID, watcher, pgTime(until))
		if err != nil {
			return err
		}
		for rows.Next() {
		}
		rows.Close()
		return rows.Err()
	})
	if err != nil {
		return fmt.Errorf("watch order %s: %w", orderID, err)
	}
	return nil
}

// UnwatchOrder ends watcher's watch of the order; no watch is no error.
func (s *Store) UnwatchOrder(ctx context.Context, orderID, watcher string) error {
	err := s.retryBrokenConn(ctx, func() error {
		_, err := s.db.ExecContext(ctx, `DELETE FROM order_watches WHERE order_id = ?::uuid AND watcher = ?`, orderID, watcher)
		return err
	})
	if err != nil {
		return fmt.Errorf("unwatch order %s: %w", orderID, err)
	}
	return nil
}

// PurgeWatches deletes the watches that have expired, which their owners
// did not end (a process that died, an unwatch that failed), and reports
// how many. An expired watch announces nothing already; this only keeps
// the table small.
func (s *Store) PurgeWatches(ctx context.Context) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM order_watches WHERE expires_at <= now()`)
	if err != nil {
		return 0, fmt.Errorf("purge watches: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("purge watches: %w", err)
	}
	return n, nil
}
