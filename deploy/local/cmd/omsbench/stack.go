package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/uptrace/bun/driver/pgdriver"

	omsconfig "github.com/omsdev/oms/pkg/config"
	"github.com/omsdev/oms/pkg/devissuer"
	"github.com/omsdev/oms/pkg/queue"
)

// audience is the aud the bench's services accept and its tokens carry.
const audience = "oms"

// stackDefaults is the `make run` configuration (omsstack's defaults, kept
// in step with them), under the caller's environment: a variable already
// set wins, so `PROCESSOR_SUBSCRIPTIONS=4 make bench` measures that.
var stackDefaults = map[string]string{
	"AWS_REGION":                     "us-east-1",
	"PROCESSOR_SUBSCRIPTIONS":        "8",
	"INGEST_BATCH_MAX_ENTRIES":       "10",
	"LOG_LEVEL":                      "info",
	"RATE_LIMIT_COMMANDS_PER_SECOND": "0",
	"RATE_LIMIT_READS_PER_SECOND":    "0",
}

// stack is the system under test: a database of its own, the SQS emulator
// and the three services, each a process of its own on free ports.
type stack struct {
	bin    string // the binaries `make build-local` makes
	logDir string // each process's output
	say    func(format string, a ...any)

	adminURL string // the server's maintenance database
	dbName   string
	dbURL    string
	// mon is the bench's one connection to its database: its backend is
	// left out of PostgreSQL's CPU.
	db     *sql.DB
	monMu  sync.Mutex // a connection runs one query at a time
	mon    *sql.Conn
	monPID int

	stopIssuer func() error
	issuer     *devissuer.Issuer
	token      string // the storefront service's bearer token
	staffToken string // the staff console's: every order

	env    []string // every service's environment
	vars   map[string]string
	queues queue.Config
	sqs    *sqs.Client
	urls   queue.URLs

	sqsAddr                             string
	ingestHTTP, ingestGRPC, ingestAdmin string
	queryHTTP, queryGRPC, queryAdmin    string
	processorHTTP                       string

	mu    sync.Mutex
	procs map[string]*proc
}

// The processes' names, as the binaries are called.
const (
	nameSQS       = "sqslocal"
	nameIngest    = "ingest"
	nameQuery     = "query"
	nameProcessor = "processor"
)

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	// peak is the VmHWM last read, kept for after the process exits.
	peak int64
	// stopped: the bench ended it.
	stopped bool
}

// startStack creates the database and starts the emulator, ingest and
// query. The processor starts later, for the drain.
func startStack(ctx context.Context, cfg config, say func(string, ...any)) (s *stack, err error) {
	s = &stack{bin: cfg.Bin, say: say, procs: map[string]*proc{}, dbName: cfg.DBName}
	defer func() {
		if err != nil {
			s.close(cfg.KeepDB)
		}
	}()
	for _, b := range []string{nameSQS, nameIngest, nameQuery, nameProcessor, "omsload"} {
		if _, err := os.Stat(filepath.Join(s.bin, b)); err != nil {
			return s, fmt.Errorf("%s is missing in %s: run `make build-local` (or pass -bin)", b, s.bin)
		}
	}
	if s.logDir = cfg.LogDir; s.logDir == "" {
		if s.logDir, err = os.MkdirTemp("", "omsbench-"); err != nil {
			return s, err
		}
	} else if err := os.MkdirAll(s.logDir, 0o755); err != nil {
		return s, err
	}

	if s.adminURL, s.dbURL, err = databaseURLs(cfg.DatabaseURL, cfg.DBName); err != nil {
		return s, err
	}
	if err := s.recreateDatabase(ctx); err != nil {
		return s, err
	}
	s.db = sql.OpenDB(pgdriver.NewConnector(pgdriver.WithDSN(s.dbURL)))
	if s.mon, err = s.db.Conn(ctx); err != nil {
		return s, fmt.Errorf("connect to %s: %w", omsconfig.Redact(s.dbURL), err)
	}
	if err := s.mon.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&s.monPID); err != nil {
		return s, err
	}

	iss, err := devissuer.New()
	if err != nil {
		return s, err
	}
	issuerURL, stop, err := iss.Serve("127.0.0.1:0")
	if err != nil {
		return s, err
	}
	s.stopIssuer, s.issuer = stop, iss
	toks, err := iss.MintStandard(audience)
	if err != nil {
		return s, err
	}
	for _, t := range toks {
		switch t.Env {
		case devissuer.EnvService:
			s.token = t.Token
		case devissuer.EnvStaff:
			s.staffToken = t.Token
		}
	}

	s.sqsAddr = freeAddr()
	s.ingestHTTP, s.ingestGRPC, s.ingestAdmin = freeAddr(), freeAddr(), freeAddr()
	s.queryHTTP, s.queryGRPC, s.queryAdmin = freeAddr(), freeAddr(), freeAddr()
	s.processorHTTP = freeAddr()
	secret := make([]byte, 32)
	rand.Read(secret)
	opSecret := make([]byte, 32)
	rand.Read(opSecret)
	s.vars = map[string]string{}
	for k, v := range stackDefaults {
		if os.Getenv(k) == "" {
			s.vars[k] = v
		}
	}
	// What the bench decides whatever the environment says: where
	// everything is, and who signs the tokens.
	for k, v := range map[string]string{
		"DATABASE_URL":           s.dbURL,
		"SQS_ENDPOINT":           "http://" + s.sqsAddr,
		"SQS_COMMAND_QUEUE":      "oms-commands.fifo",
		"SQS_DEAD_LETTER_QUEUE":  "oms-commands-dlq.fifo",
		"SQS_NOTIFICATION_QUEUE": "oms-notifications.fifo",
		"SQS_CREATE_QUEUES":      "true",
		"AUTH_INSECURE_DEV_MODE": "false",
		"AUTH_ISSUER":            issuerURL,
		"AUTH_AUDIENCE":          audience,
		"AUTH_JWKS_URL":          iss.JWKSURL(),
		"ORDER_ID_SECRET":        hex.EncodeToString(secret),
		"OPERATION_SECRET":       hex.EncodeToString(opSecret),
		// Nothing is in flight when the bench stops a service: a second
		// is plenty, where the default would wait out long polls.
		"DRAIN_TIMEOUT": "1s",
	} {
		s.vars[k] = v
	}
	s.env = os.Environ()
	for k, v := range s.vars {
		s.env = append(s.env, k+"="+v)
	}
	env := omsconfig.FromMap(envMap(s.env))
	s.queues = queue.Load(env)
	if err := env.Err(); err != nil {
		return s, err
	}

	if err := s.start(ctx, nameSQS, []string{"-addr", s.sqsAddr, "-max-retention", "2m"}, nil, s.sqsAddr, false); err != nil {
		return s, err
	}
	migrate := exec.CommandContext(ctx, filepath.Join(s.bin, nameProcessor), "migrate", "up")
	migrate.Env = s.env
	if out, err := migrate.CombinedOutput(); err != nil {
		return s, fmt.Errorf("migrations: %v\n%s", err, out)
	}
	if s.sqs, err = queue.NewClient(ctx, s.queues); err != nil {
		return s, err
	}
	if s.urls, err = queue.EnsureQueues(ctx, s.sqs, s.queues); err != nil {
		return s, fmt.Errorf("create queues: %w", err)
	}
	if err := s.start(ctx, nameIngest, nil, []string{"HTTP_ADDR=" + s.ingestHTTP, "GRPC_ADDR=" + s.ingestGRPC, "ADMIN_ADDR=" + s.ingestAdmin}, s.ingestHTTP, true); err != nil {
		return s, err
	}
	if err := s.start(ctx, nameQuery, nil, []string{"HTTP_ADDR=" + s.queryHTTP, "GRPC_ADDR=" + s.queryGRPC, "ADMIN_ADDR=" + s.queryAdmin}, s.queryHTTP, true); err != nil {
		return s, err
	}
	return s, nil
}

// count runs a query returning one integer on the monitoring connection.
func (s *stack) count(ctx context.Context, query string, args ...any) (int64, error) {
	s.monMu.Lock()
	defer s.monMu.Unlock()
	var n int64
	err := s.mon.QueryRowContext(ctx, query, args...).Scan(&n)
	return n, err
}

// startProcessor starts the processor without waiting for it: the drain
// is timed from here.
func (s *stack) startProcessor(ctx context.Context) error {
	return s.spawn(nameProcessor, nil, []string{"HTTP_ADDR=" + s.processorHTTP})
}

// databaseURLs is the maintenance database's URL and the bench database's
// on the server base names.
func databaseURLs(base, name string) (admin, db string, err error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", "", fmt.Errorf("-database-url %q: want postgres://user@host:port/db", omsconfig.Redact(base))
	}
	a, d := *u, *u
	a.Path, d.Path = "/postgres", "/"+name
	return a.String(), d.String(), nil
}

// recreateDatabase gives the bench an empty database of its own: the
// figures must not depend on what an earlier run left.
func (s *stack) recreateDatabase(ctx context.Context) error {
	admin := sql.OpenDB(pgdriver.NewConnector(pgdriver.WithDSN(s.adminURL)))
	defer admin.Close()
	ident := `"` + strings.ReplaceAll(s.dbName, `"`, `""`) + `"`
	if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("PostgreSQL at %s is required: %w", omsconfig.Redact(s.adminURL), err)
	}
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+ident); err != nil {
		return fmt.Errorf("create database %s: %w", s.dbName, err)
	}
	return nil
}

func (s *stack) dropDatabase() error {
	admin := sql.OpenDB(pgdriver.NewConnector(pgdriver.WithDSN(s.adminURL)))
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := admin.ExecContext(ctx, `DROP DATABASE IF EXISTS "`+strings.ReplaceAll(s.dbName, `"`, `""`)+`" WITH (FORCE)`)
	return err
}

// start spawns a process and waits until it is ready: its /readyz answers
// 200 when health is set, else addr accepts connections.
func (s *stack) start(ctx context.Context, name string, args, env []string, addr string, health bool) error {
	if err := s.spawn(name, args, env); err != nil {
		return err
	}
	return s.waitReady(ctx, name, addr, health)
}

func (s *stack) waitReady(ctx context.Context, name, addr string, health bool) error {
	p := s.proc(name)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ready(addr, health) == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited during start-up; its log: %s", name, s.logPath(name))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 30s: %v; its log: %s", name, ready(addr, health), s.logPath(name))
		}
	}
}

func ready(addr string, health bool) error {
	if !health {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/readyz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}

func (s *stack) logPath(name string) string { return filepath.Join(s.logDir, name+".log") }

// spawn starts a process with its output in its log file: written by the
// kernel, so the bench spends no CPU on it.
func (s *stack) spawn(name string, args, env []string) error {
	return s.spawnAs(name, name, args, env)
}

// spawnAs runs binary under another name.
func (s *stack) spawnAs(name, binary string, args, env []string) error {
	log, err := os.OpenFile(s.logPath(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(filepath.Join(s.bin, binary), args...)
	cmd.Env = append(append([]string{}, s.env...), env...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	s.mu.Lock()
	s.procs[name] = p
	s.mu.Unlock()
	return nil
}

func (s *stack) proc(name string) *proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.procs[name]
}

// pid is the running process's id, or 0.
func (s *stack) pid(name string) int {
	p := s.proc(name)
	if p == nil {
		return 0
	}
	select {
	case <-p.done:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

// exited names a service that is no longer running, or "".
func (s *stack) exited() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, p := range s.procs {
		select {
		case <-p.done:
			if p.stopped {
				continue
			}
			return name
		default:
		}
	}
	return ""
}

// peaks reads every running process's peak RSS, and returns the latest
// reading of each.
func (s *stack) peaks() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int64{}
	for name, p := range s.procs {
		if rss, err := peakRSS(p.cmd.Process.Pid); err == nil {
			p.peak = max(p.peak, rss)
		}
		out[name] = p.peak
	}
	return out
}

// stop ends a process with SIGTERM, and SIGKILL after 25 s.
func (s *stack) stop(name string) {
	p := s.proc(name)
	if p == nil {
		return
	}
	s.peaks()
	s.mu.Lock()
	p.stopped = true
	s.mu.Unlock()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(25 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// close stops the services, then the emulator, and drops the database
// unless keep is set.
func (s *stack) close(keep bool) {
	var wg sync.WaitGroup
	for _, name := range []string{"processor-capture", nameProcessor, nameQuery, nameIngest} {
		wg.Go(func() { s.stop(name) })
	}
	wg.Wait()
	s.stop(nameSQS)
	if s.stopIssuer != nil {
		s.stopIssuer()
	}
	if s.mon != nil {
		s.mon.Close()
	}
	if s.db != nil {
		s.db.Close()
	}
	if s.dbURL != "" && !keep {
		if err := s.dropDatabase(); err != nil {
			s.say("could not drop database %s: %v", s.dbName, err)
		}
	}
}

// childProcAttr starts a service in its own process group, so a Ctrl-C
// reaches the bench alone and it stops the services itself; and, on Linux,
// with SIGTERM as its parent-death signal, so none outlives a bench that
// was killed outright. (Pdeathsig exists only in Linux's SysProcAttr; it
// is set by name so this file builds everywhere.)
func childProcAttr() *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	if f := reflect.ValueOf(a).Elem().FieldByName("Pdeathsig"); f.IsValid() {
		f.Set(reflect.ValueOf(syscall.SIGTERM))
	}
	return a
}

// Ports come from below Linux's ephemeral range (32768-60999), so no
// outgoing connection's source port can take one between this check and
// the service's bind, and each is handed out once per run.
var (
	portsMu sync.Mutex
	ports   = map[int]bool{}
)

func freeAddr() string {
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		p := 20000 + mrand.IntN(12000)
		if ports[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue // taken by something else
		}
		ln.Close()
		ports[p] = true
		return ln.Addr().String()
	}
}

// envMap turns KEY=value lines into a map; a later line wins.
func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}
