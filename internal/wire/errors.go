package wire

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors.
var (
	// ErrBadSpec means a tensor spec or a server count cannot make a plan.
	ErrBadSpec = errors.New("wire: bad tensor spec")
	// ErrCorrupt means message bytes could not be decoded. Decoding errors
	// wrap it together with a more specific error below where there is one.
	ErrCorrupt = errors.New("wire: corrupt message")
	// ErrTruncated means a message ended before its header said it would.
	ErrTruncated = errors.New("wire: truncated message")
	// ErrChecksum means a chunk's payload does not match its CRC-32C.
	ErrChecksum = errors.New("wire: payload checksum mismatch")
	// ErrRejected is wrapped by every *RejectedError.
	ErrRejected = errors.New("wire: rejected")
	// ErrShape means tensors passed to a client do not match the spec.
	ErrShape = errors.New("wire: tensors do not match the spec")
	// ErrNonFinite means a tensor passed to Push holds NaN or ±Inf.
	ErrNonFinite = errors.New("wire: tensor holds NaN or Inf")
)

// Reasons a server rejects a push or a pull. They label the
// tailor_ps_pushes_rejected_total counter and travel in PushReply.Reason.
const (
	ReasonRunID         = "run_id"         // another run's message
	ReasonPlan          = "plan"           // another plan (spec or server count), or the wrong server
	ReasonUnknownWorker = "unknown_worker" // sender is not in the membership
	ReasonShape         = "shape"          // wrong part, offset, length, order, or an incomplete push
	ReasonNonFinite     = "nonfinite"      // NaN or ±Inf in the payload
	ReasonStale         = "stale"          // a step that is already done (sync: late gradient)
	ReasonFuture        = "future"         // a step or version the server has not reached
	ReasonDuplicate     = "duplicate"      // the worker already pushed this step
	ReasonUninitialised = "uninitialised"  // no weights yet (no Init, SetWeights or Restore)
	ReasonInitialised   = "initialised"    // Init on a server that already has weights
	ReasonCorrupt       = "corrupt"        // undecodable bytes or a checksum mismatch
	ReasonCanceled      = "canceled"       // the sender gave up while the push was held (SSP)
	ReasonClosed        = "closed"         // the server is shutting down
	// ReasonLate: sync with a decider (the coordinator): the step was
	// decided without this gradient (a quorum was reached without it, or
	// the step's deadline passed). The worker redoes its batch.
	ReasonLate = "late"
	// ReasonInconsistent: sync with a decider: the server was told to apply
	// a gradient it does not hold, and has stopped applying sync steps
	// rather than diverge from the other servers.
	ReasonInconsistent = "inconsistent"
	// ReasonEncoding: a chunk encoded otherwise than the run's compression
	// says (or a compressed State, Init or pull chunk).
	ReasonEncoding = "encoding"
)

// Reasons lists every rejection reason, in a fixed order.
var Reasons = []string{
	ReasonRunID, ReasonPlan, ReasonUnknownWorker, ReasonShape, ReasonNonFinite,
	ReasonStale, ReasonFuture, ReasonDuplicate, ReasonUninitialised,
	ReasonInitialised, ReasonCorrupt, ReasonCanceled, ReasonClosed,
	ReasonLate, ReasonInconsistent, ReasonEncoding,
}

// RejectedError is a server's refusal of a push or a pull.
type RejectedError struct {
	Server  int    // index of the server that refused
	Reason  string // one of the Reason constants
	Version int64  // the server's version when it refused (-1 if unknown)
	Detail  string // human-readable context, may be empty
}

func (e *RejectedError) Error() string {
	s := fmt.Sprintf("wire: server %d rejected: %s", e.Server, e.Reason)
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

// Unwrap makes errors.Is(err, ErrRejected) true.
func (e *RejectedError) Unwrap() error { return ErrRejected }

// RejectStatus is the gRPC status a server returns for a refused pull: code
// FailedPrecondition with the reason as message; detail follows after ": ".
func RejectStatus(reason, detail string) error {
	msg := reason
	if detail != "" {
		msg += ": " + detail
	}
	return status.Error(codes.FailedPrecondition, msg)
}

// rejectionFromStatus turns a RejectStatus error back into a *RejectedError;
// other errors come back unchanged.
func rejectionFromStatus(server int, err error) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.FailedPrecondition {
		return err
	}
	msg := st.Message()
	for _, r := range Reasons {
		if msg == r {
			return &RejectedError{Server: server, Reason: r, Version: -1}
		}
		if len(msg) > len(r)+2 && msg[:len(r)+2] == r+": " {
			return &RejectedError{Server: server, Reason: r, Version: -1, Detail: msg[len(r)+2:]}
		}
	}
	return err
}
