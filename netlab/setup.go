package netlab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/tailorml/tailor/fashion"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
)

// Build builds the lab's binaries into dir from the module at root:
// tailor (with OpenBLAS if openblas) and etcd's own server (deploy/etcd).
func Build(ctx context.Context, root, dir string, openblas bool) (tailor, etcd string, err error) {
	tailor, etcd = filepath.Join(dir, "tailor"), filepath.Join(dir, "etcd")
	targs := []string{"build", "-o", tailor}
	if openblas {
		targs = append(targs, "-tags", "openblas")
	}
	for _, args := range [][]string{append(targs, "./cmd/tailor"), {"build", "-tags", "deploy", "-o", etcd, "./deploy/etcd"}} {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go %v: %w\n%s", args, err, out)
		}
	}
	return tailor, etcd, nil
}

// Data makes (once: a folder that holds a manifest is used as it is) a
// shard set of train training images at size px from Fashion-MNIST in
// source, with a small validation split (the leader validates at every
// epoch's end), in shards of about 4 MB (a worker caches a few).
func Data(ctx context.Context, source, dir string, size, train int, log *slog.Logger) (string, error) {
	shards := filepath.Join(dir, "shards")
	if _, err := os.Stat(filepath.Join(shards, shard.ManifestName)); err == nil {
		return shards, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	fc := fashion.DefaultConfig()
	if source != "" {
		fc.Source = source
	}
	fc.Out, fc.Size, fc.Train, fc.Val, fc.Test, fc.Overwrite = filepath.Join(dir, "images"), size, train, 64, 0, true
	if _, err := fashion.Generate(ctx, fc, log); err != nil {
		return "", err
	}
	bc := shard.DefaultBuildConfig()
	bc.Size, bc.Overwrite, bc.MaxShardBytes = size, true, 4<<20
	st, err := store.NewLocal(shards)
	if err != nil {
		return "", err
	}
	if _, err := shard.Build(ctx, bc, fc.Out, st, nil, log); err != nil {
		return "", err
	}
	_ = os.RemoveAll(fc.Out)
	return shards, nil
}
