package wire

import (
	"context"
	"crypto/tls"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tailorml/tailor/internal/identity"
)

// Callers are the roles that may call each method, when the server's own
// certificate names a role (see package identity): a worker pushes
// gradients, pulls weights, says it is idle, gets work and reduces
// BatchNorm statistics; the coordinator initialises the parameter servers,
// pulls weights (validation, the model) and checkpoints them; parameter
// servers report sync steps to the coordinator; the operator's tools
// (admin) and the coordinator read a parameter server's counters. A method
// not listed here is refused.
var Callers = map[string][]identity.Role{
	MethodPush:       {identity.Worker},
	MethodPull:       {identity.Worker, identity.Coordinator},
	MethodIdle:       {identity.Worker},
	MethodInit:       {identity.Coordinator},
	MethodCheckpoint: {identity.Coordinator},
	MethodStatus:     {identity.Admin, identity.Coordinator},
	MethodWorkNext:   {identity.Worker},
	MethodReduceBN:   {identity.Worker},
	MethodDecide:     {identity.ParamServer},
}

// authorize returns nil if the peer of the call ctx carries may call
// method on run, by Callers, and a PermissionDenied status saying why
// otherwise. self is the server's TLS config: without it (plaintext), or
// with a certificate that names no role, every caller is allowed.
func authorize(ctx context.Context, self *tls.Config, run, method string) error {
	if self == nil {
		return nil
	}
	own := identity.Own(self)
	if !own.Named() {
		return nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Errorf(codes.PermissionDenied, "%s: no peer", method)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return status.Errorf(codes.PermissionDenied, "%s: the peer did not connect over TLS", method)
	}
	roles, known := Callers[method]
	if !known {
		return status.Errorf(codes.PermissionDenied, "%s: no role may call it", method)
	}
	if err := identity.Check(own, identity.Peer(info.State), run, roles...); err != nil {
		return status.Errorf(codes.PermissionDenied, "%s refused to the caller at %s: %v", method, p.Addr, err)
	}
	return nil
}

func authUnaryServer(self *tls.Config, run string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := authorize(ctx, self, run, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

func authStreamServer(self *tls.Config, run string) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := authorize(ss.Context(), self, run, info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// currentTLS is gRPC's TLS credentials of a config whose key pair and CAs
// may change (certs.Files.Load's): every handshake uses the material of
// the moment (identity.Current), so that new connections pick up rotated
// files.
type currentTLS struct {
	credentials.TransportCredentials // of the config as given: Info, and the server side
	cfg                              *tls.Config
}

func newTLS(c *tls.Config) credentials.TransportCredentials {
	return &currentTLS{TransportCredentials: credentials.NewTLS(c), cfg: c}
}

func (c *currentTLS) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return credentials.NewTLS(identity.Current(c.cfg)).ClientHandshake(ctx, authority, conn)
}

func (c *currentTLS) Clone() credentials.TransportCredentials { return newTLS(c.cfg) }

func (c *currentTLS) OverrideServerName(name string) error {
	c.cfg = c.cfg.Clone()
	c.cfg.ServerName = name
	c.TransportCredentials = credentials.NewTLS(c.cfg)
	return nil
}
