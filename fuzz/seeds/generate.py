#!/usr/bin/env python3
"""Writes the hand-made seed inputs under fuzz/seeds/<target>/.

The seeds are committed; run this again only after changing it. Stream
targets (handshake, connection, inflate, http_api) take three control bytes first: the
chunk plan (u16 little endian, 0 = one piece) and a config byte (see each
target's doc comment); `frame` takes raw bytes.
"""

import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 section 5.7


def frame(opcode, payload, fin=True, mask=None, rsv1=False):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    m = 0x80 if mask else 0
    n = len(payload)
    if n <= 125:
        head = bytes([b0, m | n])
    elif n <= 0xFFFF:
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def deflate(*messages, takeover=False):
    """permessage-deflate payloads (RFC 7692 7.2.1): sync flush, tail removed."""
    out, c = [], None
    for m in messages:
        if c is None or not takeover:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = c.compress(m) + c.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        out.append(data[:-4])
    return out


def records(payload, text=True, pieces=1):
    """inflate record mode: one message in `pieces` frames."""
    step = -(-len(payload) // pieces) if payload else 0
    chunks = [payload[i : i + step] for i in range(0, len(payload), step)] if payload else [b""]
    out = b""
    for i, chunk in enumerate(chunks):
        assert len(chunk) <= 63
        fin = 0x40 if i == len(chunks) - 1 else 0
        flag = 0x80 if (i == 0 and text) else 0
        out += bytes([flag | fin | len(chunk)]) + chunk
    return out


def stream(plan, config, data):
    return struct.pack("<H", plan) + bytes([config]) + data


def api_request(method, path, body=None, close=False):
    """A publish-API request as a backend sends it."""
    head = f"{method} {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer k\r\n".encode()
    if close:
        head += b"Connection: close\r\n"
    if body is not None:
        head += f"Content-Length: {len(body)}\r\n".encode()
    return head + b"\r\n" + (body or b"")


REQUEST = (
    b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n"
)

SEEDS = {
    "handshake": {
        "rfc-request": stream(0, 0, REQUEST),
        "rfc-request-bytewise-with-frame": stream(0x0100, 0, REQUEST + frame(1, b"Hello", mask=KEY)),
        "rfc-request-deflate-offer": stream(
            0x0005, 0, REQUEST[:-2] + b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        ),
        "plain-get": stream(0, 0, b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n"),
        "rfc-response": stream(0x0003, 0, RESPONSE + b"\r\n"),
        "rfc-response-deflate": stream(0, 1, RESPONSE + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
    },
    "frame": {
        "text-unmasked": frame(1, b"Hello"),
        "text-masked": frame(1, b"Hello", mask=KEY),
        "fragment-first": frame(1, b"Hel", fin=False),
        "fragment-last": frame(0, b"lo"),
        "ping": frame(9, b"Hello"),
        "pong-masked": frame(10, b"Hello", mask=KEY),
        "len16": bytes([0x82, 0x7E, 0x01, 0x00]),
        "len64-masked": bytes([0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0]) + KEY,
    },
    "connection": {
        # Config 0x3F: 64 KiB frame and message limits.
        "server-rfc-masked-hello": stream(0, 0x3F, frame(1, b"Hello", mask=KEY)),
        "client-rfc-unmasked-hello": stream(0, 0x3F, frame(1, b"Hello")),
        "server-fragments-ping-close": stream(
            0x0001,
            0x3F,
            frame(1, b"Hel", fin=False, mask=KEY)
            + frame(9, b"p", mask=KEY)
            + frame(0, b"lo", mask=KEY)
            + frame(2, bytes(range(200)), mask=KEY)
            + frame(8, b"\x03\xe8bye", mask=KEY),
        ),
        "client-ping-pong-close": stream(
            0x0102, 0x3F, frame(9, b"Hello") + frame(10, b"Hello") + frame(8, b"\x03\xe8")
        ),
        "server-utf8-split": stream(0x0100, 0x3F, frame(1, "κόσμε".encode(), mask=KEY)),
        "server-close-first": stream(0, 0x7F, frame(9, b"x", mask=KEY) + frame(8, b"", mask=KEY)),
    },
    "inflate": {
        # Raw mode, config 0x0F: 64 KiB limits; 0x1F: with context takeover.
        # RFC 7692 section 7.2.3 examples, as a server sends them (client role).
        "client-rfc-hello": stream(0, 0x0F, bytes.fromhex("c107f248cdc9c90700")),
        "client-rfc-takeover": stream(0, 0x1F, bytes.fromhex("c107f248cdc9c90700c105f200110000")),
        "client-rfc-stored": stream(0, 0x0F, bytes.fromhex("c10b0005 00faff48656c6c6f00".replace(" ", ""))),
        "client-rfc-bfinal": stream(0, 0x0F, bytes.fromhex("c108f348cdc9c9070000")),
        "client-rfc-two-blocks": stream(0x0001, 0x0F, bytes.fromhex("c10df248050000 00ffffcac9c90700".replace(" ", ""))),
        "client-rfc-fragmented": stream(0x0002, 0x0F, bytes.fromhex("4103f248cd8004c9c90700")),
        # The same as a client sends them (server role), masked.
        "server-hello-masked": stream(0, 0x0F, frame(1, bytes.fromhex("f248cdc9c90700"), mask=KEY, rsv1=True)),
        "server-plain-then-compressed": stream(
            0x0100,
            0x1F,
            frame(2, b"plain", mask=KEY) + b"".join(frame(1, d, mask=KEY, rsv1=True) for d in deflate(b"abc" * 20, b"abc" * 30, takeover=True)),
        ),
        # Record mode, config 0x2F; 0x3F with takeover; 0x27 with a 125-byte message limit.
        "records-hello": stream(0, 0x2F, records(bytes.fromhex("f248cdc9c90700"))),
        "records-json-two-frames": stream(
            0x0003, 0x2F, records(deflate(b'{"room":"lobby","text":"hello hello hello"}')[0], pieces=2)
        ),
        "records-takeover": stream(
            0, 0x3F, b"".join(records(d) for d in deflate(b"Hello", b"Hello", b"Hello, Hello", takeover=True))
        ),
        "records-binary-over-limit": stream(0, 0x27, records(deflate(bytes(300))[0], text=False)),
        "records-empty": stream(0, 0x2F, records(b"")),
    },
    # What a Redis server sends the Redis engine (RESP3), raw.
    "resp": {
        "hello-map": b"%3\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n",
        "subscribe-and-message": b">3\r\n$9\r\nsubscribe\r\n$9\r\nrc:0:r:lo\r\n:1\r\n"
        b">3\r\n$7\r\nmessage\r\n$9\r\nrc:0:r:lo\r\n$16\r\n1 e m - {\"seq\":1}\r\n",
        "join-reply": b"*7\r\n:4\r\n:5\r\n:2\r\n$16\r\n0123456789abcdef\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n:1\r\n"
        b"*1\r\n$45\r\n{\"seq\":2,\"ts\":9,\"user\":\"a\",\"content\":null}\r\n",
        "scalars": b"+OK\r\n-NOSCRIPT No matching script\r\n:-1\r\n$-1\r\n_\r\n#f\r\n,3.14\r\n(12345678901234567890\r\n",
        "verbatim-attribute-blob-error": b"=15\r\ntxt:run_id:abc\r\n|1\r\n+ttl\r\n:3\r\n+x\r\n!5\r\nERROR\r\n~1\r\n:7\r\n",
    },
    # Text frames of the /ws room protocol (docs/protocol.md), raw.
    "commands": {
        "join-since-epoch": b'{"type":"join","room":"lobby","since":41,"epoch":"5f1c2e","id":1}',
        "broadcast-object": b'{"type":"broadcast","room":"lobby","content":{"text":"hi","n":[1,2.5,null]},"id":"b-7"}',
        "direct": b'{"type":"direct","to":"bob","content":"psst"}',
        "typing-presence-history": b'{"type":"history","room":"lobby","since":null,"limit":50,"id":3}',
        "typing": b'{"type":"typing","room":"lobby","typing":true}',
        "refresh": b'{"type":"refresh","token":"eyJhbGciOiJIUzI1NiJ9.e30.x"}',
        "unknown-type-long": b'{"type":"' + b"x" * 100 + b'","id":{"not":"valid"}}',
        "missing-room": b'{"type":"leave","id":9}',
        "not-json": b'{"type":"join",',
    },
    "http_api": {
        # Config 0xC0: 8 KiB heads, 64 KiB bodies; 0x42: 32-byte heads, 16-byte bodies.
        "publish-history-close-pipelined": stream(
            0,
            0xC0,
            api_request("POST", "/api/publish", b'{"room":"r","content":{"a":1}}')
            + api_request("GET", "/api/rooms/r/history?since=1&limit=5")
            + api_request("POST", "/api/broadcast", b'{"rooms":["a","b"],"user":"ops","content":"x"}', close=True)
            + api_request("GET", "/api/rooms"),
        ),
        "bytewise-direct-disconnect": stream(
            0x0100,
            0xC0,
            api_request("POST", "/api/direct", b'{"user":"bob","content":[1,2]}')
            + api_request("POST", "/api/disconnect", b'{"user":"bob","code":4001}'),
        ),
        "chunked-refused": stream(
            0x0003,
            0xC0,
            b"POST /api/publish HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        "skipped-body-then-upgrade": stream(
            0x0005,
            0xC0,
            b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd" + REQUEST + frame(1, b"Hello", mask=KEY),
        ),
        "expect-continue-over-limit": stream(
            0x0002,
            0x42,
            b"POST /api/publish HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 17\r\n\r\n",
        ),
        "http10-bad-json": stream(
            0,
            0xC0,
            b"POST /api/publish HTTP/1.0\r\nContent-Length: 5\r\n\r\n{oops",
        ),
    },
}


def main():
    for target, seeds in SEEDS.items():
        folder = os.path.join(HERE, target)
        os.makedirs(folder, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
