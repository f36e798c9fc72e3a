package job

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/fault"
	"github.com/tailorml/tailor/internal/identity"
	"github.com/tailorml/tailor/internal/version"
	"github.com/tailorml/tailor/internal/wire"
)

// AddrMetrics is the Addrs key of a member's Prometheus endpoint.
const AddrMetrics = "metrics"

// advertised replaces the host of a listen address by host.
func advertised(addr, host string) (string, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("advertise: address %q: %w", addr, err)
	}
	return net.JoinHostPort(host, port), nil
}

// Session is a process's membership of a run: its etcd client, the run's
// spec, its live view of the members and its /metrics endpoint.
type Session struct {
	Spec    Spec
	Keys    cluster.Keys
	Client  *clientv3.Client
	Members *cluster.Membership

	mu      sync.Mutex
	metrics http.Handler
	ready   bool // joined the run's membership and not left it: /readyz
	srv     *http.Server
}

// Health endpoints on the /metrics listener, for probes (a Kubernetes
// pod's, a load balancer's): /healthz answers 200 as soon as the listener
// is open, also while the process waits for the run's spec; /readyz
// answers 200 once the process has joined the run's membership and 503
// before and after (Close).
const (
	PathLive  = "/healthz"
	PathReady = "/readyz"
)

func (s *Session) setReady(ready bool) {
	s.mu.Lock()
	s.ready = ready
	s.mu.Unlock()
}

// healthMux serves /metrics (once ServeMetrics has set it), /healthz and
// /readyz.
func (s *Session) healthMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		h := s.metrics
		s.mu.Unlock()
		if h == nil {
			http.Error(w, "metrics not ready", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	})
	mux.HandleFunc(PathLive, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc(PathReady, func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		ready := s.ready
		s.mu.Unlock()
		if !ready {
			http.Error(w, "not a member of the run", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

// Join connects to etcd, opens the /metrics listener (its address goes
// into the member record; it serves PathLive from then on), waits for the
// run's spec and joins the membership (PathReady answers 200 from then
// on), its record saying which tailor it runs (version.Member:
// the version and the wire protocol, in Extra). self is the member's
// Role, ID, Rank and any addresses already bound. Close undoes it all.
func Join(ctx context.Context, cfg Node, self cluster.Member) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("joining a run: %w", err)
	}
	// a certificate of another role or run would be refused by every
	// peer: say so now
	if err := identity.CheckSelf(cfg.TLS, cfg.Run, identity.Role(self.Role)); err != nil {
		return nil, fmt.Errorf("joining run %s as %s: %w", cfg.Run, self.Role, err)
	}
	log := cfg.Logger()
	cli, err := cluster.NewAuthClient(cfg.Etcd, cfg.EtcdAuth)
	if err != nil {
		return nil, err
	}
	s := &Session{Keys: cluster.RunKeys(cfg.Run), Client: cli}
	// the /metrics listener opens first: its /healthz answers while the
	// process waits for the run's spec
	var metricsAddr string
	if cfg.MetricsAddr != "" {
		lis, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			cli.Close()
			return nil, fmt.Errorf("metrics listener: %w", err)
		}
		s.srv = &http.Server{Handler: s.healthMux(), ReadHeaderTimeout: 5 * time.Second}
		go s.srv.Serve(lis)
		metricsAddr = lis.Addr().String()
	}
	if s.Spec, err = Wait(ctx, cli, cfg.Run); err != nil {
		if s.srv != nil {
			s.srv.Close()
		}
		cli.Close()
		return nil, err
	}
	bound := self.Addrs
	self.Addrs = map[string]string{}
	for k, v := range bound {
		self.Addrs[k] = v
	}
	// which tailor and wire protocol this member runs, for its peers and
	// tailor status
	extra := self.Extra
	self.Extra = map[string]string{}
	for k, v := range extra {
		self.Extra[k] = v
	}
	for k, v := range version.Member() {
		self.Extra[k] = v
	}
	if metricsAddr != "" {
		self.Addrs[AddrMetrics] = metricsAddr
	}
	gossipAdvertise := ""
	if cfg.Advertise != "" {
		fail := func(err error) (*Session, error) {
			if s.srv != nil {
				s.srv.Close()
			}
			cli.Close()
			return nil, err
		}
		for k, v := range self.Addrs {
			if self.Addrs[k], err = advertised(v, cfg.Advertise); err != nil {
				return fail(err)
			}
		}
		bind := cfg.GossipBind
		if _, port, err := net.SplitHostPort(bind); err != nil || port == "0" || port == "" {
			return fail(fmt.Errorf("advertise %s: the gossip bind address %q needs a fixed port", cfg.Advertise, bind))
		}
		if gossipAdvertise, err = advertised(bind, cfg.Advertise); err != nil {
			return fail(err)
		}
	}
	jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s.Members, err = cluster.Join(jctx, cluster.MembershipConfig{Client: cli, Keys: s.Keys, Self: self, GossipBind: cfg.GossipBind,
		GossipAdvertise: gossipAdvertise, SecretKey: cfg.SecretKey, KeyFile: cfg.GossipKeyFile, FastFailure: true, Log: log, Gossip: dilatedGossip()})
	if err != nil {
		if s.srv != nil {
			s.srv.Close()
		}
		cli.Close()
		return nil, fmt.Errorf("join run %s: %w", cfg.Run, err)
	}
	s.setReady(true)
	go watchWire(s.Members, log)
	return s, nil
}

// watchWire logs an error for every member that speaks another wire
// protocol than this process (its record's version.ExtraWire), once per
// member and version, until the membership is left: the two refuse each
// other's calls (wire.ServerOptions), and this line says so before the
// first refusal does.
func watchWire(m *cluster.Membership, log *slog.Logger) {
	events, _ := m.Subscribe() // closed by Leave
	ours := strconv.Itoa(wire.ProtocolVersion)
	warned := map[string]string{} // role/id → the version warned about
	check := func(mem cluster.Member) {
		theirs := mem.Extra[version.ExtraWire]
		key := string(mem.Role) + "/" + mem.ID
		if w, ok := warned[key]; theirs == ours || ok && w == theirs {
			return
		}
		warned[key] = theirs
		if theirs == "" {
			theirs = "none (a tailor from before protocol versions)"
		}
		log.Error("a member speaks another wire protocol: the two refuse each other's calls; run one tailor version",
			"member", key, "its_wire_protocol", theirs, "its_version", mem.Extra[version.ExtraVersion],
			"wire_protocol", ours, "version", version.Get().String())
	}
	for _, mem := range m.Members("") {
		check(mem)
	}
	for ev := range events {
		if ev.Kind == cluster.EventJoined || ev.Kind == cluster.EventUpdated {
			check(ev.Member)
		}
	}
}

// ServeMetrics sets what /metrics serves (the role's Prometheus registry,
// which may exist only after joining).
func (s *Session) ServeMetrics(h http.Handler) {
	s.mu.Lock()
	s.metrics = h
	s.mu.Unlock()
}

// Close leaves the membership (gracefully, bounded in time) and releases
// the session's resources.
func (s *Session) Close(ctx context.Context) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	s.setReady(false)
	_ = s.Members.Leave(lctx)
	if s.srv != nil {
		s.srv.Close()
	}
	s.Client.Close()
}

// dilatedGossip is the fault gossip.probe: gossip's probe timeout, and its
// interval 4/3 of it, for a run whose time the network lab dilates (nil
// when the fault is unset).
func dilatedGossip() func(*memberlist.Config) {
	d := fault.Duration("gossip.probe")
	if d <= 0 {
		return nil
	}
	return func(mc *memberlist.Config) {
		mc.ProbeTimeout, mc.ProbeInterval = d, d+d/3
	}
}
