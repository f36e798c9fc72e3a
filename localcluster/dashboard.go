package localcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/dashboard"
)

// dashboardTokenFile is the dashboard's bearer token with Secure, in
// Out/certs.
const dashboardTokenFile = "dashboard.token"

// startDashboard serves the run's dashboard on cfg.Dashboard (a free
// loopback port if that one is taken) and prints its URL; with Secure it
// asks for a token made in certDir. The returned func stops it and waits
// for it.
func startDashboard(ctx context.Context, cfg Config, cli *clientv3.Client, run string, child Security, certDir string) (stop func(), err error) {
	dc := dashboard.DefaultConfig()
	dc.Listen, dc.Run, dc.Etcd, dc.Log = cfg.Dashboard, run, cli, cfg.Log
	if dc.WireTLS, err = child.TLS.Load(); err != nil {
		return nil, err
	}
	if cfg.Secure {
		if dc.TokenFile, err = ensureToken(certDir); err != nil {
			return nil, err
		}
	}
	srv, err := dashboard.New(dc)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", dc.Listen)
	if err != nil {
		// another dashboard (another run) has the port: any free one
		cfg.Log.Info("dashboard address taken; using a free port", "listen", dc.Listen, "err", err)
		if lis, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("dashboard listener: %w", err)
		}
	}
	u := dashboard.URL(lis, false)
	if dc.TokenFile != "" {
		fmt.Fprintf(cfg.Stdout, "dashboard: %s (sign in with the token in %s)\n", u, dc.TokenFile)
	} else {
		fmt.Fprintf(cfg.Stdout, "dashboard: %s\n", u)
	}
	dctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(dctx, lis); err != nil && !errors.Is(err, context.Canceled) {
			cfg.Log.Warn("dashboard", "err", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}, nil
}

// ensureToken returns dir's dashboard token file, made (random, 0600) if
// missing.
func ensureToken(dir string) (string, error) {
	path := filepath.Join(dir, dashboardTokenFile)
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) >= 16 {
		return path, nil
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(raw[:])+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("dashboard token: %w", err)
	}
	return path, nil
}
