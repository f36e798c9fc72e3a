package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tailorml/tailor/checkpoint"
	"github.com/tailorml/tailor/eval"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/shard"
)

// RunState is the coordinator's part of a checkpoint (checkpoint.Meta's
// State): where the data stands and the epoch's counters so far. The
// random streams need no state: shuffles, augmentation and dropout masks
// are pure functions of (seed, epoch, record or step), so the position is
// all a resume needs to draw the same numbers.
type RunState struct {
	Epoch int   `json:"epoch"` // the epoch in progress or next, from 0
	Step  int64 `json:"step"`  // sync: the next step (= the weights version)
	// Sched is the epoch's scheduler mid-epoch; nil: the epoch starts afresh.
	Sched      *SchedState      `json:"sched,omitempty"`
	AsyncSteps map[string]int64 `json:"async_steps,omitempty"` // async: workers' step counters
	LossSum    float64          `json:"loss_sum"`
	LossN      int              `json:"loss_n"`
	Images     int              `json:"images"`
	Seconds    float64          `json:"seconds"`   // of the epoch so far
	AuditSeq   int64            `json:"audit_seq"` // batches consumed before this checkpoint
}

// ckpt is the leader's checkpoint bookkeeping.
type ckpt struct {
	loc     checkpoint.Location
	version int64  // of the etcd pointer key, for the next compare-and-swap
	current string // the checkpoint the pointer names
	labels  []string
	ps      *wire.Client
	val     *eval.Validator
}

// save takes a consistent checkpoint: every parameter server writes its
// part at version (-1: as it is, for a quiesced async run), the leader
// verifies every blob's digest in the store, writes the manifest, and only
// then moves the pointer in etcd (compare-and-swap on its version, under the
// leader guard). Retention runs last.
func (l *leader) save(ctx context.Context, version int64, rs RunState, epochs int, reason string, best bool) error {
	start := time.Now()
	c := l.ck
	step := version
	if step < 0 {
		step = 0
		for _, s := range rs.AsyncSteps {
			step += s
		}
	}
	name := checkpoint.Name(step, epochs)
	dir := c.loc.Dir(l.spec.Run, l.spec.JobID, name)
	reqs := make([]*wire.CheckpointRequest, l.spec.ParamServers)
	for i := range reqs {
		reqs[i] = &wire.CheckpointRequest{Op: wire.CheckpointSave, Version: version, Object: dir + checkpoint.PartObject(i)}
	}
	reps, err := c.ps.Checkpoint(ctx, reqs)
	if err != nil {
		return err
	}
	m := &checkpoint.Meta{Run: l.spec.Run, JobID: l.spec.JobID, Step: step, Epochs: epochs, Reason: reason,
		Created: time.Now().UTC(), Mode: l.spec.Mode, Labels: c.labels, Best: best}
	for i, r := range reps {
		b := checkpoint.Blob{Server: i, Object: checkpoint.PartObject(i), SHA256: r.SHA256, Bytes: r.Bytes, Version: r.Version}
		if err := c.loc.VerifyPart(ctx, l.spec.Run, l.spec.JobID, name, b); err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		m.Parts = append(m.Parts, b)
	}
	if m.Spec, err = json.Marshal(l.spec); err != nil {
		return err
	}
	if m.State, err = json.Marshal(rs); err != nil {
		return err
	}
	if m.Validator, err = json.Marshal(c.val.State()); err != nil {
		return err
	}
	if err := c.loc.WriteMeta(ctx, name, m); err != nil {
		return err
	}
	// what was consumed before this cut is on disk before the cut is published
	l.board.steplog.flush()
	l.board.audit.flush()
	p := checkpoint.Pointer{JobID: l.spec.JobID, Name: name, Step: step, Epochs: epochs, Meta: m.Checksum, Created: m.Created}
	v, err := checkpoint.Publish(ctx, l.cli, cluster.RunKeys(l.spec.Run), p, c.version, l.term.Guard())
	if err != nil {
		return err
	}
	c.version, c.current = v, name
	removed, err := c.loc.Retain(ctx, l.spec.Run, l.spec.JobID, l.spec.KeepCheckpoints, name)
	if err != nil {
		l.log.Warn("checkpoint retention", "err", err)
	}
	l.log.Info("checkpoint", "name", name, "reason", reason, "step", step, "epochs", epochs, "best", best,
		"seconds", round4(time.Since(start).Seconds()), "removed", len(removed))
	return nil
}

// saveOrWarn saves a checkpoint; a failure other than lost leadership is
// logged and training goes on (the previous checkpoint stays valid).
func (l *leader) saveOrWarn(ctx context.Context, version int64, rs RunState, epochs int, reason string, best bool) error {
	err := l.save(ctx, version, rs, epochs, reason, best)
	if err == nil || ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, cluster.ErrConflict) {
		// the leader guard failed, or another leader moved the pointer
		return fmt.Errorf("%w: checkpoint pointer: %w", errLostLeadership, err)
	}
	l.log.Warn("checkpoint failed; training goes on from the previous one's safety", "reason", reason, "err", err)
	return nil
}

// resume restores the newest valid checkpoint of the job into the parameter
// servers and returns its manifest and state; nil when the job has none. A
// checkpoint that fails any check (manifest checksum, a part's size or
// digest, a restore refused) is skipped with a warning for the one before;
// a store out of reach for the whole retry budget (spec.StoreRetry) ends
// the resume with that error.
func (l *leader) resume(ctx context.Context) (*checkpoint.Meta, *RunState, error) {
	c := l.ck
	keys := cluster.RunKeys(l.spec.Run)
	ptr, ver, err := checkpoint.GetPointer(ctx, l.cli, keys)
	if errors.Is(err, cluster.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	c.version = ver
	if ptr.JobID != l.spec.JobID {
		return nil, nil, fmt.Errorf("the checkpoint pointer is of job %s, the run's spec of job %s", ptr.JobID, l.spec.JobID)
	}
	names, err := c.loc.List(ctx, l.spec.Run, l.spec.JobID)
	if err != nil {
		return nil, nil, err
	}
	cands := []string{ptr.Name}
	for i := len(names) - 1; i >= 0; i-- {
		if names[i] < ptr.Name {
			cands = append(cands, names[i])
		}
	}
	for _, name := range cands {
		m, rs, err := l.tryRestore(ctx, name, ptr)
		if err == nil {
			c.current = name
			if name != ptr.Name {
				l.log.Warn("resumed from an older checkpoint", "name", name, "newest", ptr.Name)
			}
			return m, rs, nil
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if errors.Is(err, shard.ErrUnreachable) {
			// the store was out of reach for the whole retry budget: the
			// older checkpoints are in the same store, and nothing is
			// known to be wrong with this one
			return nil, nil, fmt.Errorf("resume from checkpoint %s: %w", name, err)
		}
		l.log.Warn("checkpoint unusable, trying the one before", "name", name, "err", err)
	}
	return nil, nil, fmt.Errorf("job %s has a checkpoint pointer (%s) but no usable checkpoint: refusing to start over silently", l.spec.JobID, ptr.Name)
}

func (l *leader) tryRestore(ctx context.Context, name string, ptr checkpoint.Pointer) (*checkpoint.Meta, *RunState, error) {
	c := l.ck
	m, err := c.loc.ReadMeta(ctx, l.spec.Run, l.spec.JobID, name)
	if err != nil {
		return nil, nil, err
	}
	if name == ptr.Name && m.Checksum != ptr.Meta {
		return nil, nil, fmt.Errorf("%w: manifest checksum differs from the pointer's", checkpoint.ErrCorrupt)
	}
	if len(m.Parts) != l.spec.ParamServers {
		return nil, nil, fmt.Errorf("%w: %d parts for %d parameter servers", checkpoint.ErrCorrupt, len(m.Parts), l.spec.ParamServers)
	}
	if !slices.Equal(m.Labels, c.labels) {
		return nil, nil, fmt.Errorf("%w: label vocabulary differs from the data's", checkpoint.ErrCorrupt)
	}
	var rs RunState
	if err := json.Unmarshal(m.State, &rs); err != nil {
		return nil, nil, fmt.Errorf("%w: state: %w", checkpoint.ErrCorrupt, err)
	}
	var vs eval.ValidatorState
	if len(m.Validator) > 0 {
		if err := json.Unmarshal(m.Validator, &vs); err != nil {
			return nil, nil, fmt.Errorf("%w: validator: %w", checkpoint.ErrCorrupt, err)
		}
	}
	// every part must be intact before any server is touched
	for _, b := range m.Parts {
		if err := c.loc.VerifyPart(ctx, l.spec.Run, l.spec.JobID, name, b); err != nil {
			return nil, nil, err
		}
	}
	dir := c.loc.Dir(l.spec.Run, l.spec.JobID, name)
	reqs := make([]*wire.CheckpointRequest, len(m.Parts))
	for i, b := range m.Parts {
		reqs[i] = &wire.CheckpointRequest{Op: wire.CheckpointRestore, Version: b.Version, Object: dir + b.Object, SHA256: b.SHA256, Bytes: b.Bytes}
	}
	if _, err := c.ps.Checkpoint(ctx, reqs); err != nil {
		return nil, nil, err
	}
	c.val.SetState(vs)
	l.log.Info("resumed", "checkpoint", name, "step", m.Step, "epochs", m.Epochs, "epoch", rs.Epoch+1, "mid_epoch", rs.Sched != nil)
	return m, &rs, nil
}
