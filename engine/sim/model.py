"""The simulated Binance-spot market: a sans-I/O, deterministic model of several symbols.

This module owns the *content* of the simulator's streams: a random-walk fair
price on each symbol's tick grid, an order book fed by limit orders, cancels
and market orders, and the events those produce (trades, aggregate trades,
100 ms and 1 s diff batches, best bid/ask changes, the 24h ticker, 1m klines)
plus depth snapshots.  Its encoder (:mod:`engine.sim.binance_frames`) spells
them as Binance spot frames (``@trade``, ``@aggTrade``, ``@depth@100ms``,
``@depth``, ``@bookTicker``, ``@ticker``, ``@kline_1m``); the model must not
spell a venue's wire itself.  It must not do I/O, read a clock or
touch global randomness: the caller passes simulated time and every random
draw comes from a ``random.Random`` held per symbol, seeded from
``(seed, symbol)``.  So the bytes of a symbol's streams are a pure function of
``(seed, symbol spec, activity, start_ms, simulated time)``: they do not depend
on which other symbols are simulated, nor on how :meth:`Market.advance` calls
partition time (``advance(200)`` == ``advance(100) + advance(200)``).

Engineers build test journals from it directly (no sockets)::

    m = Market(seed=7, symbols=["BTCUSDT", "SHIBUSDT"], start_ms=1_704_067_200_000)
    for stream, payload in m.advance(m.now_ms + 5_000):
        ...                                   # ("btcusdt@trade", b'{"e":"trade",...}')
    m.snapshot("BTCUSDT", 100)                # b'{"lastUpdateId":...,"bids":[...],"asks":[...]}'

Conventions, chosen to match real Binance spot captures:

* Prices and quantities reach the encoder as the engine's integer units
  (:mod:`engine.num`); internally the book counts *ticks* and *lot steps*
  (small ints).  Every spec has ``tick * step`` a multiple of 1e-8 (in units²,
  ``instruments.QUOTE_GRID``) so a trade's quote quantity ``p * q`` is exact at 8 decimals.
* Update ids: every order-flow event that changes the book takes the next
  update id (one id per event, even if it touches several levels).  Ids are
  contiguous, so each ``@depth@100ms`` batch has ``U`` = previous ``u`` + 1
  (unless :meth:`Market.inject_gap`), and ``@bookTicker``'s ``u`` is the id of
  the book state it shows (it shares the id space, as in real captures).
* Time: order-flow events happen at integer ms.  The diff batch flushed at the
  100 ms boundary ``b`` holds the changes of events with time in ``[b-100, b)``
  and has ``E = b``; ``@depth`` (1000 ms) likewise on 1 s boundaries.  At one
  boundary the order is: kline, depth@100ms, depth, ticker, symbol by symbol.
  Events at time exactly ``b`` come after the boundary's frames.

Kline (``@kline_1m``) definition — the reference for candle reducers:

* window ``[t, T]`` with ``t`` = minute start (ms, multiple of 60 000) and
  ``T = t + 59 999``; a trade belongs to the minute containing its trade time.
* ``o``/``c`` = price of the first/last trade of the window; ``h``/``l`` =
  max/min trade price; ``v`` = Σ qty; ``q`` = Σ price×qty (exact); ``V``/``Q`` =
  the same sums over trades whose *buyer was the taker* (``m`` false); ``n`` =
  number of trades; ``f``/``L`` = first/last trade id; ``B`` = "0" (ignored).
* A window without trades has ``o = h = l = c`` = the previous close (the
  symbol's initial price before the first trade), volumes 0, ``n`` 0 and
  ``f = L = -1`` (assumed Binance behaviour for an empty kline).
* Pushed every 2 000 ms (Binance's update speed for 1m) with ``x`` false, and
  once at the minute boundary ``t + 60 000`` with ``x`` true (``E`` =
  boundary) instead of the 2 s update.  Trades never straddle: a trade at
  exactly the boundary opens the next candle.

24h ticker (``@ticker``, every 1 000 ms): rolling statistics at *one-minute
granularity*: the closed minutes of the last 24 h plus the current minute
(``O`` = ``E`` - 24 h, ``C`` = ``E``).  ``p = c - o``, ``P`` = 100·p/o
truncated to 3 decimals, ``w`` = q/v truncated to 8 decimals, ``x`` = close
of the minute that last left the window (initial price before that),
``Q`` = last trade qty, ``F``/``L``/``n`` first/last trade id and count.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Sequence

from engine.num import ONE
from engine.sim.binance_frames import BinanceSpotFrames
from engine.sim.frames import BookView, FrameEncoder
from engine.sim.instruments import SymbolSpec, spec_for

__all__ = [
    "CHANNELS",
    "DEFAULT_START_MS",
    "DEFAULT_SYMBOLS",
    "FIXED_FRAMES_PER_S",
    "FRAMES_PER_EVENT",
    "activity_for_rate",
    "Market",
]

#: The channels the model produces for every symbol (the encoder names their streams:
#: ``btcusdt@trade``).
CHANNELS = ("trade", "aggTrade", "depth@100ms", "depth", "bookTicker", "ticker", "kline_1m")

#: 2024-01-01T00:00:00Z: the fixed epoch a :class:`Market` built without one starts at.  The
#: pure model reads no clock, so its default must be a constant (tests and benches get the same
#: bytes every run); the simulator's server passes the wall clock (``SimConfig.epoch``).
DEFAULT_START_MS = 1_704_067_200_000

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SHIBUSDT")

#: Frames (all channels) per order-flow event, measured at high activity; tests check it.
FRAMES_PER_EVENT = 1.37
#: Boundary frames per second and symbol when busy: 10 depth@100ms + 1 depth + 1 ticker + 0.5 kline.
FIXED_FRAMES_PER_S = 12.5

_DAY_MS = 86_400_000
_MINUTE_MS = 60_000


def activity_for_rate(rate: float, n_symbols: int) -> float:
    """Order-flow events/s per symbol so that all streams of ``n_symbols`` carry ~``rate`` frames/s."""
    per_symbol = rate / max(1, n_symbols) - FIXED_FRAMES_PER_S
    return max(0.5, per_symbol / FRAMES_PER_EVENT)


# --------------------------------------------------------------------------- one symbol


class _Candle:
    """Running aggregates of one minute (also the 24h ticker's bucket)."""

    __slots__ = ("t", "o", "h", "l", "c", "v", "q", "bv", "bq", "n", "f", "L")

    def __init__(self, t: int, prev_close: int) -> None:
        self.t = t
        self.o = self.h = self.l = self.c = prev_close
        self.v = self.q = self.bv = self.bq = self.n = 0
        self.f = self.L = -1

    def add(self, tid: int, p: int, qty: int, quote: int, buyer_taker: bool) -> None:
        if self.n == 0:
            self.o = self.h = self.l = p
            self.f = tid
        elif p > self.h:
            self.h = p
        elif p < self.l:
            self.l = p
        self.c = p
        self.L = tid
        self.n += 1
        self.v += qty
        self.q += quote
        if buyer_taker:
            self.bv += qty
            self.bq += quote


class _Symbol:
    """State and order flow of one symbol.  Book keys are ticks, values lot steps."""

    def __init__(
        self, spec: SymbolSpec, seed: int, activity: float, start_ms: int, enc: FrameEncoder
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.enc = enc
        (
            self.s_trade,
            self.s_agg,
            self.s_diff,
            self.s_depth,
            self.s_book,
            self.s_ticker,
            self.s_kline,
        ) = (enc.stream(spec.name, c) for c in CHANNELS)
        self.rng = random.Random(f"{seed}:{spec.name}")
        rng = self.rng
        self.mean_gap_ms = 1000.0 / activity
        self.next_t = start_ms + 1 + rng.expovariate(1.0) * self.mean_gap_ms
        self.fair = spec.price // spec.tick
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.best_bid = 0  # 0 = empty side
        self.best_ask = 0
        self.max_levels = 300
        self.update_id = rng.randrange(10**9, 2 * 10**9)
        self.trade_id = rng.randrange(10**8, 2 * 10**8)
        self.agg_id = rng.randrange(10**7, 2 * 10**7)
        # the pending diff batches: tick -> steps (0 = removed); U of the batch
        self.pend100: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self.pend1000: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self.first100 = 0
        self.first1000 = 0
        self.gap_pending = 0
        self.candle = _Candle(start_ms - start_ms % _MINUTE_MS, spec.price)
        self.day: deque[_Candle] = deque()  # closed minutes inside the last 24 h
        self.day_prev_close = spec.price
        self.last_qty = 0
        self._seed_book()

    # ------------------------------------------------------------------ helpers

    def _top(self) -> tuple[int, int, int, int]:
        """``(bid, bid qty, ask, ask qty)`` in units (0 for an empty side)."""
        bb, ba, tu, su = self.best_bid, self.best_ask, self.spec.tick, self.spec.step
        return bb * tu, self.bids.get(bb, 0) * su, ba * tu, self.asks.get(ba, 0) * su

    def _side(self, levels: dict[int, int], ticks: list[int]) -> list[tuple[int, int]]:
        tu, su = self.spec.tick, self.spec.step
        return [(t * tu, levels[t] * su) for t in ticks]

    def _seed_book(self) -> None:
        """An initial book: 40 levels a side around the initial price (not a diff: state at start)."""
        rng, lot = self.rng, self.spec.lot
        for i in range(40):
            self.bids[self.fair - 1 - i] = 1 + int(rng.expovariate(1.0) * lot)
            self.asks[self.fair + 1 + i] = 1 + int(rng.expovariate(1.0) * lot)
        self.best_bid, self.best_ask = self.fair - 1, self.fair + 1

    def _set(self, bid: bool, tick: int, steps: int) -> None:
        """Set a level (0 removes) and record it in the pending diff batches."""
        book = self.bids if bid else self.asks
        if steps:
            book[tick] = steps
        else:
            book.pop(tick, None)
        i = 0 if bid else 1
        self.pend100[i][tick] = steps
        self.pend1000[i][tick] = steps

    def _rescan_best(self, bid: bool) -> None:
        book = self.bids if bid else self.asks
        if not book:
            if bid:
                self.best_bid = 0
            else:
                self.best_ask = 0
            return
        if bid:
            t = self.best_bid
            for _ in range(64):
                t -= 1
                if t in book:
                    self.best_bid = t
                    return
            self.best_bid = max(book)
        else:
            t = self.best_ask
            for _ in range(64):
                t += 1
                if t in book:
                    self.best_ask = t
                    return
            self.best_ask = min(book)

    def _trim(self, bid: bool) -> None:
        """Keep memory bounded: drop the farthest level of a side beyond max_levels."""
        book = self.bids if bid else self.asks
        if len(book) > self.max_levels:
            self._set(bid, min(book) if bid else max(book), 0)

    # ------------------------------------------------------------------ order flow

    def step(self, et: int, out: list[tuple[str, bytes]]) -> None:
        """One order-flow event at integer time ``et`` (ms); appends its frames to ``out``."""
        rng = self.rng
        self.next_t += rng.expovariate(1.0) * self.mean_gap_ms
        r = rng.random()
        if r < 0.02:  # the fair price walks ~1/200 000 of itself (at least one tick)
            jump = self.fair // 200_000 or 1
            self.fair += jump if rng.random() < 0.5 else -jump
            if self.fair < 50:
                self.fair = 50
        top = (
            self.best_bid,
            self.bids.get(self.best_bid),
            self.best_ask,
            self.asks.get(self.best_ask),
        )
        k = rng.random()
        if k < 0.5:
            changed = self._limit(rng)
        elif k < 0.8:
            changed = self._cancel(rng)
        else:
            changed = self._market(rng, et, out)
        if not changed:
            return
        if self.gap_pending and not self.first100:
            self.update_id += self.gap_pending
            self.gap_pending = 0
        self.update_id += 1
        uid = self.update_id
        if not self.first100:
            self.first100 = uid
        if not self.first1000:
            self.first1000 = uid
        bb, ba = self.best_bid, self.best_ask
        if top != (bb, self.bids.get(bb), ba, self.asks.get(ba)):
            out.append((self.s_book, self.enc.book_ticker(self.name, uid, *self._top())))

    def _limit(self, rng: random.Random) -> bool:
        bid = rng.random() < 0.5
        off = int(rng.expovariate(1.0) * 4.0)
        steps = 1 + int(rng.expovariate(1.0) * self.spec.lot)
        if bid:
            tick = self.fair - 1 - off
            if self.best_ask and tick >= self.best_ask:
                tick = self.best_ask - 1
            if tick < 1:
                return False
            self._set(True, tick, self.bids.get(tick, 0) + steps)
            if tick > self.best_bid:
                self.best_bid = tick
            self._trim(True)
        else:
            tick = self.fair + 1 + off
            if self.best_bid and tick <= self.best_bid:
                tick = self.best_bid + 1
            self._set(False, tick, self.asks.get(tick, 0) + steps)
            if not self.best_ask or tick < self.best_ask:
                self.best_ask = tick
            self._trim(False)
        return True

    def _cancel(self, rng: random.Random) -> bool:
        bid = rng.random() < 0.5
        off = int(rng.expovariate(1.0) * 5.0)
        book = self.bids if bid else self.asks
        best = self.best_bid if bid else self.best_ask
        if not best:
            return False
        tick = best - off if bid else best + off
        have = book.get(tick)
        if have is None:
            return False
        left = 0 if rng.random() < 0.5 else have - 1 - int(rng.random() * have)
        self._set(bid, tick, max(left, 0))
        if not left and tick == best:
            self._rescan_best(bid)
        return True

    def _market(self, rng: random.Random, et: int, out: list[tuple[str, bytes]]) -> bool:
        """A taker order eating levels; one aggTrade per price level, 1-3 trades (makers) each."""
        bb, ba = self.best_bid, self.best_ask
        mid2 = bb + ba
        p_buy = 0.5 + (0.2 if 2 * self.fair > mid2 else -0.2 if 2 * self.fair < mid2 else 0.0)
        buy = rng.random() < p_buy
        want = 1 + int(rng.expovariate(1.0) * self.spec.lot)
        book = self.asks if buy else self.bids
        if not book:
            return False
        maker = not buy  # Binance's m, "buyer is the maker": true when the aggressor sells
        name, enc, tick_u, step_u = self.name, self.enc, self.spec.tick, self.spec.step
        levels = 0
        while want > 0 and book and levels < 5:
            tick = self.best_ask if buy else self.best_bid
            have = book[tick]
            fill = want if want < have else have
            want -= fill
            levels += 1
            self._set(not buy, tick, have - fill)
            if fill == have:
                self._rescan_best(not buy)
            p = tick * tick_u
            makers = 1 + int(rng.random() * 3)
            if makers > fill:
                makers = fill
            first = self.trade_id + 1
            left = fill
            for j in range(makers):
                q = left if j == makers - 1 else 1 + int(rng.random() * (left - (makers - j - 1)))
                left -= q
                self.trade_id += 1
                tid = self.trade_id
                qty = q * step_u
                self.candle.add(tid, p, qty, p * qty // ONE, buy)
                out.append((self.s_trade, enc.trade(name, et, tid, p, qty, maker)))
                self.last_qty = qty
            self.agg_id += 1
            frame = enc.agg_trade(
                name, et, self.agg_id, p, fill * step_u, first, self.trade_id, maker
            )
            out.append((self.s_agg, frame))
        return levels > 0

    # ------------------------------------------------------------------ boundaries

    def flush_depth(self, b: int, fast: bool, out: list[tuple[str, bytes]]) -> None:
        """Emit the pending diff batch (100 ms or 1000 ms) as a depthUpdate with E = b."""
        pend, first = (self.pend100, self.first100) if fast else (self.pend1000, self.first1000)
        bids, asks = pend
        if not first:
            return
        frame = self.enc.depth_update(
            self.name,
            b,
            first,
            self.update_id,
            self._side(bids, sorted(bids, reverse=True)),
            self._side(asks, sorted(asks)),
            self.view(),
        )
        out.append((self.s_diff if fast else self.s_depth, frame))
        if fast:
            self.pend100 = ({}, {})
            self.first100 = 0
        else:
            self.pend1000 = ({}, {})
            self.first1000 = 0

    def kline(self, b: int, out: list[tuple[str, bytes]]) -> None:
        """The 2 s kline push, or the closing push (x true) at a minute boundary."""
        c = self.candle
        closed = b % _MINUTE_MS == 0 and b > c.t
        out.append((self.s_kline, self.enc.kline(self.name, b, c, closed)))
        if closed:
            self.day.append(c)
            while self.day and self.day[0].t <= b - _DAY_MS:
                self.day_prev_close = self.day.popleft().c
            self.candle = _Candle(b, c.c)

    def ticker(self, e: int, out: list[tuple[str, bytes]]) -> None:
        """The 24h rolling ticker at minute granularity (see the module docstring)."""
        traded = [c for c in (*self.day, self.candle) if c.n]
        day = _Candle(0, self.candle.c)  # no trade in 24 h: o = h = l = c = the last close
        if traded:
            day.o, day.c = traded[0].o, traded[-1].c
            day.h = max(c.h for c in traded)
            day.l = min(c.l for c in traded)
            day.f, day.L = traded[0].f, traded[-1].L
            day.v = sum(c.v for c in traded)
            day.q = sum(c.q for c in traded)
            day.n = sum(c.n for c in traded)
        frame = self.enc.ticker(self.name, e, day, self.day_prev_close, self.last_qty, self._top())
        out.append((self.s_ticker, frame))

    def view(self) -> BookView:
        """The book now (after update ``update_id``), its sides computed when asked."""
        bids, asks = self.bids, self.asks
        return BookView(
            self.name,
            self.update_id,
            lambda n: self._side(bids, heapq.nlargest(n, bids)),
            lambda n: self._side(asks, heapq.nsmallest(n, asks)),
        )


# --------------------------------------------------------------------------- the market


class Market:
    """Several symbols driven by one simulated clock.

    Args:
        seed: the seed of every random draw (per symbol: ``Random(f"{seed}:{SYMBOL}")``).
        symbols: names (any case) or :class:`SymbolSpec`; unknown names get :func:`spec_for`.
        activity: order-flow events per simulated second per symbol (limit orders,
            cancels, market orders).  Each event yields about
            :data:`FRAMES_PER_EVENT` frames over all channels of its symbol, plus
            :data:`FIXED_FRAMES_PER_S` boundary frames per second (depth, ticker, kline).
        start_ms: the simulated epoch time (ms) the market starts at (a constant by default:
            the model reads no clock; :class:`engine.sim.server.SimServer` passes the wall clock
            unless ``SimConfig.epoch`` fixes it).
    """

    def __init__(
        self,
        seed: int = 0,
        symbols: Sequence[str | SymbolSpec] = DEFAULT_SYMBOLS,
        activity: float = 20.0,
        start_ms: int = DEFAULT_START_MS,
        encoder: FrameEncoder | None = None,
    ) -> None:
        if activity <= 0:
            raise ValueError("activity must be > 0 events per second")
        if not symbols:
            raise ValueError("a market needs at least one symbol")
        specs = [s if isinstance(s, SymbolSpec) else spec_for(s, seed) for s in symbols]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate symbols in {names}")
        self.seed = seed
        self.activity = activity
        self.start_ms = start_ms
        self.now_ms = start_ms
        self.encoder: FrameEncoder = encoder if encoder is not None else BinanceSpotFrames()
        self._syms = [_Symbol(s, seed, activity, start_ms, self.encoder) for s in specs]
        self._by_name = {s.name: s for s in self._syms}
        self._next_boundary = start_ms - start_ms % 100 + 100
        self._heap = [(s.next_t, i) for i, s in enumerate(self._syms)]
        heapq.heapify(self._heap)

    @property
    def symbols(self) -> list[str]:
        return [s.name for s in self._syms]

    def streams(self) -> list[str]:
        """Every stream name the market produces."""
        return [self.encoder.stream(s.name, c) for s in self._syms for c in CHANNELS]

    def spec(self, symbol: str) -> SymbolSpec:
        return self._sym(symbol).spec

    def _sym(self, symbol: str) -> _Symbol:
        s = self._by_name.get(symbol.upper())
        if s is None:
            raise KeyError(f"unknown symbol {symbol!r}; this market has {self.symbols}")
        return s

    def advance(self, to_ms: int) -> list[tuple[str, bytes]]:
        """Run the market up to simulated time ``to_ms`` (inclusive).

        Returns:
            ``(stream_name, payload_bytes)`` in time order; empty if
            ``to_ms <= now_ms``.  Payloads are the raw (unwrapped) Binance JSON.
        """
        out: list[tuple[str, bytes]] = []
        if to_ms <= self.now_ms:
            return out
        heap, syms = self._heap, self._syms
        b = self._next_boundary
        while True:
            nt, i = heap[0]
            et = int(nt)
            if b <= et:
                if b > to_ms:
                    break
                self._boundary(b, out)
                b += 100
                continue
            if et > to_ms:
                break
            s = syms[i]
            s.step(et, out)
            heapq.heapreplace(heap, (s.next_t, i))
        self._next_boundary = b
        self.now_ms = to_ms
        # an encoder spells a channel its venue lacks as None: not sent
        return [f for f in out if f[1] is not None]

    def _boundary(self, b: int, out: list[tuple[str, bytes]]) -> None:
        second = b % 1000 == 0
        kline = b % 2000 == 0
        for s in self._syms:
            if kline:
                s.kline(b, out)
            s.flush_depth(b, True, out)
            if second:
                s.flush_depth(b, False, out)
                s.ticker(b, out)

    def snapshot(self, symbol: str, limit: int = 100, book: BookView | None = None) -> bytes:
        """The encoder's snapshot (Binance: the REST ``/api/v3/depth`` body) of ``book`` (default:
        the book now, :meth:`view`), ``limit`` levels a side."""
        return self.encoder.snapshot(book or self.view(symbol), max(1, limit), self.now_ms)

    def view(self, symbol: str) -> BookView:
        """``symbol``'s book now, as encoders see it (:class:`engine.sim.frames.BookView`)."""
        return self._sym(symbol).view()

    def book(self, symbol: str) -> tuple[int, dict[int, int], dict[int, int]]:
        """``(last update id, bids, asks)`` in engine units (price → qty), for tests and tools."""
        s = self._sym(symbol)
        tu, su = s.spec.tick, s.spec.step
        return (
            s.update_id,
            {t * tu: q * su for t, q in s.bids.items()},
            {t * tu: q * su for t, q in s.asks.items()},
        )

    def inject_gap(self, symbol: str, ids: int = 5) -> None:
        """Skip ``ids`` update ids: the next diff batch starts at previous ``u`` + 1 + ``ids``.

        A market-level gap, seen by every subscriber and consistent with later
        snapshots (resync works).  The server's per-connection ``gap`` fault
        instead withholds one batch from one connection.
        """
        self._sym(symbol).gap_pending += ids
