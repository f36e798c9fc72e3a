// Package job is a training run's specification: what every role of the
// cluster reads from etcd (`/tailor/runs/<run>/spec`) before it starts. It
// is written once, when the run is submitted, and never changes.
package job

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/checkpoint"
	"github.com/tailorml/tailor/input"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/optim"
	"github.com/tailorml/tailor/store"
)

// Shuffle plans of a run.
const (
	ShuffleGlobal = "global"
	ShuffleUnits  = "units"
)

// Spec is a training run.
type Spec struct {
	Run          string        `json:"run"`
	Data         string        `json:"data"` // shard store URL or path, as every process sees it
	Epochs       int           `json:"epochs"`
	Batch        int           `json:"batch"` // per worker; global batch = Batch × participating workers
	Seed         uint64        `json:"seed"`
	Mode         Mode          `json:"mode"`
	Staleness    int           `json:"staleness"`     // ssp: steps a worker may run ahead
	Quorum       int           `json:"quorum"`        // sync: apply a step after this many gradients (0: all)
	StepDeadline time.Duration `json:"step_deadline"` // sync: bound on one step
	// StallTimeout is how long the leader lets training go without
	// progress (sync: a step decided with a gradient; async, ssp: a batch
	// reported) before its watchdog logs what it waits for, then acts
	// (re-dispatches the work of the workers that have not delivered, then
	// rolls back to the last checkpoint). 0 (and a spec written before the
	// field existed) means DefaultStallTimeout; negative turns the
	// watchdog off. See StallAfter.
	StallTimeout time.Duration `json:"stall_timeout,omitempty"`
	ParamServers int           `json:"param_servers"`
	UnitSize     int           `json:"unit_size"` // records per work unit (shuffle "units")
	// Shuffle is how an epoch's records are dealt to the workers: "global"
	// (one permutation of the whole training split, the single-process
	// trainer's, cut into batches; every worker caches the whole split) or
	// "units" (ranges of UnitSize records of one shard, shuffled within;
	// a worker reads only the shards of its units). See coordinator.Unit.
	Shuffle string `json:"shuffle,omitempty"`
	// Compression is how workers encode the gradients they push: "none"
	// (or empty), "fp16" or "topk" (the largest TopK of every chunk, the
	// rest kept by the worker and added to its next gradient). Weights
	// are always pulled as float32. See wire.Encoding.
	Compression string `json:"compression,omitempty"`
	// Overlap makes workers send each gradient tensor to the parameter
	// servers as soon as backprop has it, while the rest is computed
	// (wire.Client.PushGated); off, a worker pushes after its step.
	Overlap bool `json:"overlap,omitempty"`
	// TopK is the fraction of a gradient's floats a "topk" push sends, in
	// (0, 1]; 0 means wire.DefaultTopK.
	TopK    float64       `json:"topk,omitempty"`
	Augment input.Augment `json:"augment"`
	// PosWeight weighs each label's positive targets in the loss (none,
	// auto, or a file's weights, read at submit and carried here).
	PosWeight input.PosWeight `json:"pos_weight,omitzero"`
	// Settings is the optimizer (the keys "adam" and "decay_auto"); the
	// parameter servers apply AdamConfig().
	optim.Settings
	// LRScale is how a sync run's learning rate follows its global batch,
	// Batch × Workers, from the rate given for one process at Batch:
	// LRScaleSqrt multiplies it by √Workers, LRScaleLinear by Workers
	// (Goyal et al. 2017), LRScaleNone (or empty: a spec written before
	// the field) leaves it. See LRFactor and AdamConfig.
	LRScale string `json:"lr_scale,omitempty"`
	// WarmupSteps is the number of sync steps over which a scaled learning
	// rate ramps linearly up from the unscaled one (0: none).
	WarmupSteps int  `json:"warmup_steps,omitempty"`
	BNEstimate  bool `json:"bn_estimate"`
	// SyncBN synchronises BatchNorm across the workers of a sync step
	// (every layer normalises with the statistics of the whole global
	// batch, as one process would): see SyncBatchNorm.
	SyncBN      bool   `json:"sync_bn"`
	BNBatches   int    `json:"bn_batches"`
	EvalRunning bool   `json:"eval_running_bn"`
	BestBy      string `json:"best_by"`
	Out         string `json:"out"` // the coordinator's output folder (model, history)
	// Workers is how many live workers the coordinator waits for before the
	// first step, and again after a resume (0: start with whoever is there).
	// Sync runs are reproducible only with a fixed worker set.
	Workers int `json:"workers"`
	// Checkpoints is the store (path or URL) for checkpoints; empty means
	// the data store, under "checkpoints/".
	Checkpoints string `json:"checkpoints,omitempty"`
	// CheckpointEvery is the number of sync steps between checkpoints, or
	// in async and SSP runs of batches handed out between checkpoints (0:
	// only at epoch ends, which always checkpoint).
	CheckpointEvery int `json:"checkpoint_every"`
	// KeepCheckpoints is how many of the newest checkpoints retention keeps
	// (the best one is kept as well).
	KeepCheckpoints int `json:"keep_checkpoints"`
	// StoreRetry is how long the roles retry an object-store read or write
	// that fails transiently (unreachable endpoint, 5xx, SlowDown) before
	// they give up: 0 means store.DefaultRetryBudget, negative no retries.
	StoreRetry time.Duration `json:"store_retry,omitempty"`
	// Audit makes the coordinator log every consumed batch's record IDs to
	// audit.log in Out (for tests and investigations: exactly once per epoch).
	Audit bool `json:"audit,omitempty"`
	// JobID tells this submission of the run from an earlier one of the
	// same name (checkpoints are kept per job id); Submit sets it.
	JobID string `json:"job_id"`
}

// DefaultStallTimeout is StallTimeout's default: shorter than the step
// deadline, so a stall is reported while the step's own deadline may still
// end it; the watchdog's first action waits for that deadline to pass.
const DefaultStallTimeout = time.Minute

// MinStallTimeout is the shortest StallTimeout Validate accepts: below it
// a slow step would pass for a stall.
const MinStallTimeout = time.Second

// StallAfter is how long training may go without progress before the
// leader's watchdog declares a stall: StallTimeout, DefaultStallTimeout for
// 0, or 0 (off) for a negative StallTimeout.
func (s Spec) StallAfter() time.Duration {
	switch {
	case s.StallTimeout < 0:
		return 0
	case s.StallTimeout == 0:
		return DefaultStallTimeout
	}
	return s.StallTimeout
}

// CheckpointPrefix is the prefix of checkpoints in the data store, when the
// spec names no checkpoint store of its own.
const CheckpointPrefix = "checkpoints/"

// StorePolicy is how the running roles retry object-store operations
// (StoreRetry), logging each retry to log.
func (s Spec) StorePolicy(log *slog.Logger) store.RetryPolicy {
	p := store.DefaultRetryPolicy()
	switch {
	case s.StoreRetry > 0:
		p.Budget = s.StoreRetry
	case s.StoreRetry < 0:
		p.Budget = 0
	}
	p.Log = log
	return p
}

// OpenCheckpoints opens the run's checkpoint location. data is the run's
// data store, already open (used when the spec names no other store); a
// store of its own is opened with retries under retry, unless its budget
// is 0 (tools run by hand).
func OpenCheckpoints(ctx context.Context, s Spec, data store.Store, retry store.RetryPolicy) (checkpoint.Location, error) {
	if s.Checkpoints == "" {
		return checkpoint.Location{Store: data, Prefix: CheckpointPrefix}, nil
	}
	var st store.Store
	var err error
	if retry.Budget > 0 {
		st, err = store.OpenRetry(ctx, s.Checkpoints, retry)
	} else {
		st, err = store.Open(ctx, s.Checkpoints)
	}
	if err != nil {
		return checkpoint.Location{}, fmt.Errorf("checkpoint store: %w", err)
	}
	return checkpoint.Location{Store: st}, nil
}

// DefaultSpec is the single-process trainer's defaults, in sync mode with
// two parameter servers.
func DefaultSpec(run, data string) Spec {
	return Spec{
		Run: run, Data: data, Epochs: 30, Batch: 32, Seed: 1, Mode: ModeSync, Staleness: 2,
		StepDeadline: 2 * time.Minute, ParamServers: 2, UnitSize: 256, Shuffle: ShuffleGlobal,
		Augment: input.DefaultAugment(), Settings: optim.DefaultSettings(),
		BNEstimate: true, BNBatches: 50, BestBy: "loss", Out: "out/" + run,
		CheckpointEvery: 500, KeepCheckpoints: 3, SyncBN: true, Overlap: true,
		LRScale: DefaultLRScale,
	}
}

// GlobalShuffle reports whether the run deals records from one permutation
// of the whole split (a spec of an older version, without the field, deals
// units).
func (s Spec) GlobalShuffle() bool { return s.Shuffle == ShuffleGlobal }

// SyncBatchNorm reports whether the workers synchronise BatchNorm: SyncBN
// in sync mode without a quorum. (With backup workers a straggler would
// hold every other worker's forward pass; async and SSP have no common
// step.)
func (s Spec) SyncBatchNorm() bool {
	return s.SyncBN && s.Mode == ModeSync && s.Quorum == 0
}

// WireCompression is the run's push encoding (the spec must be valid).
func (s Spec) WireCompression() wire.Compression {
	e, _ := wire.ParseEncoding(s.Compression)
	c := wire.Compression{Encoding: e}
	if e == wire.EncodingTopK {
		c.TopK = s.TopK
		if c.TopK == 0 {
			c.TopK = wire.DefaultTopK
		}
	}
	return c
}

// The learning-rate scaling rules (Spec.LRScale).
const (
	LRScaleNone   = "none"
	LRScaleSqrt   = "sqrt"
	LRScaleLinear = "linear"
)

// DefaultLRScale is LRScale's default for new runs: see BENCHMARKS.md,
// "Learning rate for N workers", for the measurement that chose it.
const DefaultLRScale = LRScaleLinear

// LRFactor is what the run multiplies the given learning rate by: √Workers
// or Workers in a sync run of a fixed worker set (Workers > 1) as LRScale
// says, 1 otherwise (async and SSP apply every worker's batch as an update
// of its own; a run that starts with whoever is there has no global batch
// to scale for).
func (s Spec) LRFactor() float64 {
	if s.Mode != ModeSync || s.Workers <= 1 {
		return 1
	}
	switch s.LRScale {
	case LRScaleSqrt:
		return math.Sqrt(float64(s.Workers))
	case LRScaleLinear:
		return float64(s.Workers)
	}
	return 1
}

// StepLRFactor is what a sync step applied with the gradients of n
// workers multiplies the run's learning rate by: the rule's factor for n
// over its factor for Workers (LRFactor), so a step of fewer workers (one
// died, or was stopped, or missed the step) updates with the rate of its
// own global batch. 1 for a full step and for runs without scaling.
func (s Spec) StepLRFactor(n int) float64 {
	if s.LRFactor() == 1 || n <= 0 || n >= s.Workers {
		return 1
	}
	t := s
	t.Workers = n // LRFactor is 1 for one worker
	return t.LRFactor() / s.LRFactor()
}

// AdamConfig is the optimizer with the decay resolved: what every
// parameter server of the run applies. With a learning-rate factor k ≠ 1
// (LRFactor), the rate is k times the given one, ramped up from the given
// one over WarmupSteps, and the time-based decay per step is Workers times
// one process's: a sync step consumes Workers batches, so at every epoch
// the decay has divided the rate by what it has in one process at Batch.
func (s Spec) AdamConfig() optim.AdamConfig {
	a := s.For(s.Epochs)
	if k := s.LRFactor(); k != 1 {
		a.LR *= k
		a.Decay *= float64(s.Workers)
		if s.WarmupSteps > 0 {
			a.Warmup, a.WarmupStart = s.WarmupSteps, 1/k
		}
	}
	return a
}

// LRSummary says in words which learning rate the run uses and why, for
// the logs and the terminal at its start.
func (s Spec) LRSummary() string {
	a := s.AdamConfig()
	k := s.LRFactor()
	if k == 1 {
		why := "--lr-scale " + s.LRScale
		switch {
		case s.Mode != ModeSync:
			why = s.Mode.String() + " mode: every batch is an update"
		case s.Workers <= 1:
			why = "one worker, or no fixed worker count"
		case s.LRScale == "":
			why = "--lr-scale none"
		}
		return fmt.Sprintf("learning rate %g (%s)", a.LR, why)
	}
	out := fmt.Sprintf("learning rate %g: --lr %g × %.3g for the global batch %d × %d (--lr-scale %s)",
		a.LR, s.Adam.LR, k, s.Workers, s.Batch, s.LRScale)
	if a.Warmup > 0 {
		out += fmt.Sprintf(", ramped up from %g over %d steps", s.Adam.LR, a.Warmup)
	}
	return out
}

// Validate checks the spec.
func (s Spec) Validate() error {
	var errs []error
	if s.Run == "" {
		errs = append(errs, errors.New("no run id"))
	}
	if s.Data == "" {
		errs = append(errs, errors.New("no data"))
	}
	if s.Epochs < 1 {
		errs = append(errs, fmt.Errorf("epochs %d: want at least 1", s.Epochs))
	}
	if s.Batch < 2 {
		errs = append(errs, fmt.Errorf("batch %d: want at least 2", s.Batch))
	}
	if err := s.Mode.Validate(); err != nil {
		errs = append(errs, err)
	}
	if s.Staleness < 0 || s.Quorum < 0 || s.StepDeadline <= 0 {
		errs = append(errs, errors.New("staleness and quorum must be ≥ 0, the step deadline > 0"))
	}
	if s.StallTimeout > 0 && s.StallTimeout < MinStallTimeout {
		errs = append(errs, fmt.Errorf("stall timeout %v: want at least %v (0: %v; negative: off)", s.StallTimeout, MinStallTimeout, DefaultStallTimeout))
	}
	if s.ParamServers < 1 {
		errs = append(errs, fmt.Errorf("param servers %d: want at least 1", s.ParamServers))
	}
	switch s.Shuffle {
	case ShuffleGlobal, ShuffleUnits, "":
	default:
		errs = append(errs, fmt.Errorf("shuffle %q: want global or units", s.Shuffle))
	}
	if s.UnitSize < s.Batch {
		errs = append(errs, fmt.Errorf("unit size %d: want at least one batch (%d)", s.UnitSize, s.Batch))
	}
	if s.BNEstimate && s.BNBatches < 1 {
		errs = append(errs, errors.New("batchnorm re-estimation needs at least one batch"))
	}
	if s.Workers < 0 || s.CheckpointEvery < 0 || s.KeepCheckpoints < 1 {
		errs = append(errs, fmt.Errorf("workers %d, checkpoint every %d, keep %d checkpoints: want ≥ 0, ≥ 0, ≥ 1", s.Workers, s.CheckpointEvery, s.KeepCheckpoints))
	}
	if s.BestBy != "loss" && s.BestBy != "map" {
		errs = append(errs, fmt.Errorf("best-by %q: want loss or map", s.BestBy))
	}
	if _, err := wire.ParseEncoding(s.Compression); err != nil {
		errs = append(errs, fmt.Errorf("compression %q: want none, fp16 or topk", s.Compression))
	}
	if !(s.TopK >= 0 && s.TopK <= 1) {
		errs = append(errs, fmt.Errorf("topk %v: want a fraction in (0, 1] (0: %v)", s.TopK, wire.DefaultTopK))
	}
	if err := s.Augment.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := s.PosWeight.Validate(); err != nil {
		errs = append(errs, err)
	}
	switch s.LRScale {
	case "", LRScaleNone, LRScaleSqrt, LRScaleLinear:
	default:
		errs = append(errs, fmt.Errorf("lr scale %q: want none, sqrt or linear", s.LRScale))
	}
	if s.WarmupSteps < 0 {
		errs = append(errs, fmt.Errorf("warm-up %d steps: want ≥ 0", s.WarmupSteps))
	}
	if err := s.AdamConfig().Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ErrExists says a run with that id was already submitted (with another spec).
var ErrExists = errors.New("job: run already exists with a different spec")

// Submit writes the spec of a new run. Submitting the same spec again is not
// an error (a restarted `tailor local` resumes), nor is one that differs
// only in Workers (the spec takes the new count: a resume with another
// number of workers); any other difference is.
func Submit(ctx context.Context, cli *clientv3.Client, s Spec) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("job spec: %w", err)
	}
	if s.JobID == "" {
		var id [8]byte
		if _, err := rand.Read(id[:]); err != nil {
			return err
		}
		s.JobID = hex.EncodeToString(id[:])
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	keys := cluster.RunKeys(s.Run)
	if _, err := cluster.Create(ctx, cli, keys.Spec(), b); err != nil {
		if !errors.Is(err, cluster.ErrConflict) {
			return fmt.Errorf("submit run %s: %w", s.Run, err)
		}
		var old Spec
		kv, err := cluster.GetJSON(ctx, cli, keys.Spec(), &old)
		if err != nil {
			return fmt.Errorf("submit run %s: %w", s.Run, err)
		}
		s.JobID = old.JobID // the same spec submitted again is the same job
		// the worker count is the one thing a resubmission may change (a
		// run resumed with more or fewer workers)
		workers := s.Workers
		s.Workers = old.Workers
		b, _ = json.Marshal(s)
		ob, _ := json.Marshal(old)
		if string(ob) != string(b) {
			return fmt.Errorf("%w: %s", ErrExists, s.Run)
		}
		if workers != old.Workers {
			s.Workers = workers
			b, _ = json.Marshal(s)
			if _, err := cluster.CAS(ctx, cli, keys.Spec(), kv.ModRev, b); err != nil {
				return fmt.Errorf("submit run %s with %d workers: %w", s.Run, workers, err)
			}
		}
	}
	return nil
}

// Load reads a run's spec.
func Load(ctx context.Context, cli *clientv3.Client, run string) (Spec, error) {
	var s Spec
	if _, err := cluster.GetJSON(ctx, cli, cluster.RunKeys(run).Spec(), &s); err != nil {
		return s, fmt.Errorf("load run %s: %w", run, err)
	}
	return s, s.Validate()
}

// Wait polls until the run's spec exists (a role may start before the run is
// submitted), or ctx ends.
func Wait(ctx context.Context, cli *clientv3.Client, run string) (Spec, error) {
	for {
		s, err := Load(ctx, cli, run)
		if err == nil || !errors.Is(err, cluster.ErrNotFound) {
			return s, err
		}
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("waiting for run %s to be submitted: %w", run, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// StateDone is the run status's state once the leader has finished the run.
const StateDone = "done"

// WaitDone polls the run's status key (written by the leader coordinator
// when the run is over) and reports true once it says done, or false when
// ctx ends first.
func WaitDone(ctx context.Context, cli *clientv3.Client, run string) bool {
	keys := cluster.RunKeys(run)
	for ctx.Err() == nil {
		var st struct {
			State string `json:"state"`
		}
		if _, err := cluster.GetJSON(ctx, cli, keys.Status(), &st); err == nil && st.State == StateDone {
			return true
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	return false
}
