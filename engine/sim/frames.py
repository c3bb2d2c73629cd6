"""The seam between the market model and a venue's wire: what the model hands an encoder.

:class:`engine.sim.model.Market` decides what happens (ids, times, sums, which
levels changed) and calls one :class:`FrameEncoder` method per frame, with
prices and quantities as integer units of :mod:`engine.num`; the encoder decides how that
is spelled (:class:`engine.sim.binance_frames.BinanceSpotFrames` for Binance
spot).  An encoder returns None for a channel its venue lacks (the frame is
not sent).  A venue whose frames carry a checksum computes it from
:class:`BookView`, the model's *whole* book right after the change (best
first, any depth).  This module holds only the protocols and the book view:
no rendering, no market state (:func:`day_ticker` only gathers the model's numbers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import attrs

from engine.events import Ticker24h

__all__ = ["BookView", "CandleSums", "FrameEncoder", "day_ticker"]

#: ``(levels) -> [(price units, qty units), ...]`` best first, at most ``levels`` of them
SideView = Callable[[int], list[tuple[int, int]]]


@attrs.frozen
class BookView:
    """A symbol's book as served, after update ``last_id`` (a drift fault serves an edited one).

    ``bids(n)`` / ``asks(n)``: the best ``n`` levels, best first, in units (computed
    when asked: an encoder that needs no checksum pays nothing).
    """

    symbol: str
    last_id: int
    bids: SideView
    asks: SideView


class CandleSums(Protocol):
    """What the kline and the ticker read of one minute's aggregates (engine units, :mod:`engine.num`)."""

    t: int
    o: int
    h: int
    l: int  # noqa: E741 - Binance's field name
    c: int
    v: int
    q: int
    bv: int
    bq: int
    n: int
    f: int
    L: int


class NoFrames:
    """The optional frames a venue does not have: each answers None (nothing is sent).

    A venue's encoder subclasses it and defines the frames its venue sends;
    the rest of :class:`FrameEncoder` stays these.
    """

    def agg_trade(self, *args: object) -> None:
        return None

    def book_ticker(self, *args: object) -> None:
        return None

    def kline(self, *args: object) -> None:
        return None

    def ticker(self, *args: object) -> None:
        return None


class FrameEncoder(Protocol):
    """What the model calls to spell its events: one method per frame (prices, quantities in units).

    ``channel`` is one of :data:`engine.sim.model.CHANNELS`; ``buyer_maker`` is
    true when the aggressor sells; ``bids``/``asks`` are best first, quantity 0
    = removed; ``top`` is ``(bid, bid qty, ask, ask qty)``; ``book`` is the whole
    book after the change (:class:`BookView`).  Every frame method may return
    None: the venue has no such frame (nothing is sent).  ``snapshot`` spells a
    REST body or an in-stream snapshot, whichever the venue has.
    """

    def stream(self, symbol: str, channel: str) -> str: ...
    def trade(
        self, symbol: str, et: int, tid: int, price: int, qty: int, buyer_maker: bool
    ) -> bytes | None: ...
    def agg_trade(
        self,
        symbol: str,
        et: int,
        agg_id: int,
        price: int,
        qty: int,
        first: int,
        last: int,
        buyer_maker: bool,
    ) -> bytes | None: ...
    def book_ticker(
        self, symbol: str, uid: int, bid: int, bid_qty: int, ask: int, ask_qty: int
    ) -> bytes | None: ...
    def depth_update(
        self,
        symbol: str,
        e: int,
        first: int,
        last: int,
        bids: Iterable[tuple[int, int]],
        asks: Iterable[tuple[int, int]],
        book: BookView,
    ) -> bytes | None: ...
    def snapshot(self, book: BookView, limit: int, e: int) -> bytes: ...
    def kline(self, symbol: str, e: int, c: CandleSums, closed: bool) -> bytes | None: ...
    def ticker(
        self,
        symbol: str,
        e: int,
        day: CandleSums,
        prev_close: int,
        last_qty: int,
        top: tuple[int, int, int, int],
    ) -> bytes | None: ...


def day_ticker(
    symbol: str, e: int, day: CandleSums, last_qty: int, top: tuple[int, int, int, int]
) -> Ticker24h:
    """What a venue's 24 h ticker can say of the model's rolling ``day`` at ``e`` ms: last,
    last size, open (24 h ago), high, low, volumes, best bid/ask and sizes; the rest None
    (an encoder drops what its venue does not send, with :func:`attrs.evolve`)."""
    bid, bid_qty, ask, ask_qty = top
    return Ticker24h(0, 0, symbol, e, day.c, last_qty, day.o, day.h, day.l, None, day.v, day.q,
                     None, bid, ask, None, None, None, None, None, bid_qty, ask_qty)  # fmt: skip
