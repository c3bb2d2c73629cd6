"""Coinbase market-data frames rendered from the market model's events: the simulator's encoders.

Owns how :class:`engine.sim.model.Market`'s events are spelled on Coinbase's
two wires, through the codecs' own encoders (h11 style: the frames the
simulator sends are exactly what :mod:`engine.codecs.coinbase` and
:mod:`engine.codecs.coinbase_advanced` read back):

* **Exchange feed** (:class:`CoinbaseFrames`): the model's 100 ms diff
  batches are ``level2_batch`` ``l2update`` frames, its 1 s batches
  ``level2``; trades are ``match`` frames whose ``side`` is the *maker's*
  (the aggressor's opposite) with a per-product ``sequence`` rising in steps
  of 2 (it counts the whole full channel on Coinbase, so steps exceed 1);
  in-stream ``snapshot`` frames; the model's 24 h ticker is a ``ticker``
  frame (last trade, its size and id, open/high/low/volume of the rolling
  day, best bid/ask with sizes, the product's next ``sequence``).  No
  checksum and no book sequence.
* **Advanced Trade** (:class:`CoinbaseAdvancedFrames`): ``l2_data`` update
  and snapshot frames, ``market_trades`` updates and the model's 24 h ticker
  as a ``ticker`` update (last price, 24 h high/low/volume, best bid/ask with
  sizes).  Coinbase numbers each *connection's* messages (``sequence_num``,
  from 0, across all its channels), while the model encodes each frame once
  for every subscriber: so the frames carry a placeholder number (0) and each
  connection's :class:`ConnectionNumbers` stamps its own on the way out —
  on every frame it is sent, market frames and replies alike, and on every
  frame it loses to a fault (a ``gap`` fault's withheld ``l2_data`` frame, a
  stall), whose number is then missing: a sequence gap.  A connection counts
  only what it receives, so one that does not subscribe tickers (or some
  products) sees no false gap.  The model's 1 s diff batches repeat what its
  100 ms batches sent, so here they are not sent.

Channels a venue lacks (aggTrade, bookTicker, kline) are None: not sent.
Prices and quantities are rendered at the instrument's decimals (the tick's
and the lot step's).  Pure: no I/O, no clock; state is only the per-symbol
counters (and a connection's own count in its ConnectionNumbers).  Must not
decide market content.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from engine.codecs.coinbase import CoinbaseExchange
from engine.codecs.coinbase_advanced import CoinbaseAdvanced
from engine.events import BUY, SELL, BookSnapshot, DepthDiff, Trade
from engine.num import decimals_of, render
from engine.sim.frames import BookView, CandleSums, NoFrames, day_ticker
from engine.sim.instruments import spec_for

__all__ = [
    "CoinbaseFrames",
    "CoinbaseAdvancedFrames",
    "ConnectionNumbers",
    "EXCHANGE_STREAMS",
    "ADVANCED_STREAMS",
]

#: model channel → Exchange feed channel (None: the venue has no such channel)
EXCHANGE_STREAMS: dict[str, str | None] = {
    "trade": "matches",
    "depth@100ms": "level2_batch",
    "depth": "level2",
    "ticker": "ticker",
}
#: model channel → Advanced Trade channel
ADVANCED_STREAMS: dict[str, str | None] = {
    "trade": "market_trades",
    "depth@100ms": "level2",
    "ticker": "ticker",
}
#: how an Advanced Trade frame of this encoder holds its placeholder ``sequence_num``
_UNNUMBERED = b',"sequence_num":0,'


def _decimals(units: int) -> int:
    """The decimals an instrument's increment (a tick, a lot step, in units) is written with."""
    return decimals_of(render(units).rstrip("0"))


class _Frames(NoFrames):
    """What both encoders share: stream names, the instruments' decimals, None for the rest."""

    channels: dict[str, str | None] = {}

    def __init__(self) -> None:
        self._dec: dict[str, tuple[int, int]] = {}

    def stream(self, symbol: str, channel: str) -> str:
        """``"<channel>:<PRODUCT>"``; a model channel the venue lacks gets a name no client
        can subscribe (its frames are None anyway)."""
        ch = self.channels.get(channel)
        return f"{ch}:{symbol}" if ch else f"-{channel}:{symbol}"

    def decimals(self, symbol: str) -> tuple[int, int]:
        d = self._dec.get(symbol)
        if d is None:
            spec = spec_for(symbol)
            d = self._dec[symbol] = (_decimals(spec.tick), _decimals(spec.step))
        return d


class CoinbaseFrames(_Frames):
    """The Exchange feed's encoder (module docstring); one per market."""

    channels = EXCHANGE_STREAMS

    def __init__(self) -> None:
        super().__init__()
        self._sequence: dict[str, int] = {}

    def trade(
        self, symbol: str, et: int, tid: int, price: int, qty: int, buyer_maker: bool
    ) -> bytes:
        seq = self._sequence[symbol] = self._sequence.get(symbol, tid * 4) + 2
        t = Trade(0, 0, symbol, tid, price, qty, SELL if buyer_maker else BUY, et, et, tid, tid)
        return CoinbaseExchange.encode_match(t, seq, self.decimals(symbol))

    def ticker(
        self,
        symbol: str,
        e: int,
        day: CandleSums,
        prev_close: int,
        last_qty: int,
        top: tuple[int, int, int, int],
    ) -> bytes:
        """The ``ticker`` frame of the model's rolling day (no VWAP, quote volume or count)."""
        seq = self._sequence[symbol] = self._sequence.get(symbol, 0) + 1
        t = attrs.evolve(day_ticker(symbol, e, day, last_qty, top), quote_volume=None,
                         last_id=day.L if day.n else None)  # fmt: skip
        return CoinbaseExchange.encode_ticker(t, seq, self.decimals(symbol))

    def depth_update(
        self,
        symbol: str,
        e: int,
        first: int,
        last: int,
        bids: Iterable[tuple[int, int]],
        asks: Iterable[tuple[int, int]],
        book: BookView,
    ) -> bytes:
        d = DepthDiff(0, 0, symbol, first, last, None, e, None, list(bids), list(asks))
        return CoinbaseExchange.encode_l2update(d, self.decimals(symbol))

    def snapshot(self, book: BookView, limit: int, e: int) -> bytes:
        s = book.symbol
        snap = BookSnapshot(
            0, 0, s, book.last_id, book.bids(limit), book.asks(limit), None, "stream"
        )
        return CoinbaseExchange.encode_snapshot(snap, self.decimals(s))


class ConnectionNumbers:
    """One Advanced Trade connection's ``sequence_num``: its messages counted from 0.

    Called with each frame the connection is sent or loses, in order; a frame
    holding the placeholder takes the next number (returned with it in place),
    any other (an error) is returned as it is and takes none.
    """

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = -1  # the last number given out

    def __call__(self, frame: bytes) -> bytes:
        i = frame.find(_UNNUMBERED)
        if i < 0:
            return frame
        self.last += 1
        return b'%s,"sequence_num":%d,%s' % (frame[:i], self.last, frame[i + len(_UNNUMBERED) :])


class CoinbaseAdvancedFrames(_Frames):
    """The Advanced Trade encoder (module docstring): frames with the placeholder number."""

    channels = ADVANCED_STREAMS

    def __init__(self) -> None:
        super().__init__()
        self._sent: dict[str, int] = {}  # symbol → last update id sent

    def trade(
        self, symbol: str, et: int, tid: int, price: int, qty: int, buyer_maker: bool
    ) -> bytes:
        t = Trade(0, 0, symbol, tid, price, qty, SELL if buyer_maker else BUY, et, et, tid, tid)
        return CoinbaseAdvanced.encode_trades([t], 0, self.decimals(symbol))

    def ticker(
        self,
        symbol: str,
        e: int,
        day: CandleSums,
        prev_close: int,
        last_qty: int,
        top: tuple[int, int, int, int],
    ) -> bytes:
        """The ``ticker`` update of the model's rolling day (no open, last size, VWAP or quote
        volume: Advanced Trade's ticker has none of them)."""
        t = attrs.evolve(day_ticker(symbol, e, day, last_qty, top), last_qty=None,
                         open_price=None, quote_volume=None)  # fmt: skip
        return CoinbaseAdvanced.encode_tickers([t], 0, self.decimals(symbol))

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
        if last <= self._sent.get(symbol, -1):
            return None  # the 1 s batch: its changes went out in the 100 ms batches
        self._sent[symbol] = last
        d = DepthDiff(0, 0, symbol, first, last, None, e, None, list(bids), list(asks))
        return CoinbaseAdvanced.encode_book([d], 0, self.decimals(symbol))

    def snapshot(self, book: BookView, limit: int, e: int) -> bytes:
        s = book.symbol
        snap = BookSnapshot(0, 0, s, 0, book.bids(limit), book.asks(limit), None, "stream", e)
        return CoinbaseAdvanced.encode_book([snap], 0, self.decimals(s))
