package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Exit codes, documented in `omsctl --help`.
const (
	exitOK     = 0
	exitFailed = 1 // an RPC failed, or the command's operation did
	exitUsage  = 2 // bad flags, arguments, files or settings
)

const (
	defaultIngestAddr = "127.0.0.1:9090" // services/ingest GRPC_ADDR
	defaultQueryAddr  = "127.0.0.1:9091" // services/query GRPC_ADDR
	defaultTimeout    = 60 * time.Second
)

// app is one invocation: its streams, its environment and the settings the
// global flags resolve to.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	newID          func() string

	flags struct {
		ingest, query     string
		token, tokenFile  string
		tls, plaintext    bool
		caFile            string
		output            string
		timeout           time.Duration
		requestID         string
		wait              bool
		fields            []string
		sinceVersion      int64
		minVersion        int64
		filter, orderBy   string
		pageSize          int32
		pageToken         string
		all               bool
		operationOrder    string
		operationPageSize int32
	}
	conns map[string]*grpc.ClientConn
}

func newApp(stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) *app {
	return &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv, newID: uuid.NewString,
		conns: map[string]*grpc.ClientConn{}}
}

// usageError is a mistake in the invocation: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// failure is a command that reached the service and did not succeed: an
// RPC error, or an operation that ended in an error. Exit code 1.
type failure struct {
	op  string // "pay orders/…"
	err error
}

func (f failure) Error() string { return f.op + ": " + describe(f.err) }
func (f failure) Unwrap() error { return f.err }

// execute runs one command line and returns the process's exit code. Errors
// go to stderr on one line; usage is shown only for mistakes in the usage.
func (a *app) execute(ctx context.Context, args []string) int {
	root := a.root()
	root.SetArgs(args)
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	err := root.ExecuteContext(ctx)
	for _, c := range a.conns {
		c.Close()
	}
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(a.stderr, "omsctl: "+oneLine(err.Error()))
	var f failure
	if errors.As(err, &f) {
		return exitFailed
	}
	return exitUsage
}

const rootHelp = `omsctl sends order commands to ingest and reads orders, their history and
the commands' outcomes (operations) from query, over gRPC.

A command is applied asynchronously: ingest accepts it and names its
operation. --wait waits for the operation and reports how it ended.

Every command sends --request-id (a new UUID when not given, printed in the
output): running it again with the same id is safe, and has one effect.

Endpoints and credentials come from flags or the environment:
  --ingest      OMS_INGEST_ADDR  [127.0.0.1:9090]
  --query       OMS_QUERY_ADDR   [127.0.0.1:9091]
  --token       OMS_TOKEN        bearer token (make run: source .oms/tokens.env,
                                 then OMS_TOKEN=$OMS_TOKEN_STAFF)
  --token-file  OMS_TOKEN_FILE   a file holding the token
  --tls         OMS_TLS          TLS, verified against the system roots or
  --ca-file     OMS_CA_FILE      this CA. Without either, loopback addresses
                                 are dialled in plaintext and others with TLS;
  --plaintext   OMS_PLAINTEXT    plaintext beyond loopback too (a service mesh
                                 that encrypts, the services' ALLOW_PLAINTEXT).

Exit codes:
  0  the command succeeded (with --wait: its operation was applied)
  1  the command failed: an RPC error, or its operation ended in an error
     (the reason is printed on one line, "omsctl: pay orders/…: CODE: message")
  2  usage error: bad flags, arguments, files or settings`

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "omsctl",
		Short: "Order management from the command line",
		Long:  rootHelp,
		// RPC failures are not usage mistakes: one line, no usage dump.
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see %s --help)", err, c.CommandPath())}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.flags.ingest, "ingest", defaultIngestAddr, "ingest's gRPC address (env OMS_INGEST_ADDR)")
	pf.StringVar(&a.flags.query, "query", defaultQueryAddr, "query's gRPC address (env OMS_QUERY_ADDR)")
	pf.StringVar(&a.flags.token, "token", "", "bearer token (env OMS_TOKEN)")
	pf.StringVar(&a.flags.tokenFile, "token-file", "", "file holding the bearer token (env OMS_TOKEN_FILE)")
	pf.BoolVar(&a.flags.tls, "tls", false, "use TLS even on loopback (env OMS_TLS)")
	pf.StringVar(&a.flags.caFile, "ca-file", "", "CA certificates (PEM) to verify the servers with; implies --tls (env OMS_CA_FILE)")
	pf.BoolVar(&a.flags.plaintext, "plaintext", false, "no TLS beyond loopback (env OMS_PLAINTEXT)")
	pf.StringVarP(&a.flags.output, "output", "o", "table", "output format: table or json (env OMS_OUTPUT)")
	pf.DurationVar(&a.flags.timeout, "timeout", defaultTimeout, "deadline of each call, and how long --wait and operation wait wait (watch: how long to watch; none when not given)")
	root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
	root.MarkFlagFilename("token-file")
	root.MarkFlagFilename("ca-file", "pem", "crt")

	// Settings are checked before any command runs, so a bad one is a
	// usage error even for a command that would not have needed it.
	root.PersistentPreRunE = func(c *cobra.Command, _ []string) error { return a.resolve(c) }

	root.AddCommand(a.commandCommands()...)
	root.AddCommand(a.getCommand(), a.listCommand(), a.eventsCommand(), a.watchCommand(), a.operationCommand())
	return root
}

// resolve fills the settings not given as flags from the environment and
// checks them.
func (a *app) resolve(c *cobra.Command) error {
	fromEnv := func(flag, env string, dst *string) {
		if !c.Flags().Changed(flag) {
			if v := a.getenv(env); v != "" {
				*dst = v
			}
		}
	}
	fromEnvBool := func(flag, env string, dst *bool) error {
		if c.Flags().Changed(flag) || a.getenv(env) == "" {
			return nil
		}
		b, err := strconv.ParseBool(a.getenv(env))
		if err != nil {
			return usagef("%s=%q: want true or false", env, a.getenv(env))
		}
		*dst = b
		return nil
	}
	fromEnv("ingest", "OMS_INGEST_ADDR", &a.flags.ingest)
	fromEnv("query", "OMS_QUERY_ADDR", &a.flags.query)
	fromEnv("token", "OMS_TOKEN", &a.flags.token)
	fromEnv("token-file", "OMS_TOKEN_FILE", &a.flags.tokenFile)
	fromEnv("ca-file", "OMS_CA_FILE", &a.flags.caFile)
	fromEnv("output", "OMS_OUTPUT", &a.flags.output)
	if err := errors.Join(fromEnvBool("tls", "OMS_TLS", &a.flags.tls), fromEnvBool("plaintext", "OMS_PLAINTEXT", &a.flags.plaintext)); err != nil {
		return err
	}
	switch a.flags.output {
	case "table", "json":
	default:
		return usagef("--output %q: want table or json", a.flags.output)
	}
	if a.flags.token != "" && a.flags.tokenFile != "" {
		return usagef("--token and --token-file (or OMS_TOKEN and OMS_TOKEN_FILE) are both set: give one")
	}
	if a.flags.plaintext && (a.flags.tls || a.flags.caFile != "") {
		return usagef("--plaintext contradicts --tls and --ca-file")
	}
	if a.flags.timeout <= 0 {
		return usagef("--timeout %s: must be positive", a.flags.timeout)
	}
	return nil
}

// token is the bearer token to send, if any.
func (a *app) token() (string, error) {
	if a.flags.tokenFile == "" {
		return strings.TrimSpace(a.flags.token), nil
	}
	b, err := os.ReadFile(a.flags.tokenFile)
	if err != nil {
		return "", usagef("--token-file: %v", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", usagef("--token-file %s is empty", a.flags.tokenFile)
	}
	return t, nil
}

// useTLS decides the transport for addr: TLS when asked for, plaintext when
// asked for, and otherwise plaintext only on loopback, where the services
// themselves listen without TLS by default.
func (a *app) useTLS(addr string) bool {
	switch {
	case a.flags.tls || a.flags.caFile != "":
		return true
	case a.flags.plaintext:
		return false
	}
	return !loopback(addr)
}

// loopback reports whether addr's host is a loopback address or localhost.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// conn dials addr once per invocation.
func (a *app) conn(addr string) (*grpc.ClientConn, error) {
	if c, ok := a.conns[addr]; ok {
		return c, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, usagef("address %q: want host:port", addr)
	}
	tok, err := a.token()
	if err != nil {
		return nil, err
	}
	var opts []grpc.DialOption
	if a.useTLS(addr) {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if a.flags.caFile != "" {
			pem, err := os.ReadFile(a.flags.caFile)
			if err != nil {
				return nil, usagef("--ca-file: %v", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, usagef("--ca-file %s: no PEM certificate", a.flags.caFile)
			}
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if tok != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(tok)))
	}
	c, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, usagef("dial %s: %v", addr, err)
	}
	a.conns[addr] = c
	return c, nil
}

// bearer sends the token as "authorization: Bearer …" on every call.
// Whether the transport may carry it was decided in conn: plaintext goes
// beyond loopback only when asked for.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

// callContext bounds one unary call by --timeout.
func (a *app) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.flags.timeout)
}

// oneLine keeps an error message on one line for scripts that read stderr
// line by line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
