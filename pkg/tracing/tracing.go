// Package tracing sets up OpenTelemetry from the standard OTEL_* variables
// and carries trace context through queue messages. Tracing is off unless
// OTEL_TRACES_EXPORTER is otlp or console, or an OTLP endpoint is set.
package tracing

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// enabled is set once Setup has installed an exporter.
var enabled atomic.Bool

// Enabled reports whether spans are recorded and exported (Setup found
// an exporter). When they are not, servers skip span instrumentation and
// only continue a caller's trace context (ContinueRemote), which is all
// that logs and queue messages use of it.
func Enabled() bool { return enabled.Load() }

// ContinueRemote returns ctx carrying the W3C trace context get (a header
// or metadata lookup) holds, if it holds a traceparent: what the span
// instrumentation does for a call when no spans are recorded, so log
// lines carry the caller's trace id and messages pass it on.
func ContinueRemote(ctx context.Context, get func(key string) string) context.Context {
	if get("traceparent") == "" {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, getter(get))
}

type getter func(string) string

func (g getter) Get(key string) string { return g(key) }
func (getter) Set(string, string)      {}
func (getter) Keys() []string          { return nil }

// Tracer is the services' tracer.
func Tracer() trace.Tracer { return otel.Tracer("github.com/omsdev/oms") }

// Setup installs the global tracer provider and W3C propagation, and
// returns a function that flushes and stops it.
func Setup(ctx context.Context, service string) (func(context.Context) error, error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	var exp sdktrace.SpanExporter
	var err error
	switch exporter(os.Getenv) {
	case "otlp":
		exp, err = otlptracegrpc.New(ctx) // endpoint, headers, TLS from OTEL_EXPORTER_OTLP_*
	case "console":
		exp, err = stdouttrace.New(stdouttrace.WithWriter(os.Stderr))
	case "none":
		return func(context.Context) error { return nil }, nil
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: want otlp, console or none", os.Getenv("OTEL_TRACES_EXPORTER"))
	}
	if err != nil {
		return nil, fmt.Errorf("trace exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(serviceName(service))))
	if err != nil {
		return nil, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	enabled.Store(true)
	return tp.Shutdown, nil
}

func exporter(getenv func(string) string) string {
	if e := getenv("OTEL_TRACES_EXPORTER"); e != "" {
		return e
	}
	if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
		return "otlp"
	}
	return "none"
}

func serviceName(def string) string {
	if s := os.Getenv("OTEL_SERVICE_NAME"); s != "" {
		return s
	}
	return "oms-" + def
}

// Inject writes ctx's trace context into message metadata (the W3C
// traceparent, and tracestate when set): one or two SQS attributes.
func Inject(ctx context.Context, metadata map[string]string) {
	otel.GetTextMapPropagator().Inject(ctx, propagation.MapCarrier(metadata))
}

// Extract returns ctx with the trace context carried by message metadata.
func Extract(ctx context.Context, metadata map[string]string) context.Context {
	return otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier(metadata))
}
