package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/retry"
)

// Preemption (docs/cluster.md, "Preemption"): a leader told to stop
// (Config.Drain: SIGTERM, a spot VM's notice) checkpoints after the last
// decided step (sync) or at a cut it asks for at once (async, SSP), then
// resigns, so that the standby, or the next leader, goes on from exactly
// there: no completed step is lost.

// errPreempted ends a term on a preemption notice, after its checkpoint.
var errPreempted = errors.New("coordinator: preempted")

// preempt takes the preemption's checkpoint with save and returns
// errPreempted, or why it could not take it.
func (l *leader) preempt(ctx context.Context, a *attempt, save func(context.Context, *attempt, string) error) error {
	l.setPhase(phaseCheckpoint)
	t0 := time.Now()
	l.log.Info("preemption notice: checkpointing before leaving")
	if err := save(ctx, a, "preempt"); err != nil {
		return fmt.Errorf("preemption checkpoint: %w", err)
	}
	if !l.ck.savedSince(t0) {
		return fmt.Errorf("preemption checkpoint: not saved (see the warning above)")
	}
	l.log.Info("preemption checkpoint saved", "seconds", time.Since(t0).Seconds())
	return errPreempted
}

// A member told to stop (a parameter server on a spot VM's notice) asks
// for a checkpoint at Keys.Preempt(id) (job.AwaitPreemptCheckpoint); the
// leader takes it at the next step boundary (sync) or cut (async, SSP),
// then waits for the member to leave. Its leaving rolls the run back to
// that very checkpoint, so no completed step is lost.

// preemptWait bounds how long the leader waits, after the checkpoint, for
// a member that asked for it to leave; then training goes on.
const preemptWait = time.Minute

// preemptions are the members' requests the leader has seen and not yet
// served.
type preemptions struct {
	mu      sync.Mutex
	pend    []job.PreemptRequest
	served  map[string]time.Time // id → the request's time, once served
	changed func()               // wakes the epoch loops
}

func (p *preemptions) add(r job.PreemptRequest) {
	p.mu.Lock()
	if p.served == nil {
		p.served = map[string]time.Time{}
	}
	if at, ok := p.served[r.ID]; ok && !r.At.After(at) {
		p.mu.Unlock()
		return
	}
	for _, q := range p.pend {
		if q.ID == r.ID {
			p.mu.Unlock()
			return
		}
	}
	p.pend = append(p.pend, r)
	p.mu.Unlock()
	if p.changed != nil {
		p.changed()
	}
}

// pending returns the oldest request not yet served.
func (p *preemptions) pending() (job.PreemptRequest, bool) {
	if p == nil {
		return job.PreemptRequest{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pend) == 0 {
		return job.PreemptRequest{}, false
	}
	return p.pend[0], true
}

// serve marks r served: its checkpoint is taken (or failed).
func (p *preemptions) serve(r job.PreemptRequest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pend = slices.DeleteFunc(p.pend, func(q job.PreemptRequest) bool { return q.ID == r.ID })
	p.served[r.ID] = r.At
}

// watchPreempts follows the members' preemption requests until ctx ends.
func (l *leader) watchPreempts(ctx context.Context) {
	keys := cluster.RunKeys(l.spec.Run)
	var rev int64
	for ctx.Err() == nil {
		resp, err := l.cli.Get(ctx, keys.Preempts(), clientv3.WithPrefix())
		if err != nil {
			if !retry.Sleep(ctx, time.Second) {
				return
			}
			continue
		}
		for _, kv := range resp.Kvs {
			l.addPreempt(kv.Value)
		}
		rev = resp.Header.Revision
		break
	}
	for wr := range l.cli.Watch(clientv3.WithRequireLeader(ctx), keys.Preempts(), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypePut {
				l.addPreempt(ev.Kv.Value)
			}
		}
	}
}

func (l *leader) addPreempt(v []byte) {
	var r job.PreemptRequest
	if err := json.Unmarshal(v, &r); err != nil || r.ID == "" {
		l.log.Warn("a preemption request that is not one", "value", string(v))
		return
	}
	l.log.Info("preemption request", "member", r.ID, "role", r.Role)
	l.preempts.add(r)
}

// servePreempt takes the checkpoint member r asked for with save, then
// waits for r to leave: its loss rolls the attempt back to that
// checkpoint (errRollback). After preemptWait without it leaving, training
// goes on (nil).
func (l *leader) servePreempt(ctx context.Context, a *attempt, r job.PreemptRequest, save func(context.Context, *attempt, string) error) error {
	l.setPhase(phaseCheckpoint)
	t0 := time.Now()
	err := save(ctx, a, "preempt")
	l.preempts.serve(r)
	if err != nil {
		return err
	}
	if !l.ck.savedSince(t0) {
		l.log.Warn("preemption checkpoint not saved; the member leaves without it", "member", r.ID)
	} else {
		l.log.Info("preemption checkpoint saved; waiting for the member to leave", "member", r.ID, "seconds", time.Since(t0).Seconds())
	}
	l.setPhase(phasePreempt)
	defer l.setPhase(phaseTraining)
	t := time.NewTimer(preemptWait)
	defer t.Stop()
	select {
	case <-t.C:
		l.log.Warn("a member that asked for a preemption checkpoint did not leave; going on", "member", r.ID)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-l.lost:
		return errLostLeadership
	case <-a.rollback:
		return errRollback
	}
}
