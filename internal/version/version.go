// Package version says which tailor this is: the module version and the
// commit it was built from (from the build information the Go toolchain
// stamps into the binary, or from the linker when that is off), the Go
// release, the wire protocol it speaks and the CPU kernels the numeric
// packages chose on this machine. tailor version prints it, and every
// member of a run publishes it in its membership record (Member).
package version

import (
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/optim"
)

// Set by the linker in builds whose binary carries no VCS information
// (GOFLAGS=-buildvcs=false as in scripts/test.sh, or a source tree without
// .git, as in a Docker build context):
//
//	go build -ldflags "-X github.com/tailorml/tailor/internal/version.commit=$(git rev-parse --short HEAD)" ./cmd/tailor
//
// and, for a tree with uncommitted changes, also
// -X github.com/tailorml/tailor/internal/version.modified=true. The
// toolchain's own vcs.revision and vcs.modified win when present.
var (
	commit   string
	modified string
)

// Info is what this build of tailor is.
type Info struct {
	// Version is the main module's version: a tag or pseudo-version when
	// the toolchain knew one, "(devel)" for a build from a source tree.
	Version string `json:"version"`
	// Commit is the VCS revision built (empty if unknown), Modified
	// whether the tree had uncommitted changes, CommitTime the commit's
	// time (RFC 3339; the toolchain's vcs.time only).
	Commit     string `json:"commit,omitempty"`
	Modified   bool   `json:"modified"`
	CommitTime string `json:"commit_time,omitempty"`
	Go         string `json:"go"`       // runtime.Version()
	Platform   string `json:"platform"` // GOOS/GOARCH
	// Tags are the build tags (e.g. "openblas"), as the toolchain recorded
	// them.
	Tags string `json:"tags,omitempty"`
	// Wire is the wire protocol version (wire.ProtocolVersion): members
	// talk only to members of the same one.
	Wire int `json:"wire_protocol"`
	// BLAS is the matrix-multiply backend compiled in ("openblas" or
	// "gonum", model.BLAS) and BLASCore the kernels it chose for this CPU
	// (model.BLASCore). This package does not link the net, so Get leaves
	// them empty and the command that reports them (tailor version) sets
	// them.
	BLAS     string `json:"blas,omitempty"`
	BLASCore string `json:"blas_core,omitempty"`
	// Kernels are the CPU kernels chosen at start from the CPU's features.
	Kernels Kernels `json:"kernels"`
}

// Kernels names the vector kernels in use.
type Kernels struct {
	// Vec: the layers' element-wise loops and sums (model.VecKernels):
	// "avx2", "avx" or "go". Like BLAS, set by the command that reports it.
	Vec string `json:"vec"`
	// Adam: the optimiser's update (optim): "avx" or "go".
	Adam string `json:"adam"`
}

// Get returns this build's Info (BLAS, BLASCore and Kernels.Vec empty: see
// Info).
func Get() Info {
	info := Info{Version: "(devel)", Commit: commit, Modified: modified == "true", Go: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH, Wire: wire.ProtocolVersion,
		Kernels: Kernels{Adam: optim.Kernel()}}
	if bi, ok := debug.ReadBuildInfo(); ok {
		fromBuildInfo(&info, bi)
	}
	return info
}

// fromBuildInfo fills info from the toolchain's build information.
func fromBuildInfo(info *Info, bi *debug.BuildInfo) {
	if v := bi.Main.Version; v != "" {
		info.Version = v
	}
	if bi.GoVersion != "" {
		info.Go = bi.GoVersion
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value
		case "vcs.time":
			info.CommitTime = s.Value
		case "-tags":
			info.Tags = s.Value
		}
	}
	if rev != "" {
		info.Commit, info.Modified = rev, dirty == "true"
	}
}

// String is the version in one line, as members publish it: the module
// version, then the commit (abbreviated to 12 characters) unless the
// version already holds it, then "(modified)" for a tree with changes:
// "(devel) 1162adf9c2e1 (modified)", "v0.3.0".
func (i Info) String() string {
	s := i.Version
	if c := ShortCommit(i.Commit); c != "" && !strings.Contains(s, c) {
		s += " " + c
	}
	if i.Modified && !strings.HasSuffix(s, "+dirty") {
		s += " (modified)"
	}
	return s
}

// ShortCommit abbreviates a commit hash to 12 characters, as Go's
// pseudo-versions do.
func ShortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// The keys of a member's version in its membership record
// (cluster.Member.Extra).
const (
	ExtraVersion = "version" // Info.String()
	ExtraWire    = "wire"    // the wire protocol version, decimal
)

// Member returns the membership record entries that say which tailor a
// member runs: ExtraVersion and ExtraWire.
func Member() map[string]string {
	i := Get()
	return map[string]string{ExtraVersion: i.String(), ExtraWire: strconv.Itoa(i.Wire)}
}
