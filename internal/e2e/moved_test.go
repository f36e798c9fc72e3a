package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/fault"
)

// A parameter server comes back on a new address while a worker is idle
// between steps, and the rollback that follows hands that worker a step
// older than its weights: it must pull that step's weights from the
// server's new address. Before workers followed the servers' addresses
// through membership, such a worker asked for the step and pulled from
// the dead address forever, and the sync run made no step (a soak with a
// fault a minute found it). Fault worker.w0.hold keeps w0 idle after its
// first step while ps1 is killed and restarted (tailor local starts it
// on a new port) and the leader rolls back to the start's checkpoint;
// once released, the run must finish well within the step deadline (2
// minutes, the longest anything else would wait for w0), with every
// record consumed once per epoch.
func TestParamServerMovesWhileWorkerIdle(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	out := t.TempDir()
	hold := filepath.Join(t.TempDir(), "hold")
	if err := os.WriteFile(hold, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := startLocal(t, ctx, bin, []string{fault.Env + "=worker.w0.hold=" + hold}, "--out", out, "--data", data, "--workers", "2", "--ps", "2",
		"--epochs", "3", "--batch", "8", "--checkpoint-every", "0", "--step-deadline", "2m", "--stall-timeout", "10m", "--audit")
	r.waitFor(regexp.MustCompile(`w0 +\| .*msg="fault: holding between steps" .*version=1`), 2*time.Minute)
	r.signal("paramserver --index 1", "-9")
	r.waitFor(regexp.MustCompile(`ps1 +\| exited: signal: killed; restarting`), 30*time.Second)
	// the leader rolled back once every server was back: ps1 has its new
	// address in membership
	r.waitFor(regexp.MustCompile(`coordinator +\| .*msg=resumed`), time.Minute)
	released := time.Now()
	if err := os.Remove(hold); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-time.After(75 * time.Second):
			r.cmd.Process.Kill()
		case <-ctx.Done():
		}
	}()
	err := r.cmd.Wait()
	took := time.Since(released)
	text := r.log.String()
	if err != nil {
		t.Fatalf("the run did not finish within 75 s of the release (%v): %v\n%s", took.Round(time.Second), err, text)
	}
	t.Logf("finished %v after w0 was released", took.Round(100*time.Millisecond))
	if !regexp.MustCompile(`w0 +\| .*msg="parameter servers moved; following" .*servers=\[1\]`).MatchString(text) {
		t.Errorf("w0 did not follow ps1 to its new address:\n%s", text)
	}
	if n := strings.Count(text, `w0          | `); n > 400 {
		t.Errorf("w0 wrote %d log lines, a retry loop's flood", n)
	}
	wantEpochs(t, out, 3)
	if n := checkAudit(t, filepath.Join(out, "run"), data, 3); n < 1 {
		t.Errorf("%d rollbacks in the audit log, want at least 1", n)
	}
}
