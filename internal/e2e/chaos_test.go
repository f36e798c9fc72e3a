//go:build chaos

package e2e

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestChaos (go test -tags 'openblas chaos' -run TestChaos ./internal/e2e):
// a sync run of 3 workers, 2 parameter servers and a standby coordinator,
// during which a random worker, then a random parameter server, then the
// leader coordinator are killed with SIGKILL at random moments. The run
// must complete, consume every record exactly once per epoch (rolled-back
// batches set aside), and reach a test mAP no more than 1 point below the
// same run without failures. TAILOR_CHAOS_SEED picks the schedule
// (default: the time; the test logs it).
func TestChaos(t *testing.T) {
	bin := buildTailor(t)
	data := chaosShards(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TAILOR_CHAOS_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	t.Logf("chaos seed %d (TAILOR_CHAOS_SEED)", seed)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	args := func(out string) []string {
		return []string{"--out", out, "--data", data, "--workers", "3", "--ps", "2", "--standby", "--epochs", "6",
			"--batch", "16", "--unit-size", "64", "--checkpoint-every", "10", "--audit"}
	}

	clean := t.TempDir()
	startLocal(t, ctx, bin, nil, args(clean)...).wait("without failures")
	cleanMAP := testMAP(t, clean)

	out := t.TempDir()
	r := startLocal(t, ctx, bin, nil, args(out)...)
	epochs := func(n int) *regexp.Regexp {
		return regexp.MustCompile(`msg=epoch .*epoch=` + strconv.Itoa(n) + ` `)
	}
	pause := func() { time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond) }
	// 1. a worker, during epoch 2
	r.waitFor(epochs(1), 3*time.Minute)
	pause()
	w := "w" + strconv.Itoa(rng.IntN(3))
	t.Logf("killing worker %s", w)
	r.signal("worker --id "+w, "-9")
	// 2. a parameter server, during epoch 3 (tailor local restarts it)
	r.waitFor(epochs(2), 3*time.Minute)
	pause()
	ps := strconv.Itoa(rng.IntN(2))
	t.Logf("killing parameter server %s", ps)
	r.signal("paramserver --index "+ps, "-9")
	// 3. the leader, during epoch 5
	r.waitFor(epochs(4), 4*time.Minute)
	pause()
	m := r.waitFor(regexp.MustCompile(`(coordinator|standby) +\| .*msg="leading the run"`), time.Second)
	id := map[string]string{"coordinator": "coord-a", "standby": "coord-b"}[m[1]]
	// the last leader is the last one to have said so
	if strings.LastIndex(r.log.String(), "standby     | ") > 0 {
		all := regexp.MustCompile(`(coordinator|standby) +\| .*msg="leading the run"`).FindAllStringSubmatch(r.log.String(), -1)
		id = map[string]string{"coordinator": "coord-a", "standby": "coord-b"}[all[len(all)-1][1]]
	}
	t.Logf("killing the leader %s", id)
	r.signal("coordinator --id "+id, "-9")
	text := r.wait("under chaos")
	for _, want := range []string{`msg="worker lost"`, `msg="parameter server lost"`, "msg=resumed"} {
		if !strings.Contains(text, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	wantEpochs(t, out, 6)
	if n := checkAudit(t, filepath.Join(out, "run"), data, 6); n < 2 {
		t.Errorf("%d rollbacks in the audit log, want at least 2 (the parameter server, the leader)", n)
	}
	got := testMAP(t, out)
	t.Logf("test mAP: %.4f under chaos, %.4f without failures", got, cleanMAP)
	// One-sided: what failures could do wrong (lost or doubled updates,
	// records skipped or repeated) makes the model worse. Under chaos the
	// run goes on with 2 workers after the first kill, a smaller global
	// batch and so more updates, which on this short run tends to score
	// higher (+0.7 and +1.6 points in the first two runs).
	if got < cleanMAP-0.01 {
		t.Errorf("test mAP %.4f under chaos, %.4f without: more than 1 point worse", got, cleanMAP)
	}
	if out, _ := exec.Command("pgrep", "-f", bin).Output(); len(out) > 0 {
		t.Errorf("processes left running: %s", out)
	}
}
