package cluster

import (
	"slices"
	"sync"
)

// MemberIDs is the live members of one role as a list of ids that follows
// the membership. For role worker it is a parameter server's
// paramserver.Membership (the workers allowed to push, whom the local sync
// barrier waits for), without paramserver depending on etcd.
//
// Ids: a member's id here is Member.ID, without the role. A worker's wire
// id (wire.ClientConfig.WorkerID, the id in its pushes) must be the same
// string: the worker registered as members/worker/w3 pushes as "w3". Ids
// are listed in rank order (Member.Rank, then id), as Members returns
// them.
type MemberIDs struct {
	mu      sync.Mutex
	ids     []string
	changed chan struct{}

	stop func()
	done chan struct{}
}

// view is what MemberIDs reads of a *Membership.
type view interface {
	Members(role Role) []Member
	Subscribe() (<-chan Event, func())
}

// WatchIDs follows the live members of role in m until Close (or until
// m's subscriptions end, at Leave; the last ids stay).
func WatchIDs(m *Membership, role Role) *MemberIDs { return watchIDs(m, role) }

// WatchRegisteredIDs follows the registered members of role (see
// Membership.Registered): a member leaves the list when its lease expires
// or it leaves, not at gossip's first suspicion.
func WatchRegisteredIDs(m *Membership, role Role) *MemberIDs {
	return watchIDs(registeredView{m}, role)
}

type registeredView struct{ m *Membership }

func (v registeredView) Members(role Role) []Member        { return v.m.Registered(role) }
func (v registeredView) Subscribe() (<-chan Event, func()) { return v.m.Subscribe() }

func watchIDs(v view, role Role) *MemberIDs {
	events, stop := v.Subscribe() // first, then read: nothing is missed
	w := &MemberIDs{
		ids:     memberIDs(v.Members(role)),
		changed: make(chan struct{}),
		stop:    stop,
		done:    make(chan struct{}),
	}
	go w.follow(v, role, events)
	return w
}

func (w *MemberIDs) follow(v view, role Role, events <-chan Event) {
	defer close(w.done)
	for range events {
		// Events are hints; the level is Members. A change that leaves the
		// role's ids as they were notifies nobody.
		w.set(memberIDs(v.Members(role)))
	}
}

func (w *MemberIDs) set(ids []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if slices.Equal(ids, w.ids) {
		return
	}
	w.ids = ids
	close(w.changed)
	w.changed = make(chan struct{})
}

// Members returns the ids and a channel closed at their next change (the
// shape of paramserver.Membership). The slice must not be modified.
func (w *MemberIDs) Members() ([]string, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ids, w.changed
}

// Close stops following the membership. The last ids stay.
func (w *MemberIDs) Close() {
	w.stop()
	<-w.done
}

func memberIDs(ms []Member) []string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return ids
}
