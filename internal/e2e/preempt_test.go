package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Preemption (a spot VM's notice is a SIGTERM): in a sync run with only
// epoch-end checkpoints, a worker, a parameter server and the leader get
// SIGTERM one after another. The worker leaves after its step and nobody
// rolls back; the parameter server and the leader leave only after the
// leader has checkpointed at the last decided step, so the rollback each
// causes undoes no batch: no completed step is lost. Every record is
// consumed exactly once per epoch, and `tailor local` starts the preempted
// processes again (exit status 143, as a process SIGTERM ended).
func TestPreemption(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := startLocal(t, ctx, bin, nil, "--out", out, "--data", data, "--workers", "2", "--ps", "2", "--standby",
		"--epochs", "6", "--batch", "8", "--unit-size", "32", "--checkpoint-every", "0", "--audit")
	audit := filepath.Join(out, "run", "audit.log")
	progress := func(n int) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for batchLinesOf(audit) < n {
			if time.Now().After(deadline) {
				r.cmd.Process.Kill()
				t.Fatalf("fewer than %d batches consumed after 90 s:\n%s", n, r.log.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	term := func(role string) {
		t.Helper()
		out, err := exec.Command("pgrep", "-f", r.bin+" "+role+"( |$)").Output()
		if err != nil {
			r.cmd.Process.Kill()
			t.Fatalf("%s not running: %v", role, err)
		}
		for _, p := range strings.Fields(string(out)) {
			pid, _ := strconv.Atoi(p)
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}
	}

	progress(6)
	term("worker --id w1")
	r.waitFor(regexp.MustCompile(`w1 +\| .*preemption notice: leaving the run`), time.Minute)
	r.waitFor(regexp.MustCompile(`w1 +\| exited: exit status 143; restarting`), time.Minute)

	progress(batchLinesOf(audit) + 2)
	term("paramserver --index 0")
	r.waitFor(regexp.MustCompile(`msg="preemption checkpoint saved; waiting for the member to leave" .*member=ps0`), time.Minute)
	r.waitFor(regexp.MustCompile(`ps0 +\| exited: exit status 143; restarting`), time.Minute)

	// the leader is whichever coordinator saved that checkpoint
	m := regexp.MustCompile(`(coordinator|standby) +\| .*msg=checkpoint .*reason=preempt`).FindStringSubmatch(r.log.String())
	if m == nil {
		r.cmd.Process.Kill()
		t.Fatalf("no preemption checkpoint in the log:\n%s", r.log.String())
	}
	id := map[string]string{"coordinator": "coord-a", "standby": "coord-b"}[m[1]]
	progress(batchLinesOf(audit) + 2)
	term("coordinator --id " + id)
	r.waitFor(regexp.MustCompile(m[1]+` +\| .*preemption notice: checkpointed and resigned`), time.Minute)
	text := r.wait("after the preemptions")

	if n := strings.Count(text, "reason=preempt"); n < 2 {
		t.Errorf("%d preemption checkpoints in the log, want 2 (the server's, the leader's)", n)
	}
	wantEpochs(t, out, 6)
	rollbacks := checkAudit(t, filepath.Join(out, "run"), data, 6)
	undone := rollbackUndone(t, audit)
	t.Logf("rollbacks: %d; batches each undid: %v", rollbacks, undone)
	if rollbacks < 2 {
		t.Errorf("%d rollbacks, want at least 2 (after the server left, after the leader left)", rollbacks)
	}
	for i, n := range undone {
		if n != 0 {
			t.Errorf("rollback %d undid %d consumed batches: a completed step was lost", i+1, n)
		}
	}
}

// batchLinesOf counts an audit log's batch lines (not rollbacks).
func batchLinesOf(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		if !strings.HasPrefix(sc.Text(), "rollback") {
			n++
		}
	}
	return n
}

// rollbackUndone returns, for each rollback of an audit log but the first
// leader's, how many batches it undid (consumed batches at or after the
// sequence number it rolls back to).
func rollbackUndone(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	var undone []int
	first := true
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		seq, _ := strconv.ParseInt(f[len(f)-1], 10, 64)
		if f[0] == "rollback" {
			n := 0
			for len(seqs) > 0 && seqs[len(seqs)-1] >= seq {
				seqs, n = seqs[:len(seqs)-1], n+1
			}
			if !first {
				undone = append(undone, n)
			}
			first = false
			continue
		}
		s, _ := strconv.ParseInt(f[0], 10, 64)
		seqs = append(seqs, s)
	}
	return undone
}
