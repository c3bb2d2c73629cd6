"""Candles: OHLCV per symbol and interval, SMA/EMA of closes, and the exchange-kline cross-check.

Owns: the :class:`Candles` reducer, its state, and its outputs
(:class:`CandleClosed`, :class:`KlineMismatch`).  Must not: read the clock, do
I/O, use floats, or raise on any event.  Which trades count (trade vs
aggTrade, duplicate ids) is :func:`engine.trades.select_trade`'s rule, applied
by the pipeline's selection stage, which hands each trade and its selected
time to :meth:`Candles.on_trade`: the aggregator sees the same trades.

Alignment
    Intervals ("1s", "1m", "5m", "15m", "1h", "4h", "1d" …: units s/m/h/d) are
    aligned to UTC epoch multiples of their length, by *exchange trade time*
    (``txn_ms``, else ``exch_ms``; trades with neither are ignored).  Weeks and
    months are refused (Binance aligns them to Mondays / calendar months).

What advances time (the closing rule)
    Only a later *trade of the same symbol*.  A candle ``[start, start+len)``
    is emitted closed when the first trade with time ``>= start+len`` arrives.
    Not depth or bookTicker events: they travel on other streams and may
    overtake a trade stamped before the boundary; closing on them would turn
    that trade into a "late" one and make us disagree with the exchange.  The
    price is latency: a candle of a quiet symbol stays open until its next
    trade.  (The exchange's own closed kline does not close ours either, for
    the same reason; it is held and compared when ours closes.)

Late and out-of-order trades
    A trade inside the open candle is applied whatever its order (high, low,
    volume and count do not depend on order; open/close are the first/last
    trade *applied*, which is id order on Binance).  A trade stamped before the
    open candle's start belongs to a candle already emitted: closed candles
    are final (consumers have acted on them), so it is not applied and is
    counted in ``state.late`` (per interval: a trade can be late for 1m but
    still inside the open 5m candle).

Empty intervals
    Between two trades more than one interval apart, each empty interval is
    emitted as a flat candle (``filled=True``): open = high = low = close =
    previous close, volume 0, trades 0, ids -1 — Binance's definition of an
    empty kline, so SMA/EMA run on a regular time grid.  At most ``max_fill``
    per gap (the rest are skipped and counted in ``state.unfilled``), and none
    across a connection break: a gap we did not observe is unknown, not empty.

Completeness (what the cross-check may compare)
    A candle is ``complete`` when we observed its whole interval: the symbol's
    trade stream had already delivered a trade in an *earlier* interval and no
    WebSocket connection closed or failed since.  The first candle of a symbol
    (a capture starts mid-interval) and the candles around a connection break
    are incomplete.  The rule is deliberately conservative: any ws connection
    break marks every symbol (we do not map connections to symbols).

SMA / EMA (exact)
    Of closes of emitted candles, per configured period, updated as each
    candle closes and carried on :class:`CandleClosed`; :func:`live_indicators`
    gives provisional values with the open candle's current close as the last
    value.  SMA is exact (sum / period) rounded half-even to 1e-18.  EMA uses
    ``alpha = 2 / (period + 1)``, seeded with the SMA of the first ``period``
    closes, and is kept as an int at 1e-36 (18 guard digits) rounded half-even
    each step — exact rationals would grow without bound; the guard digits keep
    the accumulated rounding error below ``(period+1)/4 · 1e-36``, far under
    the 1e-18 unit shown.

Kline cross-check
    A :class:`~engine.events.Kline` with ``closed=True`` for one of our
    intervals is compared with our candle of the same start: open, high, low,
    close, volume and trade count (``n`` counts trades; an aggTrade covers
    trade ids ``first_id..last_id``, i.e. ``last_id-first_id+1`` trades).
    Klines arrive before or after our candle closes, so an early one is held
    (at most ``max_pending`` per series) and our recent closed candles are kept
    (``keep_closed``).  Incomplete candles, and klines we have no candle for,
    are *uncomparable*, not mismatches.  Counters: ``state.matches``,
    ``state.mismatches``, ``state.uncomparable``; every mismatch is a
    :class:`KlineMismatch` output listing the differing fields.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Literal

import attrs
from attrs import frozen

from engine import serde
from engine.events import BUY, ConnectionClosed, ConnectionFailed, Kline, Trade
from engine.num import ONE
from engine.reducer import NO_OUTPUTS
from engine.trades import SOURCES, round_div

__all__ = [
    "Candles",
    "CandleClosed",
    "KlineMismatch",
    "CandlesState",
    "SymbolCandles",
    "CandleSeries",
    "interval_ms",
    "live_indicators",
    "COMPARED",
]

_UNITS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}

#: Candle fields compared with the exchange's kline (ours, kline attribute).
COMPARED = ("open", "high", "low", "close", "volume", "trades")


def interval_ms(interval: str) -> int:
    """``"1m"`` → 60000.  Raises ValueError for unknown or calendar-aligned units (w, M)."""
    unit, num = interval[-1:], interval[:-1]
    if unit not in _UNITS or not num.isdigit() or int(num) <= 0:
        raise ValueError(
            f"interval {interval!r} is not <positive int><s|m|h|d> (weeks/months are not supported)"
        )
    return int(num) * _UNITS[unit]


# --------------------------------------------------------------------------- outputs


@serde.register
@frozen
class CandleClosed:
    """A finished candle ``[start_ms, end_ms]`` (``end_ms`` inclusive, like Binance ``T``).

    ``seq``/``recv_ns`` are the trade that closed it.  ``trades`` counts exchange
    trades (an aggTrade counts ``last_id-first_id+1``); ``taker_buy_volume`` is
    the volume whose aggressor bought.  ``filled``: an empty interval (see the
    module docstring).  ``complete``: we observed the whole interval.
    ``sma``/``ema``: ``(period, value)`` pairs, value rounded to 1e-18 units,
    for the periods that have enough closes.
    """

    seq: int
    recv_ns: int
    symbol: str
    interval: str
    start_ms: int
    end_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    taker_buy_volume: int
    trades: int
    first_id: int
    last_id: int
    complete: bool
    filled: bool
    sma: tuple[tuple[int, int], ...] = ()
    ema: tuple[tuple[int, int], ...] = ()


@serde.register
@frozen
class KlineMismatch:
    """The exchange's closed kline disagrees with our complete candle of the same start.

    ``fields`` lists ``(name, ours, exchange)`` for every compared field that
    differs; ``seq``/``recv_ns`` are the kline event's (or, if the kline came
    first, the trade that closed our candle).
    """

    seq: int
    recv_ns: int
    symbol: str
    interval: str
    start_ms: int
    fields: tuple[tuple[str, int, int], ...]


# --------------------------------------------------------------------------- state


@serde.register
@attrs.define(slots=True)
class CandleSeries:
    """One (symbol, interval): the open candle, recent closes, indicators, held klines."""

    interval: str
    length: int
    start: int = -1  # open candle start; -1 = none yet
    open: int = 0
    high: int = 0
    low: int = 0
    close: int = 0
    volume: int = 0
    buy: int = 0
    trades: int = 0
    first_id: int = -1
    last_id: int = -1
    complete: bool = False
    closes: deque[int] = attrs.Factory(deque)
    emas: list[int | None] = attrs.Factory(list)  # at 1e-36, per ema period
    n_closes: int = 0
    recent: deque[CandleClosed] = attrs.Factory(deque)
    pending: deque[Kline] = attrs.Factory(deque)


@serde.register
@attrs.define(slots=True)
class SymbolCandles:
    series: list[CandleSeries]
    #: a ws connection closed/failed since this symbol's last trade
    broken: bool = False


@serde.register
@attrs.define(slots=True)
class CandlesState:
    symbols: dict[str, SymbolCandles] = attrs.Factory(dict)
    late: int = 0
    unfilled: int = 0
    matches: int = 0
    mismatches: int = 0
    uncomparable: int = 0


# --------------------------------------------------------------------------- indicators


def _sma(closes: Sequence[int], period: int) -> int | None:
    if len(closes) < period:
        return None
    return round_div(sum(list(closes)[-period:]), period)


def _ema_step(prev: int | None, closes: Sequence[int], n: int, period: int) -> int | None:
    """Next EMA at 1e-36 after the n-th close (``closes[-1]``); None until ``period`` closes."""
    if n < period:
        return None
    if prev is None:
        return round_div(sum(list(closes)[-period:]) * ONE, period)
    return prev + round_div((closes[-1] * ONE - prev) * 2, period + 1)


def live_indicators(
    cfg: Candles, state: CandlesState, symbol: str, interval: str
) -> tuple[dict[int, Fraction], dict[int, int]] | None:
    """Provisional SMA (exact Fractions) and EMA (1e-18 ints) with the open candle's close last.

    None if the symbol/interval has no open candle.  Read-only.
    """
    sc = state.symbols.get(symbol)
    if sc is None:
        return None
    for ser in sc.series:
        if ser.interval == interval and ser.start >= 0:
            closes = [*ser.closes, ser.close]
            sma = {p: Fraction(sum(closes[-p:]), p) for p in cfg.sma_periods if len(closes) >= p}
            ema = {}
            for p, prev in zip(cfg.ema_periods, ser.emas, strict=True):
                e = _ema_step(prev, closes, ser.n_closes + 1, p)
                if e is not None:
                    ema[p] = round_div(e, ONE)
            return sma, ema
    return None


# --------------------------------------------------------------------------- the reducer


def _differences(c: CandleClosed, k: Kline) -> tuple[tuple[str, int, int], ...]:
    return tuple(
        (f, getattr(c, f), getattr(k, f)) for f in COMPARED if getattr(c, f) != getattr(k, f)
    )


@attrs.frozen
class Candles:
    """Reducer: OHLCV candles + SMA/EMA + kline cross-check (rules in the module docstring).

    Args:
        intervals: candle intervals, e.g. ("1m", "5m", "15m").
        source: which trade events count (see :mod:`engine.trades`).
        sma_periods / ema_periods: indicator periods, in candles.
        max_fill: at most this many empty candles emitted per gap.
        keep_closed: recent closed candles kept per series for late klines.
        max_pending: closed klines held per series until our candle closes.
    """

    name: str = "candles"
    intervals: tuple[str, ...] = ("1m", "5m", "15m")
    source: Literal["auto", "trade", "aggTrade"] = attrs.field(
        default="auto", validator=attrs.validators.in_(SOURCES)
    )
    sma_periods: tuple[int, ...] = (20,)
    ema_periods: tuple[int, ...] = (12, 26)
    max_fill: int = 1440
    keep_closed: int = 16
    max_pending: int = 16

    def __attrs_post_init__(self) -> None:
        for i in self.intervals:
            interval_ms(i)
        if len(set(self.intervals)) != len(self.intervals):
            raise ValueError(f"duplicate intervals in {self.intervals}")
        if any(p <= 0 for p in (*self.sma_periods, *self.ema_periods)):
            raise ValueError("indicator periods must be positive")

    @property
    def _keep(self) -> int:
        return max((*self.sma_periods, *self.ema_periods, 1))

    def initial(self) -> CandlesState:
        return CandlesState()

    def _new_symbol(self) -> SymbolCandles:
        keep = self._keep
        return SymbolCandles(
            [
                CandleSeries(
                    i,
                    interval_ms(i),
                    closes=deque(maxlen=keep),
                    emas=[None] * len(self.ema_periods),
                    recent=deque(maxlen=self.keep_closed),
                    pending=deque(),
                )
                for i in self.intervals
            ],
        )

    def step(self, state: CandlesState, event: Any) -> tuple[CandlesState, Sequence[Any]]:
        """Klines and connection events; trades arrive selected, through :meth:`on_trade`."""
        tp = type(event)
        if tp is Kline:
            return state, self._kline(state, event)
        if (tp is ConnectionClosed or tp is ConnectionFailed) and event.source.startswith("ws"):
            for sc in state.symbols.values():
                sc.broken = True
        return state, NO_OUTPUTS

    # ----------------------------------------------------------------- trades

    def on_trade(
        self, state: CandlesState, ev: Trade, t: int | None
    ) -> tuple[CandlesState, Sequence[Any]]:
        """Fold one trade the selection rule gave time ``t`` (None: set aside, ignored)."""
        sc = state.symbols.get(ev.symbol)
        if sc is None:
            sc = state.symbols[ev.symbol] = self._new_symbol()
        if t is None:
            return state, NO_OUTPUTS
        broken = sc.broken
        if broken:  # trades of the open candles may have been missed
            sc.broken = False
            for ser in sc.series:
                ser.complete = False
        p, q = ev.price, ev.qty
        n = ev.last_id - ev.first_id + 1 if ev.agg else 1
        buy = q if ev.side == BUY else 0
        out: list[Any] | None = None
        for ser in sc.series:
            start = ser.start
            if t >= start + ser.length or start < 0:
                if out is None:
                    out = []
                self._advance(state, ev, ser, t, broken, out)
            elif t < start:
                state.late += 1
                continue
            if p > ser.high:
                ser.high = p
            elif p < ser.low:
                ser.low = p
            ser.close = p
            ser.volume += q
            ser.buy += buy
            ser.trades += n
            ser.last_id = ev.last_id
        return state, (out if out else NO_OUTPUTS)

    def _advance(
        self, state: CandlesState, ev: Trade, ser: CandleSeries, t: int, broken: bool, out: list
    ) -> None:
        """Close the open candle, fill empty intervals, open the candle containing ``t``."""
        length = ser.length
        new = t - t % length
        had = ser.start >= 0
        if had:
            self._emit(state, ev, ser, ser.start, False, ser.complete, out)
            gap = (new - ser.start) // length - 1
            if gap > 0:
                if broken:
                    pass  # not observed: unknown, not empty
                elif gap > self.max_fill:
                    state.unfilled += gap
                else:
                    c = ser.close
                    for k in range(1, gap + 1):
                        s = ser.start + k * length
                        ser.open = ser.high = ser.low = c
                        ser.volume = ser.buy = ser.trades = 0
                        ser.first_id = ser.last_id = -1
                        self._emit(state, ev, ser, s, True, True, out)
        ser.start = new
        ser.open = ser.high = ser.low = ser.close = ev.price
        ser.volume = ser.buy = ser.trades = 0
        ser.first_id = ev.first_id
        ser.last_id = ev.last_id
        ser.complete = had and not broken
        # klines held for intervals before the new candle can no longer match
        pend = ser.pending
        while pend and pend[0].start_ms < new:
            pend.popleft()
            state.uncomparable += 1

    def _emit(
        self,
        state: CandlesState,
        ev: Trade,
        ser: CandleSeries,
        start: int,
        filled: bool,
        complete: bool,
        out: list,
    ) -> None:
        ser.closes.append(ser.close)
        ser.n_closes += 1
        sma = []
        for p in self.sma_periods:
            v = _sma(ser.closes, p)
            if v is not None:
                sma.append((p, v))
        ema = []
        for i, p in enumerate(self.ema_periods):
            e = ser.emas[i] = _ema_step(ser.emas[i], ser.closes, ser.n_closes, p)
            if e is not None:
                ema.append((p, round_div(e, ONE)))
        c = CandleClosed(
            ev.seq,
            ev.recv_ns,
            ev.symbol,
            ser.interval,
            start,
            start + ser.length - 1,
            ser.open,
            ser.high,
            ser.low,
            ser.close,
            ser.volume,
            ser.buy,
            ser.trades,
            ser.first_id,
            ser.last_id,
            complete,
            filled,
            tuple(sma),
            tuple(ema),
        )
        out.append(c)
        ser.recent.append(c)
        pend = ser.pending
        while pend and pend[0].start_ms <= start:
            k = pend.popleft()
            if k.start_ms == start:
                self._compare(state, c, k, ev.seq, ev.recv_ns, out)
            else:
                state.uncomparable += 1

    # ----------------------------------------------------------------- klines

    def _kline(self, state: CandlesState, k: Kline) -> Sequence[Any]:
        if not k.closed:
            return NO_OUTPUTS
        sc = state.symbols.get(k.symbol)
        ser = None
        if sc is not None:
            for s in sc.series:
                if s.interval == k.interval:
                    ser = s
        if ser is None:
            if k.interval in self.intervals:
                state.uncomparable += 1  # no trade of this symbol yet
            return NO_OUTPUTS
        if ser.start < 0 or k.start_ms >= ser.start:
            pend = ser.pending
            if any(p.start_ms == k.start_ms for p in pend):
                return NO_OUTPUTS  # the same kline twice (two connections): compare once
            if len(pend) >= self.max_pending:
                pend.popleft()
                state.uncomparable += 1
            pend.append(k)
            return NO_OUTPUTS
        for c in ser.recent:
            if c.start_ms == k.start_ms:
                out: list[Any] = []
                self._compare(state, c, k, k.seq, k.recv_ns, out)
                return out
        state.uncomparable += 1
        return NO_OUTPUTS

    def _compare(
        self, state: CandlesState, c: CandleClosed, k: Kline, seq: int, recv_ns: int, out: list
    ) -> None:
        if not c.complete:
            state.uncomparable += 1
            return
        diff = _differences(c, k)
        if diff:
            state.mismatches += 1
            out.append(KlineMismatch(seq, recv_ns, c.symbol, c.interval, c.start_ms, diff))
        else:
            state.matches += 1

    def snapshot(self, state: CandlesState) -> Any:
        return serde.converter.unstructure(state)

    def restore(self, data: Any) -> CandlesState:
        state = serde.converter.structure(data, CandlesState)
        keep = self._keep
        for sc in state.symbols.values():  # deque bounds are configuration, not data
            for ser in sc.series:
                ser.closes = deque(ser.closes, maxlen=keep)
                ser.recent = deque(ser.recent, maxlen=self.keep_closed)
        return state
