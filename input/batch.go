package input

import (
	"math/rand/v2"

	"github.com/tailorml/tailor/shard"
)

// Order is the epoch's shuffle of n records: a permutation of 0..n-1 that is
// a pure function of (seed, epoch). The single-process trainer visits its
// training split in this order, and the cluster's global plan deals the
// same permutation to the workers, so both train on the same batches.
func Order(n int, seed uint64, epoch int) []int {
	return rand.New(rand.NewPCG(seed, uint64(epoch)+0x5eed)).Perm(n)
}

// FillInputs writes the images of recs to x as net inputs: NCHW, normalised
// with mean and std, each h×w×c, augmented when aug is enabled, with the
// augmentation a pure function of (seed, epoch, record id) (see SampleSeed).
// A record's input does not depend on the batch it is in or its place there.
func FillInputs(x []float32, recs []*shard.Record, h, w, c int, aug Augment, mean, std []float32, seed uint64, epoch int) {
	n := c * h * w
	for i, rec := range recs {
		aug.Apply(x[i*n:(i+1)*n], rec.Pixels, h, w, c, mean, std, SampleSeed(seed, epoch, rec.ID))
	}
}

// FillBatch writes a batch of records as net inputs x (as FillInputs does)
// and 0/1 targets y (len(recs)·labels, one row per record). Workers and the
// single-process trainer prepare batches with it, so both feed the net the
// same numbers.
func FillBatch(x, y []float32, recs []*shard.Record, labels, h, w, c int, aug Augment, mean, std []float32, seed uint64, epoch int) {
	FillInputs(x, recs, h, w, c, aug, mean, std, seed, epoch)
	clear(y[:len(recs)*labels])
	for i, rec := range recs {
		for _, l := range rec.Labels {
			y[i*labels+int(l)] = 1
		}
	}
}
