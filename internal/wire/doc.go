// Package wire is the protocol between workers, parameter servers and the
// coordinator: the partition plan workers and servers derive from the
// model's tensor spec, the binary messages, their gRPC codec and services,
// the worker's Client and the parameter server's DeciderClient.
//
// # Transport
//
// gRPC over HTTP/2 with a custom codec (content-subtype "tailorwire",
// registered in init) and a hand-written service,
// tailor.ps.v1.ParameterServer:
//
//	Push   client stream of Chunk (type 1) → one PushReply
//	Init   client stream of Chunk (type 1) → one PushReply (initial weights, once per run)
//	Pull   PullRequest → server stream of Chunk (type 4)
//	Status StatusRequest → StatusReply (unary)
//
// Flow-control windows are 16 MiB per stream and 64 MiB per connection,
// socket buffers 1 MiB, messages up to MaxMessageBytes.
//
// The coordinator serves a second service, tailor.coord.v1.Steps, through
// which parameter servers ask which workers' gradients make a sync step
// (docs/cluster.md; RegisterSteps, NewDeciderClient):
//
//	Decide DecideRequest → DecideReply (unary long-poll: answered once the
//	       step is decided, or ended by the caller's deadline)
//
// # Versions
//
// Client and server speak the same ProtocolVersion or do not talk: every
// call and stream carries the client's in the metadata key ProtocolHeader,
// and a server built with ServerOptions refuses another, or none, with
// codes.FailedPrecondition before reading the request (ProtocolError on
// the client). When to increment it is said at ProtocolVersion.
//
// # Messages
//
// Every message starts with a 4-byte prefix — magic 0xA7, the message type,
// and the header length H (uint16, little endian, prefix included) —
// followed by header fields up to byte H. Only chunks have bytes after the
// header: their payload. Integers are varints (uvarint for counts and
// indexes, zig-zag varint for steps and versions) except the plan
// fingerprint (8 bytes LE) and the CRC (4 bytes LE); strings are a uvarint
// length (at most 255) and the bytes. Header bytes after the known fields
// are ignored (room for additions); every other inconsistency is an error
// wrapping ErrCorrupt. Every message carries the run id, the worker id and
// a step or version.
//
//	Chunk        run, worker, plan u64, flags, step, version, server, part,
//	             offset (floats in the part), count (floats), crc32c u32,
//	             and only if not float32: encoding, then scale (fp16) or
//	             pairs (top-k); payload: count float32 little endian, or
//	             count binary16 (value·2^scale), or pairs × (index u32,
//	             value float32), indexes strictly increasing (Encoding)
//	PushReply    run, worker, server, step, version, accepted (0/1), reason
//	PullRequest  run, worker, plan u64, server, min version, chunk bytes,
//	             flags
//	StatusRequest run, worker
//	StatusReply  run, worker, server, mode, initialised, version, step,
//	             members, pending, bytes in, bytes out, accepted, steps,
//	             missing, n, n × (reason, count)
//	DecideRequest run, server, step, n, n × worker id (complete, sorted)
//	DecideReply  run, server, step, n, n × worker id (included, summation
//	             order), m, m × worker id (excluded, sorted)
//
// DecideRequest and DecideReply carry no worker field: the run id and the
// server index say who asks; at most MaxDecideWorkers ids per list, and a
// decoder refuses unsorted, repeated or empty ids and empty decisions.
//
// With FlagChecksum (the client's default, asked of the server in
// PullRequest.Flags) the CRC-32C covers the payload and is checked. It is
// computed where the payload is already in cache, in pieces of 16 KiB: a
// client checksums each chunk of a push in the same pass that checks the
// tensors for NaN and Inf (Chunk.CRC carries the result to Marshal), a
// receiver as it copies each piece out of gRPC's buffers (where a server
// also checks a pushed float32 payload for NaN and Inf: Chunk.CheckFinite),
// and a server once per version and chunk size, as it copies the weights
// for pulls (ClientConfig.NoChecksum turns checksums off).
//
// A push (or pull) of server i is the server's parts in plan order, each
// cut into chunks of at most the chunk size (1 MiB by default), with
// consecutive offsets; the receiver insists on exactly that sequence, so
// every float is covered exactly once. Payloads are the float32 memory
// itself: the sender hands slices of its tensors to gRPC without copying,
// and the receiver's Chunk.Dst puts each payload straight where it
// belongs (one copy, out of gRPC's receive buffers).
//
// # Compression
//
// A run may compress pushed gradients (ClientConfig.Compression, the
// server's Config.Encoding, from the job spec's "compression"): binary16
// with a per-chunk power-of-two scale, or top-k per chunk with error
// feedback (the worker adds what it did not send to its next gradient,
// and keeps the residual only for servers that accepted the push; a new
// Client, as after a worker restart, starts from zero). State values, Init
// and pulls stay float32. A server refuses a chunk of another encoding
// (ReasonEncoding), decodes into the push's buffer, and checks the
// decoded floats for NaN and Inf as before; sync averaging is unchanged,
// in worker order, so decoding keeps it deterministic.
//
// # Plan
//
// NewPlan splits the concatenated tensors into P nearly equal contiguous
// ranges (see its documentation); a Part is one tensor's slice on one
// server.
package wire
