package paramserver

import (
	"context"
	"fmt"
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
