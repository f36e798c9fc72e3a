// Package shard owns the dataset format: ingest of labelled images into
// fixed-geometry shard files, the manifest that describes them, and the
// readers the trainer uses. The shards live in an object store (package
// store: a local directory or an S3 bucket prefix).
//
// The data flow is
//
//	SRC folder tree or labels.csv ──Build──▶ store.Store: manifest.json + shards/*.shard ──ReadShard──▶ Record
//
// Every byte read back is checked: each record carries a CRC32-C, each shard
// file a SHA-256 recorded in the manifest, and the shard header must agree
// with the manifest's geometry and record ranges. The formats are documented
// in FORMAT.md next to this file.
package shard
