package e2e

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailorml/tailor/coordinator"
	"github.com/tailorml/tailor/internal/cluster"
)

// etcd is out of reach for 10 s in the middle of a sync run: every process
// retries, nobody exits, and the run completes with every record consumed
// exactly once per epoch.
//
//   - restart: the etcd member is stopped, then started again on the same
//     data and ports (its machine rebooted). etcd extends every lease by
//     its TTL when it starts, so the members keep theirs.
//   - partition: etcd runs on, but no process reaches it (a proxy in front
//     of it drops every connection and refuses new ones). Every lease
//     expires: every member registers anew, and the leader rolls back to
//     the last checkpoint.
func TestEtcdOutage(t *testing.T) {
	for _, mode := range []string{"restart", "partition"} {
		t.Run(mode, func(t *testing.T) { etcdOutage(t, mode) })
	}
}

func etcdOutage(t *testing.T, mode string) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := cluster.EtcdConfig{Dir: filepath.Join(t.TempDir(), "etcd"), FastTicks: true, LogLevel: "fatal"}
	e, err := cluster.StartEtcd(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			e.Close()
		}
	}()
	cfg = e.Config() // the same ports after a restart
	endpoint := e.Endpoints()[0]
	var proxy *tcpProxy
	if mode == "partition" {
		if proxy, err = startProxy(strings.TrimPrefix(endpoint, "http://")); err != nil {
			t.Fatal(err)
		}
		defer proxy.close()
		endpoint = "http://" + proxy.addr
	}
	r := startLocal(t, ctx, bin, nil, "--out", out, "--data", data, "--workers", "2", "--ps", "2",
		"--etcd", endpoint,
		"--epochs", "3", "--batch", "8", "--unit-size", "32", "--checkpoint-every", "4", "--audit")
	r.waitFor(regexp.MustCompile(`msg=checkpoint .*reason=steps step=1[6-9] `), 2*time.Minute)
	down := time.Now()
	if mode == "restart" {
		e.Close()
		closed = true
	} else {
		proxy.cut()
	}
	t.Logf("etcd out of reach at %s", down.Format("15:04:05.000"))
	time.Sleep(10 * time.Second)
	if mode == "restart" {
		if e, err = cluster.StartEtcd(ctx, cfg); err != nil {
			r.cmd.Process.Kill()
			t.Fatalf("restarting etcd: %v", err)
		}
		closed = false
	} else if err := proxy.resume(); err != nil {
		r.cmd.Process.Kill()
		t.Fatalf("proxy: %v", err)
	}
	t.Logf("etcd back after %v", time.Since(down).Round(time.Millisecond))
	text := r.wait("after an etcd outage")
	if strings.Contains(text, "| exited:") {
		t.Errorf("a process exited during the outage:\n%s", grepLines(text, "| exited:"))
	}
	if mode == "restart" && strings.Contains(text, `msg="parameter server lost"`) {
		// the members kept their leases: the only rollback is the
		// leader's, whose election session ran out while etcd was away
		t.Errorf("a parameter server was taken for lost:\n%s", grepLines(text, "parameter server lost"))
	}
	wantEpochs(t, out, 3)
	// the run's event log (what the dashboard shows) has the outage
	cli, err := cluster.NewClient(e.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var evlog coordinator.EventLog
	if _, err := cluster.GetJSON(ctx, cli, cluster.RunKeys("local").Events(), &evlog); err != nil {
		t.Fatalf("the run's event log: %v", err)
	}
	var outage, again []string
	for _, ev := range evlog.Events {
		switch {
		case ev.Kind == coordinator.EventEtcdOutage || ev.Kind == coordinator.EventTermLost || ev.Kind == coordinator.EventLeaseLost:
			outage = append(outage, ev.Kind+": "+ev.Detail)
		case ev.Kind == coordinator.EventElected && strings.Contains(ev.Detail, "leads again"):
			again = append(again, ev.Detail)
		}
	}
	if len(outage) == 0 || len(again) == 0 {
		t.Errorf("the event log has %d outage events and %d elections again, want both: %+v", len(outage), len(again), evlog.Events)
	}
	t.Logf("the event log of the outage: %s", strings.Join(outage, "; "))
	n := checkAudit(t, filepath.Join(out, "run"), data, 3)
	t.Logf("%d rollbacks; what the processes said of it:\n%s", n, grepLines(text, "level=WARN", "level=ERROR", "msg=resumed", "registered again", "lease kept"))
}

// grepLines returns the lines of text that contain any of subs.
func grepLines(text string, subs ...string) string {
	var b strings.Builder
	for _, l := range strings.Split(text, "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				b.WriteString(l + "\n")
				break
			}
		}
	}
	return b.String()
}

// tcpProxy forwards connections on 127.0.0.1 to a target; cut drops every
// connection and refuses new ones (the port is closed) until resume.
type tcpProxy struct {
	addr, target string
	mu           sync.Mutex
	lis          net.Listener
	conns        map[net.Conn]bool
	wg           sync.WaitGroup
}

func startProxy(target string) (*tcpProxy, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &tcpProxy{addr: lis.Addr().String(), target: target, conns: map[net.Conn]bool{}}
	p.serve(lis)
	return p, nil
}

func (p *tcpProxy) serve(lis net.Listener) {
	p.lis = lis
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			if !p.track(c, u) {
				return
			}
			for _, pair := range [][2]net.Conn{{c, u}, {u, c}} {
				p.wg.Add(1)
				go func(dst, src net.Conn) {
					defer p.wg.Done()
					io.Copy(dst, src)
					dst.Close()
					src.Close()
				}(pair[0], pair[1])
			}
		}
	}()
}

// track registers a forwarded pair, or closes it if the proxy is cut.
func (p *tcpProxy) track(c, u net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lis == nil {
		c.Close()
		u.Close()
		return false
	}
	p.conns[c], p.conns[u] = true, true
	return true
}

func (p *tcpProxy) cut() {
	p.mu.Lock()
	lis := p.lis
	p.lis = nil
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
	p.mu.Unlock()
	if lis != nil {
		lis.Close()
	}
	p.wg.Wait()
}

func (p *tcpProxy) resume() error {
	lis, err := net.Listen("tcp", p.addr)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.serve(lis)
	return nil
}

func (p *tcpProxy) close() { p.cut() }
