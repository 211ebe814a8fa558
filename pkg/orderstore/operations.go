package orderstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/omsdev/oms/pkg/operation"
)

// ErrNoOperation: no outcome is recorded under that key (yet: a command
// still queued has none).
var ErrNoOperation = errors.New("no operation recorded")

// Operation is a command's recorded outcome (migration 9), as the query
// service serves it.
type Operation struct {
	ID        operation.Key
	Principal string
	CommandID string
	OrderID   string
	Command   string // the order.Kind
	Done      bool
	// Code is a google.rpc.Code once Done: 0 when the command was applied.
	Code         int32
	Message      string
	ErrorClass   string // the last failed attempt's, while retrying
	Attempts     int32
	OrderVersion int64
	AcceptTime   time.Time
	UpdateTime   time.Time
}

// OperationCursor is a keyset position in an order's operations: the last
// one of the previous page.
type OperationCursor struct {
	AcceptTime time.Time
	ID         operation.Key
}

// OperationQuery selects a page of one order's operations, oldest first.
type OperationQuery struct {
	OrderID string
	// Principal confines the page to the operations of the commands it
	// sent; empty is every principal's (staff).
	Principal string
	After     *OperationCursor
	Limit     int
}

const operationColumns = `id, principal, command_id, order_id::text, command, done, code, message,
	error_class, attempts, order_version, accept_time, update_time`

// GetOperation reads the operation recorded under id; ErrNoOperation when
// there is none. Whether the reader may see it is the caller's decision:
// the record says whose it is.
func (s *Store) GetOperation(ctx context.Context, id operation.Key) (op *Operation, err error) {
	err = s.retryBrokenConn(ctx, func() error {
		rows, err := statements(s.db.DB).query(ctx, `SELECT `+operationColumns+` FROM operations WHERE id = $1`, id[:])
		if err != nil {
			return err
		}
		ops, err := scanOperations(rows)
		if err != nil {
			return err
		}
		op = nil
		if len(ops) > 0 {
			op = &ops[0]
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("get operation %x: %w", id, err)
	}
	if op == nil {
		return nil, ErrNoOperation
	}
	return op, nil
}

// ListOperations returns up to q.Limit of an order's operations ordered by
// (accept_time, id), after q.After: a range of operations_order_idx, so a
// page costs the same however many operations the order has.
func (s *Store) ListOperations(ctx context.Context, q OperationQuery) (out []Operation, err error) {
	var sb strings.Builder
	sb.WriteString(`SELECT ` + operationColumns + ` FROM operations WHERE order_id = $1::uuid`)
	args := []any{q.OrderID}
	if q.Principal != "" {
		args = append(args, q.Principal)
		sb.WriteString(" AND principal = $" + strconv.Itoa(len(args)))
	}
	if q.After != nil {
		args = append(args, pgTime(q.After.AcceptTime), q.After.ID[:])
		sb.WriteString(" AND (accept_time, id) > ($" + strconv.Itoa(len(args)-1) + "::timestamptz, $" + strconv.Itoa(len(args)) + ")")
	}
	// The limit is part of the statement, as in List.
	sb.WriteString(" ORDER BY accept_time, id LIMIT " + strconv.Itoa(max(q.Limit, 0)))
	err = s.retryBrokenConn(ctx, func() error {
		rows, err := statements(s.db.DB).query(ctx, sb.String(), args...)
		if err != nil {
			return err
		}
		out, err = scanOperations(rows)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list operations of %s: %w", q.OrderID, err)
	}
	return out, nil
}

func scanOperations(rows *sql.Rows) ([]Operation, error) {
	defer rows.Close()
	var out []Operation
	for rows.Next() {
		var op Operation
		var id []byte
		if err := rows.Scan(&id, &op.Principal, &op.CommandID, &op.OrderID, &op.Command, &op.Done, &op.Code, &op.Message,
			&op.ErrorClass, &op.Attempts, &op.OrderVersion, &op.AcceptTime, &op.UpdateTime); err != nil {
			return nil, err
		}
		if len(id) != len(op.ID) {
			return nil, fmt.Errorf("operation id of %d bytes", len(id))
		}
		copy(op.ID[:], id)
		out = append(out, op)
	}
	return out, rows.Err()
}
