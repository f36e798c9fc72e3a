package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/tailorml/tailor/internal/cluster"
)

// The membership as the leader sees it: live and benched workers, workers
// and servers lost.

// watch drops workers the membership declares dead or gone, starts a
// rollback when one of the attempt's servers is lost, and wakes the
// board's waiters at every event: the live members changed.
func (l *leader) watch(events <-chan cluster.Event) {
	self := cluster.Member{ID: l.cfg.ID, Role: cluster.RoleCoordinator}
	for ev := range events {
		if ev.Member.Role != self.Role || ev.Member.ID != self.ID || ev.Kind == cluster.EventLeaseLost || ev.Kind == cluster.EventRegistered {
			l.journal.member(ev, self)
		}
		switch ev.Member.Role {
		case cluster.RoleParamServer:
			// a rollback is costly: only the lease's expiry (or a leave)
			// counts, not gossip's first suspicion, which load can raise
			switch ev.Kind {
			case cluster.EventGone, cluster.EventLeft:
				l.psLost(ev.Member)
			}
		case cluster.RoleWorker:
			switch ev.Kind {
			case cluster.EventFailed, cluster.EventGone, cluster.EventLeft:
				l.log.Info("worker lost", "worker", ev.Member.ID, "event", ev.Kind)
				l.dropWorker(ev.Member.ID)
			}
		}
		l.board.broadcast()
	}
}

// psLost starts a rollback, once per attempt, if m is one of the servers
// the attempt works with (not an earlier incarnation's late news).
func (l *leader) psLost(m cluster.Member) {
	if a := l.att.Load(); a != nil && a.serves(m.Addrs[AddrGRPC]) {
		a.startRollback("parameter server "+m.ID+" lost", func() {
			l.log.Warn("parameter server lost", "ps", m.ID, "addr", m.Addrs[AddrGRPC])
		})
	}
}

// members returns the live members of role (l.memberList, if a test set
// it).
func (l *leader) members(role cluster.Role) []cluster.Member {
	if l.memberList != nil {
		return l.memberList(role)
	}
	return l.mem.Members(role)
}

// liveWorkers returns the live workers in rank order, less the benched.
func (l *leader) liveWorkers() []string {
	return l.benched.filter(l.members(cluster.RoleWorker))
}

// benchSet holds the benched workers: members that did not take part in a
// step they were given (synchronised BatchNorm's deadline, the watchdog's
// re-dispatch). They get no work until they ask for it. It is safe for
// concurrent use.
type benchSet struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (s *benchSet) add(ids []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[string]bool{}
	}
	for _, w := range ids {
		s.ids[w] = true
	}
}

// remove unbenches id; it reports whether id was benched.
func (s *benchSet) remove(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.ids[id]
	delete(s.ids, id)
	return was
}

func (s *benchSet) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ids[id]
}

// filter returns the ids of the members of ms not benched, in their order.
func (s *benchSet) filter(ms []cluster.Member) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, m := range ms {
		if !s.ids[m.ID] {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

func (s *benchSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

// bench takes workers that missed a step's synchronised BatchNorm out of
// the step and of the next ones, as if they had died, until they ask for
// work again: a member that does not compute must not hold every step.
func (l *leader) bench(step int64, missing []string) {
	for _, w := range missing {
		l.log.Warn("worker left out of a step: no work for it until it asks", "worker", w, "step", step)
	}
	l.benchWorkers(missing)
}

// benchWorkers benches ids and drops them from the open and later steps
// and from the schedule (dropWorker): their reservations and units go back
// to the pool.
func (l *leader) benchWorkers(ids []string) {
	l.benched.add(ids)
	for _, w := range ids {
		l.dropWorker(w)
	}
}

// unbench lets a benched worker work again: it asks for work. The
// board's waiters learn that it is live again.
func (l *leader) unbench(id string) {
	if l.benched.remove(id) {
		l.board.broadcast()
	}
}

// dropWorker takes a worker out of the open and later steps and out of the
// schedule: its reservation and units go back to the pool.
func (l *leader) dropWorker(id string) {
	l.steps.Drop(id)
	l.bn.Reevaluate() // its BatchNorm exchanges go on without it
	b := l.board
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dropLocked(id)
	b.broadcastLocked()
}

// dropAbsentLocked releases the units of the checkpoint's workers that are
// not live now (resumed with fewer or other workers).
func (l *leader) dropAbsentLocked(st *SchedState) {
	live := map[string]bool{}
	for _, w := range l.liveWorkers() {
		live[w] = true
	}
	owners := map[string]bool{}
	for _, u := range st.Ledger.State {
		if u.Owner != "" {
			owners[u.Owner] = true
		}
	}
	for w := range st.Pos {
		owners[w] = true
	}
	for w := range owners {
		if live[w] {
			continue
		}
		l.log.Info("resumed without a worker of the checkpoint: its units go back to the pool", "worker", w)
		l.board.dropLocked(w)
	}
}

// ResumeWorkerWait bounds how long a leader that goes on from a checkpoint
// (a resume, a failover, a rollback) waits for spec.Workers workers: those
// that are alive re-register within seconds, and one that died must not
// stop the run.
const ResumeWorkerWait = 20 * time.Second

// waitWorkers waits until spec.Workers workers are live (sync runs are
// reproducible only with a fixed set): for good at a fresh start, at most
// ResumeWorkerWait when going on from a checkpoint (resumed). It looks
// again at every membership event (the board's wake).
func (l *leader) waitWorkers(ctx context.Context, a *attempt, resumed bool) error {
	want := l.spec.Workers
	start := time.Now()
	giveUp := time.NewTimer(ResumeWorkerWait)
	defer giveUp.Stop()
	report := time.NewTicker(5 * time.Second)
	defer report.Stop()
	for {
		wake := l.board.wakeCh() // before counting: no change is missed
		n := len(l.liveWorkers())
		if n >= want {
			return nil
		}
		if resumed && n > 0 && time.Since(start) >= ResumeWorkerWait {
			l.log.Warn("going on with fewer workers than the run asks for", "live", n, "want", want, "waited", ResumeWorkerWait)
			return nil
		}
		select {
		case <-wake:
		case <-giveUp.C: // look again: the wait for the missing ones is over
		case <-report.C:
			l.log.Info("waiting for workers", "live", n, "want", want)
		case <-ctx.Done():
			return ctx.Err()
		case <-l.lost:
			return errLostLeadership
		case <-a.rollback:
			return errRollback
		}
	}
}

// waitWorkersLeave waits, at most grace, until no worker is live: each has
// heard "done" and left the run (or died). A worker still live then may
// still be about to ask; the wait gives it the chance.
func (l *leader) waitWorkersLeave(ctx context.Context, grace time.Duration) {
	t := time.NewTimer(grace)
	defer t.Stop()
	for {
		wake := l.board.wakeCh() // before looking: no change is missed
		if len(l.members(cluster.RoleWorker)) == 0 {
			return
		}
		select {
		case <-wake:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}
