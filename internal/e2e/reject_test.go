package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/wire"
)

// Bad messages sent to a real `tailor paramserver` process of a running
// cluster are refused with the right reason, counted in its /metrics, and
// the run is not disturbed: another run's push, an unknown worker's, a
// push of the wrong shape, and one holding NaN.
func TestBadMessagesRejectedByParamServer(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// slow steps (each worker waits 1.5 s before it pushes), so that the
	// bad pushes below can name the step being collected
	r := startLocal(t, ctx, bin, []string{"TAILOR_FAULTS=worker.w0.delay=1500ms,worker.w1.delay=1500ms"},
		"--out", out, "--data", data, "--workers", "2", "--ps", "2", "--epochs", "30", "--batch", "8", "--unit-size", "32")
	defer func() {
		r.cmd.Process.Signal(syscall.SIGINT)
		r.cmd.Wait()
	}()
	etcd := r.waitFor(regexp.MustCompile(`run local: etcd (http://\S+);`), time.Minute)[1]
	// wait for training to be under way
	r.waitFor(regexp.MustCompile(`msg=checkpoint`), 2*time.Minute)
	cli, err := cluster.NewClient([]string{etcd})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	keys := cluster.RunKeys("local")
	var spec wire.Spec
	if _, err := cluster.GetJSON(ctx, cli, keys.WireSpec(), &spec); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, keys.RoleMembers(cluster.RoleParamServer), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var ps0 cluster.Member
	for _, kv := range resp.Kvs {
		var m cluster.Member
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			t.Fatal(err)
		}
		if m.Rank == 0 {
			ps0 = m
		}
	}
	addr := ps0.Addrs["grpc"]
	if addr == "" {
		t.Fatalf("no address for ps0 in %d records", len(resp.Kvs))
	}
	plan, err := wire.NewPlan(spec, 2)
	if err != nil {
		t.Fatal(err)
	}
	zeros := make([][]float32, len(spec))
	for i, ts := range spec {
		zeros[i] = make([]float32, ts.Size)
	}
	// chunks of server 0's part, as a client would send them, for the
	// step being collected
	var step int64
	chunks := func(run, worker string, mutate func(c []*wire.Chunk)) []*wire.Chunk {
		var out []*wire.Chunk
		for _, p := range plan.ServerParts(0) {
			out = append(out, &wire.Chunk{Type: wire.TypePushChunk, RunID: run, WorkerID: worker, Plan: plan.Fingerprint(), Flags: wire.FlagChecksum,
				Step: step, Version: step, Server: 0, Part: p.ID, Offset: 0,
				Payload: append([]byte(nil), wire.Bytes(zeros[p.Tensor][p.Offset:p.Offset+p.Len])...)})
		}
		if mutate != nil {
			mutate(out)
		}
		return out
	}
	conn, err := grpc.NewClient(addr, wire.DialOptions(nil)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	push := func(cs []*wire.Chunk) (*wire.PushReply, error) {
		st, err := wire.NewStream(ctx, conn, wire.MethodPush)
		if err != nil {
			return nil, err
		}
		for _, c := range cs {
			if err := st.SendMsg(c); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, err
			}
		}
		_ = st.CloseSend()
		r := new(wire.PushReply)
		return r, st.RecvMsg(r)
	}
	nan := func(cs []*wire.Chunk) {
		b := cs[0].Payload
		v := float32(math.NaN())
		copy(b, wire.Bytes([]float32{v}))
	}
	shape := func(cs []*wire.Chunk) { cs[0].Offset = 1 }
	// a step has just begun: the workers are in their delay
	sc, err := wire.NewClient(wire.ClientConfig{RunID: "local", WorkerID: "tester", Addrs: []string{addr, addr}, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	version := func() int64 {
		st, err := sc.Status(ctx)
		if err != nil || len(st) == 0 || st[0] == nil {
			t.Fatalf("status of ps0: %v", err)
		}
		return st[0].Version
	}
	v0 := version()
	for step = version(); step == v0; step = version() {
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range []struct {
		name, reason string
		chunks       []*wire.Chunk
	}{
		{"another run", wire.ReasonRunID, chunks("other-run", "w0", nil)},
		{"unknown worker", wire.ReasonUnknownWorker, chunks("local", "intruder", nil)},
		{"wrong shape", wire.ReasonShape, chunks("local", "w0", shape)},
		{"NaN", wire.ReasonNonFinite, chunks("local", "w0", nan)},
	} {
		r, err := push(c.chunks)
		switch {
		case err == nil && !r.Accepted && r.Reason == c.reason:
		case err != nil && strings.Contains(err.Error(), c.reason):
		default:
			t.Errorf("%s: reply %+v, error %v; want rejected as %s", c.name, r, err, c.reason)
		}
	}
	// counted in the server's metrics
	mresp, err := http.Get("http://" + ps0.Addrs[job.AddrMetrics] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, reason := range []string{wire.ReasonRunID, wire.ReasonUnknownWorker, wire.ReasonShape, wire.ReasonNonFinite} {
		re := regexp.MustCompile(`tailor_ps_pushes_rejected_total\{[^}]*reason="` + reason + `"[^}]*\} [1-9]`)
		if !re.Match(body) {
			t.Errorf("metrics do not count a %s rejection", reason)
		}
	}
	// the run goes on: another epoch ends after the bad pushes
	n := strings.Count(r.log.String(), "msg=epoch")
	for deadline := time.Now().Add(2 * time.Minute); strings.Count(r.log.String(), "msg=epoch") <= n; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no epoch after the bad pushes:\n%s", r.log.String())
		}
	}
}
