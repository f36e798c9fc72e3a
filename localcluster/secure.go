package localcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/certs"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/identity"
)

// File names of Secure in Out/certs, besides the CA and the node pair of
// certs.Init.
const (
	certsDir         = "certs" // in Out
	gossipKeyName    = "gossip.key"
	etcdPasswordName = "etcd-password"      // etcdUser's
	etcdRootPassName = "etcd-root-password" // etcd's root user's, to administer it
	etcdUser         = "tailor"
)

// etcdFiles are etcd's TLS files: EtcdTLS if given, else TLS when an
// endpoint is https://, else none.
func (s Security) etcdFiles(endpoints []string) certs.Files {
	return certs.EtcdFiles(s.EtcdTLS, s.TLS, endpoints)
}

// etcdClient connects to etcd at endpoints with s's TLS and user.
func (s Security) etcdClient(endpoints []string) (*clientv3.Client, error) {
	a, err := certs.EtcdAuth(endpoints, s.etcdFiles(endpoints), s.EtcdUser, s.EtcdPasswordFile)
	if err != nil {
		return nil, err
	}
	return cluster.NewAuthClient(endpoints, a)
}

// readGossipKey checks that path holds a gossip key: 16, 24 or 32 bytes
// in hex.
func readGossipKey(path string) error {
	if _, err := cluster.ReadKeyFile(path); err != nil {
		return fmt.Errorf("gossip key: %w", err)
	}
	return nil
}

// devRoles are the roles of the role certificates --secure makes.
var devRoles = []identity.Role{identity.Coordinator, identity.ParamServer, identity.Worker, identity.Admin}

// ensureDevCerts returns the CA and node pair in dir (etcd's, server and
// clients), and a role certificate for every role of devRoles (the
// processes' mutual TLS), made with certs.Init unless every pair there is
// signed by the CA, good for 127.0.0.1 and valid for another day.
func ensureDevCerts(log *slog.Logger, dir string) (certs.Files, map[identity.Role]certs.Files, error) {
	pair := func(name string) certs.Files {
		return certs.Files{CA: filepath.Join(dir, certs.CAFile), Cert: filepath.Join(dir, certs.CertFile(name)), Key: filepath.Join(dir, certs.KeyFile(name))}
	}
	f := pair(certs.NodeName)
	roles := map[identity.Role]certs.Files{}
	names := []string{certs.NodeName}
	for _, r := range devRoles {
		roles[r] = pair(string(r))
		names = append(names, string(r))
	}
	good := func(f certs.Files) bool {
		c, err := f.Load()
		if err != nil {
			return false
		}
		leaf := identity.Current(c).Certificates[0].Leaf
		return leaf != nil && leaf.VerifyHostname("127.0.0.1") == nil && time.Until(leaf.NotAfter) > 24*time.Hour
	}
	kept := good(f)
	for _, r := range devRoles {
		kept = kept && good(roles[r])
	}
	if kept {
		log.Info("using existing certificates", "dir", dir)
		return f, roles, nil
	}
	cfg := certs.DefaultInitConfig(dir)
	cfg.Pairs, cfg.Force = names, true
	if _, err := certs.Init(cfg); err != nil {
		return f, nil, fmt.Errorf("secure: %w", err)
	}
	log.Info("made a development CA and certificates", "dir", dir, "pairs", names)
	return f, roles, nil
}

// ensureGossipKey returns dir's gossip key file, written (0600, 32 random
// bytes in hex) unless it holds a valid key.
func ensureGossipKey(dir string) (string, error) {
	path := filepath.Join(dir, gossipKeyName)
	if readGossipKey(path) == nil {
		return path, nil
	}
	if err := writeSecret(path, 32); err != nil {
		return "", err
	}
	return path, nil
}

// writeSecret replaces path (0600) with n random bytes in hex and a
// newline.
func writeSecret(path string, n int) error {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return fmt.Errorf("secure: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("secure: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("secure: %w", err)
	}
	_, err = f.WriteString(hex.EncodeToString(b) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("secure: write %s: %w", path, err)
	}
	return nil
}

// ensureEtcdAuth turns on the auth of the embedded etcd at endpoints (TLS
// with client certificates of f's CA), unless it is on (a resumed run):
// a root user, and a user etcdUser whose role may read and write /tailor/
// only, with random passwords written to dir (0600). It returns the user
// and its password file.
func ensureEtcdAuth(ctx context.Context, endpoints []string, f certs.Files, dir string) (user, pwFile string, err error) {
	user, pwFile = etcdUser, filepath.Join(dir, etcdPasswordName)
	tc, err := f.Load()
	if err != nil {
		return "", "", fmt.Errorf("secure: %w", err)
	}
	admin, err := cluster.NewAuthClient(endpoints, cluster.EtcdAuth{TLS: tc})
	if err != nil {
		return "", "", fmt.Errorf("secure: %w", err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := admin.AuthStatus(ctx)
	if err != nil {
		return "", "", fmt.Errorf("secure: etcd auth status: %w", err)
	}
	if st.Enabled {
		// a resumed run: the users exist, with the password in the file
		if _, err := certs.ReadPassword(pwFile); err != nil {
			return "", "", fmt.Errorf("secure: etcd has auth on but its password is lost (start afresh without --resume): %w", err)
		}
		return user, pwFile, nil
	}
	rootFile := filepath.Join(dir, etcdRootPassName)
	for _, p := range []string{rootFile, pwFile} {
		if err := writeSecret(p, 16); err != nil {
			return "", "", err
		}
	}
	var pw [2]string
	for i, p := range []string{rootFile, pwFile} {
		if pw[i], err = certs.ReadPassword(p); err != nil {
			return "", "", fmt.Errorf("secure: %w", err)
		}
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"add user root", func() error { _, err := admin.UserAdd(ctx, "root", pw[0]); return err }},
		{"grant root the root role", func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err }},
		{"add role " + user, func() error { _, err := admin.RoleAdd(ctx, user); return err }},
		{"grant role " + user + " /tailor/", func() error {
			_, err := admin.RoleGrantPermission(ctx, user, "/tailor/", clientv3.GetPrefixRangeEnd("/tailor/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		}},
		{"add user " + user, func() error { _, err := admin.UserAdd(ctx, user, pw[1]); return err }},
		{"grant " + user + " its role", func() error { _, err := admin.UserGrantRole(ctx, user, user); return err }},
		{"enable auth", func() error { _, err := admin.AuthEnable(ctx); return err }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			// etcd's errors never hold the passwords it was given
			return "", "", fmt.Errorf("secure: etcd auth: %s: %w", s.what, err)
		}
	}
	return user, pwFile, nil
}
