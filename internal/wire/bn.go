package wire

import (
	"context"
	"fmt"
	"math"

	"google.golang.org/grpc/mem"
)

// The Work service's ReduceBN synchronises BatchNorm statistics across
// the workers of a sync step (synchronised BatchNorm, as PyTorch's
// SyncBatchNorm):
//
//	tailor.coord.v1.Work/ReduceBN   BNRequest → BNReply (unary, long-poll)
//
// Every participant of step Step sends, for each slot (a BatchNorm layer's
// forward or backward pass), its per-channel sums; the coordinator answers
// every one of them with the same element-wise total over the step's
// participants, summed in rank order, once all have sent theirs.
const MethodReduceBN = "/" + WorkServiceName + "/ReduceBN"

// Message types of ReduceBN.
const (
	TypeBNRequest MsgType = 18
	TypeBNReply   MsgType = 19
)

// MaxBNValues bounds the values of one BNRequest or BNReply (a layer of
// 2047 channels: a count, then a sum and a sum of squares per channel).
const MaxBNValues = 4095

// BNRequest is one worker's contribution to a slot of a step.
type BNRequest struct {
	RunID    string
	WorkerID string
	Gen      uint64 // the generation of the reply that gave the worker the step
	Step     int64
	Slot     int
	Values   []float64
}

// BNReply is the slot's total over the step's participants.
type BNReply struct {
	RunID    string
	WorkerID string
	Step     int64
	Slot     int
	Values   []float64
	// Workers is how many participants' values make the total.
	Workers int
}

func (r *BNRequest) validate() error {
	if err := checkStrings(r.RunID, r.WorkerID); err != nil {
		return err
	}
	return checkBN(r.Step, r.Slot, r.Values)
}

func checkBN(step int64, slot int, vals []float64) error {
	switch {
	case step < 0:
		return fmt.Errorf("step %d", step)
	case slot < 0 || slot > math.MaxInt32:
		return fmt.Errorf("slot %d", slot)
	case len(vals) == 0 || len(vals) > MaxBNValues:
		return fmt.Errorf("%d values, want 1 to %d", len(vals), MaxBNValues)
	}
	for _, v := range vals {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("value %v", v)
		}
	}
	return nil
}

func appendFloats64(h []byte, vals []float64) []byte {
	h = appendUvarint(h, uint64(len(vals)))
	for _, v := range vals {
		h = appendFixed64(h, math.Float64bits(v))
	}
	return h
}

func (d *dec) floats64(what string, dst []float64) []float64 {
	n := d.int(what+" count", MaxBNValues)
	if d.err != nil {
		return dst[:0]
	}
	if 8*n > len(d.b) {
		d.fail(what + " count")
		return dst[:0]
	}
	dst = dst[:0]
	for i := 0; i < n && d.err == nil; i++ {
		dst = append(dst, math.Float64frombits(d.fixed64(what)))
	}
	return dst
}

func (r *BNRequest) marshal() (mem.BufferSlice, error) {
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("wire: batchnorm request: %w", err)
	}
	h := beginHeader(TypeBNRequest, 48+len(r.RunID)+len(r.WorkerID)+8*len(r.Values))
	h = appendString(h, r.RunID)
	h = appendString(h, r.WorkerID)
	h = appendUvarint(h, r.Gen)
	h = appendVarint(h, r.Step)
	h = appendUvarint(h, uint64(r.Slot))
	h = appendFloats64(h, r.Values)
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *BNRequest) unmarshal(data mem.BufferSlice) error {
	err := decodeSmall(data, TypeBNRequest, func(d *dec) {
		d.str("run id", &r.RunID)
		d.str("worker id", &r.WorkerID)
		r.Gen = d.uvarint("generation", math.MaxUint64)
		r.Step = d.varint("step")
		r.Slot = d.int("slot", math.MaxInt32)
		r.Values = d.floats64("value", r.Values)
	})
	if err == nil {
		if verr := r.validate(); verr != nil {
			err = fmt.Errorf("%w: batchnorm request: %w", ErrCorrupt, verr)
		}
	}
	return err
}

// MarshalBinary encodes the request.
func (r *BNRequest) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a request.
func (r *BNRequest) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

func (r *BNReply) validate() error {
	if err := checkStrings(r.RunID, r.WorkerID); err != nil {
		return err
	}
	if r.Workers < 1 || r.Workers > MaxDecideWorkers {
		return fmt.Errorf("%d workers", r.Workers)
	}
	return checkBN(r.Step, r.Slot, r.Values)
}

func (r *BNReply) marshal() (mem.BufferSlice, error) {
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("wire: batchnorm reply: %w", err)
	}
	h := beginHeader(TypeBNReply, 48+len(r.RunID)+len(r.WorkerID)+8*len(r.Values))
	h = appendString(h, r.RunID)
	h = appendString(h, r.WorkerID)
	h = appendVarint(h, r.Step)
	h = appendUvarint(h, uint64(r.Slot))
	h = appendFloats64(h, r.Values)
	h = appendUvarint(h, uint64(r.Workers))
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *BNReply) unmarshal(data mem.BufferSlice) error {
	err := decodeSmall(data, TypeBNReply, func(d *dec) {
		d.str("run id", &r.RunID)
		d.str("worker id", &r.WorkerID)
		r.Step = d.varint("step")
		r.Slot = d.int("slot", math.MaxInt32)
		r.Values = d.floats64("value", r.Values)
		r.Workers = d.int("workers", MaxDecideWorkers)
	})
	if err == nil {
		if verr := r.validate(); verr != nil {
			err = fmt.Errorf("%w: batchnorm reply: %w", ErrCorrupt, verr)
		}
	}
	return err
}

// MarshalBinary encodes the reply.
func (r *BNReply) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a reply.
func (r *BNReply) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

// ReduceBN sends the worker's values for a slot and waits for the total.
func (c *WorkClient) ReduceBN(ctx context.Context, req *BNRequest) (*BNReply, error) {
	rep := new(BNReply)
	if err := c.conn.Invoke(ctx, MethodReduceBN, req, rep); err != nil {
		return nil, err
	}
	switch {
	case rep.RunID != req.RunID || rep.WorkerID != req.WorkerID || rep.Step != req.Step || rep.Slot != req.Slot:
		return nil, fmt.Errorf("%w: batchnorm reply for run %q worker %q step %d slot %d", ErrCorrupt, rep.RunID, rep.WorkerID, rep.Step, rep.Slot)
	case len(rep.Values) != len(req.Values):
		return nil, fmt.Errorf("%w: batchnorm reply of %d values for %d", ErrCorrupt, len(rep.Values), len(req.Values))
	}
	return rep, nil
}
