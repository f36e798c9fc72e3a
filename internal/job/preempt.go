package job

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/cluster"
)

// PreemptRequest is a member's preemption request (a parameter server
// told to stop), at Keys.Preempt(id): the leader checkpoints at once, then
// waits for the member to leave, so that the rollback its leaving causes
// loses no step.
type PreemptRequest struct {
	ID    string       `json:"id"`
	Role  cluster.Role `json:"role"`
	Index int          `json:"index"`
	At    time.Time    `json:"at"`
}

// AwaitPreemptCheckpoint asks the leader for a checkpoint (a request under
// a lease that outlives the server by no more than grace) and waits until
// the checkpoint pointer moves after the request, or ctx ends. It returns
// the revision at which the pointer moved (0 if it did not).
func AwaitPreemptCheckpoint(ctx context.Context, cli *clientv3.Client, keys cluster.Keys, req PreemptRequest, grace time.Duration, log *slog.Logger) (int64, error) {
	lease, err := cli.Grant(ctx, int64(grace/time.Second)+10)
	if err != nil {
		return 0, fmt.Errorf("preemption request: %w", err)
	}
	b, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	put, err := cli.Put(ctx, keys.Preempt(req.ID), string(b), clientv3.WithLease(lease.ID))
	if err != nil {
		return 0, fmt.Errorf("preemption request: %w", err)
	}
	// the request goes with the checkpoint: a leader elected later must
	// not take it for a new one
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_, _ = cli.Revoke(rctx, lease.ID)
	}()
	log.Info("preemption notice: asked the leader for a checkpoint")
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range cli.Watch(wctx, keys.Checkpoint(), clientv3.WithRev(put.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return 0, fmt.Errorf("watching the checkpoint pointer: %w", err)
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypePut {
				return ev.Kv.ModRevision, nil
			}
		}
	}
	return 0, ctx.Err()
}
