package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tailorml/tailor/eval/tensorboard"
)

// localArgs are the flags of the resume tests' runs: 2 workers, 2 parameter
// servers, sync, a checkpoint every 4 steps.
func localArgs(out, data string, extra ...string) []string {
	return append([]string{"local", "--verbose", "--out", out, "--data", data, "--workers", "2", "--ps", "2",
		"--epochs", "2", "--batch", "8", "--unit-size", "32", "--checkpoint-every", "4"}, extra...)
}

// stepLosses reads steps.csv: the loss of each (step, worker), the last
// line winning, and the checkpoint named by the last "# resumed" line.
func stepLosses(t *testing.T, path string) (map[string]string, string, int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	losses, resumed, after := map[string]string{}, "", 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if name, ok := strings.CutPrefix(line, "# resumed from "); ok {
			resumed, after = name, 0
			continue
		}
		f := strings.Split(line, ",")
		if len(f) != 4 || f[0] == "step" {
			continue
		}
		losses[f[0]+"/"+f[2]] = f[3]
		after++
	}
	return losses, resumed, after
}

// Exact resume: a sync run stopped (Ctrl-C) after a mid-epoch checkpoint
// and started again with --resume goes on from that checkpoint, and every
// step it runs has, for every worker, the same loss, bit for bit, as in a
// run that was never interrupted.
func TestResumeExact(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	straight := t.TempDir()
	cmd := exec.CommandContext(ctx, bin, localArgs(straight, data)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("uninterrupted run: %v\n%s", err, out)
	}
	want, _, _ := stepLosses(t, filepath.Join(straight, "run", "steps.csv"))

	stopped := t.TempDir()
	r := startLocal(t, ctx, bin, nil, localArgs(stopped, data)[1:]...)
	// stop it once the mid-epoch checkpoint of step 8 is published
	r.waitFor(regexp.MustCompile(`msg=checkpoint .*reason=steps step=8 `), 3*time.Minute)
	if err := r.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	_ = r.cmd.Wait() // interrupted: a non-zero exit is expected
	if strings.Contains(r.log.String(), "run local finished") {
		t.Fatal("the run finished before it was interrupted; nothing was resumed")
	}
	if out, _ := exec.Command("pgrep", "-f", bin).Output(); len(out) > 0 {
		t.Fatalf("processes left running after Ctrl-C: %s", out)
	}

	cmd = exec.CommandContext(ctx, bin, localArgs(stopped, data, "--resume")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("resumed run: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "msg=resumed") {
		t.Errorf("the second run did not resume:\n%s", out)
	}
	got, resumed, after := stepLosses(t, filepath.Join(stopped, "run", "steps.csv"))
	if !strings.Contains(resumed, "checkpoint 0000000000") || after == 0 {
		t.Fatalf("steps.csv has no resumed part (marker %q, %d steps after it)", resumed, after)
	}
	if len(got) != len(want) {
		t.Errorf("%d (step, worker) losses after resume, %d in the uninterrupted run", len(got), len(want))
	}
	same := 0
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("step/worker %s: loss %q, uninterrupted %q", k, g, w)
			continue
		}
		same++
	}
	t.Logf("resumed from %s: %d step losses after it; %d of %d equal bit for bit", resumed, after, same, len(want))
	wantEpochs(t, stopped, 2)
	wantTensorBoard(t, stopped, 2)
	// the resumed run wrote an event file of its own, which starts by
	// saying it goes on from epoch 1 (the checkpoint was mid-epoch 1)
	files, _ := filepath.Glob(filepath.Join(stopped, "run", "tensorboard", tensorboard.Prefix+"*"))
	if len(files) != 2 {
		t.Fatalf("event files %v, want the first run's and the resumed run's", files)
	}
	evs, err := tensorboard.ReadFile(files[1])
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) < 2 || evs[1].SessionLog != tensorboard.SessionStart || evs[1].Step != 1 {
		t.Errorf("the resumed run's events %+v: want a session start at epoch 1 after the file version", evs)
	}
}

// Resume with fewer workers, from a damaged checkpoint: a sync run of 3
// workers stopped after a mid-epoch checkpoint, whose newest checkpoint then
// has a flipped byte, is resumed with 2. The damaged checkpoint is passed
// over with a warning for the one before it; the missing worker's units go
// back to the pool; every record is still consumed exactly once per epoch.
func TestResumeFewerWorkers(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	out := t.TempDir()
	args := func(workers string, extra ...string) []string {
		return append([]string{"--out", out, "--data", data, "--workers", workers, "--ps", "2", "--epochs", "2", "--batch", "8",
			"--unit-size", "24", "--checkpoint-every", "3", "--audit"}, extra...)
	}
	r := startLocal(t, ctx, bin, nil, args("3")...)
	r.waitFor(regexp.MustCompile(`msg=checkpoint .*reason=steps step=6 `), 3*time.Minute)
	if err := r.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	_ = r.cmd.Wait()
	if strings.Contains(r.log.String(), "run local finished") {
		t.Fatal("the run finished before it was interrupted")
	}
	// damage the newest checkpoint: the resume must fall back to the one
	// before it, with a warning
	newest := regexp.MustCompile(`msg=checkpoint .*name=(\d+-\d+) `).FindAllStringSubmatch(r.log.String(), -1)
	name := newest[len(newest)-1][1]
	// the run's checkpoints are objects of the embedded S3 server, files
	// under OUT/s3/root/BUCKET/ (OUT/checkpoints with --store file)
	parts, _ := filepath.Glob(filepath.Join(out, "s3", "root", "tailor", "checkpoints", "local", "*", name, "ps-001.bin"))
	if len(parts) != 1 {
		t.Fatalf("part of checkpoint %s: %v", name, parts)
	}
	raw, err := os.ReadFile(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 0x40
	if err := os.WriteFile(parts[0], raw, 0o644); err != nil {
		t.Fatal(err)
	}
	r = startLocal(t, ctx, bin, nil, args("2", "--resume")...)
	text := r.wait("resumed with 2 workers")
	if !strings.Contains(text, `msg="checkpoint unusable, trying the one before" role=coordinator id=coord-a name=`+name) ||
		!strings.Contains(text, `msg="resumed from an older checkpoint"`) {
		t.Errorf("the damaged checkpoint %s was not passed over with a warning:\n%s", name, text)
	}
	if !regexp.MustCompile(`msg="resumed without a worker of the checkpoint: its units go back to the pool" .*worker=w2`).MatchString(text) {
		t.Errorf("w2's units were not released:\n%s", text)
	}
	if n := checkAudit(t, filepath.Join(out, "run"), data, 2); n != 1 {
		t.Errorf("%d rollbacks in the audit log, want 1 (the resume)", n)
	}
}
