"""Anomaly detector: volume and price spikes, large trades, wide or crossed quotes, stale streams.

Owns: the :class:`AnomalyDetector` reducer, its state, and the one alert output
class :class:`Alert`; its quote checks (crossed and wide spreads) are applied
by :mod:`engine.quotes`.  Must not: read the clock, do I/O, use floats, keep
unbounded per-symbol history, or raise on any event (events that do not
concern it are ignored, but every event still advances journal time).

Every rule below is exact integer arithmetic.  Each alert carries ``value``
and ``threshold`` as ints in the unit named by ``Alert.unit``, with one
convention for every kind: **the alert fired because value ≥ threshold**.
Where a threshold is a ratio of a baseline (e.g. 5 × a mean), ``threshold``
is the exact ratio rounded *up* to the unit, and a measured value is rounded
*down* to the unit; for integers both roundings keep ``value ≥ threshold``
equivalent to the exact rational comparison, so the printed pair never
contradicts the decision.  Alerts depend only on event fields (exchange
trade times, receive times) and on the state, which snapshots whole: a replay,
or a restore from a checkpoint, alerts at exactly the same events.

Which trades count, and trade time
    The shared rule of :mod:`engine.trades` (:func:`~engine.trades.select_trade`,
    applied by the pipeline, which hands each trade and its selected time to
    ``on_trade``): one trade kind per symbol, duplicate ids dropped, untimed
    trades ignored (a set-aside trade is still stream activity).
    A symbol's trade clock is the running maximum of its trade times (a trade
    stamped earlier than one already seen counts at the current time).

volume_spike (engine units of qty)
    Trades are bucketed into UTC-aligned intervals of ``volume_interval_ms``.
    The baseline of an interval is the mean volume of the ``volume_baseline``
    intervals before it, *empty intervals counting as zero*.  It fires at the
    first trade that brings its interval's volume to ≥ ``volume_ratio_pct``% of
    that mean, at most once per interval.  No alert while the symbol has not
    been watched for the whole baseline (its first bucket is later than the
    oldest baseline interval) or while the baseline is zero.  State: a deque of
    the non-empty finished intervals inside the baseline and their running sum
    — O(1) amortized per trade, at most ``volume_baseline`` entries.

large_trade
    ``notional`` (engine units of quote): price × qty ≥ ``large_notional``.
    ``vs recent`` (engine units of qty): qty ≥ ``large_ratio_pct``% of the mean qty
    of the symbol's previous ``large_window`` accepted trades (only once that
    many were seen and their sum is > 0).  Deque + running sum, O(1).

price_jump (unit bps)
    ``|p - p_prev| / p_prev ≥ price_jump_bps`` between consecutive accepted
    trades of a symbol, however far apart in time.

crossed_book (engine units of price) and wide_spread
    The quote checks, on the exchange's own top of book: :mod:`engine.quotes`.

stale_stream (unit ms)
    A *stream* is (symbol, kind), kind being ``trade``, ``aggTrade``,
    ``depth``, ``bookTicker``, ``partialDepth`` (in-stream BookSnapshot),
    ``ticker`` or ``kline_<interval>``; REST snapshots are answers, not
    streams.  *Journal time* is the running maximum of every event's
    ``recv_ns`` — any event, connection events and DecodeErrors included, so
    time advances whenever anything at all is journaled.  A stream's last-seen
    time is the journal time of its latest event.  After each event (its own
    stream refreshed first), every watched stream silent for ≥
    ``stale_after_ms`` of journal time that is not already stale gets one
    alert, and is stale until its next event (one alert per stale episode).
    Only streams seen at least once can go stale; if nothing at all is
    journaled, journal time stands still and nothing fires (the live
    runtime's watchdog covers a silent connection).  Cost: the state keeps a
    lower bound ``next_check`` of the earliest deadline; streams are scanned
    only when journal time reaches it, so the per-event cost is one dict store.

Order of alerts within one event: stale streams first (by last-seen time,
then symbol, then kind), then the event's own: volume_spike, large_trade
(notional, vs recent), price_jump; for quotes crossed_book, or wide_spread
(abs, bps, vs median).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

import attrs
from attrs import frozen

from engine import num, serde
from engine.events import (
    BookSnapshot,
    BookTicker,
    DepthDiff,
    Kline,
    Ticker24h,
    Trade,
)
from engine.num import ONE
from engine.quotes import CROSSED_BOOK, WIDE_SPREAD, ceil_div, quote_alerts
from engine.reducer import NO_OUTPUTS
from engine.timefmt import format_ms, format_ns
from engine.trades import SOURCES

__all__ = [
    "AnomalyDetector",
    "AnomalyState",
    "SymbolWatch",
    "Alert",
    "KINDS",
    "VOLUME_SPIKE",
    "WIDE_SPREAD",
    "LARGE_TRADE",
    "PRICE_JUMP",
    "CROSSED_BOOK",
    "STALE_STREAM",
]

VOLUME_SPIKE = "volume_spike"
LARGE_TRADE = "large_trade"
PRICE_JUMP = "price_jump"
STALE_STREAM = "stale_stream"
KINDS = (VOLUME_SPIKE, WIDE_SPREAD, LARGE_TRADE, PRICE_JUMP, CROSSED_BOOK, STALE_STREAM)

#: ``next_check`` when no stream can go stale (int64 max: checkpoints stay 64-bit).
NEVER = 2**63 - 1
#: journal time before the first event (int64 min, below any receive time)
BEFORE = -(2**63)
_MS = 1_000_000

#: the stream kind of each event class that is one stream per symbol (klines and
#: in-stream snapshots are handled beside it: their kind depends on a field)
_STREAM_KINDS: dict[type, str] = {
    DepthDiff: "depth",
    BookTicker: "bookTicker",
    Ticker24h: "ticker",
}


# --------------------------------------------------------------------------- output


@serde.register
@frozen
class Alert:
    """One anomaly: it fired because ``value ≥ threshold`` (exact ints in ``unit``).

    ``seq``/``recv_ns`` are the event that revealed it (for a stale stream,
    whatever event moved journal time past the deadline); ``exch_ms`` is that
    event's exchange time (trade time for trades), None where there is none
    and always None for a stale stream (silence has no exchange time).
    ``unit``: ``num.UNIT`` (price, qty or quote notional in engine units),
    ``"bps"`` (1/10000 of the reference price) or ``"ms"``.  ``detail`` names
    the criterion and the numbers behind the threshold.
    """

    seq: int
    recv_ns: int
    kind: str
    symbol: str
    exch_ms: int | None
    value: int
    threshold: int
    unit: str
    detail: str

    def line(self) -> str:
        """One loggable line, receive time first::

        2024-05-01T12:03:05.123456789Z ALERT large_trade BTCUSDT value=2.50000000 >=
        threshold=1.000000000000000000 [1e-18] exch=2024-05-01T12:03:05.120Z seq=42 notional ...
        """
        if self.unit == num.UNIT:
            v, t = num.render(self.value), num.render(self.threshold)
        else:
            v, t = str(self.value), str(self.threshold)
        exch = "-" if self.exch_ms is None else format_ms(self.exch_ms)
        return (
            f"{format_ns(self.recv_ns)} ALERT {self.kind} {self.symbol} value={v} >= threshold={t} "
            f"[{self.unit}] exch={exch} seq={self.seq} {self.detail}"
        )


# --------------------------------------------------------------------------- state


@serde.register
@attrs.define(slots=True)
class SymbolWatch:
    """Everything the detector keeps for one symbol (all of it bounded by configuration)."""

    # trades
    last_ms: int = -1  # trade clock (running max of trade times)
    last_price: int = 0  # 0 = no trade yet
    first_start: int = -1  # first volume interval seen
    cur_start: int = -1  # current volume interval [cur_start, cur_end)
    cur_end: int = BEFORE  # BEFORE: no interval yet
    cur_vol: int = 0
    vol_thr: int = 0  # volume that fires in the current interval; 0 = none (fired / no baseline)
    buckets: deque[tuple[int, int]] = attrs.Factory(deque)  # (start, volume), non-empty, finished
    base_sum: int = 0
    recent: deque[int] = attrs.Factory(deque)  # qty of the last large_window trades
    recent_sum: int = 0
    # quotes
    crossed: bool = False
    wide: int = 0  # bits of the wide-spread criteria met by the previous quote
    spreads: deque[int] = attrs.Factory(deque)  # arrival order
    spreads_sorted: list[int] = attrs.Factory(list)
    # streams: kind -> journal time of its latest event; stale ones -> when they went silent
    seen: dict[str, int] = attrs.Factory(dict)
    stale: dict[str, int] = attrs.Factory(dict)


@serde.register
@attrs.define(slots=True)
class AnomalyState:
    symbols: dict[str, SymbolWatch] = attrs.Factory(dict)
    now: int = BEFORE  # journal time: max recv_ns of every event so far
    next_check: int = NEVER  # lower bound of the earliest stale deadline
    alerts: dict[str, int] = attrs.Factory(dict)  # kind -> alerts emitted


# --------------------------------------------------------------------------- the reducer


def _pos(name: str, v: int | None) -> None:
    if v is not None and v <= 0:
        raise ValueError(f"{name} must be a positive int or None, got {v}")


@attrs.frozen
class AnomalyDetector:
    """Reducer: typed :class:`Alert` outputs (every rule in the module docstring).

    Every threshold is a field; ``None`` turns that check off.  Defaults are
    meant to flag genuinely unusual moments on liquid USDT-quoted spot pairs
    without flooding; tune them per deployment.

    Args:
        source: which trade events count (see :mod:`engine.trades`).
        volume_interval_ms: volume-spike interval (10 s).
        volume_baseline: intervals in the rolling baseline (30: five minutes).
        volume_ratio_pct: spike when interval volume ≥ this % of the baseline mean (500 = 5×).
        large_notional: large trade when price × qty ≥ this, engine quote units (1,000,000 quote).
        large_window: recent trades the relative large-trade test compares with (100).
        large_ratio_pct: large trade when qty ≥ this % of their mean qty (2000 = 20×).
        price_jump_bps: consecutive-trade price change that is a jump (100 bps = 1 %).
        spread_abs: wide spread in engine price units (None: price-dependent, off by default).
        spread_bps: wide spread relative to the mid (50 bps).
        spread_window: quotes in the rolling median (200).
        spread_median_min_bps: the vs-median criterion also needs the spread to be at least
            this many bps of the mid (2; None: no floor).  A book whose spread is one tick
            most of the time is "10× its median" at ten ticks, which on BTCUSDT is
            0.02 bps: noise, not an anomaly worth a trader's attention.
        spread_median_ratio_pct: wide when spread ≥ this % of the rolling median (1000 = 10×;
            a one-tick median makes 5× an everyday few ticks on an active book).
        stale_after_ms: a stream silent this long in journal time is stale (60 s).
        stale_kinds: stream kinds watched for staleness; None: every kind.  Trades of a
            quiet symbol legitimately pause for minutes: leave them out where that is noise.
    """

    name: str = "anomaly"
    source: Literal["auto", "trade", "aggTrade"] = attrs.field(
        default="auto", validator=attrs.validators.in_(SOURCES)
    )
    volume_interval_ms: int | None = 10_000
    volume_baseline: int = 30
    volume_ratio_pct: int = 500
    large_notional: int | None = 1_000_000 * ONE
    large_window: int | None = 100
    large_ratio_pct: int = 2000
    price_jump_bps: int | None = 100
    spread_abs: int | None = None
    spread_bps: int | None = 50
    spread_window: int | None = 200
    spread_median_ratio_pct: int = 1000
    spread_median_min_bps: int | None = 2
    stale_after_ms: int | None = 60_000
    stale_kinds: tuple[str, ...] | None = None
    # derived constants of the trade hot path (0 = check off)
    _big: int = attrs.field(init=False, default=0, eq=False, repr=False)
    _k100: int = attrs.field(init=False, default=0, eq=False, repr=False)
    _stale_ns: int = attrs.field(init=False, default=0, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        for f in (
            "volume_interval_ms",
            "volume_baseline",
            "volume_ratio_pct",
            "large_notional",
            "large_window",
            "large_ratio_pct",
            "price_jump_bps",
            "spread_abs",
            "spread_bps",
            "spread_window",
            "spread_median_ratio_pct",
            "stale_after_ms",
        ):
            _pos(f, getattr(self, f))
        k, big, stale = self.large_window, self.large_notional, self.stale_after_ms
        object.__setattr__(self, "_big", 0 if big is None else big * ONE)
        object.__setattr__(self, "_k100", 0 if k is None else 100 * k)
        object.__setattr__(self, "_stale_ns", 0 if stale is None else stale * _MS)

    def initial(self) -> AnomalyState:
        return AnomalyState()

    # ----------------------------------------------------------------- dispatch

    def step(self, state: AnomalyState, event: Any) -> tuple[AnomalyState, Sequence[Any]]:
        """Every event but trades, which arrive selected through :meth:`on_trade`."""
        return state, self._other(state, event)

    def on_trade(
        self, state: AnomalyState, ev: Trade, t: int | None
    ) -> tuple[AnomalyState, Sequence[Any]]:
        """Trades are the hot path: a few integer comparisons per trade.

        Every trade event is stream activity and journal time, counted or not
        (``t`` is None when the selection rule set it aside).
        """
        s = state.symbols.get(ev.symbol)
        if s is None:
            s = self._watch(state.symbols, ev.symbol)
        return state, self._trade(state, s, ev, t)

    def _trade(
        self, state: AnomalyState, s: SymbolWatch, ev: Trade, t: int | None
    ) -> Sequence[Any]:
        now = ev.recv_ns
        if now > state.now:
            state.now = now
        else:
            now = state.now
        out: list[Any] | None = None
        if self._stale_ns:
            kind = "aggTrade" if ev.agg else "trade"
            seen = s.seen
            if kind in seen and not s.stale:
                seen[kind] = now
            else:
                self._refresh(state, s, kind)
            if now >= state.next_check:
                out = []
                self._scan(state, ev, out)
        if t is None:
            return out if out else NO_OUTPUTS
        tc = s.last_ms
        if t > tc:
            s.last_ms = tc = t
        p, q = ev.price, ev.qty
        # volume spike: the current interval ends at cur_end (the clock never goes back)
        if tc >= s.cur_end:
            length = self.volume_interval_ms
            if length is not None:
                self._roll(s, tc - tc % length, length)
        v = s.cur_vol = s.cur_vol + q
        thr = s.vol_thr
        if thr and v >= thr:
            s.vol_thr = 0
            out = self._fire(state, out, ev, VOLUME_SPIKE, t, v, thr, num.UNIT, s)
        # large trade: absolute notional
        big = self._big
        if big and p * q >= big:
            out = self._fire(
                state, out, ev, LARGE_TRADE, t, p * q // ONE, big // ONE, num.UNIT, "notional"
            )
        # large trade: relative to the previous large_window trades
        k100 = self._k100
        if k100:
            rec = s.recent
            if len(rec) == self.large_window:
                total = s.recent_sum
                if total and q * k100 >= self.large_ratio_pct * total:
                    thr = ceil_div(self.large_ratio_pct * total, k100)
                    out = self._fire(state, out, ev, LARGE_TRADE, t, q, thr, num.UNIT, "vs recent")
                s.recent_sum = total + q - rec.popleft()
            else:
                s.recent_sum += q
            rec.append(q)
        # price jump between consecutive trades
        pp = s.last_price
        if p != pp:
            s.last_price = p
            bps = self.price_jump_bps
            if pp and bps is not None:
                d = p - pp if p > pp else pp - p
                if d * 10_000 >= bps * pp:
                    out = self._fire(
                        state, out, ev, PRICE_JUMP, t, d * 10_000 // pp, bps, "bps", pp
                    )
        return out if out else NO_OUTPUTS

    def _other(self, state: AnomalyState, event: Any) -> Sequence[Any]:
        """Every event but trades: stream activity, journal time, and quotes."""
        r = getattr(event, "recv_ns", None)
        if type(r) is not int:
            return NO_OUTPUTS
        if r > state.now:
            state.now = r
        tp = type(event)
        kind = _STREAM_KINDS.get(tp)
        if kind is None:
            if tp is Kline:
                kind = "kline_" + event.interval
            elif tp is BookSnapshot and event.origin == "stream":
                kind = "partialDepth"
        out: list[Any] | None = None
        if self._stale_ns:
            if kind is not None:
                s = state.symbols.get(event.symbol)
                if s is None:
                    s = self._watch(state.symbols, event.symbol)
                seen = s.seen
                if kind in seen and not s.stale:
                    seen[kind] = state.now
                else:
                    self._refresh(state, s, kind)
            if state.now >= state.next_check:
                out = []
                self._scan(state, event, out)
        if tp is BookTicker:
            return self._quote(state, event, event.bid_price, event.ask_price, out)
        if tp is BookSnapshot:
            bid = max((p for p, q in event.bids if q > 0), default=0)
            ask = min((p for p, q in event.asks if q > 0), default=0)
            return self._quote(state, event, bid, ask, out)
        return out if out else NO_OUTPUTS

    def alert(
        self,
        state: AnomalyState,
        out: list[Any],
        ev: Any,
        kind: str,
        symbol: str,
        exch_ms: int | None,
        value: int,
        threshold: int,
        unit: str,
        detail: str,
    ) -> None:
        out.append(Alert(ev.seq, ev.recv_ns, kind, symbol, exch_ms, value, threshold, unit, detail))
        a = state.alerts
        a[kind] = a.get(kind, 0) + 1

    # ----------------------------------------------------------------- streams

    def _watch(self, symbols: dict[str, SymbolWatch], symbol: str) -> SymbolWatch:
        s = symbols.get(symbol)
        if s is None:
            s = symbols[symbol] = SymbolWatch()
        return s

    def _refresh(self, state: AnomalyState, s: SymbolWatch, kind: str) -> None:
        """A new stream, or an event on a symbol that has a stale stream (ends its episode).

        A stream that (again) has a deadline may lower the ``next_check`` bound.
        """
        s.stale.pop(kind, None)
        now = state.now
        s.seen[kind] = now
        kinds = self.stale_kinds
        if kinds is None or kind in kinds:
            assert self.stale_after_ms is not None
            d = now + self.stale_after_ms * _MS
            if d < state.next_check:
                state.next_check = d

    def _scan(self, state: AnomalyState, ev: Any, out: list[Any]) -> None:
        """Alert every watched stream silent for ≥ stale_after_ms; recompute the deadline bound.

        Runs only when journal time reached ``next_check``; ``next_check`` only
        ever *under*-estimates the earliest deadline (a stream's deadline moves
        later with each of its events), so no stale stream is ever missed.
        """
        lim = self.stale_after_ms
        assert lim is not None
        lim_ns = lim * _MS
        now = state.now
        kinds = self.stale_kinds
        nxt = NEVER
        found = []
        for sym, s in state.symbols.items():
            stale = s.stale
            for k, last in s.seen.items():
                if k in stale or (kinds is not None and k not in kinds):
                    continue
                if now - last >= lim_ns:
                    found.append((last, sym, k))
                elif last + lim_ns < nxt:
                    nxt = last + lim_ns
        state.next_check = nxt
        found.sort()
        for last, sym, k in found:
            state.symbols[sym].stale[k] = last
            self.alert(
                state, out, ev, STALE_STREAM, sym, None, (now - last) // _MS, lim, "ms",
                f"{k} stream silent since {format_ns(last)}",
            )  # fmt: skip

    # ----------------------------------------------------------------- trades

    def _fire(
        self,
        state: AnomalyState,
        out: list[Any] | None,
        ev: Trade,
        kind: str,
        t: int,
        value: int,
        threshold: int,
        unit: str,
        about: Any,
    ) -> list[Any]:
        """Emit a trade alert (off the hot path: detail strings are built only here)."""
        if out is None:
            out = []
        if kind == VOLUME_SPIKE:
            detail = (
                f"interval {format_ms(about.cur_start)} +{self.volume_interval_ms}ms vs "
                f"{self.volume_ratio_pct}% of the mean of {self.volume_baseline} prior intervals "
                f"({num.render(about.base_sum)} total)"
            )
        elif kind == PRICE_JUMP:
            detail = f"{'up' if ev.price > about else 'down'} {num.render(about)} -> {num.render(ev.price)}"
        elif about == "vs recent":
            detail = (
                f"vs recent: {ev.side} qty vs {self.large_ratio_pct}% of the mean of the last "
                f"{self.large_window} trades"
            )
        else:
            detail = f"notional {ev.side} {num.render(ev.qty)} @ {num.render(ev.price)}"
        self.alert(state, out, ev, kind, ev.symbol, t, value, threshold, unit, detail)
        return out

    def _roll(self, s: SymbolWatch, start: int, length: int) -> None:
        """Open the volume interval ``start``: finish the current one, slide the baseline."""
        if s.cur_start < 0:
            s.first_start = start
        elif s.cur_vol:
            s.buckets.append((s.cur_start, s.cur_vol))
            s.base_sum += s.cur_vol
        n = self.volume_baseline
        lo = start - n * length
        b = s.buckets
        while b and b[0][0] < lo:
            s.base_sum -= b.popleft()[1]
        total = s.base_sum
        if total and s.first_start <= lo:
            s.vol_thr = ceil_div(self.volume_ratio_pct * total, 100 * n)
        else:
            s.vol_thr = 0
        s.cur_start = start
        s.cur_end = start + length
        s.cur_vol = 0

    # ----------------------------------------------------------------- quotes

    def _quote(
        self, state: AnomalyState, ev: Any, bid: int, ask: int, out: list[Any] | None
    ) -> Sequence[Any]:
        """Crossed and wide-spread checks of one top of book (:mod:`engine.quotes`)."""
        if bid <= 0 or ask <= 0:
            return out if out else NO_OUTPUTS
        s = state.symbols.get(ev.symbol)
        if s is None:
            s = self._watch(state.symbols, ev.symbol)
        return quote_alerts(self, state, s, ev, bid, ask, out)

    # ----------------------------------------------------------------- snapshot

    def snapshot(self, state: AnomalyState) -> Any:
        return serde.converter.unstructure(state)

    def restore(self, data: Any) -> AnomalyState:
        return serde.converter.structure(data, AnomalyState)
