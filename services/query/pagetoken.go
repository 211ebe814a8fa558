package main

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.einride.tech/aip/pagination"

	"github.com/omsdev/oms/pkg/order"
)

// Page tokens (AIP-158) are opaque to clients and signed: a token is
// base64url of
//
//	version | kind | request checksum (4) | position | HMAC-SHA256 (16)
//
// The MAC covers everything before it and the caller's principal id, so
// a token cannot be forged, altered or used by another caller. The
// checksum is einride's pagination.CalculateRequestChecksum: every field
// of the request but page_token and page_size (for ListOrders the filter,
// order_by and read_mask), so a token sent with another query is refused
// with a message saying so. CRC-32 is no defence against a caller who
// crafts a colliding filter, but it need not be: the position only says
// where a list the caller may read resumes, and the store confines every
// list to the caller's orders whatever the token says.
type pageTokens struct{ key []byte }

const (
	tokenVersion = 1
	tokenMACSize = 16

	tokenListOrders      byte = 'o'
	tokenListOrderEvents byte = 'e'
	tokenListOperations  byte = 'p'
)

// Tokens that cannot be read, or whose MAC does not verify.
var (
	errTokenNotIssued  = badRequest("page_token", "is not a token this service issued to this caller")
	errTokenOtherQuery = badRequest("page_token",
		"belongs to a different query; send the same filter, order_by and read_mask as the first page")
)

func newPageTokens(key []byte) *pageTokens { return &pageTokens{key: key} }

// pageTokenKey is the key page tokens are signed with: the configured
// QUERY_PAGE_TOKEN_SECRET; else one derived from OPERATION_SECRET, which
// every query replica shares; else a random key, with a warning that
// tokens will not survive a restart or work across replicas.
func pageTokenKey(secret, operationSecret []byte, log *slog.Logger) []byte {
	switch {
	case len(secret) > 0:
		return secret
	case len(operationSecret) > 0:
		// A key of its own, so that a page token never verifies as
		// anything signed with the operation secret, or the reverse.
		m := hmac.New(sha256.New, operationSecret)
		m.Write([]byte("oms query page tokens v1"))
		return m.Sum(nil)
	}
	if log != nil {
		log.Warn("QUERY_PAGE_TOKEN_SECRET and OPERATION_SECRET are unset: page tokens are signed with a random key, " +
			"so they stop working when this process restarts and on any other replica")
	}
	return randomTokenKey()
}

// randomTokenKey is this process's key when none is configured (and the
// key of a queryService built without one, as tests do).
var randomTokenKey = sync.OnceValue(func() []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return k
})

func (p *pageTokens) mac(principal string, body []byte) []byte {
	m := hmac.New(sha256.New, p.key)
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(principal)))
	m.Write(n[:])
	m.Write([]byte(principal))
	m.Write(body)
	return m.Sum(nil)[:tokenMACSize]
}

func (p *pageTokens) seal(kind byte, req pagination.Request, principal string, pos []byte) string {
	sum, err := pagination.CalculateRequestChecksum(req)
	if err != nil {
		panic(err) // a generated request message always marshals
	}
	b := make([]byte, 0, 6+len(pos)+tokenMACSize)
	b = append(b, tokenVersion, kind)
	b = binary.BigEndian.AppendUint32(b, sum)
	b = append(b, pos...)
	b = append(b, p.mac(principal, b)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// open returns the position in req's page token, which must have been
// sealed for a request of this kind, the same query and principal.
func (p *pageTokens) open(kind byte, req pagination.Request, principal string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(req.GetPageToken())
	if err != nil || len(b) < 6+tokenMACSize {
		return nil, errTokenNotIssued
	}
	body, sig := b[:len(b)-tokenMACSize], b[len(b)-tokenMACSize:]
	if !hmac.Equal(sig, p.mac(principal, body)) || body[0] != tokenVersion || body[1] != kind {
		return nil, errTokenNotIssued
	}
	sum, err := pagination.CalculateRequestChecksum(req)
	if err != nil || binary.BigEndian.Uint32(body[2:6]) != sum {
		return nil, errTokenOtherQuery
	}
	return body[6:], nil
}

// listPosition is where a page of orders ended: the keyset cursor.
type listPosition struct {
	CreateTime time.Time
	ID         string
}

func (l listPosition) encode() []byte {
	id, err := uuid.Parse(l.ID)
	if err != nil {
		panic(err) // the store's ids are uuids
	}
	b := binary.BigEndian.AppendUint64(nil, uint64(l.CreateTime.UnixMicro()))
	return append(b, id[:]...)
}

// decodeListPosition reads a position; ok is false when it is not one a
// page can end at (PostgreSQL keeps microseconds, and has no year 0).
func decodeListPosition(b []byte) (l listPosition, ok bool) {
	if len(b) != 8+16 {
		return l, false
	}
	l.CreateTime = time.UnixMicro(int64(binary.BigEndian.Uint64(b))).UTC()
	l.ID = uuid.UUID(b[8:]).String()
	if _, err := order.ParseID(l.ID); err != nil {
		return l, false
	}
	return l, inTimestampRange(l.CreateTime)
}

func encodeSeq(seq int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(seq)) }

func decodeSeq(b []byte) (int64, bool) {
	if len(b) != 8 {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(b)), true
}
