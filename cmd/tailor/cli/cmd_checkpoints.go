package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/tailorml/tailor/checkpoint"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/store"
)

func init() {
	register("checkpoints", "list, show or remove a run's checkpoints (ls | show NAME | rm NAME)", runCheckpoints)
}

func runCheckpoints(ctx context.Context, env *Env) int {
	var cf clusterFlags
	var verify, force, asJSON bool
	fs := newFlagSet(env, "checkpoints", "ls | show NAME | rm NAME", `
Lists, shows or removes the checkpoints of run R (etcd holds the run's spec,
which says where its checkpoints are, and the pointer to the newest complete
one, marked * by ls). A folder without a manifest is incomplete (a crash
while it was written). show prints the manifest; with --verify it also reads
every part and checks its SHA-256. rm refuses the checkpoint the pointer
names unless --force.`)
	cf.add(fs)
	fs.BoolVar(&verify, "verify", false, "show: read every part and check its SHA-256")
	fs.BoolVar(&force, "force", false, "rm: remove even the checkpoint the pointer names")
	fs.BoolVar(&asJSON, "json", false, "ls: print JSON")
	if len(env.Args) > 0 && env.Args[0] == "help" {
		fs.SetOutput(env.Stdout)
		fs.Usage()
		return 0
	}
	if code, done := parse(env, fs); done {
		return code
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	action, args := fs.Arg(0), fs.Args()[1:]
	if !cf.check(env, "checkpoints") {
		return 2
	}
	name := ""
	switch {
	case action == "ls" && len(args) == 0:
	case (action == "show" || action == "rm") && len(args) == 1:
		name = args[0]
	default:
		fmt.Fprintf(env.Stderr, "tailor checkpoints: want ls, show NAME or rm NAME (got %q with %d arguments)\n", action, len(args))
		return 2
	}
	cli, err := cf.sec.etcdClient(cf.endpoints())
	if err != nil {
		return fail(env, err)
	}
	defer cli.Close()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	spec, err := job.Load(cctx, cli, cf.run)
	if err != nil {
		return fail(env, err)
	}
	data, err := store.Open(cctx, spec.Data)
	if err != nil {
		return fail(env, err)
	}
	loc, err := job.OpenCheckpoints(cctx, spec, data, store.RetryPolicy{})
	if err != nil {
		return fail(env, err)
	}
	ptr, _, err := checkpoint.GetPointer(cctx, cli, cluster.RunKeys(spec.Run))
	if err != nil && !errors.Is(err, cluster.ErrNotFound) {
		return fail(env, err)
	}
	switch action {
	case "ls":
		err = listCheckpoints(cctx, env.Stdout, loc, spec, ptr, asJSON)
	case "show":
		err = showCheckpoint(cctx, env.Stdout, loc, spec, name, verify)
	case "rm":
		if name == ptr.Name && !force {
			return fail(env, fmt.Errorf("%s is the run's current checkpoint (the pointer names it): --force to remove it anyway", name))
		}
		if err = loc.Remove(cctx, spec.Run, spec.JobID, name); err == nil {
			fmt.Fprintf(env.Stdout, "removed %s\n", name)
		}
	}
	if err != nil {
		return fail(env, err)
	}
	return 0
}

// checkpointRow is one line of `tailor checkpoints ls`.
type checkpointRow struct {
	Name     string    `json:"name"`
	Current  bool      `json:"current"`
	Complete bool      `json:"complete"`
	Step     int64     `json:"step"`
	Epochs   int       `json:"epochs"`
	Reason   string    `json:"reason,omitempty"`
	Best     bool      `json:"best,omitempty"`
	Bytes    int64     `json:"bytes"`
	Created  time.Time `json:"created,omitzero"`
	Error    string    `json:"error,omitempty"`
}

func listCheckpoints(ctx context.Context, w io.Writer, loc checkpoint.Location, spec job.Spec, ptr checkpoint.Pointer, asJSON bool) error {
	names, err := loc.Folders(ctx, spec.Run, spec.JobID)
	if err != nil {
		return err
	}
	var rows []checkpointRow
	for _, n := range names {
		step, epochs, _ := checkpoint.ParseName(n)
		r := checkpointRow{Name: n, Current: n == ptr.Name, Step: step, Epochs: epochs}
		m, err := loc.ReadMeta(ctx, spec.Run, spec.JobID, n)
		switch {
		case errors.Is(err, store.ErrNotExist):
			r.Error = "incomplete (no manifest)"
		case err != nil:
			r.Error = err.Error()
		default:
			r.Complete, r.Reason, r.Best, r.Created = true, m.Reason, m.Best, m.Created
			for _, b := range m.Parts {
				r.Bytes += b.Bytes
			}
		}
		rows = append(rows, r)
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	fmt.Fprintf(w, "run %s, job %s: %d checkpoints in %s%s\n", spec.Run, spec.JobID, len(rows), redactLocation(storeName(spec)), loc.RunDir(spec.Run, spec.JobID))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\tNAME\tSTEP\tEPOCHS\tREASON\tBEST\tSIZE\tCREATED")
	for _, r := range rows {
		mark, best, created, reason := "", "", "", r.Reason
		if r.Current {
			mark = "*"
		}
		if r.Best {
			best = "best"
		}
		if !r.Created.IsZero() {
			created = r.Created.Local().Format(time.DateTime)
		}
		if r.Error != "" {
			reason = r.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%.1f MB\t%s\n", mark, r.Name, r.Step, r.Epochs, reason, best, float64(r.Bytes)/1e6, created)
	}
	return tw.Flush()
}

func showCheckpoint(ctx context.Context, w io.Writer, loc checkpoint.Location, spec job.Spec, name string, verify bool) error {
	m, err := loc.ReadMeta(ctx, spec.Run, spec.JobID, name)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s\n", b)
	if !verify {
		return nil
	}
	for _, p := range m.Parts {
		if err := loc.VerifyPart(ctx, spec.Run, spec.JobID, name, p); err != nil {
			return err
		}
		fmt.Fprintf(w, "part %d: %d bytes, SHA-256 ok\n", p.Server, p.Bytes)
	}
	return nil
}

func storeName(s job.Spec) string {
	if s.Checkpoints != "" {
		return s.Checkpoints + " "
	}
	return s.Data + " "
}
