// Package tailor_test holds the test of the project's import rules
// (docs/architecture.md, "Import rules"): it reads every package's imports
// with `go list` and fails on a forbidden edge, direct or through others.
package tailor_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/tailorml/tailor"

// rule forbids packages matching from to depend, directly or through
// others, on packages matching any of to. A pattern "p" matches p and
// every package below it; "gorgonia.org/" matches by prefix.
type rule struct {
	why  string
	from []string
	to   []string
}

var rules = []rule{
	{"the net knows nothing of the cluster", []string{"model"},
		[]string{"coordinator", "worker", "paramserver", "checkpoint", "internal/cluster", "internal/wire", "internal/job", "store", "train", "eval"}},
	{"the parameter server is generic over named float32 tensors: no net, no gorgonia, no dataset format", []string{"paramserver"},
		[]string{"model", "gorgonia.org/", "shard"}},
	{"checkpoints need the store, not the dataset format or the net", []string{"checkpoint"},
		[]string{"shard", "model", "gorgonia.org/"}},
	{"roles do not import each other", []string{"coordinator"}, []string{"worker", "paramserver"}},
	{"roles do not import each other", []string{"worker"}, []string{"coordinator", "paramserver"}},
	{"roles do not import each other", []string{"paramserver"}, []string{"coordinator", "worker"}},
	{"roles do not import the single-process trainer", []string{"coordinator", "worker", "paramserver", "checkpoint"}, []string{"train"}},
	{"the store knows nothing of what it stores", []string{"store"},
		[]string{"shard", "model", "checkpoint", "coordinator", "worker", "paramserver", "internal/cluster", "internal/wire"}},
	{"the ONNX exporter reads a model file's net, nothing of training or the cluster", []string{"onnxexport"},
		[]string{"coordinator", "worker", "paramserver", "checkpoint", "internal/cluster", "internal/wire", "internal/job", "store", "shard", "train", "eval"}},
	{"nothing imports the CLI", []string{""}, []string{"cmd/tailor/cli"}},
	{"the roles and the libraries under them know nothing of the tools built on them",
		[]string{"coordinator", "worker", "paramserver", "checkpoint", "store", "shard", "model", "optim", "input", "eval", "train", "onnxexport", "internal/wire", "internal/cluster", "internal/job", "internal/identity", "internal/certs"},
		[]string{"localcluster", "runstatus", "dashboard", "bench", "serve", "netlab", "cmd/tailor", "cmd/netlab"}},
	{"the dashboard reads etcd and the members' numbers; it drives no role and runs no training", []string{"dashboard"},
		[]string{"worker", "paramserver", "train", "localcluster", "bench", "serve", "cmd/tailor"}},
	{"the network lab runs the roles as processes: it imports none of them", []string{"netlab"},
		[]string{"coordinator", "worker", "paramserver", "localcluster", "cmd/tailor"}},
	{"serving needs the net and the run's keys, not the roles, the trainer or the tools", []string{"serve"},
		[]string{"coordinator", "worker", "paramserver", "train", "localcluster", "runstatus", "bench", "cmd/tailor"}},
}

// allowedCLI are the packages that may import the CLI: the thin main.
var allowedCLI = []string{"cmd/tailor"}

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-tags", "openblas", "-deps=false", "-json", "./...").Output()
	if err != nil {
		var ee *exec.ExitError
		if ok := asExit(err, &ee); ok {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var ps []pkg
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	if len(ps) < 10 {
		t.Fatalf("go list found %d packages", len(ps))
	}
	return ps
}

func asExit(err error, into **exec.ExitError) bool {
	ee, ok := err.(*exec.ExitError)
	*into = ee
	return ok
}

// rel is a path relative to the module ("" for the module's root), or the
// path itself outside it.
func rel(path string) string {
	if path == module {
		return ""
	}
	if r, ok := strings.CutPrefix(path, module+"/"); ok {
		return r
	}
	return path
}

func matches(path, pattern string) bool {
	if strings.HasSuffix(pattern, "/") && strings.Contains(pattern, ".") {
		return strings.HasPrefix(path, pattern)
	}
	if pattern == "" {
		return true
	}
	return path == pattern || strings.HasPrefix(path, pattern+"/")
}

// TestImportRules fails on every forbidden dependency, naming the chain
// of imports that makes it.
func TestImportRules(t *testing.T) {
	ps := listPackages(t)
	imports := map[string][]string{}
	for _, p := range ps {
		imports[rel(p.ImportPath)] = nil
		for _, i := range p.Imports {
			imports[rel(p.ImportPath)] = append(imports[rel(p.ImportPath)], rel(i))
		}
	}
	checked := 0
	for _, r := range rules {
		for from := range imports {
			if !slices.ContainsFunc(r.from, func(p string) bool { return matches(from, p) }) {
				continue
			}
			if slices.ContainsFunc(r.to, func(p string) bool { return matches(from, p) }) {
				continue // a package is not its own forbidden dependency
			}
			checked++
			if chain := findPath(imports, from, func(to string) bool {
				if slices.Contains(allowedCLI, from) && matches(to, "cmd/tailor/cli") {
					return false
				}
				return slices.ContainsFunc(r.to, func(p string) bool { return matches(to, p) })
			}); chain != nil {
				t.Errorf("%s: %s imports %s (%s)", r.why, from, chain[len(chain)-1], strings.Join(chain, " → "))
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d packages checked against the rules: the rules match nothing", checked)
	}
}

// findPath returns the shortest import chain from `from` to a package for
// which bad holds, or nil. Packages outside the module are leaves (their
// own imports are not listed).
func findPath(imports map[string][]string, from string, bad func(string) bool) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, i := range imports[p] {
			if _, seen := prev[i]; seen {
				continue
			}
			prev[i] = p
			if bad(i) {
				var chain []string
				for c := i; c != ""; c = prev[c] {
					chain = append([]string{c}, chain...)
				}
				return chain
			}
			queue = append(queue, i)
		}
	}
	return nil
}

// The rule checker itself: a forbidden edge two imports away is found and
// named, an allowed one is not.
func TestFindPath(t *testing.T) {
	imports := map[string][]string{
		"worker":                {"internal/job", "model"},
		"internal/job":          {"coordinator"},
		"coordinator":           {"gorgonia.org/gorgonia"},
		"cmd/tailor":            {"cmd/tailor/cli"},
		"cmd/tailor/cli":        {"worker"},
		"model":                 {"gorgonia.org/gorgonia"},
		"gorgonia.org/gorgonia": nil,
	}
	for _, c := range []struct {
		from, to string
		want     string
	}{
		{"worker", "coordinator", "worker → internal/job → coordinator"},
		{"worker", "gorgonia.org/", "worker → model → gorgonia.org/gorgonia"},
		{"model", "coordinator", ""},
		{"cmd/tailor", "worker", "cmd/tailor → cmd/tailor/cli → worker"},
	} {
		chain := findPath(imports, c.from, func(p string) bool { return matches(p, c.to) })
		if got := strings.Join(chain, " → "); got != c.want {
			t.Errorf("%s to %s: got %q, want %q", c.from, c.to, got, c.want)
		}
	}
	if !matches("internal/cluster/clustertest", "internal/cluster") || matches("internal/clusterx", "internal/cluster") {
		t.Error("matches: a pattern covers its package and those below it only")
	}
}
