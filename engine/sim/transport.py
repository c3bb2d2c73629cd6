"""The simulator's transport: listeners, HTTP (h11) and the WebSocket handshake (wsproto) on trio.

This module owns connection setup and the server side of every connection:
h11 parses HTTP requests (keep-alive REST cycles; a REST request's body is
read and discarded); the first request may upgrade to a WebSocket (wsproto
does the handshake, the URL's streams are checked against ``valid_streams``
and ``max_streams``), a later upgrade is refused; each accepted client becomes
a :class:`engine.sim.connection.WsConn`.  It also owns the stream index (which
connections receive which stream) and the fan-out of one data frame to them.

Limits against hostile clients (``limits`` counts what they refused or closed):

* ``max_connections`` WebSocket clients at once: one more is refused with
  HTTP 503 before the upgrade (``limits["refused_connections"]``);
* ``max_buffered`` bytes of memory for all clients' buffers together
  (:meth:`Transport.enforce_budget`, called by whoever queues data after
  each batch of it).  Queued bytes get a share of it; the rest is what the
  allocator and the interpreter keep around them (measured with 100 clients
  that never read: process memory grows 1.1–1.5× the bytes queued, most when
  many are closed at once), so the process stays within its baseline plus
  ``max_buffered``.  Past :data:`QUEUED_SHARE` (40 %), the clients whose
  socket has taken nothing for :data:`STALL_GRACE_S` (longest first) are
  closed with 1008 "Slow consumer" until the rest fit in 3/4 of the share;
  past :data:`HARD_SHARE` (60 %), any client, longest stalled first.  A
  client that reads keeps its connection even when, at ``--speed max``, it
  holds as much as one that does not, and a reader paused by a busy machine
  is not taken for one that stopped (``limits["slow_consumers"]`` counts
  them, and clients over their own ``max_buffer``).

It must not know a venue: URL paths, control replies, REST routes, error
bodies and the combined-frame wrapper are :class:`Transport`'s hooks,
implemented by :class:`engine.sim.server.SimServer`; nor invent market data
or decide faults.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import trio
import wsproto
import wsproto.events as we
from wsproto import ConnectionType

from engine.sim.connection import GONE, ConnStats, WsConn

__all__ = ["Transport"]

#: the share of ``max_buffered`` that queued bytes may use (see the module docstring): past it,
#: clients stalled for :data:`STALL_GRACE_S` are closed; past :data:`HARD_SHARE`, any client,
#: longest stalled first
QUEUED_SHARE = 0.4
HARD_SHARE = 0.6
#: how long a client's socket must have taken nothing before the budget counts it as not reading
STALL_GRACE_S = 0.5


class Transport:
    """Listeners, the HTTP loop, the WebSocket handshake and every connection's state.

    A venue's server subclasses it and implements the hooks (the methods that
    raise :class:`NotImplementedError`).  ``config`` is a
    :class:`engine.sim.server.SimConfig` (host, port and the limits above).
    """

    #: which stream names a URL or SUBSCRIBE may name (the venue's server sets it)
    valid_streams: frozenset[str]

    def __init__(self, config: Any) -> None:
        self.config = config
        self.port = 0
        self.index: dict[str, list[WsConn]] = {}
        self.conns: dict[int, WsConn] = {}
        self.closed: deque[ConnStats] = deque(maxlen=config.keep_closed)
        self._next_id = 0
        self.rest = Counter[str]()
        #: refused connections and slow consumers closed (see the module docstring)
        self.limits = Counter[str]()

    # ---------------------------------------------------------------- hooks

    def ws_route(self, path: str, query: str) -> tuple[bool, list[str]] | None:
        """``(combined, streams)`` a WebSocket URL asks for, or None (unknown path: 404)."""
        raise NotImplementedError

    def wrap(self, stream: str, payload: bytes) -> bytes:
        """A data frame as a combined-stream connection receives it."""
        raise NotImplementedError

    def on_message(self, conn: WsConn, text: str | None) -> list[bytes]:
        """The frames answering one client message (``None``: a binary message), in order."""
        raise NotImplementedError

    def on_rest(self, method: str, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        """``(HTTP status, JSON body)`` of one REST request."""
        raise NotImplementedError

    def error_body(self, msg: str) -> bytes:
        """The JSON body of an HTTP error (refused upgrade, bad stream names)."""
        raise NotImplementedError

    def ping_payload(self) -> bytes:
        return b""

    def numbering(self) -> Callable[[bytes], bytes] | None:
        """A new connection's message numbering (None: the venue numbers no messages): called
        with every market frame the connection is sent *or loses* (a withheld or stalled
        frame still takes its number, so the client sees the gap), it returns the frame as
        numbered for that connection."""
        return None

    def connection_task(self, conn: WsConn) -> Any:
        """An async function run in ``conn``'s nursery beside its own tasks (None: nothing)."""
        return None

    # ---------------------------------------------------------------- lifecycle

    async def listen(self, nursery: trio.Nursery) -> None:
        """Bind (``self.port`` is then the bound port) and serve connections in ``nursery``."""
        listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
        self.port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, self._handle_tcp, listeners)

    def distribute(self, frames: Iterable[tuple[str, bytes]]) -> None:
        """Queue ``(stream, payload)`` data frames for the connections subscribed to each (no wake-up)."""
        index = self.index
        for stream, payload in frames:
            conns = index.get(stream)
            if conns:
                for c in conns:
                    c.push_data(stream, payload)

    def wake_all(self) -> None:
        """Wake the writer of every connection with something to send."""
        for c in self.conns.values():
            if c.out:
                c.wake.set()

    def buffered(self) -> int:
        """Bytes held for every client together (:meth:`WsConn.buffered`)."""
        return sum(c.buffered() for c in self.conns.values())

    def enforce_budget(self) -> None:
        """Keep queued bytes within their share of ``max_buffered`` by closing (1008) the clients
        that stopped reading: see :data:`QUEUED_SHARE`, :data:`HARD_SHARE`, :data:`STALL_GRACE_S`."""
        soft = int(self.config.max_buffered * QUEUED_SHARE)
        total = 0
        held = []
        for c in self.conns.values():
            n = c.buffered()
            total += n
            if n and not c.closing:
                held.append((n, c))
        if total <= soft:
            return
        # stalled longest first: a writer blocked in a send since progress_at (one not
        # sending is not stalled: its data was just queued), then the biggest holders
        now = trio.current_time()
        held.sort(key=lambda nc: (nc[1].progress_at if nc[1].inflight else now, -nc[0]))
        why = f"{total} bytes held for all clients, over their share ({soft}) of the budget"
        # first only clients stalled for a while (a reader on a busy machine pauses too) ...
        for n, c in held:
            if not c.inflight or now - c.progress_at < STALL_GRACE_S:
                break
            c.close_slow(why)
            total -= n
            if total <= soft * 3 // 4:  # not one close per tick while it refills
                return
        # ... and past the hard share, whoever has stalled longest, until back under the share
        hard = int(self.config.max_buffered * HARD_SHARE)
        if total <= hard:
            return
        for n, c in held:
            if c.closing:
                continue
            c.close_slow(why)
            total -= n
            if total <= soft * 3 // 4:
                return

    def index_add(self, stream: str, conn: WsConn) -> None:
        self.index.setdefault(stream, []).append(conn)

    def index_remove(self, stream: str, conn: WsConn) -> None:
        lst = self.index.get(stream)
        if lst and conn in lst:
            lst.remove(conn)

    def unregister(self, conn: WsConn) -> None:
        for s in conn.subs:
            self.index_remove(s, conn)
        self.conns.pop(conn.id, None)
        self.closed.append(conn.stats)

    def connection_stats(self) -> list[dict[str, Any]]:
        """Every connection's counters, open ones first."""
        open_ = []
        for c in self.conns.values():
            d = c.stats.to_json()
            d["subscriptions"] = list(c.subs)
            d["open"] = True
            open_.append(d)
        return open_ + [dict(s.to_json(), open=False) for s in self.closed]

    # ---------------------------------------------------------------- HTTP

    async def _handle_tcp(self, stream: trio.SocketStream) -> None:
        try:
            await self._http(stream)
        except (*GONE, h11.RemoteProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _http(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        raw = bytearray()
        first = True
        while True:
            ev: Any = conn.next_event()
            if ev is h11.NEED_DATA:
                with trio.move_on_after(self.config.handshake_timeout if first else 60.0) as cs:
                    data = await stream.receive_some(65536)
                if cs.cancelled_caught or not data:
                    return
                if first:
                    raw += data
                conn.receive_data(data)
                continue
            if not isinstance(ev, h11.Request):
                return  # ConnectionClosed or anything unexpected
            headers = {k.lower(): v for k, v in ev.headers}
            if headers.get(b"upgrade", b"").lower() == b"websocket":
                if not first:
                    body = self.error_body("Upgrade must be the first request")
                    await self._respond(conn, stream, 400, body)
                    return
                await self._websocket(stream, bytes(raw))
                return
            first = False
            raw.clear()
            url = urlsplit(ev.target.decode("latin-1"))
            q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            self.rest[url.path] += 1
            status, body = self.on_rest(ev.method.decode("latin-1"), url.path, q)
            await self._respond(conn, stream, status, body)
            if not await self._discard_body(conn, stream):
                return
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()

    @staticmethod
    async def _discard_body(conn: h11.Connection, stream: trio.SocketStream) -> bool:
        """Read the rest of a request; False if the client went away meanwhile."""
        while True:
            ev: Any = conn.next_event()
            if ev is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return False
                conn.receive_data(data)
            elif isinstance(ev, h11.EndOfMessage):
                return True
            elif isinstance(ev, h11.ConnectionClosed):
                return False

    @staticmethod
    async def _respond(
        conn: h11.Connection, stream: trio.SocketStream, status: int, body: bytes
    ) -> None:
        headers = [
            ("content-type", "application/json;charset=UTF-8"),
            ("content-length", str(len(body))),
        ]
        out = conn.send(h11.Response(status_code=status, headers=headers))
        out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        await stream.send_all(out)

    # ---------------------------------------------------------------- WebSocket

    async def _websocket(self, stream: trio.SocketStream, raw: bytes) -> None:
        ws = wsproto.WSConnection(ConnectionType.SERVER)
        try:
            ws.receive_data(raw)
            req = next((e for e in ws.events() if isinstance(e, we.Request)), None)
        except wsproto.utilities.RemoteProtocolError:
            return
        if req is None:
            return
        if len(self.conns) >= self.config.max_connections:
            self.limits["refused_connections"] += 1
            await self._reject(
                stream, ws, 503, f"Too many connections (at most {self.config.max_connections})"
            )
            return
        url = urlsplit(req.target)
        try:
            route = self.ws_route(url.path.rstrip("/") or "/", url.query)
        except ValueError as exc:
            await self._reject(stream, ws, 400, str(exc))
            return
        if route is None:
            await self._reject(stream, ws, 404, f"Unknown path {url.path}")
            return
        combined, streams = route
        streams = list(dict.fromkeys(streams))
        bad = [s for s in streams if s not in self.valid_streams]
        error: str | None = None
        if bad:
            error = f"Invalid stream name `{bad[0]}`"
        elif len(streams) > self.config.max_streams:
            error = f"Too many streams: {len(streams)} > {self.config.max_streams} per connection"
        if error:
            await self._reject(stream, ws, 400, error)
            return
        await stream.send_all(ws.send(we.AcceptConnection()))
        self._next_id += 1
        try:
            peer = "{}:{}".format(*stream.socket.getpeername()[:2])
        except OSError:
            peer = "?"
        conn = WsConn(self, stream, ws, self._next_id, req.target, peer, combined, [])
        self.conns[conn.id] = conn
        for s in streams:
            conn.subscribe(s)
        await conn.run()

    async def _reject(
        self, stream: trio.SocketStream, ws: wsproto.WSConnection, status: int, msg: str
    ) -> None:
        body = self.error_body(msg)
        out = ws.send(
            we.RejectConnection(
                status_code=status,
                headers=[
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
                has_body=True,
            )
        )
        out += ws.send(we.RejectData(data=body))
        await stream.send_all(out)
