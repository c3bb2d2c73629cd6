"""Kraken WebSocket v2 market frames rendered from the market model's events: the simulator's encoder.

This module owns how :class:`engine.sim.model.Market`'s events are spelled on
Kraken v2's wire, through the codec's own encoders (:mod:`engine.codecs.kraken`:
the same code the round-trip tests pair with the decoder, h11 style): stream
names ``book:SYM`` / ``trade:SYM`` / ``ticker:SYM``, the ``book`` snapshot and
updates with their checksum, ``trade`` and ``ticker`` (from the model's best
bid/offer).  Kraken has no aggTrade, kline, 1 s depth or 24 h ticker frames:
those methods answer None (not sent).

The book as Kraken serves it: a subscriber holds the top ``depth`` levels (the
codec's, 10) and Kraken sends no removal for a level an insert pushes out of
them, but does send a level that enters them from below.  So each update is
computed against the top levels this encoder last served for the symbol:
every level the model changed that is in the new top (or that it removed),
plus every level new to the top; the checksum is of the new top, at the
instrument's precision (the price decimals of its tick, 8 for quantities, as
Kraken prints volumes).  That last served top is the encoder's only state,
the same for every subscriber (a fault that withholds an update from one
connection makes that connection's book differ: its next checksum fails).
Pure otherwise: no I/O, no clock; it must not decide market content.
:class:`KrakenV1Frames` spells the same book in v1 (``kraken-v1``), and its
ticker as v1's always is: the best bid/offer *with* the 24 h figures of the
model's rolling day (last trade price and size, open 24 h ago, high, low,
volume, trade count; no VWAP: the model's is not exact at the pair's
decimals, so it is left out), sent on the ticker channel when the model's
1 s ticker comes and on every best bid/offer change after it (the day's
figures as of its last 1 s ticker); before the first there is no day to
tell, and the frame is the bid/offer alone.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import attrs

from engine import num
from engine.codecs import kraken_v1 as v1
from engine.codecs.kraken import KrakenV2, encode_book, encode_ticker, encode_trades
from engine.codecs.kraken_book import checksum_of_levels
from engine.codecs.kraken_v1 import KrakenV1
from engine.events import BUY, SELL, BookSnapshot, BookTicker, DepthDiff, Ticker24h, Trade
from engine.sim.frames import BookView, CandleSums, NoFrames, day_ticker
from engine.sim.instruments import spec_for

__all__ = ["KrakenFrames", "KrakenV1Frames", "QTY_DECIMALS", "channel_id", "price_decimals"]

#: Kraken prints volumes with 8 decimals
QTY_DECIMALS = 8
#: model channel → Kraken channel (the others Kraken does not have)
_CHANNELS = {"depth@100ms": "book", "trade": "trade", "bookTicker": "ticker"}


def price_decimals(tick: int) -> int:
    """The fewest decimals that print every multiple of ``tick`` units exactly."""
    d = 0
    while tick % 10 ** (num.SCALE - d):
        d += 1
    return d


class KrakenFrames(NoFrames):
    """The Kraken v2 encoder (see the module docstring); one per market."""

    depth = KrakenV2.depth

    def __init__(self) -> None:
        self._pd: dict[str, int] = {}
        #: symbol → (bids, asks) of the top levels last served in an update
        self._served: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
        self._last_e: dict[str, int] = {}

    def _decimals(self, symbol: str) -> int:
        pd = self._pd.get(symbol)
        if pd is None:
            pd = self._pd[symbol] = price_decimals(spec_for(symbol).tick)
        return pd

    def served(self, symbol: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The top levels last served in an update of ``symbol``, best first (what a
        subscriber that missed nothing holds)."""
        bids, asks = self._served.get(symbol.upper(), ({}, {}))
        return sorted(bids.items(), reverse=True), sorted(asks.items())

    def stream(self, symbol: str, channel: str) -> str:
        """``book:SYM`` … for Kraken's channels; the model's others get names nobody subscribes."""
        return f"{_CHANNELS.get(channel, '~' + channel)}:{symbol.upper()}"

    # ---------------------------------------------------------------- frames

    def trade(
        self, symbol: str, et: int, tid: int, price: int, qty: int, buyer_maker: bool
    ) -> bytes:
        side = SELL if buyer_maker else BUY  # the aggressor
        t = Trade(0, 0, symbol, tid, price, qty, side, et, et, tid, tid)
        return self._trade_frame(t, self._decimals(symbol))

    def book_ticker(
        self, symbol: str, uid: int, bid: int, bid_qty: int, ask: int, ask_qty: int
    ) -> bytes:
        t = BookTicker(0, 0, symbol, uid, bid, bid_qty, ask, ask_qty)
        return self._ticker_frame(t, self._decimals(symbol))

    def depth_update(
        self,
        symbol: str,
        e: int,
        first: int,
        last: int,
        bids: Iterable[tuple[int, int]],
        asks: Iterable[tuple[int, int]],
        book: BookView,
    ) -> bytes | None:
        if self._last_e.get(symbol) == e:
            return None  # the model's 1 s batch at the same boundary: Kraken has no such stream
        self._last_e[symbol] = e
        top_b, top_a = book.bids(self.depth), book.asks(self.depth)
        new_b, new_a = dict(top_b), dict(top_a)
        old_b, old_a = self._served.get(symbol, ({}, {}))
        self._served[symbol] = (new_b, new_a)
        sides = []
        for changed, new, old, best_first in (
            (bids, new_b, old_b, True),
            (asks, new_a, old_a, False),
        ):
            out = {p: q for p, q in changed if q == 0 or p in new}
            out.update((p, q) for p, q in new.items() if p not in old)
            sides.append(sorted(out.items(), reverse=best_first))
        if not sides[0] and not sides[1]:
            return None
        pd = self._decimals(symbol)
        check = checksum_of_levels(top_b, top_a, pd, QTY_DECIMALS)
        ev = DepthDiff(0, 0, symbol, 0, 0, None, e, None, sides[0], sides[1], check)
        return self._book_frame(ev, pd)

    def snapshot(self, book: BookView, limit: int, e: int) -> bytes:
        """The in-stream ``book`` snapshot a subscription gets: the top ``limit`` levels."""
        bids, asks = book.bids(limit), book.asks(limit)
        pd = self._decimals(book.symbol)
        check = checksum_of_levels(bids, asks, pd, QTY_DECIMALS)
        ev = BookSnapshot(
            0, 0, book.symbol, 0, bids, asks, limit, "stream", e, None, check, pd, QTY_DECIMALS
        )
        return self._book_frame(ev, pd)

    # ---------------------------------------------------------------- the dialect's spelling

    def _book_frame(self, ev: BookSnapshot | DepthDiff, pd: int) -> bytes:
        return encode_book(ev, pd, QTY_DECIMALS)

    def _trade_frame(self, t: Trade, pd: int) -> bytes:
        return encode_trades([t], pd, QTY_DECIMALS)

    def _ticker_frame(self, t: BookTicker, pd: int) -> bytes:
        return encode_ticker(t, pd, QTY_DECIMALS)


def channel_id(channel: str, pair: str) -> int:
    """v1's ``channelID`` of a channel and pair: any stable number does (clients ignore it)."""
    return zlib.crc32(f"{channel}:{pair}".encode()) % 100_000


class KrakenV1Frames(KrakenFrames):
    """The same book as Kraken serves it, spelled in v1 (the recorded protocol): arrays with a
    ``channelID``, ``book-1000`` snapshots ``"as"``/``"bs"`` without a checksum, updates with
    their ``"c"`` (:mod:`engine.codecs.kraken_v1`'s encoders)."""

    depth = KrakenV1.depth

    def __init__(self) -> None:
        super().__init__()
        #: symbol → the 24 h figures of its last ticker (bid/ask: the last sent)
        self._day: dict[str, Ticker24h] = {}

    def stream(self, symbol: str, channel: str) -> str:
        # the model's 24 h ticker goes where its best bid/offer goes: v1's one ticker channel
        return super().stream(symbol, "bookTicker" if channel == "ticker" else channel)

    def ticker(
        self,
        symbol: str,
        e: int,
        day: CandleSums,
        prev_close: int,
        last_qty: int,
        top: tuple[int, int, int, int],
    ) -> bytes:
        """The v1 ticker of the model's rolling day at ``e`` (v1 tickers carry no time)."""
        t = day_ticker(symbol, e, day, last_qty, top)
        self._day[symbol] = attrs.evolve(t, exch_ms=None, quote_volume=None, count=day.n)
        return self._ticker_frame(BookTicker(0, 0, symbol, 0, *top), self._decimals(symbol))

    def _book_frame(self, ev: BookSnapshot | DepthDiff, pd: int) -> bytes:
        cid = channel_id("book", ev.symbol)
        if isinstance(ev, BookSnapshot):
            return v1.encode_snapshot(attrs.evolve(ev, checksum=None), cid)
        return v1.encode_update(ev, cid, self.depth, pd, QTY_DECIMALS)

    def _trade_frame(self, t: Trade, pd: int) -> bytes:
        return v1.encode_trades([t], channel_id("trade", t.symbol), pd, QTY_DECIMALS)

    def _ticker_frame(self, t: BookTicker, pd: int) -> bytes:
        day = self._day.get(t.symbol)
        if day is not None:
            day = self._day[t.symbol] = attrs.evolve(
                day, bid_price=t.bid_price, bid_qty=t.bid_qty, ask_price=t.ask_price,
                ask_qty=t.ask_qty,
            )  # fmt: skip
        return v1.encode_ticker(t, channel_id("ticker", t.symbol), pd, QTY_DECIMALS, day)
