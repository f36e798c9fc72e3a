package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/cluster"
	runjob "github.com/tailorml/tailor/internal/job"
)

// Source is where the served model comes from: a model file, or a training
// run's best model (the file its leader keeps in the run's output folder,
// model.tailor, replaced whenever an epoch improves on the best).
type Source struct {
	// Path is the model file. With Etcd and Run it may be empty: the run's
	// spec names the folder (Spec.Out; a relative one is taken from the
	// current directory).
	Path string
	// Etcd and Run, if set, make the server follow the run: a watch on its
	// checkpoint pointer and status keys (moved after every checkpoint,
	// and at the end of the run) looks at the file again.
	Etcd *clientv3.Client
	Run  string
}

// Validate checks the source names a model.
func (s Source) Validate() error {
	if s.Path == "" && (s.Etcd == nil || s.Run == "") {
		return errors.New("serve: want a model file, or a run and etcd")
	}
	if (s.Etcd == nil) != (s.Run == "") {
		return errors.New("serve: a run needs etcd and etcd a run")
	}
	return nil
}

// follower loads the source's model when it changes.
type follower struct {
	s    *Server
	src  Source
	path string
	seen fileStamp // the file as last read (loaded or refused)
}

type fileStamp struct {
	info os.FileInfo
}

// same reports whether two stats are of the same unchanged file: a file
// replaced by a rename is another file even with the same size and time.
func (a fileStamp) same(b fileStamp) bool {
	return a.info != nil && b.info != nil && os.SameFile(a.info, b.info) &&
		a.info.Size() == b.info.Size() && a.info.ModTime().Equal(b.info.ModTime())
}

// Follow loads the model once, then again whenever it changes, until ctx
// ends: on every move of the run's checkpoint pointer or status, and every
// Recheck. A file that fails to load is logged and the server keeps the
// model it has. It returns the first load's error only if it cannot serve
// anything (a model file given alone that does not load).
func (s *Server) Follow(ctx context.Context, src Source) error {
	if err := src.Validate(); err != nil {
		return err
	}
	f := &follower{s: s, src: src, path: src.Path}
	if err := f.check(ctx); err != nil {
		if src.Etcd == nil {
			return err
		}
		s.log.Warn("no model yet; following the run", "run", src.Run, "err", err)
	}
	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	if src.Etcd != nil {
		keys := cluster.RunKeys(src.Run)
		for _, key := range []string{keys.Checkpoint(), keys.Status()} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				watchKey(ctx, src.Etcd, key, wake, s)
			}()
		}
	}
	var tick <-chan time.Time
	if s.cfg.Recheck > 0 {
		t := time.NewTicker(s.cfg.Recheck)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-tick:
		}
		if err := f.check(ctx); err != nil {
			s.log.Warn("model not reloaded; serving the one loaded", "err", err)
		}
	}
}

// watchKey signals wake on every change of key, watching again after an
// error until ctx ends.
func watchKey(ctx context.Context, cli *clientv3.Client, key string, wake chan<- struct{}, s *Server) {
	for ctx.Err() == nil {
		for resp := range cli.Watch(clientv3.WithRequireLeader(ctx), key) {
			if err := resp.Err(); err != nil {
				s.log.Warn("watch", "key", key, "err", err)
				break
			}
			select {
			case wake <- struct{}{}:
			default:
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// check loads the model file if it changed since last read and differs
// from the model served.
func (f *follower) check(ctx context.Context) error {
	if f.path == "" {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		spec, err := runjob.Load(sctx, f.src.Etcd, f.src.Run)
		cancel()
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		p, err := filepath.Abs(filepath.Join(spec.Out, "model.tailor"))
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		f.path = p
		f.s.log.Info("following run", "run", f.src.Run, "model", p)
	}
	st, err := os.Stat(f.path)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	stamp := fileStamp{info: st}
	if stamp.same(f.seen) && f.s.cur.Load() != nil {
		return nil
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	f.seen = stamp
	if cur := f.s.cur.Load(); cur != nil && cur.Version == fileVersion(data) {
		return nil
	}
	m, err := DecodeModel(data)
	if err != nil {
		f.s.m.loads.WithLabelValues("error").Inc()
		return fmt.Errorf("serve: model %s: %w", f.path, err)
	}
	m.Source = f.path
	return f.s.SetModel(m)
}

// Run serves on ln the source's model, and follows it, until ctx ends (then
// as Serve). A model file given alone must load (unless the server has a
// model already); a run's model may come later (until it does, the server
// is live but not ready).
func (s *Server) Run(ctx context.Context, ln net.Listener, src Source) error {
	if err := src.Validate(); err != nil {
		return err
	}
	if src.Etcd == nil && s.Model() == nil {
		m, err := LoadModelFile(src.Path)
		if err != nil {
			return err
		}
		if err := s.SetModel(m); err != nil {
			return err
		}
	}
	fctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.Follow(fctx, src); err != nil {
			s.log.Error("following the model", "err", err)
		}
	}()
	err := s.Serve(ctx, ln)
	stop()
	wg.Wait()
	return err
}
