package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/coordinator"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/cluster/clustertest"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/runstatus"
)

// The status command: its required flags, exit status 1 for a run that
// is not there, the text and the JSON of runstatus.View, and --watch
// stopping at the run's end. (What a run's status holds is runstatus's
// tests.)
func TestStatusCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	endpoints := clustertest.Etcd(t)
	cli := clustertest.Client(t, endpoints)
	status := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := RunContext(ctx, append([]string{"status", "--timeout", "3s"}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	t.Setenv("TAILOR_ETCD", "")
	t.Setenv("TAILOR_RUN", "")
	if code, _, errs := status("--run", "r1"); code != 2 || !strings.Contains(errs, "--etcd and --run are required") {
		t.Errorf("status without --etcd: exit %d, stderr %q; want 2", code, errs)
	}
	etcd := "--etcd=" + endpoints[0]
	if code, _, errs := status(etcd, "--run", "r1", "extra"); code != 2 || !strings.Contains(errs, "unexpected arguments") {
		t.Errorf("status with an argument: exit %d, stderr %q; want 2", code, errs)
	}
	if code, _, errs := status(etcd, "--run", "r1"); code != 1 || !strings.Contains(errs, `tailor: run "r1": not submitted`) {
		t.Errorf("status of a missing run: exit %d, stderr %q; want 1 and 'not submitted'", code, errs)
	}

	put := func(key string, v any) {
		t.Helper()
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, key, string(b)); err != nil {
			t.Fatal(err)
		}
	}
	keys := cluster.RunKeys("r1")
	put(keys.Spec(), job.DefaultSpec("r1", "/data"))
	code, out, errs := status(etcd, "--run", "r1")
	if code != 0 || !strings.Contains(out, "run r1: waiting for a coordinator") {
		t.Errorf("status of a submitted run: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	code, out, errs = status(etcd, "--run", "r1", "--json")
	var v runstatus.View
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil || v.Run != "r1" || v.State != runstatus.StateWaiting {
		t.Errorf("status --json: exit %d, %v, %+v\nstdout:\n%s\nstderr:\n%s", code, err, v, out, errs)
	}
	if !strings.Contains(out, "\n  \"run\": \"r1\",\n") {
		t.Errorf("status --json is not indented:\n%s", out)
	}

	// the run's end, and --watch stops there
	put(keys.Status(), coordinator.RunStatus{State: "done", Model: "/out/r1/model.tailor", Finished: time.Now().UTC()})
	code, out, errs = status(etcd, "--run", "r1", "--watch", "100ms")
	if code != 0 || !strings.Contains(out, "run r1: done at") || !strings.Contains(out, "/out/r1/model.tailor") {
		t.Errorf("status --watch of a finished run: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	code, out, _ = status(etcd, "--run", "r1", "--watch", "100ms", "--json")
	if code != 0 || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"state":"done"`) {
		t.Errorf("status --watch --json of a finished run: exit %d, want one line:\n%s", code, out)
	}
}
