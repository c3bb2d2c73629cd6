"""The seam between the market model and a venue's wire: what the model hands an encoder.

:class:`engine.sim.model.Market` decides what happens (ids, times, sums, which
levels changed) and calls one :class:`FrameEncoder` method per frame, with
prices and quantities as the engine's integer units (:mod:`engine.num`); the
encoder decides how that is spelled (:class:`engine.sim.binance_frames.BinanceSpotFrames` for Binance
spot).  This module holds only the two protocols: no rendering, no market state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

__all__ = ["CandleSums", "FrameEncoder"]


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


class FrameEncoder(Protocol):
    """What the model calls to spell its events: one method per frame (prices, quantities in units).

    ``channel`` is one of :data:`engine.sim.model.CHANNELS`; ``buyer_maker`` is
    true when the aggressor sells; ``bids``/``asks`` are best first, quantity 0
    = removed; ``top`` is ``(bid, bid qty, ask, ask qty)``.
    """

    def stream(self, symbol: str, channel: str) -> str: ...
    def trade(
        self, symbol: str, et: int, tid: int, price: int, qty: int, buyer_maker: bool
    ) -> bytes: ...
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
    ) -> bytes: ...
    def book_ticker(
        self, symbol: str, uid: int, bid: int, bid_qty: int, ask: int, ask_qty: int
    ) -> bytes: ...
    def depth_update(
        self,
        symbol: str,
        e: int,
        first: int,
        last: int,
        bids: Iterable[tuple[int, int]],
        asks: Iterable[tuple[int, int]],
    ) -> bytes: ...
    def snapshot(
        self, last_update_id: int, bids: Iterable[tuple[int, int]], asks: Iterable[tuple[int, int]]
    ) -> bytes: ...
    def kline(self, symbol: str, e: int, c: CandleSums, closed: bool) -> bytes: ...
    def ticker(
        self,
        symbol: str,
        e: int,
        day: CandleSums,
        prev_close: int,
        last_qty: int,
        top: tuple[int, int, int, int],
    ) -> bytes: ...
