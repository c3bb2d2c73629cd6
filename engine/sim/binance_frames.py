"""Binance spot market-data frames rendered from the market model's events: the simulator's encoder.

This module owns how :class:`engine.sim.model.Market`'s events are spelled on
Binance's wire: stream names (``btcusdt@trade``), the raw payloads of
``@trade``, ``@aggTrade``, ``@depth@100ms`` / ``@depth`` (``depthUpdate``),
``@bookTicker``, ``@ticker`` (``24hrTicker``) and ``@kline_1m``, and the REST
``/api/v3/depth`` body.  Conventions, chosen to match real Binance spot captures:

* prices and quantities are printed with 8 decimals (``"0.35130000"``),
  rendered from the engine's integer units (:mod:`engine.num`, 1e-18) with
  ``decimals=8`` (Binance still prints 8 whatever the engine's scale); compact JSON with
  Binance's key order;
* ``m`` ("buyer is the maker") is true when the aggressor sells; ``M`` is true;
* a kline's ``T`` is ``t + 59 999``; ``B`` is ``"0"``;
* the 24h ticker's ``p = c - o``, ``P`` = 100·p/o truncated to 3 decimals,
  ``w`` = q/v truncated to 8 decimals, ``O = E - 24 h``, ``C = E``.

It implements :class:`engine.sim.frames.FrameEncoder`, the seam between the
model and a venue: the model decides *what* happens (ids, times, sums, which
levels changed) and calls one method of an encoder per frame; other venues'
encoders (and, later, the codecs' own encoders) implement the same methods.  Pure: no I/O, no clock, no state but a
bounded cache of rendered prices.  It must not decide market content.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.num import ONE, SCALE, render
from engine.sim.frames import BookView, CandleSums

__all__ = ["BinanceSpotFrames", "BinanceFuturesFrames"]

_DAY_MS = 86_400_000
_MINUTE_MS = 60_000


#: units per 1e-8: Binance's last printed decimal
_UNIT8 = 10 ** (SCALE - 8)


def _r8(units: int) -> str:
    """units → Binance's 8-decimal string ("0.35130000"); non-negative fast path of num.render.

    Raises:
        ValueError: ``units`` has digits beyond 8 decimals (num.render's refusal).
    """
    e8, r = divmod(units, _UNIT8)
    if r or e8 < 0:
        return render(units, 8)
    return f"{e8 // 100_000_000}.{e8 % 100_000_000:08d}"


class BinanceSpotFrames:
    """The Binance spot encoder (see the module docstring); one per market."""

    def __init__(self) -> None:
        self._pcache: dict[int, str] = {}

    def stream(self, symbol: str, channel: str) -> str:
        """The stream name of ``channel`` (one of :data:`engine.sim.model.CHANNELS`)."""
        return f"{symbol.lower()}@{channel}"

    def px(self, units: int) -> str:
        """A price (cached: few distinct prices recur constantly)."""
        s = self._pcache.get(units)
        if s is None:
            if len(self._pcache) > 16384:
                self._pcache.clear()
            s = self._pcache[units] = _r8(units)
        return s

    def _levels(self, side: Iterable[tuple[int, int]]) -> str:
        px = self.px
        return ",".join(f'["{px(p)}","{_r8(q)}"]' for p, q in side)

    # ---------------------------------------------------------------- frames

    def trade(
        self, symbol: str, et: int, tid: int, price: int, qty: int, buyer_maker: bool
    ) -> bytes:
        m = "true" if buyer_maker else "false"
        return (
            f'{{"e":"trade","E":{et},"s":"{symbol}","t":{tid},"p":"{self.px(price)}",'
            f'"q":"{_r8(qty)}","T":{et},"m":{m},"M":true}}'
        ).encode()

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
    ) -> bytes:
        m = "true" if buyer_maker else "false"
        return (
            f'{{"e":"aggTrade","E":{et},"s":"{symbol}","a":{agg_id},"p":"{self.px(price)}",'
            f'"q":"{_r8(qty)}","f":{first},"l":{last},"T":{et},"m":{m},"M":true}}'
        ).encode()

    def book_ticker(
        self, symbol: str, uid: int, bid: int, bid_qty: int, ask: int, ask_qty: int
    ) -> bytes:
        return (
            f'{{"u":{uid},"s":"{symbol}","b":"{self.px(bid)}","B":"{_r8(bid_qty)}",'
            f'"a":"{self.px(ask)}","A":"{_r8(ask_qty)}"}}'
        ).encode()

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
        """A diff batch: ``bids`` best first, ``asks`` best first, quantity 0 = removed (no checksum:
        ``book`` is not read)."""
        return (
            f"{self._depth_ids(symbol, e, first, last)}"
            f'"b":[{self._levels(bids)}],"a":[{self._levels(asks)}]}}'
        ).encode()

    def _depth_ids(self, symbol: str, e: int, first: int, last: int) -> str:
        """A depthUpdate's fields before its levels (spot: ``e``, ``E``, ``s``, ``U``, ``u``)."""
        return f'{{"e":"depthUpdate","E":{e},"s":"{symbol}","U":{first},"u":{last},'

    def snapshot(self, book: BookView, limit: int, e: int) -> bytes:
        """The REST depth body of ``book`` (``limit`` levels a side)."""
        return (
            f'{{"lastUpdateId":{book.last_id},"bids":[{self._levels(book.bids(limit))}],'
            f'"asks":[{self._levels(book.asks(limit))}]}}'
        ).encode()

    def kline(self, symbol: str, e: int, c: CandleSums, closed: bool) -> bytes:
        return (
            f'{{"e":"kline","E":{e},"s":"{symbol}","k":{{"t":{c.t},"T":{c.t + _MINUTE_MS - 1},'
            f'"s":"{symbol}","i":"1m","f":{c.f},"L":{c.L},"o":"{_r8(c.o)}","c":"{_r8(c.c)}",'
            f'"h":"{_r8(c.h)}","l":"{_r8(c.l)}","v":"{_r8(c.v)}","n":{c.n},'
            f'"x":{"true" if closed else "false"},"q":"{_r8(c.q)}","V":"{_r8(c.bv)}",'
            f'"Q":"{_r8(c.bq)}","B":"0"}}}}'
        ).encode()

    def ticker(
        self,
        symbol: str,
        e: int,
        day: CandleSums,
        prev_close: int,
        last_qty: int,
        top: tuple[int, int, int, int],
    ) -> bytes:
        """The 24h ticker from the window's sums ``day`` and the book's ``(bid, qty, ask, qty)``."""
        o, v, q = day.o, day.v, day.q
        p = day.c - o
        pct = (abs(p) * 100_000) // o
        pct_s = f"{'-' if p < 0 and pct else ''}{pct // 1000}.{pct % 1000:03d}"
        w = q * ONE // v // _UNIT8 * _UNIT8 if v else 0  # truncated to 8 decimals
        bid, bid_qty, ask, ask_qty = top
        return (
            f'{{"e":"24hrTicker","E":{e},"s":"{symbol}","p":"{_r8(p)}","P":"{pct_s}",'
            f'"w":"{_r8(w)}","x":"{_r8(prev_close)}","c":"{_r8(day.c)}",'
            f'"Q":"{_r8(last_qty)}","b":"{self.px(bid)}","B":"{_r8(bid_qty)}",'
            f'"a":"{self.px(ask)}","A":"{_r8(ask_qty)}","o":"{_r8(o)}",'
            f'"h":"{_r8(day.h)}","l":"{_r8(day.l)}","v":"{_r8(v)}","q":"{_r8(q)}","O":{e - _DAY_MS},'
            f'"C":{e},"F":{day.f},"L":{day.L},"n":{day.n}}}'
        ).encode()


class BinanceFuturesFrames(BinanceSpotFrames):
    """USD-M futures: ``depthUpdate`` carries ``T`` and ``pu`` = ``first - 1`` (the model's ids
    are contiguous, so that is the previous batch's ``u``; after a market-level id skip it is
    not, and a client sees the gap); the other frames as spot."""

    def _depth_ids(self, symbol: str, e: int, first: int, last: int) -> str:
        return (
            f'{{"e":"depthUpdate","E":{e},"T":{e},"s":"{symbol}","U":{first},"u":{last},'
            f'"pu":{first - 1},'
        )
