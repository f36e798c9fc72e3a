// Package clustertest has test helpers for code that talks to etcd: a
// throwaway embedded etcd and clients for it.
package clustertest

import (
	"context"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/cluster"
)

// Etcd starts an embedded etcd for the test (fast ticks, no fsync, a temp
// dir, free ports on 127.0.0.1), stops it at cleanup, and returns its client
// endpoints.
func Etcd(tb testing.TB) (endpoints []string) {
	tb.Helper()
	return EtcdServer(tb).Endpoints()
}

// EtcdServer is Etcd, returning the server itself (to stop it early or
// restart it on the same dir and ports). Closing it waits up to ~5 s for
// clients that still hold watch or keepalive streams; close them first
// where that matters.
func EtcdServer(tb testing.TB) *cluster.EmbeddedEtcd {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	e, err := cluster.StartEtcd(ctx, cluster.EtcdConfig{
		Dir:           tb.TempDir(),
		FastTicks:     true,
		UnsafeNoFsync: true,
		LogLevel:      logLevel(),
	})
	if err != nil {
		tb.Fatalf("start embedded etcd: %v", err)
	}
	tb.Cleanup(e.Close)
	return e
}

// logLevel is etcd's log level in tests: TAILOR_TEST_ETCD_LOG, default
// "fatal" (etcd logs errors on every Close).
func logLevel() string {
	if l := os.Getenv("TAILOR_TEST_ETCD_LOG"); l != "" {
		return l
	}
	return "fatal"
}

// Client returns an etcd client for endpoints, closed at cleanup.
func Client(tb testing.TB, endpoints []string) *clientv3.Client {
	tb.Helper()
	cli, err := cluster.NewClient(endpoints)
	if err != nil {
		tb.Fatalf("etcd client: %v", err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}
