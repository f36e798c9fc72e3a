package e2e

import (
	clientv3 "go.etcd.io/etcd/client/v3"

	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/eval/tensorboard"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/fault"
	"github.com/tailorml/tailor/shard"
)

// checkAudit reads a run's audit.log (--audit) and checks that, once the
// batches undone by rollbacks are set aside, every training record was
// consumed exactly once in each of the epochs. It returns the rollbacks seen.
func checkAudit(t *testing.T, out, data string, epochs int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, shard.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	var man shard.Manifest
	if err := json.Unmarshal(b, &man); err != nil {
		t.Fatal(err)
	}
	sp, err := man.Split(shard.SplitTrain)
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		seq   int64
		epoch int
		ids   []uint64
	}
	f, err := os.Open(filepath.Join(out, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var log []entry
	rollbacks := -1 // the first leader's start writes one too
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 2 && fs[0] == "rollback" {
			seq, _ := strconv.ParseInt(fs[1], 10, 64)
			for len(log) > 0 && log[len(log)-1].seq >= seq {
				log = log[:len(log)-1]
			}
			rollbacks++
			continue
		}
		if len(fs) < 4 {
			t.Fatalf("audit line %q", sc.Text())
		}
		e := entry{}
		e.seq, _ = strconv.ParseInt(fs[0], 10, 64)
		e.epoch, _ = strconv.Atoi(fs[1])
		for _, s := range fs[3:] {
			id, _ := strconv.ParseUint(s, 10, 64)
			e.ids = append(e.ids, id)
		}
		if n := len(log); n > 0 && e.seq != log[n-1].seq+1 {
			t.Fatalf("audit: batch %d follows %d", e.seq, log[n-1].seq)
		}
		log = append(log, e)
	}
	counts := make([]map[uint64]int, epochs)
	for i := range counts {
		counts[i] = map[uint64]int{}
	}
	for _, e := range log {
		if e.epoch < 0 || e.epoch >= epochs {
			t.Fatalf("audit: epoch %d", e.epoch)
		}
		for _, id := range e.ids {
			counts[e.epoch][id]++
		}
	}
	for ep, c := range counts {
		if len(c) != int(sp.Records) {
			t.Errorf("epoch %d: %d distinct records consumed, want %d", ep, len(c), sp.Records)
		}
		for id, n := range c {
			if n != 1 || id < sp.FirstID || id >= sp.FirstID+uint64(sp.Records) {
				t.Errorf("epoch %d: record %d consumed %d times", ep, id, n)
			}
		}
	}
	return rollbacks
}

// The leader coordinator is killed with SIGKILL in the middle of a sync
// run: the standby wins the election, restores the last checkpoint into
// the parameter servers, and the run completes with every record consumed
// exactly once per epoch.
func TestCoordinatorFailover(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := startLocal(t, ctx, bin, nil, "--out", out, "--data", data, "--workers", "2", "--ps", "2", "--standby",
		"--epochs", "3", "--batch", "8", "--unit-size", "32", "--checkpoint-every", "4", "--audit")
	// kill the leader (whichever of the two won) after the first
	// checkpoint of epoch 2
	m := r.waitFor(regexp.MustCompile(`(coordinator|standby) +\| .*msg=checkpoint .*reason=steps step=1[6-9] `), 2*time.Minute)
	leader, id, other := "coordinator", "coord-a", "standby"
	if m[1] == "standby" {
		leader, id, other = "standby", "coord-b", "coordinator"
	}
	t.Logf("killing %s (%s)", leader, id)
	killed := time.Now()
	r.signal("coordinator --id "+id, "-9")
	r.wait("after the leader was killed")
	text := r.log.String()
	resumed := regexp.MustCompile(other + ` +\| .*msg=resumed`).FindString(text)
	if resumed == "" {
		t.Fatalf("the standby did not resume from a checkpoint:\n%s", text)
	}
	t.Logf("leader killed at %s; %s", killed.Format("15:04:05.000"), resumed)
	wantEpochs(t, out, 3)
	if n := checkAudit(t, filepath.Join(out, "run"), data, 3); n != 1 {
		t.Errorf("%d rollbacks in the audit log, want 1", n)
	}
	// each leader wrote a TensorBoard file of its own; the second one goes
	// on from epoch 2 (the checkpoint was in it)
	wantTensorBoard(t, out, 3)
	files, _ := filepath.Glob(filepath.Join(out, "run", "tensorboard", tensorboard.Prefix+"*"))
	if len(files) != 2 {
		t.Fatalf("event files %v, want one per leader", files)
	}
	evs, err := tensorboard.ReadFile(files[1])
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) < 2 || evs[1].SessionLog != tensorboard.SessionStart || evs[1].Step != 2 {
		t.Errorf("the new leader's events %+v: want a session start at epoch 2 after the file version", evs)
	}
}

// A worker hung with SIGSTOP in the middle of a sync run is declared lost
// within 3 s, the step goes on without it and its records go to the others;
// continued with SIGCONT, it rejoins under a new lease and gets work again.
// Every record is consumed exactly once per epoch. Records are dealt as
// shard ranges (shuffle units), so a unit moves to another worker half-way.
func TestWorkerHangAndRejoin(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := startLocal(t, ctx, bin, nil, "--out", out, "--data", data, "--workers", "3", "--ps", "2",
		"--epochs", "6", "--batch", "8", "--shuffle", "units", "--unit-size", "16", "--audit")
	r.waitFor(regexp.MustCompile(`msg=epoch`), 2*time.Minute)
	stopped := time.Now()
	p := r.signal("worker --id w1", "-STOP")
	lost := regexp.MustCompile(`msg="worker lost" .*worker=w1`)
	for !lost.MatchString(r.log.String()) {
		if time.Since(stopped) > 10*time.Second {
			exec.Command("kill", "-CONT", p).Run()
			r.cmd.Process.Kill()
			t.Fatalf("w1 not declared lost 10 s after SIGSTOP:\n%s", r.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	detected := time.Since(stopped)
	if detected > 3*time.Second {
		t.Errorf("w1 declared lost %v after SIGSTOP, want ≤ 3 s", detected)
	}
	before := strings.Count(r.log.String(), "msg=epoch")
	time.Sleep(time.Second) // the others go on meanwhile
	if out, err := exec.Command("kill", "-CONT", p).CombinedOutput(); err != nil {
		t.Fatalf("kill -CONT: %v %s", err, out)
	}
	text := r.wait("after a worker hung")
	// w1 trained again after it came back: steps.csv has its losses in an
	// epoch after the one it hung in
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
	if lastEpoch <= before {
		t.Errorf("w1 trained last in epoch %d, hung in epoch %d: it did not get work after it came back\n%s", lastEpoch+1, before+1, text)
	}
	t.Logf("w1 declared lost %v after SIGSTOP; trained again up to epoch %d", detected.Round(time.Millisecond), lastEpoch+1)
	if n := checkAudit(t, filepath.Join(out, "run"), data, 6); n != 0 {
		t.Errorf("%d rollbacks, want none", n)
	}
}

// runFaulty runs `tailor local` in sync mode for 2 epochs with --audit,
// 2 parameter servers, args and the faults in TAILOR_FAULTS; it fails the
// test unless the run succeeds, and returns its output, output folder and
// data.
func runFaulty(t *testing.T, faults string, args ...string) (output []byte, out, data string) {
	t.Helper()
	bin := buildTailor(t)
	data = testShards(t, 24)
	out = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"local", "--verbose", "--out", out, "--data", data, "--ps", "2",
		"--epochs", "2", "--batch", "8", "--unit-size", "32", "--audit"}, args...)...)
	cmd.Env = append(os.Environ(), fault.Env+"="+faults)
	output, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tailor local with %s: %v\n%s", faults, err, output)
	}
	return output, out, data
}

// Backup workers: with --quorum 2 of 3, a sync step goes on with the first
// two gradients; the straggler's (fault worker.w2.delay) is dropped as late
// and counted by the parameter servers, and its records are not lost: every
// record is still consumed exactly once per epoch.
func TestStragglerQuorum(t *testing.T) {
	output, out, data := runFaulty(t, "worker.w2.delay=250ms", "--workers", "3", "--quorum", "2")
	late := regexp.MustCompile(`ps[01] +\| .*msg="push rejected" .*worker=w2 .*reason=late`).FindAll(output, -1)
	if len(late) == 0 {
		t.Errorf("no late gradient of the straggler was dropped:\n%s", output)
	}
	t.Logf("%d late pushes of w2 dropped", len(late))
	if n := checkAudit(t, filepath.Join(out, "run"), data, 2); n != 0 {
		t.Errorf("%d rollbacks, want none", n)
	}
}

// A worker that stays a member but does not compute (fault
// worker.w1.bnstall: it sleeps before each step's first synchronised
// BatchNorm exchange) does not hold the run: at the step deadline it is
// left out of the step and benched until it asks for work again, the
// other goes on, and every record is consumed exactly once per epoch.
func TestSyncBatchNormStall(t *testing.T) {
	output, out, data := runFaulty(t, "worker.w1.bnstall=4s", "--workers", "2", "--step-deadline", "2s")
	left := regexp.MustCompile(`coordinator +\| .*msg="worker left out of a step: no work for it until it asks" .*worker=w1`).FindAll(output, -1)
	if len(left) == 0 {
		t.Errorf("the stalled worker was never left out:\n%s", output)
	}
	t.Logf("w1 left out of %d steps", len(left))
	wantEpochs(t, out, 2)
	if n := checkAudit(t, filepath.Join(out, "run"), data, 2); n != 0 {
		t.Errorf("%d rollbacks, want none", n)
	}
}

// A parameter server killed with SIGKILL in the middle of a sync run:
// `tailor local` starts it again, the coordinator pauses, rolls every
// server back to the last checkpoint and the run completes, every record
// consumed exactly once per epoch once the undone batches are set aside.
func TestParamServerKilled(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := startLocal(t, ctx, bin, nil, "--out", out, "--data", data, "--workers", "2", "--ps", "2",
		"--epochs", "3", "--batch", "8", "--unit-size", "32", "--checkpoint-every", "4", "--audit")
	r.waitFor(regexp.MustCompile(`msg=checkpoint .*reason=steps step=1[6-9] `), 2*time.Minute)
	r.signal("paramserver --index 1", "-9")
	text := r.wait("after a parameter server was killed")
	for _, want := range []string{"ps1         | exited: signal: killed; restarting", `msg="parameter server lost"`, "msg=resumed"} {
		if !strings.Contains(text, want) {
			t.Errorf("log lacks %q:\n%s", want, text)
		}
	}
	wantEpochs(t, out, 3)
	if n := checkAudit(t, filepath.Join(out, "run"), data, 3); n < 1 {
		t.Errorf("%d rollbacks in the audit log, want at least 1", n)
	}
}

// The leader's election lease is lost (as when etcd is out of its reach for
// longer than the lease): with no standby, the coordinator stands for
// election again instead of exiting, wins, goes on from the last checkpoint,
// and the run completes with every record consumed once per epoch.
func TestLeaderLeaseLost(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := startLocal(t, ctx, bin, nil, "--out", out, "--data", data, "--workers", "2", "--ps", "2",
		"--epochs", "3", "--batch", "8", "--unit-size", "32", "--checkpoint-every", "4", "--audit")
	etcd := r.waitFor(regexp.MustCompile(`run local: etcd (http://\S+);`), time.Minute)[1]
	r.waitFor(regexp.MustCompile(`msg=checkpoint .*reason=steps step=1[6-9] `), 2*time.Minute)
	cli, err := cluster.NewClient([]string{etcd})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, cluster.RunKeys("local").Election(), clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("election keys: %v, %v", resp, err)
	}
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	text := r.wait("after the leader's lease was revoked")
	for _, want := range []string{"lost leadership; standing for election again", "msg=resumed"} {
		if !strings.Contains(text, want) {
			t.Errorf("log lacks %q:\n%s", want, text)
		}
	}
	if n := checkAudit(t, filepath.Join(out, "run"), data, 3); n != 1 {
		t.Errorf("%d rollbacks in the audit log, want 1", n)
	}
}
