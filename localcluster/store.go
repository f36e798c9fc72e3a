package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tailorml/tailor/fashion"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
	"github.com/tailorml/tailor/store/s3local"
)

// Object stores of a local cluster (Config.Store).
const (
	StoreS3   = "s3"   // the embedded S3 server, its data in Out/s3
	StoreFile = "file" // Out/shards and Out/checkpoints, or the Spec.Data folder
)

// The embedded S3 server's layout: one bucket, a prefix for the composed
// Fashion set, one for a data folder's copy, one for checkpoints.
const (
	s3Dir            = "s3"   // in Out
	s3AddrFile       = "addr" // in Out/s3: the server's host:port, for Resume
	bucket           = "tailor"
	fashionPrefix    = "fashion"
	dataPrefix       = "data"
	checkpointPrefix = "checkpoints"
)

// startS3 starts the embedded S3 server of a local cluster on its data in
// dir (Out/s3), with new random credentials, and makes its bucket. A new
// run listens on a free port of 127.0.0.1; a resumed one on the port of
// the run it resumes (kept in dir), which the URLs of the run's spec name.
// The server makes its root the working directory until Stop (see
// s3local): every path the cluster uses meanwhile must be absolute.
func startS3(ctx context.Context, dir string, resume bool) (*s3local.Server, error) {
	addrFile := filepath.Join(dir, s3AddrFile)
	cfg := s3local.Config{Dir: dir}
	if resume {
		if b, err := os.ReadFile(addrFile); err == nil {
			cfg.Addr = strings.TrimSpace(string(b))
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	srv, err := s3local.Start(sctx, cfg)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("embedded s3: the resumed run's address %s is taken by another process (its spec names it): free it, or start afresh without --resume: %w", cfg.Addr, err)
		}
		return nil, fmt.Errorf("embedded s3: %w", err)
	}
	if err := os.WriteFile(addrFile, []byte(srv.Endpoint()+"\n"), 0o644); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("embedded s3: %w", err)
	}
	if err := srv.MakeBucket(sctx, bucket); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("embedded s3: %w", err)
	}
	return srv, nil
}

// ensureFashionShards composes and ingests the Fashion-outfits set of
// cfg's sizes into st (images in cfg.Out/images) unless st holds a data
// set.
func ensureFashionShards(ctx context.Context, cfg Config, st store.Store) error {
	if _, err := st.Stat(ctx, shard.ManifestName); err == nil {
		cfg.Log.Info("using existing shards", "store", store.Location(st))
		return nil
	} else if !errors.Is(err, store.ErrNotExist) {
		return err
	}
	fc := fashion.DefaultConfig()
	fc.Out, fc.Size, fc.Train, fc.Val, fc.Test, fc.Overwrite = filepath.Join(cfg.Out, "images"), cfg.Size, cfg.Train, cfg.Val, cfg.Test, true
	if _, err := fashion.Generate(ctx, fc, cfg.Log); err != nil {
		return err
	}
	bc := shard.DefaultBuildConfig()
	bc.Size, bc.Overwrite = cfg.Size, true
	_, err := shard.Build(ctx, bc, fc.Out, st, cfg.Stderr, cfg.Log)
	return err
}

// copyDataSet copies the data set in src (its manifest and the shards the
// manifest names) into dst, unless dst holds the same manifest already.
// dst is emptied first; the manifest goes last, so a manifest in dst
// means a complete copy.
func copyDataSet(ctx context.Context, log *slog.Logger, src, dst store.Store) error {
	want, err := readObject(ctx, src, shard.ManifestName)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if have, err := readObject(ctx, dst, shard.ManifestName); err == nil && bytes.Equal(have, want) {
		log.Info("using the data set's copy in the embedded s3 store", "from", store.Location(src), "store", store.Location(dst))
		return nil
	}
	m, err := shard.LoadManifest(ctx, src)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if err := emptyStore(ctx, dst); err != nil {
		return err
	}
	var names []string
	for _, sp := range m.Splits {
		for _, sh := range sp.Shards {
			names = append(names, sh.Name)
		}
	}
	log.Info("copying the data set into the embedded s3 store", "from", store.Location(src), "store", store.Location(dst), "shards", len(names))
	for _, name := range names {
		if err := copyObject(ctx, src, dst, name); err != nil {
			return fmt.Errorf("data: %w", err)
		}
	}
	if err := dst.Put(ctx, shard.ManifestName, bytes.NewReader(want), int64(len(want))); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	return nil
}

func copyObject(ctx context.Context, src, dst store.Store, name string) error {
	size, err := src.Stat(ctx, name)
	if err != nil {
		return err
	}
	rc, err := src.Get(ctx, name)
	if err != nil {
		return err
	}
	defer rc.Close()
	return dst.Put(ctx, name, rc, size)
}

func readObject(ctx context.Context, st store.Store, name string) ([]byte, error) {
	rc, err := st.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// emptyStore deletes every object of st.
func emptyStore(ctx context.Context, st store.Store) error {
	names, err := st.List(ctx, "")
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := st.Delete(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

// checkStore opens the shard store at loc and reads its manifest.
func checkStore(ctx context.Context, loc string, opts store.OpenOptions) error {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := store.OpenWith(cctx, loc, opts)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if _, err := shard.LoadManifest(cctx, st); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	return nil
}
