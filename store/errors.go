package store

import "errors"

// Sentinel errors of the stores.
var (
	// ErrNotExist means the store holds no object by that name.
	ErrNotExist = errors.New("store: object does not exist")
	// ErrCorrupt means an object's bytes are not what they were: damaged,
	// or changed while they were read. Readers that check checksums (the
	// shard and checkpoint formats) report damage with errors of their own
	// that match this one too, so retries (Transient) leave them alone.
	ErrCorrupt = errors.New("store: corrupt object")
	// ErrNoBucket means the S3 bucket does not exist.
	ErrNoBucket = errors.New("store: s3 bucket does not exist")
	// ErrAccessDenied means the S3 service refused the credentials, or
	// refused them this operation (SignatureDoesNotMatch,
	// InvalidAccessKeyId, AccessDenied, an expired token).
	ErrAccessDenied = errors.New("store: s3 access denied")
	// ErrUnreachable means the S3 endpoint could not be reached (refused or
	// timed-out connections, DNS failures, TLS failures), after retries.
	ErrUnreachable = errors.New("store: s3 endpoint unreachable")
)
