package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/tailorml/tailor/internal/certs"
)

func init() {
	register("certs", "make a development CA and certificates for mutual TLS (init)", runCerts)
}

func runCerts(ctx context.Context, env *Env) int {
	cfg := certs.DefaultInitConfig("")
	var hosts, pairs, runs string
	fs := newFlagSet(env, "certs", "init --dir DIR [--hosts h1,h2] [--days N] [--pairs node|coordinator,paramserver,worker,admin] [--run R]", `
init makes a development CA (ca.pem, ca-key.pem) and key pairs signed by it
in --dir: node.pem and node-key.pem by default, which every role may share,
or one pair per name in --pairs. A pair named coordinator, paramserver,
worker or admin (tailor status, submit, checkpoints) is a role certificate:
it names its role (SAN URI tailor://role/NAME) and, with --run, the runs it
is good for (tailor://run/R); a process holding one accepts each call only
from the roles that may make it and dials only servers of the role it
means, of its run. Any other name makes a certificate of every role. Each
certificate is good as a TLS server and as a TLS client (mutual TLS), for the
names and addresses in --hosts plus localhost, 127.0.0.1 and ::1; peers dial
a process at the host it publishes (--advertise, or its listen address), so
list those. Private keys are written 0600. Existing files are kept unless
--force. Give every process --tls-ca ca.pem --tls-cert NAME.pem --tls-key
NAME-key.pem (see docs/security.md). Keep ca-key.pem off the cluster.`)
	fs.StringVar(&cfg.Dir, "dir", "", "directory to write the files to (created 0700)")
	fs.StringVar(&hosts, "hosts", "", "comma-separated DNS names and IP addresses the processes are dialled at")
	fs.IntVar(&cfg.Days, "days", cfg.Days, "days the CA and the certificates are valid")
	fs.StringVar(&pairs, "pairs", strings.Join(cfg.Pairs, ","), "comma-separated names of the key pairs to make")
	fs.StringVar(&runs, "run", "", "comma-separated run ids the role certificates are good for (default: every run)")
	fs.BoolVar(&cfg.Force, "force", false, "replace existing files")
	if code, done := parse(env, fs); done {
		return code
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	if action := fs.Arg(0); action != "init" {
		fmt.Fprintf(env.Stderr, "tailor certs: unknown action %q (want init)\n", action)
		return 2
	}
	if fs.NArg() > 1 {
		fmt.Fprintf(env.Stderr, "tailor certs: unexpected arguments %q\n", fs.Args()[1:])
		return 2
	}
	cfg.Hosts, cfg.Pairs, cfg.Runs = splitList(hosts), splitList(pairs), splitList(runs)
	if cfg.Dir == "" {
		fmt.Fprintln(env.Stderr, "tailor certs init: --dir is required")
		return 2
	}
	files, err := certs.Init(cfg)
	if err != nil {
		return fail(env, err)
	}
	for _, f := range files {
		fmt.Fprintln(env.Stdout, f)
	}
	return 0
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
