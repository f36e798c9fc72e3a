package paramserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/tailorml/tailor/internal/job"
	"log/slog"
	"time"

	"github.com/tailorml/tailor/checkpoint"

	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/optim"
)

// Config is one parameter server. Start from DefaultConfig.
type Config struct {
	// RunID names the training run; messages of other runs are rejected.
	RunID string `json:"run_id"`
	// Index is this server's index in [0, Servers).
	Index int `json:"index"`
	// Servers is the number of parameter servers (P).
	Servers int `json:"servers"`
	// Spec is the model's tensors, exactly as the workers have it.
	Spec wire.Spec `json:"spec"`
	// Adam is the optimizer, the same as the single-process trainer's.
	Adam optim.AdamConfig `json:"adam"`
	// Mode is the update rule.
	Mode job.Mode `json:"mode"`
	// StepLR, if set (Sync), is the factor a step applied with n
	// gradients multiplies the learning rate by (job.Spec.StepLRFactor);
	// nil: 1.
	StepLR func(n int) float64 `json:"-"`
	// Staleness is SSP's bound: how many steps a worker may run ahead of
	// the slowest active one.
	Staleness int `json:"staleness"`
	// StepDeadline bounds a sync step: once the first gradient of a step
	// has arrived, the step is applied at the latest this much later with
	// the gradients that arrived; the missing ones are counted.
	StepDeadline time.Duration `json:"step_deadline"`
	// SyncQuorum, if > 0, applies a sync step as soon as that many
	// gradients have arrived ("backup workers"); later ones are rejected
	// as stale and counted. 0 waits for every active worker.
	SyncQuorum int `json:"sync_quorum"`
	// Decider, if set (Sync only), decides every sync step for all servers
	// (the coordinator, in the cluster): the server reports which workers'
	// gradients it holds and applies exactly the decided set. SyncQuorum
	// and StepDeadline's local completion then do not apply; StepDeadline
	// bounds each Decide call instead. Nil: the server decides alone.
	Decider Decider `json:"-"`
	// Encoding is how workers encode Param gradients in a push (the run's
	// compression); chunks of any other encoding are refused
	// (wire.ReasonEncoding). State values and Init are always float32.
	Encoding wire.Encoding `json:"encoding"`
	// Checkpoints is where Checkpoint requests read and write part blobs;
	// with no store, they are refused.
	Checkpoints checkpoint.Location `json:"-"`
	// TLS, if set, makes Serve require mutual TLS (certs.Config): only
	// clients with a certificate signed by its CA may push or pull. Nil
	// serves plaintext.
	TLS *tls.Config `json:"-"`
	// ListenAddr is the gRPC address of ListenAndServe.
	ListenAddr string `json:"listen_addr"`
	// Logger receives rejections and step events; nil discards them.
	Logger *slog.Logger `json:"-"`
}

// DefaultConfig is a single sync server for spec with the tutorial's Adam
// (no decay) on :7410.
func DefaultConfig(runID string, spec wire.Spec) Config {
	return Config{
		RunID:        runID,
		Index:        0,
		Servers:      1,
		Spec:         spec,
		Adam:         optim.DefaultAdam(0),
		Mode:         job.ModeSync,
		Staleness:    2,
		StepDeadline: 2 * time.Minute,
		ListenAddr:   ":7410",
	}
}

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.RunID == "" || len(c.RunID) > wire.MaxStringBytes {
		errs = append(errs, fmt.Errorf("run id %q: want 1..%d bytes", c.RunID, wire.MaxStringBytes))
	}
	if c.Servers < 1 {
		errs = append(errs, fmt.Errorf("servers %d: want ≥ 1", c.Servers))
	} else if c.Index < 0 || c.Index >= c.Servers {
		errs = append(errs, fmt.Errorf("index %d: want [0, %d)", c.Index, c.Servers))
	}
	if err := c.Spec.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Adam.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("adam: %w", err))
	}
	switch c.Mode {
	case job.ModeSync:
		if c.StepDeadline <= 0 {
			errs = append(errs, fmt.Errorf("step deadline %v: want > 0 (a sync step must never wait forever)", c.StepDeadline))
		}
		if c.SyncQuorum < 0 {
			errs = append(errs, fmt.Errorf("sync quorum %d: want ≥ 0", c.SyncQuorum))
		}
		if c.Decider != nil && c.SyncQuorum > 0 {
			errs = append(errs, fmt.Errorf("sync quorum %d with a decider: the decider's quorum applies, set 0", c.SyncQuorum))
		}
	case job.ModeAsync:
	case job.ModeSSP:
		if c.Staleness < 0 {
			errs = append(errs, fmt.Errorf("staleness %d: want ≥ 0", c.Staleness))
		}
	default:
		errs = append(errs, c.Mode.Validate())
	}
	if err := (wire.Compression{Encoding: c.Encoding, TopK: 1}).Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Decider != nil && c.Mode != job.ModeSync {
		errs = append(errs, fmt.Errorf("a decider in mode %q: decisions are for sync steps", c.Mode))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	return nil
}
