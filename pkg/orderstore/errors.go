package orderstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/uptrace/bun/driver/pgdriver"
)

// Permanent reports whether err will fail the same way however often the
// command is retried: bad data or a bug in a statement (SQLSTATE classes
// 22 data exception, 23 integrity violation, 42 syntax or access rule).
// Anything else may pass on a retry, and is retried.
func Permanent(err error) bool {
	var pgErr pgdriver.Error
	if !errors.As(err, &pgErr) || len(pgErr.Field('C')) < 2 {
		return false
	}
	switch pgErr.Field('C')[:2] {
	case "22", "23", "42":
		return true
	}
	return false
}

// Transient reports whether err is worth retrying: the database was
// unreachable or restarting, the transaction lost a race (serialization
// failure, deadlock, ErrConflict) or timed out. Everything else, such as a
// constraint violation or a bad query, fails the same way every time.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrConflict) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var pgErr pgdriver.Error
	if errors.As(err, &pgErr) {
		code := pgErr.Field('C')
		switch {
		case strings.HasPrefix(code, "08"), // connection exception
			strings.HasPrefix(code, "53"), // insufficient resources, too many connections
			code == "40001",               // serialization_failure
			code == "40P01",               // deadlock_detected
			code == "55P03",               // lock_not_available
			code == "57014",               // query_canceled (statement timeout)
			code == "57P01",               // admin_shutdown
			code == "57P02",               // crash_shutdown
			code == "57P03":               // cannot_connect_now (starting up)
			return true
		}
		return false
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, driver.ErrBadConn)
}
