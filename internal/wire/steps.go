package wire

import (
	"context"
	"fmt"
	"math"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
)

// This file is the second service of the protocol: the coordinator's
// decisions of sync steps (docs/cluster.md, "Sync mode: a step is decided
// in one place"), asked for by the parameter servers.

// StepsServiceName is the gRPC service through which parameter servers ask
// the coordinator which gradients make a sync step.
const StepsServiceName = "tailor.coord.v1.Steps"

// MethodDecide is the full name of Steps.Decide: DecideRequest →
// DecideReply, unary, a long-poll (it answers once the step is decided, or
// fails with the caller's deadline).
const MethodDecide = "/" + StepsServiceName + "/Decide"

// Message types of the Steps service.
const (
	TypeDecideRequest MsgType = 7
	TypeDecideReply   MsgType = 8
)

// MaxDecideWorkers bounds the worker ids in one DecideRequest or one list
// of a DecideReply. The 64 KiB header bounds them too: with ids of a few
// bytes, thousands fit.
const MaxDecideWorkers = 1 << 12

// Decision is the set of workers whose gradients make sync step Step, the
// same on every parameter server. A server applies the average of exactly
// the Included workers' gradients, summed in the order listed, and nothing
// else.
type Decision struct {
	Step int64
	// Included are the workers whose step-Step gradients make the step, in
	// summation order (worker rank order). Never empty.
	Included []string
	// Excluded are the workers the step went without, sorted: late ones
	// (a quorum was reached without them, or the step's deadline passed)
	// and ones dropped because they left. A worker in neither list was
	// not part of the step.
	Excluded []string
}

// Includes reports whether worker's gradient is in the step.
func (d Decision) Includes(worker string) bool { return slices.Contains(d.Included, worker) }

// Validate checks the decision's shape: a step ≥ 0, at least one included
// worker, non-empty ids of at most MaxStringBytes, no id twice in
// Included, Excluded sorted without repeats and disjoint from Included.
func (d Decision) Validate() error {
	switch {
	case d.Step < 0:
		return fmt.Errorf("decision of step %d", d.Step)
	case len(d.Included) == 0 && len(d.Excluded) == 0:
		// an empty step (nobody's gradient made it) still names the
		// workers it leaves out
		return fmt.Errorf("decision of step %d names nobody", d.Step)
	case len(d.Included) > MaxDecideWorkers || len(d.Excluded) > MaxDecideWorkers:
		return fmt.Errorf("decision of step %d lists %d+%d workers, at most %d each", d.Step, len(d.Included), len(d.Excluded), MaxDecideWorkers)
	}
	seen := make(map[string]bool, len(d.Included))
	for _, w := range d.Included {
		if err := checkWorkerID(w); err != nil {
			return err
		}
		if seen[w] {
			return fmt.Errorf("decision of step %d includes %q twice", d.Step, w)
		}
		seen[w] = true
	}
	if err := checkSortedIDs(d.Excluded); err != nil {
		return fmt.Errorf("decision of step %d: excluded: %w", d.Step, err)
	}
	for _, w := range d.Excluded {
		if seen[w] {
			return fmt.Errorf("decision of step %d both includes and excludes %q", d.Step, w)
		}
	}
	return nil
}

func checkWorkerID(w string) error {
	if w == "" || len(w) > MaxStringBytes {
		return fmt.Errorf("worker id %q: want 1..%d bytes", w, MaxStringBytes)
	}
	return nil
}

// checkSortedIDs checks that ids are valid worker ids in strictly
// increasing order.
func checkSortedIDs(ids []string) error {
	for i, w := range ids {
		if err := checkWorkerID(w); err != nil {
			return err
		}
		if i > 0 && ids[i-1] >= w {
			return fmt.Errorf("worker ids not sorted without repeats: %q before %q", ids[i-1], w)
		}
	}
	return nil
}

// DecideRequest is a parameter server's report for sync step Step: the
// workers whose step-Step gradient it holds completely. It asks for the
// decision and waits for it.
type DecideRequest struct {
	RunID    string
	Server   int // the reporting server's index in the plan
	Step     int64
	Complete []string // sorted, no repeats, at most MaxDecideWorkers
}

// Validate checks the request's fields.
func (r *DecideRequest) Validate() error {
	if err := checkStrings(r.RunID); err != nil {
		return err
	}
	switch {
	case r.Server < 0 || r.Server > math.MaxInt32:
		return fmt.Errorf("server %d", r.Server)
	case r.Step < 0:
		return fmt.Errorf("step %d", r.Step)
	case len(r.Complete) > MaxDecideWorkers:
		return fmt.Errorf("%d workers, at most %d", len(r.Complete), MaxDecideWorkers)
	}
	return checkSortedIDs(r.Complete)
}

// DecideReply carries the decision of a step to the server that asked.
type DecideReply struct {
	RunID    string
	Server   int // echoes the request
	Decision Decision
}

// ---- DecideRequest ----

func (r *DecideRequest) marshal() (mem.BufferSlice, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("wire: decide request: %w", err)
	}
	h := beginHeader(TypeDecideRequest, 32+len(r.RunID)+idsLen(r.Complete))
	h = appendString(h, r.RunID)
	h = appendUvarint(h, uint64(r.Server))
	h = appendVarint(h, r.Step)
	h = appendIDs(h, r.Complete)
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *DecideRequest) unmarshal(data mem.BufferSlice) error {
	err := decodeSmall(data, TypeDecideRequest, func(d *dec) {
		d.str("run id", &r.RunID)
		r.Server = d.int("server", math.MaxInt32)
		r.Step = d.varint("step")
		r.Complete = d.ids("complete", r.Complete)
	})
	if err == nil {
		if verr := r.Validate(); verr != nil {
			err = fmt.Errorf("%w: decide request: %w", ErrCorrupt, verr)
		}
	}
	if err != nil {
		r.Complete = nil
	}
	return err
}

// MarshalBinary encodes the request.
func (r *DecideRequest) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a request.
func (r *DecideRequest) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

// ---- DecideReply ----

func (r *DecideReply) validate() error {
	if err := checkStrings(r.RunID); err != nil {
		return err
	}
	if r.Server < 0 || r.Server > math.MaxInt32 {
		return fmt.Errorf("server %d", r.Server)
	}
	return r.Decision.Validate()
}

func (r *DecideReply) marshal() (mem.BufferSlice, error) {
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("wire: decide reply: %w", err)
	}
	d := &r.Decision
	h := beginHeader(TypeDecideReply, 32+len(r.RunID)+idsLen(d.Included)+idsLen(d.Excluded))
	h = appendString(h, r.RunID)
	h = appendUvarint(h, uint64(r.Server))
	h = appendVarint(h, d.Step)
	h = appendIDs(h, d.Included)
	h = appendIDs(h, d.Excluded)
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *DecideReply) unmarshal(data mem.BufferSlice) error {
	err := decodeSmall(data, TypeDecideReply, func(d *dec) {
		d.str("run id", &r.RunID)
		r.Server = d.int("server", math.MaxInt32)
		r.Decision.Step = d.varint("step")
		r.Decision.Included = d.ids("included", r.Decision.Included)
		r.Decision.Excluded = d.ids("excluded", r.Decision.Excluded)
	})
	if err == nil {
		if verr := r.validate(); verr != nil {
			err = fmt.Errorf("%w: decide reply: %w", ErrCorrupt, verr)
		}
	}
	if err != nil {
		r.Decision.Included, r.Decision.Excluded = nil, nil
	}
	return err
}

// MarshalBinary encodes the reply.
func (r *DecideReply) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a reply.
func (r *DecideReply) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

// ---- id lists ----

func idsLen(ids []string) int {
	n := 0
	for _, w := range ids {
		n += 2 + len(w)
	}
	return n
}

// appendIDs appends a uvarint count and the strings.
func appendIDs(b []byte, ids []string) []byte {
	b = appendUvarint(b, uint64(len(ids)))
	for _, w := range ids {
		b = appendString(b, w)
	}
	return b
}

// ids decodes a list written by appendIDs, reusing buf's storage; an empty
// list decodes as nil.
func (d *dec) ids(what string, buf []string) []string {
	n := d.int(what+" count", MaxDecideWorkers)
	if d.err != nil || n == 0 {
		return nil
	}
	// Every id takes at least 2 bytes (length and one byte): a count the
	// remaining header cannot hold is corrupt, before anything is allocated.
	if n > len(d.b)/2 {
		d.fail(what + " count")
		return nil
	}
	out := buf[:0]
	for i := 0; i < n && d.err == nil; i++ {
		var w string
		d.str(what, &w)
		out = append(out, w)
	}
	return out
}

// ---- service ----

// StepsHandler is what the coordinator implements to answer Decide.
// Decide returns once the decision of req.Step is made (or ctx ends); a
// refusal is a RejectStatus error (ReasonRunID, ReasonPlan for a server
// index out of range, ReasonShape for a malformed report, ReasonStale for
// a step whose decision is no longer kept, ReasonClosed).
type StepsHandler interface {
	Decide(ctx context.Context, req *DecideRequest) (*DecideReply, error)
}

var stepsDesc = grpc.ServiceDesc{
	ServiceName: StepsServiceName,
	HandlerType: (*StepsHandler)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Decide",
		Handler: unary(MethodDecide, func(srv any, ctx context.Context, req *DecideRequest) (any, error) {
			return srv.(StepsHandler).Decide(ctx, req)
		}),
	}},
	Metadata: "internal/wire",
}

// RegisterSteps puts the Steps service on a gRPC server built with
// ServerOptions.
func RegisterSteps(s grpc.ServiceRegistrar, h StepsHandler) { s.RegisterService(&stepsDesc, h) }

// DeciderClient asks the coordinator for sync-step decisions on behalf of
// one parameter server. It implements paramserver.Decider.
type DeciderClient struct {
	conn   grpc.ClientConnInterface
	runID  string
	server int
}

// NewDeciderClient returns a client that reports as server (its index in
// the plan) of run over conn, a connection to the coordinator made with
// DialOptions. It does not own conn.
func NewDeciderClient(conn grpc.ClientConnInterface, runID string, server int) *DeciderClient {
	return &DeciderClient{conn: conn, runID: runID, server: server}
}

// Decide reports that the server holds the complete step-step gradients
// of the workers in complete (sorted, no repeats) and waits until the
// coordinator has decided the step, or ctx ends. A refusal is a
// *RejectedError with Server -1 (the coordinator); a reply that does not
// answer the question (another run, server or step, or a malformed
// decision) is an error wrapping ErrCorrupt.
func (c *DeciderClient) Decide(ctx context.Context, step int64, complete []string) (Decision, error) {
	req := &DecideRequest{RunID: c.runID, Server: c.server, Step: step, Complete: complete}
	if err := req.Validate(); err != nil {
		return Decision{}, fmt.Errorf("wire: decide step %d: %w", step, err)
	}
	reply := new(DecideReply)
	if err := c.conn.Invoke(ctx, MethodDecide, req, reply, grpc.CallContentSubtype(CodecName)); err != nil {
		return Decision{}, fmt.Errorf("wire: decide step %d: %w", step, rejectionFromStatus(-1, err))
	}
	if reply.RunID != c.runID || reply.Server != c.server || reply.Decision.Step != step {
		return Decision{}, fmt.Errorf("%w: decide step %d of run %q for server %d: reply is for step %d of run %q for server %d",
			ErrCorrupt, step, c.runID, c.server, reply.Decision.Step, reply.RunID, reply.Server)
	}
	return reply.Decision, nil
}
