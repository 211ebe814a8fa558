package config

import (
	"strings"
	"testing"
	"time"
)

func TestEnv(t *testing.T) {
	e := FromMap(map[string]string{
		"N": "7", "BADN": "x", "BIG": "99", "D": "250ms", "BADD": "5", "B": "true",
		"A": ":9090", "BADA": "9090", "U": "postgres://u:secret@db:5432/x", "BADU": "nope", "BLANK": "  ",
	})
	if got := e.Int("N", 1, 0, 10); got != 7 {
		t.Errorf("Int = %d", got)
	}
	if got := e.Int("MISSING", 3, 0, 10); got != 3 {
		t.Errorf("Int default = %d", got)
	}
	if got := e.Int("BLANK", 3, 0, 10); got != 3 {
		t.Errorf("blank is unset, got %d", got)
	}
	if got := e.Duration("D", time.Second, 0, time.Hour); got != 250*time.Millisecond {
		t.Errorf("Duration = %s", got)
	}
	if !e.Bool("B", false) || e.Addr("A", ":1") != ":9090" || e.URL("U", "") == "" {
		t.Error("good values rejected")
	}
	if e.Err() != nil {
		t.Fatalf("Err = %v before any bad value", e.Err())
	}
	e.Int("BADN", 1, 0, 10)
	e.Int("BIG", 1, 0, 10)
	e.Duration("BADD", time.Second, 0, time.Hour)
	e.Addr("BADA", ":1")
	e.URL("BADU", "")
	err := e.Err()
	if err == nil {
		t.Fatal("bad values accepted")
	}
	for _, name := range []string{"BADN", "BIG", "BADD", "BADA", "BADU"} {
		if !strings.Contains(err.Error(), name+"=") {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
}

func TestRedact(t *testing.T) {
	got := Redact("postgres://u:secret@db:5432/x")
	if strings.Contains(got, "secret") || !strings.Contains(got, "u:xxxxx@db") {
		t.Errorf("Redact = %q", got)
	}
}
