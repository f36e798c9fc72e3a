package wire

import (
	"encoding/binary"
	"fmt"
	"math"

	"google.golang.org/grpc/mem"
)

// This file holds the layout limits every message obeys, the message types
// of the parameter-server service, and the small messages of a worker's
// push and pull: PushReply, PullRequest and IdleRequest. The chunks
// themselves are in chunk.go, the status and checkpoint messages in
// control.go, the header encoding in header.go.

// Layout limits.
const (
	magic     = 0xA7
	prefixLen = 4 // magic, type, header length (u16 LE)

	// MaxHeaderBytes bounds a message's header (everything but a chunk's
	// payload).
	MaxHeaderBytes = 1<<16 - 1
	// MaxStringBytes bounds run ids, worker ids, modes and reasons.
	MaxStringBytes = 255
	// MaxChunkBytes bounds one chunk's payload.
	MaxChunkBytes = 16 << 20
	// DefaultChunkBytes is the payload size clients and servers send by
	// default: big enough that per-message costs vanish, small enough to
	// pipeline.
	DefaultChunkBytes = 1 << 20
	// MinChunkBytes is the smallest chunk a pull may ask for.
	MinChunkBytes = 4 << 10
	// MaxMessageBytes bounds any message: the gRPC receive limit.
	MaxMessageBytes = MaxChunkBytes + MaxHeaderBytes
	// maxReasons bounds StatusReply.Rejected.
	maxReasons = 64
)

// MsgType is a message's second byte.
type MsgType uint8

// Message types.
const (
	TypePushChunk     MsgType = 1
	TypePushReply     MsgType = 2
	TypePullRequest   MsgType = 3
	TypePullChunk     MsgType = 4
	TypeStatusRequest MsgType = 5
	TypeStatusReply   MsgType = 6
	TypeIdleRequest   MsgType = 9
	TypeCkptRequest   MsgType = 10
	TypeCkptReply     MsgType = 11
)

// PushReply answers Push and Init.
type PushReply struct {
	RunID    string
	WorkerID string
	Server   int
	Step     int64 // the pushed step
	Version  int64 // the server's version after handling the push
	Accepted bool
	Reason   string // a Reason constant when not accepted
}

// PullRequest asks a server for its weights once its version is at least
// MinVersion.
type PullRequest struct {
	RunID      string
	WorkerID   string
	Plan       uint64
	Server     int
	MinVersion int64
	ChunkBytes int    // wanted payload size; the server clamps it
	Flags      uint64 // FlagChecksum: checksum the chunks
}

// IdleRequest tells a server that a worker has no batch to work on for
// now (bounded staleness: an idle worker does not hold the others back).
// The worker's next push makes it active again. Servers of the other modes
// accept it and ignore it. The reply is a PushReply with Step echoed.
type IdleRequest struct {
	RunID    string
	WorkerID string
	Step     int64 // the worker's next step (its pushes so far)
}

// ---- PushReply ----

func (r *PushReply) marshal() (mem.BufferSlice, error) {
	if err := checkStrings(r.RunID, r.WorkerID, r.Reason); err != nil {
		return nil, err
	}
	if r.Server < 0 {
		return nil, fmt.Errorf("wire: server %d", r.Server)
	}
	h := beginHeader(TypePushReply, 48+len(r.RunID)+len(r.WorkerID)+len(r.Reason))
	h = appendString(h, r.RunID)
	h = appendString(h, r.WorkerID)
	h = appendUvarint(h, uint64(r.Server))
	h = appendVarint(h, r.Step)
	h = appendVarint(h, r.Version)
	h = appendUvarint(h, b2u(r.Accepted))
	h = appendString(h, r.Reason)
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *PushReply) unmarshal(data mem.BufferSlice) error {
	return decodeSmall(data, TypePushReply, func(d *dec) {
		d.str("run id", &r.RunID)
		d.str("worker id", &r.WorkerID)
		r.Server = d.int("server", math.MaxInt32)
		r.Step = d.varint("step")
		r.Version = d.varint("version")
		r.Accepted = d.bool("accepted")
		d.str("reason", &r.Reason)
	})
}

// MarshalBinary encodes the reply.
func (r *PushReply) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a reply.
func (r *PushReply) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

// ---- PullRequest ----

func (r *PullRequest) marshal() (mem.BufferSlice, error) {
	if err := checkStrings(r.RunID, r.WorkerID); err != nil {
		return nil, err
	}
	if r.Server < 0 || r.ChunkBytes < 0 {
		return nil, fmt.Errorf("wire: server %d, chunk bytes %d", r.Server, r.ChunkBytes)
	}
	h := beginHeader(TypePullRequest, 48+len(r.RunID)+len(r.WorkerID))
	h = appendString(h, r.RunID)
	h = appendString(h, r.WorkerID)
	h = binary.LittleEndian.AppendUint64(h, r.Plan)
	h = appendUvarint(h, uint64(r.Server))
	h = appendVarint(h, r.MinVersion)
	h = appendUvarint(h, uint64(r.ChunkBytes))
	h = appendUvarint(h, r.Flags)
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *PullRequest) unmarshal(data mem.BufferSlice) error {
	return decodeSmall(data, TypePullRequest, func(d *dec) {
		d.str("run id", &r.RunID)
		d.str("worker id", &r.WorkerID)
		r.Plan = d.fixed64("plan")
		r.Server = d.int("server", math.MaxInt32)
		r.MinVersion = d.varint("min version")
		r.ChunkBytes = d.int("chunk bytes", math.MaxInt32)
		r.Flags = d.uvarint("flags", math.MaxUint64)
	})
}

// MarshalBinary encodes the request.
func (r *PullRequest) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a request.
func (r *PullRequest) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

// ---- IdleRequest ----

func (r *IdleRequest) marshal() (mem.BufferSlice, error) {
	if err := checkStrings(r.RunID, r.WorkerID); err != nil {
		return nil, err
	}
	h := beginHeader(TypeIdleRequest, 24+len(r.RunID)+len(r.WorkerID))
	h = appendString(h, r.RunID)
	h = appendString(h, r.WorkerID)
	h = appendVarint(h, r.Step)
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *IdleRequest) unmarshal(data mem.BufferSlice) error {
	return decodeSmall(data, TypeIdleRequest, func(d *dec) {
		d.str("run id", &r.RunID)
		d.str("worker id", &r.WorkerID)
		r.Step = d.varint("step")
	})
}

// MarshalBinary encodes the request.
func (r *IdleRequest) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a request.
func (r *IdleRequest) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }
