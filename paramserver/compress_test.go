package paramserver

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/wire"
)

func (c *psCluster) compressedClient(tb testing.TB, worker string, comp wire.Compression) *wire.Client {
	tb.Helper()
	cl, err := wire.NewClient(wire.ClientConfig{RunID: testRun, WorkerID: worker, Addrs: c.addrs, Spec: c.spec,
		ChunkBytes: wire.MinChunkBytes, Compression: comp})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cl.Close() })
	return cl
}

// viaF16 is what a server decodes from g sent as binary16: every chunk
// (of a server's part, wire.MinChunkBytes) scaled and rounded on its own.
func viaF16(plan *wire.Plan, g [][]float32) [][]float32 {
	out := clone(g)
	const chunk = wire.MinChunkBytes / 4
	for _, p := range plan.Parts {
		if p.Kind != wire.Param {
			continue
		}
		for off := 0; off < p.Len; off += chunk {
			x := out[p.Tensor][p.Offset+off : p.Offset+min(off+chunk, p.Len)]
			b := make([]byte, 2*len(x))
			if err := wire.DecodeF16(x, b, wire.EncodeF16(b, x)); err != nil {
				panic(err)
			}
		}
	}
	return out
}

// Compressed pushes are decoded and applied: with fp16 the servers hold
// exactly Adam on the worker-ordered average of the decoded gradients; a
// top-k push that keeps everything is the uncompressed push; a sparse one
// moves only the weights it sent.
func TestCompressedPush(t *testing.T) {
	const workers, steps = 2, 3
	for _, tc := range []struct {
		name   string
		comp   wire.Compression
		decode func(*wire.Plan, [][]float32) [][]float32
	}{
		{"fp16", wire.Compression{Encoding: wire.EncodingFloat16}, viaF16},
		{"topk=1", wire.Compression{Encoding: wire.EncodingTopK, TopK: 1}, func(_ *wire.Plan, g [][]float32) [][]float32 { return g }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfgs := syncConfigs(t, 2, func(c *Config) { c.Encoding = tc.comp.Encoding })
			c := startCluster(t, NewStaticMembers("w0", "w1"), cfgs...)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			init := tensors(c.spec, 42)
			// Init is float32 whatever the client's compression
			if err := c.compressedClient(t, "coordinator", tc.comp).Init(ctx, init); err != nil {
				t.Fatal(err)
			}
			plan := c.servers[0].Plan()
			ref := newReference(t, cfgs[0], init)
			clients := []*wire.Client{c.compressedClient(t, "w0", tc.comp), c.compressedClient(t, "w1", tc.comp)}
			for step := range int64(steps) {
				var sent [][][]float32
				errs := make([]error, workers)
				done := make(chan int, workers)
				for w := range workers {
					g := grad(c.spec, w, int(step))
					sent = append(sent, tc.decode(plan, g))
					go func() {
						_, errs[w] = clients[w].Push(ctx, step, step, g)
						done <- w
					}()
				}
				for range workers {
					<-done
				}
				if err := errors.Join(errs...); err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
				ref.step(t, sent...)
			}
			into := zeros(c.spec)
			if v, err := clients[0].Pull(ctx, steps, into); err != nil || v != steps {
				t.Fatalf("pull: version %d, %v", v, err)
			}
			sameBits(t, c.spec, into, ref.weights)
			// fp16: 2 bytes a Param float, 4 a State float; counted alike
			// by the clients and the servers (which also received Init)
			var params, state uint64
			for _, tt := range c.spec {
				if tt.Kind == wire.Param {
					params += uint64(tt.Size)
				} else {
					state += uint64(tt.Size)
				}
			}
			pushed := clients[0].PushedBytes() + clients[1].PushedBytes()
			if want := workers * steps * (2*params + 4*state); tc.comp.Encoding == wire.EncodingFloat16 && pushed != want {
				t.Errorf("pushed %d bytes, want %d", pushed, want)
			}
			if in, want := c.status(t, 0).BytesIn+c.status(t, 1).BytesIn, pushed+4*(params+state); in != want {
				t.Errorf("servers received %d bytes, want %d", in, want)
			}
		})
	}

	t.Run("topk=0.01", func(t *testing.T) {
		comp := wire.Compression{Encoding: wire.EncodingTopK, TopK: 0.01}
		c := startCluster(t, NewStaticMembers("w0"), syncConfigs(t, 2, func(c *Config) { c.Encoding = comp.Encoding })...)
		init := initCluster(t, c)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cl := c.compressedClient(t, "w0", comp)
		g := grad(c.spec, 0, 0)
		if _, err := cl.Push(ctx, 0, 0, g); err != nil {
			t.Fatal(err)
		}
		into := zeros(c.spec)
		if _, err := cl.Pull(ctx, 1, into); err != nil {
			t.Fatal(err)
		}
		// Adam's first step moves exactly the weights with a nonzero
		// gradient: at most TopKCount of every chunk
		moved, most := 0, 0
		for _, p := range c.servers[0].Plan().Parts {
			if p.Kind != wire.Param {
				continue
			}
			for off := 0; off < p.Len; off += wire.MinChunkBytes / 4 {
				most += wire.TopKCount(min(wire.MinChunkBytes/4, p.Len-off), comp.TopK)
			}
		}
		for i, tt := range c.spec {
			for j := range init[i] {
				if tt.Kind == wire.State {
					if into[i][j] != g[i][j] {
						t.Fatalf("%s[%d] = %v, want the pushed value %v", tt.Name, j, into[i][j], g[i][j])
					}
				} else if into[i][j] != init[i][j] {
					moved++
				}
			}
		}
		if moved == 0 || moved > most {
			t.Errorf("%d weights moved, want 1..%d", moved, most)
		}
		if cl.PushedBytes() > uint64(8*most+4*32) {
			t.Errorf("pushed %d bytes, want at most %d", cl.PushedBytes(), 8*most+4*32)
		}
	})
}

// A push encoded otherwise than the run's compression is refused and
// counted, and the weights do not change.
func TestCompressionMismatch(t *testing.T) {
	fp16 := wire.Compression{Encoding: wire.EncodingFloat16}
	topk := wire.Compression{Encoding: wire.EncodingTopK, TopK: 0.1}
	for _, tc := range []struct {
		server wire.Encoding
		client wire.Compression
		raw    bool // a raw push whose State chunks are fp16
	}{
		{server: wire.EncodingFloat16},
		{server: wire.EncodingFloat32, client: fp16},
		{server: wire.EncodingFloat32, client: topk},
		{server: wire.EncodingTopK, client: fp16},
		{server: wire.EncodingFloat16, raw: true},
	} {
		t.Run(fmt.Sprintf("server %s, client %s, raw %v", tc.server, tc.client.Encoding, tc.raw), func(t *testing.T) {
			c := startCluster(t, NewStaticMembers("w0"), syncConfigs(t, 1, func(c *Config) { c.Encoding = tc.server })...)
			init := initCluster(t, c)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var err error
			if tc.raw {
				chunks := pushChunks(c.servers[0].Plan(), 0, "w0", 0, grad(c.spec, 0, 0))
				for _, ch := range chunks {
					x := wire.Floats(ch.Payload)
					b := make([]byte, 2*len(x))
					ch.Encoding, ch.Count, ch.Scale = wire.EncodingFloat16, len(x), wire.EncodeF16(b, x)
					ch.Payload = b
				}
				var reply *wire.PushReply
				if reply, err = rawPush(t, c.addrs[0], chunks); err == nil && !reply.Accepted {
					err = &wire.RejectedError{Reason: reply.Reason}
				}
			} else {
				_, err = c.compressedClient(t, "w0", tc.client).Push(ctx, 0, 0, grad(c.spec, 0, 0))
			}
			if re := (*wire.RejectedError)(nil); !errors.As(err, &re) || re.Reason != wire.ReasonEncoding {
				t.Fatalf("got %v, want a rejection for %s", err, wire.ReasonEncoding)
			}
			if n := rejected(c.status(t, 0), wire.ReasonEncoding); n != 1 {
				t.Errorf("%s counter %d, want 1", wire.ReasonEncoding, n)
			}
			into := zeros(c.spec)
			if v, err := c.client(t, "w0").Pull(ctx, 0, into); err != nil || v != 0 {
				t.Fatalf("pull: version %d, %v", v, err)
			}
			sameBits(t, c.spec, into, init)
		})
	}
}

// A compressed gradient that decodes to Inf or NaN is refused like an
// uncompressed one.
func TestCompressedNonFinite(t *testing.T) {
	c := startCluster(t, NewStaticMembers("w0"), syncConfigs(t, 1, func(c *Config) { c.Encoding = wire.EncodingFloat16 })...)
	init := initCluster(t, c)
	chunks := pushChunks(c.servers[0].Plan(), 0, "w0", 0, grad(c.spec, 0, 0))
	plan := c.servers[0].Plan()
	for _, ch := range chunks {
		if plan.Parts[ch.Part].Kind != wire.Param {
			continue
		}
		x := wire.Floats(ch.Payload)
		b := make([]byte, 2*len(x))
		ch.Encoding, ch.Count, ch.Scale = wire.EncodingFloat16, len(x), wire.EncodeF16(b, x)
		ch.Payload = b
	}
	chunks[1].Payload[4], chunks[1].Payload[5] = 0x00, 0x7c // +Inf in binary16
	reply, err := rawPush(t, c.addrs[0], chunks)
	if err != nil || reply.Accepted || reply.Reason != wire.ReasonNonFinite {
		t.Fatalf("got %+v, %v; want a rejection for %s", reply, err, wire.ReasonNonFinite)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	into := zeros(c.spec)
	if _, err := c.client(t, "w0").Pull(ctx, 0, into); err != nil {
		t.Fatal(err)
	}
	sameBits(t, c.spec, into, init)
}
