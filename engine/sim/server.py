"""The embedded Binance-spot exchange simulator: the market model served on 127.0.0.1, WebSocket + REST.

This module owns the simulator's assembly and its run: :class:`SimConfig`
(everything that shapes a run), and :class:`SimServer`, which joins the
transport (:mod:`engine.sim.transport`, :mod:`engine.sim.connection`: HTTP,
WebSocket, back-pressure, limits), the Binance dialect (:mod:`engine.sim.binance`:
paths, control replies, REST routes) and fault injection
(:mod:`engine.sim.faults`) around a :class:`engine.sim.model.Market` (whose
encoder, :mod:`engine.sim.binance_frames`, spells its frames).  It runs the
pump and answers the REST routes:
``GET /api/v3/depth``, ``/api/v3/ping``, ``/api/v3/time`` and the debug
endpoints ``/sim/stats`` and ``/sim/inject``.  It must not invent market data
(the model does), spell Binance's messages (the dialect does), nor depend on
the engine's codecs or reducers.  :class:`engine.replay.server.ReplayServer`
is this server with a journal instead of the model.

Time: the pump maps wall time to simulated time (``start_ms`` + elapsed) every
``tick`` seconds and hands the market's frames to every subscribed connection.
``start_ms`` is ``SimConfig.epoch``, by default the wall clock, so exchange
times read like receive times.  If the model cannot keep up, simulated time
lags instead of spiralling (at most ``max_catchup_ms`` of simulated time per
tick; ``stats()["lag_ms"]``).  The cap is small (20 ms) on purpose: the writers
only get the CPU between pump ticks, and each turn sends about one socket
buffer, so long catch-up ticks starve them (``bench/simulate.py`` prints the
push rate an overloaded simulator keeps).

Rules, as configured (Binance spot, see shared/protocols.md; the mechanisms
are the transport's):

* Control messages: more than ``control_limit`` (5) client messages within
  ``control_window`` (1 s) close the connection with 1008 "Too many requests".
  Strict on purpose: a client that passes this passes Binance.
* Keep-alive: a ping every ``ping_interval`` (20 s) with the simulated ms as
  payload; no pong within ``pong_timeout`` (60 s) ⇒ close 1008 "Pong timeout".
* At most ``max_streams`` (1024) per connection: a URL with more is rejected
  with HTTP 400; a SUBSCRIBE that would exceed it gets error code 2.
* Unknown stream names are rejected (HTTP 400 on the URL, code 2 on SUBSCRIBE).
  Real Binance accepts and stays silent; strictness catches client typos.
* Lifetime: after ``lifetime`` seconds (24 h) the server closes with 1001.
* Hostile clients: at most ``max_connections`` (1000) WebSocket clients (HTTP
  503 past it); a client with more than ``max_buffer`` (64 MiB) unsent, or the
  ones that read least (stalled longest) when all together pass half of ``max_buffered`` (256 MiB),
  are closed with 1008 "Slow consumer" (``stats()["limits"]``).

Counters (``stats()``, ``GET /sim/stats``): per connection (see
:mod:`engine.sim.connection` for when a frame counts).  Keys of
``frames_by_stream``: stream names for data, ``"!reply"`` for replies to
control messages, ``"!serverShutdown"`` and ``"!garbage"``.  Pings, pongs and
close frames are not frames; they have their own counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from engine.sim.binance import json_body
from engine.sim.connection import ConnStats, WsConn
from engine.sim.dialect import DIALECTS, Dialect, RestError, get_dialect
from engine.sim.faults import FAULTS, Faults, check_faults
from engine.sim.frames import BookView
from engine.sim.model import DEFAULT_SYMBOLS, Market, activity_for_rate
from engine.sim.transport import Transport

__all__ = ["FAULTS", "SimConfig", "SimServer", "ConnStats"]


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
    #: the venue whose dialect is spoken (:data:`engine.sim.dialect.DIALECTS`)
    venue: str = "binance"
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
    max_buffered: int = 256 * 1024 * 1024
    max_connections: int = 1000
    max_message: int = 64 * 1024
    keep_closed: int = 1000

    def __attrs_post_init__(self) -> None:
        if self.venue not in DIALECTS:
            get_dialect(self.venue)  # raises ValueError naming the venues there are
        check_faults(self.faults)
        if self.faults and not self.fault_every:
            raise ValueError("faults need fault_every (seconds between injections)")
        if self.max_streams < 1 or self.control_limit < 1:
            raise ValueError("max_streams and control_limit must be >= 1")
        if self.max_connections < 1 or self.max_buffered < 1 or self.max_buffer < 1:
            raise ValueError("max_connections, max_buffered and max_buffer must be >= 1")

    def market_activity(self) -> float:
        if self.rate is None:
            return self.activity
        return activity_for_rate(self.rate, len(self.symbols))


class SimServer(Transport):
    """The simulator: a market, a pump, the listeners, and every connection's state.

    Use :func:`engine.sim.cli.open_simulator` to run one; this class is the
    engine room (``start`` needs a nursery).  The content hooks — the pump,
    :meth:`depth`, :meth:`debug_rest`, :meth:`sim_now` — are what
    :class:`engine.replay.server.ReplayServer` replaces.
    """

    def __init__(self, config: SimConfig) -> None:
        start_ms = config.epoch if config.epoch is not None else int(time.time() * 1000)
        dialect = get_dialect(config.venue)
        market = Market(
            seed=config.seed,
            symbols=list(config.symbols),
            activity=config.market_activity(),
            start_ms=start_ms,
            encoder=dialect.encoder(),
        )
        self._setup(config, dialect, market, frozenset(market.streams()), start_ms)

    def _setup(
        self, config: SimConfig, dialect: Dialect, market: Any, valid: frozenset[str], start_ms: int
    ) -> None:
        """The state every server with this transport and these faults has, whatever its content."""
        Transport.__init__(self, config)
        self.dialect = dialect
        self.market = market
        self.valid_streams = valid
        self.max_streams = config.max_streams
        self.start_ms = start_ms
        self._t0 = 0.0
        self.lag_ms = 0
        self.faults = Faults(
            config.seed,
            self.conns,
            self.sim_now,
            lambda: min(self.valid_streams, default="btcusdt@trade"),
            config,
            dialect,
            lambda: self.market.symbols,
        )

    # ---------------------------------------------------------------- lifecycle

    async def start(self, nursery: trio.Nursery) -> None:
        await self.listen(nursery)
        self._t0 = trio.current_time()
        nursery.start_soon(self._pump)
        if self.config.faults and self.config.fault_every:
            nursery.start_soon(
                self.faults.schedule, list(self.config.faults), float(self.config.fault_every)
            )

    def sim_now(self) -> int:
        """Simulated ms the market has reached."""
        return int(self.market.now_ms)

    async def _pump(self) -> None:
        cfg, market = self.config, self.market
        tick = cfg.tick
        nxt = trio.current_time()
        distribute = self.distribute
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
                distribute(events)
                self.enforce_budget()
                self.wake_all()

    def inject(self, fault: str, conn_id: int | None = None, **kw: Any) -> list[int]:
        """See :meth:`engine.sim.faults.Faults.inject`."""
        return self.faults.inject(fault, conn_id, **kw)

    # ---------------------------------------------------------------- the transport's hooks

    def ws_route(self, path: str, query: str) -> tuple[bool, list[str]] | None:
        return self.dialect.ws_route(path, query)

    def wrap(self, stream: str, payload: bytes) -> bytes:
        return self.dialect.wrap(stream, payload)

    def on_message(self, conn: WsConn, text: str | None) -> list[bytes]:
        return self.dialect.control_reply(conn, text, self)

    def error_body(self, msg: str) -> bytes:
        return self.dialect.error_body(msg)

    def ping_payload(self) -> bytes:
        return str(self.sim_now()).encode()

    def numbering(self) -> Callable[[bytes], bytes] | None:
        # a dialect whose venue numbers each connection's messages has connection_numbers()
        make = getattr(self.dialect, "connection_numbers", None)
        return None if make is None else make()  # type: ignore[no-any-return]

    def on_rest(self, method: str, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        if method != "GET":
            return 405, self.dialect.error_body("Only GET is supported")
        route = self.dialect.rest_route(path)
        try:
            if route == "depth":
                return self.depth(path, query)
            if route is not None:
                return self.dialect.rest_answer(route, self)
            return self.debug_rest(path, query)
        except RestError as exc:
            return exc.status, exc.body()

    # ---------------------------------------------------------------- content (the DialectHost)

    def book(self, symbol: str) -> BookView:
        """``symbol``'s book as served now: edited once by a pending drift fault."""
        view = self.market.view(symbol)
        served = self.faults.book(view, self.market.spec(symbol).step)
        if served is not view:
            self.rest["drifted_snapshots"] += 1
        return served

    def snapshot(self, symbol: str, limit: int, book: BookView) -> bytes:
        return self.market.snapshot(symbol, limit, book)

    def depth(self, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        """A depth snapshot of the market now (drifted if a drift fault is pending)."""
        symbol, limit = self.dialect.depth_request(path, query, self.market.symbols)
        self.rest["snapshots"] += 1
        return 200, self.snapshot(symbol, limit, self.book(symbol))

    def debug_rest(self, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        """``/sim/stats`` and ``/sim/inject``; anything else is 404."""
        if path == "/sim/stats":
            return 200, json_body(self.stats())
        if path == "/sim/inject":
            fault = query.get("fault", "")
            try:
                cid = int(query["conn"]) if query.get("conn") else None
                kw: dict[str, Any] = {k: v for k, v in query.items() if k not in ("fault", "conn")}
                if "code" in kw:
                    kw["code"] = int(kw["code"])
                done = self.inject(fault, cid, **kw)
            except (ValueError, KeyError) as exc:
                return 400, self.dialect.error_body(str(exc))
            return 200, json_body({"fault": fault, "connections": done})
        return 404, self.dialect.error_body(f"Unknown path {path}")

    def stats(self) -> dict[str, Any]:
        """JSON-able counters: the server and every connection (open ones first)."""
        return {
            "seed": self.config.seed,
            "port": self.port,
            "sim_ms": self.sim_now(),
            "start_ms": self.start_ms,
            "lag_ms": self.lag_ms,
            "activity": self.market.activity,
            "symbols": self.market.symbols,
            "open_connections": len(self.conns),
            "connections": self.connection_stats(),
            "rest": dict(self.rest),
            "buffered_bytes": self.buffered(),
            "limits": {
                "max_connections": self.config.max_connections,
                "max_buffered": self.config.max_buffered,
                "refused_connections": self.limits["refused_connections"],
                "slow_consumers": self.limits["slow_consumers"],
            },
            "faults": list(self.faults.log),
        }
