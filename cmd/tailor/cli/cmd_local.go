package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/tailorml/tailor/internal/certs"
	"github.com/tailorml/tailor/localcluster"
)

func init() {
	register("local", "run a whole cluster on this machine: etcd, coordinator, parameter servers, workers", runLocal)
}

// runLocal is tailor local: the flags fill a localcluster.Config, and the
// run's result is printed.
func runLocal(ctx context.Context, env *Env) int {
	cfg := localcluster.DefaultConfig()
	var (
		etcdFlag string
		sec      securityFlags
	)
	fs := newFlagSet(env, "local", "", `
Starts a real cluster on this machine and trains on it: an embedded etcd, a
coordinator (and with --standby a second one), --ps parameter servers and
--workers workers, each a separate tailor process on 127.0.0.1. Every role
serves Prometheus /metrics on a free port; 'tailor status' shows the run,
and so does the run's dashboard, whose address is printed first (--dashboard;
see 'tailor dashboard --help'). Ctrl-C stops every process. The model, history, plot and TensorBoard event
files end up in OUT/run.

The output. Each process's output goes to its log file,
OUT/logs/ROLE-ID.log (coordinator-coord-a.log, paramserver-ps0.log,
worker-w0.log, ...; emptied by a new run, appended to by --resume). On a
terminal, tailor local shows one status block redrawn in place: the state
and leader, the epoch's bar and ETA, loss, img/s, the last validation mAP,
the live members and the last event (a process that exited or was started
again; those lines are printed above the block too). When its output is not
a terminal, it prints a plain status line when the state or the epoch
changes and every 10 s, and the same event lines.
--verbose streams every process's lines to stderr instead, each prefixed
with the process's name, as well as to the log files.
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
a user and password: a development CA, a certificate for etcd and one per
role, each process presenting its role's (tailor certs init), a gossip key and etcd's passwords are made in OUT/certs (private files 0600)
and kept for the next run. --tls-ca/--tls-cert/--tls-key and
--gossip-key-file, if given, are used instead of the generated ones; with
--etcd, etcd's TLS and user come from --etcd-*/--tls-* (or TAILOR_ETCD_*)
as for any client. The processes get every setting as a flag: they do not
read TAILOR_CONFIG (or TAILOR_GOSSIP, TAILOR_LISTEN, TAILOR_ADVERTISE, the
TLS and etcd variables), whose fixed ports would collide on one machine.`)
	fs.StringVar(&cfg.Out, "out", cfg.Out, "output folder")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "worker processes")
	fs.BoolVar(&cfg.Standby, "standby", cfg.Standby, "start a standby coordinator too")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "image size of a composed data set")
	fs.IntVar(&cfg.Train, "train", cfg.Train, "training images of a composed data set")
	fs.IntVar(&cfg.Val, "val", cfg.Val, "validation images of a composed data set")
	fs.IntVar(&cfg.Test, "test", cfg.Test, "test images of a composed data set")
	fs.StringVar(&etcdFlag, "etcd", "", "etcd endpoints, comma-separated, to use instead of an embedded etcd")
	fs.BoolVar(&cfg.Secure, "secure", cfg.Secure, "mutual TLS, encrypted gossip, etcd over TLS with a user: certificates, keys and passwords made in OUT/certs")
	fs.StringVar(&cfg.GossipKeyFile, "gossip-key-file", os.Getenv("TAILOR_GOSSIP_KEY_FILE"), "file holding the hex gossip key of the processes (with --secure default: OUT/certs/gossip.key, made if missing)")
	sec.add(fs)
	fs.IntVar(&cfg.RestartLimit, "restart-limit", cfg.RestartLimit, "restarts of each process within --restart-window before it is given up (0: never restart; then a parameter server's or the only coordinator's failure ends the run)")
	fs.DurationVar(&cfg.RestartWindow, "restart-window", cfg.RestartWindow, "the window --restart-limit counts restarts in")
	fs.StringVar(&cfg.Store, "store", cfg.Store, "where the shards and checkpoints live: s3 (an S3 server embedded in this process, its data in OUT/s3) or file (OUT/shards, OUT/checkpoints, or the --data folder); a --data URL is used as it is")
	fs.BoolVar(&cfg.Verbose, "verbose", cfg.Verbose, "stream every process's output to stderr (each line prefixed with its name) instead of the status; the log files in OUT/logs get it in any case")
	fs.StringVar(&cfg.Dashboard, "dashboard", cfg.Dashboard, "listen address of the run's dashboard, whose URL is printed at the start (a free port if it is taken; \"\": none; with --secure it asks for the token in OUT/certs/dashboard.token)")
	fs.BoolVar(&cfg.Resume, "resume", cfg.Resume, "resume the run in OUT from its newest checkpoint (keeps OUT's etcd data) instead of starting afresh; give it the flags of the run it resumes")
	addSpecFlags(fs, &cfg.Spec)
	if code, done := parse(env, fs); done {
		return code
	}
	cfg.Etcd = (&clusterFlags{etcd: etcdFlag}).endpoints()
	sec.absolute() // the files are named from here (Run makes them absolute too)
	cfg.Security = localcluster.Security{TLS: sec.wireFiles(), EtcdTLS: certs.Files{CA: sec.etcdCA, Cert: sec.etcdCert, Key: sec.etcdKey},
		EtcdUser: sec.etcdUser, EtcdPasswordFile: sec.etcdPassFile}
	cfg.Stdout, cfg.Stderr, cfg.Log = env.Stdout, env.Stderr, env.Log
	res, err := localcluster.Run(ctx, cfg)
	if err != nil {
		return fail(env, err)
	}
	fmt.Fprintf(env.Stdout, "\nrun %s finished: model %s, history %s\ntensorboard: tensorboard --logdir %s\nlogs: %s\n", res.Run, res.Model, res.History,
		filepath.Join(res.Out, "tensorboard"), filepath.Join(cfg.Out, localcluster.LogsDir))
	if f, err := os.Open(res.TestMetrics); err == nil {
		fmt.Fprintln(env.Stdout, "\ntest split:")
		_, _ = io.Copy(env.Stdout, f)
		f.Close()
	}
	return 0
}

// mustAbs is p made absolute (p itself if that fails); securityFlags
// uses it.
func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}
