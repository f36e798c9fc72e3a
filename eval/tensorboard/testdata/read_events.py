"""Reads a TensorBoard event file with code tailor did not write.

Usage: python3 read_events.py EVENTFILE  (with PYTHONPATH holding the
modules protoc generated from testdata/proto: tensorboard/compat/proto/
event_pb2.py and the modules it imports).

Every record's framing is checked here: the uint64 length, the masked
CRC-32C of those 8 bytes, the data, the masked CRC-32C of the data (the
CRC-32C is computed by this script, bit by bit from the Castagnoli
polynomial). Each record is parsed as a tensorboard.Event by the python3-
protobuf runtime. One JSON object per event goes to stdout:
{"wall_time", "step", "file_version", "session_log", "scalars": [[tag, value], ...]}.
Any error exits non-zero with the reason on stderr.
"""

import json
import struct
import sys

from tensorboard.compat.proto import event_pb2


def _table():
    poly = 0x82F63B78  # Castagnoli, reflected
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        t.append(c)
    return t


TABLE = _table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def main(path):
    assert crc32c(b"123456789") == 0xE3069283, "crc32c self-check"
    with open(path, "rb") as f:
        buf = f.read()
    off = 0
    while off < len(buf):
        if len(buf) - off < 12:
            sys.exit("truncated header at offset %d" % off)
        header = buf[off:off + 8]
        (length,) = struct.unpack("<Q", header)
        (lcrc,) = struct.unpack("<I", buf[off + 8:off + 12])
        if lcrc != masked(header):
            sys.exit("length crc mismatch at offset %d" % off)
        data = buf[off + 12:off + 12 + length]
        if len(data) != length or len(buf) < off + 16 + length:
            sys.exit("truncated record at offset %d" % off)
        (dcrc,) = struct.unpack("<I", buf[off + 12 + length:off + 16 + length])
        if dcrc != masked(data):
            sys.exit("data crc mismatch at offset %d" % off)
        ev = event_pb2.Event()
        ev.ParseFromString(data)
        out = {"wall_time": ev.wall_time, "step": ev.step, "file_version": ev.file_version,
               "session_log": ev.session_log.status if ev.HasField("session_log") else 0, "scalars": []}
        if ev.HasField("summary"):
            for v in ev.summary.value:
                if v.WhichOneof("value") != "simple_value":
                    sys.exit("value %r is not a simple_value" % v.tag)
                out["scalars"].append([v.tag, v.simple_value])
        print(json.dumps(out))
        off += 16 + length


if __name__ == "__main__":
    main(sys.argv[1])
