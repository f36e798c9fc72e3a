package paramserver

import (
	"context"
	"fmt"
	"slices"

	"github.com/tailorml/tailor/internal/wire"
)

// Snapshot is a copy of a server's state at one version, for checkpoints:
// the weights and optimizer moments of its parts.
type Snapshot struct {
	Version  int64       // weights version
	AdamStep int64       // optimizer steps applied (drives the learning-rate decay)
	Parts    []wire.Part // the server's parts, in order
	Weights  [][]float32 // aligned with Parts (Param and State parts)
	M, V     [][]float32 // Adam's moments, aligned with Parts; nil for State parts
}

type snapResult struct {
	snap *Snapshot
	err  error
}

type snapWaiter struct {
	version int64
	ch      chan snapResult // buffered, 1
}

// Snapshot copies the current state. Updates are applied under the same
// lock, so the copy is always of a whole version.
func (s *Server) Snapshot() (*Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if !s.initialised {
		return nil, ErrNotInitialised
	}
	return s.snapshotLocked(), nil
}

// SnapshotAt waits until the server reaches version and returns a copy
// taken right after the update that produced it (or at once if the server
// is at that version now). A version the server has already gone past is
// ErrVersionPassed. This is the checkpoint hook: the coordinator names a
// step, and every server copies its parts at exactly that step.
func (s *Server) SnapshotAt(ctx context.Context, version int64) (*Snapshot, error) {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return nil, ErrClosed
	case s.initialised && s.version == version:
		defer s.mu.Unlock()
		return s.snapshotLocked(), nil
	case s.initialised && s.version > version:
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: at %d, asked for %d", ErrVersionPassed, s.version, version)
	}
	w := snapWaiter{version: version, ch: make(chan snapResult, 1)}
	s.waiters = append(s.waiters, w)
	s.mu.Unlock()
	select {
	case r := <-w.ch:
		return r.snap, r.err
	case <-ctx.Done():
		s.mu.Lock()
		s.waiters = slices.DeleteFunc(s.waiters, func(x snapWaiter) bool { return x.ch == w.ch })
		s.mu.Unlock()
		select { // it may have been served meanwhile
		case r := <-w.ch:
			return r.snap, r.err
		default:
			return nil, ctx.Err()
		}
	}
}

// serveWaitersLocked answers SnapshotAt calls after a version change.
func (s *Server) serveWaitersLocked() {
	if len(s.waiters) == 0 || !s.initialised {
		return
	}
	var snap *Snapshot
	s.waiters = slices.DeleteFunc(s.waiters, func(w snapWaiter) bool {
		switch {
		case w.version == s.version:
			if snap == nil {
				snap = s.snapshotLocked()
			}
			w.ch <- snapResult{snap: snap}
		case w.version < s.version:
			w.ch <- snapResult{err: fmt.Errorf("%w: at %d, asked for %d", ErrVersionPassed, s.version, w.version)}
		default:
			return false
		}
		return true
	})
}

func (s *Server) snapshotLocked() *Snapshot {
	step, m, v := s.adam.State()
	snap := &Snapshot{
		Version: s.version, AdamStep: step, Parts: slices.Clone(s.parts),
		Weights: make([][]float32, len(s.parts)), M: make([][]float32, len(s.parts)), V: make([][]float32, len(s.parts)),
	}
	j := 0
	for i, p := range s.parts {
		snap.Weights[i] = slices.Clone(s.weights[p.Flat : p.Flat+p.Len])
		if p.Kind == wire.Param {
			snap.M[i], snap.V[i] = slices.Clone(m[j]), slices.Clone(v[j])
			j++
		}
	}
	return snap
}

// Restore replaces the state with a snapshot of a server with the same
// plan position (a checkpoint). Pending sync gradients and worker clocks
// are dropped; waiting pulls see the restored version.
func (s *Server) Restore(snap *Snapshot) error {
	if err := s.checkSnapshot(snap); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	for i, p := range s.parts {
		copy(s.weights[p.Flat:p.Flat+p.Len], snap.Weights[i])
	}
	s.resetLocked(snap.Version)
	var m, v [][]float32
	for i, p := range s.parts {
		if p.Kind == wire.Param {
			m, v = append(m, snap.M[i]), append(v, snap.V[i])
		}
	}
	if err := s.adam.Restore(snap.AdamStep, m, v); err != nil {
		return fmt.Errorf("%w: %w", ErrMismatch, err) // unreachable: checked above
	}
	s.weightsChangedLocked()
	s.log.Info("state restored", "version", snap.Version, "adam_step", snap.AdamStep)
	return nil
}

func (s *Server) checkSnapshot(snap *Snapshot) error {
	if snap == nil || len(snap.Parts) != len(s.parts) || len(snap.Weights) != len(s.parts) || len(snap.M) != len(s.parts) || len(snap.V) != len(s.parts) {
		return fmt.Errorf("%w: snapshot of another shape", ErrMismatch)
	}
	if snap.Version < 0 || snap.AdamStep < 0 {
		return fmt.Errorf("%w: version %d, adam step %d", ErrMismatch, snap.Version, snap.AdamStep)
	}
	for i, p := range s.parts {
		q := snap.Parts[i]
		if q.Tensor != p.Tensor || q.Name != p.Name || q.Kind != p.Kind || q.Offset != p.Offset || q.Len != p.Len {
			return fmt.Errorf("%w: snapshot part %d is %s[%d:+%d], want %s[%d:+%d]", ErrMismatch, i, q.Name, q.Offset, q.Len, p.Name, p.Offset, p.Len)
		}
		if len(snap.Weights[i]) != p.Len || !wire.Finite(snap.Weights[i]) {
			return fmt.Errorf("%w: snapshot weights of %s: %d floats or not finite", ErrMismatch, p.Name, len(snap.Weights[i]))
		}
		want := p.Len
		if p.Kind != wire.Param {
			want = 0
		}
		if len(snap.M[i]) != want || len(snap.V[i]) != want {
			return fmt.Errorf("%w: snapshot moments of %s: %d and %d floats, want %d", ErrMismatch, p.Name, len(snap.M[i]), len(snap.V[i]), want)
		}
	}
	return nil
}

// SetWeights sets the server's parts from full tensors aligned with the
// spec (a model loaded from a blob), at version, with a fresh optimizer.
// Use Restore to resume with optimizer state.
func (s *Server) SetWeights(version int64, tensors [][]float32) error {
	if len(tensors) != len(s.cfg.Spec) {
		return fmt.Errorf("%w: %d tensors, want %d", ErrMismatch, len(tensors), len(s.cfg.Spec))
	}
	for i, t := range s.cfg.Spec {
		if len(tensors[i]) != t.Size {
			return fmt.Errorf("%w: tensor %q has %d floats, want %d", ErrMismatch, t.Name, len(tensors[i]), t.Size)
		}
	}
	if version < 0 {
		return fmt.Errorf("%w: version %d", ErrMismatch, version)
	}
	for _, p := range s.parts {
		if !wire.Finite(tensors[p.Tensor][p.Offset : p.Offset+p.Len]) {
			return fmt.Errorf("%w: tensor %q holds NaN or Inf", ErrMismatch, p.Name)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	for _, p := range s.parts {
		copy(s.weights[p.Flat:p.Flat+p.Len], tensors[p.Tensor][p.Offset:p.Offset+p.Len])
	}
	s.resetLocked(version)
	s.weightsChangedLocked()
	return nil
}
