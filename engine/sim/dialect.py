"""What a venue's dialect tells the simulator and the replay server: the protocol and the registry.

The transport (:mod:`engine.sim.transport`, :mod:`engine.sim.connection`) moves
bytes; the market model (:mod:`engine.sim.model`) decides what happens; a
:class:`Dialect` says what the venue's wire looks like around the market
frames its :class:`~engine.sim.frames.FrameEncoder` spells: WebSocket paths,
the replies to client messages (subscribe acks, keep-alive answers, an
in-stream snapshot after a book subscribe), REST routes and their error
bodies, and the shapes of the notices and corruptions faults send.

Faults are model-level, so each venue's detection follows from its own rules:
``gap`` withholds one update of :meth:`Dialect.diff_stream` (a sequence gap on
venues with sequence numbers, a checksum mismatch on venues with checksums),
``drift`` serves an edited book (:class:`~engine.sim.frames.BookView`) in the
next snapshot, REST or in-stream.

:data:`DIALECTS` maps a venue name (``engine simulate --venue NAME``,
``engine run --exchange NAME --sim``) to a factory; a venue adds one line.
Must not: do I/O, hold market state, or use the engine's codecs or reducers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Container, Sequence
from typing import Any, Protocol

from engine.sim.frames import BookView, FrameEncoder

__all__ = ["Dialect", "DialectHost", "DIALECTS", "get_dialect", "RestError"]


class RestError(Exception):
    """A REST request the venue answers with an error: HTTP ``status`` and the venue's body."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(body.decode(errors="replace"))
        self.status, self._body = status, body

    def body(self) -> bytes:
        return self._body


class DialectHost(Protocol):
    """What a dialect may read of the server it speaks for."""

    #: every stream name the market produces (what a subscribe may name)
    valid_streams: Container[str]
    #: the server's per-connection stream limit
    max_streams: int

    def sim_now(self) -> int:
        """Simulated (or replayed) exchange time, ms."""
        ...

    def book(self, symbol: str) -> BookView:
        """``symbol``'s book as served now (a pending drift fault edits it once)."""
        ...

    def snapshot(self, symbol: str, limit: int, book: BookView) -> bytes:
        """The encoder's snapshot of ``book`` (REST body or in-stream frame)."""
        ...


class Dialect(Protocol):
    """A venue's wire around the market frames (one instance per server)."""

    #: the venue name (as after ``--venue`` / ``--exchange``)
    name: str
    #: True: its recorded frames name their streams (Binance), so the replay server serves
    #: each client the streams it asks for; False: it serves each client one recorded
    #: connection's frames as they came (see :mod:`engine.replay.server`)
    replays_by_stream: bool

    def encoder(self) -> FrameEncoder:
        """A fresh encoder of the venue's market frames (one per market)."""
        ...

    def ws_route(self, path: str, query: str) -> tuple[bool, list[str]] | None:
        """``(combined, streams named in the URL)`` of a WebSocket path, or None (404)."""
        ...

    def wrap(self, stream: str, payload: bytes) -> bytes:
        """A data frame as a ``combined`` connection receives it (identity for most venues)."""
        ...

    def control_reply(self, conn: Any, text: str | None, host: DialectHost) -> list[bytes]:
        """The frames answering one client message (``None``: binary), in order: the ack or
        error, a keep-alive answer, the in-stream snapshot of a book subscribed ...  It
        (un)subscribes ``conn`` (``conn.subscribe(stream)``, ``conn.subs``) as asked."""
        ...

    def rest_route(self, path: str) -> str | None:
        """The route a REST path is: ``"depth"`` (a book snapshot: the server answers it from
        the model or the recording), another name :meth:`rest_answer` answers, or None (404)."""
        ...

    def depth_request(
        self, path: str, query: dict[str, str], known: Container[str]
    ) -> tuple[str, int]:
        """``(SYMBOL, limit)`` of a depth request (``known``: the symbols served).

        Raises:
            RestError: the venue's answer to a bad request (no or unknown symbol, bad limit).
        """
        ...

    def rest_answer(self, route: str, host: DialectHost) -> tuple[int, bytes]:
        """``(status, body)`` of a non-depth route (Binance ``ping``, ``time``)."""
        ...

    def error_body(self, msg: str) -> bytes:
        """The venue's JSON error body (refused upgrade, unknown path)."""
        ...

    def server_shutdown(self, ms: int) -> bytes | None:
        """The venue's maintenance notice (None: it has none; ``shutdown`` then only closes)."""
        ...

    def garbage(
        self, rng: random.Random, stream: str, ms: int, combined: bool
    ) -> list[tuple[str, bytes, int]]:
        """Invalid frames ``(kind, bytes, opcode)`` in the venue's shapes (the ``garbage`` fault)."""
        ...

    def diff_stream(self, symbol: str) -> str:
        """The stream whose next update the ``gap`` fault withholds."""
        ...


def _binance(name: str) -> Callable[[], Dialect]:
    def make() -> Dialect:
        from engine.sim.binance import BinanceDialect

        return BinanceDialect(name)

    return make


def _binance_futures(name: str, prefix: str) -> Callable[[], Dialect]:
    def make() -> Dialect:
        from engine.sim.binance import BinanceFuturesDialect, RestPaths

        return BinanceFuturesDialect(name, (RestPaths.under(prefix),))

    return make


def _kraken() -> Dialect:
    from engine.sim.kraken import KrakenDialect

    return KrakenDialect()


def _kraken_v1() -> Dialect:
    from engine.sim.kraken import KrakenV1Dialect

    return KrakenV1Dialect()


def _bybit(name: str, category: str) -> Callable[[], Dialect]:
    def make() -> Dialect:
        from engine.sim.bybit import BybitDialect

        return BybitDialect(name, category)

    return make


def _okx() -> Dialect:
    from engine.sim.okx import OkxDialect

    return OkxDialect()


#: venue name → dialect factory (``sim`` is the Binance spot dialect under the simulator's
#: name; Binance US and TR speak spot, COIN-M the USD-M dialect on ``/dapi/v1``).
DIALECTS: dict[str, Callable[[], Dialect]] = {
    "sim": _binance("sim"),
    "binance": _binance("binance"),
    "binance-us": _binance("binance-us"),
    "binance-tr": _binance("binance-tr"),
    "binance-futures": _binance_futures("binance-futures", "/fapi/v1"),
    "binance-delivery": _binance_futures("binance-delivery", "/dapi/v1"),
    "kraken": _kraken,
    "kraken-v1": _kraken_v1,
    "bybit": _bybit("bybit", "spot"),
    "bybit-linear": _bybit("bybit-linear", "linear"),
    "bybit-inverse": _bybit("bybit-inverse", "inverse"),
    "okx": _okx,
}


def get_dialect(name: str) -> Dialect:
    """The dialect of venue ``name``.

    Raises:
        ValueError: no simulator dialect for ``name``; the message lists the ones there are.
    """
    factory = DIALECTS.get(name)
    if factory is None:
        raise ValueError(
            f"the simulator does not speak {name!r}; it speaks: {', '.join(sorted(DIALECTS))}"
        )
    return factory()


def names() -> Sequence[str]:
    """The venue names the simulator speaks, sorted."""
    return sorted(DIALECTS)
