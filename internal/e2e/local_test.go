package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// localRun is a `tailor local` cluster a test started, with its combined
// output.
type localRun struct {
	t   *testing.T
	bin string
	cmd *exec.Cmd
	log syncBuffer
}

// startLocal starts `tailor local` with args; env is added to the
// environment.
func startLocal(t *testing.T, ctx context.Context, bin string, env []string, args ...string) *localRun {
	t.Helper()
	r := &localRun{t: t, bin: bin, cmd: exec.CommandContext(ctx, bin, append([]string{"local"}, args...)...)}
	r.cmd.Env = append(os.Environ(), env...)
	r.cmd.Stdout, r.cmd.Stderr = &r.log, &r.log
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return r
}

// waitFor waits until the output matches re and returns the submatches;
// after d it kills the run and fails the test.
func (r *localRun) waitFor(re *regexp.Regexp, d time.Duration) []string {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for {
		if m := re.FindStringSubmatch(r.log.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			r.cmd.Process.Kill()
			r.t.Fatalf("no %q in the output after %v:\n%s", re, d, r.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// signal sends sig ("-9", "-STOP", "-CONT") to the child process whose
// command line is the binary followed by role (e.g. "worker --id w1") and
// returns its pid.
func (r *localRun) signal(role, sig string) string {
	r.t.Helper()
	pid, err := exec.Command("pgrep", "-f", r.bin+" "+role).Output()
	if err != nil {
		r.cmd.Process.Kill()
		r.t.Fatalf("%s not found: %v", role, err)
	}
	p := strings.TrimSpace(string(pid))
	if out, err := exec.Command("kill", sig, p).CombinedOutput(); err != nil {
		r.t.Fatalf("kill %s %s: %v %s", sig, p, err, out)
	}
	return p
}

// wait waits for the run to end and fails the test unless it succeeded.
func (r *localRun) wait(what string) string {
	r.t.Helper()
	if err := r.cmd.Wait(); err != nil {
		r.t.Fatalf("tailor local %s: %v\n%s", what, err, r.log.String())
	}
	return r.log.String()
}

// wantEpochs checks that a run's history (OUT/run/history.csv) has one line
// per epoch after its header.
func wantEpochs(t *testing.T, out string, epochs int) {
	t.Helper()
	hist, err := os.ReadFile(filepath.Join(out, "run", "history.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Split(strings.TrimSpace(string(hist)), "\n")) - 1; n != epochs {
		t.Errorf("history has %d epochs, want %d:\n%s", n, epochs, hist)
	}
}
