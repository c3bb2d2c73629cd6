"""Connection lifecycle: connect, read, subscribe, keep alive, rotate, close, reconnect.

Owns: :class:`Connections` (one task per shard keeps its streams connected;
one task per connection from connect to close, with its session tasks and
the control messages it sends).  Every frame a
connection receives, sends or experiences is handed to the capture's one
journal-then-feed function (``journal``) the moment it happens: this module
never appends to the journal or feeds the pipeline itself, and must not
interpret market data (it only asks the codec for URLs, subscribe and
keep-alive bytes, and its :class:`engine.codecs.base.ConnLimits`).  Nothing here
knows a venue: every difference is a codec attribute.

::

    Connections.run ── nursery ── _shard × N ── nursery ─┬─ _conn_task (conn k)    ← reconnect loop in _shard
                                                        └─ _conn_task (conn k+1)  ← during a gap-free rotation

    _conn_task ── nursery ─┬─ trio-websocket's reader   (we own the TCP/TLS stream under it)
                           └─ _session ─┬─ _read     (receive → recv_ns → journal, nothing else first)
                                        ├─ _helpers ─┬─ _subscribe (subscribe chunks through the limiter)
                                        │            ├─ pinger    (own pings, unanswered: stall; liveness)
                                        │            ├─ _keepalive (the codec's application ping, if any)
                                        │            ├─ watchdog  (no data for N s: stale; liveness)
                                        │            └─ _rotation (lifetime / RotateRequest hand-over)
                                        └─ _closer   (clean close: our close frame, read to the peer's)

Closing without loss (stop, rotation): the helpers are cancelled, our close
frame goes out, and ``_read`` keeps journaling until the server's close frame
arrives (bounded by ``disconnect_timeout_s``), so every frame the server sent
before it saw our close is journaled.  trio-websocket's own ``aclose()`` would
drop those (it closes its queue first); see :func:`engine.live.websocket.send_close`.

Errors (:mod:`engine.live.errors`) end one connection: they are journaled as a
local ``error`` frame, counted by kind, logged, and the shard reconnects
(exponential backoff, full jitter, capped, reset after a stable period).

Streams onto connections: :mod:`engine.live.conn`; the liveness rules (our
pings and the stall rule, the stale watchdog, reconnect backoff):
:mod:`engine.live.liveness`.  Every control message we send — a subscribe, a
keep-alive, a resync's unsubscribe/subscribe (:meth:`Connections.resubscribe`),
at most ``limits.max_per_subscribe`` (and ``LiveConfig.subscribe_chunk``)
streams a request — goes through the connection's one
:class:`~engine.live.throttle.ControlLimiter` (the venue's published rate
minus one: room for a pong) and is journaled (``dir=out``) once sent.

Rotation without a gap: when a connection nears its lifetime or the fold asks
for it (:class:`engine.outputs.RotateRequest`, on ``serverShutdown``), the
shard opens the successor *first*; the old connection keeps reading (and
journaling) until the successor has received its first frame, then closes
with 1000.  The overlap is journaled from both connections (replay sees both;
reducers ignore depth they already have).
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
import trio
import trio_websocket
from trio_websocket import ConnectionClosed as WsClosed
from wsproto.utilities import ProtocolError

from engine.codecs.base import KeepAlive, Resubscribe
from engine.events import CAPTURE_STOPPED
from engine.journal.schema import Dir, Kind
from engine.live.config import LiveConfig
from engine.live.conn import Conn, conn_url, shard_streams
from engine.live.errors import (
    CaptureError,
    ConnectFailed,
    InvalidData,
    ServerClosed,
    StalledConnection,
    closed_error,
)
from engine.live.liveness import Backoff, pinger, watchdog
from engine.live.status import CaptureStatus
from engine.live.throttle import ControlLimiter
from engine.live.websocket import INVALID_TEXT, open_client, send_close

__all__ = ["Connections", "Journal", "RecordError"]

log = logging.getLogger("engine.live.connection")

time_ns = time.time_ns

#: the capture's journal-then-feed: ``(conn, dir, kind, source, payload, code=None, recv_ns=None) → seq``
Journal = Callable[..., int]
#: journal a CaptureError as a local error frame and count it: ``(conn, source, exc, where)``
RecordError = Callable[[int, str, CaptureError, str], None]


class Connections:
    """Every connection of one capture: keeps each shard's streams connected until :meth:`stop`.

    Args:
        config: endpoints and timing knobs.
        codec: stream names, URLs and SUBSCRIBE bytes.
        status: counters updated in place (connects, reconnects, rotations, errors ...).
        rng: randomness for backoff jitter.
        journal: the capture's journal-then-feed function (every frame goes through it).
        record_error: journals and counts a connection's error.
    """

    def __init__(
        self,
        config: LiveConfig,
        codec: Any,
        status: CaptureStatus,
        rng: random.Random,
        journal: Journal,
        record_error: RecordError,
    ) -> None:
        self.config = config
        self.codec = codec
        self.status = status
        self.rng = rng
        self._journal = journal
        self._record_error = record_error
        self.streams = codec.streams(list(config.symbols), list(config.channels))
        self.shards = shard_streams(codec, self.streams, config.max_streams_per_conn)
        self.conns: dict[int, Conn] = {}
        self._next_conn = 1
        self._ssl = ssl.create_default_context()
        if not config.verify_tls:
            self._ssl.check_hostname = False
            self._ssl.verify_mode = ssl.CERT_NONE
        self.stopping = False
        self._all_closed: trio.Event | None = None

    # ------------------------------------------------------------------ public

    async def run(self) -> None:
        """Keep every shard connected until :meth:`stop` (then return once all closed) or cancellation."""
        self._all_closed = trio.Event()
        async with trio.open_nursery() as n:
            for i, shard in enumerate(self.shards):
                n.start_soon(self._shard, i, shard)

    async def stop(self) -> None:
        """Close every connection cleanly; return when all are closed (bounded by the close timeout)."""
        self.stopping = True
        for c in list(self.conns.values()):
            self._close(c, CAPTURE_STOPPED)
        if self.conns and self._all_closed is not None:
            with trio.move_on_after(self.config.disconnect_timeout_s + 0.5):
                await self._all_closed.wait()

    def rotate(self, conn: int, why: str) -> None:
        """Open a successor for connection ``conn`` and close it once the successor delivers."""
        c = self.conns.get(conn)
        if c is not None and not c.rotating and not c.done:
            log.info("conn %d: %s, rotating", c.id, why)
            self._start_rotation(c, why)

    def open_count(self) -> int:
        return sum(1 for c in self.conns.values() if c.ws is not None)

    def resubscribe(self, plan: Resubscribe) -> bool:
        """Send a resync's unsubscribe, then subscribe messages on the open connection carrying
        ``plan.streams`` (through its limiter, each journaled).  False: no such connection is
        open (its reconnect subscribes afresh anyway)."""
        want = set(plan.streams)
        for c in self.conns.values():
            if (
                c.ws is not None
                and c.session is not None
                and c.closing is None
                and not c.rotating
                and want.issubset(c.streams)
            ):
                c.session.start_soon(self._guard, c, self._resubscribe, c, c.ws, plan)
                return True
        log.info("resync of %s: no open connection carries it now", ", ".join(plan.streams))
        return False

    def _marker(self, text: str) -> None:
        self._journal(0, Dir.LOCAL, Kind.MARKER, "engine", text.encode())

    # ------------------------------------------------------------------ shards and reconnects

    def _new_conn(self, shard: int, streams: list[str]) -> Conn:
        url, k = conn_url(self.codec, self.config.ws_url, streams, self.config.max_url_len)
        c = Conn(self._next_conn, shard, url, streams, k)
        self._next_conn += 1
        return c

    async def _shard(self, index: int, streams: list[str]) -> None:
        """Keep one shard's streams connected: reconnect with backoff, rotate without a gap."""
        cfg = self.config
        backoff = Backoff(cfg.backoff_base_s, cfg.backoff_cap_s, self.rng)
        prev: Conn | None = None
        first = True
        async with trio.open_nursery() as n:
            rotating = False
            while not self.stopping:
                c = self._new_conn(index, streams)
                if not first and not rotating:
                    self.status.reconnects += 1
                first = False
                n.start_soon(self._conn_task, c, prev)
                await c.signal.wait()
                if self.stopping:
                    break
                rotating = c.rotating and not c.done
                if rotating:
                    self.status.rotations += 1
                    backoff.reset()
                    prev = c
                    continue
                if prev is not None and prev.done:
                    prev = None
                if c.opened_at and trio.current_time() - c.opened_at >= cfg.stable_after_s:
                    backoff.reset()
                delay = backoff.next_delay()
                log.info("shard %d: reconnecting in %.2f s", index, delay)
                await trio.sleep(delay)

    def _start_rotation(self, c: Conn, why: str) -> None:
        if c.rotating or c.done:
            return
        c.rotating = True
        self._marker(f"rotate conn {c.id}: {why}")
        c.rotate.set()
        c.signal.set()

    async def _open(self, c: Conn, nursery: trio.Nursery) -> Any:
        """TCP (+TLS), then the WebSocket handshake; the stream is kept so we can always close it."""
        cfg = self.config
        parts = urlsplit(c.url)
        tls = parts.scheme == "wss"
        host = parts.hostname or ""
        port = parts.port or (443 if tls else 80)
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            with trio.fail_after(cfg.connect_timeout_s):
                if tls:
                    c.stream = await trio.open_ssl_over_tcp_stream(
                        host, port, ssl_context=self._ssl, https_compatible=True
                    )
                else:
                    c.stream = await trio.open_tcp_stream(host, port)
                return await open_client(
                    nursery,
                    c.stream,
                    host if port in (80, 443) else f"{host}:{port}",
                    resource,
                    message_queue_size=cfg.message_queue,
                    max_message_size=cfg.max_message_bytes,
                )
        except trio.TooSlowError:
            raise ConnectFailed(f"connect timed out after {cfg.connect_timeout_s} s") from None
        except (OSError, trio.BrokenResourceError) as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from None

    async def _conn_task(self, c: Conn, prev: Conn | None) -> None:
        """One connection from connect to close; every ending is journaled, none raises."""
        self.conns[c.id] = c
        close_code: int | None = None
        close_reason = ""
        try:
            async with _single_errors(), trio.open_nursery() as n:
                ws = await self._open(c, n)
                c.ws = ws
                c.opened_at = trio.current_time()
                self.status.connects += 1
                info = {
                    "local": f"{ws.local.address}:{ws.local.port}",
                    "remote": f"{ws.remote.address}:{ws.remote.port}",
                    "streams": len(c.streams),
                    "shard": c.shard,
                }
                self._journal(c.id, Dir.LOCAL, Kind.OPEN, c.url, orjson.dumps(info))
                try:
                    await self._session(c, ws, prev)
                finally:
                    close_code, close_reason = await self._end_ws(c, ws)
                    n.cancel_scope.cancel()
        except CaptureError as exc:
            c.error = exc
        except trio_websocket.HandshakeError as exc:  # raised in trio-websocket's reader task
            c.error = ConnectFailed(f"handshake: {exc}")
        except ProtocolError as exc:  # wsproto refused what the peer (or trio-websocket) did
            c.error = (
                ConnectFailed(f"handshake: {exc}")
                if c.ws is None
                else InvalidData(f"protocol error: {exc}")
            )
        except Exception as exc:  # noqa: BLE001 - a bug in one connection must not stop the capture
            c.error = CaptureError(f"internal {type(exc).__name__}: {exc}")
            log.exception("conn %d: unexpected error", c.id)
        finally:
            if c.stream is not None:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(c.stream)
            # journal the ending (sync from here: works under cancellation too)
            if c.error is not None and not isinstance(c.error, ServerClosed):
                self._record_error(c.id, c.url, c.error, "connect" if c.ws is None else "session")
            elif isinstance(c.error, ServerClosed):
                self.status.errors[c.error.kind] += 1
                self.status.last_error = str(c.error)
                log.warning("conn %d %s", c.id, c.error)
            if c.ws is not None:
                self._journal(c.id, Dir.LOCAL, Kind.CLOSE, c.url, close_reason.encode(), close_code)
            c.ws = None
            c.done = True
            c.signal.set()
            self.conns.pop(c.id, None)
            if self.stopping and not self.conns and self._all_closed is not None:
                self._all_closed.set()

    async def _end_ws(self, c: Conn, ws: Any) -> tuple[int | None, str]:
        """Finish the WebSocket after the session; returns the (code, reason) to journal.

        A clean close already happened in :meth:`_closer`.  A stalled peer gets no
        close handshake (it would not answer): 1006, as for any abort.  Other
        errors get a bounded close handshake (never trio-websocket's 60 s).
        """
        err = c.error
        if err is None:
            return 1000, c.closing or ("rotated" if c.rotating else CAPTURE_STOPPED)
        if isinstance(err, ServerClosed):
            return err.code, err.reason
        if isinstance(err, StalledConnection):
            return 1006, err.kind
        with trio.move_on_after(self.config.disconnect_timeout_s) as cs:
            cs.shield = True
            try:
                await ws.aclose(1000, err.kind)
            except Exception:  # noqa: BLE001 - closing a broken socket may fail any way
                pass
        return 1000, err.kind

    def _close(self, c: Conn, reason: str) -> None:
        """Begin a clean close of ``c``: stop its helpers, send our close frame, keep journaling."""
        if c.closing is not None or c.done or c.ws is None or c.session is None:
            return
        c.closing = reason
        if c.helpers is not None:
            c.helpers.cancel()
        c.session.start_soon(self._closer, c, c.ws)

    async def _closer(self, c: Conn, ws: Any) -> None:
        """Send the close frame; the reader journals until the peer's close (bounded), then end."""
        with trio.move_on_after(self.config.disconnect_timeout_s):
            try:
                await send_close(ws, 1000, c.closing or "")
            except WsClosed:
                pass  # closed meanwhile: the reader ends by itself
            await c.read_done.wait()
        assert c.scope is not None
        c.scope.cancel()

    async def _session(self, c: Conn, ws: Any, prev: Conn | None) -> None:
        """Run the reader and the helpers (subscriber, pinger, watchdog, rotation) until the end."""
        try:
            with trio.CancelScope() as scope:
                c.scope = scope
                async with trio.open_nursery() as n:
                    c.session = n
                    n.start_soon(self._guard, c, self._read, c, ws, prev)
                    n.start_soon(self._helpers, c, ws)
                    if self.stopping:
                        self._close(c, CAPTURE_STOPPED)
        finally:
            c.session = None

    async def _helpers(self, c: Conn, ws: Any) -> None:
        with trio.CancelScope() as scope:
            c.helpers = scope
            async with trio.open_nursery() as n:
                if c.url_streams < len(c.streams):
                    n.start_soon(self._guard, c, self._subscribe, c, ws)
                n.start_soon(self._guard, c, pinger, c, ws, self.config, self._limiter(c))
                if self.codec.keepalive is not None:
                    n.start_soon(self._guard, c, self._keepalive, c, ws, self.codec.keepalive)
                n.start_soon(self._guard, c, watchdog, c, self.config.stale_after_s)
                n.start_soon(self._guard, c, self._rotation, c)

    async def _guard(self, c: Conn, fn: Callable[..., Any], *args: Any) -> None:
        """Run one session task; a CaptureError records the connection's error and ends the session."""
        try:
            await fn(*args)
        except CaptureError as exc:
            if c.error is None:
                c.error = exc
            assert c.scope is not None
            c.scope.cancel()

    # ------------------------------------------------------------------ session tasks

    async def _read(self, c: Conn, ws: Any, prev: Conn | None) -> None:
        """THE hot loop: receive → recv_ns → journal (then the pipeline).  Nothing else comes first."""
        journal = self._journal
        st = self.status
        cid, src = c.id, c.url
        text, binary, dir_in = Kind.TEXT, Kind.BINARY, Dir.IN
        get = ws.get_message
        try:
            msg = await get()
        except WsClosed as exc:
            self._read_closed(c, exc)
            return
        c.ready.set()
        if prev is not None:
            prev.release.set()
        while True:
            recv_ns = time_ns()
            code = None
            if msg.__class__ is str:
                try:
                    payload = msg.encode()
                    kind = text
                except UnicodeEncodeError:  # invalid UTF-8, kept by _RawTextClient: the exact bytes
                    payload = msg.encode("utf-8", "surrogateescape")
                    kind, code = binary, INVALID_TEXT
                    self._invalid_text(c, payload)
            else:
                payload = bytes(msg)
                kind = binary
            c.frames += 1
            st.frames_in += 1
            st.bytes_in += len(payload)
            journal(cid, dir_in, kind, src, payload, code, recv_ns)
            try:
                msg = await get()
            except WsClosed as exc:
                self._read_closed(c, exc)
                return

    def _invalid_text(self, c: Conn, payload: bytes) -> None:
        """Count (and log the first few of) the text frames that were not UTF-8."""
        n = self.status.errors["invalid_utf8"] = self.status.errors["invalid_utf8"] + 1
        if n <= 3 or not n & (n - 1):
            try:
                payload.decode()
            except UnicodeDecodeError as exc:
                log.warning(
                    "conn %d: text frame of %d bytes is not UTF-8 (%s at byte %d): journaled as "
                    "binary, code %d (%d so far)", c.id, len(payload), exc.reason, exc.start,
                    INVALID_TEXT, n,
                )  # fmt: skip

    def _read_closed(self, c: Conn, exc: WsClosed) -> None:
        """The peer's close: the end of a clean close we began, or an error."""
        if c.closing is None:
            raise closed_error(exc) from None
        c.read_done.set()

    async def _send_control(self, c: Conn, ws: Any, limiter: ControlLimiter, data: bytes) -> None:
        await limiter.acquire()
        if c.closing is not None:  # our close frame is out: see engine.live.liveness.await_pong
            return
        try:
            await ws.send_message(data.decode())
        except WsClosed as exc:
            raise closed_error(exc) from None
        self._journal(c.id, Dir.OUT, Kind.TEXT, c.url, data)
        self.status.frames_out += 1

    def _request_id(self, c: Conn) -> int:
        """A fresh control-request id for ``c`` (unique across the capture's connections)."""
        c.requests += 1
        return c.id * 10_000 + c.requests

    async def _subscribe(self, c: Conn, ws: Any) -> None:
        """Subscribe the streams the URL does not carry, in chunks, through the rate limiter."""
        chunk = max(1, min(self.config.subscribe_chunk, self.codec.limits.max_per_subscribe))
        rest = c.streams[c.url_streams :]
        for i in range(0, len(rest), chunk):
            for msg in self.codec.subscribe(rest[i : i + chunk], self._request_id(c)):
                await self._send_control(c, ws, self._limiter(c), msg)

    async def _resubscribe(self, c: Conn, ws: Any, plan: Resubscribe) -> None:
        for msg in (*plan.unsubscribe, *plan.subscribe):
            await self._send_control(c, ws, self._limiter(c), msg)

    async def _keepalive(self, c: Conn, ws: Any, ka: KeepAlive) -> None:
        """The venue's application-level ping every ``ka.interval_s`` (its answer is a data frame,
        so the stale watchdog sees it)."""
        while True:
            await trio.sleep(ka.interval_s)
            await self._send_control(c, ws, self._limiter(c), ka.payload)

    def _limiter(self, c: Conn) -> ControlLimiter:
        if c.limiter is None:
            lim = self.codec.limits
            rate = self.config.control_per_s
            if rate is None:  # the venue's published rate, one less: room for the pong
                rate = lim.control_per_window - 1
            c.limiter = ControlLimiter(max(1, rate), lim.control_window_s)
        return c.limiter

    async def _rotation(self, c: Conn) -> None:
        """Rotate before the lifetime; after a rotation starts, close once the successor is ready."""
        cfg = self.config
        with trio.move_on_after(cfg.lifetime_s):
            await c.rotate.wait()
        if not c.rotating:
            self._start_rotation(c, f"lifetime {cfg.lifetime_s} s")
        with trio.move_on_after(cfg.handoff_timeout_s):
            await c.release.wait()
        self._close(c, "rotated")


@contextlib.asynccontextmanager
async def _single_errors() -> Any:
    """Unwrap an exception group holding one real error (trio wraps nursery-body errors).

    ``Cancelled`` leaves next to it are dropped: the enclosing scope is
    cancelled anyway and the next checkpoint raises again.
    """
    try:
        yield
    except BaseExceptionGroup as eg:
        real = [e for e in _leaves(eg) if not isinstance(e, trio.Cancelled)]
        if len(real) == 1:
            raise real[0] from None
        raise


def _leaves(eg: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in eg.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out
