package paramserver

import (
	"context"
	"errors"
	"github.com/tailorml/tailor/internal/job"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/wire"
)

func TestSnapshotRestore(t *testing.T) {
	cfg := testConfig(t, job.ModeSync, 1, 0)
	a := startCluster(t, NewStaticMembers("w0"), cfg)
	initCluster(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wa := a.client(t, "w0")
	for step := range int64(2) {
		if _, err := wa.Push(ctx, step, step, grad(a.spec, 0, int(step))); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := a.servers[0].Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if snap.Version != 2 || snap.AdamStep != 2 {
		t.Fatalf("snapshot at version %d, adam step %d; want 2, 2", snap.Version, snap.AdamStep)
	}

	// A fresh server restored from the snapshot continues identically.
	b := startCluster(t, NewStaticMembers("w0"), cfg)
	if err := b.servers[0].Restore(snap); err != nil {
		t.Fatal(err)
	}
	wb := b.client(t, "w0")
	for _, w := range []*wire.Client{wa, wb} {
		if _, err := w.Push(ctx, 2, 2, grad(a.spec, 0, 2)); err != nil {
			t.Fatal(err)
		}
	}
	ga, gb := zeros(a.spec), zeros(a.spec)
	if _, err := wa.Pull(ctx, 3, ga); err != nil {
		t.Fatal(err)
	}
	if _, err := wb.Pull(ctx, 3, gb); err != nil {
		t.Fatal(err)
	}
	sameBits(t, a.spec, gb, ga)

	// SnapshotAt(4) waits for the update that makes version 4.
	got := make(chan *Snapshot, 1)
	go func() {
		s, err := a.servers[0].SnapshotAt(ctx, 4)
		if err != nil {
			t.Error(err)
		}
		got <- s
	}()
	eventually(t, 5*time.Second, "SnapshotAt to wait", func() bool {
		a.servers[0].mu.Lock()
		defer a.servers[0].mu.Unlock()
		return len(a.servers[0].waiters) == 1
	})
	if _, err := wa.Push(ctx, 3, 3, grad(a.spec, 0, 3)); err != nil {
		t.Fatal(err)
	}
	at := <-got
	if at == nil || at.Version != 4 {
		t.Fatalf("SnapshotAt(4): %+v", at)
	}
	if _, err := wa.Pull(ctx, 4, ga); err != nil {
		t.Fatal(err)
	}
	for i, p := range at.Parts {
		want := ga[p.Tensor][p.Offset : p.Offset+p.Len]
		for j := range want {
			if at.Weights[i][j] != want[j] {
				t.Fatalf("SnapshotAt part %s[%d] = %v, pulled %v", p.Name, j, at.Weights[i][j], want[j])
			}
		}
	}
	if _, err := a.servers[0].SnapshotAt(ctx, 1); !errors.Is(err, ErrVersionPassed) {
		t.Errorf("SnapshotAt of a past version: got %v, want ErrVersionPassed", err)
	}
	bad := *snap
	bad.Weights = bad.Weights[1:]
	if err := b.servers[0].Restore(&bad); !errors.Is(err, ErrMismatch) {
		t.Errorf("Restore of a wrong snapshot: got %v, want ErrMismatch", err)
	}
}

func TestSetWeights(t *testing.T) {
	cfgs := []Config{testConfig(t, job.ModeSync, 2, 0), testConfig(t, job.ModeSync, 2, 1)}
	c := startCluster(t, NewStaticMembers("w0"), cfgs...)
	w := tensors(c.spec, 7)
	for _, s := range c.servers {
		if err := s.SetWeights(5, w); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	into := zeros(c.spec)
	if v, err := c.client(t, "w0").Pull(ctx, 5, into); err != nil || v != 5 {
		t.Fatalf("pull: version %d, %v", v, err)
	}
	sameBits(t, c.spec, into, w)
}

func TestMetrics(t *testing.T) {
	c := startCluster(t, NewStaticMembers("w0"), testConfig(t, job.ModeSync, 1, 0))
	initCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.client(t, "w0").Push(ctx, 0, 0, grad(c.spec, 0, 0)); err != nil {
		t.Fatal(err)
	}
	_, _ = c.client(t, "nobody").Push(ctx, 1, 1, grad(c.spec, 0, 0))
	hs := httptest.NewServer(c.servers[0].MetricsHandler())
	defer hs.Close()
	resp, err := http.Get(hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`tailor_ps_pushes_accepted_total{run="run-test",server="0"} 2`,
		`tailor_ps_pushes_rejected_total{reason="unknown_worker",run="run-test",server="0"} 1`,
		`tailor_ps_version{run="run-test",server="0"} 1`,
		`tailor_ps_sync_steps_total{end="all",run="run-test",server="0"} 1`,
		`tailor_ps_step_seconds_count{run="run-test",server="0"} 1`,
		`tailor_ps_bytes_received_total`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}
