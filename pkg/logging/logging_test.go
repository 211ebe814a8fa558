package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestCorrelationIDOnEveryLine(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, "ingest", "info").With("component", "x")
	ctx := WithCorrelationID(context.Background(), "abc")
	log.InfoContext(ctx, "hello", "n", 1)
	log.DebugContext(ctx, "hidden")
	var rec map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &rec); err != nil {
		t.Fatalf("not one JSON line: %q", buf.String())
	}
	if rec["correlation_id"] != "abc" || rec["service"] != "ingest" || rec["component"] != "x" || rec["msg"] != "hello" {
		t.Errorf("record = %v", rec)
	}
}

func TestTraceIDOnLines(t *testing.T) {
	var buf bytes.Buffer
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	New(&buf, "processor", "info").InfoContext(ctx, "applied")
	if !bytes.Contains(buf.Bytes(), []byte(`"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"`)) {
		t.Errorf("no trace id: %s", buf.String())
	}
}

func TestCorrelationHelpers(t *testing.T) {
	if got := CorrelationFromTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("traceparent: %q", got)
	}
	if CorrelationFromTraceparent("junk") != "" {
		t.Error("junk traceparent accepted")
	}
	if SanitizeCorrelationID("has space") != "" || SanitizeCorrelationID("ok-1") != "ok-1" {
		t.Error("sanitize")
	}
	if a, b := NewCorrelationID(), NewCorrelationID(); a == b || len(a) != 32 {
		t.Errorf("ids %q %q", a, b)
	}
}
