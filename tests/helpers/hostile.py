"""Hostile servers on 127.0.0.1 for the live runtime's tests: raw trio streams playing one bad case each.

Each ``play_*`` coroutine takes an accepted TCP stream and misbehaves in one
way (a broken handshake answer, pings as fast as the socket takes them, a
text frame that is not UTF-8, a REST answer with an odd Retry-After or a body
without end).  :func:`serving` runs one on an ephemeral port for as long as
its block lasts and counts the connections and bytes it saw.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

Play = Callable[[trio.SocketStream, "Served"], Awaitable[None]]


@attrs.define
class Served:
    """What a hostile server saw and did (read it any time)."""

    port: int = 0
    connections: int = 0
    requests: list[bytes] = attrs.Factory(list)
    bytes_sent: int = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def serving(play: Play) -> AsyncIterator[Served]:
    """Run ``play`` for every connection to a fresh port on 127.0.0.1."""
    served = Served()

    async def handle(stream: trio.SocketStream) -> None:
        served.connections += 1
        try:
            await play(stream, served)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client gave up on us: that is what it should do
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as n:
        listeners = await n.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        served.port = listeners[0].socket.getsockname()[1]
        yield served
        n.cancel_scope.cancel()


async def read_request(stream: trio.SocketStream, served: Served) -> bytes:
    """Read one HTTP request head (up to the blank line)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise trio.BrokenResourceError("client closed")
        data += chunk
    head = data[: data.index(b"\r\n\r\n")]
    served.requests.append(head)
    return head


def accept_key(request: bytes) -> bytes:
    for line in request.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            return base64.b64encode(hashlib.sha1(value.strip() + GUID).digest())
    return b""


def switching(accept: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n" + extra + b"\r\n"
    )


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final server frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


async def send(stream: trio.SocketStream, served: Served, data: bytes) -> None:
    await stream.send_all(data)
    served.bytes_sent += len(data)


async def handshake(stream: trio.SocketStream, served: Served, trailing: bytes = b"") -> None:
    """A correct opening handshake (with ``trailing`` bytes in the same write)."""
    req = await read_request(stream, served)
    await send(stream, served, switching(accept_key(req)) + trailing)


async def drain(stream: trio.SocketStream) -> None:
    while await stream.receive_some(65536):
        pass


# ------------------------------------------------------------------ handshake violations


async def play_garbage_handshake(stream: trio.SocketStream, served: Served) -> None:
    await read_request(stream, served)
    await send(stream, served, b"\x00\xffSSH-2.0-nonsense \x01\x02\r\n\r\n\xde\xad\xbe\xef")
    await drain(stream)


async def play_wrong_accept(stream: trio.SocketStream, served: Served) -> None:
    await read_request(stream, served)
    await send(stream, served, switching(base64.b64encode(b"x" * 20)))
    await drain(stream)


async def play_huge_headers(stream: trio.SocketStream, served: Served) -> None:
    req = await read_request(stream, served)
    head = b"HTTP/1.1 101 Switching Protocols\r\n"
    await send(stream, served, head)
    line = b"X-Padding: " + b"a" * 8000 + b"\r\n"
    for _ in range((8 << 20) // len(line)):  # 8 MiB of headers, and never an end
        await send(stream, served, line)
    await send(stream, served, switching(accept_key(req))[len(head) :])
    await drain(stream)


async def play_http_error(stream: trio.SocketStream, served: Served) -> None:
    await read_request(stream, served)
    body = b"no websocket here"
    await send(
        stream,
        served,
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    await drain(stream)


# ------------------------------------------------------------------ protocol violations


def data_frame(i: int) -> bytes:
    return b'{"stream":"btcusdt@trade","data":{"e":"trade","i":%d}}' % i


async def play_ping_flood(stream: trio.SocketStream, served: Served) -> None:
    """Pings as fast as the socket takes them, reading (and dropping) the pongs; a data frame
    every 200 pings; after 8000 pings a close frame, and more pings after it (a violation)."""
    await handshake(stream, served)
    ping = frame(0x9, b"p" * 125)
    async with trio.open_nursery() as n:
        n.start_soon(drain, stream)
        for i in range(40):
            await send(stream, served, ping * 200 + frame(0x1, data_frame(i)))
        await send(stream, served, frame(0x8, struct.pack("!H", 1000)) + ping * 200)
        await trio.sleep(0.5)
        n.cancel_scope.cancel()


async def play_invalid_utf8(stream: trio.SocketStream, served: Served) -> None:
    """Text frames, the 3rd (and one in the handshake's own write) not UTF-8; then valid ones."""
    bad_first = b'{"bad":"\xff\xfe in the handshake write"}'
    await handshake(stream, served, trailing=frame(0x1, bad_first))
    for i in range(1, 6):
        payload = data_frame(i)
        if i == 3:
            payload = b'{"stream":"btcusdt@trade","data":"\xc3\x28 \xed\xa0\x80 \xf0\x9f"}'
        await send(stream, served, frame(0x1, payload))
    while True:  # keep the connection up, with data, until the client leaves
        i += 1
        await send(stream, served, frame(0x1, data_frame(i)))
        await trio.sleep(0.05)


#: what play_deaf_talker sends before it falls silent
DEAF_TALKER_FRAMES = 60


async def play_deaf_talker(stream: trio.SocketStream, served: Served) -> None:
    """Never answers a ping (reads and drops them), but sends a data frame every 25 ms — as a
    pong queued behind frames the client has not read yet looks — then falls silent, the
    socket left open (a dead path)."""
    await handshake(stream, served)
    async with trio.open_nursery() as n:
        n.start_soon(drain, stream)
        for i in range(DEAF_TALKER_FRAMES):
            await send(stream, served, frame(0x1, data_frame(i)))
            await trio.sleep(0.025)
        await trio.sleep_forever()


#: the payloads play_invalid_utf8 sends that are not UTF-8, in order
INVALID_PAYLOADS = [
    b'{"bad":"\xff\xfe in the handshake write"}',
    b'{"stream":"btcusdt@trade","data":"\xc3\x28 \xed\xa0\x80 \xf0\x9f"}',
]


# ------------------------------------------------------------------ REST


def rest_answer(status: int, headers: dict[str, str], body: bytes) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    return head.encode() + b"\r\n" + body


def play_rest(answers: list[tuple[int, dict[str, str], bytes]]) -> Play:
    """Answer each request (keep-alive) with the next of ``answers`` (the last one repeats)."""
    state = {"i": 0}

    async def play(stream: trio.SocketStream, served: Served) -> None:
        while True:
            await read_request(stream, served)
            i = min(state["i"], len(answers) - 1)
            state["i"] += 1
            await send(stream, served, rest_answer(*answers[i]))

    return play


async def play_endless_body(stream: trio.SocketStream, served: Served) -> None:
    """200 with a chunked body that never ends (the client must stop reading)."""
    await read_request(stream, served)
    await send(stream, served, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (1 << 16, b"[" * (1 << 16))
    while True:
        await send(stream, served, chunk)


async def play_huge_content_length(stream: trio.SocketStream, served: Served) -> None:
    """Announces 2 GiB, then sends as fast as it can."""
    await read_request(stream, served)
    await send(stream, served, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 << 30))
    block = b"0" * (1 << 16)
    while True:
        await send(stream, served, block)


def ws_then(play_ws: Play, play_http: Play) -> Play:
    """WebSocket upgrades go to ``play_ws``, plain HTTP requests to ``play_http`` (one port for both)."""

    async def play(stream: trio.SocketStream, served: Served) -> None:
        head = await stream.receive_some(65536)
        buffered = _Replay(stream, head)
        if b"upgrade: websocket" in head.lower():
            await play_ws(buffered, served)  # type: ignore[arg-type]
        else:
            await play_http(buffered, served)  # type: ignore[arg-type]

    return play


class _Replay:
    """A stream whose first receive returns bytes already read."""

    def __init__(self, stream: Any, first: bytes) -> None:
        self._s, self._first = stream, first

    async def receive_some(self, n: int | None = None) -> bytes:
        if self._first:
            out, self._first = self._first, b""
            return out
        return await self._s.receive_some(n)

    async def send_all(self, data: bytes) -> None:
        await self._s.send_all(data)
