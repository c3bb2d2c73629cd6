"""The embedded Binance-spot exchange simulator: one trio server on 127.0.0.1, WebSocket + REST.

This module owns the simulator's I/O and its Binance *rules*: the WebSocket
paths (``/ws/<stream>``, ``/ws`` + SUBSCRIBE, ``/stream?streams=a/b`` with the
``{"stream":..,"data":..}`` wrapper), live SUBSCRIBE / UNSUBSCRIBE /
LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY with Binance's replies and
error codes, keep-alive pings, the control-message rate limit, the stream limit,
the connection lifetime, ``serverShutdown``, fault injection, and per-connection
counters.  REST on the same port: ``GET /api/v3/depth``, ``/api/v3/ping``,
``/api/v3/time`` and the debug endpoints ``/sim/stats`` and ``/sim/inject``.
The *content* of the streams comes from :class:`engine.sim.model.Market`; this
module must not invent market data, and must not depend on the engine's codecs
or reducers.

Sans-I/O at the edges: h11 parses the HTTP request, wsproto does the WebSocket
handshake and parses client frames.  Outgoing *data* frames are framed by hand
(a server frame is an unmasked header + payload) so one pump tick's frames go out
in a single ``send_all`` — that is how the simulator pushes ≥ 50k frames/s
(bench/simulate.py).  No permessage-deflate is negotiated, so hand framing is exact.

Time: the pump maps wall time to simulated time (``start_ms`` + elapsed) every
``tick`` seconds and hands the market's frames to every subscribed connection.
If the model cannot keep up, simulated time lags instead of spiralling (at most
``max_catchup_ms`` of simulated time per tick; ``stats()["lag_ms"]``).  The cap
is small (20 ms) on purpose: the writers only get the CPU between pump ticks,
and each turn sends about one socket buffer, so long catch-up ticks starve them
(``bench/simulate.py`` prints the push rate an overloaded simulator keeps).

Rules, as implemented (Binance spot, see shared/protocols.md):

* Control messages: every *client* text/binary message, ping and pong counts;
  more than ``control_limit`` (5) within any sliding ``control_window`` (1 s,
  half-open ``(now-1s, now]``) closes the connection with 1008 "Too many
  requests".  Strict on purpose: a client that passes this passes Binance.
* Keep-alive: a ping every ``ping_interval`` (20 s) with the simulated ms as
  payload; no pong (any pong counts) within ``pong_timeout`` (60 s) of the
  first unanswered ping ⇒ close 1008 "Pong timeout".  Client pings get pongs.
* At most ``max_streams`` (1024) per connection: a URL with more is rejected
  with HTTP 400; a SUBSCRIBE that would exceed it gets error code 2.
* Unknown stream names are rejected (HTTP 400 on the URL, code 2 on SUBSCRIBE).
  Real Binance accepts and stays silent; strictness catches client typos.
* Lifetime: after ``lifetime`` seconds (24 h) the server closes with 1001.
* ``serverShutdown``: ``{"e":"serverShutdown","E":<ms>}`` sent *unwrapped*
  on raw and combined connections alike (it is not a stream's event), then
  ``shutdown_grace`` seconds of normal streaming (so a client can open its
  replacement first), then close 1001 "Server shutdown".

Counters (``stats()``, ``GET /sim/stats``): per connection, a frame is counted
when the ``send_all`` carrying it returned.  Keys of ``frames_by_stream``:
stream names for data, ``"!reply"`` for replies to control messages,
``"!serverShutdown"`` and ``"!garbage"``.  Pings/pongs/close frames are not
frames; they have their own counters.  An abrupt end (drop fault, slow
consumer) discards frames not yet handed to the socket: they were never sent,
so they are not counted — a client that journals everything it received must
hold exactly ``frames`` messages.

Faults (``inject()`` / ``faults=[...]`` + ``fault_every``; scheduled faults
hit every open WebSocket connection, round-robin over the list):

* ``drop``: no close frame; TCP FIN (after already-sent data), client sees 1006.
* ``stall``: stop sending *and* reading (so pings go unanswered) for
  ``stall_duration`` seconds, then resume.
* ``garbage``: four invalid frames: random bytes (binary frame), truncated
  JSON, a depthUpdate/trade with wrong types, and non-JSON text.
* ``gap``: withhold the next ``@depth@100ms`` batch of one subscribed symbol
  from this connection (the client sees ``U`` > previous ``u`` + 1).
* ``close``: close frame with ``code``/``reason`` (default 1011 "Simulated close").
* ``shutdown``: the serverShutdown notice, grace, close 1001.
* ``drift``: server-wide: the next REST snapshot (any symbol) reports one level
  with a different quantity than the stream implies.
"""

from __future__ import annotations

import json
import random
import struct
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio
import wsproto
import wsproto.events as we
from wsproto import ConnectionType

from engine.num import parse, render
from engine.sim.model import DEFAULT_SYMBOLS, Market, activity_for_rate

__all__ = ["FAULTS", "SimConfig", "SimServer", "ConnStats"]

#: Fault kinds, in the order ``--faults`` documents them.
FAULTS = ("drop", "stall", "garbage", "gap", "close", "shutdown", "drift")

_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


@attrs.define
class SimConfig:
    """Everything that shapes a simulator run; the defaults are Binance's real limits.

    ``rate`` (frames/s over all streams of all symbols) sets the market's
    activity via :func:`engine.sim.model.activity_for_rate`; ``None`` keeps a
    calm market (``activity`` order-flow events/s per symbol).  ``epoch`` is the
    simulated exchange time (epoch ms) the market starts at; ``None`` (the default)
    means the wall clock when the server is built, so exchange times (``E``, ``T``,
    kline ``t``) read like the receive times a client stamps.  Pass a fixed epoch
    for reproducible bytes (tests, benches).
    """

    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 0
    symbols: Sequence[str] = DEFAULT_SYMBOLS
    rate: float | None = None
    activity: float = 20.0
    epoch: int | None = None
    ping_interval: float = 20.0
    pong_timeout: float = 60.0
    max_streams: int = 1024
    lifetime: float = 86_400.0
    control_limit: int = 5
    control_window: float = 1.0
    faults: Sequence[str] = ()
    fault_every: float | None = None
    stall_duration: float = 10.0
    shutdown_grace: float = 1.0
    close_timeout: float = 2.0
    handshake_timeout: float = 10.0
    tick: float = 0.005
    max_catchup_ms: int = 20
    max_buffer: int = 64 * 1024 * 1024
    max_message: int = 64 * 1024
    keep_closed: int = 1000

    def __attrs_post_init__(self) -> None:
        bad = [f for f in self.faults if f not in FAULTS]
        if bad:
            raise ValueError(f"unknown fault(s) {bad}; choose from {', '.join(FAULTS)}")
        if self.faults and not self.fault_every:
            raise ValueError("faults need fault_every (seconds between injections)")
        if self.max_streams < 1 or self.control_limit < 1:
            raise ValueError("max_streams and control_limit must be >= 1")

    def market_activity(self) -> float:
        if self.rate is None:
            return self.activity
        return activity_for_rate(self.rate, len(self.symbols))


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


# --------------------------------------------------------------------------- framing


def _frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """An unmasked, unfragmented server frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


_WRAP: dict[str, bytes] = {}


def _wrap_prefix(stream: str) -> bytes:
    p = _WRAP.get(stream)
    if p is None:
        p = _WRAP[stream] = b'{"stream":"' + stream.encode() + b'","data":'
    return p


def _error(code: int, msg: str, rid: Any) -> bytes:
    return json.dumps(
        {"error": {"code": code, "msg": msg}, "id": rid}, separators=(",", ":")
    ).encode()


def _result(result: Any, rid: Any) -> bytes:
    return json.dumps({"result": result, "id": rid}, separators=(",", ":")).encode()


class _Closing(Exception):
    """Internal: a connection must end (kind, code, reason); raised inside its own tasks."""


# --------------------------------------------------------------------------- one connection


class _WsConn:
    """One WebSocket client: reader, writer, pinger, lifetime and fault tasks in one nursery."""

    def __init__(
        self,
        server: SimServer,
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
        self.stalled_until = 0.0
        self.gap_symbols: set[str] = set()
        self.ctl_times: deque[float] = deque()
        self.ping_outstanding: float | None = None
        self.drained = trio.Event()
        self.nursery: trio.Nursery | None = None

    # ---------------------------------------------------------------- queueing

    def push_data(self, stream: str, payload: bytes) -> None:
        """Queue one market frame (called by the pump; must stay cheap)."""
        if self.closing or self.stalled_until:
            return
        if self.gap_symbols and stream.endswith("@depth@100ms"):
            sym = stream.split("@", 1)[0]
            if sym in self.gap_symbols:
                self.gap_symbols.discard(sym)
                self.stats.faults.append(f"gap:{stream}")
                return
        data = _wrap_prefix(stream) + payload + b"}" if self.combined else payload
        frame = _frame(data)
        self.out.append(frame)
        self.out_len += len(frame)
        self.pend[stream] = self.pend.get(stream, 0) + 1
        self.pend_frames += 1
        self.pend_payload += len(data)
        if self.out_len > self.cfg.max_buffer:
            self.abort("slow_consumer", None, f"more than {self.cfg.max_buffer} bytes unsent")

    def push_message(self, key: str, data: bytes, opcode: int = 0x1) -> None:
        """Queue a non-market frame (reply, notice, garbage), counted under ``key``."""
        frame = _frame(data, opcode)
        self.out.append(frame)
        self.out_len += len(frame)
        self.pend[key] = self.pend.get(key, 0) + 1
        self.pend_frames += 1
        self.pend_payload += len(data)
        self.wake.set()

    def push_control(self, raw: bytes) -> None:
        """Queue protocol bytes from wsproto (ping, pong, close): not counted as frames."""
        self.out.append(raw)
        self.out_len += len(raw)
        self.wake.set()

    # ---------------------------------------------------------------- tasks

    async def run(self) -> None:
        reason: tuple[str, int | None, str | None] = ("eof", None, None)
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._writer)
                nursery.start_soon(self._reader)
                nursery.start_soon(self._pinger)
                nursery.start_soon(self._lifetime)
        finally:
            self.ended = True
            self.server._unregister(self)
            st = self.stats
            st.closed = time.time()
            if st.close_kind is None:
                st.close_kind, st.close_code, st.close_reason = reason
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
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
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
            self.out, self.out_len, self.pend, self.pend_frames, self.pend_payload = [], 0, {}, 0, 0
            try:
                await self.stream.send_all(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
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
        bin_parts: list[bytes] = []
        size = 0
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
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
                if isinstance(ev, we.TextMessage):
                    text_parts.append(ev.data)
                    size += len(ev.data)
                elif isinstance(ev, we.BytesMessage):
                    bin_parts.append(bytes(ev.data))
                    size += len(ev.data)
                if isinstance(ev, we.Message):
                    if size > self.cfg.max_message:
                        self.begin_close("too_big", 1009, "Message too big")
                        continue
                    if not ev.message_finished:
                        continue
                    text = "".join(text_parts) if text_parts else None
                    text_parts, bin_parts, size = [], [], 0
                    if not self._count_control():
                        continue
                    self._handle_request(text)
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
                    if self.stats.close_kind is None:
                        self.stats.close_kind = "client_close"
                        self.stats.close_code, self.stats.close_reason = ev.code, ev.reason
                    if not self.closing:
                        self.closing = True
                        self.out, self.out_len, self.pend = [], 0, {}
                        self.pend_frames = self.pend_payload = 0
                        try:
                            self.push_control(ws.send(ev.response()))
                        except wsproto.utilities.LocalProtocolError:
                            pass
                        await self._drain()
                    self._cancel()
                    return

    def _count_control(self) -> bool:
        """Binance's limit on client messages; False if this one broke it (connection closing)."""
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
                self.push_control(self.ws.send(we.Ping(str(self.server.sim_now()).encode())))
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
        self.out, self.out_len, self.pend, self.pend_frames, self.pend_payload = [], 0, {}, 0, 0
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

    # ---------------------------------------------------------------- faults

    def inject(self, fault: str, **kw: Any) -> None:
        if self.nursery is None or self.closing or self.ended:
            return
        self.stats.faults.append(fault)
        if fault == "drop":
            self.abort("drop", None, "simulated TCP drop")
        elif fault == "stall":
            self.stalled_until = trio.current_time() + float(
                kw.get("duration", self.cfg.stall_duration)
            )
            self.nursery.start_soon(self._unstall)
        elif fault == "garbage":
            for kind, data, op in self.server._garbage(self.subs, self.combined, kw.get("kind")):
                self.push_message("!garbage", data, op)
                self.stats.faults.append(f"garbage:{kind}")
        elif fault == "gap":
            syms = [s.split("@", 1)[0] for s in self.subs if s.endswith("@depth@100ms")]
            if kw.get("symbol"):
                syms = [str(kw["symbol"]).lower()]
            if syms:
                self.gap_symbols.add(syms[0])
        elif fault == "close":
            self.begin_close(
                "close", int(kw.get("code", 1011)), str(kw.get("reason", "Simulated close"))
            )
        elif fault == "shutdown":
            notice = f'{{"e":"serverShutdown","E":{self.server.sim_now()}}}'.encode()
            self.push_message("!serverShutdown", notice)
            self.nursery.start_soon(self._shutdown_later)

    async def _unstall(self) -> None:
        await trio.sleep_until(self.stalled_until)
        self.stalled_until = 0.0

    async def _shutdown_later(self) -> None:
        await trio.sleep(self.cfg.shutdown_grace)
        self.begin_close("shutdown", 1001, "Server shutdown")

    # ---------------------------------------------------------------- requests

    def _handle_request(self, text: str | None) -> None:
        """One client text message → one reply (Binance's codes: 0..3, id may be null)."""
        reply = self._reply(text)
        self.push_message("!reply", reply)

    def _reply(self, text: str | None) -> bytes:
        if text is None:
            return _error(3, "Invalid JSON: expected a text frame", None)
        try:
            req = json.loads(text)
        except ValueError as exc:
            return _error(3, f"Invalid JSON: {exc}", None)
        if not isinstance(req, dict):
            return _error(2, "Invalid request: request must be a JSON object", None)
        if "id" not in req:
            return _error(2, "Invalid request: missing field `id`", None)
        rid = req["id"]
        ok_id = (
            rid is None
            or (isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid < 2**63)
            or (
                isinstance(rid, str)
                and 0 < len(rid) <= 36
                and rid.replace("-", "").replace("_", "").isalnum()
            )
        )
        if not ok_id:
            return _error(
                2,
                "Invalid request: request ID must be an unsigned integer or a string of up to 36 alphanumerics",
                None,
            )
        if "method" not in req:
            return _error(2, "Invalid request: missing field `method`", rid)
        method = req["method"]
        if method not in _METHODS:
            return _error(
                2,
                f"Invalid request: unknown variant `{method}`, expected one of "
                + ", ".join(f"`{m}`" for m in _METHODS),
                rid,
            )
        params = req.get("params", [])
        if method == "LIST_SUBSCRIPTIONS":
            return _result(list(self.subs), rid)
        if not isinstance(params, list):
            return _error(2, "Invalid request: `params` must be an array", rid)
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            return self._property(method, params, rid)
        if any(not isinstance(p, str) for p in params):
            return _error(1, "Invalid value type: expected String", rid)
        if not params:
            return _error(2, "Invalid request: `params` must name at least one stream", rid)
        valid = self.server.valid_streams
        unknown = [p for p in params if p not in valid]
        if unknown:
            return _error(2, f"Invalid request: unknown stream `{unknown[0]}`", rid)
        if method == "SUBSCRIBE":
            new = [p for p in dict.fromkeys(params) if p not in self.subs]
            if len(self.subs) + len(new) > self.cfg.max_streams:
                return _error(
                    2,
                    f"Invalid request: too many streams (max {self.cfg.max_streams} per connection)",
                    rid,
                )
            for p in new:
                self.subs[p] = None
                self.server._index_add(p, self)
        else:
            for p in params:
                if p in self.subs:
                    del self.subs[p]
                    self.server._index_remove(p, self)
        return _result(None, rid)

    def _property(self, method: str, params: list[Any], rid: Any) -> bytes:
        if not params or params[0] != "combined":
            return _error(0, "Unknown property", rid)
        if method == "GET_PROPERTY":
            return _result(self.combined, rid)
        if len(params) != 2 or not isinstance(params[1], bool):
            return _error(1, "Invalid value type: expected Boolean", rid)
        self.combined = params[1]
        return _result(None, rid)


# --------------------------------------------------------------------------- the server


class SimServer:
    """The simulator: a market, a pump, the listeners, and every connection's state.

    Use :func:`engine.sim.cli.open_simulator` to run one; this class is the
    engine room (``start`` needs a nursery).
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.start_ms = config.epoch if config.epoch is not None else int(time.time() * 1000)
        self.market = Market(
            seed=config.seed,
            symbols=list(config.symbols),
            activity=config.market_activity(),
            start_ms=self.start_ms,
        )
        self.valid_streams = frozenset(self.market.streams())
        self.symbols_upper = frozenset(self.market.symbols)
        self._init_connections(config)

    def _init_connections(self, config: SimConfig) -> None:
        """The connection machinery's state (what a server with another market reuses)."""
        self.config = config
        self.port = 0
        self._t0 = 0.0
        self._index: dict[str, list[_WsConn]] = {}
        self._conns: dict[int, _WsConn] = {}
        self._closed: deque[ConnStats] = deque(maxlen=config.keep_closed)
        self._next_id = 0
        self._drift_pending = 0
        self._rng = random.Random(f"faults:{config.seed}")
        self.rest = Counter[str]()
        self.fault_log: list[dict[str, Any]] = []
        self.lag_ms = 0

    # ---------------------------------------------------------------- lifecycle

    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
        self.port = listeners[0].socket.getsockname()[1]
        self._t0 = trio.current_time()
        nursery.start_soon(trio.serve_listeners, self._handle_tcp, listeners)
        nursery.start_soon(self._pump)
        if self.config.faults and self.config.fault_every:
            nursery.start_soon(self._fault_schedule)

    def sim_now(self) -> int:
        """Simulated ms the market has reached."""
        return self.market.now_ms

    async def _pump(self) -> None:
        cfg, market = self.config, self.market
        tick = cfg.tick
        nxt = trio.current_time()
        while True:
            nxt += tick
            now = trio.current_time()
            if nxt < now:
                nxt = now  # overloaded: do not queue up missed ticks
            await trio.sleep_until(nxt)
            target = self.start_ms + int((trio.current_time() - self._t0) * 1000)
            to = min(target, market.now_ms + cfg.max_catchup_ms)
            self.lag_ms = target - to
            events = market.advance(to)
            if events:
                self._distribute(events)

    def _distribute(self, events: list[tuple[str, bytes]]) -> None:
        index = self._index
        for stream, payload in events:
            conns = index.get(stream)
            if conns:
                for c in conns:
                    c.push_data(stream, payload)
        self._wake_all()

    def _wake_all(self) -> None:
        """Wake the writer of every connection with something to send."""
        for c in self._conns.values():
            if c.out:
                c.wake.set()

    def _index_add(self, stream: str, conn: _WsConn) -> None:
        self._index.setdefault(stream, []).append(conn)

    def _index_remove(self, stream: str, conn: _WsConn) -> None:
        lst = self._index.get(stream)
        if lst and conn in lst:
            lst.remove(conn)

    def _unregister(self, conn: _WsConn) -> None:
        for s in conn.subs:
            self._index_remove(s, conn)
        self._conns.pop(conn.id, None)
        self._closed.append(conn.stats)

    # ---------------------------------------------------------------- faults

    def inject(self, fault: str, conn_id: int | None = None, **kw: Any) -> list[int]:
        """Inject ``fault`` now into one connection (``conn_id``) or all open ones.

        Returns the ids of the connections it was applied to (``[]`` for ``drift``,
        which arms the next REST snapshot instead).

        Raises:
            ValueError: unknown fault kind, or no open connection with ``conn_id``.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose from {', '.join(FAULTS)}")
        self.fault_log.append({"fault": fault, "conn": conn_id, "sim_ms": self.sim_now(), **kw})
        if fault == "drift":
            self._drift_pending += 1
            return []
        if conn_id is not None:
            conn = self._conns.get(conn_id)
            if conn is None:
                raise ValueError(f"no open connection {conn_id}; open: {sorted(self._conns)}")
            targets = [conn]
        else:
            targets = list(self._conns.values())
        for c in targets:
            c.inject(fault, **kw)
        return [c.id for c in targets]

    async def _fault_schedule(self) -> None:
        faults, every = self.config.faults, float(self.config.fault_every or 0)
        i = 0
        while True:
            await trio.sleep(every)
            self.inject(faults[i % len(faults)])
            i += 1

    def _garbage(
        self, subs: dict[str, None], combined: bool, only: str | None
    ) -> list[tuple[str, bytes, int]]:
        """The invalid frames of one ``garbage`` fault: (kind, bytes, opcode)."""
        rng = self._rng
        stream = next(iter(subs), next(iter(sorted(self.valid_streams))))
        sym = stream.split("@", 1)[0].upper()
        wrong = (
            f'{{"e":"depthUpdate","E":"soon","s":"{sym}","U":"x","u":null,'
            f'"b":[[1.5,2]],"a":{{"p":"1"}}}}'
        )
        good = f'{{"e":"trade","E":{self.sim_now()},"s":"{sym}","t":1,"p":"1.00000000","q":"1.00000000"}}'
        if combined:
            wrong = f'{{"stream":"{stream}","data":{wrong}}}'
            good = f'{{"stream":"{stream}","data":{good}}}'
        kinds = [
            ("binary", bytes(rng.randrange(256) for _ in range(rng.randrange(8, 64))), 0x2),
            ("truncated", good[: rng.randrange(5, len(good) - 2)].encode(), 0x1),
            ("types", wrong.encode(), 0x1),
            ("notjson", "".join(rng.choice("abc{}[]:,\"' xyz") for _ in range(40)).encode(), 0x1),
        ]
        return [k for k in kinds if only is None or k[0] == only]

    # ---------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        """JSON-able counters: the server and every connection (open ones first)."""
        open_ = []
        for c in self._conns.values():
            d = c.stats.to_json()
            d["subscriptions"] = list(c.subs)
            d["open"] = True
            open_.append(d)
        closed = [dict(s.to_json(), open=False) for s in self._closed]
        return {
            "seed": self.config.seed,
            "port": self.port,
            "sim_ms": self.sim_now(),
            "start_ms": self.start_ms,
            "lag_ms": self.lag_ms,
            "activity": self.market.activity,
            "symbols": self.market.symbols,
            "open_connections": len(self._conns),
            "connections": open_ + closed,
            "rest": dict(self.rest),
            "faults": list(self.fault_log),
        }

    # ---------------------------------------------------------------- HTTP + handshake

    async def _handle_tcp(self, stream: trio.SocketStream) -> None:
        try:
            await self._http(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
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
            if isinstance(ev, h11.Request):
                headers = {k.lower(): v for k, v in ev.headers}
                if headers.get(b"upgrade", b"").lower() == b"websocket":
                    if not first:
                        await self._respond(
                            conn,
                            stream,
                            400,
                            {"code": -1, "msg": "Upgrade must be the first request"},
                        )
                        return
                    await self._websocket(stream, bytes(raw))
                    return
                first = False
                raw.clear()
                await self._rest(conn, stream, ev)
                # discard any body, then next keep-alive cycle
                while True:
                    e2: Any = conn.next_event()
                    if e2 is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                        continue
                    if isinstance(e2, h11.EndOfMessage):
                        break
                    if isinstance(e2, h11.ConnectionClosed):
                        return
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
                continue
            return  # ConnectionClosed or anything unexpected

    async def _respond(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        status: int,
        body: Any,
        raw: bytes | None = None,
    ) -> None:
        data = raw if raw is not None else json.dumps(body, separators=(",", ":")).encode()
        headers = [
            ("content-type", "application/json;charset=UTF-8"),
            ("content-length", str(len(data))),
        ]
        out = conn.send(h11.Response(status_code=status, headers=headers))
        out += conn.send(h11.Data(data=data)) + conn.send(h11.EndOfMessage())
        await stream.send_all(out)

    async def _rest(
        self, conn: h11.Connection, stream: trio.SocketStream, req: h11.Request
    ) -> None:
        url = urlsplit(req.target.decode("latin-1"))
        q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        self.rest[url.path] += 1
        if req.method != b"GET":
            await self._respond(conn, stream, 405, {"code": -1, "msg": "Only GET is supported"})
            return
        if url.path == "/api/v3/depth":
            status, body, raw = self._depth(q)
            await self._respond(conn, stream, status, body, raw)
        elif url.path == "/api/v3/ping":
            await self._respond(conn, stream, 200, {})
        elif url.path == "/api/v3/time":
            await self._respond(conn, stream, 200, {"serverTime": self.sim_now()})
        elif url.path == "/sim/stats":
            await self._respond(conn, stream, 200, self.stats())
        elif url.path == "/sim/inject":
            try:
                cid = int(q["conn"]) if q.get("conn") else None
                kw: dict[str, Any] = {k: v for k, v in q.items() if k not in ("fault", "conn")}
                if "code" in kw:
                    kw["code"] = int(kw["code"])
                done = self.inject(q.get("fault", ""), cid, **kw)
            except (ValueError, KeyError) as exc:
                await self._respond(conn, stream, 400, {"code": -1, "msg": str(exc)})
                return
            await self._respond(conn, stream, 200, {"fault": q.get("fault"), "connections": done})
        else:
            await self._respond(conn, stream, 404, {"code": -1, "msg": f"Unknown path {url.path}"})

    def _depth(self, q: dict[str, str]) -> tuple[int, Any, bytes | None]:
        """``/api/v3/depth`` with Binance's parameter errors; limit capped at 5000."""
        symbol = q.get("symbol")
        if not symbol:
            return (
                400,
                {
                    "code": -1102,
                    "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
                },
                None,
            )
        if symbol not in self.symbols_upper:
            return 400, {"code": -1121, "msg": "Invalid symbol."}, None
        limit_s = q.get("limit", "100")
        if not limit_s.isdigit() or len(limit_s) > 20:
            return (
                400,
                {
                    "code": -1100,
                    "msg": "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
                },
                None,
            )
        limit = min(max(int(limit_s), 1), 5000)
        self.rest["snapshots"] += 1
        body = self.market.snapshot(symbol, limit)
        if self._drift_pending:
            self._drift_pending -= 1
            self.rest["drifted_snapshots"] += 1
            body = _drift(body, self.market.spec(symbol).step)
        return 200, None, body

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
        path = url.path.rstrip("/") or "/"
        streams: list[str] = []
        combined = False
        error: str | None = None
        if path == "/ws" or path.startswith("/ws/"):
            streams = [s for s in path[4:].split("/") if s]
        elif path == "/stream":
            combined = True
            qs = parse_qs(url.query)
            if "streams" in qs:
                streams = [s for s in qs["streams"][-1].split("/") if s]
        else:
            await self._reject(stream, ws, 404, f"Unknown path {url.path}")
            return
        streams = list(dict.fromkeys(streams))
        bad = [s for s in streams if s not in self.valid_streams]
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
        conn = _WsConn(self, stream, ws, self._next_id, req.target, peer, combined, streams)
        self._conns[conn.id] = conn
        for s in streams:
            self._index_add(s, conn)
        await conn.run()

    async def _reject(
        self, stream: trio.SocketStream, ws: wsproto.WSConnection, status: int, msg: str
    ) -> None:
        body = json.dumps({"code": -1, "msg": msg}).encode()
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


def _drift(body: bytes, step: int) -> bytes:
    """A snapshot that disagrees with the stream: the deepest bid's quantity grows by one lot step.

    The deepest level, because the market rarely touches it: a verification that
    compares this snapshot with the book a few updates later still sees the drift
    (a drifted best level would usually be overwritten by the next diffs).
    """
    snap = json.loads(body)
    side = snap["bids"] or snap["asks"]
    if side:
        p, qty = side[-1]
        side[-1] = [p, render(parse(qty) + step, 8)]
    return json.dumps(snap, separators=(",", ":")).encode()
