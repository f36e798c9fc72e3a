package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/tailorml/tailor/internal/wire"
)

// workPoll is how long Next holds a worker that has nothing to do before
// it answers "wait" (the worker asks again at once).
const workPoll = 5 * time.Second

// workSource is what the Work service asks of the leader: the generation,
// the work to hand out, and where the steps workers finish are counted.
type workSource interface {
	// generation is the generation replies carry now.
	generation() uint64
	// asked learns that worker asks for work: if it was benched, it may
	// work again.
	asked(worker string)
	// finished counts the loss of step, which worker reports finished; it
	// is called once per step and worker.
	finished(worker string, step int64, loss float64)
	// offer is what worker gets now, done being its last step finished in
	// this generation (-1: none, or already reported).
	offer(worker string, done int64) (offer, error)
}

// offer is the leader's answer to a worker asking for work.
type offer struct {
	over  bool  // the run is over: "done"
	batch Batch // the worker's batch, if ok
	ok    bool
	// async: an async epoch runs, and done has been taken as reported (the
	// batch it finished is consumed): ask again with -1
	async bool
	// wake is closed when the answer may have changed; nil with over or ok
	wake <-chan struct{}
}

// workService answers the workers' Work calls (it implements
// wire.WorkHandler): Next hands out batches step by step from the leader's
// schedule, ReduceBN is synchronised BatchNorm. It owns the reply logic:
// generations, counting each finished step once, the long poll.
type workService struct {
	runID string
	ssp   bool // the run's mode is ssp
	src   workSource
	bn    *bnReducer
	poll  time.Duration // workPoll; tests shorten it

	mu       sync.Mutex
	reported map[string]int64 // the last step each worker reported finished
}

var _ wire.WorkHandler = (*workService)(nil)

func newWorkService(runID string, ssp bool, src workSource, bn *bnReducer) *workService {
	return &workService{runID: runID, ssp: ssp, src: src, bn: bn, poll: workPoll, reported: map[string]int64{}}
}

// ReduceBN implements wire.WorkHandler: synchronised BatchNorm.
func (w *workService) ReduceBN(ctx context.Context, req *wire.BNRequest) (*wire.BNReply, error) {
	return w.bn.Reduce(ctx, req)
}

// Next implements wire.WorkHandler: it answers when the worker has a batch
// in a step after the one it finished, when the run is over, or after a
// while with "wait".
func (w *workService) Next(ctx context.Context, req *wire.WorkRequest) (*wire.WorkReply, error) {
	if req.RunID != w.runID {
		return nil, wire.RejectStatus(wire.ReasonRunID, req.RunID)
	}
	rep := &wire.WorkReply{RunID: req.RunID, WorkerID: req.WorkerID, Kind: wire.WorkWait}
	rep.Gen = w.src.generation()
	done := req.Done
	if req.Gen != rep.Gen {
		// the worker's finished step belongs to another leader, or to steps
		// a rollback to a checkpoint undid: not a report for this one
		done = -1
	}
	w.src.asked(req.WorkerID)
	fresh := w.fresh(req.WorkerID, done)
	if fresh {
		w.src.finished(req.WorkerID, done, req.Loss)
	}
	timeout := time.NewTimer(w.poll)
	defer timeout.Stop()
	for {
		o, err := w.src.offer(req.WorkerID, done)
		switch {
		case err != nil:
			return nil, err
		case o.over:
			rep.Kind = wire.WorkDone
			return w.waitReply(rep), nil
		case o.ok:
			return w.batchReply(rep, o.batch), nil
		case o.async && fresh && w.ssp:
			// at once, not after the long poll: the worker tells the
			// parameter servers it is idle, so that it stops holding
			// back the workers still finishing the epoch
			return w.waitReply(rep), nil
		case o.async:
			done = -1 // reported; now just wait for the next epoch
		}
		select {
		case <-o.wake:
		case <-timeout.C:
			return w.waitReply(rep), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// fresh reports whether step is a finished step worker has not reported
// before, and remembers it: each finished step's loss counts once, however
// often the worker asks.
func (w *workService) fresh(worker string, step int64) bool {
	if step < 0 {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if last, ok := w.reported[worker]; ok && step <= last {
		return false
	}
	w.reported[worker] = step
	return true
}

// waitReply is rep (a wait or done) with the current generation: a long
// poll may have begun under the one before.
func (w *workService) waitReply(rep *wire.WorkReply) *wire.WorkReply {
	rep.Gen = w.src.generation()
	return rep
}

func (w *workService) batchReply(rep *wire.WorkReply, b Batch) *wire.WorkReply {
	// the generation of the batch's scheduler: a long poll may have begun
	// under the one before
	rep.Gen = w.src.generation()
	rep.Kind, rep.Step, rep.Epoch, rep.IDs, rep.Offset = wire.WorkBatch, b.Step, int64(b.Epoch), b.IDs, uint64(b.Offset)
	return rep
}
