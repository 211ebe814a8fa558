package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv selects a role for this test binary run as a helper process.
const helperEnv = "OMSSTACK_TEST_HELPER"

// TestHelperProcess is not a test: run with helperEnv set, it plays one of
// the processes the supervision tests need.
//
//   - watcher: runs watchParent, as omsstack does, and exits when told to;
//   - sleeper: does nothing until it is killed;
//   - parent-of-watcher, parent-of-sleeper: start that child (the sleeper
//     with serviceProcAttr, as omsstack starts a service) and wait forever.
//
// Every process prints its progress on the inherited stdout.
func TestHelperProcess(t *testing.T) {
	role := os.Getenv(helperEnv)
	if role == "" {
		return
	}
	switch role {
	case "watcher":
		watchParent(context.Background(), 50*time.Millisecond, func(why string) {
			fmt.Printf("stopping: %s\n", why)
			os.Exit(0)
		})
		fmt.Printf("ready %d\n", os.Getpid())
	case "sleeper":
		fmt.Printf("ready %d\n", os.Getpid())
	case "parent-of-watcher", "parent-of-sleeper":
		child := helper(strings.TrimPrefix(role, "parent-of-"))
		child.Stdout, child.Stderr = os.Stdout, os.Stderr
		if role == "parent-of-sleeper" {
			child.SysProcAttr = serviceProcAttr()
		}
		if err := child.Start(); err != nil {
			fmt.Println("start:", err)
			os.Exit(1)
		}
	default:
		fmt.Println("unknown role", role)
		os.Exit(1)
	}
	select {}
}

// helper is this test binary as a helper process in role.
func helper(role string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+role)
	return cmd
}

// started runs cmd with stdout on a pipe and returns the pipe, once the
// helper that prints "ready <pid>" is ready, and that pid.
func started(t *testing.T, cmd *exec.Cmd) (*os.File, *bufio.Reader, int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	cmd.Stdout, cmd.Stderr = w, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// Generous bounds throughout: only a process that never exits fails.
	r.SetReadDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("helper never became ready: %v", err)
		}
		if pid, ok := strings.CutPrefix(strings.TrimSpace(line), "ready "); ok {
			n, err := strconv.Atoi(pid)
			if err != nil {
				t.Fatal(err)
			}
			// Should the test fail, leave no helper behind.
			t.Cleanup(func() { syscall.Kill(n, syscall.SIGKILL) })
			return r, br, n
		}
	}
}

// waitClosed reads the helpers' output until every one holding the pipe
// has exited, returning what they printed.
func waitClosed(t *testing.T, r *os.File, br *bufio.Reader) string {
	t.Helper()
	r.SetReadDeadline(time.Now().Add(60 * time.Second))
	var out strings.Builder
	for {
		line, err := br.ReadString('\n')
		out.WriteString(line)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a child outlived its parent by a minute; it printed %q", out.String())
		}
		if err != nil {
			return out.String()
		}
	}
}

// A child omsstack starts, or omsstack itself, does not outlive a parent
// that is killed outright: omsstack notices it was re-parented, and a
// service gets its parent-death signal.
func TestChildStopsWhenItsParentDies(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux's")
	}
	t.Parallel()
	for _, tc := range []struct{ role, want string }{
		{"parent-of-watcher", "stopping: parent process"},
		{"parent-of-sleeper", ""}, // killed by its SIGTERM: prints nothing
	} {
		t.Run(tc.role, func(t *testing.T) {
			t.Parallel()
			parent := helper(tc.role)
			r, br, _ := started(t, parent)
			parent.Process.Kill()
			parent.Wait()
			if out := waitClosed(t, r, br); !strings.Contains(out, tc.want) {
				t.Errorf("child said %q, want %q", out, tc.want)
			}
		})
	}
}

// The `make run` case: make, sent SIGINT on its own, waits for its child
// before dying; omsstack, started with exec as the Makefile does, sees make
// dying and stops, and then make exits too.
func TestStopsWhenMakeIsInterrupted(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	mk, err := exec.LookPath("make")
	if err != nil {
		t.Skip("no make here")
	}
	t.Parallel()
	dir := t.TempDir()
	makefile := filepath.Join(dir, "Makefile")
	// The shape of the Makefile's run target.
	recipe := fmt.Sprintf("SHELL := /bin/bash\nrun:\n\t@exec %s -test.run='^TestHelperProcess$$'\n", os.Args[0])
	if err := os.WriteFile(makefile, []byte(recipe), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(mk, "-s", "-f", makefile, "run")
	cmd.Env = append(os.Environ(), helperEnv+"=watcher")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // signals to make alone
	r, br, _ := started(t, cmd)
	t.Cleanup(func() { cmd.Process.Kill() })

	// The signal make catches: SIGINT, unless this test runs where it is
	// ignored (a background job), which make then inherits.
	sig := syscall.Signal(0)
	for _, s := range []syscall.Signal{syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT} {
		if caughtSignals(cmd.Process.Pid)&(1<<(s-1)) != 0 {
			sig = s
			break
		}
	}
	if sig == 0 {
		t.Skip("make catches none of SIGINT, SIGHUP and SIGQUIT here")
	}
	t.Logf("sending %v to make", sig)
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	if out := waitClosed(t, r, br); !strings.Contains(out, "stopping: make (pid") {
		t.Errorf("omsstack said %q after make got %v", out, sig)
	}
	if err := cmd.Wait(); err == nil {
		t.Errorf("make exited cleanly after %v", sig)
	}
}
