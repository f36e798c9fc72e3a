package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/checkpoint"
	"github.com/tailorml/tailor/eval"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/store"
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
	// EpochStep is the servers' update count when the epoch in progress
	// started (mid-epoch checkpoints; it gives the epoch's learning rate)
	EpochStep int64 `json:"epoch_step,omitempty"`
}

// ckpt takes the run's checkpoints and resumes from them (docs/cluster.md,
// "Checkpoints, resume and rollback"). The parameter servers, which save
// and restore the weights, are the current attempt's.
type ckpt struct {
	journal *journal // checkpoints published and skipped go into the run's history
	spec    job.Spec
	cli     *clientv3.Client
	guard   func() clientv3.Cmp // the leader guard (Term.Guard)
	log     *slog.Logger
	loc     checkpoint.Location
	labels  []string
	val     validatorState
	flush   func() // the run's logs, before a cut is published

	version int64     // of the etcd pointer key, for the next compare-and-swap
	current string    // the checkpoint the pointer names
	saved   time.Time // when this leader last published one
}

// savedSince reports whether this leader published a checkpoint after t.
func (c *ckpt) savedSince(t time.Time) bool { return c.saved.After(t) }

// validatorState is the evaluator's state a checkpoint holds (the
// validation history, the best score).
type validatorState interface {
	State() eval.ValidatorState
	SetState(eval.ValidatorState)
}

// partServers are the parameter servers that save and restore their parts
// (a wire.Client).
type partServers interface {
	Checkpoint(ctx context.Context, reqs []*wire.CheckpointRequest) ([]*wire.CheckpointReply, error)
}

// cut is one checkpoint to take.
type cut struct {
	version int64 // the servers' version to save; -1: as they are (a quiesced async run)
	state   RunState
	epochs  int    // epochs completed
	reason  string // "start", "steps", "epoch"
	best    bool   // the model kept as the best is this cut's
}

// save takes a consistent checkpoint: every parameter server writes its
// part at version (-1: as it is, for a quiesced async run), the leader
// verifies every blob's digest in the store, writes the manifest, and only
// then moves the pointer in etcd (compare-and-swap on its version, under the
// leader guard). Retention runs last.
func (c *ckpt) save(ctx context.Context, ps partServers, k cut) error {
	start := time.Now()
	step := k.version
	if step < 0 {
		step = 0
		for _, s := range k.state.AsyncSteps {
			step += s
		}
	}
	name := checkpoint.Name(step, k.epochs)
	m, err := c.saveParts(ctx, ps, name, k.version)
	if err != nil {
		return err
	}
	m.Run, m.JobID, m.Step, m.Epochs, m.Reason = c.spec.Run, c.spec.JobID, step, k.epochs, k.reason
	m.Created, m.Mode, m.Labels, m.Best = time.Now().UTC(), string(c.spec.Mode), c.labels, k.best
	if err := c.writeMeta(ctx, name, m, k.state); err != nil {
		return err
	}
	// what was consumed before this cut is on disk before the cut is published
	c.flush()
	p := checkpoint.Pointer{JobID: c.spec.JobID, Name: name, Step: step, Epochs: k.epochs, Meta: m.Checksum, Created: m.Created}
	v, err := checkpoint.Publish(ctx, c.cli, cluster.RunKeys(c.spec.Run), p, c.version, c.guard())
	if err != nil {
		return err
	}
	c.version, c.current, c.saved = v, name, time.Now()
	removed, err := c.loc.Retain(ctx, c.spec.Run, c.spec.JobID, c.spec.KeepCheckpoints, name)
	if err != nil {
		c.log.Warn("checkpoint retention", "err", err)
	}
	var bytes int64
	for _, b := range m.Parts {
		bytes += b.Bytes
	}
	c.journal.checkpoint(CheckpointRecord{Name: name, Reason: k.reason, Step: step, Epochs: k.epochs, Best: k.best, Created: m.Created,
		Seconds: round4(time.Since(start).Seconds()), Bytes: bytes})
	c.log.Info("checkpoint", "name", name, "reason", k.reason, "step", step, "epochs", k.epochs, "best", k.best,
		"seconds", round4(time.Since(start).Seconds()), "removed", len(removed))
	return nil
}

// saveParts has every server save its part of checkpoint name at version,
// and verifies every part's digest in the store; the manifest it returns
// lists them.
func (c *ckpt) saveParts(ctx context.Context, ps partServers, name string, version int64) (*checkpoint.Meta, error) {
	dir := c.loc.Dir(c.spec.Run, c.spec.JobID, name)
	reqs := make([]*wire.CheckpointRequest, c.spec.ParamServers)
	for i := range reqs {
		reqs[i] = &wire.CheckpointRequest{Op: wire.CheckpointSave, Version: version, Object: dir + checkpoint.PartObject(i)}
	}
	reps, err := ps.Checkpoint(ctx, reqs)
	if err != nil {
		return nil, err
	}
	m := &checkpoint.Meta{}
	for i, r := range reps {
		b := checkpoint.Blob{Server: i, Object: checkpoint.PartObject(i), SHA256: r.SHA256, Bytes: r.Bytes, Version: r.Version}
		if err := c.loc.VerifyPart(ctx, c.spec.Run, c.spec.JobID, name, b); err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		m.Parts = append(m.Parts, b)
	}
	return m, nil
}

// writeMeta writes checkpoint name's manifest m with the run's spec, rs
// and the validator's state.
func (c *ckpt) writeMeta(ctx context.Context, name string, m *checkpoint.Meta, rs RunState) (err error) {
	if m.Spec, err = json.Marshal(c.spec); err != nil {
		return err
	}
	if m.State, err = json.Marshal(rs); err != nil {
		return err
	}
	if m.Validator, err = json.Marshal(c.val.State()); err != nil {
		return err
	}
	return c.loc.WriteMeta(ctx, name, m)
}

// saveOrWarn saves a checkpoint; a failure other than lost leadership is
// logged and training goes on (the previous checkpoint stays valid).
func (c *ckpt) saveOrWarn(ctx context.Context, ps partServers, k cut) error {
	err := c.save(ctx, ps, k)
	if err == nil || ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, cluster.ErrConflict) {
		// the leader guard failed, or another leader moved the pointer
		return fmt.Errorf("%w: checkpoint pointer: %w", errLostLeadership, err)
	}
	c.log.Warn("checkpoint failed; training goes on from the previous one's safety", "reason", k.reason, "err", err)
	if errors.Is(err, store.ErrUnreachable) {
		c.journal.add(Event{Kind: EventStoreOutage, Detail: err.Error()})
	}
	c.journal.add(Event{Kind: EventCheckpointSkipped, Detail: fmt.Sprintf("%s checkpoint at epoch %d: %v", k.reason, k.epochs, err)})
	return nil
}

// resume restores the newest valid checkpoint of the job into the parameter
// servers and returns its manifest and state; nil when the job has none. A
// checkpoint that fails any check (manifest checksum, a part's size or
// digest, a restore refused) is skipped with a warning for the one before;
// a store out of reach for the whole retry budget (spec.StoreRetry) ends
// the resume with that error.
func (c *ckpt) resume(ctx context.Context, ps partServers) (*checkpoint.Meta, *RunState, error) {
	keys := cluster.RunKeys(c.spec.Run)
	ptr, ver, err := checkpoint.GetPointer(ctx, c.cli, keys)
	if errors.Is(err, cluster.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	c.version = ver
	if ptr.JobID != c.spec.JobID {
		return nil, nil, fmt.Errorf("the checkpoint pointer is of job %s, the run's spec of job %s", ptr.JobID, c.spec.JobID)
	}
	names, err := c.loc.List(ctx, c.spec.Run, c.spec.JobID)
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
		m, rs, err := c.tryRestore(ctx, ps, name, ptr)
		if err == nil {
			c.current = name
			if name != ptr.Name {
				c.log.Warn("resumed from an older checkpoint", "name", name, "newest", ptr.Name)
			}
			return m, rs, nil
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if errors.Is(err, store.ErrUnreachable) {
			// the store was out of reach for the whole retry budget: the
			// older checkpoints are in the same store, and nothing is
			// known to be wrong with this one
			return nil, nil, fmt.Errorf("resume from checkpoint %s: %w", name, err)
		}
		c.log.Warn("checkpoint unusable, trying the one before", "name", name, "err", err)
	}
	return nil, nil, fmt.Errorf("job %s has a checkpoint pointer (%s) but no usable checkpoint: refusing to start over silently", c.spec.JobID, ptr.Name)
}

func (c *ckpt) tryRestore(ctx context.Context, ps partServers, name string, ptr checkpoint.Pointer) (*checkpoint.Meta, *RunState, error) {
	m, err := c.loc.ReadMeta(ctx, c.spec.Run, c.spec.JobID, name)
	if err != nil {
		return nil, nil, err
	}
	if name == ptr.Name && m.Checksum != ptr.Meta {
		return nil, nil, fmt.Errorf("%w: manifest checksum differs from the pointer's", checkpoint.ErrCorrupt)
	}
	if len(m.Parts) != c.spec.ParamServers {
		return nil, nil, fmt.Errorf("%w: %d parts for %d parameter servers", checkpoint.ErrCorrupt, len(m.Parts), c.spec.ParamServers)
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
		if err := c.loc.VerifyPart(ctx, c.spec.Run, c.spec.JobID, name, b); err != nil {
			return nil, nil, err
		}
	}
	dir := c.loc.Dir(c.spec.Run, c.spec.JobID, name)
	reqs := make([]*wire.CheckpointRequest, len(m.Parts))
	for i, b := range m.Parts {
		reqs[i] = &wire.CheckpointRequest{Op: wire.CheckpointRestore, Version: b.Version, Object: dir + b.Object, SHA256: b.SHA256, Bytes: b.Bytes}
	}
	if _, err := ps.Checkpoint(ctx, reqs); err != nil {
		return nil, nil, err
	}
	c.val.SetState(vs)
	c.log.Info("resumed", "checkpoint", name, "step", m.Step, "epochs", m.Epochs, "epoch", rs.Epoch+1, "mid_epoch", rs.Sched != nil)
	return m, &rs, nil
}
