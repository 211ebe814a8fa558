// Package serve runs a gRPC API and its HTTP/JSON gateway from one process,
// with health endpoints and graceful shutdown. The gateway reaches the gRPC
// server over a loopback connection, so interceptors run for HTTP calls too.
package serve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/omsdev/oms/pkg/metrics"
)

// API describes a service to serve.
type API struct {
	Name     string
	GRPCAddr string
	HTTPAddr string
	// Register adds the service implementations to the gRPC server.
	Register func(*grpc.Server)
	// Gateway registers the HTTP handlers, which call conn.
	Gateway        func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error
	GatewayOptions []runtime.ServeMuxOption
	// Ready reports whether dependencies answer; nil means always ready.
	Ready func(context.Context) error
	// MaxBodyBytes bounds HTTP request bodies; larger ones get 413.
	MaxBodyBytes int64
	// DrainTimeout bounds graceful shutdown.
	DrainTimeout time.Duration
	Log          *slog.Logger
}

// Server is an API listening on its ports.
type Server struct {
	api      API
	grpcLis  net.Listener
	httpLis  net.Listener
	draining atomic.Bool
}

// Listen binds both ports, so a port clash fails before anything starts.
func Listen(a API) (*Server, error) {
	gl, err := net.Listen("tcp", a.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("%s: gRPC listen on %s: %w", a.Name, a.GRPCAddr, err)
	}
	hl, err := net.Listen("tcp", a.HTTPAddr)
	if err != nil {
		gl.Close()
		return nil, fmt.Errorf("%s: HTTP listen on %s: %w", a.Name, a.HTTPAddr, err)
	}
	if a.DrainTimeout <= 0 {
		a.DrainTimeout = 20 * time.Second
	}
	return &Server{api: a, grpcLis: gl, httpLis: hl}, nil
}

// GRPCAddr and HTTPAddr are the bound addresses.
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// Serve runs until ctx ends, then drains: readiness turns false, new work is
// refused, and requests in flight finish within DrainTimeout.
func (s *Server) Serve(ctx context.Context) error {
	a, log := s.api, s.api.Log
	gs := grpc.NewServer(
		grpc.StatsHandler(otelgrpc.NewServerHandler()),
		grpc.ChainUnaryInterceptor(metrics.GRPC(a.Name), correlationInterceptor, errorInterceptor(log)),
	)
	a.Register(gs)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)

	conn, err := grpc.NewClient(loopback(s.GRPCAddr()),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler()))
	if err != nil {
		return fmt.Errorf("%s: gateway connection: %w", a.Name, err)
	}
	defer conn.Close()
	opts := append([]runtime.ServeMuxOption{
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: false},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false}, // unknown fields are errors
		}),
		runtime.WithIncomingHeaderMatcher(incomingHeaders),
		runtime.WithOutgoingHeaderMatcher(outgoingHeaders),
		runtime.WithMiddlewares(routeLabel),
	}, a.GatewayOptions...)
	gw := runtime.NewServeMux(opts...)
	if err := a.Gateway(ctx, gw, conn); err != nil {
		return fmt.Errorf("%s: register gateway: %w", a.Name, err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", metrics.Handler())
	mux.Handle("/", otelhttp.NewHandler(limitBody(gw, a.MaxBodyBytes), a.Name))
	hsrv := &http.Server{Handler: metrics.HTTP(a.Name, mux), ReadHeaderTimeout: 10 * time.Second}

	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(s.grpcLis) }()
	go func() { errc <- hsrv.Serve(s.httpLis) }()
	log.Info("serving", "grpc", s.GRPCAddr(), "http", s.HTTPAddr())

	select {
	case err := <-errc:
		gs.Stop()
		hsrv.Close()
		return fmt.Errorf("%s: server stopped: %w", a.Name, err)
	case <-ctx.Done():
	}

	log.Info("draining", "timeout", a.DrainTimeout)
	s.draining.Store(true)
	hs.Shutdown() // gRPC health: NOT_SERVING
	dctx, cancel := context.WithTimeout(context.Background(), a.DrainTimeout)
	defer cancel()
	httpErr := hsrv.Shutdown(dctx) // waits for HTTP requests in flight, which wait on gRPC
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-dctx.Done():
		gs.Stop()
	}
	log.Info("stopped")
	if httpErr != nil && !errors.Is(httpErr, context.DeadlineExceeded) {
		return httpErr
	}
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	if s.api.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.api.Ready(ctx); err != nil {
			s.api.Log.WarnContext(ctx, "not ready", "err", err)
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
	}
	io.WriteString(w, "ok\n")
}

// routeLabel labels HTTP metrics with the gateway's route pattern.
func routeLabel(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		if p, ok := runtime.HTTPPattern(r.Context()); ok {
			metrics.SetRoute(r.Context(), p.String())
		}
		next(w, r, params)
	}
}

// HealthCheckCommand runs the `healthcheck` subcommand when args (os.Args)
// ask for it, for container runtimes without curl or a shell, and exits.
func HealthCheckCommand(args []string, name, addr string) {
	if len(args) < 2 || args[1] != "healthcheck" {
		return
	}
	if err := HealthCheck(addr); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// HealthCheck asks the service listening on addr whether it is alive.
func HealthCheck(addr string) error {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + loopback(addr) + "/healthz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: %s", resp.Status)
	}
	return nil
}

// loopback turns a bound address into one this process can dial.
func loopback(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// incomingHeaders forwards the headers the services read as gRPC metadata.
func incomingHeaders(key string) (string, bool) {
	switch k := strings.ToLower(key); k {
	case "idempotency-key", "x-request-id", "x-correlation-id", "traceparent", "tracestate":
		return k, true
	}
	return runtime.DefaultHeaderMatcher(key)
}

// outgoingHeaders passes the correlation id back to HTTP clients and keeps
// other gRPC response metadata to itself.
func outgoingHeaders(key string) (string, bool) {
	if key == correlationHeader {
		return "X-Correlation-Id", true
	}
	return "", false
}

// limitBody answers 413 for bodies over max instead of letting a truncated
// body surface as a JSON syntax error.
func limitBody(next http.Handler, max int64) http.Handler {
	if max <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		if r.ContentLength > max {
			tooLarge(w, max)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			tooLarge(w, max)
			return
		}
		if err != nil {
			http.Error(w, "cannot read request body", http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

func tooLarge(w http.ResponseWriter, max int64) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusRequestEntityTooLarge)
	fmt.Fprintf(w, `{"code":3,"message":"request body exceeds %d bytes","details":[]}`+"\n", max)
}
