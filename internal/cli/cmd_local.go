package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/certs"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/supervise"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
	"github.com/tailorml/tailor/store/s3local"
)

func init() {
	register("local", "run a whole cluster on this machine: etcd, coordinator, parameter servers, workers", runLocal)
}

func runLocal(ctx context.Context, env *Env) int {
	s := job.DefaultSpec("local", "")
	s.Epochs, s.Out = 10, ""
	var (
		out                string
		workers            int
		standby            bool
		size, trainN, valN int
		testN              int
		keep               bool
		etcdFlag           string
		secure             bool
		sec                securityFlags
		gossipKeyFile      string
		restartLimit       int
		restartWindow      time.Duration
		storeKind          string
	)
	fs := newFlagSet(env, "local", "", `
Starts a real cluster on this machine and trains on it: an embedded etcd, a
coordinator (and with --standby a second one), --ps parameter servers and
--workers workers, each a separate tailor process on 127.0.0.1. Every role
serves Prometheus /metrics on a free port; 'tailor status' shows the run.
Ctrl-C stops every process. The model, history and plot end up in OUT/run.
With --etcd the processes use that etcd instead of an embedded one.

The object store. With --store s3 (the default) the shards and checkpoints
live in an S3 server embedded in this process (versitygw), on a free port of
127.0.0.1, with random credentials that reach the processes in
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and are never shown; its data stays
in OUT/s3 (objects are plain files under OUT/s3/root/tailor/), so --resume
goes on with it, and it stops after every process has. Every process reads
and writes through the S3 client, as against S3 in production: the data set
is s3://tailor/fashion?endpoint=http://127.0.0.1:PORT&region=us-east-1, the
checkpoints are under s3://tailor/checkpoints. With --store file they are
files: OUT/shards and OUT/checkpoints.

The data. Without --data the Fashion-outfits set is composed from Debian's
dataset-fashion-mnist (images in OUT/images) and ingested into the store
(kept for the next run). --data FOLDER is a data set made by 'tailor shard
build': with --store s3 it is copied into the embedded server (under
s3://tailor/data, again only when it changed) and served from there; with
--store file the processes read the folder. --data URL (s3://bucket/prefix
?endpoint=..., file:///path) is used as it is, and nothing is embedded: the
processes inherit this one's environment, so AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY set here reach them, and checkpoints go to
OUT/checkpoints. --checkpoints, if given, is where checkpoints go in every
case. The store is checked before anything starts.

Every process is supervised as systemd's Restart=on-failure does: one that
exits with an error or is killed is started again, with the same flags,
after 200ms, doubling to 5s (back to 200ms once it ran for 30s), at most
--restart-limit times within any --restart-window. A worker comes back and
asks for work; a parameter server comes back and the leader rolls the
servers back to the last checkpoint; a coordinator comes back and stands by
in the election (or, the only one, wins it and resumes from the last
checkpoint). A process that exits cleanly is not restarted: its work is
done. One that fails past the limit is left down if the run can go on
without it (a worker, the standby, the first coordinator with --standby);
otherwise the run stops with an error naming it. The run ends when the
leader records it done, or on Ctrl-C.

With --secure the processes talk over mutual TLS, gossip is encrypted and
the embedded etcd serves clients over TLS, requires a client certificate and
a user and password: a development CA and a certificate (tailor certs init),
a gossip key and etcd's passwords are made in OUT/certs (private files 0600)
and kept for the next run. --tls-ca/--tls-cert/--tls-key and
--gossip-key-file, if given, are used instead of the generated ones; with
--etcd, etcd's TLS and user come from --etcd-*/--tls-* (or TAILOR_ETCD_*)
as for any client. The processes get every setting as a flag: they do not
read TAILOR_CONFIG (or TAILOR_GOSSIP, TAILOR_LISTEN, TAILOR_ADVERTISE, the
TLS and etcd variables), whose fixed ports would collide on one machine.`)
	fs.StringVar(&out, "out", "out/local", "output folder")
	fs.IntVar(&workers, "workers", 3, "worker processes")
	fs.BoolVar(&standby, "standby", false, "start a standby coordinator too")
	fs.IntVar(&size, "size", 64, "image size of a composed data set")
	fs.IntVar(&trainN, "train", 4000, "training images of a composed data set")
	fs.IntVar(&valN, "val", 1000, "validation images of a composed data set")
	fs.IntVar(&testN, "test", 1000, "test images of a composed data set")
	fs.StringVar(&etcdFlag, "etcd", "", "etcd endpoints, comma-separated, to use instead of an embedded etcd")
	fs.BoolVar(&secure, "secure", false, "mutual TLS, encrypted gossip, etcd over TLS with a user: certificates, keys and passwords made in OUT/certs")
	fs.StringVar(&gossipKeyFile, "gossip-key-file", os.Getenv("TAILOR_GOSSIP_KEY_FILE"), "file holding the hex gossip key of the processes (with --secure default: OUT/certs/gossip.key, made if missing)")
	sec.add(fs)
	fs.IntVar(&restartLimit, "restart-limit", 10, "restarts of each process within --restart-window before it is given up (0: never restart; then a parameter server's or the only coordinator's failure ends the run)")
	fs.DurationVar(&restartWindow, "restart-window", 10*time.Minute, "the window --restart-limit counts restarts in")
	fs.StringVar(&storeKind, "store", localStoreS3, "where the shards and checkpoints live: s3 (an S3 server embedded in this process, its data in OUT/s3) or file (OUT/shards, OUT/checkpoints, or the --data folder); a --data URL is used as it is")
	fs.BoolVar(&keep, "resume", false, "resume the run in OUT from its newest checkpoint (keeps OUT's etcd data) instead of starting afresh; give it the flags of the run it resumes")
	addSpecFlags(fs, &s)
	if code, done := parse(env, fs); done {
		return code
	}
	if workers < 1 {
		return fail(env, errors.New("--workers: want at least 1"))
	}
	if restartLimit < 0 {
		return fail(env, errors.New("--restart-limit: want 0 or more"))
	}
	if restartLimit > 0 && restartWindow <= 0 {
		return fail(env, errors.New("--restart-window: want a positive duration"))
	}
	if storeKind != localStoreS3 && storeKind != localStoreFile {
		return fail(env, fmt.Errorf("--store %q: want %s or %s", storeKind, localStoreS3, localStoreFile))
	}
	s.Workers = workers // the first step waits for all of them: reproducible sync runs
	// every path below is absolute: the processes must open the same files
	// whatever their working directory, and the embedded S3 server makes
	// its root this process's working directory while it runs
	wd, err := os.Getwd()
	if err != nil {
		return fail(env, err)
	}
	out = mustAbs(out)
	if s.Out == "" {
		s.Out = filepath.Join(out, "run")
	}
	s.Out = mustAbs(s.Out)
	sec.absolute()
	if gossipKeyFile != "" {
		gossipKeyFile = mustAbs(gossipKeyFile)
	}
	if s.Data != "" && !store.IsURL(s.Data) {
		s.Data = mustAbs(s.Data)
	}

	// the shards and checkpoints: in the embedded S3 server, or in files;
	// a store URL is passed on as it is
	var (
		s3srv       *s3local.Server
		open        store.OpenOptions     // how this process opens the run's stores
		ownCheckpts = s.Checkpoints == "" // checkpoints in OUT's store, emptied by a new run
		checkpoints store.Store           // that store in the embedded server
		storeEnv    []string              // the processes' credentials for it
	)
	if storeKind == localStoreS3 && !store.IsURL(s.Data) {
		if s3srv, err = startLocalS3(ctx, filepath.Join(out, localS3Dir), keep); err != nil {
			return fail(env, err)
		}
		// it stops after every process has: the group's Wait stops them
		defer func() {
			if err := s3srv.Stop(); err != nil {
				env.Log.Warn("embedded s3", "err", err)
			}
		}()
		open, storeEnv = store.OpenOptions{Getenv: s3srv.Getenv}, s3srv.Env()
		env.Log.Info("embedded s3", "endpoint", "http://"+s3srv.Endpoint(), "dir", filepath.Join(out, localS3Dir), "metadata", s3srv.MetaMode())
		prefix := localFashionPrefix
		if s.Data != "" {
			prefix = localDataPrefix
		}
		dst, err := s3srv.Open(ctx, localBucket, prefix)
		if err != nil {
			return fail(env, err)
		}
		if s.Data == "" {
			err = ensureFashionShards(ctx, env, out, dst, size, trainN, valN, testN)
		} else {
			var src store.Store
			if src, err = store.NewLocal(s.Data); err == nil {
				err = copyDataSet(ctx, env, src, dst)
			}
		}
		if err != nil {
			return fail(env, err)
		}
		s.Data = s3srv.URL(localBucket, prefix)
		if ownCheckpts {
			s.Checkpoints = s3srv.URL(localBucket, localCheckpointPrefix)
			if checkpoints, err = s3srv.Open(ctx, localBucket, localCheckpointPrefix); err != nil {
				return fail(env, err)
			}
		}
	} else {
		if s.Data == "" {
			dir := filepath.Join(out, "shards")
			st, err := store.NewLocal(dir)
			if err == nil {
				err = ensureFashionShards(ctx, env, out, st, size, trainN, valN, testN)
			}
			if err != nil {
				return fail(env, err)
			}
			s.Data = dir
		}
		if ownCheckpts {
			// every process is on this machine: checkpoints go next to the run
			s.Checkpoints = filepath.Join(out, "checkpoints")
		}
	}
	// fail here, before anything starts, if the store cannot be read with
	// the credentials the processes will have
	if err := checkStore(ctx, s.Data, open); err != nil {
		return fail(env, err)
	}

	etcdDir := filepath.Join(out, "etcd")
	if !keep {
		// a new run: the earlier one's coordination state and checkpoints go
		_ = os.RemoveAll(etcdDir)
		switch {
		case checkpoints != nil:
			if err := emptyStore(ctx, checkpoints); err != nil {
				return fail(env, fmt.Errorf("remove the checkpoints of the run before: %w", err))
			}
		case ownCheckpts:
			_ = os.RemoveAll(s.Checkpoints)
		}
	}
	endpoints := (&clusterFlags{etcd: etcdFlag}).endpoints()
	embedded := len(endpoints) == 0
	// child is what the processes get: the given settings, or with
	// --secure the generated ones where none were given
	child := sec
	var dev certs.Files // with --secure: OUT/certs's CA and pair
	certDir := mustAbs(filepath.Join(out, "certs"))
	if secure {
		if dev, err = ensureDevCerts(env, certDir); err != nil {
			return fail(env, err)
		}
		if !sec.wireFiles().Enabled() {
			child.tlsCA, child.tlsCert, child.tlsKey = dev.CA, dev.Cert, dev.Key
		}
		if gossipKeyFile == "" {
			if gossipKeyFile, err = ensureGossipKey(certDir); err != nil {
				return fail(env, err)
			}
		}
	}
	if _, err := (&clusterFlags{secret: gossipKeyFile}).key(); err != nil {
		return fail(env, err)
	}
	if _, err := child.wireTLS(); err != nil {
		return fail(env, err)
	}
	var cli *clientv3.Client
	if embedded {
		// etcd logs only what is fatal: at this level its start and stop
		// print harmless "errors" (storage version, closed listeners)
		ec := cluster.EtcdConfig{Dir: etcdDir, FastTicks: true, LogLevel: "fatal"}
		if secure {
			ec.ClientTLS, ec.ClientCertAuth = cluster.TLSFiles{CA: dev.CA, Cert: dev.Cert, Key: dev.Key}, true
		}
		e, err := cluster.StartEtcd(ctx, ec)
		if err != nil {
			return fail(env, err)
		}
		defer e.Close()
		endpoints = e.Endpoints()
		env.Log.Info("etcd", "endpoints", endpoints, "dir", etcdDir, "tls", secure)
		// the embedded etcd is this run's: its TLS and user are ours, not
		// the ones given for another etcd
		child.etcdCA, child.etcdCert, child.etcdKey, child.etcdUser, child.etcdPassFile = "", "", "", "", ""
		if secure {
			var user, pwFile string
			user, pwFile, err = ensureEtcdAuth(ctx, endpoints, dev, certDir)
			if err != nil {
				return fail(env, err)
			}
			child.etcdCA, child.etcdCert, child.etcdKey, child.etcdUser, child.etcdPassFile = dev.CA, dev.Cert, dev.Key, user, pwFile
			cli, err = child.etcdClient(endpoints)
		} else {
			cli, err = cluster.NewClient(endpoints)
		}
		if err != nil {
			return fail(env, err)
		}
	} else {
		env.Log.Info("etcd", "endpoints", endpoints)
		if secure && !child.etcdFiles(endpoints).Enabled() {
			env.Log.Warn("--secure with a plaintext etcd: give https:// endpoints and --etcd-ca (or --tls-ca)")
		}
		if cli, err = child.etcdClient(endpoints); err != nil {
			return fail(env, err)
		}
	}
	defer cli.Close()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = job.Submit(sctx, cli, s)
	cancel()
	if errors.Is(err, job.ErrExists) && keep {
		err = fmt.Errorf("%w (--resume goes on with the run's spec: give it the flags of the run it resumes, --store and --data too)", err)
	}
	if err != nil {
		return fail(env, err)
	}

	self, err := os.Executable()
	if err != nil {
		return fail(env, err)
	}
	// every role serves /metrics on a free port and publishes it in its
	// membership record, where tailor status finds it
	etcdList := strings.Join(endpoints, ",")
	secArgs := child.args()
	common := append([]string{"--etcd", etcdList, "--run", s.Run, "--metrics-listen", "127.0.0.1:0", "--gossip", "127.0.0.1:0"}, secArgs...)
	if gossipKeyFile != "" {
		common = append(common, "--gossip-key-file", gossipKeyFile)
	}
	listen := []string{"--listen", "127.0.0.1:0"}
	fmt.Fprintf(env.Stdout, "run %s: etcd %s; watch it with: %s\n", s.Run, etcdList,
		strings.Join(append(append([]string{"tailor", "status", "--etcd", etcdList, "--run", s.Run}, secArgs...), "--watch", "2s"), " "))
	childEnv := append(localChildEnv(embedded, child), storeEnv...)
	g := supervise.New(env.Stderr, 5*time.Second)
	// every role is started again when it fails (see the help text); an
	// optional one may stay down past its limit, the run goes on without it
	policy := supervise.DefaultRestartPolicy()
	policy.Limit, policy.Window = restartLimit, restartWindow
	start := func(name string, optional bool, args ...string) error {
		return g.Start(supervise.Spec{Name: name, Path: self, Args: args, Env: childEnv, Dir: wd,
			Optional: optional, Restart: restartLimit > 0, Policy: policy})
	}
	// the run is over when a coordinator (the leader) exits cleanly, after
	// recording the run's status; the other exits cleanly too once it sees
	// it. With a standby, either coordinator may fail for good: the other
	// takes over from the last checkpoint.
	until := map[string]bool{"coordinator": true}
	if err := start("coordinator", standby, append(append([]string{"coordinator", "--id", "coord-a"}, common...), listen...)...); err != nil {
		return fail(env, err)
	}
	if standby {
		until["standby"] = true
		if err := start("standby", true, append(append([]string{"coordinator", "--id", "coord-b"}, common...), listen...)...); err != nil {
			g.Stop()
			return fail(env, err)
		}
	}
	for i := 0; i < s.ParamServers; i++ {
		// a parameter server that comes back is rolled back, with the
		// others, to the last checkpoint by the leader; the run needs
		// every one of them
		if err := start(fmt.Sprintf("ps%d", i), false, append(append([]string{"paramserver", "--index", strconv.Itoa(i)}, common...), listen...)...); err != nil {
			g.Stop()
			return fail(env, err)
		}
	}
	for i := 0; i < workers; i++ {
		// a worker that comes back asks for work again; one left down
		// leaves its units to the others
		id := fmt.Sprintf("w%d", i)
		if err := start(id, true, append([]string{"worker", "--id", id}, common...)...); err != nil {
			g.Stop()
			return fail(env, err)
		}
	}
	err = g.Wait(ctx, until, nil)
	if err != nil {
		return fail(env, err)
	}
	fmt.Fprintf(env.Stdout, "\nrun %s finished: model %s, history %s\n", s.Run, filepath.Join(s.Out, "model.tailor"), filepath.Join(s.Out, "history.png"))
	if f, err := os.Open(filepath.Join(s.Out, "test_metrics.txt")); err == nil {
		fmt.Fprintln(env.Stdout, "\ntest split:")
		_, _ = io.Copy(env.Stdout, f)
		f.Close()
	}
	return 0
}

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

// checkStore opens the shard store and reads its manifest.
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

// args are the flags of s that are set, as a command line: file names and
// a user name, never a secret.
func (s securityFlags) args() []string {
	var a []string
	for _, f := range []struct{ name, v string }{
		{"tls-ca", s.tlsCA}, {"tls-cert", s.tlsCert}, {"tls-key", s.tlsKey},
		{"etcd-ca", s.etcdCA}, {"etcd-cert", s.etcdCert}, {"etcd-key", s.etcdKey},
		{"etcd-user", s.etcdUser}, {"etcd-password-file", s.etcdPassFile},
	} {
		if f.v != "" {
			a = append(a, "--"+f.name, f.v)
		}
	}
	return a
}

// localChildEnv unsets, for the processes of tailor local, the variables
// whose settings it passes them as flags or must not pass them: a config
// file and the addresses (fixed ports would collide on one machine), and
// the TLS and etcd settings it resolved. The etcd password stays when it
// comes from the environment for an external etcd (it is never a flag).
func localChildEnv(embedded bool, child securityFlags) []string {
	env := []string{"TAILOR_CONFIG=", "TAILOR_GOSSIP=", "TAILOR_LISTEN=", "TAILOR_ADVERTISE=", "TAILOR_METRICS_LISTEN=",
		"TAILOR_GOSSIP_KEY_FILE=", "TAILOR_TLS_CA=", "TAILOR_TLS_CERT=", "TAILOR_TLS_KEY=",
		"TAILOR_ETCD_CA=", "TAILOR_ETCD_CERT=", "TAILOR_ETCD_KEY=", "TAILOR_ETCD_USER=", "TAILOR_ETCD_PASSWORD_FILE="}
	if embedded || child.etcdUser == "" || child.etcdPassFile != "" {
		env = append(env, "TAILOR_ETCD_PASSWORD=")
	}
	return env
}

// File names of tailor local --secure in OUT/certs, besides the CA and
// the node pair of tailor certs init.
const (
	localGossipKey    = "gossip.key"
	localEtcdPassword = "etcd-password"      // the etcd user's (localEtcdUser)
	localEtcdRootPass = "etcd-root-password" // etcd's root user's, to administer it
	localEtcdUser     = "tailor"
)

// ensureDevCerts returns the CA and node pair in dir, made with
// certs.Init unless a pair there is signed by the CA, good for 127.0.0.1
// and valid for another day.
func ensureDevCerts(env *Env, dir string) (certs.Files, error) {
	f := certs.Files{CA: filepath.Join(dir, certs.CAFile), Cert: filepath.Join(dir, certs.CertFile(certs.NodeName)), Key: filepath.Join(dir, certs.KeyFile(certs.NodeName))}
	if c, err := f.Load(); err == nil {
		leaf := c.Certificates[0].Leaf
		if leaf != nil && leaf.VerifyHostname("127.0.0.1") == nil && time.Until(leaf.NotAfter) > 24*time.Hour {
			env.Log.Info("using existing certificates", "dir", dir)
			return f, nil
		}
	}
	cfg := certs.DefaultInitConfig(dir)
	cfg.Force = true
	if _, err := certs.Init(cfg); err != nil {
		return f, fmt.Errorf("secure: %w", err)
	}
	env.Log.Info("made a development CA and certificate", "dir", dir)
	return f, nil
}

// ensureGossipKey returns dir's gossip key file, written (0600, 32 random
// bytes in hex) unless it holds a valid key.
func ensureGossipKey(dir string) (string, error) {
	path := filepath.Join(dir, localGossipKey)
	if _, err := (&clusterFlags{secret: path}).key(); err == nil {
		return path, nil
	}
	if err := writeSecret(path, 32); err != nil {
		return "", err
	}
	return path, nil
}

// writeSecret replaces path (0600) with n random bytes in hex and a
// newline.
func writeSecret(path string, n int) error {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return fmt.Errorf("secure: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("secure: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("secure: %w", err)
	}
	_, err = f.WriteString(hex.EncodeToString(b) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("secure: write %s: %w", path, err)
	}
	return nil
}

// ensureEtcdAuth turns on the auth of the embedded etcd at endpoints (TLS
// with client certificates of f's CA), unless it is on (a resumed run):
// a root user, and a user localEtcdUser whose role may read and write
// /tailor/ only, with random passwords written to dir (0600). It returns
// the user and its password file.
func ensureEtcdAuth(ctx context.Context, endpoints []string, f certs.Files, dir string) (user, pwFile string, err error) {
	user, pwFile = localEtcdUser, filepath.Join(dir, localEtcdPassword)
	tc, err := f.Load()
	if err != nil {
		return "", "", fmt.Errorf("secure: %w", err)
	}
	admin, err := cluster.NewAuthClient(endpoints, cluster.EtcdAuth{TLS: tc})
	if err != nil {
		return "", "", fmt.Errorf("secure: %w", err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := admin.AuthStatus(ctx)
	if err != nil {
		return "", "", fmt.Errorf("secure: etcd auth status: %w", err)
	}
	if st.Enabled {
		// a resumed run: the users exist, with the password in the file
		if _, err := (&securityFlags{etcdPassFile: pwFile}).password(); err != nil {
			return "", "", fmt.Errorf("secure: etcd has auth on but its password is lost (start afresh without --resume): %w", err)
		}
		return user, pwFile, nil
	}
	rootFile := filepath.Join(dir, localEtcdRootPass)
	for _, p := range []string{rootFile, pwFile} {
		if err := writeSecret(p, 16); err != nil {
			return "", "", err
		}
	}
	var pw [2]string
	for i, p := range []string{rootFile, pwFile} {
		if pw[i], err = (&securityFlags{etcdPassFile: p}).password(); err != nil {
			return "", "", fmt.Errorf("secure: %w", err)
		}
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"add user root", func() error { _, err := admin.UserAdd(ctx, "root", pw[0]); return err }},
		{"grant root the root role", func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err }},
		{"add role " + user, func() error { _, err := admin.RoleAdd(ctx, user); return err }},
		{"grant role " + user + " /tailor/", func() error {
			_, err := admin.RoleGrantPermission(ctx, user, "/tailor/", clientv3.GetPrefixRangeEnd("/tailor/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		}},
		{"add user " + user, func() error { _, err := admin.UserAdd(ctx, user, pw[1]); return err }},
		{"grant " + user + " its role", func() error { _, err := admin.UserGrantRole(ctx, user, user); return err }},
		{"enable auth", func() error { _, err := admin.AuthEnable(ctx); return err }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			// etcd's errors never hold the passwords it was given
			return "", "", fmt.Errorf("secure: etcd auth: %s: %w", s.what, err)
		}
	}
	return user, pwFile, nil
}
