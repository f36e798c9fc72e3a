package charttest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
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

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// probeStatus polls GET url until it answers want or the deadline passes,
// and returns the last status (0: no answer).
func probeStatus(url string, want int, deadline time.Time) int {
	c := http.Client{Timeout: 2 * time.Second}
	got := 0
	for time.Now().Before(deadline) {
		got = 0
		if resp, err := c.Get(url); err == nil {
			got = resp.StatusCode
			resp.Body.Close()
		}
		if got == want {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
	return got
}

// The worker and coordinator containers' probes, run against the real
// tailor started with the container's arguments and environment (its
// listeners moved to free loopback ports, the key files to a temporary
// folder): while the process cannot reach etcd, and so has no spec, the
// liveness probe's path answers 200 — the kubelet does not restart a role
// that waits for the submit Job — and the readiness probe's 503.
func TestProbesAgainstTailor(t *testing.T) {
	bin := tailor(t)
	objs := render(t, loadChart(t), readValues(t, ""))
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "gossip", "gossip.key")
	if err := os.MkdirAll(filepath.Dir(keyFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tested := 0
	for _, w := range objs.Workloads() {
		ct := &w.Template.Spec.Containers[0]
		if len(ct.Args) == 0 || ct.Args[0] != "worker" && ct.Args[0] != "coordinator" {
			continue
		}
		tested++
		t.Run(ct.Args[0], func(t *testing.T) {
			args, err := expand(ct, ct.Args, map[string]string{"POD_NAME": w.Name + "-0", "POD_NAMESPACE": namespace, "POD_IP": "127.0.0.1"})
			if err != nil {
				t.Fatal(err)
			}
			metrics := freeAddr(t)
			for i, a := range args {
				switch {
				case strings.HasPrefix(a, "--metrics-listen="):
					args[i] = "--metrics-listen=" + metrics
				case strings.HasPrefix(a, "--gossip="):
					args[i] = "--gossip=" + freeAddr(t)
				case strings.HasPrefix(a, "--listen="):
					args[i] = "--listen=127.0.0.1:0"
				case strings.HasPrefix(a, "--advertise="):
					args[i] = "--advertise=127.0.0.1"
				}
			}
			env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
			for _, e := range ct.Env {
				v := e.Value
				if e.ValueFrom != nil {
					v = "from-" + e.Name
				}
				env = append(env, e.Name+"="+strings.Replace(v, "/etc/tailor/", dir+"/", 1))
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Env = env
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			defer func() {
				cancel()
				<-exited
			}()
			port := func(p *corev1.Probe) string {
				if p.HTTPGet.Port.String() != "metrics" {
					t.Fatalf("probe on port %s, want the metrics port", p.HTTPGet.Port.String())
				}
				return "http://" + metrics + p.HTTPGet.Path
			}
			deadline := time.Now().Add(20 * time.Second)
			if got := probeStatus(port(ct.LivenessProbe), http.StatusOK, deadline); got != http.StatusOK {
				select {
				case err := <-exited:
					exited <- err
					t.Fatalf("tailor %s exited (%v) before its liveness probe answered:\n%s", args[0], err, out.String())
				default:
				}
				t.Fatalf("liveness probe %s: %d, want 200", ct.LivenessProbe.HTTPGet.Path, got)
			}
			if got := probeStatus(port(ct.ReadinessProbe), http.StatusServiceUnavailable, deadline); got != http.StatusServiceUnavailable {
				t.Errorf("readiness probe %s without etcd: %d, want 503", ct.ReadinessProbe.HTTPGet.Path, got)
			}
			// still live a while later: waiting for etcd is no failure
			time.Sleep(time.Second)
			if got := probeStatus(port(ct.LivenessProbe), http.StatusOK, time.Now().Add(5*time.Second)); got != http.StatusOK {
				t.Errorf("liveness probe after a second: %d, want 200\n%s", got, out.String())
			}
		})
	}
	if tested != 2 {
		t.Errorf("tested %d roles, want the worker and the coordinator", tested)
	}
}
