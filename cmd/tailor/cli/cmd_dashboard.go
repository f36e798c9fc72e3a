package cli

import (
	"context"
	"fmt"
	"net"
	"os"

	"github.com/tailorml/tailor/checkpoint"
	"github.com/tailorml/tailor/dashboard"
	"github.com/tailorml/tailor/store"
)

func init() {
	register("dashboard", "a read-only web page of cluster runs: curves, members, servers, checkpoints, events", runDashboard)
}

func runDashboard(ctx context.Context, env *Env) int {
	c := dashboard.DefaultConfig()
	var (
		etcd, checkpoints string
		secure            bool
		sec               securityFlags
	)
	fs := newFlagSet(env, "dashboard", "--etcd E [--run R] [--listen 127.0.0.1:8090]", `
Serves a read-only web page of the runs in etcd: each run's state, epoch,
step, ETA and best validation mAP; for one run its curves per epoch
(training and validation loss, validation mAP, images per second, learning
rate), the latest evaluation's AP and F1 per label, the members (role,
address, etcd lease, last gossip contact, a worker's steps, img/s and
where its time goes, stragglers flagged), the parameter servers' counters,
the checkpoints with the etcd pointer, and the event log the leaders keep
(joins, deaths and how they were noticed, elections and failovers,
rollbacks, skipped checkpoints, etcd and store outages); two runs' curves
side by side at /compare. The page updates itself every --refresh. JSON:
/api/runs, /api/run/R. With --checkpoints, the runs of that checkpoint
store that etcd no longer has are listed too, with their curves from the
newest checkpoint's validation history and their checkpoints.

It binds to loopback unless told otherwise. --secure requires a client
certificate signed by --tls-ca (HTTPS with --tls-cert/--tls-key), or, with
--token-file, a bearer token (Authorization: Bearer, or the sign-in form's
cookie).`)
	fs.StringVar(&etcd, "etcd", os.Getenv("TAILOR_ETCD"), "etcd endpoints, comma-separated (env TAILOR_ETCD)")
	fs.StringVar(&c.Run, "run", os.Getenv("TAILOR_RUN"), "the run the front page opens (env TAILOR_RUN); all runs are listed")
	fs.StringVar(&c.Listen, "listen", c.Listen, "HTTP listen address host:port")
	fs.DurationVar(&c.Refresh, "refresh", c.Refresh, "how often the page updates itself")
	fs.StringVar(&checkpoints, "checkpoints", "", "a checkpoint store (folder or URL holding RUN/JOB/STEP-EPOCHS/ folders, e.g. out/local/checkpoints or s3://bucket/prefix/checkpoints) to list finished runs from")
	fs.BoolVar(&secure, "secure", false, "require a client certificate signed by --tls-ca (HTTPS), or the token of --token-file")
	fs.StringVar(&c.TokenFile, "token-file", "", "with --secure: file holding the bearer token every request must carry (at least 16 characters)")
	sec.add(fs)
	if code, done := parse(env, fs); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.Stderr, "tailor dashboard: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cf := clusterFlags{etcd: etcd, sec: sec}
	if len(cf.endpoints()) == 0 {
		fmt.Fprintln(env.Stderr, "tailor dashboard: --etcd is required")
		return 2
	}
	if c.TokenFile != "" && !secure {
		fmt.Fprintln(env.Stderr, "tailor dashboard: --token-file goes with --secure")
		return 2
	}
	sec.absolute()
	wt, err := sec.wireTLS(env.Log)
	if err != nil {
		return fail(env, err)
	}
	c.WireTLS = wt
	if secure {
		switch {
		case wt != nil:
			c.ServerTLS = wt.Clone() // asks for a client certificate signed by --tls-ca
		case c.TokenFile == "":
			fmt.Fprintln(env.Stderr, "tailor dashboard: --secure needs --tls-ca/--tls-cert/--tls-key (client certificates) or --token-file")
			return 2
		}
	}
	cli, err := sec.etcdClient(cf.endpoints())
	if err != nil {
		return fail(env, err)
	}
	defer cli.Close()
	c.Etcd, c.Log = cli, env.Log
	if checkpoints != "" {
		st, err := store.Open(ctx, checkpoints)
		if err != nil {
			return fail(env, fmt.Errorf("--checkpoints: %w", err))
		}
		c.Checkpoints = &checkpoint.Location{Store: st}
	}
	srv, err := dashboard.New(c)
	if err != nil {
		return fail(env, err)
	}
	lis, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fail(env, fmt.Errorf("dashboard listener: %w", err))
	}
	if host, _, _ := net.SplitHostPort(c.Listen); !secure && !isLoopback(host) {
		env.Log.Warn("the dashboard listens beyond loopback without --secure: anyone who reaches it sees the runs", "listen", c.Listen)
	}
	fmt.Fprintf(env.Stdout, "dashboard: %s\n", dashboard.URL(lis, c.ServerTLS != nil))
	if err := srv.Serve(ctx, lis); err != nil {
		return fail(env, err)
	}
	return 0
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
