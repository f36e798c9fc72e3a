package paramserver

import (
	"slices"
	"sync"
)

// Membership is the source of the active workers. The sync barrier waits
// for exactly these, SSP measures the slowest of these, and pushes from
// anyone else are rejected. The cluster code implements it from etcd leases
// (and memberlist gossip), cluster.WatchIDs(m, cluster.RoleWorker): a
// worker's id is its cluster member id, without the role; StaticMembers
// is a fixed or hand-driven set.
type Membership interface {
	// Members returns the active worker ids and a channel that is closed
	// at the next change. The slice must not be modified by the caller.
	Members() (workers []string, changed <-chan struct{})
}

// StaticMembers is a Membership set by hand: fixed for a static cluster,
// changed with Set by tests and tools.
type StaticMembers struct {
	mu      sync.Mutex
	ids     []string
	changed chan struct{}
}

// NewStaticMembers returns a membership holding ids.
func NewStaticMembers(ids ...string) *StaticMembers {
	return &StaticMembers{ids: slices.Clone(ids), changed: make(chan struct{})}
}

// Members implements Membership.
func (m *StaticMembers) Members() ([]string, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ids, m.changed
}

// Set replaces the members and notifies watchers.
func (m *StaticMembers) Set(ids ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ids = slices.Clone(ids)
	close(m.changed)
	m.changed = make(chan struct{})
}
