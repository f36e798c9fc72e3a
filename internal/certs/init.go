package certs

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tailorml/tailor/internal/identity"
)

// File names Init writes in InitConfig.Dir.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
	// NodeName is the pair every role may share: node.pem, node-key.pem.
	NodeName = "node"
)

// CertFile and KeyFile are the file names of the pair named name.
func CertFile(name string) string { return name + ".pem" }
func KeyFile(name string) string  { return name + "-key.pem" }

// ErrExists is returned by Init when a file it would write exists and
// InitConfig.Force is not set.
var ErrExists = errors.New("certs: file exists")

// InitConfig is what Init makes. Start from DefaultInitConfig.
type InitConfig struct {
	// Dir is the directory the files go to; it is created (0700) if
	// missing.
	Dir string
	// Hosts are the DNS names and IP addresses peers dial the processes
	// at; 127.0.0.1, ::1 and localhost are always added.
	Hosts []string
	// Days is how long the CA and the certificates are valid.
	Days int
	// Pairs are the names of the key pairs to make besides the CA, e.g.
	// "node" (shared by every role) or one per role ("coordinator",
	// "paramserver", "worker", "admin"). Each name gives NAME.pem and
	// NAME-key.pem. A pair named as a role (identity.Roles) names that
	// role in its certificate (tailor://role/NAME), and its holder checks
	// its peers' roles; any other name makes a certificate of no role,
	// good for every role.
	Pairs []string
	// Runs, if set, bind the role pairs to these runs (SAN URIs
	// tailor://run/RUN): peers of another run refuse them.
	Runs []string
	// Force overwrites existing files; without it Init writes nothing if
	// any of its files exists.
	Force bool
}

// DefaultInitConfig makes a CA and one "node" pair in dir, valid for a
// year, for the local host only.
func DefaultInitConfig(dir string) InitConfig {
	return InitConfig{Dir: dir, Days: 365, Pairs: []string{NodeName}}
}

// Validate reports a config Init cannot use.
func (c InitConfig) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("certs: no directory")
	case c.Days < 1 || c.Days > 100*365:
		return fmt.Errorf("certs: days %d: want 1..%d", c.Days, 100*365)
	case len(c.Pairs) == 0:
		return errors.New("certs: no key pairs to make")
	}
	seen := map[string]bool{}
	for _, p := range c.Pairs {
		if p == "" || p == "ca" || strings.ContainsAny(p, `/\`) || strings.HasPrefix(p, ".") {
			return fmt.Errorf("certs: pair name %q: want a plain file name other than \"ca\"", p)
		}
		if seen[p] {
			return fmt.Errorf("certs: pair %q named twice", p)
		}
		seen[p] = true
	}
	for _, r := range c.Runs {
		if r == "" || strings.ContainsAny(r, "/?#% ") {
			return fmt.Errorf("certs: run %q: want a run id", r)
		}
	}
	for _, h := range c.Hosts {
		if !validHost(h) {
			return fmt.Errorf("certs: host %q: want a DNS name or an IP address", h)
		}
	}
	return nil
}

// validHost reports whether h is an IP address or a DNS name (wildcards
// allowed).
func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '*' || r == '_') {
			return false
		}
	}
	return true
}

// hosts are the SANs of every pair: c.Hosts and the loopback names.
func (c InitConfig) hosts() []string {
	out := []string{"localhost", "127.0.0.1", "::1"}
	for _, h := range c.Hosts {
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// identity is what pair's certificate names: its role and cfg.Runs if
// pair is a role's name, else nothing (a node certificate).
func (c InitConfig) identity(pair string) identity.Identity {
	if r := identity.Role(pair); r.Valid() {
		return identity.Identity{Roles: []identity.Role{r}, Runs: c.Runs}
	}
	return identity.Identity{}
}

// Init makes a CA (ca.pem, ca-key.pem) and the key pairs cfg names, signed
// by it, in cfg.Dir. Private keys are written 0600, certificates 0644. It
// returns the paths it wrote.
func Init(cfg InitConfig) ([]string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	order := []string{CAFile, CAKeyFile}
	for _, p := range cfg.Pairs {
		order = append(order, CertFile(p), KeyFile(p))
	}
	if !cfg.Force {
		for _, f := range order {
			path := filepath.Join(cfg.Dir, f)
			if _, err := os.Lstat(path); err == nil {
				return nil, fmt.Errorf("%s: %w (use --force to replace)", path, ErrExists)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("certs: %w", err)
			}
		}
	}
	valid := time.Duration(cfg.Days) * 24 * time.Hour
	ca, err := NewCA("tailor development CA", valid)
	if err != nil {
		return nil, err
	}
	files[CAFile] = ca.CertPEM
	if files[CAKeyFile], err = ca.KeyPEM(); err != nil {
		return nil, err
	}
	hosts := cfg.hosts()
	for _, p := range cfg.Pairs {
		c, k, err := ca.IssueFor("tailor "+p, hosts, cfg.identity(p), valid)
		if err != nil {
			return nil, err
		}
		files[CertFile(p)], files[KeyFile(p)] = c, k
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	var written []string
	for _, f := range order {
		path := filepath.Join(cfg.Dir, f)
		mode := fs.FileMode(0o644)
		if strings.HasSuffix(f, "-key.pem") {
			mode = 0o600
		}
		if err := writeFile(path, files[f], mode, cfg.Force); err != nil {
			return written, err
		}
		written = append(written, path)
	}
	return written, nil
}

// writeFile creates path with mode; with replace, an existing file is
// removed first so that the new one gets mode (not the old file's).
func writeFile(path string, data []byte, mode fs.FileMode, replace bool) error {
	if replace {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("certs: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w (use --force to replace)", path, ErrExists)
		}
		return fmt.Errorf("certs: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	return nil
}
