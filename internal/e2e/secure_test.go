package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tailorml/tailor/internal/certs"
	"github.com/tailorml/tailor/internal/certs/certstest"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/wire"
)

// TestSecureLocal runs `tailor local --secure`: mutual TLS between the
// processes with a role certificate each, encrypted gossip, etcd over TLS
// with client certificates and a user. The sync run completes, every
// record once per epoch. While it trains, clients without a certificate of
// the run's CA (none, self-signed, another CA's, plaintext, or not
// trusting the CA) can neither pull weights from a parameter server nor
// get work from the coordinator, and neither reach etcd; certificates of
// the CA in a role that may not make a call (a worker's reading a
// parameter server's counters, the admin's pulling weights or asking for
// work, a node certificate of no role) are refused it; a worker with the wrong gossip key and one without any TLS
// flags exit with an error instead of training; `tailor status` works
// with the flags local prints and not without them. No password or key
// shows in any output.
func TestSecureLocal(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// each worker waits 2 s before it pushes: the 20 steps outlast the 30 s
	// a worker with the wrong gossip key tries to join before it gives up
	r := startLocal(t, ctx, bin, []string{"TAILOR_FAULTS=worker.w0.delay=2s,worker.w1.delay=2s"},
		"--secure", "--out", out, "--data", data, "--workers", "2", "--ps", "2",
		"--epochs", "2", "--batch", "8", "--unit-size", "32", "--audit")
	m := r.waitFor(regexp.MustCompile(`run local: etcd (https://\S+); watch it with: (tailor status [^\n]*)\n`), time.Minute)
	etcd, statusCmd := m[1], m[2]

	// the files of OUT/certs, private ones 0600
	dir := filepath.Join(out, "certs")
	secrets := map[string]string{}
	for _, f := range []string{"ca-key.pem", "node-key.pem", "coordinator-key.pem", "paramserver-key.pem", "worker-key.pem", "admin-key.pem",
		"gossip.key", "etcd-password", "etcd-root-password"} {
		p := filepath.Join(dir, f)
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, st.Mode().Perm())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		secrets[f] = strings.TrimSpace(string(b))
	}
	files := certs.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "node.pem"), Key: filepath.Join(dir, "node-key.pem")}
	good, err := files.Load()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := certs.LoadCA(files.CA, filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pki := &certstest.PKI{Dir: dir, CA: ca, Files: files, TLS: good}
	// the role certificates local made: tailor status gets the admin's,
	// each process its role's
	role := func(name string) (certs.Files, *tls.Config) {
		f := certs.Files{CA: files.CA, Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
		c, err := f.Load()
		if err != nil {
			t.Fatalf("the %s certificate: %v", name, err)
		}
		return f, c
	}
	adminFiles, adminTLS := role("admin")
	workerFiles, workerTLS := role("worker")
	for _, want := range []string{"--tls-ca " + files.CA, "--tls-cert " + adminFiles.Cert, "--tls-key " + adminFiles.Key,
		"--etcd-user tailor", "--etcd-password-file " + filepath.Join(dir, "etcd-password")} {
		if !strings.Contains(statusCmd, want) {
			t.Errorf("the status command %q lacks %q", statusCmd, want)
		}
	}

	// etcd: the user with a certificate of the CA gets in; without the
	// certificate, or without the user, not
	user := cluster.EtcdAuth{TLS: good, Username: "tailor", Password: secrets["etcd-password"]}
	cli, err := cluster.NewAuthClient([]string{etcd}, user)
	if err != nil {
		t.Fatalf("etcd client %v: %v", user, err)
	}
	defer cli.Close()
	for name, a := range map[string]cluster.EtcdAuth{
		"no client certificate": {TLS: pki.NoCert(t), Username: "tailor", Password: secrets["etcd-password"]},
		"another CA's":          {TLS: pki.OtherCA(t), Username: "tailor", Password: secrets["etcd-password"]},
		"no user":               {TLS: good},
	} {
		rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
		c, err := cluster.NewAuthClient([]string{etcd}, a)
		if err == nil {
			_, err = c.Get(rctx, cluster.RunKeys("local").Spec())
			c.Close()
		}
		rcancel()
		if err == nil {
			t.Errorf("etcd with %s: read the run's spec", name)
		}
	}

	// the servers' addresses, from their membership records
	keys := cluster.RunKeys("local")
	var psAddrs [2]string
	var coordAddr string
	for deadline := time.Now().Add(time.Minute); psAddrs[0] == "" || psAddrs[1] == "" || coordAddr == ""; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no addresses of the servers in etcd:\n%s", r.log.String())
		}
		resp, err := cli.Get(ctx, keys.Members(), clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			var m cluster.Member
			if err := json.Unmarshal(kv.Value, &m); err != nil {
				t.Fatal(err)
			}
			switch m.Role {
			case cluster.RoleParamServer:
				if m.Rank >= 0 && m.Rank < 2 {
					psAddrs[m.Rank] = m.Addrs["grpc"]
				}
			case cluster.RoleCoordinator:
				coordAddr = m.Addrs["grpc"]
			}
		}
	}
	var spec wire.Spec
	for deadline := time.Now().Add(time.Minute); len(spec) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no wire spec in etcd")
		}
		if _, err := cluster.GetJSON(ctx, cli, keys.WireSpec(), &spec); err != nil && !errors.Is(err, cluster.ErrNotFound) {
			t.Fatal(err)
		}
	}

	// every member's /metrics (plain HTTP, scraped by Prometheus) shows no
	// secret either: checked with the outputs below
	var scraped strings.Builder
	resp, err := cli.Get(ctx, keys.Members(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		var m cluster.Member
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			t.Fatal(err)
		}
		addr := m.Addrs[job.AddrMetrics]
		if addr == "" {
			continue
		}
		res, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Errorf("metrics of %s/%s: %v", m.Role, m.ID, err)
			continue
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		scraped.Write(b)
	}
	if !strings.Contains(scraped.String(), "tailor_ps_") {
		t.Errorf("no parameter server metrics scraped:\n%.2000s", scraped.String())
	}

	// the rogue workers start now and end within 30 s or so: meanwhile
	// the run trains
	type rogue struct {
		name string
		args []string
		want string // in its output
		out  strings.Builder
		err  chan error
	}
	wrongKey := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(wrongKey, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rogues := []*rogue{
		{name: "wrong gossip key", want: "could not join gossip",
			args: []string{"--tls-ca", files.CA, "--tls-cert", workerFiles.Cert, "--tls-key", workerFiles.Key,
				"--etcd-ca", files.CA, "--etcd-cert", files.Cert, "--etcd-key", files.Key, "--etcd-user", "tailor", "--etcd-password-file", filepath.Join(dir, "etcd-password"), "--gossip-key-file", wrongKey}},
		{name: "no TLS flags", want: "give the etcd CA"},
	}
	for i, rg := range rogues {
		rctx, rcancel := context.WithTimeout(ctx, 90*time.Second)
		defer rcancel()
		cmd := exec.CommandContext(rctx, bin, append([]string{"worker", "--etcd", etcd, "--run", "local", "--id", "rogue" + string(rune('a'+i))}, rg.args...)...)
		cmd.Stdout, cmd.Stderr = &rg.out, &rg.out
		rg.err = make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { rg.err <- cmd.Wait() }()
	}

	// the parameter servers and the coordinator: a client of the CA in a
	// role that may call gets an answer, the others are refused before any
	// handler
	ps, err := wire.NewClient(wire.ClientConfig{RunID: "local", WorkerID: "tester", Addrs: psAddrs[:], Spec: spec, TLS: adminTLS})
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = ps.Status(sctx)
	scancel()
	ps.Close()
	if err != nil {
		t.Fatalf("status of the servers with the admin's certificate: %v", err)
	}
	// certificates of the CA in a role that may not: a worker's reads no
	// counters, a node certificate (no role) nothing, an admin's no weights
	for name, c := range map[string]struct {
		sec    *tls.Config
		method string
	}{
		"worker reading counters":    {workerTLS, wire.MethodStatus},
		"node certificate (no role)": {good, wire.MethodStatus},
		"admin pulling weights":      {adminTLS, wire.MethodPull},
	} {
		conn, err := grpc.NewClient(psAddrs[0], wire.DialOptions(c.sec)...)
		if err != nil {
			t.Fatal(err)
		}
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		if c.method == wire.MethodStatus {
			err = conn.Invoke(cctx, wire.MethodStatus, &wire.StatusRequest{RunID: "local", WorkerID: "intruder"}, new(wire.StatusReply))
		} else {
			var st grpc.ClientStream
			if st, err = wire.NewStream(cctx, conn, wire.MethodPull); err == nil {
				if err = st.SendMsg(&wire.PullRequest{RunID: "local", WorkerID: "intruder"}); err == nil {
					_ = st.CloseSend()
					err = st.RecvMsg(new(wire.Chunk))
				}
			}
		}
		ccancel()
		conn.Close()
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v, want PermissionDenied", name, err)
		} else {
			t.Logf("%s: refused: %v", name, err)
		}
	}
	coord := func(sec *tls.Config) error {
		conn, err := grpc.NewClient(coordAddr, wire.DialOptions(sec)...)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		// another run's id: a client that gets through is refused for it,
		// and cannot take part in this run
		_, err = wire.NewWorkClient(conn).Next(cctx, &wire.WorkRequest{RunID: "another-run", WorkerID: "intruder", Done: -1})
		return err
	}
	if err := coord(workerTLS); status.Code(err) == codes.Unavailable || err == nil || !strings.Contains(err.Error(), wire.ReasonRunID) {
		t.Errorf("the coordinator with a worker's certificate: %v, want refused as %s", err, wire.ReasonRunID)
	}
	if err := coord(adminTLS); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the coordinator with the admin's certificate: %v, want PermissionDenied", err)
	}
	into := make([][]float32, len(spec))
	for i, ts := range spec {
		into[i] = make([]float32, ts.Size)
	}
	for name, sec := range pki.Refused(t) {
		t.Run(name, func(t *testing.T) {
			c, err := wire.NewClient(wire.ClientConfig{RunID: "local", WorkerID: "intruder", Addrs: psAddrs[:], Spec: spec, TLS: sec})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			defer pcancel()
			if v, err := c.Pull(pctx, 0, into); err == nil {
				t.Errorf("pulled the weights of version %d", v)
			} else {
				t.Logf("pull refused: %v", err)
			}
			if err := coord(sec); status.Code(err) != codes.Unavailable {
				t.Errorf("get work: %v, want Unavailable", err)
			} else {
				t.Logf("work refused: %v", err)
			}
		})
	}

	// tailor status: with the flags local printed, it shows the run; with
	// none, it cannot
	args := strings.Fields(strings.TrimSuffix(statusCmd, " --watch 2s"))[1:]
	if o, err := exec.CommandContext(ctx, bin, args...).CombinedOutput(); err != nil || !strings.Contains(string(o), "local") {
		t.Errorf("%s: %v\n%s", statusCmd, err, o)
	}
	o, err := exec.CommandContext(ctx, bin, "status", "--etcd", etcd, "--run", "local").CombinedOutput()
	if err == nil {
		t.Errorf("tailor status without certificates: %s", o)
	}
	combined := string(o)

	for _, rg := range rogues {
		select {
		case err := <-rg.err:
			if err == nil {
				t.Errorf("worker with %s: exit 0, want an error:\n%s", rg.name, rg.out.String())
			}
			if !strings.Contains(rg.out.String(), rg.want) || strings.Contains(rg.out.String(), "run done") {
				t.Errorf("worker with %s: want %q in its output and no run done:\n%s", rg.name, rg.want, rg.out.String())
			}
			t.Logf("worker with %s: %v: %s", rg.name, err, lastLine(rg.out.String()))
		case <-time.After(90 * time.Second):
			t.Fatalf("worker with %s still runs:\n%s", rg.name, rg.out.String())
		}
		combined += rg.out.String()
	}
	if strings.Contains(r.log.String(), "run local finished") {
		t.Errorf("the run ended before the rogue workers gave up: the test proves less than it should")
	}

	log := r.wait("--secure")
	if !strings.Contains(log, "run local finished") {
		t.Errorf("no end of the run in its output:\n%s", log)
	}
	wantEpochs(t, out, 2)
	if n := checkAudit(t, filepath.Join(out, "run"), data, 2); n != 0 {
		t.Errorf("%d rollbacks, want none", n)
	}
	// the rogue worker's registration vanished when it gave up (the
	// leader logs that); it never was a live worker, nor was the intruder
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "worker=intruder") || strings.Contains(line, "worker=rogue") && !strings.Contains(line, "event=gone") {
			t.Errorf("the cluster dealt with a rogue worker: %s", line)
		}
		if strings.Contains(line, "msg=epoch") && !strings.Contains(line, " workers=2 ") {
			t.Errorf("an epoch not with the 2 workers: %s", line)
		}
	}
	combined += log + scraped.String()
	for name, s := range secrets {
		for _, line := range strings.Split(s, "\n") {
			if strings.HasPrefix(line, "-----") || len(line) < 16 {
				continue
			}
			if strings.Contains(combined, line) {
				t.Errorf("the contents of %s show in the output", name)
				break
			}
		}
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}
