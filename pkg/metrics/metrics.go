// Package metrics holds the process's Prometheus registry and the request
// metrics shared by the services.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Registry is the process's registry, with Go runtime and process metrics.
var Registry = func() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}()

// Handler serves /metrics.
func Handler() http.Handler {
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{Registry: Registry})
}

var (
	httpRequests = promauto(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oms_http_requests_total", Help: "HTTP requests by route and status code.",
	}, []string{"service", "method", "route", "code"}))
	httpDuration = promauto(prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "oms_http_request_duration_seconds", Help: "HTTP request latency by route.",
		Buckets: prometheus.DefBuckets,
	}, []string{"service", "method", "route"}))
	grpcRequests = promauto(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oms_grpc_requests_total", Help: "gRPC requests by method and status code.",
	}, []string{"service", "method", "code"}))
	grpcDuration = promauto(prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "oms_grpc_request_duration_seconds", Help: "gRPC request latency by method.",
		Buckets: prometheus.DefBuckets,
	}, []string{"service", "method"}))
)

func promauto[C prometheus.Collector](c C) C {
	Registry.MustRegister(c)
	return c
}

// Register adds collectors to the registry.
func Register(cs ...prometheus.Collector) { Registry.MustRegister(cs...) }

type routeKey struct{}

// SetRoute names the route of the request being served (such as a gateway
// pattern), so HTTP metrics are labelled by route, not by raw path.
func SetRoute(ctx context.Context, route string) {
	if p, ok := ctx.Value(routeKey{}).(*string); ok {
		*p = route
	}
}

// HTTP records every request handled by next.
func HTTP(service string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		route := ""
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), routeKey{}, &route)))
		if route == "" {
			route = "other"
		}
		method := methodLabel(r.Method)
		httpRequests.WithLabelValues(service, method, route, strconv.Itoa(sw.code)).Inc()
		httpDuration.WithLabelValues(service, method, route).Observe(time.Since(start).Seconds())
	})
}

// methodLabel is the method as a label value: a client may send any token
// as the method, and each would be a new series, so the unknown ones are
// "other".
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

type statusWriter struct {
	http.ResponseWriter
	code    int
	written bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.written {
		w.code, w.written = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.written = true
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// GRPC records every unary call.
func GRPC(service string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := h(ctx, req)
		grpcRequests.WithLabelValues(service, info.FullMethod, status.Code(err).String()).Inc()
		grpcDuration.WithLabelValues(service, info.FullMethod).Observe(time.Since(start).Seconds())
		return resp, err
	}
}
