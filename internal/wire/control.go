package wire

import (
	"fmt"
	"math"

	"google.golang.org/grpc/mem"
)

// This file holds the messages with which the coordinator and operators
// look at and order a server: StatusRequest/StatusReply and
// CheckpointRequest/CheckpointReply.

// StatusRequest asks a server for its load and counters.
type StatusRequest struct {
	RunID    string
	WorkerID string // the asker, any name
}

// CheckpointOp says what a CheckpointRequest asks for.
type CheckpointOp uint8

// Checkpoint operations.
const (
	// CheckpointSave: snapshot the server's part at Version (-1: now) and
	// write it to Object in the run's checkpoint store.
	CheckpointSave CheckpointOp = 1
	// CheckpointRestore: read Object, check it against SHA256 and Bytes,
	// and replace the server's state with it.
	CheckpointRestore CheckpointOp = 2
)

// CheckpointRequest is the coordinator's order to save or restore a
// server's part of a checkpoint.
type CheckpointRequest struct {
	RunID    string
	WorkerID string // the asker
	Op       CheckpointOp
	Version  int64
	Object   string // object name in the run's checkpoint store
	SHA256   string // restore: hex digest the blob must have
	Bytes    int64  // restore: its size
}

// CheckpointReply says what the server saved or restored.
type CheckpointReply struct {
	RunID   string
	Server  int
	Version int64
	SHA256  string // hex
	Bytes   int64
}

// ReasonCount is one rejection counter.
type ReasonCount struct {
	Reason string
	Count  uint64
}

// StatusReply is a server's load and counters.
type StatusReply struct {
	RunID       string
	WorkerID    string // echoes the request
	Server      int
	Mode        string
	Initialised bool
	Version     int64 // updates applied (plus the initial version)
	Step        int64 // sync: the step being collected; async/SSP: the slowest active worker's step
	Members     int   // active workers
	Pending     int   // sync: gradients held for the current step; SSP: pushes held back
	BytesIn     uint64
	BytesOut    uint64
	Accepted    uint64
	Steps       uint64 // updates applied since start
	Missing     uint64 // sync: gradients a step went without (deadline, departure, quorum)
	Rejected    []ReasonCount
}

// ---- StatusRequest ----

func (r *StatusRequest) marshal() (mem.BufferSlice, error) {
	if err := checkStrings(r.RunID, r.WorkerID); err != nil {
		return nil, err
	}
	h := beginHeader(TypeStatusRequest, 16+len(r.RunID)+len(r.WorkerID))
	h = appendString(h, r.RunID)
	h = appendString(h, r.WorkerID)
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *StatusRequest) unmarshal(data mem.BufferSlice) error {
	return decodeSmall(data, TypeStatusRequest, func(d *dec) {
		d.str("run id", &r.RunID)
		d.str("worker id", &r.WorkerID)
	})
}

// MarshalBinary encodes the request.
func (r *StatusRequest) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a request.
func (r *StatusRequest) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

// ---- CheckpointRequest / CheckpointReply ----

func (r *CheckpointRequest) marshal() (mem.BufferSlice, error) {
	if err := checkStrings(r.RunID, r.WorkerID, r.Object, r.SHA256); err != nil {
		return nil, err
	}
	h := beginHeader(TypeCkptRequest, 48+len(r.RunID)+len(r.WorkerID)+len(r.Object)+len(r.SHA256))
	h = appendString(h, r.RunID)
	h = appendString(h, r.WorkerID)
	h = appendUvarint(h, uint64(r.Op))
	h = appendVarint(h, r.Version)
	h = appendString(h, r.Object)
	h = appendString(h, r.SHA256)
	h = appendVarint(h, r.Bytes)
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *CheckpointRequest) unmarshal(data mem.BufferSlice) error {
	return decodeSmall(data, TypeCkptRequest, func(d *dec) {
		d.str("run id", &r.RunID)
		d.str("worker id", &r.WorkerID)
		r.Op = CheckpointOp(d.uvarint("op", 255))
		r.Version = d.varint("version")
		d.str("object", &r.Object)
		d.str("sha256", &r.SHA256)
		r.Bytes = d.varint("bytes")
	})
}

// MarshalBinary encodes the request.
func (r *CheckpointRequest) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a request.
func (r *CheckpointRequest) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

func (r *CheckpointReply) marshal() (mem.BufferSlice, error) {
	if err := checkStrings(r.RunID, r.SHA256); err != nil {
		return nil, err
	}
	if r.Server < 0 {
		return nil, fmt.Errorf("wire: server %d", r.Server)
	}
	h := beginHeader(TypeCkptReply, 40+len(r.RunID)+len(r.SHA256))
	h = appendString(h, r.RunID)
	h = appendUvarint(h, uint64(r.Server))
	h = appendVarint(h, r.Version)
	h = appendString(h, r.SHA256)
	h = appendVarint(h, r.Bytes)
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *CheckpointReply) unmarshal(data mem.BufferSlice) error {
	return decodeSmall(data, TypeCkptReply, func(d *dec) {
		d.str("run id", &r.RunID)
		r.Server = d.int("server", math.MaxInt32)
		r.Version = d.varint("version")
		d.str("sha256", &r.SHA256)
		r.Bytes = d.varint("bytes")
	})
}

// MarshalBinary encodes the reply.
func (r *CheckpointReply) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a reply.
func (r *CheckpointReply) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

// ---- StatusReply ----

func (r *StatusReply) marshal() (mem.BufferSlice, error) {
	if err := checkStrings(r.RunID, r.WorkerID, r.Mode); err != nil {
		return nil, err
	}
	if len(r.Rejected) > maxReasons {
		return nil, fmt.Errorf("wire: %d rejection counters exceed %d", len(r.Rejected), maxReasons)
	}
	if r.Server < 0 || r.Members < 0 || r.Pending < 0 {
		return nil, fmt.Errorf("wire: negative server, members or pending")
	}
	h := beginHeader(TypeStatusReply, 128+len(r.RunID)+len(r.WorkerID)+len(r.Rejected)*24)
	h = appendString(h, r.RunID)
	h = appendString(h, r.WorkerID)
	h = appendUvarint(h, uint64(r.Server))
	h = appendString(h, r.Mode)
	h = appendUvarint(h, b2u(r.Initialised))
	h = appendVarint(h, r.Version)
	h = appendVarint(h, r.Step)
	h = appendUvarint(h, uint64(r.Members))
	h = appendUvarint(h, uint64(r.Pending))
	h = appendUvarint(h, r.BytesIn)
	h = appendUvarint(h, r.BytesOut)
	h = appendUvarint(h, r.Accepted)
	h = appendUvarint(h, r.Steps)
	h = appendUvarint(h, r.Missing)
	h = appendUvarint(h, uint64(len(r.Rejected)))
	for _, rc := range r.Rejected {
		if err := checkStrings(rc.Reason); err != nil {
			return nil, err
		}
		h = appendString(h, rc.Reason)
		h = appendUvarint(h, rc.Count)
	}
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *StatusReply) unmarshal(data mem.BufferSlice) error {
	return decodeSmall(data, TypeStatusReply, func(d *dec) {
		d.str("run id", &r.RunID)
		d.str("worker id", &r.WorkerID)
		r.Server = d.int("server", math.MaxInt32)
		d.str("mode", &r.Mode)
		r.Initialised = d.bool("initialised")
		r.Version = d.varint("version")
		r.Step = d.varint("step")
		r.Members = d.int("members", math.MaxInt32)
		r.Pending = d.int("pending", math.MaxInt32)
		r.BytesIn = d.uvarint("bytes in", math.MaxUint64)
		r.BytesOut = d.uvarint("bytes out", math.MaxUint64)
		r.Accepted = d.uvarint("accepted", math.MaxUint64)
		r.Steps = d.uvarint("steps", math.MaxUint64)
		r.Missing = d.uvarint("missing", math.MaxUint64)
		n := d.int("rejection count", maxReasons)
		r.Rejected = r.Rejected[:0]
		for i := 0; i < n && d.err == nil; i++ {
			var rc ReasonCount
			d.str("reason", &rc.Reason)
			rc.Count = d.uvarint("count", math.MaxUint64)
			r.Rejected = append(r.Rejected, rc)
		}
		if d.err != nil {
			r.Rejected = nil
		}
	})
}

// MarshalBinary encodes the reply.
func (r *StatusReply) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a reply.
func (r *StatusReply) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }
