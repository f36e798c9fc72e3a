package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/tailorml/tailor/internal/version"
	"github.com/tailorml/tailor/model"
)

func init() {
	register("version", "print tailor's version, commit, Go release, wire protocol, BLAS and CPU kernels", runVersion)
}

func runVersion(_ context.Context, env *Env) int {
	fs := newFlagSet(env, "version", "", `
Prints which tailor this is: the module version ("(devel)" for a build from
a source tree) and the commit it was built from (with "(modified)" if the
tree had uncommitted changes), the Go release and platform, the build tags,
the wire protocol version (processes of a run talk only to processes of the
same one), the BLAS backend compiled in with the kernels it chose for this
CPU, and the vector kernels (AVX2, AVX or Go) the layers and the optimiser
run on this CPU. tailor --version is the same.`)
	asJSON := fs.Bool("json", false, "print JSON")
	if code, done := parse(env, fs); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.Stderr, "tailor version: unexpected arguments %q\n", fs.Args())
		return 2
	}
	info := version.Get()
	info.BLAS, info.BLASCore, info.Kernels.Vec = model.BLAS, model.BLASCore(), model.VecKernels()
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(info); err != nil {
			return fail(env, err)
		}
		return 0
	}
	if err := writeVersion(env.Stdout, info); err != nil {
		return fail(env, err)
	}
	return 0
}

func writeVersion(w io.Writer, i version.Info) error {
	fmt.Fprintf(w, "tailor %s\n", i)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  version\t%s\n", i.Version)
	commit := i.Commit
	switch {
	case commit == "":
		commit = "unknown (built without VCS information)"
	case i.Modified:
		commit += " (modified)"
	}
	if i.CommitTime != "" {
		commit += ", " + i.CommitTime
	}
	fmt.Fprintf(tw, "  commit\t%s\n", commit)
	fmt.Fprintf(tw, "  go\t%s %s\n", i.Go, i.Platform)
	if i.Tags != "" {
		fmt.Fprintf(tw, "  tags\t%s\n", i.Tags)
	}
	fmt.Fprintf(tw, "  wire\tprotocol %d\n", i.Wire)
	blas := i.BLAS
	if i.BLASCore != "" {
		blas += " (" + i.BLASCore + ")"
	}
	fmt.Fprintf(tw, "  blas\t%s\n", blas)
	fmt.Fprintf(tw, "  kernels\tvec %s, adam %s\n", i.Kernels.Vec, i.Kernels.Adam)
	return tw.Flush()
}
