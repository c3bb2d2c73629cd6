"""The simulator's transport: HTTP and WebSocket on trio (h11 + wsproto), one task group per client.

This module owns the bytes on the socket and the limits that protect them:

* connection setup: h11 parses HTTP requests (keep-alive REST, then the next
  request), the first request may upgrade to a WebSocket (wsproto does the
  handshake); a later upgrade is refused;
* one WebSocket client (:class:`WsConn`): reader, writer, pinger and lifetime
  tasks in one nursery; the writer's wake loop sends everything queued in one
  ``send_all`` (hand-framed, unmasked server frames: no permessage-deflate is
  negotiated, so hand framing is exact — that is how the simulator pushes
  ≥ 50k frames/s, ``bench/simulate.py``);
* back-pressure and limits: a client more than ``max_buffer`` bytes behind is
  aborted (slow consumer), a message above ``max_message`` closes 1009, more
  than ``control_limit`` client messages (text, binary, ping, pong) within any
  sliding ``control_window`` (half-open ``(now-window, now]``) close 1008
  "Too many requests", a ping every ``ping_interval`` with no pong within
  ``pong_timeout`` closes 1008 "Pong timeout", ``lifetime`` closes 1001;
* orderly and abrupt endings (close handshake, TCP FIN after sent data, reads
  until the client closes so unread data never turns into an RST) and the
  per-connection counters (:class:`ConnStats`);
* the stream index: which connections receive which stream.

It must not know a venue: URL paths, control-message replies, REST routes and
the wrapper of combined frames are the hooks of :class:`Transport`, which the
venue's server (:class:`engine.sim.server.SimServer`) implements.  Nor does it
invent market data or decide faults; it only carries the state faults set
(``stalled_until``, ``withheld``).

Counting: a frame is counted when the ``send_all`` carrying it returned.  An
abrupt end (drop fault, slow consumer) discards frames not yet handed to the
socket: they were never sent, so they are not counted — a client that journals
everything it received holds exactly ``frames`` messages.
"""

from __future__ import annotations

import struct
import time
from collections import Counter, deque
from collections.abc import Container
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio
import wsproto
import wsproto.events as we
from wsproto import ConnectionType

__all__ = ["ConnStats", "Transport", "WsConn", "frame"]


def frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """An unmasked, unfragmented server frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


@attrs.define
class ConnStats:
    """What the server sent on (and received from) one WebSocket connection."""

    id: int
    path: str
    peer: str
    combined: bool
    opened: float
    closed: float | None = None
    close_kind: str | None = None
    close_code: int | None = None
    close_reason: str | None = None
    frames: int = 0
    payload_bytes: int = 0
    wire_bytes: int = 0
    frames_by_stream: Counter[str] = attrs.Factory(Counter)
    pings_sent: int = 0
    pongs_received: int = 0
    pongs_sent: int = 0
    control_received: int = 0
    faults: list[str] = attrs.Factory(list)
    subscriptions: list[str] = attrs.Factory(list)

    def to_json(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["frames_by_stream"] = dict(self.frames_by_stream)
        return d


_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


class WsConn:
    """One WebSocket client: reader, writer, pinger and lifetime tasks in one nursery."""

    def __init__(
        self,
        server: Transport,
        stream: trio.SocketStream,
        ws: wsproto.WSConnection,
        cid: int,
        path: str,
        peer: str,
        combined: bool,
        streams: list[str],
    ) -> None:
        self.server = server
        self.cfg = server.config
        self.stream = stream
        self.ws = ws
        self.id = cid
        self.combined = combined
        self.subs: dict[str, None] = dict.fromkeys(streams)
        self.stats = ConnStats(cid, path, peer, combined, time.time())
        self.out: list[bytes] = []
        self.out_len = 0
        self.pend: dict[str, int] = {}
        self.pend_frames = 0
        self.pend_payload = 0
        self.wake = trio.Event()
        self.closing = False
        self.ended = False
        #: set by the stall fault: neither send nor read until this trio time
        self.stalled_until = 0.0
        #: set by the gap fault: streams whose next frame is withheld from this client
        self.withheld: set[str] = set()
        self.ctl_times: deque[float] = deque()
        self.ping_outstanding: float | None = None
        self.drained = trio.Event()
        self.nursery: trio.Nursery | None = None

    # ---------------------------------------------------------------- queueing

    def push_data(self, stream: str, payload: bytes) -> None:
        """Queue one market frame (called by the pump; must stay cheap)."""
        if self.closing or self.stalled_until:
            return
        if self.withheld and stream in self.withheld:
            self.withheld.discard(stream)
            self.stats.faults.append(f"gap:{stream}")
            return
        data = self.server.wrap(stream, payload) if self.combined else payload
        self._queue(stream, data, 0x1)
        if self.out_len > self.cfg.max_buffer:
            self.abort("slow_consumer", None, f"more than {self.cfg.max_buffer} bytes unsent")

    def push_message(self, key: str, data: bytes, opcode: int = 0x1) -> None:
        """Queue a non-market frame (reply, notice, garbage), counted under ``key``."""
        self._queue(key, data, opcode)
        self.wake.set()

    def _queue(self, key: str, data: bytes, opcode: int) -> None:
        f = frame(data, opcode)
        self.out.append(f)
        self.out_len += len(f)
        self.pend[key] = self.pend.get(key, 0) + 1
        self.pend_frames += 1
        self.pend_payload += len(data)

    def push_control(self, raw: bytes) -> None:
        """Queue protocol bytes from wsproto (ping, pong, close): not counted as frames."""
        self.out.append(raw)
        self.out_len += len(raw)
        self.wake.set()

    def _discard_unsent(self) -> None:
        self.out, self.out_len, self.pend, self.pend_frames, self.pend_payload = [], 0, {}, 0, 0

    def subscribe(self, stream: str) -> None:
        if stream not in self.subs:
            self.subs[stream] = None
            self.server.index_add(stream, self)

    def unsubscribe(self, stream: str) -> None:
        if stream in self.subs:
            del self.subs[stream]
            self.server.index_remove(stream, self)

    # ---------------------------------------------------------------- tasks

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._writer)
                nursery.start_soon(self._reader)
                nursery.start_soon(self._pinger)
                nursery.start_soon(self._lifetime)
        finally:
            self.ended = True
            self.server.unregister(self)
            st = self.stats
            st.closed = time.time()
            if st.close_kind is None:
                st.close_kind = "eof"
            st.subscriptions = list(self.subs)
            with trio.move_on_after(self.cfg.close_timeout) as cs:
                cs.shield = True
                await self._tcp_finish()

    async def _tcp_finish(self) -> None:
        """FIN after everything sent, then read until the client closes (no RST on unread data)."""
        try:
            await self.stream.send_eof()
            while await self.stream.receive_some(65536):
                pass
        except (*_GONE, OSError):
            pass
        finally:
            await self.stream.aclose()

    async def _writer(self) -> None:
        st = self.stats
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            if not self.out:
                self.drained.set()
                continue
            chunk = b"".join(self.out)
            pend, nf, npl = self.pend, self.pend_frames, self.pend_payload
            self._discard_unsent()
            try:
                await self.stream.send_all(chunk)
            except _GONE:
                self._end("reset", None, "client went away")
                return
            st.frames += nf
            st.payload_bytes += npl
            st.wire_bytes += len(chunk)
            fbs = st.frames_by_stream
            for k, v in pend.items():
                fbs[k] += v
            if not self.out:
                self.drained.set()

    async def _reader(self) -> None:
        ws = self.ws
        text_parts: list[str] = []
        size = 0
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except _GONE:
                self._end("reset", None, "connection reset by client")
                return
            if self.stalled_until:
                await trio.sleep_until(self.stalled_until)
            if not data:
                self._end("eof", None, "client closed TCP without a close frame")
                return
            try:
                ws.receive_data(data)
                events = list(ws.events())
            except wsproto.utilities.RemoteProtocolError as exc:
                self._end("protocol_error", 1002, str(exc)[:120])
                return
            for ev in events:
                if self.closing and not isinstance(ev, we.CloseConnection):
                    continue  # closing: only the client's close reply matters now
                if isinstance(ev, we.Message):
                    if isinstance(ev, we.TextMessage):
                        text_parts.append(ev.data)
                    size += len(ev.data)
                    if size > self.cfg.max_message:
                        self.begin_close("too_big", 1009, "Message too big")
                        continue
                    if not ev.message_finished:
                        continue
                    text = "".join(text_parts) if text_parts else None
                    text_parts, size = [], 0
                    if self._count_control():
                        self.push_message("!reply", self.server.on_message(self, text))
                elif isinstance(ev, we.Ping):
                    if not self._count_control():
                        continue
                    self.push_control(ws.send(ev.response()))
                    self.stats.pongs_sent += 1
                elif isinstance(ev, we.Pong):
                    self.stats.pongs_received += 1
                    self.ping_outstanding = None
                    self._count_control()
                elif isinstance(ev, we.CloseConnection):
                    await self._answer_close(ev)
                    return

    async def _answer_close(self, ev: we.CloseConnection) -> None:
        """The client closed: reply (dropping what is queued), drain, end."""
        if self.stats.close_kind is None:
            self.stats.close_kind = "client_close"
            self.stats.close_code, self.stats.close_reason = ev.code, ev.reason
        if not self.closing:
            self.closing = True
            self._discard_unsent()
            try:
                self.push_control(self.ws.send(ev.response()))
            except wsproto.utilities.LocalProtocolError:
                pass
            await self._drain()
        self._cancel()

    def _count_control(self) -> bool:
        """The limit on client messages; False if this one broke it (connection closing)."""
        now = trio.current_time()
        self.stats.control_received += 1
        q = self.ctl_times
        q.append(now)
        while q and q[0] <= now - self.cfg.control_window:
            q.popleft()
        if len(q) > self.cfg.control_limit:
            self.begin_close("rate_limit", 1008, "Too many requests")
            return False
        return True

    async def _pinger(self) -> None:
        cfg = self.cfg
        next_ping = trio.current_time() + cfg.ping_interval
        while True:
            deadline = next_ping
            if self.ping_outstanding is not None:
                deadline = min(deadline, self.ping_outstanding + cfg.pong_timeout)
            await trio.sleep_until(deadline)
            if self.stalled_until:
                await trio.sleep_until(self.stalled_until)
                self.ping_outstanding = None
                next_ping = trio.current_time() + cfg.ping_interval
                continue
            now = trio.current_time()
            if (
                self.ping_outstanding is not None
                and now >= self.ping_outstanding + cfg.pong_timeout
            ):
                self.begin_close("pong_timeout", 1008, "Pong timeout")
                return
            if now >= next_ping and not self.closing:
                self.push_control(self.ws.send(we.Ping(self.server.ping_payload())))
                self.stats.pings_sent += 1
                if self.ping_outstanding is None:
                    self.ping_outstanding = now
                next_ping = now + cfg.ping_interval

    async def _lifetime(self) -> None:
        await trio.sleep(self.cfg.lifetime)
        self.begin_close("lifetime", 1001, "Connection lifetime exceeded")

    # ---------------------------------------------------------------- endings

    def _cancel(self) -> None:
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    def _end(self, kind: str, code: int | None, reason: str | None) -> None:
        st = self.stats
        if st.close_kind is None:
            st.close_kind, st.close_code, st.close_reason = kind, code, reason
        self.closing = True
        self._cancel()

    def abort(self, kind: str, code: int | None, reason: str | None) -> None:
        """End now without a close frame; unsent frames are discarded (and were never counted)."""
        self._discard_unsent()
        self._end(kind, code, reason)

    def begin_close(self, kind: str, code: int, reason: str) -> None:
        """Orderly close: flush what is queued, send a close frame, wait for the reply."""
        if self.closing or self.ended:
            return
        self.closing = True
        st = self.stats
        if st.close_kind is None:
            st.close_kind, st.close_code, st.close_reason = kind, code, reason
        if self.nursery is not None:
            self.nursery.start_soon(self._close_sequence, code, reason)

    async def _close_sequence(self, code: int, reason: str) -> None:
        try:
            self.push_control(self.ws.send(we.CloseConnection(code=code, reason=reason)))
        except wsproto.utilities.LocalProtocolError:
            self._cancel()
            return
        await self._drain()
        # the reader cancels everything when the client's close reply arrives
        await trio.sleep(self.cfg.close_timeout)
        self._cancel()

    async def _drain(self) -> None:
        with trio.move_on_after(self.cfg.close_timeout):
            while self.out:
                self.drained = trio.Event()
                self.wake.set()
                await self.drained.wait()


class Transport:
    """Listeners, the HTTP loop, the WebSocket handshake and every connection's state.

    A venue's server subclasses it and implements the hooks (the methods that
    raise :class:`NotImplementedError`).  ``config`` is a
    :class:`engine.sim.server.SimConfig` (host, port and the limits above).
    """

    #: which stream names a URL or SUBSCRIBE may name (the venue's server sets it)
    valid_streams: Container[str]

    def __init__(self, config: Any) -> None:
        self.config = config
        self.port = 0
        self.index: dict[str, list[WsConn]] = {}
        self.conns: dict[int, WsConn] = {}
        self.closed: deque[ConnStats] = deque(maxlen=config.keep_closed)
        self._next_id = 0
        self.rest = Counter[str]()

    # ---------------------------------------------------------------- hooks

    def ws_route(self, path: str, query: str) -> tuple[bool, list[str]] | None:
        """``(combined, streams)`` a WebSocket URL asks for, or None (unknown path: 404)."""
        raise NotImplementedError

    def wrap(self, stream: str, payload: bytes) -> bytes:
        """A data frame as a combined-stream connection receives it."""
        raise NotImplementedError

    def on_message(self, conn: WsConn, text: str | None) -> bytes:
        """The reply to one client message (``None``: a binary message)."""
        raise NotImplementedError

    def on_rest(self, method: str, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        """``(HTTP status, JSON body)`` of one REST request."""
        raise NotImplementedError

    def error_body(self, msg: str) -> bytes:
        """The JSON body of an HTTP error (refused upgrade, bad stream names)."""
        raise NotImplementedError

    def ping_payload(self) -> bytes:
        return b""

    # ---------------------------------------------------------------- lifecycle

    async def listen(self, nursery: trio.Nursery) -> None:
        """Bind (``self.port`` is then the bound port) and serve connections in ``nursery``."""
        listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
        self.port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, self._handle_tcp, listeners)

    def distribute(self, stream: str, payload: bytes) -> None:
        """Queue one data frame for every connection subscribed to ``stream`` (no wake-up)."""
        conns = self.index.get(stream)
        if conns:
            for c in conns:
                c.push_data(stream, payload)

    def wake_all(self) -> None:
        """Wake the writer of every connection with something to send."""
        for c in self.conns.values():
            if c.out:
                c.wake.set()

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
        except (*_GONE, h11.RemoteProtocolError):
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
        url = urlsplit(req.target)
        route = self.ws_route(url.path.rstrip("/") or "/", url.query)
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
