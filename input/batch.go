package input

import "math/rand/v2"

// Record is an image as a batch takes it: its dataset-wide id (which seeds
// its augmentation), its label indices and its pixels (height×width×c
// bytes, row-major HWC). shard.Record is one; input knows nothing else of
// the dataset format.
type Record interface {
	RecordID() uint64
	LabelIndices() []uint16
	RGB() []byte
}

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
func FillInputs[R Record](x []float32, recs []R, h, w, c int, aug Augment, mean, std []float32, seed uint64, epoch int) {
	n := c * h * w
	for i, rec := range recs {
		aug.Apply(x[i*n:(i+1)*n], rec.RGB(), h, w, c, mean, std, SampleSeed(seed, epoch, rec.RecordID()))
	}
}

// FillBatch writes a batch of records as net inputs x (as FillInputs does)
// and 0/1 targets y (len(recs)·labels, one row per record). Workers and the
// single-process trainer prepare batches with it, so both feed the net the
// same numbers.
func FillBatch[R Record](x, y []float32, recs []R, labels, h, w, c int, aug Augment, mean, std []float32, seed uint64, epoch int) {
	FillInputs(x, recs, h, w, c, aug, mean, std, seed, epoch)
	clear(y[:len(recs)*labels])
	for i, rec := range recs {
		for _, l := range rec.LabelIndices() {
			y[i*labels+int(l)] = 1
		}
	}
}
