package k8s

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

type composeService struct {
	Build *struct {
		Context    string `json:"context"`
		Dockerfile string `json:"dockerfile"`
	} `json:"build"`
	Image       string                                `json:"image"`
	Command     []string                              `json:"command"`
	Environment map[string]string                     `json:"environment"`
	Ports       []string                              `json:"ports"`
	DependsOn   map[string]struct{ Condition string } `json:"depends_on"`
	Healthcheck *struct {
		Test []string `json:"test"`
	} `json:"healthcheck"`
	StopGracePeriod string `json:"stop_grace_period"`
	Restart         string `json:"restart"`
	User            string `json:"user"`
	ReadOnly        bool   `json:"read_only"`
}

// TestCompose checks deploy/compose.yaml: the services are built from
// their Dockerfiles, checked with their own healthcheck subcommand,
// started in order (PostgreSQL healthy, migration done) and reachable on
// loopback only, metrics on the admin ports.
func TestCompose(t *testing.T) {
	src, err := os.ReadFile("../compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Services map[string]composeService `json:"services"`
	}
	if err := yaml.Unmarshal(src, &file); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	svc := file.Services
	errorf := func(name, format string, args ...any) {
		t.Helper()
		t.Errorf("compose.yaml: service %s: "+format, append([]any{name}, args...)...)
	}
	needs := func(name, dep, condition string) {
		t.Helper()
		if got := svc[name].DependsOn[dep].Condition; got != condition {
			errorf(name, "depends_on %s: condition %q, want %s", dep, got, condition)
		}
	}

	// HTTP, gRPC, admin.
	for name, port := range map[string][]string{"ingest": {"8080", "9090", "9180"}, "processor": {"8082"}, "query": {"8081", "9091", "9181"}} {
		s, ok := svc[name]
		if !ok {
			errorf(name, "missing")
			continue
		}
		if s.Build == nil || s.Build.Dockerfile != "deploy/"+name+"/Dockerfile" {
			errorf(name, "not built from deploy/%s/Dockerfile", name)
		} else if _, err := os.Stat(filepath.Join("..", s.Build.Context, s.Build.Dockerfile)); err != nil {
			errorf(name, "build: %v", err)
		}
		if s.Healthcheck == nil || !slices.Equal(s.Healthcheck.Test, []string{"CMD", "/" + name, "healthcheck"}) {
			errorf(name, "healthcheck must be [CMD /%s healthcheck] (no shell in the image)", name)
		}
		if got := s.Environment["HTTP_ADDR"]; got != "0.0.0.0:"+port[0] {
			errorf(name, "HTTP_ADDR %q, want 0.0.0.0:%s", got, port[0])
		}
		if len(port) > 1 && s.Environment["GRPC_ADDR"] != "0.0.0.0:"+port[1] {
			errorf(name, "GRPC_ADDR %q, want 0.0.0.0:%s", s.Environment["GRPC_ADDR"], port[1])
		}
		if len(port) > 2 && s.Environment["ADMIN_ADDR"] != "0.0.0.0:"+port[2] {
			errorf(name, "ADMIN_ADDR %q, want 0.0.0.0:%s (metrics)", s.Environment["ADMIN_ADDR"], port[2])
		}
		// Without TLS the services refuse 0.0.0.0 unless told otherwise.
		if len(port) > 1 && s.Environment["ALLOW_PLAINTEXT"] != "true" {
			errorf(name, "ALLOW_PLAINTEXT %q: plaintext on 0.0.0.0 needs \"true\"", s.Environment["ALLOW_PLAINTEXT"])
		}
		for _, p := range port {
			if !slices.Contains(s.Ports, "127.0.0.1:"+p+":"+p) {
				errorf(name, "port %s is not published on 127.0.0.1", p)
			}
		}
		drain, err := time.ParseDuration(s.Environment["DRAIN_TIMEOUT"])
		if err != nil {
			drain = 20 * time.Second
		}
		if grace, err := time.ParseDuration(s.StopGracePeriod); err != nil || grace <= drain {
			errorf(name, "stop_grace_period %q must exceed DRAIN_TIMEOUT %s", s.StopGracePeriod, drain)
		}
		if s.Restart == "" || s.Restart == "no" {
			errorf(name, "restart %q: a service that starts before its dependencies must come back", s.Restart)
		}
	}

	for name, s := range svc {
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				errorf(name, "port %s is published beyond loopback", p)
			}
		}
		for k := range s.Environment {
			if strings.HasPrefix(k, "AWS_ACCESS_KEY") || strings.HasPrefix(k, "AWS_SECRET") {
				errorf(name, "sets %s: the emulator needs no keys", k)
			}
		}
		if strings.HasPrefix(s.Image, omsImagePrefix) && (s.User != "65532:65532" || !s.ReadOnly) {
			errorf(name, "runs as %q, read_only %v: want 65532:65532 and a read-only root, as in Kubernetes", s.User, s.ReadOnly)
		}
	}

	m := svc["migrate"]
	if !slices.Equal(m.Command, []string{"migrate", "up"}) || m.Image != svc["processor"].Image {
		errorf("migrate", "must run [migrate up] from the processor image %s, runs %v from %s", svc["processor"].Image, m.Command, m.Image)
	}
	if m.Restart != "no" {
		errorf("migrate", "restart %q, want \"no\": it runs once", m.Restart)
	}
	needs("migrate", "postgres", "service_healthy")
	needs("processor", "migrate", "service_completed_successfully")
	needs("query", "migrate", "service_completed_successfully")
	if svc["postgres"].Healthcheck == nil || !slices.Contains(svc["postgres"].Healthcheck.Test, "pg_isready") {
		errorf("postgres", "healthcheck must run pg_isready")
	}

	p := svc["processor"].Environment
	if p["PROCESSOR_SUBSCRIPTIONS"] != "8" {
		errorf("processor", "PROCESSOR_SUBSCRIPTIONS %q: sqslocal keeps FIFO group locks, so run as production (8)", p["PROCESSOR_SUBSCRIPTIONS"])
	}
	for _, name := range []string{"ingest", "processor"} {
		e := svc[name].Environment
		if e["SQS_ENDPOINT"] != "http://sqslocal:4100" || e["SQS_CREATE_QUEUES"] != "true" {
			errorf(name, "SQS_ENDPOINT %q SQS_CREATE_QUEUES %q, want the emulator and queue creation", e["SQS_ENDPOINT"], e["SQS_CREATE_QUEUES"])
		}
	}
	if !slices.Contains(svc["sqslocal"].Command, "0.0.0.0:4100") {
		errorf("sqslocal", "command %v must listen on 0.0.0.0:4100", svc["sqslocal"].Command)
	}
}
