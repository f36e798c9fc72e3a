package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/checkpoint"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/store"
)

// tailor checkpoints ls / show --verify / rm against a run whose
// checkpoints are written by hand: the current one is marked, an incomplete
// folder is reported, a damaged part fails --verify, and rm refuses the
// current checkpoint without --force.
func TestCheckpointsCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := cluster.StartEtcd(ctx, cluster.EtcdConfig{FastTicks: true, UnsafeNoFsync: true, LogLevel: "fatal"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cli, err := cluster.NewClient(e.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	dir := t.TempDir()
	spec := job.DefaultSpec("r1", dir)
	spec.Checkpoints = filepath.Join(dir, "ck")
	spec.JobID = "job1"
	if err := job.Submit(ctx, cli, spec); err != nil {
		t.Fatal(err)
	}
	st, err := store.NewLocal(spec.Checkpoints)
	if err != nil {
		t.Fatal(err)
	}
	loc := checkpoint.Location{Store: st}
	keys := cluster.RunKeys("r1")
	version := int64(0)
	for i, step := range []int64{10, 20} {
		name := checkpoint.Name(step, i)
		p := &checkpoint.Part{Run: "r1", Server: 0, Servers: 1, Version: step,
			Parts:   []wire.Part{{Name: "w", Kind: wire.Param, Len: 3}},
			Weights: [][]float32{{1, 2, 3}}, M: [][]float32{{0, 0, 0}}, V: [][]float32{{0, 0, 0}}}
		b, err := loc.WritePart(ctx, loc.Dir("r1", "job1", name)+checkpoint.PartObject(0), p)
		if err != nil {
			t.Fatal(err)
		}
		b.Object = checkpoint.PartObject(0)
		m := &checkpoint.Meta{Run: "r1", JobID: "job1", Step: step, Epochs: i, Reason: "steps", Mode: "sync", Parts: []checkpoint.Blob{b},
			Spec: json.RawMessage(`{}`), State: json.RawMessage(`{}`), Best: i == 0}
		if err := loc.WriteMeta(ctx, name, m); err != nil {
			t.Fatal(err)
		}
		if version, err = checkpoint.Publish(ctx, cli, keys, checkpoint.Pointer{JobID: "job1", Name: name, Step: step, Epochs: i, Meta: m.Checksum}, version); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(spec.Checkpoints, "r1", "job1", checkpoint.Name(30, 2)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(spec.Checkpoints, "r1", "job1", checkpoint.Name(30, 2), "ps-000.bin"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := RunContext(ctx, append([]string{"checkpoints"}, append(args, "--etcd", e.Endpoints()[0], "--run", "r1")...), &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, errs := run("ls")
	if code != 0 {
		t.Fatalf("ls: exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[3], "*") || !strings.Contains(lines[3], checkpoint.Name(20, 1)) ||
		!strings.Contains(lines[2], "best") || !strings.Contains(lines[4], "incomplete") {
		t.Errorf("ls:\n%s", out)
	}
	if code, out, errs = run("show", checkpoint.Name(10, 0), "--verify"); code != 0 || !strings.Contains(out, "SHA-256 ok") {
		t.Errorf("show --verify: exit %d\n%s%s", code, out, errs)
	}
	// flags before the action, too
	if code, out, errs = run("--verify", "show", checkpoint.Name(10, 0)); code != 0 || !strings.Contains(out, "SHA-256 ok") {
		t.Errorf("--verify show NAME: exit %d\n%s%s", code, out, errs)
	}
	part := filepath.Join(spec.Checkpoints, "r1", "job1", checkpoint.Name(10, 0), "ps-000.bin")
	raw, _ := os.ReadFile(part)
	raw[len(raw)-40] ^= 1
	os.WriteFile(part, raw, 0o644)
	if code, _, errs = run("show", checkpoint.Name(10, 0), "--verify"); code != 1 || !strings.Contains(errs, "corrupt") {
		t.Errorf("show --verify of a damaged part: exit %d, %s", code, errs)
	}
	if code, _, errs = run("rm", checkpoint.Name(20, 1)); code != 1 || !strings.Contains(errs, "--force") {
		t.Errorf("rm of the current checkpoint: exit %d, %s", code, errs)
	}
	if code, _, errs = run("rm", checkpoint.Name(10, 0)); code != 0 {
		t.Errorf("rm: exit %d, %s", code, errs)
	}
	if _, err := os.Stat(part); !os.IsNotExist(err) {
		t.Errorf("part still there after rm: %v", err)
	}
	if code, _, _ = run("frobnicate"); code != 2 {
		t.Errorf("unknown action: exit %d, want 2", code)
	}
}
