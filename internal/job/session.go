package job

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/cluster"
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
	srv     *http.Server
}

// Join connects to etcd, waits for the run's spec, opens the /metrics
// listener (its address goes into the member record) and joins the
// membership, its record saying which tailor it runs (version.Member:
// the version and the wire protocol, in Extra). self is the member's
// Role, ID, Rank and any addresses already bound. Close undoes it all.
func Join(ctx context.Context, cfg Node, self cluster.Member) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("joining a run: %w", err)
	}
	log := cfg.Logger()
	cli, err := cluster.NewAuthClient(cfg.Etcd, cfg.EtcdAuth)
	if err != nil {
		return nil, err
	}
	s := &Session{Keys: cluster.RunKeys(cfg.Run), Client: cli}
	if s.Spec, err = Wait(ctx, cli, cfg.Run); err != nil {
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
	if cfg.MetricsAddr != "" {
		lis, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			cli.Close()
			return nil, fmt.Errorf("metrics listener: %w", err)
		}
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
		s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go s.srv.Serve(lis)
		self.Addrs[AddrMetrics] = lis.Addr().String()
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
		GossipAdvertise: gossipAdvertise, SecretKey: cfg.SecretKey, FastFailure: true, Log: log})
	if err != nil {
		if s.srv != nil {
			s.srv.Close()
		}
		cli.Close()
		return nil, fmt.Errorf("join run %s: %w", cfg.Run, err)
	}
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
	_ = s.Members.Leave(lctx)
	if s.srv != nil {
		s.srv.Close()
	}
	s.Client.Close()
}
