package paramserver

import (
	"context"
	"errors"
	"fmt"
	"github.com/tailorml/tailor/internal/job"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/wire"
)

// Pulls of one version in different chunk sizes, with and without
// checksums, all get the weights bit for bit: a version's snapshot is
// checksummed in the chunk size of the pull that made it, and pulls in
// other sizes checksum as they send. Pushes in odd chunk sizes (chunk
// checksums computed while the tensors are checked) are applied exactly.
func TestPullChunkSizes(t *testing.T) {
	cfgs := syncConfigs(t, 2, nil)
	c := startCluster(t, NewStaticMembers("w0"), cfgs...)
	init := initCluster(t, c)
	ref := newReference(t, cfgs[0], init)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type pull struct {
		chunk      int
		noChecksum bool
	}
	pulls := []pull{
		{wire.MinChunkBytes, true}, // makes the snapshot: no checksums
		{wire.MinChunkBytes, false},
		{3*wire.MinChunkBytes + 4, false},
		{0, false},
	}
	client := func(chunk int, noChecksum bool) *wire.Client {
		cl, err := wire.NewClient(wire.ClientConfig{RunID: testRun, WorkerID: "w0", Addrs: c.addrs, Spec: c.spec, ChunkBytes: chunk, NoChecksum: noChecksum})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	for step := range int64(3) {
		for k, p := range pulls {
			into := zeros(c.spec)
			if v, err := client(p.chunk, p.noChecksum).Pull(ctx, step, into); err != nil || v != step {
				t.Fatalf("step %d, pull %+v: version %d, %v", step, p, v, err)
			}
			t.Run(fmt.Sprintf("step=%d/pull=%d", step, k), func(t *testing.T) { sameBits(t, c.spec, into, ref.weights) })
		}
		g := grad(c.spec, 0, int(step))
		if _, err := client(wire.MinChunkBytes*(int(step)+1)+8, false).Push(ctx, step, step, g); err != nil {
			t.Fatalf("push %d: %v", step, err)
		}
		ref.step(t, g)
		pulls[0], pulls[1] = pulls[1], pulls[0] // next, a checksummed pull makes the snapshot
	}
}

// A model big enough that the client checks and checksums a push, and
// the server copies and checksums a version, on every core: the weights
// still arrive bit for bit, and a NaN anywhere is refused, naming the
// first bad tensor in spec order.
func TestBigModelParallelChecks(t *testing.T) {
	spec := wire.Spec{
		{Name: "small", Size: 1000},
		{Name: "big", Size: 3<<20 + 3},
		{Name: "bn/mean", Size: 16, Kind: wire.State},
	}
	cfg := testConfig(t, job.ModeSync, 1, 0)
	cfg.Spec = spec
	c := startCluster(t, NewStaticMembers("w0"), cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := c.client(t, "w0")
	init := tensors(spec, 7)
	if err := cl.Init(ctx, init); err != nil {
		t.Fatal(err)
	}
	into := zeros(spec)
	if v, err := cl.Pull(ctx, 0, into); err != nil || v != 0 {
		t.Fatalf("pull: version %d, %v", v, err)
	}
	sameBits(t, spec, into, init)
	for _, tc := range []struct {
		name string
		bad  map[int][]int // tensor → indexes set to NaN
		want string
	}{
		{"last float of big", map[int][]int{1: {3<<20 + 2}}, `"big"`},
		{"big and state", map[int][]int{1: {5}, 2: {0}}, `"big"`},
		{"small and big", map[int][]int{1: {1 << 20}, 0: {999}}, `"small"`},
	} {
		g := tensors(spec, 8)
		for ti, idx := range tc.bad {
			for _, j := range idx {
				g[ti][j] = float32(math.NaN())
			}
		}
		_, err := cl.Push(ctx, 0, 0, g)
		if !errors.Is(err, wire.ErrNonFinite) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %v naming %s", tc.name, err, wire.ErrNonFinite, tc.want)
		}
	}
	g := tensors(spec, 9)
	if _, err := cl.Push(ctx, 0, 0, g); err != nil {
		t.Fatal(err)
	}
	ref := newReference(t, cfg, init)
	ref.step(t, g)
	if v, err := cl.Pull(ctx, 1, into); err != nil || v != 1 {
		t.Fatalf("pull: version %d, %v", v, err)
	}
	sameBits(t, spec, into, ref.weights)
}
