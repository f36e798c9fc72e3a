package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailorml/tailor/cmd/tailor/cli"
	"github.com/tailorml/tailor/internal/wire"
)

// syncBuffer is a bytes.Buffer that a child process writes while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// statusView is the part of `tailor status --json` the test checks.
type statusView struct {
	State    string `json:"state"`
	Leader   string `json:"leader"`
	Progress *struct {
		Epoch     int     `json:"epoch"`
		Step      int64   `json:"step"`
		Images    int     `json:"images"`
		ImgPerSec float64 `json:"img_per_s"`
		Workers   int     `json:"workers"`
	} `json:"progress"`
	Members []struct {
		Role    string            `json:"role"`
		ID      string            `json:"id"`
		Addrs   map[string]string `json:"addrs"`
		Leader  bool              `json:"leader"`
		Version string            `json:"version"`
		Wire    string            `json:"wire_protocol"`
		PS      *struct {
			Initialised bool   `json:"initialised"`
			Version     int64  `json:"version"`
			BytesIn     uint64 `json:"bytes_in"`
			Accepted    uint64 `json:"pushes_accepted"`
		} `json:"paramserver"`
		Worker *struct {
			Steps float64 `json:"steps"`
		} `json:"worker"`
	} `json:"members"`
}

// complete reports what the view still lacks for a running cluster of one
// coordinator, 2 parameter servers and 2 workers, each with a metrics
// address, parameter servers and workers with live numbers, and the
// leader's progress past its first step.
func (v *statusView) complete() string {
	if v.State != "running" || v.Leader == "" {
		return fmt.Sprintf("state %q, leader %q", v.State, v.Leader)
	}
	if v.Progress == nil || v.Progress.Epoch < 1 || v.Progress.Step < 1 {
		return "no progress past step 0"
	}
	roles := map[string]int{}
	for _, m := range v.Members {
		if m.Addrs["metrics"] == "" {
			return m.Role + " " + m.ID + " has no metrics address"
		}
		if m.Version == "" || m.Wire != strconv.Itoa(wire.ProtocolVersion) {
			return fmt.Sprintf("%s %s publishes version %q, wire protocol %q", m.Role, m.ID, m.Version, m.Wire)
		}
		switch {
		case m.Role == "paramserver" && (m.PS == nil || !m.PS.Initialised || m.PS.Accepted == 0):
			return "paramserver " + m.ID + " has no pushes yet"
		case m.Role == "worker" && (m.Worker == nil || m.Worker.Steps < 1):
			return "worker " + m.ID + " has no steps yet"
		}
		roles[m.Role]++
	}
	if roles["coordinator"] != 1 || roles["paramserver"] != 2 || roles["worker"] != 2 {
		return fmt.Sprintf("members by role %v", roles)
	}
	return ""
}

// TestStatusOfLocalRun starts `tailor local` in the background and follows
// it with `tailor status` (through cli.RunContext) until the status shows
// every member with its metrics address and live numbers from the leader,
// the parameter servers and the workers; then lets the run finish.
func TestStatusOfLocalRun(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// progress every 100 ms over a run of several seconds: status sees it
	// running however fast the machine is
	cmd := exec.CommandContext(ctx, bin, "local", "--verbose", "--out", out, "--data", data, "--workers", "2", "--ps", "2",
		"--epochs", "12", "--batch", "8", "--unit-size", "32")
	cmd.Env = append(os.Environ(), "TAILOR_PROGRESS_INTERVAL=100ms")
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	dump := func() string { return "stdout:\n" + stdout.String() + "\nstderr:\n" + stderr.String() }

	// tailor local names its etcd on stdout
	etcdRE := regexp.MustCompile(`run local: etcd (http://\S+);`)
	var etcd string
	for deadline := time.Now().Add(time.Minute); etcd == ""; {
		if m := etcdRE.FindStringSubmatch(stdout.String()); m != nil {
			etcd = m[1]
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("tailor local exited early: %v\n%s", err, dump())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("tailor local printed no etcd endpoint\n%s", dump())
		}
	}

	status := func(args ...string) (int, string, string) {
		var o, e bytes.Buffer
		code := cli.RunContext(ctx, append([]string{"status", "--etcd", etcd, "--run", "local", "--timeout", "3s"}, args...), &o, &e)
		return code, o.String(), e.String()
	}
	var lack, last string
	seen := false
	for deadline := time.Now().Add(2 * time.Minute); !seen; {
		select {
		case err := <-exited:
			t.Fatalf("the run ended (%v) before status showed it whole; it lacked: %s\nlast status:\n%s\n%s", err, lack, last, dump())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed the whole run; it lacked: %s\nlast status:\n%s", lack, last)
		}
		code, o, e := status("--json")
		if code != 0 {
			lack, last = "exit "+fmt.Sprint(code), e
			continue
		}
		var v statusView
		if err := json.Unmarshal([]byte(o), &v); err != nil {
			t.Fatalf("status --json: %v\n%s", err, o)
		}
		last = o
		if lack = v.complete(); lack == "" {
			seen = true
		}
	}
	// every member serves Prometheus metrics at the address it published
	var v statusView
	if err := json.Unmarshal([]byte(last), &v); err != nil {
		t.Fatal(err)
	}
	for _, m := range v.Members {
		resp, err := http.Get("http://" + m.Addrs["metrics"] + "/metrics")
		if err != nil {
			t.Errorf("%s %s metrics: %v", m.Role, m.ID, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "tailor_") {
			t.Errorf("%s %s metrics: %s, %d bytes without tailor_ metrics", m.Role, m.ID, resp.Status, len(body))
		}
	}
	code, text, errs := status()
	t.Logf("tailor status:\n%s", text)
	if code != 0 {
		t.Errorf("status: exit %d\n%s", code, errs)
	}
	for _, want := range []string{"run local: running, leader coord-a", "sync, 12 epochs, batch 8 per worker, 2 parameter servers",
		"progress  epoch ", "coord-a (leader)", "parameter servers", "workers", "w0", "w1", "ps0", "ps1"} {
		if !strings.Contains(text, want) {
			t.Errorf("status text lacks %q", want)
		}
	}

	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("tailor local: %v\n%s", err, dump())
		}
	case <-ctx.Done():
		t.Fatalf("tailor local did not finish\n%s", dump())
	}
	if !strings.Contains(stdout.String(), "run local finished") {
		t.Errorf("the run did not finish:\n%s", dump())
	}
	if out, _ := exec.Command("pgrep", "-f", bin).Output(); len(out) > 0 {
		t.Errorf("processes left running: %s", out)
	}
}
