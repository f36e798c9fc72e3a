package wire

import (
	"context"
	"fmt"
	"math"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
)

// The Work service is how a worker gets its batches from the coordinator:
//
//	tailor.coord.v1.Work/Next       WorkRequest → WorkReply (unary, long-poll)
//	tailor.coord.v1.Work/ReduceBN   BNRequest → BNReply (bn.go)
//
// A worker calls Next when it is ready for a step, reporting the step it
// just finished; the coordinator answers when the worker's next step is
// open: a batch (a shard and record offsets), "wait" (no work for it in this
// step), or "done" (the run is over).
const (
	WorkServiceName = "tailor.coord.v1.Work"
	MethodWorkNext  = "/" + WorkServiceName + "/Next"
)

// Message types of the Work service.
const (
	TypeWorkRequest MsgType = 16
	TypeWorkReply   MsgType = 17
)

// WorkKind says what a WorkReply carries.
type WorkKind uint8

// Kinds of WorkReply.
const (
	WorkBatch WorkKind = 1 // train on the records IDs as Step
	WorkWait  WorkKind = 2 // no batch for this worker now; ask again
	WorkDone  WorkKind = 3 // the run is over
)

// MaxBatchRecords bounds the offsets of one WorkReply.
const MaxBatchRecords = 1 << 16

// WorkRequest asks for the worker's next batch.
type WorkRequest struct {
	RunID    string
	WorkerID string
	Done     int64   // step the worker finished (its gradient pushed); -1 if none
	Version  int64   // weights version the worker holds
	Loss     float64 // loss of the finished step's batch
	// Gen is the generation of the reply that gave the worker its finished
	// step (0 if none). A coordinator that took over, or rolled the run back
	// to a checkpoint, has another generation and ignores Done.
	Gen uint64
}

// WorkReply is the worker's next batch.
type WorkReply struct {
	RunID    string
	WorkerID string
	Kind     WorkKind
	Step     int64
	Epoch    int64
	IDs      []uint64 // dataset-wide record IDs, in visiting order
	// Offset is where the batch starts in the step's global batch (the
	// records of the step's participants before it, in worker order): a
	// sync worker draws its dropout masks from there
	Offset uint64
	Gen    uint64 // the coordinator's generation (see WorkRequest.Gen)
}

func (r *WorkRequest) marshal() (mem.BufferSlice, error) {
	if err := checkStrings(r.RunID, r.WorkerID); err != nil {
		return nil, err
	}
	h := beginHeader(TypeWorkRequest, 48+len(r.RunID)+len(r.WorkerID))
	h = appendString(h, r.RunID)
	h = appendString(h, r.WorkerID)
	h = appendVarint(h, r.Done)
	h = appendVarint(h, r.Version)
	h = appendFixed64(h, math.Float64bits(r.Loss))
	h = appendUvarint(h, r.Gen)
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *WorkRequest) unmarshal(data mem.BufferSlice) error {
	return decodeSmall(data, TypeWorkRequest, func(d *dec) {
		d.str("run id", &r.RunID)
		d.str("worker id", &r.WorkerID)
		r.Done = d.varint("done step")
		r.Version = d.varint("version")
		r.Loss = math.Float64frombits(d.fixed64("loss"))
		r.Gen = d.uvarint("generation", math.MaxUint64)
	})
}

// MarshalBinary encodes the request.
func (r *WorkRequest) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a request.
func (r *WorkRequest) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

func (r *WorkReply) marshal() (mem.BufferSlice, error) {
	if err := checkStrings(r.RunID, r.WorkerID); err != nil {
		return nil, err
	}
	if len(r.IDs) > MaxBatchRecords {
		return nil, fmt.Errorf("wire: %d record ids exceed %d", len(r.IDs), MaxBatchRecords)
	}
	h := beginHeader(TypeWorkReply, 64+len(r.RunID)+len(r.WorkerID)+10*len(r.IDs))
	h = appendString(h, r.RunID)
	h = appendString(h, r.WorkerID)
	h = appendUvarint(h, uint64(r.Kind))
	h = appendVarint(h, r.Step)
	h = appendVarint(h, r.Epoch)
	h = appendUvarint(h, uint64(len(r.IDs)))
	for _, id := range r.IDs {
		h = appendUvarint(h, id)
	}
	h = appendUvarint(h, r.Offset)
	h = appendUvarint(h, r.Gen)
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *WorkReply) unmarshal(data mem.BufferSlice) error {
	return decodeSmall(data, TypeWorkReply, func(d *dec) {
		d.str("run id", &r.RunID)
		d.str("worker id", &r.WorkerID)
		r.Kind = WorkKind(d.uvarint("kind", uint64(WorkDone)))
		if d.err == nil && r.Kind == 0 {
			d.fail("kind")
		}
		r.Step = d.varint("step")
		r.Epoch = d.varint("epoch")
		n := d.int("record id count", MaxBatchRecords)
		if d.err != nil {
			return
		}
		// each id takes at least one byte: do not allocate past the data
		if n > len(d.b) {
			d.fail("record id count")
			return
		}
		r.IDs = r.IDs[:0]
		for i := 0; i < n && d.err == nil; i++ {
			r.IDs = append(r.IDs, d.uvarint("record id", math.MaxUint64))
		}
		r.Offset = d.uvarint("offset", math.MaxUint32)
		r.Gen = d.uvarint("generation", math.MaxUint64)
	})
}

// MarshalBinary encodes the reply.
func (r *WorkReply) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a reply.
func (r *WorkReply) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

func appendFixed64(b []byte, v uint64) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56))
}

// WorkHandler is what the coordinator implements.
type WorkHandler interface {
	Next(ctx context.Context, req *WorkRequest) (*WorkReply, error)
	ReduceBN(ctx context.Context, req *BNRequest) (*BNReply, error)
}

var workDesc = grpc.ServiceDesc{
	ServiceName: WorkServiceName,
	HandlerType: (*WorkHandler)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Next",
		Handler: unary(MethodWorkNext, func(srv any, ctx context.Context, req *WorkRequest) (any, error) {
			return srv.(WorkHandler).Next(ctx, req)
		}),
	}, {
		MethodName: "ReduceBN",
		Handler: unary(MethodReduceBN, func(srv any, ctx context.Context, req *BNRequest) (any, error) {
			return srv.(WorkHandler).ReduceBN(ctx, req)
		}),
	}},
	Metadata: "internal/wire",
}

// RegisterWork puts the coordinator's Work service on a gRPC server.
func RegisterWork(s grpc.ServiceRegistrar, h WorkHandler) { s.RegisterService(&workDesc, h) }

// WorkClient is a worker's side of the Work service.
type WorkClient struct {
	conn grpc.ClientConnInterface
}

// NewWorkClient uses conn (dialled with DialOptions).
func NewWorkClient(conn grpc.ClientConnInterface) *WorkClient { return &WorkClient{conn: conn} }

// Next reports the finished step and waits for the next batch.
func (c *WorkClient) Next(ctx context.Context, req *WorkRequest) (*WorkReply, error) {
	rep := new(WorkReply)
	if err := c.conn.Invoke(ctx, MethodWorkNext, req, rep); err != nil {
		return nil, err
	}
	if rep.RunID != req.RunID || rep.WorkerID != req.WorkerID {
		return nil, fmt.Errorf("%w: reply for run %q worker %q", ErrCorrupt, rep.RunID, rep.WorkerID)
	}
	return rep, nil
}
