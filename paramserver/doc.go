// Package paramserver is the parameter server: it holds a share of the
// model's weights, applies the workers' gradients with the same optimizer
// as the single-process trainer (optim.Adam), and serves the weights back.
// It is generic over named float32 tensors (wire.Spec) and knows nothing of
// the net; it talks to workers only through internal/wire.
//
// # Partitioning
//
// With P servers, wire.NewPlan cuts the concatenation of all tensors into
// P nearly equal contiguous ranges; server i holds range i, made of parts
// (a whole small tensor or a slice of a big one). Workers and servers build
// the same plan from the same spec, and its fingerprint travels in every
// message. Adam is elementwise, so applying it part by part is bit-identical
// to applying it to whole tensors.
//
// # Update rules
//
// Sync (Mode Sync): step t collects one gradient from every active worker
// (Membership), then averages them — for each float, the float64 sum in
// sorted worker-id order divided by the count, rounded to float32, so the
// result does not depend on arrival order — and applies one Adam step;
// the version becomes t+1. A push for step t is accepted only while the
// server is collecting t (earlier: "stale", later: "future"). The barrier
// never hangs: when the membership changes, the step completes as soon as
// every current member's gradient is in (gradients of workers that have
// left still count); StepDeadline after the first gradient it completes
// with what has arrived; with SyncQuorum k it completes at k gradients.
// Gradients a step went without are counted
// (tailor_ps_missing_gradients_total); late ones are rejected as stale.
// A single worker in sync mode reproduces the single-process trainer
// exactly.
//
// Sync with a Decider (Config.Decider; the coordinator in the cluster,
// through wire.NewDeciderClient): with P > 1 servers each deciding alone
// would disagree when a worker dies between its pushes, so one decider
// chooses the step's set S_t for all of them (docs/cluster.md). The server
// reports the sorted ids of the workers whose step-t gradient it holds
// completely — each time that set grows or the membership changes, one
// long-poll call at a time, each bounded by StepDeadline and retried — and
// applies the average of exactly S_t's gradients, summed in the decision's
// order (worker rank order), then one Adam step. Local completion (all
// members, StepDeadline, SyncQuorum) is off. A push is answered once its
// step is decided: accepted, at version t+1, if its gradient is in S_t;
// otherwise refused with wire.ReasonLate (the gradient is dropped; a push
// arriving after the step was applied is wire.ReasonStale as before).
// Either refusal tells the worker to redo its batch at step t+1. Pushes are
// safe to retry (a reply lost with its connection): while the step is
// collected a retry is ReasonDuplicate (the gradient is held; ask again);
// once applied, the server answers from its last 16 decisions — accepted
// if the gradient made the step (not applied twice), ReasonLate if not —
// and older steps are ReasonStale. A
// decision naming a gradient the server does not hold is a protocol
// error: the server applies nothing, logs it, counts it
// (tailor_ps_decision_errors_total), refuses pushes with
// wire.ReasonInconsistent and reports it from Err, rather than diverge
// from the other servers.
//
// Async (Mode Async): every push is applied on arrival, one Adam step each;
// the version counts updates. A push carries the worker's own step (its
// count of pushes) and the version its gradient was computed from; a step
// the worker has already pushed is rejected as a duplicate, so a retried
// push is applied at most once. A worker id must therefore keep counting
// across reconnects (or a restarted worker must take a new id).
//
// Bounded staleness (Mode SSP): Async, but a worker's push for step s is
// held while s > c + Staleness, where c is the step the slowest active
// worker is on (its last accepted step + 1; workers that have not pushed
// yet are not counted, nor idle ones). Held pushes are re-examined whenever
// a worker advances, goes idle or the membership changes, so a dead worker
// stops holding anyone back as soon as the membership drops it. A worker
// that has no batch (the coordinator told it to wait: the end of an epoch)
// sends Idle and is not counted until its next push; without that, the
// workers still finishing an epoch would wait for it for good. A worker
// that comes back from idle behind the others holds them back until it
// has caught up to within the bound. Staleness 0 is lockstep.
//
// # State tensors (BatchNorm running statistics)
//
// Tensors of kind wire.State are not trained: no optimizer touches them.
// With every push a worker sends its current values (the net's BatchNorm
// running means and variances) in place of a gradient. In sync mode the
// server stores the average of the values sent with the step-t pushes
// (same order and arithmetic as gradients); in async and SSP modes it
// stores the latest values received, i.e. the sending worker's running
// average (EMA). Pulls return them with the weights, and a worker should
// load them into its net, so that each worker's EMA continues from the
// shared one.
//
// # Validation
//
// A push is read into a pooled buffer and checked before it can touch the
// weights: run id, plan fingerprint and server index, sender in the
// membership, step (see above), exact coverage of the server's parts in
// order (no gap, overlap or extra), payload checksum (CRC-32C, when the
// sender set wire.FlagChecksum, as clients do by default), and finite
// values. A refused push is answered with its reason, counted
// (tailor_ps_pushes_rejected_total{reason}) and logged; the weights do not
// change.
//
// # Pulls
//
// A pull waits (bounded by its context) until the server has weights of at
// least the requested version, then streams them. Anyone with the run id
// may pull (workers, the coordinator, an evaluator); only members push. Pulls of one version
// share one immutable copy, sent without further copying.
//
// # Checkpoints
//
// Snapshot copies weights and Adam moments at the current version;
// SnapshotAt(v) copies them right after the update that produces version
// v; Restore loads such a copy. SetWeights (or the Init RPC, once per run)
// sets the initial weights.
//
// # Security
//
// The wire protocol is plaintext gRPC without authentication: it is meant
// for a trusted cluster network.
package paramserver
