package cluster

import (
	"net/url"
	"strings"
)

// Root is the prefix of every key tailor writes to etcd.
const Root = "/tailor/runs/"

// Role is what a member does in a run.
type Role string

// The roles of a run.
const (
	RoleCoordinator Role = "coordinator"
	RoleParamServer Role = "paramserver"
	RoleWorker      Role = "worker"
)

// Valid reports whether r is one of the known roles.
func (r Role) Valid() bool {
	switch r {
	case RoleCoordinator, RoleParamServer, RoleWorker:
		return true
	}
	return false
}

// Keys builds the etcd keys of one run. Every key of the run is under
// Prefix(); docs/etcd-keys.md says who writes each key, when, and with which
// Txn compare. Names (run, member ids) are path-escaped, so any string makes
// a well-formed key and a "/" in a name cannot reach into another key's
// namespace. Numbers are zero-padded so that etcd's lexical key order is
// numeric order.
//
// The zero Keys is not usable; use RunKeys.
type Keys struct {
	prefix string
}

// RunKeys returns the key builder for run.
func RunKeys(run string) Keys {
	return Keys{prefix: Root + seg(run) + "/"}
}

// seg escapes one path segment of a key.
func seg(s string) string { return url.PathEscape(s) }

// Prefix is /tailor/runs/<run>/, the prefix of all of the run's keys.
func (k Keys) Prefix() string { return k.prefix }

// Spec is the job spec: the immutable description of the run.
func (k Keys) Spec() string { return k.prefix + "spec" }

// Status is status: the run's outcome ({"state": "done", ...}), written by
// the leader coordinator when the run is over (leader guard). Standby
// coordinators and `tailor local` watch it.
func (k Keys) Status() string { return k.prefix + "status" }

// WireSpec is wirespec: the model's tensor spec (wire.Spec, JSON) that the
// parameter servers hold, written by the first leader coordinator (Create:
// it never changes), so that parameter servers need not know the net.
func (k Keys) WireSpec() string { return k.prefix + "wirespec" }

// Members is the prefix of all member keys.
func (k Keys) Members() string { return k.prefix + "members/" }

// RoleMembers is the prefix of the member keys of one role.
func (k Keys) RoleMembers(role Role) string { return k.Members() + seg(string(role)) + "/" }

// Member is members/<role>/<id>: the member's record, bound to its lease.
func (k Keys) Member(role Role, id string) string { return k.RoleMembers(role) + seg(id) }

// ParseMember returns the role and id of a key made by Member.
func (k Keys) ParseMember(key string) (role Role, id string, ok bool) {
	rest, ok := strings.CutPrefix(key, k.Members())
	if !ok {
		return "", "", false
	}
	r, i, ok := strings.Cut(rest, "/")
	if !ok || strings.Contains(i, "/") {
		return "", "", false
	}
	ru, err1 := url.PathUnescape(r)
	iu, err2 := url.PathUnescape(i)
	if err1 != nil || err2 != nil || iu == "" {
		return "", "", false
	}
	return Role(ru), iu, true
}

// Election is the coordinator leader-election prefix; candidates' keys
// are leader/<lease id in hex>, and the one with the lowest create revision
// is the leader (go.etcd.io/etcd/client/v3/concurrency).
func (k Keys) Election() string { return k.prefix + "leader/" }

// TrainProgress is train-progress: the run's live numbers (epoch, step,
// loss, images per second, live workers; coordinator.Progress, JSON),
// written by the leader coordinator every few seconds (a put guarded by the
// leader guard) and read by `tailor status`. Informational only; it
// outlives the run with its last numbers.
func (k Keys) TrainProgress() string { return k.prefix + "train-progress" }

// Preempts is the prefix of preemption requests: a member told to stop
// (a parameter server on a spot VM's notice) puts Preempt(id), under a
// lease of its own, and the leader checkpoints at once.
func (k Keys) Preempts() string { return k.prefix + "preempt/" }

// Preempt is member id's preemption request.
func (k Keys) Preempt(id string) string { return k.Preempts() + seg(id) }

// Checkpoint is the pointer to the newest complete checkpoint
// (checkpoint.Pointer). Only ever moved with a compare on its version.
func (k Keys) Checkpoint() string { return k.prefix + "checkpoint" }

// Events is events: the run's event log (coordinator.EventLog, JSON), the
// newest few hundred events the leaders recorded — members joined, lost
// and how it was noticed, elections and failovers, rollbacks, skipped
// checkpoints, etcd and store outages. Written by the leader coordinator
// (a put guarded by the leader guard); read by `tailor dashboard`.
func (k Keys) Events() string { return k.prefix + "events" }

// History is history: the run's per-epoch numbers, the latest
// evaluation's per-label scores and the checkpoints taken
// (coordinator.History, JSON). Written by the leader coordinator after
// every epoch and checkpoint (leader guard); read by `tailor dashboard`.
// Like train-progress it outlives the run.
func (k Keys) History() string { return k.prefix + "history" }
