package version

import (
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"

	"github.com/tailorml/tailor/internal/wire"
)

func TestFromBuildInfo(t *testing.T) {
	const rev = "1162adf9c2e1d7b3a4f5e6d7c8b9a0f1e2d3c4b5"
	tests := []struct {
		name     string
		bi       debug.BuildInfo
		injected [2]string // commit, modified set by the linker
		want     Info      // the fields compared
		str      string
	}{
		{
			name: "source tree, no vcs",
			bi:   debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/tailorml/tailor", Version: "(devel)"}},
			want: Info{Version: "(devel)", Go: "go1.26.8"},
			str:  "(devel)",
		},
		{
			name:     "-buildvcs=false, commit from the linker",
			bi:       debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{{Key: "-tags", Value: "openblas"}}},
			injected: [2]string{"1162adf", "true"},
			want:     Info{Version: "(devel)", Commit: "1162adf", Modified: true, Tags: "openblas"},
			str:      "(devel) 1162adf (modified)",
		},
		{
			name: "vcs stamped by the toolchain",
			bi: debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
				{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.time", Value: "2026-11-27T10:00:00Z"}, {Key: "vcs.modified", Value: "false"}}},
			injected: [2]string{"0000000", "true"}, // the toolchain's facts win
			want:     Info{Version: "(devel)", Commit: rev, CommitTime: "2026-11-27T10:00:00Z"},
			str:      "(devel) 1162adf9c2e1",
		},
		{
			name: "pseudo-version holding the commit",
			bi: debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261127100000-1162adf9c2e1+dirty"}, Settings: []debug.BuildSetting{
				{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "true"}}},
			want: Info{Version: "v0.0.0-20261127100000-1162adf9c2e1+dirty", Commit: rev, Modified: true},
			str:  "v0.0.0-20261127100000-1162adf9c2e1+dirty",
		},
		{
			name: "tagged release",
			bi:   debug.BuildInfo{Main: debug.Module{Version: "v1.2.0"}, Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}}},
			want: Info{Version: "v1.2.0", Commit: rev},
			str:  "v1.2.0 1162adf9c2e1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Info{Version: "(devel)", Commit: tt.injected[0], Modified: tt.injected[1] == "true"}
			fromBuildInfo(&got, &tt.bi)
			if tt.want.Go == "" {
				got.Go = ""
			}
			if got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
			if s := got.String(); s != tt.str {
				t.Errorf("String() = %q, want %q", s, tt.str)
			}
		})
	}
}

// Get in a test binary: no VCS stamp (go test does not stamp), so the
// linker's variables, the toolchain's Go release, this platform, the wire
// protocol and kernels that exist.
func TestGet(t *testing.T) {
	commit, modified = "abc1234", "true"
	defer func() { commit, modified = "", "" }()
	i := Get()
	if i.Commit != "abc1234" || !i.Modified {
		t.Errorf("commit %q modified %v: want the linker's abc1234, true", i.Commit, i.Modified)
	}
	if i.Go != runtime.Version() || i.Platform != runtime.GOOS+"/"+runtime.GOARCH || i.Wire != wire.ProtocolVersion {
		t.Errorf("go %q platform %q wire %d", i.Go, i.Platform, i.Wire)
	}
	if i.Kernels.Vec != "" {
		t.Errorf("vec kernels %q: Get does not link the net, the command sets them", i.Kernels.Vec)
	}
	if i.Kernels.Adam != "avx" && i.Kernels.Adam != "go" {
		t.Errorf("adam kernel %q", i.Kernels.Adam)
	}
	if runtime.GOARCH != "amd64" && i.Kernels.Adam != "go" {
		t.Errorf("kernels %+v on %s", i.Kernels, runtime.GOARCH)
	}
	m := Member()
	if m[ExtraVersion] != i.String() || m[ExtraWire] != strconv.Itoa(wire.ProtocolVersion) || len(m) != 2 {
		t.Errorf("Member() = %v", m)
	}
}
