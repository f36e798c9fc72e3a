package localcluster

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/certs"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/identity"
	"github.com/tailorml/tailor/internal/job"
)

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	if c.Spec.Run != "local" || c.Spec.Epochs != 10 || c.Spec.Out != "" || c.Workers != 3 || c.Store != StoreS3 || c.Out != "out/local" {
		t.Errorf("DefaultConfig() = %+v; want run local, 10 epochs, out/local, 3 workers, s3", c)
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string // in the error; "" for none
	}{
		{"default", func(*Config) {}, ""},
		{"no restarts, no window", func(c *Config) { c.RestartLimit, c.RestartWindow = 0, 0 }, ""},
		{"file store", func(c *Config) { c.Store = StoreFile }, ""},
		{"no out", func(c *Config) { c.Out = "" }, "out: want a folder"},
		{"no run", func(c *Config) { c.Spec.Run = "" }, "want a run id"},
		{"no workers", func(c *Config) { c.Workers = 0 }, "workers 0: want at least 1"},
		{"negative restart limit", func(c *Config) { c.RestartLimit = -1 }, "restart limit -1: want 0 or more"},
		{"restarts without a window", func(c *Config) { c.RestartWindow = 0 }, "restart window 0s: want a positive duration"},
		{"a dashboard address without a port", func(c *Config) { c.Dashboard = "127.0.0.1" }, "dashboard address \"127.0.0.1\""},
		{"unknown store", func(c *Config) { c.Store = "gcs" }, `store "gcs": want s3 or file`},
		{"no store", func(c *Config) { c.Store = "" }, `store "": want s3 or file`},
	} {
		cfg := DefaultConfig()
		c.edit(&cfg)
		err := cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: Validate() = %v, want nil", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "localcluster: ")):
			t.Errorf("%s: Validate() = %v, want localcluster: ...%s", c.name, err, c.want)
		}
	}
}

// Run checks its Config before it starts anything.
func TestRunInvalidConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Out, cfg.Workers = t.TempDir(), 0
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "workers") {
		t.Fatalf("Run with no workers: %v", err)
	}
	if ents, _ := os.ReadDir(cfg.Out); len(ents) > 0 {
		t.Errorf("Run of an invalid config made %d files in Out", len(ents))
	}
}

func TestSecurityArgs(t *testing.T) {
	if a := (Security{}).Args(); len(a) != 0 {
		t.Errorf("Args of no settings = %q, want none", a)
	}
	s := Security{TLS: certs.Files{CA: "/c/ca.pem", Cert: "/c/n.pem", Key: "/c/n-key.pem"}, EtcdTLS: certs.Files{CA: "/e/ca.pem"},
		EtcdUser: "tailor", EtcdPasswordFile: "/c/pw"}
	want := "--tls-ca /c/ca.pem --tls-cert /c/n.pem --tls-key /c/n-key.pem --etcd-ca /e/ca.pem --etcd-user tailor --etcd-password-file /c/pw"
	if got := strings.Join(s.Args(), " "); got != want {
		t.Errorf("Args = %s\nwant %s", got, want)
	}
}

func TestConfigAbsolute(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.Spec.Data, c.GossipKeyFile = "ds", "k"
	c.Security = Security{TLS: certs.Files{CA: "ca.pem"}, EtcdPasswordFile: "pw"}
	a := c.absolute()
	for name, c := range map[string][2]string{
		"out":      {a.Out, filepath.Join(wd, "out/local")},
		"spec out": {a.Spec.Out, filepath.Join(wd, "out/local/run")},
		"data":     {a.Spec.Data, filepath.Join(wd, "ds")},
		"gossip":   {a.GossipKeyFile, filepath.Join(wd, "k")},
		"tls ca":   {a.Security.TLS.CA, filepath.Join(wd, "ca.pem")},
		"password": {a.Security.EtcdPasswordFile, filepath.Join(wd, "pw")},
		"tls cert": {a.Security.TLS.Cert, ""},
	} {
		if c[0] != c[1] {
			t.Errorf("%s: %q, want %q", name, c[0], c[1])
		}
	}
	c.Spec.Data, c.Spec.Out = "s3://b/p?endpoint=h:9000", "elsewhere"
	if a := c.absolute(); a.Spec.Data != c.Spec.Data || a.Spec.Out != filepath.Join(wd, "elsewhere") {
		t.Errorf("absolute: data %q, out %q; want the URL as it is and out made absolute", a.Spec.Data, a.Spec.Out)
	}
}

// The processes: the coordinator (and the standby), every parameter
// server and worker, each with the common flags; which may stay down;
// which end the run.
func TestProcesses(t *testing.T) {
	s := job.DefaultSpec("r", "/d")
	s.ParamServers = 2
	common := commonArgs("r", []string{"http://127.0.0.1:1", "http://127.0.0.1:2"}, Security{EtcdUser: "u", EtcdPasswordFile: "/pw"}, "/g.key")
	wantCommon := "--etcd http://127.0.0.1:1,http://127.0.0.1:2 --run r --metrics-listen 127.0.0.1:0 --gossip 127.0.0.1:0 --etcd-user u --etcd-password-file /pw --gossip-key-file /g.key"
	if got := strings.Join(common, " "); got != wantCommon {
		t.Errorf("commonArgs = %s\nwant %s", got, wantCommon)
	}
	if got := strings.Join(commonArgs("r", []string{"e"}, Security{}, ""), " "); got != "--etcd e --run r --metrics-listen 127.0.0.1:0 --gossip 127.0.0.1:0" {
		t.Errorf("commonArgs without security = %s", got)
	}
	c := strings.Join(common, " ")
	listen := " --listen 127.0.0.1:0"
	for _, standby := range []bool{false, true} {
		var got []string
		for _, p := range processes(s, 3, standby, common, nil) {
			opt := ""
			if p.optional {
				opt = " (optional)"
			}
			got = append(got, p.name+": "+strings.Join(p.args, " ")+opt)
		}
		var want []string
		if standby {
			want = []string{"coordinator: coordinator --id coord-a " + c + listen + " (optional)", "standby: coordinator --id coord-b " + c + listen + " (optional)"}
		} else {
			want = []string{"coordinator: coordinator --id coord-a " + c + listen}
		}
		want = append(want, "ps0: paramserver --index 0 "+c+listen, "ps1: paramserver --index 1 "+c+listen,
			"w0: worker --id w0 "+c+" (optional)", "w1: worker --id w1 "+c+" (optional)", "w2: worker --id w2 "+c+" (optional)")
		if !slices.Equal(got, want) {
			t.Errorf("standby %v: processes\n%s\nwant\n%s", standby, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		until := untilDone(standby)
		if !until["coordinator"] || until["standby"] != standby || len(until) != map[bool]int{false: 1, true: 2}[standby] {
			t.Errorf("standby %v: the run ends with %v", standby, until)
		}
	}
}

func TestChildEnv(t *testing.T) {
	has := func(env []string, kv string) bool { return slices.Contains(env, kv) }
	for _, c := range []struct {
		name      string
		embedded  bool
		sec       Security
		keepEnvPw bool // TAILOR_ETCD_PASSWORD is passed on
	}{
		{"embedded", true, Security{EtcdUser: "u"}, false},
		{"external, no user", false, Security{}, false},
		{"external, user and password file", false, Security{EtcdUser: "u", EtcdPasswordFile: "/pw"}, false},
		{"external, user and the password in the environment", false, Security{EtcdUser: "u"}, true},
	} {
		env := childEnv(c.embedded, c.sec)
		for _, kv := range []string{"TAILOR_CONFIG=", "TAILOR_GOSSIP=", "TAILOR_LISTEN=", "TAILOR_METRICS_LISTEN=", "TAILOR_TLS_KEY=", "TAILOR_ETCD_PASSWORD_FILE="} {
			if !has(env, kv) {
				t.Errorf("%s: the processes' environment lacks %s: %q", c.name, kv, env)
			}
		}
		if has(env, "TAILOR_ETCD_PASSWORD=") == c.keepEnvPw {
			t.Errorf("%s: TAILOR_ETCD_PASSWORD passed on %v, want %v", c.name, !c.keepEnvPw, c.keepEnvPw)
		}
	}
}

func TestGossipKey(t *testing.T) {
	dir := t.TempDir()
	path, err := ensureGossipKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := readGossipKey(path); err != nil {
		t.Fatalf("the key made: %v", err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the key file: %v, %v; want mode 0600", st, err)
	}
	key, _ := os.ReadFile(path)
	if again, err := ensureGossipKey(dir); err != nil || again != path {
		t.Fatalf("ensureGossipKey again: %q, %v", again, err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, key) {
		t.Error("a valid key was replaced")
	}
	for _, bad := range []string{"", "zz\n", "0011\n", strings.Repeat("ab", 20) + "\n"} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := readGossipKey(path); err == nil {
			t.Errorf("readGossipKey(%q) = nil, want an error", bad)
		}
		if _, err := ensureGossipKey(dir); err != nil {
			t.Fatal(err)
		}
		if err := readGossipKey(path); err != nil {
			t.Errorf("after a key of %q: %v", bad, err)
		}
	}
	if err := readGossipKey(filepath.Join(dir, "none")); err == nil {
		t.Error("readGossipKey of a missing file = nil")
	}
}

// Secure's certificates, made once and kept while they are good, and the
// embedded etcd's auth: a user that may read and write /tailor/ only, its
// password in a 0600 file, kept on a second start (a resumed run), an
// error when the file is lost.
func TestSecureEtcd(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	f, roles, err := ensureDevCerts(log, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Load(); err != nil {
		t.Fatalf("the certificates made: %v", err)
	}
	if len(roles) != len(devRoles) {
		t.Errorf("%d role certificates, want %d", len(roles), len(devRoles))
	}
	for r, rf := range roles {
		c, err := rf.Load()
		if err != nil {
			t.Fatalf("the certificate of %s: %v", r, err)
		}
		if id := identity.Own(c); len(id.Roles) != 1 || id.Roles[0] != r || len(id.Runs) != 0 {
			t.Errorf("the certificate of %s is %s", r, id)
		}
	}
	if _, _, err := ensureDevCerts(log, dir); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "made a development CA") || !strings.Contains(logs.String(), "using existing certificates") {
		t.Errorf("certificates not made once, then kept:\n%s", logs.String())
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := cluster.StartEtcd(ctx, cluster.EtcdConfig{FastTicks: true, UnsafeNoFsync: true, LogLevel: "fatal",
		ClientTLS: cluster.TLSFiles{CA: f.CA, Cert: f.Cert, Key: f.Key}, ClientCertAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	user, pwFile, err := ensureEtcdAuth(ctx, e.Endpoints(), f, dir)
	if err != nil {
		t.Fatal(err)
	}
	if user != etcdUser || pwFile != filepath.Join(dir, etcdPasswordName) {
		t.Errorf("ensureEtcdAuth = %q, %q", user, pwFile)
	}
	for _, name := range []string{etcdPasswordName, etcdRootPassName} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", name, st, err)
		}
	}
	sec := Security{EtcdTLS: f, EtcdUser: user, EtcdPasswordFile: pwFile}
	cli, err := sec.etcdClient(e.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/tailor/x", "1"); err != nil {
		t.Errorf("the user writes /tailor/: %v", err)
	}
	if _, err := cli.Put(ctx, "/other", "1"); err == nil {
		t.Error("the user writes outside /tailor/")
	}
	if c, err := (Security{EtcdTLS: f}).etcdClient(e.Endpoints()); err == nil {
		_, err = c.Get(ctx, "/tailor/x")
		c.Close()
		if err == nil {
			t.Error("etcd answers a client with a certificate but no user")
		}
	}

	// a resumed run: auth is on, the password file is used as it is
	pw, _ := os.ReadFile(pwFile)
	if _, again, err := ensureEtcdAuth(ctx, e.Endpoints(), f, dir); err != nil || again != pwFile {
		t.Fatalf("ensureEtcdAuth of a resumed run: %q, %v", again, err)
	}
	if b, _ := os.ReadFile(pwFile); !bytes.Equal(b, pw) {
		t.Error("the password of a resumed run changed")
	}
	if err := os.Remove(pwFile); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ensureEtcdAuth(ctx, e.Endpoints(), f, dir); err == nil || !strings.Contains(err.Error(), "password is lost") {
		t.Errorf("ensureEtcdAuth without the password file: %v", err)
	}
	if strings.Contains(logs.String(), strings.TrimSpace(string(pw))) {
		t.Error("the logs show the password")
	}
}

// The etcd client's settings that cannot work are refused before it
// dials.
func TestEtcdClientSettings(t *testing.T) {
	t.Setenv("TAILOR_ETCD_PASSWORD", "")
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		sec  Security
		want string
	}{
		{"a client pair without a CA", Security{EtcdTLS: certs.Files{Cert: "c.pem", Key: "k.pem"}}, "need --etcd-ca"},
		{"a user without a password", Security{EtcdUser: "u"}, "needs --etcd-password-file"},
		{"a password without a user", Security{EtcdPasswordFile: pw}, "no --etcd-user"},
		{"an empty password file", Security{EtcdUser: "u", EtcdPasswordFile: empty}, "is empty"},
	} {
		_, err := c.sec.etcdClient([]string{"http://127.0.0.1:1"})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error shows the password: %v", c.name, err)
		}
	}
	// https:// endpoints use the roles' TLS when etcd's is not given
	s := Security{TLS: certs.Files{CA: "ca.pem"}}
	if got := s.etcdFiles([]string{"https://h:2379"}); got != s.TLS {
		t.Errorf("etcdFiles of https:// = %v, want the roles' TLS", got)
	}
	if got := s.etcdFiles([]string{"http://h:2379"}); got.Enabled() {
		t.Errorf("etcdFiles of http:// = %v, want none", got)
	}
}
