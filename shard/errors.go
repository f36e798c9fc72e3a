package shard

import (
	"errors"
	"fmt"

	"github.com/tailorml/tailor/store"
)

// Sentinel errors. Errors about damaged bytes wrap ErrCorrupt and one of the
// more specific kinds, so a caller can test for either; they match
// store.ErrCorrupt too. A missing object is store.ErrNotExist.
var (
	// ErrCorrupt means shard or manifest bytes are damaged or inconsistent.
	ErrCorrupt = errors.New("shard: corrupt data")
	// ErrBadMagic means the bytes are not a tailor shard at all.
	ErrBadMagic = errors.New("shard: bad magic")
	// ErrUnsupportedVersion means a shard or manifest of a version this code does not read.
	ErrUnsupportedVersion = errors.New("shard: unsupported version")
	// ErrTruncated means the data ended before the format said it would.
	ErrTruncated = errors.New("shard: truncated")
	// ErrChecksum means a CRC32-C or SHA-256 did not match.
	ErrChecksum = errors.New("shard: checksum mismatch")
	// ErrMismatch means a shard disagrees with its manifest (geometry, record range, size).
	ErrMismatch = errors.New("shard: shard does not match manifest")
	// ErrUnknownSplit means the manifest has no split by that name.
	ErrUnknownSplit = errors.New("shard: unknown split")
	// ErrBadInput means Build met an input it would skip, with BuildConfig.Strict set.
	ErrBadInput = errors.New("shard: bad input")
	// ErrDestinationNotEmpty means Build was pointed at a store that already holds objects.
	ErrDestinationNotEmpty = errors.New("shard: destination not empty")
)

// corruptError reports damaged bytes; it matches ErrCorrupt, its kind and
// store.ErrCorrupt (so the store's retries take it for permanent).
type corruptError struct {
	kind error
	msg  string
}

func (e *corruptError) Error() string { return e.msg + ": " + e.kind.Error() }

func (e *corruptError) Is(target error) bool {
	return target == ErrCorrupt || target == e.kind || target == store.ErrCorrupt
}

func (e *corruptError) Unwrap() error { return e.kind }

func corruptf(kind error, format string, args ...any) error {
	return &corruptError{kind: kind, msg: fmt.Sprintf(format, args...)}
}
