package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tailorml/tailor/runstatus"
)

func init() {
	register("status", "show a cluster run: spec, state, leader, members, live numbers", runStatus)
}

func runStatus(ctx context.Context, env *Env) int {
	var (
		cf             clusterFlags
		jsonOut        bool
		watch, timeout time.Duration
	)
	fs := newFlagSet(env, "status", "--etcd E --run R", `
Shows cluster run R: its spec, whether it is running or done, the leading
coordinator, every live member (role, id, rank, gRPC, metrics and gossip
addresses, the tailor version and wire protocol it runs) and the live
numbers: epoch, step, loss and images per second from the leader's progress
record in etcd, each parameter server's counters (version, bytes in and
out, pushes accepted and rejected) and each worker's /metrics when it serves
them. With --watch it shows the run again every interval until the run is
done or Ctrl-C. Exit status 1 if etcd or the run cannot be read.`)
	fs.StringVar(&cf.etcd, "etcd", os.Getenv("TAILOR_ETCD"), "etcd endpoints, comma-separated (env TAILOR_ETCD)")
	fs.StringVar(&cf.run, "run", os.Getenv("TAILOR_RUN"), "run id (env TAILOR_RUN)")
	fs.BoolVar(&jsonOut, "json", false, "print JSON (with --watch: one object per line)")
	fs.DurationVar(&watch, "watch", 0, "show the run again every interval (e.g. 2s) until it is done")
	fs.DurationVar(&timeout, "timeout", 5*time.Second, "bound on reading the run once")
	cf.sec.add(fs)
	if code, done := parse(env, fs); done {
		return code
	}
	run := cf.run
	if !cf.check(env, "status") {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.Stderr, "tailor status: unexpected arguments %q\n", fs.Args())
		return 2
	}
	wt, err := cf.sec.wireTLS(env.Log)
	if err != nil {
		return fail(env, err)
	}
	cli, err := cf.sec.etcdClient(cf.endpoints())
	if err != nil {
		return fail(env, err)
	}
	defer cli.Close()
	clear := watch > 0 && !jsonOut && isTerminalWriter(env.Stdout)
	for {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		v, err := runstatus.Collect(cctx, cli, run, runstatus.Options{TLS: wt})
		cancel()
		if err != nil {
			if watch == 0 || ctx.Err() != nil {
				return fail(env, err)
			}
			fmt.Fprintf(env.Stderr, "tailor: %v\n", err)
		} else {
			if clear {
				fmt.Fprint(env.Stdout, "\x1b[H\x1b[2J")
			}
			if jsonOut {
				enc := json.NewEncoder(env.Stdout)
				if watch == 0 {
					enc.SetIndent("", "  ")
				}
				if err := enc.Encode(v); err != nil {
					return fail(env, err)
				}
			} else {
				v.WriteText(env.Stdout)
			}
			if watch == 0 || v.State == runstatus.StateDone {
				return 0
			}
			if !clear && !jsonOut {
				fmt.Fprintln(env.Stdout)
			}
		}
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(watch):
		}
	}
}

func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb"
}

// redactLocation drops what could be secret from a store location
// (runstatus.RedactLocation).
func redactLocation(loc string) string { return runstatus.RedactLocation(loc) }
