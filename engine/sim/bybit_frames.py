"""Bybit v5 market-data frames rendered from the market model's events: the simulator's encoder.

This module owns how :class:`engine.sim.model.Market`'s events are spelled on
Bybit v5's public wire, through the Bybit codec's own encoder functions
(:func:`engine.codecs.bybit.book_frame`, :func:`~engine.codecs.bybit.trades_frame`:
one definition of the shape, which the codec's ``decode`` reads back in the
round-trip tests):

* topics ``orderbook.50.<SYMBOL>`` and ``publicTrade.<SYMBOL>`` (the names the
  codec's ``streams()`` gives for its ``depth`` and ``trade`` channels);
* the book topic's ``u`` is a counter of the frames *this encoder* spelled for
  the symbol (Bybit's ``u`` goes up by 1 a message, whatever changed), and an
  in-stream snapshot carries the current count.  The model's 100 ms and 1 s
  diff batches both go to the book topic, each a delta: levels are absolute,
  so the 1 s batch re-sets what the 100 ms ones set (one redundant message a
  second, harmless to a book) — the model hands an encoder no channel, and a
  per-topic count must count every frame it spells;
* a snapshot is exactly the book at the topic's current ``u`` (as Bybit's is:
  a client may compare it with its own book at that ``u``).  The model's book
  *now* may already hold changes of its pending batch, which belong to the
  next delta, so the encoder keeps the top :data:`BOOK_DEPTH` levels of the
  book each delta left and serves those; a ``drift`` fault's edit (one lot
  step more on the deepest served bid) is carried over onto them.  (A pending
  change of that very level would be carried over too: a rare imprecision of
  the simulator, which a verification at that ``u`` would report as drift);
* prices and sizes at the instrument's decimals (:func:`engine.sim.instruments.spec_for`:
  those of its tick and lot step); trade ``i`` decimal on spot, UUID-shaped on
  linear/inverse; ``S`` is the taker side (the model's ``buyer_maker`` ⇒ ``Sell``);
* the model's 24 h ticker is a ``tickers.<SYMBOL>`` message (last price, the
  price 24 h ago, high, low, volume, turnover; linear/inverse add the best
  bid/ask with sizes).  Spot sends a snapshot each time.  Linear/inverse send,
  as Bybit does, one snapshot and then ``delta`` messages of the fields that
  changed (:func:`engine.codecs.bybit.ticker_delta`; none when nothing did):
  the symbol's first ticker is a snapshot to every subscriber, and a later
  subscription starts with :meth:`BybitFrames.ticker_snapshot`, the full
  ticker as of the last message (the dialect sends it after the ack), so every
  subscriber's merge of the deltas is the model's ticker;
* the channels Bybit v5 has no frame for here (aggTrade, bookTicker, kline)
  are None: not sent.

State: per symbol the ``u`` counter, the decimals, the top of the book at
that ``u`` and the last full ticker (bounded by the market's symbols).  Must not decide market content, do I/O or read the clock.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from engine import num
from engine.codecs.bybit import book_frame, ticker_delta, ticker_frame, trades_frame
from engine.events import BUY, SELL, BookSnapshot, DepthDiff, Ticker24h, Trade
from engine.sim.frames import BookView, CandleSums, NoFrames, day_ticker
from engine.sim.instruments import spec_for

__all__ = ["BybitFrames", "BOOK_DEPTH", "FIRST_U"]

#: the book topic's depth (``orderbook.50``: Bybit's 20 ms / 50-level topic)
BOOK_DEPTH = 50
#: the ``u`` of a symbol's book before its first delta
FIRST_U = 1_000_000


def _decimals(units: int) -> int:
    """The decimals a grid step of ``units`` is printed with (0.01 → 2)."""
    d = 0
    while d < num.SCALE and units % 10 ** (num.SCALE - d):
        d += 1
    return d


class BybitFrames(NoFrames):
    """The Bybit v5 encoder (see the module docstring); one per market."""

    def __init__(self, category: str = "spot") -> None:
        self.category = category
        self._u: dict[str, int] = {}
        self._dec: dict[str, tuple[int, int]] = {}
        #: symbol → (the model's update id, bids, asks) of the book at the current ``u``
        self._at: dict[str, tuple[int, list[tuple[int, int]], list[tuple[int, int]]]] = {}
        #: symbol → the full ticker as of its last ``tickers`` message
        self._ticker: dict[str, Ticker24h] = {}

    def stream(self, symbol: str, channel: str) -> str:
        """The topic of a model channel; channels Bybit lacks get a name no client subscribes."""
        if channel == "trade":
            return f"publicTrade.{symbol}"
        if channel in ("depth@100ms", "depth"):
            return f"orderbook.{BOOK_DEPTH}.{symbol}"
        if channel == "ticker":
            return f"tickers.{symbol}"
        return f"none:{channel}.{symbol}"

    def decimals(self, symbol: str) -> tuple[int, int]:
        """(price decimals, size decimals) of ``symbol``: its tick's and lot step's."""
        d = self._dec.get(symbol)
        if d is None:
            spec = spec_for(symbol)
            d = self._dec[symbol] = (_decimals(spec.tick), _decimals(spec.step))
        return d

    def u(self, symbol: str) -> int:
        """The book topic's current ``u`` for ``symbol``."""
        return self._u.get(symbol, FIRST_U)

    # ---------------------------------------------------------------- frames

    def trade(
        self, symbol: str, et: int, tid: int, price: int, qty: int, buyer_maker: bool
    ) -> bytes:
        t = Trade(0, 0, symbol, tid, price, qty, SELL if buyer_maker else BUY, et, et, tid, tid)
        return trades_frame([t], *self.decimals(symbol), et, uuid_ids=self.category != "spot")

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
        """A delta: the next ``u`` of the symbol's book topic (``seq`` is the model's ``last``)."""
        u = self._u[symbol] = self.u(symbol) + 1
        self._at[symbol] = (last, book.bids(BOOK_DEPTH), book.asks(BOOK_DEPTH))
        ev = DepthDiff(0, 0, symbol, u, u, None, e, e, list(bids), list(asks))
        return book_frame(ev, BOOK_DEPTH, *self.decimals(symbol), last)

    def snapshot(self, book: BookView, limit: int, e: int) -> bytes:
        """The in-stream snapshot of ``book`` (``limit`` levels a side) at the topic's current ``u``."""
        sym = book.symbol
        bids, asks = book.bids(limit), book.asks(limit)
        at = self._at.get(sym)
        if at is not None and at[0] != book.last_id:  # the model has moved on since the last delta
            served_bids = bids
            bids, asks = at[1][:limit], at[2][:limit]
            if bids and served_bids and served_bids[-1][0] == bids[-1][0]:
                bids[-1] = served_bids[-1]  # a drift fault's edit of the deepest bid
        ev = BookSnapshot(0, 0, sym, self.u(sym), bids, asks, BOOK_DEPTH, "stream", e, e)
        return book_frame(ev, BOOK_DEPTH, *self.decimals(sym), book.last_id)

    def ticker(
        self,
        symbol: str,
        e: int,
        day: CandleSums,
        prev_close: int,
        last_qty: int,
        top: tuple[int, int, int, int],
    ) -> bytes | None:
        """The ``tickers`` message of the model's rolling day (``day.o``: the price 24 h ago):
        a snapshot, or on linear/inverse after the first a delta of what changed (None: nothing)."""
        t = attrs.evolve(day_ticker(symbol, e, day, last_qty, top), last_qty=None)
        prev = self._ticker.get(symbol)
        self._ticker[symbol] = t
        if prev is not None and self.category != "spot":
            delta = ticker_delta(prev, t, self.category)
            return (
                None
                if delta is None
                else ticker_frame(delta, self.category, *self.decimals(symbol))
            )
        return ticker_frame(t, self.category, *self.decimals(symbol))

    def ticker_snapshot(self, symbol: str) -> bytes | None:
        """The snapshot a new ``tickers.<symbol>`` subscription starts with: the full ticker as
        of the symbol's last message (None: it had none yet, so its next message is a snapshot)."""
        t = self._ticker.get(symbol)
        return None if t is None else ticker_frame(t, self.category, *self.decimals(symbol))
