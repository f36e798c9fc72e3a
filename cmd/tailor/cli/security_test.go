package cli

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/tailorml/tailor/internal/certs"
	"github.com/tailorml/tailor/internal/certs/certstest"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/identity"
	"github.com/tailorml/tailor/internal/wire"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := RunContext(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCertsInitCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	code, out, errs := runCLI(t, "certs", "init", "--dir", dir, "--hosts", "ps0,10.0.0.7", "--pairs", "node,worker")
	if code != 0 {
		t.Fatalf("certs init: exit %d, stderr %q", code, errs)
	}
	for _, f := range []string{"ca.pem", "ca-key.pem", "node.pem", "node-key.pem", "worker.pem", "worker-key.pem"} {
		if !strings.Contains(out, filepath.Join(dir, f)) {
			t.Errorf("output %q does not list %s", out, f)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "node-key.pem")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("node-key.pem: %v, %v; want mode 0600", st, err)
	}
	if code, _, errs := runCLI(t, "certs", "init", "--dir", dir); code != 1 || !strings.Contains(errs, "exists") || !strings.Contains(errs, "--force") {
		t.Errorf("certs init over existing files: exit %d, stderr %q; want 1 and a --force hint", code, errs)
	}
	if code, _, errs := runCLI(t, "certs", "init", "--dir", dir, "--force"); code != 0 {
		t.Errorf("certs init --force: exit %d, stderr %q", code, errs)
	}
	for _, args := range [][]string{{"certs"}, {"certs", "init"}, {"certs", "make", "--dir", dir}, {"certs", "init", "--dir", dir, "--days", "0", "--force"}} {
		if code, _, _ := runCLI(t, args...); code == 0 {
			t.Errorf("%q: exit 0, want an error", args)
		}
	}
}

// No secret — the etcd password from a file or the environment, a private
// key's bytes — shows in what a failing command prints (its error and its
// log, both on stderr), and the right settings get through TLS and auth.
func TestSecretsNotShown(t *testing.T) {
	pki := certstest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := cluster.StartEtcd(ctx, cluster.EtcdConfig{FastTicks: true, UnsafeNoFsync: true, LogLevel: "fatal",
		ClientTLS: cluster.TLSFiles{CA: pki.Files.CA, Cert: pki.Files.Cert, Key: pki.Files.Key}, ClientCertAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	const password = "etcd-pw-SEKRIT-41"
	admin, err := cluster.NewAuthClient(e.Endpoints(), cluster.EtcdAuth{TLS: pki.TLS})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", password); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	admin.Close()
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const wrong = "wrong-pw-SEKRIT-99"
	const keyMarker = "KEYBYTES-SEKRIT"
	wrongFile, rightFile := write("wrong", wrong+"\n"), write("right", password+"\n")
	badKey := write("bad-key.pem", "-----BEGIN PRIVATE KEY-----\n"+keyMarker+"\n-----END PRIVATE KEY-----\n")
	base := []string{"status", "--etcd", e.Endpoints()[0], "--run", "r1", "--timeout", "3s",
		"--tls-ca", pki.Files.CA, "--tls-cert", pki.Files.Cert, "--tls-key", pki.Files.Key, "--etcd-user", "root"}
	tests := []struct {
		name string
		env  string // TAILOR_ETCD_PASSWORD
		args []string
		want string
	}{
		{"password file", "", []string{"--etcd-password-file", wrongFile}, "authentication failed"},
		{"password from the environment", wrong, nil, "authentication failed"},
		{"no password", "", nil, "needs --etcd-password-file"},
		{"bad key file", "", []string{"--etcd-password-file", rightFile, "--tls-key", badKey}, "key pair"},
		{"right password", "", []string{"--etcd-password-file", rightFile}, `run "r1": not submitted`},
		{"right password from the environment", password, nil, `run "r1": not submitted`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("TAILOR_ETCD_PASSWORD", tt.env)
			code, out, errs := runCLI(t, append(append([]string(nil), base...), tt.args...)...)
			if code != 1 || !strings.Contains(errs, tt.want) {
				t.Errorf("exit %d, stderr %q; want 1 and %q", code, errs, tt.want)
			}
			for _, s := range []string{password, wrong, keyMarker} {
				if strings.Contains(out+errs, s) {
					t.Errorf("output shows a secret: %q %q", out, errs)
				}
			}
		})
	}
	code, out, errs := runCLI(t, "status", "--help")
	if code != 0 || !strings.Contains(out, "--etcd-password-file") || strings.Contains(out+errs, "password string") {
		t.Errorf("status --help: exit %d, %q; want the password file flag and no password flag", code, out)
	}
}

// tailor certs init --pairs ROLES --run R makes role certificates bound to
// R, and a role refuses to start with a certificate of another role or
// run, before it reaches etcd.
func TestRoleCertificatesCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if code, _, errs := runCLI(t, "certs", "init", "--dir", dir, "--pairs", "paramserver,worker", "--run", "r1"); code != 0 {
		t.Fatalf("certs init: exit %d, stderr %q", code, errs)
	}
	tls := func(pair string) []string {
		return []string{"--tls-ca", filepath.Join(dir, "ca.pem"), "--tls-cert", filepath.Join(dir, pair+".pem"), "--tls-key", filepath.Join(dir, pair+"-key.pem")}
	}
	// no etcd listens there: the check must come first
	tests := []struct {
		name, pair, run, want string
	}{
		{"a parameter server's certificate", "paramserver", "r1", "roles=paramserver runs=r1, not worker"},
		{"a worker's certificate of another run", "worker", "r2", "roles=worker runs=r1, not for run r2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"worker", "--etcd", "http://127.0.0.1:1", "--run", tt.run, "--id", "w1"}, tls(tt.pair)...)
			code, _, errs := runCLI(t, args...)
			if code == 0 || !strings.Contains(errs, tt.want) {
				t.Fatalf("worker with %s: exit %d, stderr %q; want an error with %q", tt.pair, code, errs, tt.want)
			}
		})
	}
}

// A running `tailor paramserver` presents a new certificate once its
// files change, without a restart: new connections see the new pair, and
// a pair of another role put in its place is refused by a client that
// dials a parameter server. It logs each reload.
func TestParamServerReloadsCertificate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if code, _, errs := runCLI(t, "certs", "init", "--dir", dir, "--pairs", "paramserver,admin", "--run", "r1"); code != 0 {
		t.Fatalf("certs init: exit %d, stderr %q", code, errs)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- RunContext(ctx, []string{"paramserver", "--run", "r1", "--workers", "w0", "--labels", "2", "--size", "32", "--listen", addr,
			"--tls-ca", filepath.Join(dir, "ca.pem"), "--tls-cert", filepath.Join(dir, "paramserver.pem"), "--tls-key", filepath.Join(dir, "paramserver-key.pem")}, &out, &errb)
	}()

	admin, err := certs.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "admin.pem"), Key: filepath.Join(dir, "admin-key.pem")}.Load()
	if err != nil {
		t.Fatal(err)
	}
	// serial is the serial number of the certificate the server presents
	// to a new connection, or the error of the call
	serial := func() (string, error) {
		conn, err := grpc.NewClient(addr, wire.DialOptions(identity.ForPeer(admin, "r1", identity.ParamServer))...)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		var p peer.Peer
		if err := conn.Invoke(cctx, wire.MethodStatus, &wire.StatusRequest{RunID: "r1", WorkerID: "tester"}, new(wire.StatusReply), grpc.Peer(&p)); err != nil {
			return "", err
		}
		return p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0].SerialNumber.String(), nil
	}
	var first string
	for deadline := time.Now().Add(30 * time.Second); first == ""; time.Sleep(100 * time.Millisecond) {
		if first, err = serial(); err != nil && time.Now().After(deadline) {
			cancel()
			<-done // the server's log is complete
			t.Fatalf("the parameter server does not answer: %v\nstderr:\n%s", err, errb.String())
		}
	}

	ca, err := certs.LoadCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	replace := func(role identity.Role) {
		t.Helper()
		c, k, err := ca.IssueFor("tailor next", []string{"127.0.0.1"}, identity.Identity{Roles: []identity.Role{role}, Runs: []string{"r1"}}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for name, b := range map[string][]byte{"paramserver-key.pem": k, "paramserver.pem": c} {
			tmp := filepath.Join(dir, name+".new")
			if err := os.WriteFile(tmp, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	replace(identity.ParamServer)
	for deadline := time.Now().Add(10 * certs.ReloadCheck); ; time.Sleep(100 * time.Millisecond) {
		got, err := serial()
		if err != nil {
			t.Fatalf("after the rotation: %v", err)
		}
		if got != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new connections still get the first certificate")
		}
	}
	replace(identity.Worker)
	for deadline := time.Now().Add(10 * certs.ReloadCheck); ; time.Sleep(100 * time.Millisecond) {
		_, err := serial()
		if err != nil && strings.Contains(err.Error(), "roles=worker") {
			t.Logf("refused: %v", err)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a parameter server with a worker's certificate: %v, want refused", err)
		}
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("tailor paramserver: exit %d\nstderr:\n%s", code, errb.String())
	}
	if n := strings.Count(errb.String(), "tls files reloaded"); n < 2 {
		t.Errorf("%d reloads logged, want 2:\n%s", n, errb.String())
	}
}
