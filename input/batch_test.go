package input

import (
	"math"
	"slices"
	"testing"

	"github.com/tailorml/tailor/shard"
)

func TestOrder(t *testing.T) {
	a, b := Order(100, 3, 1), Order(100, 3, 1)
	c := Order(100, 3, 2)
	same := true
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("Order is not a function of (seed, epoch)")
		}
		same = same && a[i] == c[i]
	}
	if same {
		t.Error("two epochs have the same order")
	}
	sorted := slices.Sorted(slices.Values(a))
	for i, v := range sorted {
		if v != i {
			t.Fatalf("Order(100) is not a permutation of 0..99: sorted %v", sorted)
		}
	}
}

// FillBatch writes each record's augmented image (Augment.Apply with the
// record's SampleSeed) and its 0/1 targets, whatever was in y before; a
// record's numbers do not depend on the batch it is in.
func TestFillBatch(t *testing.T) {
	const h, w, c, labels, seed, epoch = 8, 8, 3, 5, 9, 2
	n := h * w * c
	aug := DefaultAugment()
	recs := []*shard.Record{
		{ID: 4, Labels: []uint16{0, 3}, Pixels: randImage(h, w, c, 1)},
		{ID: 17, Labels: nil, Pixels: randImage(h, w, c, 2)},
		{ID: 5, Labels: []uint16{4}, Pixels: randImage(h, w, c, 3)},
	}
	x := make([]float32, len(recs)*n)
	y := make([]float32, len(recs)*labels)
	for i := range y {
		y[i] = 7 // stale values must be cleared
	}
	FillBatch(x, y, recs, labels, h, w, c, aug, testMean, testStd, seed, epoch)
	wantY := []float32{1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	if !slices.Equal(y, wantY) {
		t.Errorf("targets %v, want %v", y, wantY)
	}
	for i, rec := range recs {
		want := make([]float32, n)
		aug.Apply(want, rec.Pixels, h, w, c, testMean, testStd, SampleSeed(seed, epoch, rec.ID))
		if !bitsEqual(x[i*n:(i+1)*n], want) {
			t.Errorf("record %d: input differs from Augment.Apply with its sample seed", rec.ID)
		}
	}
	// the last record alone, as another worker would get it
	x1 := make([]float32, n)
	FillInputs(x1, recs[2:], h, w, c, aug, testMean, testStd, seed, epoch)
	if !bitsEqual(x1, x[2*n:]) {
		t.Error("a record's input depends on its place in the batch")
	}
}

func bitsEqual(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(p, q float32) bool { return math.Float32bits(p) == math.Float32bits(q) })
}
