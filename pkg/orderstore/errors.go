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

// Class says how a failure to apply a command is handled. It is the one
// classification of errors: the processor, the query service and the
// readiness checks all use it.
type Class int

const (
	// ClassTransient may pass on a retry: the database was unreachable or
	// restarting, a transaction lost a race, a statement timed out, or the
	// failure is of a kind not known to be permanent. Retried with
	// backoff; when the retries run out the message is left to SQS
	// redelivery (and redrive).
	ClassTransient Class = iota
	// ClassPending waits for something that may still arrive: a command for
	// an order whose create has not been applied yet. Retried with backoff;
	// dead-lettered with the reason only when the retries run out.
	ClassPending
	// ClassPermanent fails the same way every time: bad data (SQLSTATE
	// class 22 data exception, 23 integrity violation). Dead-lettered at
	// once with the reason.
	ClassPermanent
	// ClassOperational means the deployment is wrong, not the command: the
	// schema is not migrated (undefined table or column), privileges are
	// missing (SQLSTATE class 42, 3F invalid schema, 28 authorization). Retried and
	// never dead-lettered: the processor stops taking commands and is not
	// ready until the schema is what it expects.
	ClassOperational
)

func (c Class) String() string {
	return [...]string{"transient", "pending", "permanent", "operational"}[c]
}

// Classify sorts an error from Apply (or a read) into its Class.
func Classify(err error) Class {
	switch {
	case errors.Is(err, ErrNotFound):
		return ClassPending
	case errors.Is(err, ErrSchemaBehind):
		return ClassOperational
	}
	var pgErr pgdriver.Error
	if errors.As(err, &pgErr) {
		code := pgErr.Field('C')
		switch {
		case strings.HasPrefix(code, "22"), strings.HasPrefix(code, "23"):
			return ClassPermanent
		case strings.HasPrefix(code, "42"), strings.HasPrefix(code, "3F"), strings.HasPrefix(code, "28"):
			return ClassOperational
		}
	}
	return ClassTransient
}

// Permanent reports whether err fails the same way however often it is
// retried.
func Permanent(err error) bool { return err != nil && Classify(err) == ClassPermanent }

// Transient reports whether a read that failed with err is worth retrying
// by the client (the query service answers UNAVAILABLE): the database was
// unreachable or restarting, or the statement lost a race or timed out.
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
	return brokenConn(err)
}

// brokenConn reports whether err says the connection itself failed (a
// pooled connection the server closed, say, after a restart).
func brokenConn(err error) bool {
	var pgErr pgdriver.Error
	if errors.As(err, &pgErr) {
		code := pgErr.Field('C')
		return strings.HasPrefix(code, "08") || code == "57P01" || code == "57P02"
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, driver.ErrBadConn)
}
