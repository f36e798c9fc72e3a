package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Async and SSP runs checkpoint every K batches too: a run with
// --checkpoint-every 4, stopped (Ctrl-C) after a mid-epoch checkpoint and
// started again with --resume, goes on from that checkpoint in the middle
// of the epoch, and every record is consumed exactly once per epoch.
func TestAsyncResume(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"async", []string{"--mode", "async"}},
		{"ssp", []string{"--mode", "ssp", "--staleness", "1"}},
	} {
		t.Run(c.name, func(t *testing.T) { asyncResume(t, bin, data, c.args) })
	}
}

func asyncResume(t *testing.T, bin, data string, mode []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := t.TempDir()
	args := func(extra ...string) []string {
		return append(append(localArgs(out, data, "--audit"), mode...), extra...)[1:] // startLocal adds "local"
	}
	// slow steps, so that the run is still in the middle of the epoch
	// when the test has seen the checkpoint and stopped it
	slow := []string{"TAILOR_FAULTS=worker.w0.delay=60ms,worker.w1.delay=60ms"}
	r := startLocal(t, ctx, bin, slow, args()...)
	// a mid-epoch checkpoint of the second epoch (a cut every 4 batches;
	// the first epoch's end checkpoints with epochs=1)
	m := r.waitFor(regexp.MustCompile(`msg=checkpoint .*name=(\d+-000001) reason=steps `), 3*time.Minute)
	if err := r.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	_ = r.cmd.Wait() // interrupted: a non-zero exit is expected
	first := r.log.String()
	if strings.Contains(first, "run local finished") {
		t.Fatal("the run finished before it was interrupted; nothing was resumed")
	}
	if out, _ := exec.Command("pgrep", "-f", bin).Output(); len(out) > 0 {
		t.Fatalf("processes left running after Ctrl-C: %s", out)
	}
	if n := len(regexp.MustCompile(`msg=checkpoint .*name=\d+-000000 reason=steps `).FindAllString(first, -1)); n < 3 {
		t.Errorf("%d mid-epoch checkpoints in the first epoch (20 batches, one every 4), want at least 3", n)
	}

	r = startLocal(t, ctx, bin, nil, args("--resume")...)
	text := r.wait("resumed")
	res := regexp.MustCompile(`msg=resumed .*checkpoint=(\d+-\d+) .*mid_epoch=(\w+)`).FindStringSubmatch(text)
	if res == nil {
		t.Fatalf("the second run did not resume:\n%s", text)
	}
	if res[2] != "true" || res[1] < m[1] {
		t.Errorf("resumed from %s (mid-epoch %s), want the mid-epoch checkpoint %s or a later one", res[1], res[2], m[1])
	}
	t.Logf("stopped after checkpoint %s, resumed from %s", m[1], res[1])
	if n := checkAudit(t, filepath.Join(out, "run"), data, 2); n != 1 {
		t.Errorf("%d rollbacks in the audit log, want 1 (the resume)", n)
	}
	wantEpochs(t, out, 2)
}
