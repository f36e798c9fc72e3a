package job

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/cluster/clustertest"
)

func TestSubmitLoad(t *testing.T) {
	cli := clustertest.Client(t, clustertest.Etcd(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := DefaultSpec("r1", "/data")
	if err := Submit(ctx, cli, s); err != nil {
		t.Fatal(err)
	}
	if err := Submit(ctx, cli, s); err != nil {
		t.Errorf("same spec again: %v", err)
	}
	s2 := s
	s2.Epochs = 3
	if err := Submit(ctx, cli, s2); !errors.Is(err, ErrExists) {
		t.Errorf("different spec: %v", err)
	}
	got, err := Load(ctx, cli, "r1")
	if err != nil || got.Epochs != s.Epochs || got.Augment != s.Augment {
		t.Errorf("load: %+v %v", got, err)
	}
	short, c2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer c2()
	if _, err := Wait(short, cli, "nope"); err == nil {
		t.Error("waiting for a missing run returned")
	}
	bad := s
	bad.Mode = "lockstep"
	bad.Run = "r2"
	if err := Submit(ctx, cli, bad); err == nil {
		t.Error("bad mode accepted")
	}
}
