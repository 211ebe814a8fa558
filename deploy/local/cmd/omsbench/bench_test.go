package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBenchSmoke runs the whole bench in a tiny configuration, on a
// database and ports of its own, and checks that the report has every
// section and a number for every figure. It asserts nothing about speed.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the services against PostgreSQL")
	}
	if err := procfsWorks(); err != nil {
		t.Skip(err)
	}
	if _, err := exec.LookPath("pgbench"); err != nil {
		t.Skip("pgbench is not installed:", err)
	}
	bin := t.TempDir()
	// Stripped: linking is most of the build, and the smoke needs no
	// symbols.
	build := exec.Command("go", "build", "-ldflags=-s -w", "-o", bin+"/",
		"github.com/omsdev/oms/services/ingest", "github.com/omsdev/oms/services/processor", "github.com/omsdev/oms/services/query",
		"github.com/omsdev/oms/deploy/local/cmd/sqslocal", "github.com/omsdev/oms/deploy/local/cmd/omsload")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	b := make([]byte, 4)
	rand.Read(b)
	out := filepath.Join(t.TempDir(), "performance.md")
	profiles := t.TempDir()
	cfg, err := parseFlags([]string{
		"-bin", bin, "-log-dir", t.TempDir(), "-db", "oms_bench_smoke_" + hex.EncodeToString(b), "-out", out, "-timeout", "3m",
		"-pg-duration", "1s", "-sqs-messages", "300", "-drain-orders", "200", "-e2e-orders", "200",
		"-rate-duration", "1s", "-read-duration", "1s", "-cpuprofile", profiles, "-profile-duration", "1s",
		"-list-scale", "2000,4000", "-list-duration", "1s", "-soak", "300", "-soak-sample", "100ms",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := run(ctx, cfg, testLog{t}); err != nil {
		t.Fatal(err)
	}

	report, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	text := string(report)
	for _, s := range sections {
		if !strings.Contains(text, "\n"+s+"\n") {
			t.Errorf("the report has no %q section", s)
		}
	}
	if strings.Contains(text, "Some measurements failed") {
		t.Errorf("the report says some measurements failed")
	}
	// Every table row of these sections has a number in each figure
	// column.
	number := regexp.MustCompile(`[0-9]`)
	for _, c := range []struct {
		section string
		columns []int // 0 is the first cell
	}{
		{"## Summary", []int{1}},
		{"## Ceilings", []int{1}},
		{"## Drain", []int{1}},
		{"## End to end", []int{1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"## Reads", []int{2, 3, 4, 5, 6, 7, 8}},
		{"## CPU per unit of work", []int{2, 3, 4, 5, 6, 7, 8}},
		{"## Peak memory", []int{1}},
		{"## ListOrders as the table grows", []int{0, 3, 6, 7, 9}},
		{"## Memory over a soak", []int{3, 4, 5, 6}},
	} {
		rows := tableRows(text, c.section)
		if len(rows) == 0 {
			t.Errorf("%s: no table", c.section)
		}
		for _, row := range rows {
			for _, col := range c.columns {
				if col >= len(row) || !number.MatchString(row[col]) || strings.Contains(row[col], "failed") {
					t.Errorf("%s: row %q has no number in column %d", c.section, strings.Join(row, " | "), col)
				}
			}
		}
	}
	if !strings.Contains(text, "recorded from the processor") {
		t.Errorf("the create ceiling does not run the processor's recorded statements")
	}
	if t.Failed() {
		t.Log(text)
	}
}

// tableRows returns the cells of the body rows of the first table after
// heading.
func tableRows(text, heading string) [][]string {
	i := strings.Index(text, "\n"+heading+"\n")
	if i < 0 {
		return nil
	}
	var rows [][]string
	inTable := false
	for line := range strings.Lines(text[i+len(heading)+2:]) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "## "):
			return rows
		case strings.HasPrefix(line, "|---"):
			inTable = true
		case inTable && strings.HasPrefix(line, "|"):
			cells := strings.Split(strings.Trim(line, "|"), "|")
			for j := range cells {
				cells[j] = strings.TrimSpace(cells[j])
			}
			rows = append(rows, cells)
		case inTable:
			return rows
		}
	}
	return rows
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestCommandSpan(t *testing.T) {
	t.Parallel()
	const order, cmd = "o-1", "c-1"
	tests := []struct {
		name  string
		stmts []statement
		want  []string
	}{
		{"a transaction", []statement{
			{conn: 1, text: "SELECT 1"}, {conn: 1, text: "BEGIN"}, {conn: 1, text: "INSERT claim c-1"}, {conn: 1, text: "SELECT o-1 FOR UPDATE"}, {conn: 1, text: "INSERT o-1"}, {conn: 1, text: "COMMIT"}, {conn: 1, text: "SELECT relay"},
		}, []string{"BEGIN", "INSERT claim c-1", "SELECT o-1 FOR UPDATE", "INSERT o-1", "COMMIT"}},
		{"two statements, no transaction, another connection in between", []statement{
			{conn: 2, text: "SELECT guard"}, {conn: 1, text: "SELECT o-1, c-1"}, {conn: 2, text: "UPDATE outbox"}, {conn: 1, text: "WITH claim AS (o-1) SELECT true"}, {conn: 1, text: "SELECT relay"},
		}, []string{"SELECT o-1, c-1", "WITH claim AS (o-1) SELECT true"}},
		{"read, then a transaction for the write", []statement{
			{conn: 1, text: "SELECT o-1"}, {conn: 1, text: "BEGIN"}, {conn: 1, text: "INSERT o-1"}, {conn: 1, text: "INSERT outbox"}, {conn: 1, text: "COMMIT"},
		}, []string{"SELECT o-1", "BEGIN", "INSERT o-1", "INSERT outbox", "COMMIT"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := commandSpan(tt.stmts, order, cmd)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := commandSpan([]statement{{conn: 1, text: "SELECT 1"}}, order, cmd); err == nil {
		t.Error("a recording without the order gave a span")
	}
}

func TestPgbenchScript(t *testing.T) {
	t.Parallel()
	got := pgbenchScript([]string{"INSERT INTO t VALUES ('o-1', 'x;y'); SELECT 1;", "SELECT 'o-1'"}, map[string]string{"o-1": "v"})
	for _, want := range []string{
		`\set v1 random(10000000, 99999999)`,
		`INSERT INTO t VALUES (':v1-:v2-:v3-:v4-:v5', 'x;y')\; SELECT 1;`,
		`SELECT ':v1-:v2-:v3-:v4-:v5';`,
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("script lacks %q:\n%s", want, got)
		}
	}
	if n := roundTrips(got); n != "2 round trips" {
		t.Errorf("roundTrips = %s, want 2", n)
	}
}

// The operation's key is no id the script randomizes: each transaction
// must still write its own row, or the clients queue on one row's lock.
func TestFreshByteaGivesEachTransactionItsOwnKey(t *testing.T) {
	t.Parallel()
	script := pgbenchScript([]string{`INSERT INTO operations (id, command_id) VALUES ('\x99b1', 'c-1')`}, map[string]string{"c-1": "c"})
	got := freshBytea(script, "99b1", "c")
	want := `INSERT INTO operations (id, command_id) VALUES (decode(md5(':c1-:c2-:c3-:c4-:c5'), 'hex'), ':c1-:c2-:c3-:c4-:c5');`
	if !strings.Contains(got, want+"\n") {
		t.Errorf("script lacks %q:\n%s", want, got)
	}
}

func TestBindParams(t *testing.T) {
	t.Parallel()
	// Two parameters, text format for both: 'it''s' and NULL.
	msg := []byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 4, 'i', 't', '\'', 's', 0xff, 0xff, 0xff, 0xff}
	got := bindParams("INSERT INTO t VALUES ($1, $2)", msg)
	if want := `INSERT INTO t VALUES ('it''s', NULL)`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestParseSizes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{"100000", []int{100000}, false},
		{"100000, 1_000_000,10000000", []int{100000, 1000000, 10000000}, false},
		{"1000,1000", nil, true},
		{"1000,10", nil, true},
		{"0", nil, true},
		{"1e6", nil, true},
		{"", nil, true},
	}
	for _, tt := range tests {
		got, err := parseSizes(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("parseSizes(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestSoakDeciles(t *testing.T) {
	t.Parallel()
	at := func(sent int64, rss int64) memSample {
		return memSample{Sent: sent, Applied: sent, Mem: map[string]mem{nameQuery: {RSS: rss, HWM: rss}}}
	}
	r := soakResult{Commands: 100, Samples: []memSample{
		at(5, 10), at(10, 12), // the first tenth: its last sample, and the largest
		at(15, 30), at(20, 20),
		at(100, 40), at(100, 35), // after the last send: the last tenth
	}}
	rows := r.deciles()
	want := []struct {
		upto     int64
		end, max int64
	}{{10, 12, 12}, {20, 20, 30}, {100, 35, 40}}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(rows), len(want), rows)
	}
	for i, w := range want {
		if rows[i].Upto != w.upto || rows[i].End[nameQuery].RSS != w.end || rows[i].Max[nameQuery] != w.max {
			t.Errorf("row %d: upto %d end %d max %d; want %+v", i, rows[i].Upto, rows[i].End[nameQuery].RSS, rows[i].Max[nameQuery], w)
		}
	}
	if rows := (soakResult{Commands: 100}).deciles(); rows != nil {
		t.Errorf("no samples gave rows: %+v", rows)
	}
}
