// Package store holds tailor's named objects: a data set's manifest and
// shard files (package shard) and a run's checkpoints (package
// checkpoint). Store is the interface; Local keeps the objects as files in
// a directory, S3 under a prefix of an S3 bucket, on minio-go (S3.md has
// the URL settings and the behaviour). Open opens either from a path or a
// URL. The running roles open stores with OpenRetry: every operation then
// retries transient failures with backoff under a RetryPolicy (WithRetry),
// and a read cut half-way goes on from the byte it stopped at.
//
// Package store/s3local runs an S3 server inside the process (versitygw),
// for tailor local and the tests; store/storetest has an in-memory Store
// and the contract every Store passes.
package store
