package cluster_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/cluster/clustertest"
)

func TestEtcdStartStopRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	e, err := cluster.StartEtcd(ctx, cluster.EtcdConfig{Dir: t.TempDir(), FastTicks: true, UnsafeNoFsync: true})
	if err != nil {
		t.Fatalf("StartEtcd: %v", err)
	}
	t.Logf("etcd ready in %v at %v", time.Since(start).Round(time.Millisecond), e.Endpoints())
	cli := clustertest.Client(t, e.Endpoints())
	if _, err := cli.Put(ctx, "k", "v1"); err != nil {
		t.Fatalf("put: %v", err)
	}
	e.Close()
	e.Close() // must not panic

	e2, err := cluster.StartEtcd(ctx, e.Config())
	if err != nil {
		t.Fatalf("restart on %v: %v", e.Config().ClientURL, err)
	}
	defer e2.Close()
	if got, want := e2.Endpoints()[0], e.Endpoints()[0]; got != want {
		t.Errorf("restarted endpoint = %s, want %s", got, want)
	}
	kv, err := cluster.Get(ctx, cli, "k")
	if err != nil {
		t.Fatalf("get after restart: %v", err)
	}
	if string(kv.Value) != "v1" {
		t.Errorf("value after restart = %q, want %q", kv.Value, "v1")
	}
}

func TestEtcdTempDirRemoved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := cluster.StartEtcd(ctx, cluster.EtcdConfig{FastTicks: true, UnsafeNoFsync: true})
	if err != nil {
		t.Fatalf("StartEtcd: %v", err)
	}
	dir := e.Config().Dir
	if dir == "" {
		t.Fatal("Config().Dir is empty")
	}
	e.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s still there after Close (stat err %v)", dir, err)
	}
}

func TestEtcdReadyTimeoutCtx(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := cluster.StartEtcd(ctx, cluster.EtcdConfig{FastTicks: true}); err == nil {
		t.Fatal("StartEtcd with a cancelled ctx: got nil error")
	}
}
