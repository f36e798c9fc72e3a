package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/cluster"
)

// Pointer is the etcd record (Keys.Checkpoint) naming the newest complete
// checkpoint of a run. It is published only after every blob and the
// manifest are written and verified, with a compare on the key's version,
// so it never names a partial checkpoint and never moves backwards because
// of a deposed leader.
type Pointer struct {
	JobID   string    `json:"job_id"`
	Name    string    `json:"name"` // folder name (Name(step, epochs))
	Step    int64     `json:"step"`
	Epochs  int       `json:"epochs"`
	Meta    string    `json:"meta_sha256"` // the manifest's Checksum
	Created time.Time `json:"created"`
}

// GetPointer reads the run's pointer and the key's version (for Publish).
// A run without checkpoints gives cluster.ErrNotFound and version 0.
func GetPointer(ctx context.Context, cli *clientv3.Client, keys cluster.Keys) (Pointer, int64, error) {
	var p Pointer
	kv, err := cluster.GetJSON(ctx, cli, keys.Checkpoint(), &p)
	if errors.Is(err, cluster.ErrNotFound) {
		return p, 0, err
	}
	if err != nil {
		return p, 0, fmt.Errorf("read the checkpoint pointer: %w", err)
	}
	return p, kv.Version, nil
}

// Publish moves the pointer to p if the key's version is still version
// (what GetPointer or the last Publish returned) and every guard holds. It
// returns the key's new version.
func Publish(ctx context.Context, cli *clientv3.Client, keys cluster.Keys, p Pointer, version int64, guards ...clientv3.Cmp) (int64, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return version, err
	}
	if _, err := cluster.CASVersion(ctx, cli, keys.Checkpoint(), version, b, guards...); err != nil {
		return version, fmt.Errorf("publish checkpoint %s: %w", p.Name, err)
	}
	return version + 1, nil
}
