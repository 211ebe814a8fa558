package tracing

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// A span started from a message's metadata continues the trace that
// published it.
func TestTraceCrossesMessageMetadata(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	tr := tp.Tracer("test")

	ctx, publish := tr.Start(context.Background(), "POST /v1/orders")
	md := map[string]string{"correlation_id": "c"}
	Inject(ctx, md)
	publish.End()
	if md["traceparent"] == "" {
		t.Fatalf("no traceparent in %v", md)
	}

	_, apply := tr.Start(Extract(context.Background(), md), "apply")
	apply.End()
	spans := rec.Ended()
	if len(spans) != 2 || spans[1].Parent().TraceID() != spans[0].SpanContext().TraceID() ||
		spans[1].Parent().SpanID() != spans[0].SpanContext().SpanID() {
		t.Fatalf("apply span is not a child of the publish span: %+v", spans)
	}
}

func TestExporterChoice(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{nil, "none"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, "otlp"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console"}, "console"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}, "none"},
	} {
		if got := exporter(func(k string) string { return tc.env[k] }); got != tc.want {
			t.Errorf("exporter(%v) = %s, want %s", tc.env, got, tc.want)
		}
	}
}
