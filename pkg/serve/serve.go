// Package serve runs a gRPC API and its HTTP/JSON gateway from one process,
// with an admin port for health and metrics, TLS, and graceful shutdown.
// The gateway calls the services in process, through the gRPC server's own
// interceptor chain (gateway.go), so interceptors run for HTTP calls too.
package serve

import (
	"bytes"
	"context"
	"crypto/tls"
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
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/omsdev/oms/pkg/metrics"
	"github.com/omsdev/oms/pkg/tracing"
)

// API describes a service to serve.
type API struct {
	Name string
	// GRPCAddr and HTTPAddr, when set, override Settings' addresses.
	GRPCAddr string
	HTTPAddr string
	// Settings are the transport settings, from LoadSettings or
	// DefaultSettings. Zero limits take the defaults; an empty AdminAddr
	// serves no admin port.
	Settings Settings
	// Register adds the service implementations to the gRPC server (and
	// to the gateway's in-process connection).
	Register func(grpc.ServiceRegistrar)
	// Gateway registers the HTTP handlers, which call conn: with the
	// generated RegisterXHandlerClient(ctx, mux, NewXClient(conn)).
	Gateway        func(ctx context.Context, mux *runtime.ServeMux, conn grpc.ClientConnInterface) error
	GatewayOptions []runtime.ServeMuxOption
	// UnaryInterceptors and StreamInterceptors run, in order, inside the
	// metrics, correlation id and error interceptors: a status they return
	// reaches the client as it is, a panic or a plain error is hidden.
	UnaryInterceptors  []grpc.UnaryServerInterceptor
	StreamInterceptors []grpc.StreamServerInterceptor
	// HTTPMiddleware wraps the gateway's handler, inside the body limit
	// (for a service's own header checks).
	HTTPMiddleware func(http.Handler) http.Handler
	// RequireBearer refuses HTTP API requests without a bearer token with
	// 401 before their body is read, so an anonymous caller cannot make
	// the server buffer bodies. The token itself is verified by the gRPC
	// interceptors.
	RequireBearer bool
	// Ready reports whether dependencies answer; nil means always ready.
	Ready func(context.Context) error
	// MaxBodyBytes bounds HTTP request bodies; larger ones get 413.
	MaxBodyBytes int64
	// DrainTimeout bounds graceful shutdown.
	DrainTimeout time.Duration
	Log          *slog.Logger
}

// streamWorkers is how many goroutines serve gRPC calls (see Serve).
const streamWorkers = 32

// Server is an API listening on its ports.
type Server struct {
	api      API
	grpcLis  net.Listener
	httpLis  net.Listener
	adminLis net.Listener // nil without an admin port
	grpcTLS  *tls.Config  // nil for plaintext
	draining atomic.Bool
}

// Listen binds the ports, so a port clash or a bad key pair fails before
// anything starts.
func Listen(a API) (_ *Server, err error) {
	a.Settings = a.Settings.withDefaults()
	if a.GRPCAddr == "" {
		a.GRPCAddr = a.Settings.GRPCAddr
	}
	if a.HTTPAddr == "" {
		a.HTTPAddr = a.Settings.HTTPAddr
	}
	a.Settings.GRPCAddr, a.Settings.HTTPAddr = a.GRPCAddr, a.HTTPAddr
	if a.DrainTimeout <= 0 {
		a.DrainTimeout = 20 * time.Second
	}
	if a.Log == nil {
		a.Log = slog.Default()
	}
	if err := a.Settings.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", a.Name, err)
	}
	s := &Server{api: a}
	var httpTLS *tls.Config
	if a.Settings.tls() {
		if httpTLS, s.grpcTLS, err = serverTLS(a.Settings, a.Log); err != nil {
			return nil, fmt.Errorf("%s: %w", a.Name, err)
		}
	}
	defer func() {
		if err != nil {
			for _, l := range []net.Listener{s.grpcLis, s.httpLis, s.adminLis} {
				if l != nil {
					l.Close()
				}
			}
		}
	}()
	if s.grpcLis, err = net.Listen("tcp", a.GRPCAddr); err != nil {
		return nil, fmt.Errorf("%s: gRPC listen on %s: %w", a.Name, a.GRPCAddr, err)
	}
	if s.httpLis, err = net.Listen("tcp", a.HTTPAddr); err != nil {
		return nil, fmt.Errorf("%s: HTTP listen on %s: %w", a.Name, a.HTTPAddr, err)
	}
	s.httpLis = netutil.LimitListener(s.httpLis, a.Settings.HTTP.MaxConns)
	if httpTLS != nil {
		s.httpLis = tls.NewListener(s.httpLis, httpTLS)
	}
	if a.Settings.AdminAddr != "" {
		if s.adminLis, err = net.Listen("tcp", a.Settings.AdminAddr); err != nil {
			return nil, fmt.Errorf("%s: admin listen on %s: %w", a.Name, a.Settings.AdminAddr, err)
		}
	}
	return s, nil
}

// GRPCAddr, HTTPAddr and AdminAddr are the bound addresses (AdminAddr is
// empty without an admin port).
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }
func (s *Server) AdminAddr() string {
	if s.adminLis == nil {
		return ""
	}
	return s.adminLis.Addr().String()
}

// Serve runs until ctx ends, then drains: readiness turns false, new work is
// refused, and requests in flight finish within DrainTimeout.
func (s *Server) Serve(ctx context.Context) error {
	a, log := s.api, s.api.Log
	set := a.Settings
	// Outermost first: the error interceptor sees what the caller's
	// interceptors and the handler return. An undecodable request is
	// INVALID_ARGUMENT (codec.go); checked innermost, after the caller's
	// interceptors (authentication first).
	unary := append([]grpc.UnaryServerInterceptor{metrics.GRPC(a.Name), correlationInterceptor, errorInterceptor(log)}, a.UnaryInterceptors...)
	unary = append(unary, refuseUndecodable)
	streams := append([]grpc.StreamServerInterceptor{correlationStreamInterceptor, errorStreamInterceptor(log)}, a.StreamInterceptors...)
	var opts []grpc.ServerOption
	if tracing.Enabled() {
		opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler()))
	} else {
		// No spans to record: only carry the caller's trace context on.
		unary = append([]grpc.UnaryServerInterceptor{continueTrace}, unary...)
		streams = append([]grpc.StreamServerInterceptor{continueTraceStream}, streams...)
	}
	opts = append(opts,
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(streams...),
		grpc.ForceServerCodecV2(newRequestCodec()),
		grpc.ChainStreamInterceptor(refuseUndecodableStream),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: set.GRPCKeepaliveMinTime, PermitWithoutStream: false}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: set.GRPCMaxConnectionIdle, Time: set.GRPCKeepaliveTime, Timeout: set.GRPCKeepaliveTimeout,
		}),
		grpc.MaxConcurrentStreams(set.GRPCMaxConcurrentStreams),
		// Calls run on long-lived goroutines, whose stacks have grown
		// already, instead of a new goroutine each (whose stack would grow
		// by copying, call after call); more calls than workers still
		// get goroutines of their own.
		grpc.NumStreamWorkers(streamWorkers),
		grpc.MaxRecvMsgSize(set.GRPCMaxRecvBytes),
		grpc.MaxSendMsgSize(set.GRPCMaxSendBytes),
	)
	if s.grpcTLS != nil {
		opts = append(opts, grpc.Creds(serverCreds{credentials.NewTLS(s.grpcTLS)}))
	}
	gs := grpc.NewServer(opts...)
	reg := &registrar{server: gs, methods: map[string]unaryMethod{}}
	a.Register(reg)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	if set.GRPCReflection {
		reflection.Register(gs)
	}

	// Streaming calls from the gateway go over in-memory gRPC connections
	// (dialled on first use); unary calls are made in process.
	inproc := newInProcessListener()
	// Enough connections that MaxConcurrentStreams, per connection, does
	// not cap the HTTP port below its own connection limit.
	n := min(max(set.HTTP.MaxConns/int(set.GRPCMaxConcurrentStreams), 1), 16)
	conn, err := inproc.dial(n, grpc.WithDefaultCallOptions(
		grpc.MaxCallRecvMsgSize(set.GRPCMaxSendBytes), // what the server may send
		grpc.MaxCallSendMsgSize(set.GRPCMaxRecvBytes),
	))
	if err != nil {
		return fmt.Errorf("%s: gateway connection: %w", a.Name, err)
	}
	defer conn.Close()
	streamErrs := &unaryStreamErrors{} // streamerrors.go
	gwOpts := append([]runtime.ServeMuxOption{
		runtime.WithMarshalerOption(runtime.MIMEWildcard, JSONMarshaler()),
		runtime.WithIncomingHeaderMatcher(incomingHeaders),
		runtime.WithOutgoingHeaderMatcher(outgoingHeaders),
		runtime.WithMiddlewares(routeLabel, streamErrs.middleware),
		runtime.WithErrorHandler(httpError),
	}, a.GatewayOptions...)
	gw := runtime.NewServeMux(gwOpts...)
	streamErrs.mux = gw
	gwConn := &gatewayConn{methods: reg.methods, intercept: chainUnary(unary),
		maxRecv: set.GRPCMaxRecvBytes, maxSend: set.GRPCMaxSendBytes, streams: conn}
	if err := a.Gateway(ctx, gw, gwConn); err != nil {
		return fmt.Errorf("%s: register gateway: %w", a.Name, err)
	}
	var api http.Handler = gw
	if a.HTTPMiddleware != nil {
		api = a.HTTPMiddleware(api)
	}

	// The public port keeps /healthz and /readyz (harmless, and what a load
	// balancer may probe) and serves the OpenAPI document, none of them
	// behind requireBearer; /metrics is on the admin port only.
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET "+openAPIPath, servedOpenAPI) // openapi.go
	api = limitBody(api, a.MaxBodyBytes)
	if a.RequireBearer {
		api = requireBearer(api)
	}
	if tracing.Enabled() {
		api = otelhttp.NewHandler(api, a.Name)
	} else {
		api = continueTraceHTTP(api)
	}
	mux.Handle("/", api)
	hsrv := NewHTTPServer(metrics.HTTP(a.Name, mux), set.HTTP)
	hsrv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug) // TLS handshake noise from scanners

	var asrv *http.Server
	if s.adminLis != nil {
		admin := http.NewServeMux()
		admin.HandleFunc("GET /healthz", healthz)
		admin.HandleFunc("GET /readyz", s.readyz)
		admin.Handle("GET /metrics", metrics.Handler())
		asrv = NewHTTPServer(admin, set.HTTP)
	}

	errc := make(chan error, 4)
	go func() { errc <- gs.Serve(s.grpcLis) }()
	go func() { errc <- gs.Serve(inproc) }()
	go func() { errc <- hsrv.Serve(s.httpLis) }()
	if asrv != nil {
		go func() { errc <- asrv.Serve(s.adminLis) }()
	}
	log.Info("serving", "grpc", s.GRPCAddr(), "http", s.HTTPAddr(), "admin", s.AdminAddr(),
		"tls", set.tls(), "grpc_client_auth", set.GRPCClientAuth)
	if set.plaintextBeyondLoopback() {
		log.Warn("serving plaintext beyond loopback (ALLOW_PLAINTEXT): a service mesh must encrypt this traffic")
	}

	select {
	case err := <-errc:
		gs.Stop()
		hsrv.Close()
		if asrv != nil {
			asrv.Close()
		}
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
	if asrv != nil {
		asrv.Close() // last: probes see 503 until the end
	}
	log.Info("stopped")
	if httpErr != nil && !errors.Is(httpErr, context.DeadlineExceeded) {
		return httpErr
	}
	return nil
}

func healthz(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") }

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

// JSONMarshaler is the gateway's JSON: protojson, unpopulated fields left
// out, unknown fields in a request refused. A service may wrap it (in
// GatewayOptions, with runtime.WithMarshalerOption) to encode its own
// responses faster, to the same JSON.
func JSONMarshaler() *runtime.JSONPb {
	return &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: false},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false}, // unknown fields are errors
	}
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

// HealthCheck asks the service listening on addr whether it is alive. A
// port that answers plain HTTP with "HTTP request to an HTTPS server" is
// asked again over TLS, without verifying the certificate: this is the
// process checking itself on loopback, and the name the certificate holds
// is not 127.0.0.1.
func HealthCheck(addr string) error {
	tr := &http.Transport{DisableKeepAlives: true}
	c := http.Client{Timeout: 3 * time.Second, Transport: tr}
	target := loopback(addr) + "/healthz"
	resp, err := c.Get("http://" + target)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	resp.Body.Close()
	if resp.StatusCode == http.StatusBadRequest && bytes.Contains(body, []byte("HTTP request to an HTTPS server")) {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // see above
		if resp, err = c.Get("https://" + target); err != nil {
			return err
		}
		resp.Body.Close()
	}
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
	switch key { // the gateway passes keys canonicalized: no lower-casing to do
	case "Idempotency-Key":
		return "idempotency-key", true
	case "X-Request-Id":
		return "x-request-id", true
	case "X-Correlation-Id":
		return "x-correlation-id", true
	case "Traceparent":
		return "traceparent", true
	case "Tracestate":
		return "tracestate", true
	}
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
