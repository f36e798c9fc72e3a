// Package shard owns the on-disk dataset: ingest of labelled images into
// fixed-geometry shard files, the manifest that describes them, the object
// store they live in, and the readers the trainer uses.
//
// The data flow is
//
//	SRC folder tree or labels.csv ──Build──▶ Store: manifest.json + shards/*.shard ──ReadShard──▶ Record
//
// Every byte read back is checked: each record carries a CRC32-C, each shard
// file a SHA-256 recorded in the manifest, and the shard header must agree
// with the manifest's geometry and record ranges. The formats are documented
// in FORMAT.md next to this file.
package shard
