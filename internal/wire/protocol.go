package wire

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ProtocolVersion is the version of this protocol: the messages (their
// types, fields, encodings and meanings), the services and their methods,
// the rejection reasons and the rules both sides apply (the partition plan,
// sync step decisions). Two processes talk only if their versions are
// equal: every client built with DialOptions sends it with every call and
// stream (metadata key ProtocolHeader), and every server built with
// ServerOptions refuses a call that carries another version, or none, with
// codes.FailedPrecondition before any handler runs (the client sees
// ErrProtocolVersion).
//
// The increment rule: add 1 in the change that makes a peer built before it
// misread or mishandle what the new code sends or expects — a new message
// type, method or service the other side must serve or call; a field whose
// encoding, order, unit or meaning changes; a new required field; a new
// rejection reason or a new rule (partition plan, decision, compression)
// that both sides must apply alike. A header field appended after the known
// ones, which older decoders skip (see the package comment), needs no new
// version if ignoring it is correct. One version per change that breaks,
// however many things it breaks; never reuse a number. Every member also
// publishes its version in its membership record, and tailor status shows
// it.
const ProtocolVersion = 1

// ProtocolHeader is the gRPC metadata key that carries a client's
// ProtocolVersion (decimal) on every call and stream.
const ProtocolHeader = "tailor-wire-protocol"

// ErrProtocolVersion means a peer speaks another version of the protocol
// (or predates versions): a server refused the call, see *ProtocolError.
var ErrProtocolVersion = errors.New("wire: incompatible protocol version")

// ProtocolError is a server's refusal of a call whose client speaks
// another protocol version. It unwraps to ErrProtocolVersion and keeps the
// server's gRPC status (codes.FailedPrecondition), whose message says which
// versions meet and which side to upgrade.
type ProtocolError struct {
	st *status.Status
}

func (e *ProtocolError) Error() string { return "wire: refused by the server: " + e.st.Message() }

// Unwrap makes errors.Is(err, ErrProtocolVersion) true.
func (e *ProtocolError) Unwrap() error { return ErrProtocolVersion }

// GRPCStatus is the server's status, for status.FromError and status.Code.
func (e *ProtocolError) GRPCStatus() *status.Status { return e.st }

// protocolRefusal is how every refusal's status message starts; the client
// recognises a refusal by it.
const protocolRefusal = "wire protocol "

var protocolValue = strconv.Itoa(ProtocolVersion)

// checkProtocol returns nil if the incoming call of ctx carries this
// ProtocolVersion, and the FailedPrecondition status that refuses it
// otherwise, naming the side to upgrade: the peer if it speaks an older
// version (or none), this server if the peer speaks a newer one.
func checkProtocol(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	got := md.Get(ProtocolHeader)
	if len(got) == 1 && got[0] == protocolValue {
		return nil
	}
	remote, local := "the peer", "this server"
	if p, ok := peer.FromContext(ctx); ok {
		if p.Addr != nil {
			remote = p.Addr.String()
		}
		if p.LocalAddr != nil {
			local = "this server (" + p.LocalAddr.String() + ")"
		}
	}
	if len(got) == 0 {
		return status.Errorf(codes.FailedPrecondition, "%s%d required, peer speaks none (a tailor from before protocol versions): upgrade tailor on %s",
			protocolRefusal, ProtocolVersion, remote)
	}
	theirs := strings.Join(got, ",")
	v, err := strconv.Atoi(theirs)
	switch {
	case err != nil:
		if len(theirs) > 32 {
			theirs = theirs[:32] + "..."
		}
		return status.Errorf(codes.FailedPrecondition, "%s%d required, peer speaks %q: upgrade tailor on %s",
			protocolRefusal, ProtocolVersion, theirs, remote)
	case v > ProtocolVersion:
		return status.Errorf(codes.FailedPrecondition, "%s%d required, peer %s speaks %d: upgrade tailor on %s",
			protocolRefusal, ProtocolVersion, remote, v, local)
	}
	return status.Errorf(codes.FailedPrecondition, "%s%d required, peer speaks %d: upgrade tailor on %s",
		protocolRefusal, ProtocolVersion, v, remote)
}

// protocolError turns a server's refusal (checkProtocol's status) into a
// *ProtocolError; other errors come back unchanged.
func protocolError(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.FailedPrecondition || !strings.HasPrefix(st.Message(), protocolRefusal) {
		return err
	}
	return &ProtocolError{st: st}
}

// withProtocol adds version v to the outgoing metadata of ctx (none for 0).
func withProtocol(ctx context.Context, v int) context.Context {
	if v == 0 {
		return ctx
	}
	if v == ProtocolVersion {
		return metadata.AppendToOutgoingContext(ctx, ProtocolHeader, protocolValue)
	}
	return metadata.AppendToOutgoingContext(ctx, ProtocolHeader, strconv.Itoa(v))
}

// The interceptors of DialOptionsVersion (a client of version v) and
// ServerOptions.

func protocolUnaryClient(v int) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return protocolError(invoker(withProtocol(ctx, v), method, req, reply, cc, opts...))
	}
}

func protocolStreamClient(v int) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(withProtocol(ctx, v), desc, cc, method, opts...)
		if err != nil {
			return nil, protocolError(err)
		}
		return protocolStream{s}, nil
	}
}

// protocolStream reports a refusal, which arrives as the stream's status,
// as a *ProtocolError.
type protocolStream struct{ grpc.ClientStream }

func (s protocolStream) RecvMsg(m any) error { return protocolError(s.ClientStream.RecvMsg(m)) }

func (s protocolStream) Header() (metadata.MD, error) {
	md, err := s.ClientStream.Header()
	return md, protocolError(err)
}

func protocolUnaryServer(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := checkProtocol(ctx); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func protocolStreamServer(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := checkProtocol(ss.Context()); err != nil {
		return err
	}
	return handler(srv, ss)
}
