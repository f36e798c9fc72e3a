package e2e

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/eval/tensorboard"
)

// localRun is a `tailor local` cluster a test started, with its combined
// output.
type localRun struct {
	t   *testing.T
	bin string
	cmd *exec.Cmd
	log syncBuffer
}

// startLocal starts `tailor local --verbose` with args (the processes'
// lines in its output, for waitFor); env is added to the environment.
func startLocal(t *testing.T, ctx context.Context, bin string, env []string, args ...string) *localRun {
	t.Helper()
	r := &localRun{t: t, bin: bin, cmd: exec.CommandContext(ctx, bin, append([]string{"local", "--verbose"}, args...)...)}
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

// wantTensorBoard checks the leader's TensorBoard event files: in
// OUT/run/tensorboard, every file reads (CRCs and events), they hold
// train/loss, val/loss and val/mAP for each of the epochs with
// history.csv's values, and each has an identical copy beside the
// checkpoints in the store (under OUT, as the embedded S3 server or the
// file store keeps it).
func wantTensorBoard(t *testing.T, out string, epochs int) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(out, "run", "tensorboard", tensorboard.Prefix+"*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no event files in %s: %v", filepath.Join(out, "run", "tensorboard"), err)
	}
	got := map[int64]map[string]float64{}
	for _, f := range files {
		evs, err := tensorboard.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			for _, s := range ev.Scalars {
				if got[ev.Step] == nil {
					got[ev.Step] = map[string]float64{}
				}
				got[ev.Step][s.Tag] = s.Value
			}
		}
		// the copy in the store
		var copies []string
		_ = filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && d.Name() == filepath.Base(f) && p != f && filepath.Base(filepath.Dir(p)) == "tensorboard" {
				copies = append(copies, p)
			}
			return nil
		})
		want, _ := os.ReadFile(f)
		if len(copies) != 1 {
			t.Errorf("%s: copies in the store %v, want one", filepath.Base(f), copies)
		} else if b, err := os.ReadFile(copies[0]); err != nil || !bytes.Equal(b, want) {
			t.Errorf("%s: the store's copy %s differs (%v)", f, copies[0], err)
		}
	}
	hist, err := os.ReadFile(filepath.Join(out, "run", "history.csv"))
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSpace(string(hist)), "\n")[1:]
	if len(rows) != epochs || len(got) != epochs {
		t.Fatalf("history has %d epochs, the event files %d, want %d", len(rows), len(got), epochs)
	}
	for _, row := range rows {
		f := strings.Split(row, ",")
		ep, _ := strconv.ParseInt(f[0], 10, 64)
		for tag, col := range map[string]int{"train/loss": 1, "val/loss": 2, "val/mAP": 3, "train/lr": 8} {
			want, _ := strconv.ParseFloat(f[col], 64)
			if g, ok := got[ep][tag]; !ok || math.Abs(g-want) > 1e-5*math.Max(1, math.Abs(want)) {
				t.Errorf("epoch %d: %s = %v (present %v), history.csv has %v", ep, tag, g, ok, want)
			}
		}
	}
}

// wantCalmOutput checks what `tailor local` without --verbose wrote (its
// output not a terminal): no process's log line, and status lines at a
// modest rate (one when the state or the epoch changes, one every 10 s,
// the last one); and that OUT/logs has a file per process with its lines. It returns the log files' contents by name.
func wantCalmOutput(t *testing.T, out, output string, workers int, took time.Duration) map[string]string {
	t.Helper()
	logs := map[string]string{}
	files, _ := filepath.Glob(filepath.Join(out, "logs", "*.log"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		logs[filepath.Base(f)] = string(b)
	}
	want := map[string]string{"coordinator-coord-a.log": `msg="standing for election"`, "coordinator-coord-b.log": `msg="standing for election"`,
		"paramserver-ps0.log": "msg=", "paramserver-ps1.log": "msg="}
	for i := range workers {
		want[fmt.Sprintf("worker-w%d.log", i)] = "msg="
	}
	for name, line := range want {
		if !strings.Contains(logs[name], line) {
			t.Errorf("OUT/logs/%s lacks %q: %.500s", name, line, logs[name])
		}
	}
	if !strings.Contains(logs["coordinator-coord-a.log"]+logs["coordinator-coord-b.log"], `msg="leading the run"`) {
		t.Error(`neither coordinator's log has msg="leading the run"`)
	}
	if len(logs) != len(want) {
		t.Errorf("log files %v, want %d", slices.Sorted(maps.Keys(logs)), len(want))
	}
	if strings.Contains(output, `msg="leading the run"`) || strings.Contains(output, `msg="run done"`) || strings.Contains(output, "| ") {
		t.Errorf("the output has the processes' lines without --verbose:\n%s", output)
	}
	status := strings.Count(output, "\nstatus ")
	// every 10 s, and for each of: waiting, running, each epoch begun,
	// done, the last line
	epochs := 2
	if most := int(took/(10*time.Second)) + 1 + epochs + 4; status < 2 || status > most {
		t.Errorf("%d status lines in %v, want 2 to %d:\n%s", status, took.Round(time.Second), most, output)
	}
	t.Logf("%d status lines in %v", status, took.Round(time.Second))
	// the last one: the run's end, with the leader's last numbers
	var last string
	for l := range strings.SplitSeq(output, "\n") {
		if strings.HasPrefix(l, "status ") {
			last = l
		}
	}
	want1 := fmt.Sprintf("run local done; epoch %d/%d, all trained", epochs, epochs)
	want2 := regexp.MustCompile(fmt.Sprintf(`val mAP 0\.\d{4} \(epoch %d\)`, epochs))
	if !strings.Contains(last, want1) || !want2.MatchString(last) {
		t.Errorf("last status line %q: want %q and %s", last, want1, want2)
	}
	return logs
}
