package tracing

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
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

// Without span recording, a caller's traceparent still becomes the
// context's span context, as the instrumentation would make it.
func TestContinueRemote(t *testing.T) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	h := map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	ctx := ContinueRemote(context.Background(), func(k string) string { return h[k] })
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() || !sc.IsRemote() || sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || sc.SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("span context %+v", sc)
	}
	if ctx := ContinueRemote(context.Background(), func(string) string { return "" }); trace.SpanContextFromContext(ctx).IsValid() {
		t.Error("a span context without a traceparent")
	}
}
