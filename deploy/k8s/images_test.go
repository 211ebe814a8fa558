package k8s

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The images deploy/*/Dockerfile build, and how each binary must reject a
// bad configuration: one line on stderr, a distinct exit code, before it
// touches the network.
var images = []struct {
	name      string   // binary, image directory under deploy/
	overlay   string   // rendering whose Deployment declares the same ports
	deploy    string   // that Deployment
	badArgs   []string // a bad configuration...
	badEnv    []string
	wantCode  int    // ...is refused with this exit code
	wantInErr string // and a stderr line naming the culprit
	// "<bin> healthcheck" GETs /healthz on HTTP_ADDR: compose's
	// healthchecks (distroless has no curl and no shell).
	healthcheck bool
}{
	// The dev switch stands in for the token issuer, which has no default.
	{"ingest", "base", "oms-ingest", nil, []string{"HTTP_ADDR=not-an-address", "AUTH_INSECURE_DEV_MODE=true"}, 2, "HTTP_ADDR", true},
	{"processor", "base", "oms-processor", nil, []string{"HTTP_ADDR=not-an-address"}, 2, "HTTP_ADDR", true},
	{"query", "base", "oms-query", nil, []string{"HTTP_ADDR=not-an-address", "AUTH_INSECURE_DEV_MODE=true"}, 2, "HTTP_ADDR", true},
	{"sqslocal", "overlays/dev", "oms-sqslocal", []string{"-addr", "not-an-address"}, nil, 1, "sqslocal:", false},
}

const (
	builderImage = "golang:1.26-bookworm"
	runtimeImage = "gcr.io/distroless/static-debian12:nonroot"
)

// TestImages runs the build stage of every Dockerfile on the host, on a
// tree holding only what the Dockerfile copies, then checks the binary is
// static and reaches its config validation. Images cannot be built here
// (no Docker engine); this proves the narrow COPY set suffices and that
// the binary fits a distroless image.
func TestImages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every image's binary")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the images are linux binaries")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range images {
		t.Run(img.name, func(t *testing.T) {
			t.Parallel()
			df := parseDockerfile(t, filepath.Join(repo, "deploy", img.name, "Dockerfile"))
			if len(df.stages) != 2 {
				t.Fatalf("%s: want a build and a runtime stage, have %d stages", df.path, len(df.stages))
			}
			checkRuntimeStage(t, df, img.name, containerPorts(t, img.overlay, img.deploy))

			root := t.TempDir() // the build container's filesystem
			runBuildStage(t, df, repo, root)
			bin := filepath.Join(root, "out", img.name)

			checkStatic(t, bin)
			checkRejectsBadConfig(t, bin, img.badArgs, img.badEnv, img.wantCode, img.wantInErr)
			if img.healthcheck {
				checkHealthcheck(t, bin)
			}
		})
	}
}

type instruction struct {
	cmd, args string
	line      int
}

type stage struct {
	from, name string
	body       []instruction
}

type dockerfile struct {
	path   string
	stages []stage
}

func parseDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	df := dockerfile{path: path}
	var cont strings.Builder
	start := 0
	for i, line := range strings.Split(string(src), "\n") {
		trimmed := strings.TrimSpace(line)
		if cont.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cont.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, "\\") {
			cont.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cont.WriteString(trimmed)
		full := cont.String()
		cont.Reset()
		cmd, args, _ := strings.Cut(full, " ")
		in := instruction{strings.ToUpper(cmd), strings.TrimSpace(args), start}
		if in.cmd == "FROM" {
			args := in.args
			for strings.HasPrefix(args, "--") { // --platform=$BUILDPLATFORM
				_, args, _ = strings.Cut(args, " ")
				args = strings.TrimSpace(args)
			}
			from, name, _ := strings.Cut(args, " AS ")
			df.stages = append(df.stages, stage{from: strings.TrimSpace(from), name: strings.TrimSpace(name)})
			continue
		}
		if len(df.stages) == 0 {
			t.Fatalf("%s:%d: %s before FROM", path, start, in.cmd)
		}
		s := &df.stages[len(df.stages)-1]
		s.body = append(s.body, in)
	}
	return df
}

// runBuildStage interprets the build stage's ENV, WORKDIR, COPY and RUN
// with root standing for the container's "/". The go commands run exactly
// as written; only the module and build caches are the host's.
func runBuildStage(t *testing.T, df dockerfile, repo, root string) {
	t.Helper()
	build := df.stages[0]
	if build.from != builderImage {
		t.Errorf("%s: build stage FROM %s, want %s", df.path, build.from, builderImage)
	}
	env := hostEnv()
	workdir := "/"
	built := false
	for _, in := range build.body {
		at := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("%s:%d: %s: "+format, append([]any{df.path, in.line, in.cmd}, args...)...)
		}
		switch in.cmd {
		case "ENV":
			for _, kv := range strings.Fields(in.args) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					at("want KEY=value, have %q", kv)
				}
				env = append(env, k+"="+strings.Trim(v, `"`))
			}
		case "WORKDIR":
			workdir = containerPath(workdir, in.args)
			if err := os.MkdirAll(filepath.Join(root, workdir), 0o755); err != nil {
				t.Fatal(err)
			}
		case "COPY":
			args := strings.Fields(in.args)
			if len(args) < 2 || strings.HasPrefix(args[0], "--") {
				at("unsupported form %q", in.args)
			}
			dst := containerPath(workdir, args[len(args)-1])
			for _, src := range args[:len(args)-1] {
				if strings.ContainsAny(src, "*?[") || strings.Contains(src, "..") {
					at("unsupported source %q", src)
				}
				copyInto(t, filepath.Join(repo, src), filepath.Join(root, dst), strings.HasSuffix(args[len(args)-1], "/"))
			}
		case "RUN":
			cmd := in.args
			for strings.HasPrefix(cmd, "--") { // --mount=type=cache,...: build-cache only
				_, cmd, _ = strings.Cut(cmd, " ")
				cmd = strings.TrimSpace(cmd)
			}
			if strings.Contains(cmd, "go build") {
				built = true
				for _, flag := range []string{"-trimpath", "-o /out/"} {
					if !strings.Contains(cmd, flag) {
						at("go build without %s", flag)
					}
				}
			}
			cmd = strings.ReplaceAll(cmd, " /out/", " "+filepath.Join(root, "out")+"/")
			if err := os.MkdirAll(filepath.Join(root, "out"), 0o755); err != nil {
				t.Fatal(err)
			}
			c := exec.Command("sh", "-c", cmd)
			c.Dir = filepath.Join(root, workdir)
			c.Env = env
			if out, err := c.CombinedOutput(); err != nil {
				at("%s in %s: %v\n%s", cmd, workdir, err, out)
			}
		case "ARG":
			// Build arguments nobody passes (TARGETOS, TARGETARCH: BuildKit
			// sets them to the target platform) are empty here, so the go
			// command builds for the host, which runs the binary below.
			for _, kv := range strings.Fields(in.args) {
				k, v, hasDefault := strings.Cut(kv, "=")
				env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, k+"=") })
				if hasDefault {
					env = append(env, k+"="+v)
				}
			}
		case "LABEL":
		default:
			at("not supported in the build stage")
		}
	}
	if !built {
		t.Fatalf("%s: the build stage runs no go build", df.path)
	}
	for _, want := range []string{"CGO_ENABLED=0", "GOWORK=off"} {
		if !slices.Contains(env, want) {
			t.Errorf("%s: build stage does not set ENV %s", df.path, want)
		}
	}
}

// hostEnv is the host's environment less the settings a Dockerfile owns.
func hostEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GOFLAGS", "GOWORK", "CGO_ENABLED", "GOOS", "GOARCH", "GOAMD64", "GOEXPERIMENT":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func containerPath(workdir, p string) string {
	if !filepath.IsAbs(p) {
		p = filepath.Join(workdir, p)
	}
	return filepath.Clean(p)
}

// copyInto follows COPY: a directory's contents go into dst, a file goes
// into dst/ (dstIsDir) or becomes dst.
func copyInto(t *testing.T, src, dst string, dstIsDir bool) {
	t.Helper()
	info, err := os.Stat(src)
	if err != nil {
		t.Fatalf("COPY source: %v", err)
	}
	if !info.IsDir() {
		if dstIsDir {
			dst = filepath.Join(dst, filepath.Base(src))
		}
		copyFile(t, src, dst, info.Mode())
		return
	}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		copyFile(t, p, target, fi.Mode())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode.Perm())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkRuntimeStage: distroless, non-root, only the binary, and the ports
// the Kubernetes manifests declare.
func checkRuntimeStage(t *testing.T, df dockerfile, name string, ports []string) {
	t.Helper()
	rt := df.stages[len(df.stages)-1]
	if rt.from != runtimeImage {
		t.Errorf("%s: runtime stage FROM %s, want %s", df.path, rt.from, runtimeImage)
	}
	var user, entrypoint string
	var copies, exposed []string
	for _, in := range rt.body {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		case "COPY":
			copies = append(copies, in.args)
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(in.args)...)
		case "RUN":
			t.Errorf("%s:%d: RUN in the runtime stage: the image has no shell", df.path, in.line)
		}
	}
	if user != "65532:65532" && user != "65532" && user != "nonroot" && user != "nonroot:nonroot" {
		t.Errorf("%s: runtime USER %q, want 65532 (distroless nonroot)", df.path, user)
	}
	var ep []string
	if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil || len(ep) == 0 || ep[0] != "/"+name {
		t.Errorf("%s: ENTRYPOINT %s, want the exec form [\"/%s\"]", df.path, entrypoint, name)
	}
	if want := "--from=" + df.stages[0].name + " /out/" + name + " /" + name; !slices.Contains(copies, want) || len(copies) != 1 {
		t.Errorf("%s: runtime stage copies %q, want only COPY %s", df.path, copies, want)
	}
	slices.Sort(exposed)
	slices.Sort(ports)
	if !slices.Equal(exposed, ports) {
		t.Errorf("%s: EXPOSE %v, but the Kubernetes manifests declare %v", df.path, exposed, ports)
	}
}

// containerPorts lists the container ports of a rendered Deployment but
// the admin port: the image leaves ADMIN_ADDR on loopback, so only the
// manifests, which set it, publish that port.
func containerPorts(t *testing.T, overlay, name string) []string {
	t.Helper()
	r := render(t, overlay)
	obj, ok := r.get("Deployment", name)
	if !ok {
		t.Fatalf("%s: Deployment %s: missing", overlay, name)
	}
	var d workload
	r.decode(t, obj, &d)
	var ports []string
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name != "admin" {
				ports = append(ports, strconv.Itoa(p.ContainerPort))
			}
		}
	}
	return ports
}

// checkStatic: no dynamic loader, no shared libraries; the binary runs on
// distroless/static, which has no libc.
func checkStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s: has a PT_INTERP program header: dynamically linked", bin)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	if len(libs) > 0 {
		t.Errorf("%s: needs shared libraries %v", bin, libs)
	}
}

func checkRejectsBadConfig(t *testing.T, bin string, args, env []string, wantCode int, wantInErr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env // nothing else: every other setting takes its default
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %v with %v: still running after 20 s; want it to refuse the configuration", bin, args, env)
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != wantCode {
		t.Errorf("%s %v with %v: %v, want exit code %d", bin, args, env, err, wantCode)
	}
	msg := strings.TrimRight(stderr.String(), "\n")
	if msg == "" || strings.Contains(msg, "\n") || !strings.Contains(msg, wantInErr) {
		t.Errorf("%s %v with %v: stderr %q, want one line naming %s", bin, args, env, stderr.String(), wantInErr)
	}
}

// checkHealthcheck: "<bin> healthcheck" exits 0 when /healthz answers 200
// and 1 otherwise, dialling loopback for the container's 0.0.0.0 address.
func checkHealthcheck(t *testing.T, bin string) {
	t.Helper()
	for _, status := range []int{http.StatusOK, http.StatusServiceUnavailable} {
		var hits atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || r.URL.Path != "/healthz" {
				http.NotFound(w, r)
				return
			}
			hits.Add(1)
			w.WriteHeader(status)
		}))
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, bin, "healthcheck")
		// ALLOW_PLAINTEXT: as in compose, where 0.0.0.0 needs it.
		cmd.Env = []string{"HTTP_ADDR=0.0.0.0:" + port, "ALLOW_PLAINTEXT=true"}
		out, err := cmd.CombinedOutput()
		cancel()
		srv.Close()

		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatalf("%s healthcheck: %v", bin, err)
		}
		want := 0
		if status != http.StatusOK {
			want = 1
		}
		if code != want || hits.Load() != 1 {
			t.Errorf("%s healthcheck against /healthz answering %d: exit %d after %d GETs, want exit %d after one GET\n%s",
				bin, status, code, hits.Load(), want, out)
		}
	}
}
