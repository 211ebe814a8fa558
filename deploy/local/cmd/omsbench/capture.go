package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// The create ceiling runs the project's own statements: the bench records
// what the real processor sends PostgreSQL for one create, through a proxy
// that reads the wire protocol, and turns that into a pgbench script. The
// ceiling so follows the store as it changes, with no copy to keep in step.

// recorder is a TCP proxy to PostgreSQL that records every statement its
// clients send, in order, per connection.
type recorder struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns []net.Conn
	next  int
	stmts []statement
	wg    sync.WaitGroup
}

type statement struct {
	conn int
	text string
	// An extended-protocol statement's text as parsed, and its parameters
	// as literals.
	query  string
	params []string
}

func newRecorder(target string) (*recorder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &recorder{ln: ln, target: target}
	r.wg.Go(r.accept)
	return r, nil
}

func (r *recorder) addr() string { return r.ln.Addr().String() }

func (r *recorder) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", r.target)
		if err != nil {
			c.Close()
			continue
		}
		r.mu.Lock()
		r.conns = append(r.conns, c, b)
		r.next++
		id := r.next
		r.mu.Unlock()
		r.wg.Go(func() { io.Copy(c, b); c.Close() })
		r.wg.Go(func() { r.frontend(id, c, b); b.Close() })
	}
}

// frontend forwards what a client sends and records its statements: simple
// queries as sent, extended-protocol ones with their bound parameters
// written in as literals.
func (r *recorder) frontend(id int, c net.Conn, b net.Conn) {
	in := bufio.NewReader(c)
	// The startup packet has no type byte. A request for TLS or GSS
	// encryption makes the rest unreadable: forward it blind.
	var head [8]byte
	if _, err := io.ReadFull(in, head[:]); err != nil {
		return
	}
	n := int(binary.BigEndian.Uint32(head[:4]))
	rest := make([]byte, max(n-8, 0))
	if _, err := io.ReadFull(in, rest); err != nil {
		return
	}
	if _, err := b.Write(append(head[:], rest...)); err != nil {
		return
	}
	if code := binary.BigEndian.Uint32(head[4:]); code == 80877103 || code == 80877104 {
		io.Copy(b, in)
		return
	}
	parsed := map[string]string{}     // prepared statement name → query
	portals := map[string]statement{} // portal name → query with its parameters
	for {
		var h [5]byte
		if _, err := io.ReadFull(in, h[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(h[1:]))
		body := make([]byte, max(n-4, 0))
		if _, err := io.ReadFull(in, body); err != nil {
			return
		}
		switch h[0] {
		case 'Q':
			r.record(statement{conn: id, text: cstring(body, 0)})
		case 'P':
			name := cstring(body, 0)
			parsed[name] = cstring(body, len(name)+1)
		case 'B':
			portal := cstring(body, 0)
			stmt := cstring(body, len(portal)+1)
			q, params := parsed[stmt], bindValues(body[len(portal)+len(stmt)+2:])
			portals[portal] = statement{conn: id, text: substitute(q, params), query: q, params: params}
		case 'E':
			r.record(portals[cstring(body, 0)])
		}
		if _, err := b.Write(append(h[:], body...)); err != nil {
			return
		}
	}
}

func (r *recorder) record(st statement) {
	if strings.TrimSpace(st.text) == "" {
		return
	}
	r.mu.Lock()
	r.stmts = append(r.stmts, st)
	r.mu.Unlock()
}

func (r *recorder) statements() []statement {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]statement(nil), r.stmts...)
}

func (r *recorder) close() {
	r.ln.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// cstring is the NUL-terminated string at b[i:].
func cstring(b []byte, i int) string {
	if i >= len(b) {
		return ""
	}
	if j := bytes.IndexByte(b[i:], 0); j >= 0 {
		return string(b[i : i+j])
	}
	return string(b[i:])
}

var paramRE = regexp.MustCompile(`\$([0-9]+)`)

// bindParams writes a Bind message's parameters into query as literals:
// text values quoted, binary ones as bytea, NULL as NULL.
func bindParams(query string, b []byte) string {
	return substitute(query, bindValues(b))
}

// bindValues is a Bind message's parameters as SQL literals; nil when the
// message cannot be read.
func bindValues(b []byte) []string {
	u16 := func() int {
		if len(b) < 2 {
			return 0
		}
		v := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		return v
	}
	formats := make([]int, u16())
	for i := range formats {
		formats[i] = u16()
	}
	values := make([]string, u16())
	for i := range values {
		if len(b) < 4 {
			return nil
		}
		n := int(int32(binary.BigEndian.Uint32(b)))
		b = b[4:]
		if n < 0 {
			values[i] = "NULL"
			continue
		}
		if n > len(b) {
			return nil
		}
		v := b[:n]
		b = b[n:]
		f := 0
		switch {
		case len(formats) == 1:
			f = formats[0]
		case i < len(formats):
			f = formats[i]
		}
		if f == 1 {
			values[i] = `'\x` + hex.EncodeToString(v) + `'`
		} else {
			values[i] = "'" + strings.ReplaceAll(string(v), "'", "''") + "'"
		}
	}
	return values
}

// substitute writes values into query's $n placeholders.
func substitute(query string, values []string) string {
	return paramRE.ReplaceAllStringFunc(query, func(m string) string {
		i, _ := strconv.Atoi(m[1:])
		if i < 1 || i > len(values) {
			return m
		}
		return values[i-1]
	})
}

var (
	beginRE = regexp.MustCompile(`(?i)^\s*(BEGIN|START\s+TRANSACTION)\b`)
	endRE   = regexp.MustCompile(`(?i)^\s*(COMMIT|END|ROLLBACK)\b`)
)

// commandSpan picks one command's statements out of everything recorded:
// on the connection that first mentions the order or the command id, from
// there to the last statement there that mentions either, widened to the
// transaction around them if there is one.
func commandSpan(stmts []statement, ids ...string) ([]string, error) {
	mentions := func(s statement) bool {
		for _, id := range ids {
			if strings.Contains(s.text, id) {
				return true
			}
		}
		return false
	}
	first := slicesIndexFunc(stmts, mentions)
	if first < 0 {
		return nil, errors.New("no statement mentions the order")
	}
	conn := stmts[first].conn
	var own []statement
	at := 0
	for i, s := range stmts {
		if s.conn == conn {
			if i == first {
				at = len(own)
			}
			own = append(own, s)
		}
	}
	last := at
	for i := at; i < len(own); i++ {
		if mentions(own[i]) {
			last = i
		}
	}
	// Inside a transaction at the first statement: start at its BEGIN.
	for i := at - 1; i >= 0; i-- {
		if endRE.MatchString(own[i].text) {
			break
		}
		if beginRE.MatchString(own[i].text) {
			at = i
			break
		}
	}
	// A transaction open after the last: end at its COMMIT.
	open := false
	for _, s := range own[at : last+1] {
		switch {
		case beginRE.MatchString(s.text):
			open = true
		case endRE.MatchString(s.text):
			open = false
		}
	}
	if open {
		for i := last + 1; i < len(own); i++ {
			if endRE.MatchString(own[i].text) {
				last = i
				break
			}
		}
	}
	out := make([]string, 0, last-at+1)
	for _, s := range own[at : last+1] {
		out = append(out, s.text)
	}
	return out, nil
}

func slicesIndexFunc(s []statement, f func(statement) bool) int {
	for i, v := range s {
		if f(v) {
			return i
		}
	}
	return -1
}

// pgbenchScript turns recorded statements into a pgbench script: each id
// becomes a fresh random uuid-shaped literal per transaction (decimal
// digits are hex digits), written into the text by pgbench itself, so the
// script has the command's round trips and no more.
func pgbenchScript(stmts []string, ids map[string]string) string {
	var b strings.Builder
	for _, prefix := range ids {
		fmt.Fprintf(&b, "\\set %s1 random(10000000, 99999999)\n", prefix)
		for _, k := range []string{"2", "3", "4"} {
			fmt.Fprintf(&b, "\\set %s%s random(1000, 9999)\n", prefix, k)
		}
		fmt.Fprintf(&b, "\\set %s5 random(100000000000, 999999999999)\n", prefix)
	}
	for _, s := range stmts {
		for id, prefix := range ids {
			s = strings.ReplaceAll(s, id, fmt.Sprintf(":%[1]s1-:%[1]s2-:%[1]s3-:%[1]s4-:%[1]s5", prefix))
		}
		b.WriteString(compound(strings.TrimRight(strings.TrimSpace(s), ";")))
		b.WriteString(";\n")
	}
	return b.String()
}

// compound marks the semicolons between statements sent in one query as
// pgbench's "\;", so that they stay one round trip.
func compound(s string) string {
	var b strings.Builder
	var quote byte // ' or " while inside one
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			j := strings.IndexByte(s[i:], '\n')
			if j < 0 {
				j = len(s) - i
			}
			b.WriteString(s[i : i+j])
			i += j - 1
			continue
		case c == ';':
			b.WriteString(`\;`)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// captureCreate runs the processor once through a recorder, has ingest
// accept one create (the body omsload sends), and returns the processor's
// statements for it as a pgbench script.
func (s *stack) captureCreate(ctx context.Context) (string, error) {
	u, err := url.Parse(s.dbURL)
	if err != nil {
		return "", err
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "5432")
	}
	rec, err := newRecorder(target)
	if err != nil {
		return "", err
	}
	defer rec.close()
	via := *u
	via.Host = rec.addr()
	httpAddr := freeAddr()
	// The relay waits a minute between polls: its statements stay out of
	// the recording.
	if err := s.spawnAs("processor-capture", nameProcessor, nil, []string{"DATABASE_URL=" + via.String(), "HTTP_ADDR=" + httpAddr, "OUTBOX_POLL_INTERVAL=1m"}); err != nil {
		return "", err
	}
	defer s.stop("processor-capture")
	if err := s.waitReady(ctx, "processor-capture", httpAddr, true); err != nil {
		return "", err
	}

	body := `{"customerId":"c-1","currencyCode":"USD","lineItems":[{"sku":"SKU-1","name":"Mug","quantity":2,"unitPriceMinor":"1200"}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.ingestHTTP+"/v1/orders?request_id="+uuid.NewString(), strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var acc struct {
		Name string `json:"name"`
	}
	if resp.StatusCode/100 != 2 || json.Unmarshal(b, &acc) != nil || !strings.HasPrefix(acc.Name, "orders/") {
		return "", fmt.Errorf("create: %s %.200s", resp.Status, b)
	}
	orderID := strings.TrimPrefix(acc.Name, "orders/")
	var commandID string
	for deadline := time.Now().Add(30 * time.Second); ; {
		// The command's record has its id as stored, whatever ingest made
		// of the request id.
		err := s.db.QueryRowContext(ctx, `SELECT command_id FROM processed_commands WHERE order_id = $1`, orderID).Scan(&commandID)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("order %s not applied after 30s: %v", orderID, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The command's operation is keyed by a hash of it (pkg/operation),
	// a bytea the ids above do not appear in: left as recorded, every
	// transaction would update the one row, and the clients would queue on
	// its lock instead of measuring the statement.
	var opID string
	if err := s.db.QueryRowContext(ctx, `SELECT encode(id, 'hex') FROM operations WHERE command_id = $1`, commandID).Scan(&opID); err != nil {
		return "", fmt.Errorf("the create's operation: %w", err)
	}
	s.stop("processor-capture")
	rec.close()
	stmts, err := commandSpan(rec.statements(), orderID, commandID)
	if err != nil {
		return "", err
	}
	script := pgbenchScript(stmts, map[string]string{orderID: "omsbench_o", commandID: "omsbench_c"})
	return freshBytea(script, opID, "omsbench_c"), nil
}

// freshBytea replaces the bytea literal of hex in script with one derived
// from the transaction's fresh ids of prefix (see pgbenchScript), so that
// each transaction writes a row of its own.
func freshBytea(script, hex, prefix string) string {
	return strings.ReplaceAll(script, `'\x`+hex+`'`,
		fmt.Sprintf(`decode(md5(':%[1]s1-:%[1]s2-:%[1]s3-:%[1]s4-:%[1]s5'), 'hex')`, prefix))
}
