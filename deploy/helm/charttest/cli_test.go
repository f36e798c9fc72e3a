package charttest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

var (
	buildOnce sync.Once
	tailorBin string
	buildErr  error
)

// tailor returns a tailor binary: $TAILOR_BIN, or one built from this
// repository (the module two levels up) once per test process.
func tailor(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("TAILOR_BIN"); b != "" {
		return b
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "charttest-tailor-")
		if err != nil {
			buildErr = err
			return
		}
		tailorBin = filepath.Join(dir, "tailor")
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", tailorBin, "./cmd/tailor")
		cmd.Dir = filepath.Join("..", "..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/tailor: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return tailorBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if tailorBin != "" {
		os.RemoveAll(filepath.Dir(tailorBin))
	}
	os.Exit(code)
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand does what the kubelet does to a container's arguments: $(NAME)
// becomes the value of the container's variable NAME. A reference to a
// variable the container does not define is an error (the kubelet would
// leave it as it is).
func expand(c *corev1.Container, args []string, vals map[string]string) ([]string, error) {
	var out []string
	var err error
	for _, a := range args {
		out = append(out, varRef.ReplaceAllStringFunc(a, func(ref string) string {
			name := varRef.FindStringSubmatch(ref)[1]
			if envVar(c, name) == nil {
				err = fmt.Errorf("argument %q refers to $(%s), which the container does not define", a, name)
				return ref
			}
			v, ok := vals[name]
			if !ok {
				err = fmt.Errorf("argument %q refers to $(%s): no test value for it", a, name)
			}
			return v
		}))
	}
	return out, err
}

// setting is a row of tailor config show: a flag's value and its source.
type setting struct{ value, source string }

func parseShow(out []byte) map[string]setting {
	rows := map[string]setting{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 3 && f[0] != "FLAG" {
			rows[f[0]] = setting{value: f[1], source: strings.Join(f[2:], " ")}
		}
	}
	return rows
}

// Every tailor container's command line, as the kubelet expands it, with
// its environment, is one the real tailor accepts (tailor config show
// parses it as the command would, and fails on an unknown flag or a bad
// value); every TAILOR_* variable the chart sets is one tailor reads; the
// parameter servers take their index from the host name and the submitted
// spec has --ps = their replicas.
func TestTailorAcceptsArgs(t *testing.T) {
	bin := tailor(t)
	c := loadChart(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs := render(t, c, readValues(t, tc.file))
			for _, w := range objs.Workloads() {
				for i := range w.Template.Spec.Containers {
					ct := &w.Template.Spec.Containers[i]
					if !strings.Contains(ct.Image, "tailor") {
						continue
					}
					id := w.Kind + "/" + w.Name + "/" + ct.Name
					vals := map[string]string{"POD_NAME": w.Name + "-0", "POD_NAMESPACE": namespace, "POD_IP": "10.1.2.3"}
					args, err := expand(ct, ct.Args, vals)
					if err != nil {
						t.Errorf("%s: %v", id, err)
						continue
					}
					env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
					var tailorEnv []string
					for _, e := range ct.Env {
						v := e.Value
						if e.ValueFrom != nil {
							v = "from-" + e.Name
						}
						env = append(env, e.Name+"="+v)
						// the S3 store reads its endpoint from the
						// environment itself (store/S3.md), not through a flag
						if strings.HasPrefix(e.Name, "TAILOR_") && e.Name != "TAILOR_S3_ENDPOINT" {
							tailorEnv = append(tailorEnv, e.Name)
						}
					}
					cmd := exec.Command(bin, append([]string{"config", "show"}, args...)...)
					cmd.Env = env
					var stderr bytes.Buffer
					cmd.Stderr = &stderr
					out, err := cmd.Output()
					if err != nil {
						t.Errorf("%s: tailor config show %q: %v\n%s", id, args, err, stderr.String())
						continue
					}
					rows := parseShow(out)
					for _, name := range tailorEnv {
						found := false
						for _, r := range rows {
							found = found || r.source == "env "+name
						}
						if !found {
							t.Errorf("%s: tailor reads no flag from env %s (it is set for nothing)", id, name)
						}
					}
					for _, a := range args[1:] {
						flag, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
						if r, ok := rows[flag]; !ok || r.source != "flag" {
							t.Errorf("%s: argument %q: config show has %s as %+v", id, a, flag, r)
						}
					}
					switch args[0] {
					case "paramserver":
						if r := rows["index-from-hostname"]; r.value != "true" || rows["index"].source != "default" {
							t.Errorf("%s: index-from-hostname %+v, index %+v", id, r, rows["index"])
						}
					case "submit":
						if r := rows["ps"]; r.value != fmt.Sprint(tc.ps) {
							t.Errorf("%s: ps %+v, want %d", id, r, tc.ps)
						}
					}
					if r := rows["etcd"]; r.value != tc.etcd {
						t.Errorf("%s: etcd %+v, want %s", id, r, tc.etcd)
					}
				}
			}
		})
	}
}
