package checkpoint

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/store"
)

func samplePart() *Part {
	p := &Part{Run: "r", Server: 1, Servers: 2, Plan: 0xfeed, Version: 42, AdamStep: 40,
		Parts: []wire.Part{
			{Tensor: 0, Name: "conv1.w", Kind: wire.Param, Offset: 0, Len: 5},
			{Tensor: 1, Name: "bn1.mean", Kind: wire.State, Offset: 0, Len: 3},
		}}
	p.Weights = [][]float32{{1, 2, 3, 4, 5}, {0.5, -0.5, 1e-9}}
	p.M = [][]float32{{0.1, 0.2, 0.3, 0.4, 0.5}, {}}
	p.V = [][]float32{{1e-3, 2e-3, 3e-3, 4e-3, 5e-3}, {}}
	return p
}

func encodePart(t testing.TB, p *Part) ([]byte, [32]byte) {
	t.Helper()
	var buf bytes.Buffer
	sum, n, err := WritePart(&buf, p)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WritePart says %d bytes, wrote %d", n, buf.Len())
	}
	return buf.Bytes(), sum
}

func TestPartRoundTrip(t *testing.T) {
	p := samplePart()
	b, sum := encodePart(t, p)
	got, err := ReadPart(bytes.NewReader(b), int64(len(b)), &sum)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != p.Version || got.AdamStep != p.AdamStep || got.Plan != p.Plan || !slices.Equal(got.Parts, p.Parts) {
		t.Errorf("header: got %+v", got)
	}
	for i := range p.Parts {
		if !slices.Equal(got.Weights[i], p.Weights[i]) || !slices.Equal(got.M[i], p.M[i]) || !slices.Equal(got.V[i], p.V[i]) {
			t.Errorf("part %d: arrays differ", i)
		}
	}
}

// Every single-byte change and every truncation of a part is detected.
func TestPartCorruptionDetected(t *testing.T) {
	b, sum := encodePart(t, samplePart())
	for i := range b {
		c := slices.Clone(b)
		c[i] ^= 0x20
		if _, err := ReadPart(bytes.NewReader(c), int64(len(c)), nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: got %v, want ErrCorrupt", i, err)
		}
	}
	for n := 0; n < len(b); n += 7 {
		if _, err := ReadPart(bytes.NewReader(b[:n]), int64(n), nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: got %v, want ErrCorrupt", n, err)
		}
	}
	other := sum
	other[0] ^= 1
	if _, err := ReadPart(bytes.NewReader(b), int64(len(b)), &other); !errors.Is(err, ErrCorrupt) {
		t.Errorf("digest other than the manifest's: got %v", err)
	}
}

func TestPartRejectsBadArrays(t *testing.T) {
	for name, mut := range map[string]func(p *Part){
		"short weights":  func(p *Part) { p.Weights[0] = p.Weights[0][:4] },
		"moments on bn":  func(p *Part) { p.M[1] = []float32{1, 2, 3} },
		"server ≥ count": func(p *Part) { p.Server = 2 },
		"negative step":  func(p *Part) { p.Version = -1 },
	} {
		p := samplePart()
		mut(p)
		if _, _, err := WritePart(&bytes.Buffer{}, p); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", name, err)
		}
	}
	p := samplePart()
	p.Weights[0][2] = float32(math.NaN())
	b, _ := encodePart(t, p)
	if _, err := ReadPart(bytes.NewReader(b), int64(len(b)), nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("NaN weight: got %v, want ErrCorrupt", err)
	}
}

func sampleMeta() *Meta {
	return &Meta{Run: "r", JobID: "j1", Step: 120, Epochs: 2, Reason: "epoch", Created: time.Unix(1700000000, 0).UTC(), Mode: "sync",
		Labels: []string{"blue", "dress"}, Parts: []Blob{
			{Server: 0, Object: PartObject(0), SHA256: hex.EncodeToString(make([]byte, 32)), Bytes: 100, Version: 120},
			{Server: 1, Object: PartObject(1), SHA256: hex.EncodeToString(bytes.Repeat([]byte{1}, 32)), Bytes: 90, Version: 120},
		},
		Spec: json.RawMessage(`{"run":"r"}`), State: json.RawMessage(`{"epoch":2}`)}
}

func TestMetaChecksum(t *testing.T) {
	b, err := EncodeMeta(sampleMeta())
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	var state struct{ Epoch int }
	if err := json.Unmarshal(m.State, &state); err != nil || m.Step != 120 || m.Parts[1].Bytes != 90 || state.Epoch != 2 {
		t.Errorf("decoded %+v", m)
	}
	edited := bytes.Replace(b, []byte(`"step": 120`), []byte(`"step": 121`), 1)
	if bytes.Equal(edited, b) {
		t.Fatal("edit did not apply")
	}
	if _, err := DecodeMeta(edited); !errors.Is(err, ErrCorrupt) {
		t.Errorf("edited manifest: got %v, want ErrCorrupt", err)
	}
	bad := sampleMeta()
	bad.Parts[1].Server = 5
	if _, err := EncodeMeta(bad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("parts out of order: got %v", err)
	}
	bad = sampleMeta()
	bad.Parts[0].Object = "../escape"
	if _, err := EncodeMeta(bad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("object outside the folder: got %v", err)
	}
}

func TestNames(t *testing.T) {
	n := Name(1234, 7)
	s, e, ok := ParseName(n)
	if !ok || s != 1234 || e != 7 {
		t.Errorf("ParseName(%q) = %d, %d, %v", n, s, e, ok)
	}
	if Name(99, 3) >= Name(100, 0) || Name(100, 0) >= Name(100, 1) {
		t.Error("names do not sort by step, then epochs")
	}
	for _, bad := range []string{"", "12-3", "00000000001x-000001", "000000000001_000001"} {
		if _, _, ok := ParseName(bad); ok {
			t.Errorf("ParseName(%q) accepted", bad)
		}
	}
}

// writeCheckpoint stores a complete checkpoint (parts, then manifest).
func writeCheckpoint(t *testing.T, l Location, step int64, epochs int, best bool) *Meta {
	t.Helper()
	ctx := context.Background()
	name := Name(step, epochs)
	m := &Meta{Run: "r", JobID: "j", Step: step, Epochs: epochs, Reason: "steps", Mode: "sync", Best: best,
		Spec: json.RawMessage(`{}`), State: json.RawMessage(`{}`)}
	for i := range 2 {
		p := samplePart()
		p.Server, p.Version = i, step
		b, sum := encodePart(t, p)
		if err := l.Store.Put(ctx, l.Dir("r", "j", name)+PartObject(i), bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatal(err)
		}
		m.Parts = append(m.Parts, Blob{Server: i, Object: PartObject(i), SHA256: hex.EncodeToString(sum[:]), Bytes: int64(len(b)), Version: step})
	}
	if err := l.WriteMeta(ctx, name, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLocationListReadRetain(t *testing.T) {
	st, err := store.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l := Location{Store: st, Prefix: "checkpoints/"}
	for i, s := range []int64{10, 20, 30, 40, 50} {
		writeCheckpoint(t, l, s, i, s == 20)
	}
	// an incomplete one: a part but no manifest
	if err := st.Put(ctx, l.Dir("r", "j", Name(60, 5))+PartObject(0), bytes.NewReader([]byte("x")), 1); err != nil {
		t.Fatal(err)
	}
	// the leader's TensorBoard event files beside the checkpoints are none
	tb := l.RunDir("r", "j") + "tensorboard/events.out.tfevents.1.host"
	if err := st.Put(ctx, tb, bytes.NewReader([]byte("x")), 1); err != nil {
		t.Fatal(err)
	}
	names, err := l.List(ctx, "r", "j")
	if err != nil || len(names) != 5 || names[4] != Name(50, 4) {
		t.Fatalf("List: %v %v", names, err)
	}
	m, err := l.ReadMeta(ctx, "r", "j", names[2])
	if err != nil || m.Step != 30 {
		t.Fatalf("ReadMeta: %+v %v", m, err)
	}
	for _, b := range m.Parts {
		p, err := l.ReadPart(ctx, "r", "j", names[2], b)
		if err != nil || p.Version != 30 {
			t.Fatalf("ReadPart %d: %v", b.Server, err)
		}
	}
	// a damaged part is caught by its digest
	obj := l.Dir("r", "j", names[2]) + PartObject(1)
	rc, _ := st.Get(ctx, obj)
	var buf bytes.Buffer
	buf.ReadFrom(rc)
	rc.Close()
	raw := buf.Bytes()
	raw[len(raw)/2] ^= 0xff
	if err := st.Put(ctx, obj, bytes.NewReader(raw), int64(len(raw))); err != nil {
		t.Fatal(err)
	}
	if err := l.VerifyPart(ctx, "r", "j", names[2], m.Parts[1]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("damaged part: got %v, want ErrCorrupt", err)
	}
	// keep the newest two, the best (20) and the protected one (10); the
	// incomplete folder newer than every complete one is being written
	removed, err := l.Retain(ctx, "r", "j", 2, Name(10, 0))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{Name(30, 2)}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	left, _ := l.Folders(ctx, "r", "j")
	if want := []string{Name(10, 0), Name(20, 1), Name(40, 3), Name(50, 4), Name(60, 5)}; !slices.Equal(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
	if _, err := l.ReadMeta(ctx, "r", "other-job", names[0]); err == nil {
		t.Error("read another job's checkpoint")
	}
	if _, err := st.Stat(ctx, tb); err != nil {
		t.Errorf("retention removed the TensorBoard file beside the checkpoints: %v", err)
	}
}

// failingPuts fails its first n Puts half-way through the upload with a
// reset connection.
type failingPuts struct {
	store.Store
	n int
}

func (f *failingPuts) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	if f.n > 0 {
		f.n--
		io.CopyN(io.Discard, r, size/2)
		return fmt.Errorf("put %q: write tcp: %w", name, syscall.ECONNRESET)
	}
	return f.Store.Put(ctx, name, r, size)
}

// A part upload that fails half-way is retried from the start by a store
// with retries (the part stream starts over), and the stored part verifies.
func TestWritePartRetried(t *testing.T) {
	local, err := store.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	flaky := &failingPuts{Store: local, n: 2}
	policy := store.RetryPolicy{Budget: 5 * time.Second, Initial: time.Millisecond, Max: 10 * time.Millisecond}
	l := Location{Store: store.WithRetry(flaky, policy)}
	p := samplePart()
	_, want := encodePart(t, p)
	b, err := l.WritePart(ctx, dir0+PartObject(1), p)
	if err != nil {
		t.Fatalf("WritePart: %v", err)
	}
	if flaky.n != 0 || b.SHA256 != hex.EncodeToString(want[:]) {
		t.Fatalf("%d failures left, digest %s; want 0 and %x", flaky.n, b.SHA256, want)
	}
	b.Object = PartObject(1)
	if _, err := l.ReadPart(ctx, "r", "j", "c", b); err != nil {
		t.Fatalf("ReadPart after retries: %v", err)
	}
	// without retries the first failure is the answer
	flaky.n = 1
	if _, err := (Location{Store: flaky}).WritePart(ctx, dir0+PartObject(1), p); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("WritePart without retries: %v, want the reset", err)
	}
}

// dir0 is the folder of checkpoint "c" of run r, job j, at the root.
var dir0 = Location{}.Dir("r", "j", "c")
