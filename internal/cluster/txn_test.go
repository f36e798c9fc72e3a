package cluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/cluster/clustertest"
)

func TestCAS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cli := clustertest.Client(t, clustertest.Etcd(t))
	k := cluster.RunKeys("cas").Status()

	rev1, err := cluster.Create(ctx, cli, k, []byte(`{"state":"pending"}`))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	_, err = cluster.Create(ctx, cli, k, []byte(`{}`))
	var ce *cluster.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("second Create: err = %v, want a ConflictError", err)
	}
	if ce.Got != rev1 || ce.Want != 0 || ce.GuardFailed {
		t.Errorf("conflict = %+v, want Got %d, Want 0, GuardFailed false", ce, rev1)
	}

	// Two coordinators read the unit at rev1; only the first assignment wins.
	rev2, err := cluster.CAS(ctx, cli, k, rev1, []byte(`{"worker":"w1","state":"assigned"}`))
	if err != nil {
		t.Fatalf("CAS at read revision: %v", err)
	}
	_, err = cluster.CAS(ctx, cli, k, rev1, []byte(`{"worker":"w2","state":"assigned"}`))
	if !errors.As(err, &ce) {
		t.Fatalf("CAS at stale revision: err = %v, want ConflictError", err)
	}
	if ce.Got != rev2 || ce.Want != rev1 || string(ce.Current.Value) != `{"worker":"w1","state":"assigned"}` {
		t.Errorf("conflict = %+v, want Got %d, Want %d and the w1 value", ce, rev2, rev1)
	}

	var u struct{ Worker string }
	kv, err := cluster.GetJSON(ctx, cli, k, &u)
	if err != nil || u.Worker != "w1" || kv.ModRev != rev2 {
		t.Errorf("GetJSON = %+v, %+v, %v; want worker w1 at rev %d", u, kv, err, rev2)
	}

	// A guard that fails (a deposed leader's fence) blocks a write whose
	// revision matched.
	guard := clientv3.Compare(clientv3.CreateRevision("/no/such/leader"), "=", 5)
	_, err = cluster.CAS(ctx, cli, k, rev2, []byte(`{}`), guard)
	if !errors.As(err, &ce) || !ce.GuardFailed {
		t.Errorf("CAS with failing guard: err = %v, want ConflictError with GuardFailed", err)
	}

	if _, err := cluster.DeleteIf(ctx, cli, k, rev1); !errors.Is(err, cluster.ErrConflict) {
		t.Errorf("DeleteIf at stale revision: err = %v, want ErrConflict", err)
	}
	if _, err := cluster.DeleteIf(ctx, cli, k, rev2); err != nil {
		t.Errorf("DeleteIf at current revision: %v", err)
	}
	if _, err := cluster.Get(ctx, cli, k); !errors.Is(err, cluster.ErrNotFound) {
		t.Errorf("Get after delete: err = %v, want ErrNotFound", err)
	}
}

func TestCASVersionCheckpointPointer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cli := clustertest.Client(t, clustertest.Etcd(t))
	k := cluster.RunKeys("ck").Checkpoint()

	if _, err := cluster.CASVersion(ctx, cli, k, 0, []byte(`{"step":100,"manifest":"m100"}`)); err != nil {
		t.Fatalf("first publish: %v", err)
	}
	if _, err := cluster.CASVersion(ctx, cli, k, 1, []byte(`{"step":200,"manifest":"m200"}`)); err != nil {
		t.Fatalf("second publish: %v", err)
	}
	// A coordinator that read version 1 and is late must not move the pointer back.
	_, err := cluster.CASVersion(ctx, cli, k, 1, []byte(`{"step":150,"manifest":"m150"}`))
	var ce *cluster.ConflictError
	if !errors.As(err, &ce) || ce.Field != "version" || ce.Got != 2 || ce.Want != 1 {
		t.Fatalf("late publish: err = %v, want version conflict got 2 want 1", err)
	}
	var p struct{ Step int64 }
	if _, err := cluster.GetJSON(ctx, cli, k, &p); err != nil || p.Step != 200 {
		t.Errorf("pointer = %+v, %v; want step 200", p, err)
	}
}
