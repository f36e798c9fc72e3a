// Package identity reads who a peer is from its TLS certificate — the
// roles and the runs the certificate names — and checks it on both ends of
// a connection.
//
// A certificate names its roles and runs with SAN URIs:
//
//	tailor://role/worker          the holder may act as a worker
//	tailor://run/r1               ... of run r1 only
//
// A certificate with no role URI is a node certificate (the kind `tailor
// certs init` made before roles): it is good for every role, and a process
// holding one checks no roles, as before. A process whose own certificate
// names a role checks every peer: its servers accept a call only from the
// roles that may make it (the wire package's table), its clients accept a
// server only in the role they meant to dial, and a peer without a role is
// refused. A certificate with no run URI is good for every run; one with
// run URIs only for those runs.
package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// Role is what a certificate allows its holder to be.
type Role string

// The roles. Admin is the operator's tools (tailor status, submit,
// checkpoints): they read counters, not weights.
const (
	Coordinator Role = "coordinator"
	ParamServer Role = "paramserver"
	Worker      Role = "worker"
	Admin       Role = "admin"
)

// Roles are the known roles.
var Roles = []Role{Coordinator, ParamServer, Worker, Admin}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return slices.Contains(Roles, r) }

// Scheme is the URI scheme of the SANs; the host says what the path is.
const (
	Scheme   = "tailor"
	roleHost = "role"
	runHost  = "run"
)

// URI is the SAN URI naming r: tailor://role/r.
func (r Role) URI() *url.URL { return &url.URL{Scheme: Scheme, Host: roleHost, Path: "/" + string(r)} }

// RunURI is the SAN URI naming run: tailor://run/run.
func RunURI(run string) *url.URL { return &url.URL{Scheme: Scheme, Host: runHost, Path: "/" + run} }

// Identity is what a certificate says of its holder.
type Identity struct {
	Roles []Role
	Runs  []string
}

// URIs are the SAN URIs of id, for a certificate template.
func (id Identity) URIs() []*url.URL {
	var out []*url.URL
	for _, r := range id.Roles {
		out = append(out, r.URI())
	}
	for _, r := range id.Runs {
		out = append(out, RunURI(r))
	}
	return out
}

// Of is the identity cert names. URIs of other schemes are ignored; an
// unknown role is kept (and allows nothing).
func Of(cert *x509.Certificate) Identity {
	var id Identity
	if cert == nil {
		return id
	}
	for _, u := range cert.URIs {
		if u.Scheme != Scheme {
			continue
		}
		name := strings.TrimPrefix(u.Path, "/")
		if name == "" {
			continue
		}
		switch u.Host {
		case roleHost:
			id.Roles = append(id.Roles, Role(name))
		case runHost:
			id.Runs = append(id.Runs, name)
		}
	}
	return id
}

// Named reports whether id names a role: whether its holder checks its
// peers' roles.
func (id Identity) Named() bool { return len(id.Roles) > 0 }

// Is reports whether id names one of roles; a certificate that names no
// role is every role.
func (id Identity) Is(roles ...Role) bool {
	if !id.Named() {
		return true
	}
	for _, r := range id.Roles {
		if slices.Contains(roles, r) {
			return true
		}
	}
	return false
}

// In reports whether id is good for run: it names no run, or run.
func (id Identity) In(run string) bool {
	return len(id.Runs) == 0 || run == "" || slices.Contains(id.Runs, run)
}

// String is the identity as `roles=worker runs=r1` (any: none named).
func (id Identity) String() string {
	roles, runs := "any", "any"
	if len(id.Roles) > 0 {
		s := make([]string, len(id.Roles))
		for i, r := range id.Roles {
			s[i] = string(r)
		}
		roles = strings.Join(s, ",")
	}
	if len(id.Runs) > 0 {
		runs = strings.Join(id.Runs, ",")
	}
	return "roles=" + roles + " runs=" + runs
}

// Errors of Check. Both mean the peer holds a certificate of the cluster's
// CA that does not allow what it tried.
var (
	ErrRole = errors.New("identity: the peer's certificate does not name a role allowed here")
	ErrRun  = errors.New("identity: the peer's certificate is for another run")
)

// Check is the rule both ends apply: a peer whose certificate is peer may
// act in one of roles on run. self is the checking process's own
// identity: if it names no role, nothing is checked. A peer certificate
// without a role is refused by a process that names one.
func Check(self, peer Identity, run string, roles ...Role) error {
	if !self.Named() {
		return nil
	}
	if !peer.Named() {
		return fmt.Errorf("%w: it names none (want %s; issue role certificates: tailor certs init --pairs %s)", ErrRole, joinRoles(roles), joinRoles(Roles))
	}
	if !peer.Is(roles...) {
		return fmt.Errorf("%w: it is %s, want %s", ErrRole, peer, joinRoles(roles))
	}
	if !peer.In(run) {
		return fmt.Errorf("%w: it is %s, want run %s", ErrRun, peer, run)
	}
	return nil
}

func joinRoles(roles []Role) string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, ",")
}

// sources maps the RootCAs pool of each config that re-reads its files
// (certs.Files.Load) to the function giving that config's material now.
// An entry is a pool and a closure, one per config made: a process makes a
// few.
var sources sync.Map // *x509.CertPool → func() *tls.Config

// Reloading registers current as the source of the key pair and CAs of the
// configs whose RootCAs is roots (the pool of a config that re-reads its
// files, and its clones): Current gives current()'s material for them.
func Reloading(roots *x509.CertPool, current func() *tls.Config) {
	sources.Store(roots, current)
}

// Current is c with its key pair and CAs as they are now: for a config
// registered with Reloading (certs.Files.Load's, which re-reads its files
// when they change), or a clone of one that kept its RootCAs, the
// current material, keeping c's VerifyConnection and ServerName (as
// ForPeer sets them); any other config (a clone given other RootCAs
// included) as it is. Clients call it before every handshake; servers get
// the current material from crypto/tls (GetConfigForClient).
func Current(c *tls.Config) *tls.Config {
	if c == nil || c.RootCAs == nil {
		return c
	}
	f, ok := sources.Load(c.RootCAs)
	if !ok {
		return c
	}
	cur := f.(func() *tls.Config)().Clone()
	if c.VerifyConnection != nil {
		cur.VerifyConnection = c.VerifyConnection
	}
	if c.ServerName != "" {
		cur.ServerName = c.ServerName
	}
	return cur
}

// Own is the identity of the certificate c presents now (none without
// one).
func Own(c *tls.Config) Identity {
	c = Current(c)
	if c == nil {
		return Identity{}
	}
	var pair *tls.Certificate
	switch {
	case len(c.Certificates) > 0:
		pair = &c.Certificates[0]
	case c.GetClientCertificate != nil:
		pair, _ = c.GetClientCertificate(&tls.CertificateRequestInfo{})
	}
	if pair == nil || len(pair.Certificate) == 0 {
		return Identity{}
	}
	leaf := pair.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return Identity{}
		}
	}
	return Of(leaf)
}

// Peer is the identity of the leaf certificate of a verified connection.
func Peer(cs tls.ConnectionState) Identity {
	if len(cs.PeerCertificates) == 0 {
		return Identity{}
	}
	return Of(cs.PeerCertificates[0])
}

// ForPeer is c for dialling a server that must act in one of roles on
// run: after crypto/tls has verified the server's certificate, the
// connection is refused unless Check allows it (with c's own identity at
// that moment). Nil stays nil (plaintext).
func ForPeer(c *tls.Config, run string, roles ...Role) *tls.Config {
	if c == nil {
		return nil
	}
	out := c.Clone()
	prev := c.VerifyConnection
	out.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		if err := Check(Own(c), Peer(cs), run, roles...); err != nil {
			if cs.ServerName != "" {
				return fmt.Errorf("server %s: %w", cs.ServerName, err)
			}
			return fmt.Errorf("the server: %w", err)
		}
		return nil
	}
	return out
}

// CheckSelf reports a process that would act as role on run with a
// certificate that does not allow it (nil without TLS or with a node
// certificate): the process should not start, its peers would refuse it.
func CheckSelf(c *tls.Config, run string, role Role) error {
	if c == nil {
		return nil
	}
	id := Own(c)
	if !id.Named() {
		return nil
	}
	if !id.Is(role) {
		return fmt.Errorf("%w: this process's certificate is %s, not %s", ErrRole, id, role)
	}
	if !id.In(run) {
		return fmt.Errorf("%w: this process's certificate is %s, not for run %s", ErrRun, id, run)
	}
	return nil
}
