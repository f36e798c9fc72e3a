package paramserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tailorml/tailor/checkpoint"
	"github.com/tailorml/tailor/internal/wire"
)

// Checkpoint implements wire.Handler: it saves the server's part at a
// version to the checkpoint store, or restores it from there. The
// coordinator sends one to every server; it publishes a checkpoint only
// when every server has answered a save, and rolls every server back with
// restores (the run pauses meanwhile).
func (s *Server) Checkpoint(ctx context.Context, req *wire.CheckpointRequest) (*wire.CheckpointReply, error) {
	if req.RunID != s.cfg.RunID {
		return nil, wire.RejectStatus(wire.ReasonRunID, fmt.Sprintf("run %q", req.RunID))
	}
	if s.cfg.Checkpoints.Store == nil {
		return nil, wire.RejectStatus(wire.ReasonShape, "this server has no checkpoint store")
	}
	switch req.Op {
	case wire.CheckpointSave:
		return s.saveCheckpoint(ctx, req)
	case wire.CheckpointRestore:
		return s.restoreCheckpoint(ctx, req)
	}
	return nil, wire.RejectStatus(wire.ReasonShape, fmt.Sprintf("checkpoint op %d", req.Op))
}

// ToPart turns a snapshot into the checkpoint blob's contents.
func (s *Server) ToPart(snap *Snapshot) *checkpoint.Part {
	return &checkpoint.Part{Run: s.cfg.RunID, Server: s.cfg.Index, Servers: s.cfg.Servers, Plan: s.plan.Fingerprint(),
		Version: snap.Version, AdamStep: snap.AdamStep, Parts: snap.Parts, Weights: snap.Weights, M: snap.M, V: snap.V}
}

func (s *Server) saveCheckpoint(ctx context.Context, req *wire.CheckpointRequest) (*wire.CheckpointReply, error) {
	start := time.Now()
	var snap *Snapshot
	var err error
	if req.Version < 0 {
		snap, err = s.Snapshot()
	} else {
		snap, err = s.SnapshotAt(ctx, req.Version)
	}
	if err != nil {
		return nil, wire.RejectStatus(snapshotReason(err), err.Error())
	}
	blob, err := s.cfg.Checkpoints.WritePart(ctx, req.Object, s.ToPart(snap))
	if err != nil {
		return nil, fmt.Errorf("save checkpoint part: %w", err)
	}
	s.log.Info("checkpoint part saved", "version", snap.Version, "object", req.Object, "bytes", blob.Bytes, "seconds", time.Since(start).Seconds())
	return &wire.CheckpointReply{RunID: s.cfg.RunID, Server: s.cfg.Index, Version: snap.Version, SHA256: blob.SHA256, Bytes: blob.Bytes}, nil
}

func (s *Server) restoreCheckpoint(ctx context.Context, req *wire.CheckpointRequest) (*wire.CheckpointReply, error) {
	blob := checkpoint.Blob{Server: s.cfg.Index, SHA256: req.SHA256, Bytes: req.Bytes, Version: req.Version}
	want, err := blob.Digest()
	if err != nil {
		return nil, wire.RejectStatus(wire.ReasonShape, err.Error())
	}
	st := s.cfg.Checkpoints.Store
	size, err := st.Stat(ctx, req.Object)
	if err != nil {
		return nil, fmt.Errorf("restore checkpoint part: %w", err)
	}
	if size != req.Bytes {
		return nil, wire.RejectStatus(wire.ReasonCorrupt, fmt.Sprintf("%s has %d bytes, want %d", req.Object, size, req.Bytes))
	}
	rc, err := st.Get(ctx, req.Object)
	if err != nil {
		return nil, fmt.Errorf("restore checkpoint part: %w", err)
	}
	defer rc.Close()
	p, err := checkpoint.ReadPart(rc, size, want)
	if err != nil {
		return nil, wire.RejectStatus(wire.ReasonCorrupt, err.Error())
	}
	if p.Run != s.cfg.RunID || p.Server != s.cfg.Index || p.Servers != s.cfg.Servers || p.Plan != s.plan.Fingerprint() || p.Version != req.Version {
		return nil, wire.RejectStatus(wire.ReasonPlan, fmt.Sprintf("part of run %q server %d/%d plan %016x version %d; this is run %q server %d/%d plan %016x, asked for version %d",
			p.Run, p.Server, p.Servers, p.Plan, p.Version, s.cfg.RunID, s.cfg.Index, s.cfg.Servers, s.plan.Fingerprint(), req.Version))
	}
	snap := &Snapshot{Version: p.Version, AdamStep: p.AdamStep, Parts: p.Parts, Weights: p.Weights, M: p.M, V: p.V}
	if err := s.Restore(snap); err != nil {
		return nil, wire.RejectStatus(wire.ReasonShape, err.Error())
	}
	return &wire.CheckpointReply{RunID: s.cfg.RunID, Server: s.cfg.Index, Version: p.Version, SHA256: req.SHA256, Bytes: size}, nil
}

func snapshotReason(err error) string {
	switch {
	case errors.Is(err, ErrClosed):
		return wire.ReasonClosed
	case errors.Is(err, ErrNotInitialised):
		return wire.ReasonUninitialised
	case errors.Is(err, ErrVersionPassed):
		return wire.ReasonStale
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return wire.ReasonCanceled
	}
	return wire.ReasonShape
}
