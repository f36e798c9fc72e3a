// Package e2e runs the tailor binary as a user would: real processes on
// 127.0.0.1, an embedded etcd, the file object store.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/fashion"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
)

// buildTailor builds the binary once per test run, with OpenBLAS if this
// test binary has it.
func buildTailor(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tailor")
	args := []string{"build", "-o", bin}
	if model.BLAS == "openblas" {
		args = append(args, "-tags", "openblas")
	}
	// the commit into tailor version and the members' records, as the
	// scripts build it (scripts/test.sh sets -buildvcs=false)
	if out, err := exec.Command("bash", "../../scripts/ldflags.sh").Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
		args = append(args, "-ldflags", string(bytes.TrimSpace(out)))
	}
	cmd := exec.Command("go", append(args, "github.com/tailorml/tailor/cmd/tailor")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func testShards(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	fc := fashion.DefaultConfig()
	fc.Source, fc.Out = "../../fashion/testdata", filepath.Join(dir, "images")
	fc.Size, fc.Train, fc.Val, fc.Test = size, 160, 48, 48
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := fashion.Generate(context.Background(), fc, log); err != nil {
		t.Fatal(err)
	}
	bc := shard.DefaultBuildConfig()
	bc.Size, bc.MaxShardBytes = size, int64(size*size*3*40) // several shards
	st, err := store.NewLocal(filepath.Join(dir, "shards"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shard.Build(context.Background(), bc, fc.Out, st, nil, log); err != nil {
		t.Fatal(err)
	}
	return st.Root()
}

// TestLocalCluster trains with `tailor local`: workers, 2 parameter
// servers and a standby coordinator as separate processes, in the sync,
// async and bounded-staleness update modes. Sync and async deal records
// from the split's permutation (shuffle global). The ssp case deals shard
// ranges (shuffle units) with the hardest bound, staleness 0, and 3 workers
// on 4 units of 5 batches: at each epoch's end one worker is still on its
// unit while two have run out of work, and it must not wait for them.
func TestLocalCluster(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	for _, c := range []struct {
		mode     string
		workers  int
		shuffle  string
		unitSize string
	}{
		{"sync", 2, "global", "32"},
		{"async", 2, "global", "32"},
		{"ssp", 3, "units", "40"},
	} {
		t.Run(c.mode, func(t *testing.T) { runLocal(t, bin, data, c.mode, c.workers, c.shuffle, c.unitSize) })
	}
}

func runLocal(t *testing.T, bin, data, mode string, workers int, shuffle, unitSize string) {
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "local", "--out", out, "--data", data, "--workers", strconv.Itoa(workers), "--ps", "2", "--standby",
		"--epochs", "2", "--batch", "8", "--shuffle", shuffle, "--unit-size", unitSize, "--mode", mode, "--staleness", "0")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("tailor local: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	took := time.Since(start)
	for _, want := range []string{"run local finished", "test split", "mAP"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
	wantEpochs(t, out, 2)
	wantTensorBoard(t, out, 2)
	if _, err := model.Load(filepath.Join(out, "run", "model.tailor")); err != nil {
		t.Errorf("model: %v", err)
	}
	// without --verbose: the processes' lines are in their log files, not
	// in the output; the output has a few status lines
	logs := wantCalmOutput(t, out, stdout.String()+stderr.String(), workers, took)
	// both workers trained, and nothing is left running
	for i := range workers {
		if w := fmt.Sprintf("worker-w%d.log", i); !strings.Contains(logs[w], "run done") {
			t.Errorf("worker %s did not report: %s", w, logs[w])
		}
	}
	if out, _ := exec.Command("pgrep", "-f", bin).Output(); len(out) > 0 {
		t.Errorf("processes left running: %s", out)
	}
	// sync runs synchronise BatchNorm through the coordinator; the others
	// have no common step to do it in
	re := regexp.MustCompile(`msg="run done".* bn_sync_s=([0-9.e+-]+)`)
	var ms [][]string
	for i := range workers {
		ms = append(ms, re.FindAllStringSubmatch(logs[fmt.Sprintf("worker-w%d.log", i)], -1)...)
	}
	if len(ms) != workers {
		t.Errorf("%d workers' \"run done\" lines with bn_sync_s, want %d", len(ms), workers)
	}
	for _, m := range ms {
		if synced := m[1] != "0"; synced != (mode == "sync") {
			t.Errorf("%s: a worker spent %ss in BatchNorm exchanges", mode, m[1])
		}
	}
}

// A worker killed with SIGKILL in the middle of a sync run: the others
// carry on (its batch and units go to them), tailor local starts it again
// and it gets work, the run completes, and every record is consumed
// exactly once per epoch.
func TestLocalClusterWorkerKilled(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := startLocal(t, ctx, bin, nil, "--out", out, "--data", data, "--workers", "3", "--ps", "2",
		"--epochs", "3", "--batch", "8", "--unit-size", "32", "--audit")
	// wait until the first epoch is done, then kill worker w1
	r.waitFor(regexp.MustCompile(`msg=epoch`), 2*time.Minute)
	killedIn := strings.Count(r.log.String(), "msg=epoch") // epochs done before the kill
	r.signal("worker --id w1", "-9")
	log := r.wait("after a worker was killed")
	if !strings.Contains(log, "worker lost") || !strings.Contains(log, "worker=w1") {
		t.Errorf("the coordinator did not notice w1's death:\n%s", log)
	}
	if !strings.Contains(log, "w1          | exited: signal: killed; restarting in ") {
		t.Errorf("w1 was not restarted:\n%s", log)
	}
	// the restarted w1 trained: steps.csv has its losses in an epoch after
	// the one it was killed in
	steps, _ := os.ReadFile(filepath.Join(out, "run", "steps.csv"))
	lastEpoch := -1
	for _, line := range strings.Split(string(steps), "\n") {
		f := strings.Split(line, ",")
		if len(f) == 4 && f[2] == "w1" {
			if e, err := strconv.Atoi(f[1]); err == nil && e > lastEpoch {
				lastEpoch = e
			}
		}
	}
	if lastEpoch <= killedIn && killedIn < 2 { // killed in the last epoch, it may have come back too late
		t.Errorf("w1 trained last in epoch %d, was killed in epoch %d: it did not get work after it was restarted\n%s", lastEpoch+1, killedIn+1, log)
	}
	t.Logf("w1 killed in epoch %d, trained again up to epoch %d", killedIn+1, lastEpoch+1)
	wantEpochs(t, out, 3)
	// the dead worker's records went to the others: each exactly once
	if n := checkAudit(t, filepath.Join(out, "run"), data, 3); n != 0 {
		t.Errorf("%d rollbacks, want none (a worker's death needs none)", n)
	}
}
