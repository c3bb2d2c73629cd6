"""The replay server: a journal served back as its venue's WebSocket + REST endpoint.

``engine replay DIR --serve HOST:PORT [--from T] [--to T] [--symbols ..]
[--loop] [--speed 1|10|max]`` runs :func:`run_server`.  Any WebSocket client
(``engine run --exchange NAME --url ws://HOST:PORT --rest-url
http://HOST:PORT``, a notebook, a trading bot under test) can consume the
recording as if it were the exchange.

What this module owns
    * every connection's own replay (:class:`Window`, :meth:`ReplayServer._replay`):
      from its first subscription (a URL naming streams, or a SUBSCRIBE), the
      recorded frames of its streams with receive times in ``[from, to]``
      (``--symbols`` narrows them), frame ``i`` due ``(recv_ns[i] -
      recv_ns[0]) / speed`` after that start; ``loop`` starts over at the end.
      So a client that connects after another has finished still gets the
      whole window.  The URL query overrides the server's window per
      connection (``/stream?streams=a/b&from=TIME&to=TIME&speed=10&loop=true``,
      also on ``/ws/<stream>?...``); a bad override refuses the upgrade (400);
    * pacing and back-pressure: at ``speed`` "max" a connection goes as fast as
      its client reads (its replay waits while more than ``HIGH_WATER`` is
      unsent, never the slow-consumer close); at a paced speed a client that
      falls behind is a slow consumer like on the simulator (its own
      ``max_buffer``, the server's ``max_buffered`` budget: closed 1008);
    * the REST answers: the recorded depth body latest at or before the replay
      position (the receive time any connection's replay last reached), else
      the first one, cut to the request's ``limit`` (default 100);
    * ``/replay/stats`` and the CLI entry (:func:`run_server`: SIGINT and
      SIGTERM stop it cleanly, exit 0).

What it reuses and must not duplicate
    Naming streams and indexing REST bodies (:mod:`engine.replay.recorded`);
    the connection machinery (:mod:`engine.sim.transport`,
    :mod:`engine.sim.connection`: HTTP via h11, the wsproto handshake,
    keep-alive pings, the control-message rate limit, hand-framed unmasked data
    frames, the connection limit and the buffer budget), Binance's dialect
    (:mod:`engine.sim.binance`: the ``/ws/<stream>``, ``/ws`` and
    ``/stream?streams=`` paths, SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS /
    SET_PROPERTY replies, the REST routes of spot and USD-M, the depth
    parameter errors) and fault injection are the simulator's.
    :class:`ReplayServer` subclasses :class:`~engine.sim.server.SimServer` and
    replaces only the *content*: the pump (one replay per connection instead
    of the market model), the depth answer (recorded bodies), the debug route
    and the clock (the replay position).  It must not modify the journal, nor
    decode frames with the engine's codecs: it serves bytes, it does not
    interpret markets.

Two modes, chosen by the journal's exchange (its simulator dialect's
``replays_by_stream``):

* **By stream** (the Binance family): as above, every recorded frame is named
  by its stream and each client gets the streams it names or SUBSCRIBEs, with
  Binance's replies (the simulator's dialect).
* **By connection** (every venue whose frames do not name a stream, and
  venues the simulator does not speak): any WebSocket path connects; the
  client's first message (its subscribe) starts the replay of one recorded
  connection (``?conn=ID`` picks one, else they are handed out in turn), all
  its inbound text frames in order and paced as recorded — the recorded acks,
  snapshots, heartbeats and pongs included.  Faithful: the bytes, their order
  and spacing, per connection.  Not faithful: nothing is invented, so the
  client's own messages (subscribes, pings, a resync's resubscribe) are
  accepted and not answered beyond what the recording holds; a greeting the
  venue sent on connect arrives after the client's first message; frames are
  not split by stream, so ``--symbols`` is refused; binary frames are not
  served; REST answers are the bodies recorded for the very same URL (latest
  at or before the replay position), 404 otherwise.

Unknown stream names are accepted and stay silent (real Binance's behaviour,
unlike the simulator's strictness): a capture client asking for streams the
recording does not hold must still connect.

Memory: the REST bodies are held in memory (a capture fetches snapshots
rarely: ~0.1-1 MB each).  Frames are streamed: each connection's replay holds
one record batch of the journal (a sealed segment's batches are ~16k frames)
and ``SLICE`` frames of it as Python objects, plus what its client has not
read (bounded as above).  Frames before a window's start are read only for
the recorder's SUBSCRIBEs, and reading stops after its end.
"""

from __future__ import annotations

import json
import math
import signal
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import trio
import trio.lowlevel

from engine.journal.location import Where, as_path
from engine.journal.reader import JournalError, JournalReader
from engine.replay.recorded import (
    AnyStreamName,
    RecordedDialect,
    RestIndex,
    StreamNamer,
    conn_stream,
)
from engine.replay.timeline import Timeline
from engine.sim import binance
from engine.sim.cli import plain_errors
from engine.sim.dialect import get_dialect
from engine.sim.server import SimConfig, SimServer
from engine.timefmt import format_ns, parse_time

__all__ = [
    "ReplayServer",
    "RestIndex",
    "StreamNamer",
    "parse_speed",
    "serve_journal",
    "run_server",
]


#: Back-pressure at ``--speed max``: stop reading the journal while a client has more than this
#: share of the slow-consumer limit (``SimConfig.max_buffer``) unsent.
HIGH_WATER_SHARE = 4
#: ... and never more than this many bytes (a client that never reads holds no more).
HIGH_WATER = 1024 * 1024
#: Frames handed out between two checks of the clock / back-pressure / the budget.
CHUNK = 256


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


# =========================================================================== the server


def _symbol(stream: str) -> str:
    return stream.split("@", 1)[0].upper()


@attrs.frozen
class Window:
    """What one connection replays: recorded receive times ``from_ns <= t <= to_ns``, paced, looped.

    ``speed`` None is "max".  ``symbols`` None is every symbol; a stream of no
    single symbol (``!miniTicker@arr``) is always kept.
    """

    from_ns: int | None = None
    to_ns: int | None = None
    speed: float | None = 1.0
    loop: bool = False
    symbols: frozenset[str] | None = None

    def keeps(self, stream: str) -> bool:
        return self.symbols is None or stream.startswith("!") or _symbol(stream) in self.symbols


#: the URL query parameters a WebSocket client may override its window with
OVERRIDES = ("from", "to", "speed", "loop")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ReplayServer(SimServer):
    """The simulator's server with a journal as its market (see the module docstring).

    ``start(nursery)`` binds and serves; :attr:`port` is the bound port;
    :attr:`finished` is set when a connection's replay has reached the end of
    its window (the first time).  ``window`` is every connection's default.

    Raises:
        engine.journal.reader.JournalError: not a (sound) journal.
        ValueError: a symbol the journal does not hold, or a window outside it.
    """

    def __init__(
        self,
        journal_dir: Where,
        speed: float | None = None,
        config: SimConfig | None = None,
        *,
        start_ns: int | None = None,
        end_ns: int | None = None,
        symbols: Iterable[str] | None = None,
        loop: bool = False,
    ) -> None:
        # Not SimServer.__init__: that builds a market model; the same setup around a journal.
        self.journal_dir = as_path(journal_dir)
        exchange = str(JournalReader(self.journal_dir).metadata.get("exchange", ""))
        #: serve recorded connections, not streams (venues whose frames do not name streams)
        self.by_connection = not _replays_by_stream(exchange)
        tl = self.timeline = Timeline.build(self.journal_dir, self.by_connection)
        self.rest_index, self.recorded, self.metadata = tl.rest, tl.per_stream, tl.metadata
        self.first_ns, self.last_ns = tl.first_ns, tl.last_ns
        self.unnamed, self.reserialized = tl.unnamed, tl.reserialized
        held = sorted({_symbol(s) for s in self.recorded if not s.startswith("!")})
        if self.by_connection:
            held = sorted(str(s).upper() for s in self.metadata.get("symbols", []))
            if symbols is not None:
                raise ValueError(
                    f"{self.journal_dir} ({exchange}) is served by recorded connection:"
                    " --symbols cannot narrow it (its frames are not split by stream)"
                )
        #: recorded connections handed out so far (round robin, unless ``?conn=`` names one)
        self._handed = 0
        wanted = None
        if symbols is not None:
            wanted = frozenset(s.strip().upper() for s in symbols if s.strip())
            unknown = sorted(wanted - set(held))
            if unknown:
                raise ValueError(
                    f"{self.journal_dir} holds no stream of {', '.join(unknown)};"
                    f" its symbols: {', '.join(held) or '(none)'}"
                )
        self.window = self._checked(Window(start_ns, end_ns, speed, loop, wanted))
        self.speed = speed
        market = _JournalMarket(held)
        start_ms = max(self.first_ns, 0) // 1_000_000
        dialect: Any = (
            RecordedDialect(exchange, self.rest_index.paths())
            if self.by_connection
            else binance.BinanceDialect(rest_paths=(binance.SPOT, binance.USDM))
        )
        self._setup(config or SimConfig(), dialect, market, AnyStreamName(self.recorded), start_ms)
        #: the recorded receive time the replay last reached (any connection's: the REST clock)
        self.pos_ns = start_ns if start_ns is not None else max(self.first_ns, 0)
        self.sent = 0
        self.replays = Counter[str]()
        self._subscribed: dict[int, trio.Event] = {}
        self.started = trio.Event()
        self.finished = trio.Event()

    def _checked(self, w: Window) -> Window:
        if w.from_ns is not None and w.to_ns is not None and w.to_ns < w.from_ns:
            raise ValueError(f"to ({format_ns(w.to_ns)}) is before from ({format_ns(w.from_ns)})")
        if self.first_ns >= 0 and (
            (w.from_ns is not None and w.from_ns > self.last_ns)
            or (w.to_ns is not None and w.to_ns < self.first_ns)
        ):
            raise ValueError(
                f"the window is outside the journal's data, which spans"
                f" {format_ns(self.first_ns)} .. {format_ns(self.last_ns)}"
            )
        return w

    def window_for(self, query: str) -> Window:
        """The default window with a WebSocket URL's overrides (``?from=&to=&speed=&loop=``).

        Raises:
            ValueError: an override that does not parse, or a window outside the journal.
        """
        q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        if not any(k in q for k in OVERRIDES):
            return self.window
        changes: dict[str, Any] = {}
        for key, field in (("from", "from_ns"), ("to", "to_ns")):
            if key in q:
                try:
                    changes[field] = parse_time(q[key])
                except ValueError as exc:
                    raise ValueError(f"{key}={q[key]!r}: {exc}") from None
        if "speed" in q:
            changes["speed"] = parse_speed(q["speed"])
        if "loop" in q:
            v = q["loop"].strip().lower()
            if v not in _TRUE + _FALSE:
                raise ValueError(f"loop={q['loop']!r}: expected true or false")
            changes["loop"] = v in _TRUE
        return self._checked(attrs.evolve(self.window, **changes))

    def sim_now(self) -> int:
        """The replay position in ms (recorded receive time of the last frame sent)."""
        return self.pos_ns // 1_000_000

    # ---------------------------------------------------------------- connections

    def ws_route(self, path: str, query: str) -> tuple[bool, list[str]] | None:
        route = super().ws_route(path, query)
        if route is not None:
            self.window_for(query)  # a bad override refuses the upgrade (HTTP 400)
        return route

    def recorded_connection(self, conn: Any) -> str:
        """The recorded connection a client is served (connection mode): ``?conn=ID`` in its
        URL, else the recorded connections in turn, in the order they first delivered."""
        q = parse_qs(urlsplit(conn.stats.path).query).get("conn")
        if q and conn_stream(int(q[-1]) if q[-1].isdigit() else -1) in self.recorded:
            return conn_stream(int(q[-1]))
        names = list(self.recorded)
        if not names:
            return conn_stream(0)
        name = names[self._handed % len(names)]
        self._handed += 1
        return name

    def _subscribed_event(self, conn: Any) -> trio.Event:
        ev = self._subscribed.get(conn.id)
        if ev is None:
            ev = self._subscribed[conn.id] = trio.Event()
        return ev

    def index_add(self, stream: str, conn: Any) -> None:
        super().index_add(stream, conn)
        self._subscribed_event(conn).set()
        self.started.set()

    def unregister(self, conn: Any) -> None:
        super().unregister(conn)
        self._subscribed.pop(conn.id, None)

    def connection_task(self, conn: Any) -> Any:
        window = self.window_for(urlsplit(conn.stats.path).query)
        return partial(self._replay, conn, window)

    # ---------------------------------------------------------------- one connection's replay

    async def _replay(self, conn: Any, w: Window) -> None:
        """``conn``'s own replay of ``w``, from its first subscription (again and again if looped)."""
        await self._subscribed_event(conn).wait()
        self.replays["started"] += 1
        while True:
            pushed = await self._play(conn, w)
            if conn.closing:
                return
            self.replays["finished"] += 1
            self.finished.set()
            if not w.loop:
                return
            self.replays["looped"] += 1
            if not pushed:  # nothing of its streams in the window: wait for a new subscription
                ev = self._subscribed[conn.id] = trio.Event()
                await ev.wait()

    async def _play(self, conn: Any, w: Window) -> int:
        """Hand ``conn`` the window's frames of its streams once; returns how many it was given."""
        speed = w.speed
        high = min(self.config.max_buffer // HIGH_WATER_SHARE, HIGH_WATER)
        t0 = base = 0.0
        n = pending = total = pushed = 0  # queued since the last check; frames seen; queued
        for recv_ns, stream, data in self.timeline.cursor(w.from_ns, w.to_ns):
            if not w.keeps(stream):
                continue
            if not total:
                t0, base = trio.current_time(), recv_ns
            total += 1
            if speed is not None:
                due = t0 + (recv_ns - base) / 1e9 / speed
                if due > trio.current_time():
                    n = pending = 0
                    self._flush(conn)
                    await trio.sleep_until(due)
            if conn.closing:
                return total
            self.pos_ns = recv_ns
            if stream not in conn.subs:
                continue
            conn.push_data(stream, data)
            self.sent += 1
            pushed += 1
            n += 1
            pending += len(data)
            if n >= CHUNK or pending >= high:
                n = pending = 0
                self._flush(conn)
                await trio.lowlevel.checkpoint()
                # "max": as fast as this client reads (a paced client that falls behind is
                # a slow consumer instead: its own limit and the budget close it)
                while speed is None and conn.out_len > high and not conn.closing:
                    self._flush(conn)
                    await trio.sleep(0.001)
        self._flush(conn)
        await trio.lowlevel.checkpoint()
        return pushed

    def _flush(self, conn: Any) -> None:
        self.enforce_budget()
        if conn.out:
            conn.wake.set()

    async def _pump(self) -> None:
        """No shared timeline: every connection runs its own replay (:meth:`connection_task`)."""

    # ---------------------------------------------------------------- REST

    def depth(self, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        """The recorded snapshot latest at or before the replay position (else the first), cut to ``limit``.

        ``limit`` (default 100, as on Binance) keeps the best levels of each side;
        a body already within it is served as recorded, byte for byte.
        """
        if self.by_connection:  # the body recorded for this very URL
            hit = self.rest_index.lookup_url(path, query, self.pos_ns)
            if hit is None:
                return 404, self.dialect.error_body(f"no recorded answer to {path}")
            self.rest["snapshots"] += 1
            return hit
        query = dict(query, symbol=query.get("symbol", "").upper())
        symbol, limit = self.dialect.depth_request(path, query, self.rest_index.symbols(path))
        hit = self.rest_index.lookup(path, symbol, self.pos_ns)
        if hit is None:  # not reached: depth_request accepts only symbols with a recorded body
            raise binance.RestError(400, -1121, "Invalid symbol.")
        self.rest["snapshots"] += 1
        status, body = hit
        return status, cut_depth(body, limit)

    def debug_rest(self, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        """``/replay/stats``; anything else (including ``/sim/...``) is 404."""
        if path == "/replay/stats":
            return 200, binance.json_body(self.stats())
        return 404, self.dialect.error_body(f"Unknown path {path}")

    # ---------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        """The simulator's counters (connections, REST, limits) plus the replays' progress."""
        d = super().stats()
        w = self.window
        d.update(
            journal=str(self.journal_dir),
            speed=w.speed,
            window={
                "from_ns": w.from_ns,
                "to_ns": w.to_ns,
                "loop": w.loop,
                "symbols": None if w.symbols is None else sorted(w.symbols),
            },
            started=self.started.is_set(),
            finished=self.finished.is_set(),
            replays=dict(self.replays),
            position_ns=self.pos_ns,
            first_ns=self.first_ns,
            last_ns=self.last_ns,
            frames_sent=self.sent,
            named_frames=sum(self.recorded.values()),
            unnamed=self.unnamed,
            reserialized=self.reserialized,
            recorded_streams=dict(self.recorded),
            rest_snapshots=len(self.rest_index),
        )
        return d


def cut_depth(body: bytes, limit: int) -> bytes:
    """A depth body with at most ``limit`` levels a side (the recorded bytes if already within it).

    Prices and quantities stay the recorded strings; a body that is not a
    depth snapshot (an error answer) is served as recorded.
    """
    try:
        snap = json.loads(body)
    except ValueError:
        return body
    if not isinstance(snap, dict):
        return body
    sides = [k for k in ("bids", "asks") if isinstance(snap.get(k), list)]
    if not any(len(snap[k]) > limit for k in sides):
        return body
    for k in sides:
        del snap[k][limit:]
    return json.dumps(snap, separators=(",", ":"), ensure_ascii=False).encode()


def _replays_by_stream(exchange: str) -> bool:
    """Do ``exchange``'s recordings name their streams (the simulator's dialect says)?  A venue
    the simulator does not speak is served by connection."""
    try:
        return bool(get_dialect(exchange).replays_by_stream)
    except ValueError:
        return not exchange  # an old journal without an exchange: Binance's, as then


@attrs.frozen
class _JournalMarket:
    """What :meth:`SimServer.stats` reads of its market, for a journal (no model behind it)."""

    symbols: list[str]
    activity: float = 0.0


# =========================================================================== entry points


async def serve_journal(
    journal_dir: Where,
    host: str = "127.0.0.1",
    port: int = 0,
    speed: float | str | None = None,
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
    symbols: Iterable[str] | None = None,
    loop: bool = False,
    limits: Mapping[str, Any] | None = None,
    task_status: trio.TaskStatus[ReplayServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``journal_dir`` on ``host:port`` until cancelled.

    Reports the started :class:`ReplayServer` (``.port`` is the bound port, so
    ``port=0`` works) via ``task_status`` for ``nursery.start``.  ``start_ns``,
    ``end_ns``, ``symbols``, ``loop`` and ``speed`` are every connection's
    default window; ``limits`` sets :class:`SimConfig`'s limits against
    hostile clients (``max_connections``, ``max_buffered`` bytes, ``max_buffer``).

    Raises:
        engine.journal.reader.JournalError: ``journal_dir`` is not a (sound) journal.
        ValueError: bad ``speed``, an unknown symbol, a window outside the journal.
        OSError: the address cannot be bound.
    """
    server = ReplayServer(
        journal_dir,
        parse_speed(speed),
        attrs.evolve(SimConfig(host=host, port=port), **(limits or {})),
        start_ns=start_ns,
        end_ns=end_ns,
        symbols=symbols,
        loop=loop,
    )
    async with trio.open_nursery() as nursery:
        await server.start(nursery)
        task_status.started(server)


def run_server(
    journal_dir: Where,
    host: str = "127.0.0.1",
    port: int = 0,
    speed: float | str | None = 1.0,
    *,
    echo: Any = print,
    **options: Any,
) -> None:
    """The CLI entry (``engine replay DIR --serve HOST:PORT``): serve until SIGINT / SIGTERM.

    ``options`` are :func:`serve_journal`'s.  The first line printed names the
    URLs (``replaying DIR on ws://HOST:PORT (REST http://HOST:PORT) ...``);
    a signal stops the server, prints its counters as one JSON line and
    returns (exit 0), never a traceback.
    """

    async def main() -> dict[str, Any]:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                server: ReplayServer = await nursery.start(
                    partial(serve_journal, journal_dir, host, port, speed, **options)
                )
                w = server.window
                label = "max" if w.speed is None else f"{w.speed:g}x"
                echo(
                    f"replaying {journal_dir} on ws://{host}:{server.port} "
                    f"(REST http://{host}:{server.port}) at speed {label}"
                    + (", looped" if w.loop else "")
                )
                echo(
                    "streams: "
                    + ", ".join(f"{k} ({v})" for k, v in sorted(server.recorded.items()))
                    + " — every connection gets its own replay from its first subscription"
                    " (URL overrides: ?from=TIME&to=TIME&speed=S&loop=true)"
                )
                async for _sig in signals:
                    break
                st = server.stats()
                nursery.cancel_scope.cancel()
        return {
            "stopped": True,
            "connections": len(st["connections"]),
            "frames_sent": st["frames_sent"],
            "replays": st["replays"],
            "slow_consumers": st["limits"]["slow_consumers"],
            "refused_connections": st["limits"]["refused_connections"],
        }

    with plain_errors(ValueError, JournalError):  # a bad window or symbol, a port in use
        summary = trio.run(main)
    echo(json.dumps(summary))
