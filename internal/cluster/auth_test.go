package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/certs/certstest"
	"github.com/tailorml/tailor/internal/cluster"
)

// startSecureEtcd starts an embedded etcd serving clients over TLS with
// client certificate auth, and turns etcd's auth on with a root user and a
// "tailor" user whose role may read and write /tailor/.
func startSecureEtcd(t *testing.T, pki *certstest.PKI, rootPW, tailorPW string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := cluster.StartEtcd(ctx, cluster.EtcdConfig{Dir: t.TempDir(), FastTicks: true, UnsafeNoFsync: true, LogLevel: "fatal",
		ClientTLS: cluster.TLSFiles{CA: pki.Files.CA, Cert: pki.Files.Cert, Key: pki.Files.Key}, ClientCertAuth: true})
	if err != nil {
		t.Fatalf("StartEtcd with TLS: %v", err)
	}
	t.Cleanup(e.Close)
	eps := e.Endpoints()
	if !strings.HasPrefix(eps[0], "https://") {
		t.Fatalf("endpoint %s, want https://", eps[0])
	}
	// before auth is on, the CA's certificate is all it takes
	admin, err := cluster.NewAuthClient(eps, cluster.EtcdAuth{TLS: pki.TLS})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	steps := []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", rootPW); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "tailor"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "tailor", "/tailor/", clientv3.GetPrefixRangeEnd("/tailor/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := admin.UserAdd(ctx, "tailor", tailorPW); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "tailor", "tailor"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	}
	for i, s := range steps {
		if err := s(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}
	return eps
}

// etcd with TLS and auth: the tailor user with the CA and a certificate of
// it reads and writes the run keys; a wrong password, no CA, a client
// certificate of another CA, no user, or a plaintext endpoint fail with an
// error that says why and never holds the password.
func TestEtcdTLSAndAuth(t *testing.T) {
	pki := certstest.New(t)
	const rootPW, tailorPW = "root-pw-0f9e8d", "tailor-pw-7c6b5a"
	eps := startSecureEtcd(t, pki, rootPW, tailorPW)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key := cluster.RunKeys("r1").Prefix() + "probe"

	good := cluster.EtcdAuth{TLS: pki.TLS, Username: "tailor", Password: tailorPW}
	cli, err := cluster.NewAuthClient(eps, good)
	if err != nil {
		t.Fatalf("NewAuthClient(%v): %v", good, err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, key, "v"); err != nil {
		t.Fatalf("put with the tailor user: %v", err)
	}
	if r, err := cli.Get(ctx, key); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("get with the tailor user: %v, %v", r, err)
	}
	if _, err := cli.Put(ctx, "/elsewhere", "v"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("put outside /tailor/ = %v, want permission denied", err)
	}

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	tests := []struct {
		name string
		eps  []string
		auth cluster.EtcdAuth
		want string // in the error of connecting or of the first request
	}{
		{"wrong password", eps, cluster.EtcdAuth{TLS: pki.TLS, Username: "tailor", Password: "not-" + tailorPW}, "authentication failed"},
		{"unknown user", eps, cluster.EtcdAuth{TLS: pki.TLS, Username: "mallory", Password: tailorPW}, "authentication failed"},
		{"no user", eps, cluster.EtcdAuth{TLS: pki.TLS}, "permission denied"},
		{"no CA", eps, cluster.EtcdAuth{Username: "tailor", Password: tailorPW}, "give the etcd CA"},
		{"server of another CA", eps, cluster.EtcdAuth{TLS: pki.WrongServer(t), Username: "tailor", Password: tailorPW}, "certificate signed by unknown authority"},
		{"client cert of another CA", eps, cluster.EtcdAuth{TLS: pki.OtherCA(t), Username: "tailor", Password: tailorPW}, "refused this client's certificate"},
		{"no client cert", eps, cluster.EtcdAuth{TLS: pki.NoCert(t), Username: "tailor", Password: tailorPW}, "refused this client's certificate"},
		{"plaintext endpoint", []string{strings.Replace(eps[0], "https://", "http://", 1)}, good, "use https://"},
		{"password without user", eps, cluster.EtcdAuth{TLS: pki.TLS, Password: tailorPW}, "both a user name and a password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			c, err := cluster.NewAuthClient(tt.eps, tt.auth)
			if err == nil {
				defer c.Close()
				_, err = c.Put(rctx, key, "x")
			}
			if err == nil {
				t.Fatal("the client wrote to etcd")
			}
			if tt.want != "" && !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want %q in it", err, tt.want)
			}
			log.Error("etcd refused", "err", err, "auth", tt.auth)
			t.Logf("refused: %v", err)
		})
	}
	for _, pw := range []string{tailorPW, rootPW} {
		if strings.Contains(logs.String(), pw) {
			t.Errorf("a password is in the log:\n%s", logs.String())
		}
	}
	if r, err := cli.Get(ctx, key); err != nil || string(r.Kvs[0].Value) != "v" {
		t.Errorf("the refused clients changed %s: %v, %v", key, r, err)
	}
}

func TestEtcdAuthNeverShowsThePassword(t *testing.T) {
	a := cluster.EtcdAuth{Username: "tailor", Password: "hunter2-secret"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "auth", a)
	for _, s := range []string{a.String(), a.GoString(), buf.String(), strings.Join([]string{
		// fmt's verbs all go through String or GoString
		sprintf("%v", a), sprintf("%+v", a), sprintf("%#v", a), sprintf("%s", a), sprintf("%v", &a)}, " ")} {
		if strings.Contains(s, a.Password) {
			t.Errorf("shows the password: %s", s)
		}
		if !strings.Contains(s, "tailor") {
			t.Errorf("does not name the user: %s", s)
		}
	}
}

func sprintf(format string, a ...any) string { return fmt.Sprintf(format, a...) }
