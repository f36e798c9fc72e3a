package e2e

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/cluster"
)

// etcd goes away for 10 s in the middle of a sync run (the member is
// stopped, then started again on the same data and ports, as when its
// machine reboots): every process retries, nobody exits, and the run
// completes with every record consumed exactly once per epoch.
func TestEtcdOutage(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := cluster.EtcdConfig{Dir: filepath.Join(t.TempDir(), "etcd"), FastTicks: true, LogLevel: "fatal"}
	e, err := cluster.StartEtcd(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			e.Close()
		}
	}()
	cfg = e.Config() // the same ports after the restart
	r := startLocal(t, ctx, bin, nil, "--out", out, "--data", data, "--workers", "2", "--ps", "2",
		"--etcd", strings.Join(e.Endpoints(), ","),
		"--epochs", "3", "--batch", "8", "--unit-size", "32", "--checkpoint-every", "4", "--audit")
	r.waitFor(regexp.MustCompile(`msg=checkpoint .*reason=steps step=1[6-9] `), 2*time.Minute)
	e.Close()
	closed = true
	down := time.Now()
	t.Logf("etcd stopped at %s", down.Format("15:04:05.000"))
	time.Sleep(10 * time.Second)
	if e, err = cluster.StartEtcd(ctx, cfg); err != nil {
		r.cmd.Process.Kill()
		t.Fatalf("restarting etcd: %v", err)
	}
	closed = false
	t.Logf("etcd back after %v", time.Since(down).Round(time.Millisecond))
	text := r.wait("after an etcd outage")
	if strings.Contains(text, "| exited:") {
		t.Errorf("a process exited during the outage:\n%s", grepLines(text, "| exited:"))
	}
	// the members kept their leases (a restarted etcd extends them): no
	// parameter server was taken for lost, so the only rollback is the
	// leader's, whose election session ran out while etcd was away
	if strings.Contains(text, `msg="parameter server lost"`) {
		t.Errorf("a parameter server was taken for lost:\n%s", grepLines(text, "parameter server lost"))
	}
	wantEpochs(t, out, 3)
	n := checkAudit(t, filepath.Join(out, "run"), data, 3)
	t.Logf("%d rollbacks; what the processes said of it:\n%s", n, grepLines(text, "level=WARN", "level=ERROR", "msg=resumed"))
}

// grepLines returns the lines of text that contain any of subs.
func grepLines(text string, subs ...string) string {
	var b strings.Builder
	for _, l := range strings.Split(text, "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				b.WriteString(l + "\n")
				break
			}
		}
	}
	return b.String()
}
