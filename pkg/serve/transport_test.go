package serve

import (
	"bufio"
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
	"sync"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omsdev/oms/pkg/logging"
	omsv1 "github.com/omsdev/oms/proto/oms/v1"
)

// fakeQuery answers GetOrder at once, or fails as the name asks.
type fakeQuery struct {
	omsv1.UnimplementedOrderQueryServiceServer
}

func (fakeQuery) GetOrder(ctx context.Context, req *omsv1.GetOrderRequest) (*omsv1.Order, error) {
	switch req.Name {
	case "orders/limited":
		st, err := status.New(codes.ResourceExhausted, "slow down").
			WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)})
		if err != nil {
			return nil, err
		}
		return nil, st.Err()
	case "orders/panic":
		panic("handler secret detail")
	case "orders/big":
		return &omsv1.Order{Name: strings.Repeat("x", 5<<20)}, nil
	}
	return &omsv1.Order{Name: req.Name}, nil
}

// syncBuffer collects log output written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start serves a (fakeQuery by default) on loopback until the test ends.
func start(t *testing.T, a API) *Server {
	t.Helper()
	if a.Name == "" {
		a.Name = "test"
	}
	a.GRPCAddr, a.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	if a.Settings.AdminAddr == "" {
		a.Settings.AdminAddr = "127.0.0.1:0"
	}
	if a.Register == nil {
		a.Register = func(s grpc.ServiceRegistrar) { omsv1.RegisterOrderQueryServiceServer(s, fakeQuery{}) }
	}
	a.Gateway = func(ctx context.Context, mux *runtime.ServeMux, conn grpc.ClientConnInterface) error {
		return omsv1.RegisterOrderQueryServiceHandlerClient(ctx, mux, omsv1.NewOrderQueryServiceClient(conn))
	}
	if a.Log == nil {
		a.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a.DrainTimeout = 5 * time.Second
	srv, err := Listen(a)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	if err := waitFor(5*time.Second, func() error { return HealthCheck(srv.HTTPAddr()) }); err != nil {
		t.Fatalf("server never became healthy: %v", err)
	}
	return srv
}

// waitFor retries f until it succeeds or d has passed.
func waitFor(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// closedWithin reports whether the server closes c within d, reading and
// discarding whatever it sends first.
func closedWithin(c net.Conn, d time.Duration) error {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("still open after %s", d)
	}
	return nil // EOF (io.Copy reports nil) or a reset
}

// A body sent a byte a second is cut at HTTP_READ_TIMEOUT rather than
// holding the connection and its handler.
func TestSlowBodyIsCut(t *testing.T) {
	t.Parallel()
	s := DefaultSettings()
	s.HTTP.ReadHeaderTimeout, s.HTTP.ReadTimeout = 300*time.Millisecond, 300*time.Millisecond
	srv := start(t, API{Settings: s, MaxBodyBytes: 1024})

	c, err := net.Dial("tcp", srv.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "POST /v1/orders/1 HTTP/1.1\r\nHost: oms\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if _, err := c.Write([]byte("x")); err != nil {
					return
				}
			}
		}
	}()
	// 100 bytes would take 100 s; the generous bound only guards a hang.
	if err := closedWithin(c, 5*time.Second); err != nil {
		t.Errorf("slow body: %v", err)
	}
}

// A keep-alive connection left idle is closed after HTTP_IDLE_TIMEOUT.
func TestIdleKeepAliveIsClosed(t *testing.T) {
	t.Parallel()
	s := DefaultSettings()
	s.HTTP.IdleTimeout = 300 * time.Millisecond
	srv := start(t, API{Settings: s})

	c, err := net.Dial("tcp", srv.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: oms\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("first request: %s, close %v; want 200 and keep-alive", resp.Status, resp.Close)
	}
	if err := closedWithin(c, 5*time.Second); err != nil {
		t.Errorf("idle keep-alive: %v", err)
	}
}

// Beyond HTTP_MAX_CONNS a connection waits until another closes.
func TestMaxConns(t *testing.T) {
	t.Parallel()
	s := DefaultSettings()
	s.HTTP.MaxConns = 2
	srv := start(t, API{Settings: s})

	get := func(c net.Conn, wait time.Duration) error {
		fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: oms\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(wait))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	var open []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", srv.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := get(c, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	third, err := net.Dial("tcp", srv.HTTPAddr()) // the kernel accepts; the server does not yet
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if err := get(third, 300*time.Millisecond); err == nil {
		t.Fatal("a third connection was served with HTTP_MAX_CONNS=2")
	}
	open[0].Close()
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(third), nil)
	if err != nil {
		t.Fatalf("third connection after one closed: %v", err)
	}
	resp.Body.Close()
}

// TLS on both public ports: the certificate is reloaded when its files
// change (a broken pair is logged and the good one kept), the gRPC port
// requires client certificates, and the gateway still works through its
// in-memory connection.
func TestTLS(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	certFile, keyFile := pki.writePair(1)
	s := DefaultSettings()
	s.TLSCertFile, s.TLSKeyFile = certFile, keyFile
	s.TLSClientCAFile, s.GRPCClientAuth = pki.CAFile, ClientAuthRequire
	logs := &syncBuffer{}
	srv := start(t, API{Settings: s, Log: slog.New(slog.NewJSONHandler(logs, nil))})

	served := func() (int64, error) {
		c, err := tls.Dial("tcp", srv.HTTPAddr(), &tls.Config{RootCAs: pki.pool})
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
	}
	servedIs := func(want int64) func() error {
		return func() error {
			got, err := served()
			if err == nil && got != want {
				err = fmt.Errorf("serves certificate %d, want %d", got, want)
			}
			return err
		}
	}
	if err := servedIs(1)(); err != nil {
		t.Fatal(err)
	}
	if _, err := tls.Dial("tcp", srv.HTTPAddr(), &tls.Config{RootCAs: pki.pool, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Error("TLS 1.1 accepted")
	}

	// The gateway, over HTTP/2, while gRPC clients need certificates.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pki.pool}, ForceAttemptHTTP2: true,
	}}
	resp, err := client.Get("https://" + srv.HTTPAddr() + "/v1/orders/1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "orders/1") || resp.ProtoMajor != 2 {
		t.Errorf("gateway over TLS: %s %s %s", resp.Proto, resp.Status, body)
	}
	if resp, err := http.Get("http://" + srv.HTTPAddr() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP on the TLS port: %s", resp.Status)
		}
	}
	if err := HealthCheck(srv.HTTPAddr()); err != nil {
		t.Errorf("HealthCheck over TLS: %v", err)
	}
	if resp, err := http.Get("http://" + srv.AdminAddr() + "/metrics"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("admin port stays plaintext: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	grpcCall := func(certs ...tls.Certificate) error {
		conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(
			&tls.Config{RootCAs: pki.pool, Certificates: certs})))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := grpcCall(); err == nil {
		t.Error("gRPC client without a certificate accepted")
	}
	if err := grpcCall(newTestPKI(t).issue(5, true)); err == nil {
		t.Error("gRPC client with a certificate from another CA accepted")
	}
	if err := grpcCall(pki.issue(3, true)); err != nil {
		t.Errorf("gRPC client with a certificate: %v", err)
	}

	// Rotation: a new pair on disk is served on new connections.
	pki.writePair(2)
	if err := waitFor(5*time.Second, servedIs(2)); err != nil {
		t.Errorf("after rotation: %v", err)
	}
	// A broken pair: logged, and the last good one kept.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = waitFor(5*time.Second, func() error {
		if err := servedIs(2)(); err != nil {
			return err
		}
		if !strings.Contains(logs.String(), "does not load") {
			return errors.New("the broken pair is not logged")
		}
		return nil
	})
	if err != nil {
		t.Errorf("after a broken pair: %v\n%s", err, logs)
	}
}

// The caller's interceptors run inside the correlation id and error
// interceptors: their statuses reach HTTP clients with the right headers,
// their panics are hidden.
func TestCallerInterceptorsAndErrorHeaders(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var unaryIDs, streamIDs []string
	auth := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		mu.Lock()
		unaryIDs = append(unaryIDs, logging.CorrelationID(ctx))
		mu.Unlock()
		md, _ := metadata.FromIncomingContext(ctx)
		switch v := md.Get("authorization"); {
		case len(v) == 0:
			return nil, status.Error(codes.Unauthenticated, "missing bearer token")
		case v[0] == "Bearer panic":
			panic("interceptor secret detail")
		case v[0] != "Bearer good":
			return nil, status.Error(codes.Unauthenticated, `token "expired"`)
		}
		return h(ctx, req)
	}
	streams := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		mu.Lock()
		streamIDs = append(streamIDs, logging.CorrelationID(ss.Context()))
		mu.Unlock()
		return h(srv, ss)
	}
	reject := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Reject") != "" {
				http.Error(w, "rejected", http.StatusTeapot)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	s := DefaultSettings()
	s.GRPCReflection = false
	srv := start(t, API{Settings: s, MaxBodyBytes: 1024,
		UnaryInterceptors: []grpc.UnaryServerInterceptor{auth}, StreamInterceptors: []grpc.StreamServerInterceptor{streams},
		HTTPMiddleware: reject})
	base := "http://" + srv.HTTPAddr()

	for _, tc := range []struct {
		name, path, auth string
		code             int
		header, want     string
	}{
		{"no token", "/v1/orders/1", "", 401, "WWW-Authenticate", `Bearer realm="oms"`},
		{"bad token", "/v1/orders/1", "Bearer bad", 401, "WWW-Authenticate", `Bearer realm="oms", error="invalid_token", error_description="token expired"`},
		{"rate limited", "/v1/orders/limited", "Bearer good", 429, "Retry-After", "2"},
		{"ok", "/v1/orders/1", "Bearer good", 200, "X-Correlation-Id", ""},
		{"handler panic", "/v1/orders/panic", "Bearer good", 500, "", ""},
		{"interceptor panic", "/v1/orders/1", "Bearer panic", 500, "", ""},
	} {
		req, _ := http.NewRequest("GET", base+tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || strings.Contains(string(body), "secret") {
			t.Errorf("%s: %d %s, want %d without internal detail", tc.name, resp.StatusCode, body, tc.code)
		}
		if got := resp.Header.Get(tc.header); tc.header != "" && (got == "" || (tc.want != "" && got != tc.want)) {
			t.Errorf("%s: %s: %q, want %q", tc.name, tc.header, got, tc.want)
		}
	}

	// HTTPMiddleware runs inside the body limit.
	for _, tc := range []struct {
		body string
		code int
	}{{"{}", http.StatusTeapot}, {strings.Repeat("x", 2048), http.StatusRequestEntityTooLarge}} {
		req, _ := http.NewRequest("POST", base+"/v1/orders/1", strings.NewReader(tc.body))
		req.Header.Set("X-Reject", "yes")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("HTTPMiddleware with a %d-byte body: %d, want %d", len(tc.body), resp.StatusCode, tc.code)
		}
	}

	// Streams: the caller's interceptor sees a correlation id; reflection
	// is off as configured.
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("health Watch: %v", err)
	}
	if md, err := watch.Header(); err != nil || len(md.Get(correlationHeader)) == 0 {
		t.Errorf("stream response header lacks %s: %v %v", correlationHeader, md, err)
	}
	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err == nil {
		refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		_, err = refl.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("reflection with GRPCReflection=false: %v, want Unimplemented", err)
	}

	mu.Lock()
	defer mu.Unlock()
	for _, ids := range [][]string{unaryIDs, streamIDs} {
		if len(ids) == 0 || ids[0] == "" {
			t.Errorf("caller's interceptor saw correlation ids %q", ids)
		}
	}
}

// With GRPCReflection, reflection answers on the public port.
func TestReflection(t *testing.T) {
	t.Parallel()
	srv := start(t, API{Settings: DefaultSettings()})
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := refl.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(resp.String(), "oms.v1.OrderQueryService") {
		t.Errorf("reflection lists %v", resp)
	}
}

// The gateway takes responses as large as the server may send (8 MiB by
// default, above gRPC's 4 MiB default for clients), and no larger.
func TestGatewayResponseLimit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		send int
		ok   bool
	}{{0, true}, {1 << 20, false}} {
		s := DefaultSettings()
		if tc.send > 0 {
			s.GRPCMaxSendBytes = tc.send
		}
		srv := start(t, API{Settings: s})
		resp, err := http.Get("http://" + srv.HTTPAddr() + "/v1/orders/big")
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got := resp.StatusCode == http.StatusOK && n > 5<<20; got != tc.ok {
			t.Errorf("GRPCMaxSendBytes %d: a 5 MiB response gave %s (%d bytes)", s.GRPCMaxSendBytes, resp.Status, n)
		}
	}
}

// With RequireBearer, a request without a token is answered 401 before its
// body is read: the body here is never sent, and the answer comes anyway.
func TestRequireBearerAnswersBeforeTheBody(t *testing.T) {
	t.Parallel()
	srv := start(t, API{Settings: DefaultSettings(), MaxBodyBytes: 1 << 20, RequireBearer: true})
	c, err := net.Dial("tcp", srv.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "POST /v1/orders/1 HTTP/1.1\r\nHost: oms\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer without the body: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != `Bearer realm="oms"` {
		t.Errorf("%s, WWW-Authenticate %q", resp.Status, resp.Header.Get("WWW-Authenticate"))
	}
	// Health stays open, and a request with a token reaches the gateway.
	if err := HealthCheck(srv.HTTPAddr()); err != nil {
		t.Error(err)
	}
	req, _ := http.NewRequest("GET", "http://"+srv.HTTPAddr()+"/v1/orders/1", nil)
	req.Header.Set("Authorization", "Bearer x")
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode == http.StatusUnauthorized {
		t.Error("a request with a token was stopped before the gateway")
	}
}
