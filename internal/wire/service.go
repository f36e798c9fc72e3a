package wire

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
)

// ServiceName is the gRPC service of a parameter server.
const ServiceName = "tailor.ps.v1.ParameterServer"

// Full method names.
const (
	MethodPush       = "/" + ServiceName + "/Push"
	MethodInit       = "/" + ServiceName + "/Init"
	MethodPull       = "/" + ServiceName + "/Pull"
	MethodStatus     = "/" + ServiceName + "/Status"
	MethodIdle       = "/" + ServiceName + "/Idle"
	MethodCheckpoint = "/" + ServiceName + "/Checkpoint"
)

// Handler is what a parameter server implements. The streams carry wire
// messages: a Push or Init stream receives *Chunk and sends one *PushReply;
// a Pull stream sends *Chunk. Handlers call RecvMsg/SendMsg themselves so
// they can reuse messages and set Chunk.Dst.
type Handler interface {
	Push(stream grpc.ServerStream) error
	Init(stream grpc.ServerStream) error
	Pull(req *PullRequest, stream grpc.ServerStream) error
	Status(ctx context.Context, req *StatusRequest) (*StatusReply, error)
	Idle(ctx context.Context, req *IdleRequest) (*PushReply, error)
	Checkpoint(ctx context.Context, req *CheckpointRequest) (*CheckpointReply, error)
}

// Indexes into serviceDesc.Streams.
const (
	streamPush = iota
	streamInit
	streamPull
)

var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*Handler)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Status",
		Handler: unary(MethodStatus, func(srv any, ctx context.Context, req *StatusRequest) (any, error) {
			return srv.(Handler).Status(ctx, req)
		}),
	}, {
		MethodName: "Idle",
		Handler:    unary(MethodIdle, func(srv any, ctx context.Context, req *IdleRequest) (any, error) { return srv.(Handler).Idle(ctx, req) }),
	}, {
		MethodName: "Checkpoint",
		Handler: unary(MethodCheckpoint, func(srv any, ctx context.Context, req *CheckpointRequest) (any, error) {
			return srv.(Handler).Checkpoint(ctx, req)
		}),
	}},
	Streams: []grpc.StreamDesc{
		streamPush: {
			StreamName:    "Push",
			Handler:       func(srv any, st grpc.ServerStream) error { return srv.(Handler).Push(st) },
			ClientStreams: true,
		},
		streamInit: {
			StreamName:    "Init",
			Handler:       func(srv any, st grpc.ServerStream) error { return srv.(Handler).Init(st) },
			ClientStreams: true,
		},
		streamPull: {
			StreamName:    "Pull",
			Handler:       pullHandler,
			ServerStreams: true,
		},
	},
	Metadata: "internal/wire",
}

func pullHandler(srv any, st grpc.ServerStream) error {
	req := new(PullRequest)
	if err := st.RecvMsg(req); err != nil {
		return err
	}
	return srv.(Handler).Pull(req, st)
}

// unary is the gRPC handler of a unary method: it decodes a new Req and
// passes it to call, through the server's interceptor if it has one.
func unary[Req any](method string, call func(srv any, ctx context.Context, req *Req) (any, error)) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
		// before decoding: a peer of another protocol version may send
		// bytes this one misreads, and must hear why it is refused
		if err := checkProtocol(ctx); err != nil {
			return nil, err
		}
		req := new(Req)
		if err := dec(req); err != nil {
			return nil, err
		}
		if icpt == nil {
			return call(srv, ctx, req)
		}
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: method}
		return icpt(ctx, req, info, func(ctx context.Context, r any) (any, error) { return call(srv, ctx, r.(*Req)) })
	}
}

// Register puts a parameter server on a gRPC server built with
// ServerOptions.
func Register(s grpc.ServiceRegistrar, h Handler) { s.RegisterService(&serviceDesc, h) }

// Transport tuning. The windows are large so that a 35 MB push or pull is
// never throttled by HTTP/2 flow control on a fast link; the I/O buffers
// batch the 16 KiB HTTP/2 frames into few syscalls.
const (
	streamWindow = 16 << 20
	connWindow   = 64 << 20
	ioBuffer     = 1 << 20
)

// ServerOptions are the gRPC server options every role's server needs:
// message size limits, flow-control windows, buffers, keepalive policy and
// the protocol check: a call or stream whose client does not send this
// ProtocolVersion is refused with codes.FailedPrecondition before any
// handler runs (the unary methods of this package check before decoding
// the request). The codec is registered globally (content-subtype
// CodecName).
//
// sec, if not nil, is the server's TLS (certs.Config): the server then
// presents its certificate and, with sec.ClientAuth set to
// tls.RequireAndVerifyClientCert, refuses every connection whose client
// has no certificate signed by sec.ClientCAs (mutual TLS). Nil serves
// plaintext. If the server's certificate names a role (package
// identity), every call is also checked against Callers and run: a
// caller whose certificate does not name a role that may call the
// method, or names another run, is refused with codes.PermissionDenied
// before any handler runs.
func ServerOptions(sec *tls.Config, run string) []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.WriteBufferSize(ioBuffer),
		grpc.ReadBufferSize(ioBuffer),
		experimental.BufferPool(sharedPool),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.ChainUnaryInterceptor(protocolUnaryServer, authUnaryServer(sec, run)),
		grpc.ChainStreamInterceptor(protocolStreamServer, authStreamServer(sec, run)),
	}
	if sec != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(sec)))
	}
	return opts
}

// DialOptions are the matching client options; every call and stream
// carries ProtocolVersion, and a server's refusal of it comes back as a
// *ProtocolError (errors.Is ErrProtocolVersion). sec, if not nil, is the
// client's TLS (certs.Config): the client verifies the server's certificate
// against sec.RootCAs and the dialled host name, and presents its own;
// every handshake uses sec's material of the moment (identity.Current),
// so new connections pick up rotated files. To check the server's role
// too, pass identity.ForPeer(sec, ...). Nil dials plaintext, for a
// trusted network (see docs/security.md).
func DialOptions(sec *tls.Config) []grpc.DialOption { return DialOptionsVersion(sec, ProtocolVersion) }

// DialOptionsVersion is DialOptions of a client that speaks protocol
// version v (0: one from before protocol versions, which sends none): for
// tests and tools that must see how servers treat another version.
func DialOptionsVersion(sec *tls.Config, v int) []grpc.DialOption {
	creds := insecure.NewCredentials()
	if sec != nil {
		creds = newTLS(sec)
	}
	return []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(
			grpc.CallContentSubtype(CodecName),
			grpc.MaxCallRecvMsgSize(MaxMessageBytes),
			grpc.MaxCallSendMsgSize(MaxMessageBytes),
		),
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithWriteBufferSize(ioBuffer),
		grpc.WithReadBufferSize(ioBuffer),
		experimental.WithBufferPool(sharedPool),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithChainUnaryInterceptor(protocolUnaryClient(v)),
		grpc.WithChainStreamInterceptor(protocolStreamClient(v)),
	}
}

// NewStream opens a raw stream of one of the service's streaming methods
// (MethodPush, MethodInit or MethodPull) on conn: for tests and tools that
// need to send what Client would refuse to.
func NewStream(ctx context.Context, conn grpc.ClientConnInterface, method string) (grpc.ClientStream, error) {
	var d *grpc.StreamDesc
	switch method {
	case MethodPush:
		d = &serviceDesc.Streams[streamPush]
	case MethodInit:
		d = &serviceDesc.Streams[streamInit]
	case MethodPull:
		d = &serviceDesc.Streams[streamPull]
	default:
		return nil, fmt.Errorf("wire: %q is not a streaming method", method)
	}
	return conn.NewStream(ctx, d, method)
}
