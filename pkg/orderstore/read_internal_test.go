package orderstore

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/uptrace/bun/driver/pgdriver"

	"github.com/omsdev/oms/pkg/order"
)

// Every column of orderRow has a scan destination in read.go, so a column
// added to the model is read (or fails loudly), never silently dropped.
func TestEveryOrderColumnIsRead(t *testing.T) {
	var r orderRow
	if len(allColumns) < 20 {
		t.Fatalf("allColumns = %v", allColumns)
	}
	for _, c := range allColumns {
		if _, unknown := r.dest(c).(unknownColumn); unknown {
			t.Errorf("column %q of orderRow has no destination in orderRow.dest", c)
		}
	}
	if !textColumns["id"] || !textColumns["create_time"] || textColumns["version"] {
		t.Errorf("textColumns = %v, want the uuid and timestamptz columns", textColumns)
	}
	for f, cols := range fieldColumns {
		for _, c := range cols {
			if _, unknown := r.dest(c).(unknownColumn); unknown {
				t.Errorf("field %s reads column %q, which orderRow.dest does not know", f, c)
			}
		}
	}
}

// The hand-written shipping address reader agrees with encoding/json on
// everything it accepts, and accepts what PostgreSQL sends for the
// addresses we write.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{
		`{"locality": "London", "postal_code": "SW1Y 4JH", "recipient": "Ada Lovelace", "region_code": "GB", "address_lines": ["12 St James Square", "Flat 2"]}`,
		`{}`, ` { } `, `{"address_lines": []}`, `{"recipient": "Zoë 東京"}`, `{"administrative_area": "CA"}`,
		`{"recipient": "a\"b"}`, `{"Recipient": "x"}`, `{"recipient": null}`, `{"address_lines": null}`, `null`,
		`{"recipient": "a", "recipient": "b"}`, `{"recipient": 5}`, `{"recipient": "a",}`, `{"recipient": "a"} x`,
		`{"address_lines": ["a",]}`, `{"extra": "x"}`, "{\"recipient\": \"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := parseAddress(b)
		if !ok {
			return
		}
		var want *order.Address
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("parseAddress accepted %q, which encoding/json refuses: %v", b, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("parseAddress(%q) = %+v, encoding/json reads %+v", b, got, want)
		}
	})
}

func TestParseAddressReadsWhatWeWrite(t *testing.T) {
	for _, s := range []string{
		`{"locality": "London", "postal_code": "SW1Y 4JH", "recipient": "Ada Lovelace", "region_code": "GB", "address_lines": ["12 St James Square"]}`,
		`{}`, `{"address_lines": []}`, `{"recipient": "Zoë 東京"}`,
	} {
		if _, ok := parseAddress([]byte(s)); !ok {
			t.Errorf("parseAddress(%s) fell back to encoding/json", s)
		}
	}
}

// The hand-written line items reader agrees with the encoding/json
// fallback on everything it accepts.
func FuzzParseLines(f *testing.F) {
	for _, s := range []string{
		`[["SKU-1", "Mug", 2, 1200], ["SKU-2", "Tea", 1, 550]]`, "[[\"a\", \"b\", 1, 0], \n [\"c\", \"d\", 10000, 99]]",
		`[]`, `[["a", "b\"c", 1, 2]]`, `[["a", "b", 1.5, 2]]`, `[["a", "b", 01, 2]]`, `[["a", "b", -1, 2]]`,
		`[["a", "b", 1]]`, `[["a", "b", 1, 2, 3]]`, `[["a", "b", 99999999999, 2]]`, `null`, `[null]`, `[["a", "b", 1, 2]] x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := parseLines(b)
		if !ok {
			return
		}
		var arrays [][]json.RawMessage
		if err := json.Unmarshal(b, &arrays); err != nil {
			t.Fatalf("parseLines accepted %q, which encoding/json refuses: %v", b, err)
		}
		want := make([]order.LineItem, len(arrays))
		for i, a := range arrays {
			if len(a) != 4 {
				t.Fatalf("parseLines accepted %q: %d values in a line", b, len(a))
			}
			l := &want[i]
			for j, dst := range []any{&l.SKU, &l.Name, &l.Quantity, &l.UnitPriceMinor} {
				if err := json.Unmarshal(a[j], dst); err != nil {
					t.Fatalf("parseLines accepted %q, which encoding/json refuses: %v", b, err)
				}
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("parseLines(%q) = %+v, encoding/json reads %+v", b, got, want)
		}
	})
}

// The hand-written timestamptz reader agrees with the driver's on all it
// accepts, and accepts what PostgreSQL writes in UTC.
func FuzzParseUTCTime(f *testing.F) {
	for _, s := range []string{
		"2026-11-26 14:06:33.123456+00", "2026-11-26 14:06:33+00", "2026-11-26 14:06:33.1+00", "0001-01-01 00:00:00+00",
		"9999-12-31 23:59:59.999999+00", "2024-02-29 00:00:00+00", "2023-02-29 00:00:00+00", "2026-13-01 00:00:00+00",
		"2026-11-26 24:00:00+00", "2026-11-26 14:06:60+00", "2026-11-26 14:06:33.+00", "2026-11-26 14:06:33.1234567891+00",
		"2026-11-26 14:06:33.123456+01", "2026-11-26T14:06:33Z", "12026-11-26 14:06:33+00", "2026-11-26 14:06:33.12a+00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseUTCTime(s)
		if !ok {
			return
		}
		want, err := pgdriver.ParseTime(s)
		if err != nil || !got.Equal(want) || got.Location() != want.Location() {
			t.Fatalf("parseUTCTime(%q) = %v, pgdriver.ParseTime: %v, %v", s, got, want, err)
		}
	})
}

func TestParseUTCTimeReadsPostgreSQL(t *testing.T) {
	for _, s := range []string{"2026-11-26 14:06:33.123456+00", "2026-11-26 14:06:33+00", "0001-01-01 00:00:00+00", "2026-11-26 14:06:33.5+00"} {
		if _, ok := parseUTCTime(s); !ok {
			t.Errorf("parseUTCTime(%q) left it to the driver", s)
		}
	}
}
