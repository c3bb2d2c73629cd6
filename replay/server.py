"""The replay server: a journal served back as a Binance-compatible WebSocket + REST endpoint.

``engine replay DIR --serve HOST:PORT --speed 1|10|max`` runs :func:`run_server`.
Any WebSocket client (``engine run --exchange binance --url ws://HOST:PORT
--rest-url http://HOST:PORT``, a notebook, a trading bot under test) can
consume the recording as if it were the exchange.

What this module owns
    * naming the Binance stream of each recorded inbound frame
      (:class:`StreamNamer`): the combined wrapper's ``"stream"``, else the
      recorded connection's URL (``/ws/<stream>``) and the SUBSCRIBE messages
      the recorder sent on that connection (matched to the payload's event
      type and symbol when a raw connection carried several streams);
    * the REST index (:class:`RestIndex`): recorded ``/api/v3/depth`` and
      ``/fapi/v1/depth`` bodies per symbol, served "latest at or before the
      replay position, else the first one";
    * pacing: frame ``i`` goes out ``(recv_ns[i] - recv_ns[0]) / speed`` after
      the replay started; ``speed=None`` ("max") sends as fast as the slowest
      client reads (back-pressure, never the slow-consumer abort).

What it reuses and must not duplicate
    The connection machinery (:mod:`engine.sim.transport`,
    :mod:`engine.sim.connection`: HTTP via h11, the wsproto handshake,
    keep-alive pings, the control-message rate limit, hand-framed unmasked data
    frames, the fan-out to subscribers), Binance's dialect
    (:mod:`engine.sim.binance`: the ``/ws/<stream>``, ``/ws`` and
    ``/stream?streams=`` paths, SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS /
    SET_PROPERTY replies, the REST routes of spot and USD-M, the depth
    parameter errors) and fault injection are the simulator's.
    :class:`ReplayServer` subclasses :class:`~engine.sim.server.SimServer` and
    replaces only the *content*: the pump (journal instead of the market
    model), the depth answer (recorded bodies), the debug route
    (``/replay/stats``) and the clock (the replay position).  It must not
    modify the journal, nor decode frames with the engine's codecs: it serves
    bytes, it does not interpret markets.

Byte exactness
    A recorded combined frame ``{"stream":"<s>","data":<d>}`` (Binance's exact
    compact form) is split into ``<s>`` and the *byte slice* ``<d>``; the
    simulator's framing re-wraps ``<d>`` with the same prefix on combined
    connections, so both raw and combined clients get the recorded bytes.  A
    wrapper in any other form (extra spaces, other key order) is parsed and
    its data re-serialized compactly: equal as JSON, not as bytes (counted in
    ``stats()["reserialized"]``).

When the replay starts
    At the first subscription (a connection URL naming streams, or a
    SUBSCRIBE), so a client that connects first and subscribes after does not
    miss the beginning even at ``--speed max``.  Later clients join the one
    shared timeline, like clients of a real exchange.  When the journal ends,
    connections stay open and silent and REST keeps answering;
    :attr:`ReplayServer.finished` is set.

Unknown stream names are accepted and stay silent (real Binance's behaviour,
unlike the simulator's strictness): a capture client asking for streams the
recording does not hold must still connect.

Memory: the REST bodies are held in memory (a capture fetches snapshots
rarely: ~0.1-1 MB each); frames are streamed batch by batch from the journal.
The journal is read twice (an index pass for REST and stream names, then the
paced pass).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import trio
import trio.lowlevel

from engine.journal.reader import JournalReader
from engine.journal.schema import Dir, Frame, Kind
from engine.sim import binance
from engine.sim.server import SimConfig, SimServer

__all__ = [
    "ReplayServer",
    "RestIndex",
    "StreamNamer",
    "parse_speed",
    "serve_journal",
    "run_server",
]

#: REST paths whose recorded bodies are served per ``symbol``.
DEPTH_PATHS = (binance.SPOT.depth, binance.USDM.depth)

#: Back-pressure at ``--speed max``: stop reading the journal while a client has more than this
#: share of the slow-consumer limit (``SimConfig.max_buffer``) unsent.
HIGH_WATER_SHARE = 4
#: Frames handed out between two checks of the clock / back-pressure.
CHUNK = 256

_PREFIX = b'{"stream":"'
_MID = b'","data":'
_STREAM_NAME = re.compile(r"^[A-Za-z0-9!_@.\-]{1,200}$")


def parse_speed(value: str | float | int | None) -> float | None:
    """``"max"``/None → None (as fast as clients read); otherwise a positive factor.

    Raises:
        ValueError: not "max" and not a positive finite number.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "max"):
        return None
    try:
        speed = float(value)
    except ValueError:
        raise ValueError(f"--speed must be a positive number or 'max', not {value!r}") from None
    if not math.isfinite(speed) or speed <= 0:
        raise ValueError(f"--speed must be a positive number or 'max', not {value!r}")
    return speed


# =========================================================================== stream names


class AnyStreamName(frozenset[str]):
    """The recorded stream names, but *membership* accepts any well-formed name.

    The simulator checks ``name in server.valid_streams`` on URLs and
    SUBSCRIBE; Binance itself accepts unknown names and sends nothing for them,
    which is what a replay must do too (iteration still lists what was recorded).
    """

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(_STREAM_NAME.match(name))


def _url_streams(url: str) -> tuple[bool, list[str]]:
    """(combined?, streams named in the URL) of a recorded connection URL."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if path.endswith("/stream"):
        qs = parse_qs(parts.query)
        names = qs.get("streams", [""])[-1]
        return True, [s for s in names.split("/") if s]
    i = path.find("/ws")
    if i >= 0 and (len(path) == i + 3 or path[i + 3] == "/"):
        return False, [s for s in path[i + 4 :].split("/") if s]
    return False, []


_EVENT_STREAM = {
    "depthUpdate": ("@depth",),
    "trade": ("@trade",),
    "aggTrade": ("@aggTrade",),
    "kline": ("@kline_",),
    "24hrTicker": ("@ticker",),
    "24hrMiniTicker": ("@miniTicker",),
    "bookTicker": ("@bookTicker",),
    "markPriceUpdate": ("@markPrice",),
    "forceOrder": ("@forceOrder",),
}


def _matches(stream: str, obj: dict[str, Any]) -> bool:
    """Could ``obj`` (a raw payload) be an event of ``stream``?"""
    sym, _, rest = stream.partition("@")
    s = obj.get("s")
    if isinstance(s, str) and s.lower() != sym:
        return False
    e = obj.get("e")
    if isinstance(e, str):
        kinds = _EVENT_STREAM.get(e)
        if kinds is None:
            return False
        at = "@" + rest
        # "@depth" must not match "@depth5" (a partial-depth stream): the kind ends the
        # name, or is followed by an "@<speed>" suffix, or is a prefix ending in "_"
        return any(
            at.startswith(k) and (k.endswith("_") or len(at) == len(k) or at[len(k)] == "@")
            for k in kinds
        )
    if "lastUpdateId" in obj:  # partial depth: @depth5/10/20
        return rest.startswith("depth") and rest[5:6].isdigit()
    if "u" in obj and "b" in obj and "a" in obj:  # spot bookTicker has no "e"
        return rest == "bookTicker"
    return False


@attrs.define
class _Conn:
    combined: bool
    streams: list[str]


class StreamNamer:
    """Which Binance stream each recorded inbound frame belongs to, and its bare data bytes.

    Fed every frame in journal order (:meth:`observe` for outbound SUBSCRIBE /
    UNSUBSCRIBE, :meth:`name` for inbound text).  Pure: no I/O, no clock.
    """

    def __init__(self) -> None:
        self._conns: dict[tuple[int, str], _Conn] = {}
        self.reserialized = 0
        self.unnamed = 0

    def _conn(self, conn: int, source: str) -> _Conn:
        key = (conn, source)
        c = self._conns.get(key)
        if c is None:
            combined, streams = _url_streams(source)
            c = self._conns[key] = _Conn(combined, streams)
        return c

    def observe(self, conn: int, source: str, payload: bytes) -> None:
        """An outbound control message on ``conn``: track (UN)SUBSCRIBE params."""
        try:
            msg = json.loads(payload)
        except ValueError:
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("params"), list):
            return
        c = self._conn(conn, source)
        params = [p for p in msg["params"] if isinstance(p, str)]
        if msg.get("method") == "SUBSCRIBE":
            c.streams.extend(p for p in params if p not in c.streams)
        elif msg.get("method") == "UNSUBSCRIBE":
            c.streams[:] = [s for s in c.streams if s not in params]
        # SET_PROPERTY combined needs nothing: the wrapper on the frames themselves tells us

    def name(self, conn: int, source: str, payload: bytes) -> tuple[str, bytes] | None:
        """``(stream, data bytes)`` of an inbound text frame, or None (a reply, a notice, junk)."""
        if payload.startswith(_PREFIX):
            end = payload.find(_MID, len(_PREFIX))
            if end > 0 and payload.endswith(b"}"):
                stream = payload[len(_PREFIX) : end].decode("utf-8", "replace")
                if _STREAM_NAME.match(stream):
                    return stream, payload[end + len(_MID) : -1]
        obj: Any
        try:
            obj = json.loads(payload)
        except ValueError:
            self.unnamed += 1
            return None
        if not isinstance(obj, dict):
            self.unnamed += 1
            return None
        if isinstance(obj.get("stream"), str) and "data" in obj:
            self.reserialized += 1
            data = json.dumps(obj["data"], separators=(",", ":"), ensure_ascii=False)
            return obj["stream"], data.encode()
        if "result" in obj or "error" in obj or obj.get("e") == "serverShutdown":
            return None  # a reply to the recorder's control message, or a notice
        c = self._conn(conn, source)
        if len(c.streams) == 1:
            return c.streams[0], payload
        hits = [s for s in c.streams if _matches(s, obj)]
        if len(hits) == 1:
            return hits[0], payload
        self.unnamed += 1
        return None


# =========================================================================== REST


@attrs.define
class _Body:
    recv_ns: int
    status: int
    body: bytes


class RestIndex:
    """Recorded depth snapshots per (path, SYMBOL), in receive order."""

    def __init__(self) -> None:
        self._bodies: dict[tuple[str, str], list[_Body]] = {}

    def add(self, recv_ns: int, source: str, status: int | None, body: bytes) -> None:
        url = urlsplit(source)
        path = url.path
        if path not in DEPTH_PATHS:
            return
        sym = parse_qs(url.query).get("symbol", [""])[-1].upper()
        if sym:
            self._bodies.setdefault((path, sym), []).append(_Body(recv_ns, status or 200, body))

    def symbols(self, path: str) -> list[str]:
        return sorted(s for p, s in self._bodies if p == path)

    def lookup(self, path: str, symbol: str, at_ns: int) -> tuple[int, bytes] | None:
        """(status, body) of the latest snapshot received at or before ``at_ns``, else the first."""
        bodies = self._bodies.get((path, symbol.upper()))
        if not bodies:
            return None
        best = bodies[0]
        for b in bodies:  # few per symbol; a bisect is not worth the index
            if b.recv_ns <= at_ns:
                best = b
            else:
                break
        return best.status, best.body

    def __len__(self) -> int:
        return sum(len(v) for v in self._bodies.values())


# =========================================================================== the server


def _stream_frames(
    frames: Iterable[Frame], namer: StreamNamer, rest: RestIndex | None = None
) -> Iterator[tuple[int, str, bytes]]:
    """``(recv_ns, stream, data)`` of every nameable inbound text frame, in journal order.

    Outbound frames feed ``namer`` (SUBSCRIBE / UNSUBSCRIBE); inbound REST bodies
    go to ``rest`` if given.
    """
    for f in frames:
        if f.dir == Dir.OUT:
            namer.observe(f.conn, f.source, f.payload)
        elif f.dir == Dir.IN and f.kind == Kind.TEXT:
            named = namer.name(f.conn, f.source, f.payload)
            if named is not None:
                yield f.recv_ns, named[0], named[1]
        elif rest is not None and f.dir == Dir.IN and f.kind == Kind.REST:
            rest.add(f.recv_ns, f.source, f.code, f.payload)


def _index_journal(path: Path) -> tuple[RestIndex, Counter[str], int, int, dict[str, Any]]:
    """One pass: REST bodies, frames per stream, first/last data recv_ns, metadata."""
    reader = JournalReader(path)
    rest = RestIndex()
    per_stream: Counter[str] = Counter()
    first = last = -1
    for recv_ns, stream, _data in _stream_frames(reader.frames(), StreamNamer(), rest):
        per_stream[stream] += 1
        if first < 0:
            first = recv_ns
        last = recv_ns
    return rest, per_stream, first, last, reader.metadata


class ReplayServer(SimServer):
    """The simulator's server with a journal as its market (see the module docstring).

    ``start(nursery)`` binds and serves; :attr:`port` is the bound port;
    :attr:`finished` is set when every frame has been handed out.
    """

    rest_paths = (binance.SPOT, binance.USDM)

    def __init__(
        self, journal_dir: str | Path, speed: float | None = None, config: SimConfig | None = None
    ) -> None:
        # Not SimServer.__init__: that builds a market model; the same setup around a journal.
        self.journal_dir = Path(journal_dir)
        self.speed = speed
        self.rest_index, self.recorded, self.first_ns, self.last_ns, self.metadata = _index_journal(
            self.journal_dir
        )
        market = _JournalMarket(sorted({s.split("@", 1)[0].upper() for s in self.recorded}))
        start_ms = max(self.first_ns, 0) // 1_000_000
        self._setup(config or SimConfig(), market, AnyStreamName(self.recorded), start_ms)
        #: the recv_ns of the last frame handed out (the replay position)
        self.pos_ns = self.first_ns if self.first_ns >= 0 else 0
        self.sent = 0
        self.unnamed = 0
        self.reserialized = 0
        self.started = trio.Event()
        self.finished = trio.Event()

    def sim_now(self) -> int:
        """The replay position in ms (recorded receive time of the last frame sent)."""
        return self.pos_ns // 1_000_000

    def index_add(self, stream: str, conn: Any) -> None:
        super().index_add(stream, conn)
        self.started.set()

    # ---------------------------------------------------------------- the pump

    def _frames(self) -> Iterator[tuple[int, str, bytes]]:
        """(recv_ns, stream, data) of every nameable inbound text frame, in journal order."""
        namer = StreamNamer()
        reader = JournalReader(self.journal_dir, dirs=(Dir.IN, Dir.OUT), kinds=(Kind.TEXT,))
        for item in _stream_frames(reader.frames(), namer):
            self.unnamed, self.reserialized = namer.unnamed, namer.reserialized
            yield item
        self.unnamed, self.reserialized = namer.unnamed, namer.reserialized

    async def _pump(self) -> None:
        await self.started.wait()
        t0 = trio.current_time()
        base = self.first_ns
        speed = self.speed
        distribute = self.distribute
        high = self.config.max_buffer // HIGH_WATER_SHARE
        n = pending = 0  # frames and bytes handed out since the last back-pressure check
        for recv_ns, stream, data in self._frames():
            if speed is not None:
                due = t0 + (recv_ns - base) / 1e9 / speed
                if due > trio.current_time():
                    self.wake_all()
                    await trio.sleep_until(due)
            self.pos_ns = recv_ns
            distribute(((stream, data),))
            self.sent += 1
            n += 1
            pending += len(data)
            if n >= CHUNK or pending >= high:  # a client's backlog stays under 2 * high + a frame
                n = pending = 0
                self.wake_all()
                await trio.lowlevel.checkpoint()
                while any(c.out_len > high for c in self.conns.values()):
                    self.wake_all()
                    await trio.sleep(0.001)
        self.wake_all()
        self.finished.set()

    # ---------------------------------------------------------------- REST

    def depth(self, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        """The recorded snapshot latest at or before the replay position, else the first."""
        query = dict(query, symbol=query.get("symbol", "").upper())
        symbol, _limit = binance.depth_request(query, self.rest_index.symbols(path))
        hit = self.rest_index.lookup(path, symbol, self.pos_ns)
        if hit is None:  # not reached: depth_request accepts only symbols with a recorded body
            raise binance.RestError(400, -1121, "Invalid symbol.")
        self.rest["snapshots"] += 1
        return hit

    def debug_rest(self, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        """``/replay/stats``; anything else (including ``/sim/...``) is 404."""
        if path == "/replay/stats":
            return 200, binance.json_body(self.stats())
        return 404, binance.error_body(f"Unknown path {path}")

    # ---------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        """The simulator's counters (connections, REST) plus the replay's progress."""
        d = super().stats()
        d.update(
            journal=str(self.journal_dir),
            speed=self.speed,
            started=self.started.is_set(),
            finished=self.finished.is_set(),
            position_ns=self.pos_ns,
            first_ns=self.first_ns,
            last_ns=self.last_ns,
            frames_sent=self.sent,
            unnamed=self.unnamed,
            reserialized=self.reserialized,
            recorded_streams=dict(self.recorded),
            rest_snapshots=len(self.rest_index),
        )
        return d


@attrs.frozen
class _JournalMarket:
    """What :meth:`SimServer.stats` reads of its market, for a journal (no model behind it)."""

    symbols: list[str]
    activity: float = 0.0


# =========================================================================== entry points


async def serve_journal(
    journal_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    speed: float | str | None = None,
    *,
    task_status: trio.TaskStatus[ReplayServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``journal_dir`` on ``host:port`` until cancelled.

    Reports the started :class:`ReplayServer` (``.port`` is the bound port, so
    ``port=0`` works) via ``task_status`` for ``nursery.start``.

    Raises:
        engine.journal.reader.NotAJournal: ``journal_dir`` is not a journal.
        ValueError: bad ``speed``.
        OSError: the address cannot be bound.
    """
    server = ReplayServer(journal_dir, parse_speed(speed), SimConfig(host=host, port=port))
    async with trio.open_nursery() as nursery:
        await server.start(nursery)
        task_status.started(server)


def run_server(
    journal_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    speed: float | str | None = 1.0,
    *,
    echo: Any = print,
) -> None:
    """The CLI entry (``engine replay DIR --serve HOST:PORT --speed S``): serve until Ctrl-C."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server: ReplayServer = await nursery.start(
                serve_journal, journal_dir, host, port, speed
            )
            s = parse_speed(speed)
            label = "max" if s is None else f"{s:g}x"
            echo(
                f"replaying {journal_dir} on ws://{host}:{server.port} "
                f"(REST http://{host}:{server.port}) at speed {label}"
            )
            echo(
                "streams: "
                + ", ".join(f"{k} ({v})" for k, v in sorted(server.recorded.items()))
                + " — the replay starts at the first subscription"
            )
            await server.finished.wait()
            echo(f"replay finished: {server.sent} frames; still serving REST (Ctrl-C to stop)")

    try:
        trio.run(main)
    except KeyboardInterrupt:
        echo("stopped")
