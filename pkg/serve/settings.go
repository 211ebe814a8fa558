package serve

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/omsdev/oms/pkg/config"
)

// Settings say how an API listens: addresses, the limits of its public
// HTTP and gRPC servers, and TLS. LoadSettings reads them from these
// variables (defaults in brackets):
//
// Addresses:
//   - HTTP_ADDR, GRPC_ADDR: the public ports [per service, on loopback].
//   - ADMIN_ADDR: /metrics, /healthz and /readyz, always plaintext
//     [per service: ingest 127.0.0.1:9180, query 127.0.0.1:9181].
//
// HTTP (see HTTPSettings):
//   - HTTP_READ_HEADER_TIMEOUT [5s], HTTP_READ_TIMEOUT [30s]: the whole
//     request, body included, so a body dripped a byte at a time is cut.
//   - HTTP_WRITE_TIMEOUT [30s], HTTP_IDLE_TIMEOUT [60s]: an idle keep-alive
//     connection is closed after it.
//   - HTTP_MAX_CONNS [1024]: concurrent connections; more wait in the
//     kernel's accept queue.
//   - HTTP_MAX_HEADER_BYTES [65536].
//
// gRPC:
//   - GRPC_KEEPALIVE_MIN_TIME [30s]: clients pinging more often are cut
//     off; pings without an active stream are refused.
//   - GRPC_KEEPALIVE_TIME [2h], GRPC_KEEPALIVE_TIMEOUT [20s]: the server
//     pings an idle connection and closes it if no answer comes.
//   - GRPC_MAX_CONNECTION_IDLE [5m]: a connection without calls is closed.
//   - GRPC_MAX_CONCURRENT_STREAMS [100] per connection.
//   - GRPC_MAX_RECV_BYTES [4 MiB], GRPC_MAX_SEND_BYTES [8 MiB]: message
//     size limits. The gateway accepts responses up to the send limit.
//   - GRPC_REFLECTION [true]: register the reflection service.
//
// TLS:
//   - TLS_CERT_FILE, TLS_KEY_FILE: both or neither. When set, the public
//     HTTP and gRPC ports serve TLS 1.2 or later, and a changed pair on
//     disk is picked up without a restart.
//   - TLS_CLIENT_CA_FILE, GRPC_CLIENT_AUTH [none]: client certificates on
//     the gRPC port only: none, request (verified when given) or require.
//   - ALLOW_PLAINTEXT [false]: without TLS, the public ports may listen
//     only on loopback unless this is true (for a mesh that terminates
//     TLS in a sidecar).
type Settings struct {
	HTTPAddr, GRPCAddr, AdminAddr string

	HTTP HTTPSettings

	GRPCKeepaliveMinTime     time.Duration
	GRPCKeepaliveTime        time.Duration
	GRPCKeepaliveTimeout     time.Duration
	GRPCMaxConnectionIdle    time.Duration
	GRPCMaxConcurrentStreams uint32
	GRPCMaxRecvBytes         int
	// GRPCMaxSendBytes bounds every response message, the gateway's
	// included: size pages below it.
	GRPCMaxSendBytes int
	GRPCReflection   bool

	TLSCertFile, TLSKeyFile string
	TLSClientCAFile         string
	GRPCClientAuth          string // none, request or require
	AllowPlaintext          bool
}

// HTTPSettings are an HTTP server's timeouts and limits.
type HTTPSettings struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxConns          int
	MaxHeaderBytes    int
}

// Defaults are a service's own defaults for LoadSettings.
type Defaults struct {
	HTTPAddr, GRPCAddr, AdminAddr string
}

// Client certificate modes for GRPC_CLIENT_AUTH.
const (
	ClientAuthNone    = "none"
	ClientAuthRequest = "request"
	ClientAuthRequire = "require"
)

// DefaultSettings are the settings LoadSettings starts from, with no
// addresses.
func DefaultSettings() Settings {
	return Settings{
		HTTP:                     DefaultHTTPSettings(),
		GRPCKeepaliveMinTime:     30 * time.Second,
		GRPCKeepaliveTime:        2 * time.Hour,
		GRPCKeepaliveTimeout:     20 * time.Second,
		GRPCMaxConnectionIdle:    5 * time.Minute,
		GRPCMaxConcurrentStreams: 100,
		GRPCMaxRecvBytes:         4 << 20,
		GRPCMaxSendBytes:         8 << 20,
		GRPCReflection:           true,
		GRPCClientAuth:           ClientAuthNone,
	}
}

// DefaultHTTPSettings are the defaults LoadHTTPSettings starts from.
func DefaultHTTPSettings() HTTPSettings {
	return HTTPSettings{
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxConns:          1024,
		MaxHeaderBytes:    64 << 10,
	}
}

// LoadSettings reads the Settings of an API from env (see Settings), and
// records a bad or inconsistent value in env.
func LoadSettings(env *config.Env, d Defaults) Settings {
	def := DefaultSettings()
	s := Settings{
		HTTPAddr:  env.Addr("HTTP_ADDR", d.HTTPAddr),
		GRPCAddr:  env.Addr("GRPC_ADDR", d.GRPCAddr),
		AdminAddr: env.Addr("ADMIN_ADDR", d.AdminAddr),
		HTTP:      LoadHTTPSettings(env),

		GRPCKeepaliveMinTime:     env.Duration("GRPC_KEEPALIVE_MIN_TIME", def.GRPCKeepaliveMinTime, time.Second, time.Hour),
		GRPCKeepaliveTime:        env.Duration("GRPC_KEEPALIVE_TIME", def.GRPCKeepaliveTime, time.Second, 24*time.Hour),
		GRPCKeepaliveTimeout:     env.Duration("GRPC_KEEPALIVE_TIMEOUT", def.GRPCKeepaliveTimeout, time.Second, 10*time.Minute),
		GRPCMaxConnectionIdle:    env.Duration("GRPC_MAX_CONNECTION_IDLE", def.GRPCMaxConnectionIdle, time.Second, 24*time.Hour),
		GRPCMaxConcurrentStreams: uint32(env.Int("GRPC_MAX_CONCURRENT_STREAMS", int(def.GRPCMaxConcurrentStreams), 1, 10000)),
		GRPCMaxRecvBytes:         env.Int("GRPC_MAX_RECV_BYTES", def.GRPCMaxRecvBytes, 1<<10, 256<<20),
		GRPCMaxSendBytes:         env.Int("GRPC_MAX_SEND_BYTES", def.GRPCMaxSendBytes, 1<<10, 256<<20),
		GRPCReflection:           env.Bool("GRPC_REFLECTION", def.GRPCReflection),

		TLSCertFile:     env.String("TLS_CERT_FILE", ""),
		TLSKeyFile:      env.String("TLS_KEY_FILE", ""),
		TLSClientCAFile: env.String("TLS_CLIENT_CA_FILE", ""),
		GRPCClientAuth:  env.OneOf("GRPC_CLIENT_AUTH", ClientAuthNone, ClientAuthNone, ClientAuthRequest, ClientAuthRequire),
		AllowPlaintext:  env.Bool("ALLOW_PLAINTEXT", false),
	}
	if err := s.check(); err != nil {
		env.Errorf("%v", err)
	}
	return s
}

// LoadHTTPSettings reads the HTTP_* variables (see Settings).
func LoadHTTPSettings(env *config.Env) HTTPSettings {
	def := DefaultHTTPSettings()
	return HTTPSettings{
		ReadHeaderTimeout: env.Duration("HTTP_READ_HEADER_TIMEOUT", def.ReadHeaderTimeout, 10*time.Millisecond, 10*time.Minute),
		ReadTimeout:       env.Duration("HTTP_READ_TIMEOUT", def.ReadTimeout, 10*time.Millisecond, time.Hour),
		WriteTimeout:      env.Duration("HTTP_WRITE_TIMEOUT", def.WriteTimeout, 10*time.Millisecond, time.Hour),
		IdleTimeout:       env.Duration("HTTP_IDLE_TIMEOUT", def.IdleTimeout, 10*time.Millisecond, time.Hour),
		MaxConns:          env.Int("HTTP_MAX_CONNS", def.MaxConns, 1, 1<<20),
		MaxHeaderBytes:    env.Int("HTTP_MAX_HEADER_BYTES", def.MaxHeaderBytes, 1<<10, 16<<20),
	}
}

// NewHTTPServer is an http.Server with the timeouts and header limit of s
// (MaxConns is the listener's business).
func NewHTTPServer(h http.Handler, s HTTPSettings) *http.Server {
	s = s.withDefaults()
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.ReadHeaderTimeout,
		ReadTimeout:       s.ReadTimeout,
		WriteTimeout:      s.WriteTimeout,
		IdleTimeout:       s.IdleTimeout,
		MaxHeaderBytes:    s.MaxHeaderBytes,
	}
}

// withDefaults fills zero limits, which would mean "none", with defaults.
func (s HTTPSettings) withDefaults() HTTPSettings {
	def := DefaultHTTPSettings()
	fill(&s.ReadHeaderTimeout, def.ReadHeaderTimeout)
	fill(&s.ReadTimeout, def.ReadTimeout)
	fill(&s.WriteTimeout, def.WriteTimeout)
	fill(&s.IdleTimeout, def.IdleTimeout)
	fill(&s.MaxConns, def.MaxConns)
	fill(&s.MaxHeaderBytes, def.MaxHeaderBytes)
	return s
}

// withDefaults fills zero limits with defaults. (GRPCReflection, a bool,
// stays as given.)
func (s Settings) withDefaults() Settings {
	def := DefaultSettings()
	s.HTTP = s.HTTP.withDefaults()
	fill(&s.GRPCKeepaliveMinTime, def.GRPCKeepaliveMinTime)
	fill(&s.GRPCKeepaliveTime, def.GRPCKeepaliveTime)
	fill(&s.GRPCKeepaliveTimeout, def.GRPCKeepaliveTimeout)
	fill(&s.GRPCMaxConnectionIdle, def.GRPCMaxConnectionIdle)
	fill(&s.GRPCMaxConcurrentStreams, def.GRPCMaxConcurrentStreams)
	fill(&s.GRPCMaxRecvBytes, def.GRPCMaxRecvBytes)
	fill(&s.GRPCMaxSendBytes, def.GRPCMaxSendBytes)
	fill(&s.GRPCClientAuth, def.GRPCClientAuth)
	return s
}

func fill[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func (s Settings) tls() bool { return s.TLSCertFile != "" || s.TLSKeyFile != "" }

// check reports the rules that span several variables, in one line.
func (s Settings) check() error {
	switch {
	case (s.TLSCertFile == "") != (s.TLSKeyFile == ""):
		return fmt.Errorf("TLS_CERT_FILE=%q, TLS_KEY_FILE=%q: set both or neither", s.TLSCertFile, s.TLSKeyFile)
	case s.tls():
		if _, err := tls.LoadX509KeyPair(s.TLSCertFile, s.TLSKeyFile); err != nil {
			return fmt.Errorf("TLS_CERT_FILE=%q, TLS_KEY_FILE=%q: %v", s.TLSCertFile, s.TLSKeyFile, err)
		}
	case s.TLSClientCAFile != "" || s.GRPCClientAuth != ClientAuthNone:
		return fmt.Errorf("TLS_CLIENT_CA_FILE=%q, GRPC_CLIENT_AUTH=%q: client certificates need TLS_CERT_FILE and TLS_KEY_FILE", s.TLSClientCAFile, s.GRPCClientAuth)
	}
	if s.GRPCClientAuth != ClientAuthNone && s.GRPCClientAuth != "" {
		if s.TLSClientCAFile == "" {
			return fmt.Errorf("GRPC_CLIENT_AUTH=%q: needs TLS_CLIENT_CA_FILE, the CA that signs client certificates", s.GRPCClientAuth)
		}
		if _, err := loadCAs(s.TLSClientCAFile); err != nil {
			return fmt.Errorf("TLS_CLIENT_CA_FILE=%q: %v", s.TLSClientCAFile, err)
		}
	}
	return s.checkPlaintext()
}

// checkPlaintext refuses public ports beyond loopback without TLS, unless
// ALLOW_PLAINTEXT says something else (a mesh sidecar) encrypts.
func (s Settings) checkPlaintext() error {
	if s.tls() || s.AllowPlaintext {
		return nil
	}
	var open []string
	for _, a := range []struct{ name, addr string }{{"HTTP_ADDR", s.HTTPAddr}, {"GRPC_ADDR", s.GRPCAddr}} {
		if a.addr != "" && !isLoopback(a.addr) {
			open = append(open, fmt.Sprintf("%s=%q", a.name, a.addr))
		}
	}
	if len(open) == 0 {
		return nil
	}
	return fmt.Errorf("%s: plaintext beyond loopback: set TLS_CERT_FILE and TLS_KEY_FILE, or ALLOW_PLAINTEXT=true where a service mesh terminates TLS", strings.Join(open, ", "))
}

// plaintextBeyondLoopback reports whether ALLOW_PLAINTEXT is in use.
func (s Settings) plaintextBeyondLoopback() bool {
	return !s.tls() && (!isLoopback(s.HTTPAddr) || !isLoopback(s.GRPCAddr))
}

// isLoopback reports whether a listen address is on loopback only: an
// empty host listens everywhere, a name other than localhost may resolve
// anywhere.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && config.LoopbackHost(host)
}

func loadCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate in %s", file)
	}
	return pool, nil
}
