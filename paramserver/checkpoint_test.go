package paramserver

import (
	"bytes"
	"context"
	"errors"
	"github.com/tailorml/tailor/internal/job"
	"io"
	"testing"
	"time"

	"github.com/tailorml/tailor/checkpoint"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/store"
)

// Two servers save their parts through the Checkpoint RPC; a damaged blob
// is refused on restore; fresh servers restored from the blobs continue
// exactly like the originals.
func TestCheckpointSaveRestore(t *testing.T) {
	st, err := store.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	loc := checkpoint.Location{Store: st, Prefix: "ck/"}
	cfgs := func() []Config {
		a, b := testConfig(t, job.ModeSync, 2, 0), testConfig(t, job.ModeSync, 2, 1)
		a.Checkpoints, b.Checkpoints = loc, loc
		return []Config{a, b}
	}
	orig := startCluster(t, NewStaticMembers("w0"), cfgs()...)
	initCluster(t, orig)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w := orig.client(t, "w0")
	for step := range int64(3) {
		if _, err := w.Push(ctx, step, step, grad(orig.spec, 0, int(step))); err != nil {
			t.Fatal(err)
		}
	}
	reqs := func(op wire.CheckpointOp, reps []*wire.CheckpointReply) []*wire.CheckpointRequest {
		out := make([]*wire.CheckpointRequest, 2)
		for i := range out {
			out[i] = &wire.CheckpointRequest{Op: op, Version: 3, Object: "ck/c1/" + checkpoint.PartObject(i)}
			if reps != nil {
				out[i].SHA256, out[i].Bytes = reps[i].SHA256, reps[i].Bytes
			}
		}
		return out
	}
	saved, err := w.Checkpoint(ctx, reqs(wire.CheckpointSave, nil))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range saved {
		if r.Version != 3 || r.Bytes <= 0 || len(r.SHA256) != 64 {
			t.Fatalf("server %d saved %+v", i, r)
		}
	}
	// a version already passed cannot be saved any more
	if _, err := w.Checkpoint(ctx, []*wire.CheckpointRequest{{Op: wire.CheckpointSave, Version: 1, Object: "ck/x/a"}, {Op: wire.CheckpointSave, Version: 1, Object: "ck/x/b"}}); err == nil {
		t.Error("saved a version the servers have passed")
	}

	fresh := startCluster(t, NewStaticMembers("w0"), cfgs()...)
	wf := fresh.client(t, "w0")
	// damage server 1's blob: the restore is refused with ReasonCorrupt
	obj := "ck/c1/" + checkpoint.PartObject(1)
	raw := readAll(t, st, obj)
	bad := bytes.Clone(raw)
	bad[len(bad)/3] ^= 0x01
	put(t, st, obj, bad)
	_, err = wf.Checkpoint(ctx, reqs(wire.CheckpointRestore, saved))
	var re *wire.RejectedError
	if !errors.As(err, &re) || re.Reason != wire.ReasonCorrupt {
		t.Fatalf("restore of a damaged blob: got %v, want %s", err, wire.ReasonCorrupt)
	}
	put(t, st, obj, raw)
	if _, err := wf.Checkpoint(ctx, reqs(wire.CheckpointRestore, saved)); err != nil {
		t.Fatal(err)
	}
	// both continue with the same gradient to the same weights
	for _, c := range []*wire.Client{w, wf} {
		if _, err := c.Push(ctx, 3, 3, grad(orig.spec, 0, 3)); err != nil {
			t.Fatal(err)
		}
	}
	a, b := zeros(orig.spec), zeros(orig.spec)
	if _, err := w.Pull(ctx, 4, a); err != nil {
		t.Fatal(err)
	}
	if _, err := wf.Pull(ctx, 4, b); err != nil {
		t.Fatal(err)
	}
	sameBits(t, orig.spec, b, a)
}

func readAll(t *testing.T, st store.Store, name string) []byte {
	t.Helper()
	rc, err := st.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func put(t *testing.T, st store.Store, name string, b []byte) {
	t.Helper()
	if err := st.Put(context.Background(), name, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
}
