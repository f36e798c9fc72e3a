// Package worker is the training worker: it asks the coordinator for its
// next batch, reads the records from shards in the object store (cached and
// prefetched, so compute does not wait), computes the gradient with the net,
// pushes it to the parameter servers and pulls the new weights.
package worker
