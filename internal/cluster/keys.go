package cluster

import (
	"fmt"
	"net/url"
	"strconv"
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

// Epoch is the current epoch's state (number, unit count, phase).
func (k Keys) Epoch() string { return k.prefix + "epoch" }

// EpochUnits is the prefix of epoch e's work units.
func (k Keys) EpochUnits(e int) string {
	return k.prefix + "epochs/" + pad(e, 6) + "/units/"
}

// Unit is epochs/<e>/units/<u>: who owns work unit u of epoch e, and its
// state (see Unit).
func (k Keys) Unit(e, u int) string { return k.EpochUnits(e) + pad(u, 8) }

// ParseUnit returns the epoch and unit of a key made by Unit.
func (k Keys) ParseUnit(key string) (e, u int, ok bool) {
	rest, ok := strings.CutPrefix(key, k.prefix+"epochs/")
	if !ok {
		return 0, 0, false
	}
	es, us, ok := strings.Cut(rest, "/units/")
	if !ok {
		return 0, 0, false
	}
	e, err1 := strconv.Atoi(es)
	u, err2 := strconv.Atoi(us)
	if err1 != nil || err2 != nil || e < 0 || u < 0 {
		return 0, 0, false
	}
	return e, u, true
}

// Progress is the prefix of the per-worker progress keys.
func (k Keys) Progress() string { return k.prefix + "progress/" }

// WorkerProgress is progress/<worker id>: the worker's last reported
// epoch/step/sample count. Informational (logs, ETA); exactly-once
// accounting lives in the unit keys.
func (k Keys) WorkerProgress(worker string) string { return k.Progress() + seg(worker) }

// TrainProgress is train-progress: the run's live numbers (epoch, step,
// loss, images per second, live workers; coordinator.Progress, JSON),
// written by the leader coordinator every few seconds (a put guarded by the
// leader guard) and read by `tailor status`. Informational only; it
// outlives the run with its last numbers.
func (k Keys) TrainProgress() string { return k.prefix + "train-progress" }

// Checkpoint is the pointer to the newest complete checkpoint (see
// CheckpointPointer). Only ever moved with a compare on its version.
func (k Keys) Checkpoint() string { return k.prefix + "checkpoint" }

// CheckpointRequest names the step t at which every parameter server is to
// snapshot its part.
func (k Keys) CheckpointRequest() string { return k.prefix + "checkpoints/request" }

// CheckpointParts is the prefix of the parts uploaded for step.
func (k Keys) CheckpointParts(step int64) string {
	return k.prefix + "checkpoints/" + pad64(step, 12) + "/parts/"
}

// CheckpointPart is checkpoints/<step>/parts/<ps id>: the object key and
// SHA-256 of one parameter server's part of the checkpoint at step.
func (k Keys) CheckpointPart(step int64, ps string) string {
	return k.CheckpointParts(step) + seg(ps)
}

// ParamServers is the prefix of the parameter-server partition map.
func (k Keys) ParamServers() string { return k.prefix + "ps/" }

// ParamServer is ps/<ps id>: the endpoint a parameter server serves and
// the partition of the parameters it holds (see PSEndpoint).
func (k Keys) ParamServer(id string) string { return k.ParamServers() + seg(id) }

func pad(n, width int) string { return fmt.Sprintf("%0*d", width, n) }

func pad64(n int64, width int) string { return fmt.Sprintf("%0*d", width, n) }

// UnitState is where a work unit is in its life.
type UnitState string

// The states of a work unit. pending → assigned → done; a dead worker's
// assigned units go back to pending. A unit is done only once the parameter
// servers have applied the gradient computed from it.
const (
	UnitPending  UnitState = "pending"
	UnitAssigned UnitState = "assigned"
	UnitDone     UnitState = "done"
)

// Unit is the JSON value of an epochs/<e>/units/<u> key.
type Unit struct {
	Shard   string    `json:"shard"`         // shard object key
	First   int       `json:"first"`         // first record index in the shard
	Count   int       `json:"count"`         // number of records
	Worker  string    `json:"worker"`        // owner; empty when pending
	State   UnitState `json:"state"`         // pending, assigned, done
	Attempt int       `json:"attempt"`       // times assigned, for logs
	Step    int64     `json:"step,omitzero"` // global step whose update consumed it (done)
}

// CheckpointPointer is the JSON value of the checkpoint key.
type CheckpointPointer struct {
	Step     int64  `json:"step"`     // training step the checkpoint holds
	Manifest string `json:"manifest"` // object key of the checkpoint manifest
}

// CheckpointPart is the JSON value of a checkpoints/<step>/parts/<ps> key.
type CheckpointPart struct {
	Object string `json:"object"` // object key of the part
	SHA256 string `json:"sha256"` // hex SHA-256 of the object's bytes
	Bytes  int64  `json:"bytes"`
}

// PSEndpoint is the JSON value of a ps/<id> key.
type PSEndpoint struct {
	Addr  string `json:"addr"`  // host:port of the parameter service
	Part  int    `json:"part"`  // which partition of the parameters, 0-based
	Parts int    `json:"parts"` // number of partitions
}
