"""Trade aggregator: per-symbol last price, VWAP (session + rolling windows), volume split, count.

Owns: the :class:`TradeAggregator` reducer, its state and its :class:`TradeStats`
output; the :class:`TradeTape` reducer (each symbol's last trades, for displays:
the aggregator keeps totals only and no output is emitted per trade); and the
one rule for *which* trades count (:func:`select_trade`, folded per ``source``
by :class:`TradeSelector`).  The rule is applied by the pipeline's selection
stage, once per trade and source, never by a consumer: every trade consumer
(these two, candles, the anomaly detector) receives each trade with the time
the rule gave it through ``on_trade`` (:class:`engine.reducer.TradeConsumer`).
Must not: read the clock, do I/O, use floats, or raise on any event.

Which trades count
    A Binance journal may carry both ``@trade`` and ``@aggTrade`` for a symbol;
    counting both would double every volume.  ``source`` picks one:
    ``"trade"`` (raw trades only), ``"aggTrade"`` (aggregates only) or
    ``"auto"`` (default): per symbol, the kind of the *first* trade event seen
    wins and the other kind is set aside (counted in ``SelectState.counts.skipped``).  Both
    kinds give identical totals (an aggTrade is trades ``first_id..last_id``
    at one price and one taker side, so its trade count is
    ``last_id - first_id + 1``), hence "first seen wins" is exact, not a guess.
    Exchange trade ids (> 0) are increasing per symbol: an event whose
    ``first_id`` is not above the highest id already counted is a duplicate
    (e.g. two connections carrying the same stream across a reconnect) and is
    dropped (``counts.duplicates``).  Ids <= 0 mean "no id" and are not checked.

Time
    Exchange trade time (``txn_ms``, else ``exch_ms``); a trade with neither is
    set aside (``counts.untimed``).  A symbol's clock is the running maximum of its
    trade times: a trade stamped earlier than one already seen is counted at
    the current time (Binance sends per-symbol trades in id order, so this is
    rare and only ever a few ms).

Rolling windows, O(1) amortized
    Trades accumulate in the current *bucket* (``bucket_ms``, default 1 s,
    aligned to UTC epoch multiples).  When a trade opens a new bucket the
    finished bucket is pushed onto each window's deque and added to its running
    sums, and buckets that left the window are popped and subtracted.  So per
    trade the work is four integer additions; the deques hold at most
    ``window_ms / bucket_ms`` entries.  A window of ``W`` ms at a time in
    bucket ``C`` covers the trades whose (clamped) time lies in buckets
    ``C - W + bucket .. C``, i.e. the last ``W / bucket`` buckets including the
    current one.  ``bucket_ms=1`` makes windows exact to the millisecond.

Exactness
    Volume in qty units (1e-18); notional ``Σ price·qty`` in units of 1e-36
    (exact); VWAP = notional / volume, which is in price units (1e-18).  VWAP is
    kept as the exact pair (``vwap_num``, ``vwap_den``) — see
    :attr:`TradeStats.vwap_exact` for a :class:`~fractions.Fraction` — and shown
    rounded half-to-even to an int at 1e-18 (``vwap``).

Outputs
    No per-trade output (it would allocate on the hot path and flood the
    output stream).  When a trade opens a new bucket, one :class:`TradeStats`
    per symbol reports the state *as of the end of the finished bucket*
    (``emit_stats=False`` turns this off).  :func:`current_stats` answers the
    same question at any moment from the state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Literal

import attrs
from attrs import frozen

from engine import serde
from engine.events import BUY, Trade
from engine.reducer import NO_OUTPUTS

__all__ = [
    "TradeAggregator",
    "TradesState",
    "SymbolTrades",
    "TradeWindow",
    "TradeStats",
    "WindowStats",
    "TradeSelect",
    "select_trade",
    "SelectCounts",
    "SelectState",
    "TradeSelector",
    "trade_time",
    "current_stats",
    "round_div",
    "TradeTape",
    "TapeState",
    "SymbolTape",
]

SOURCES = ("auto", "trade", "aggTrade")


def round_div(num: int, den: int) -> int:
    """``num / den`` rounded half to even (exact ints; ``den > 0``)."""
    q, r = divmod(num, den)
    r2 = 2 * r
    if r2 > den or (r2 == den and q & 1):
        q += 1
    return q


def trade_time(ev: Trade) -> int | None:
    """The exchange time a trade is placed at: trade time ``T``, else event time ``E``."""
    t = ev.txn_ms
    return ev.exch_ms if t is None else t


# --------------------------------------------------------------------------- trade selection


@serde.register
@attrs.define(slots=True)
class TradeSelect:
    """Per-symbol memory of the trade-selection rule: locked kind and highest counted id.

    ``agg`` is None until the first trade of the symbol (``source="auto"``).
    """

    agg: bool | None = None
    hi: int = 0


@serde.register
@attrs.define(slots=True)
class SelectCounts:
    """Trades the selection rule set aside: other kind, duplicate ids, no exchange time."""

    skipped: int = 0
    duplicates: int = 0
    untimed: int = 0


def select_trade(counts: SelectCounts, sel: TradeSelect, ev: Trade, source: str) -> int | None:
    """The exchange time to place ``ev`` at if it counts under the module's rule, else None.

    Updates ``sel`` when the trade counts and ``counts`` when it does not (why).
    The one definition of the rule: :class:`TradeSelector` (the pipeline's
    selection stage) and the export call it; it is one flat function on
    purpose (no helper calls on the hot path).
    """
    t = ev.txn_ms
    if t is None:
        t = ev.exch_ms
        if t is None:
            counts.untimed += 1
            return None
    agg = sel.agg
    if agg is None:
        agg = sel.agg = (source == "aggTrade") if source != "auto" else ev.agg
    if ev.agg is not agg:
        counts.skipped += 1
        return None
    fid = ev.first_id
    if fid > 0:
        if fid <= sel.hi:
            counts.duplicates += 1
            return None
        sel.hi = ev.last_id
    return t


@serde.register
@attrs.define(slots=True)
class SelectState:
    """The selection rule's whole memory for one ``source``: per-symbol records and the counts."""

    symbols: dict[str, TradeSelect] = attrs.Factory(dict)
    counts: SelectCounts = attrs.Factory(SelectCounts)


@attrs.frozen
class TradeSelector:
    """The selection rule as a fold over trades, for one ``source`` (module docstring).

    The pipeline keeps one per distinct ``source`` of its trade consumers and
    hands each consumer every trade with the time this selector gave it
    (:meth:`engine.reducer.TradeConsumer.on_trade`), so the rule runs once per
    trade and source, never once per consumer.  Pure: no clock, no I/O.
    """

    source: Literal["auto", "trade", "aggTrade"] = attrs.field(
        default="auto", validator=attrs.validators.in_(SOURCES)
    )

    def initial(self) -> SelectState:
        return SelectState()

    def select(self, state: SelectState, ev: Trade) -> int | None:
        """``ev``'s selected exchange time, or None if the rule sets it aside (updates ``state``)."""
        sel = state.symbols.get(ev.symbol)
        if sel is None:
            sel = state.symbols[ev.symbol] = TradeSelect()
        return select_trade(state.counts, sel, ev, self.source)

    def snapshot(self, state: SelectState) -> Any:
        return serde.converter.unstructure(state)

    def restore(self, data: Any) -> SelectState:
        return serde.converter.structure(data, SelectState)


# --------------------------------------------------------------------------- outputs


class _Vwap:
    """VWAP and sell volume, derived on demand (the hot path builds only the sums)."""

    __slots__ = ()
    volume: int
    buy_volume: int
    notional: int

    @property
    def vwap(self) -> int | None:
        """notional / volume rounded half-even to 1e-18 price units (None without volume)."""
        return round_div(self.notional, self.volume) if self.volume else None

    @property
    def vwap_exact(self) -> Fraction | None:
        return Fraction(self.notional, self.volume) if self.volume else None

    @property
    def sell_volume(self) -> int:
        return self.volume - self.buy_volume


@serde.register
@frozen
class WindowStats(_Vwap):
    """One rolling window's totals; ``vwap`` / ``vwap_exact`` derive from notional and volume."""

    window_ms: int
    count: int
    volume: int
    buy_volume: int
    notional: int


@serde.register
@frozen
class TradeStats(_Vwap):
    """A symbol's trade statistics as of exchange time ``as_of_ms`` (inclusive).

    ``seq``/``recv_ns`` are the event that caused the report.  Session totals
    cover every accepted trade since the start of the replay/run (or restore).
    ``notional`` is Σ price·qty in units of 1e-36; ``vwap`` (a property, like
    ``sell_volume``) = notional/volume rounded half-even to 1e-18 units, exact
    value :attr:`vwap_exact`.
    """

    seq: int
    recv_ns: int
    symbol: str
    as_of_ms: int
    last_price: int
    count: int
    volume: int
    buy_volume: int
    notional: int
    windows: tuple[WindowStats, ...]


# --------------------------------------------------------------------------- state


@serde.register
@attrs.define(slots=True)
class TradeWindow:
    """Finished buckets inside one rolling window, and their running sums.

    ``buckets`` holds ``(start_ms, count, volume, buy_volume, notional)``.
    """

    window_ms: int
    buckets: deque[tuple[int, int, int, int, int]] = attrs.Factory(deque)
    count: int = 0
    volume: int = 0
    buy_volume: int = 0
    notional: int = 0


@serde.register
@attrs.define(slots=True)
class SymbolTrades:
    """One symbol's running aggregate: session sums of finished buckets plus the current bucket."""

    windows: list[TradeWindow]
    last_ms: int = 0
    last_price: int = 0
    # session totals over finished buckets
    count: int = 0
    volume: int = 0
    buy_volume: int = 0
    notional: int = 0
    # the current (unfinished) bucket
    cur_start: int = -1
    cur_count: int = 0
    cur_volume: int = 0
    cur_buy: int = 0
    cur_notional: int = 0


@serde.register
@attrs.define(slots=True)
class TradesState:
    symbols: dict[str, SymbolTrades] = attrs.Factory(dict)


# --------------------------------------------------------------------------- the reducer


def _stats(
    symbol: str, s: SymbolTrades, as_of_ms: int, seq: int, recv_ns: int, with_current: bool
) -> TradeStats:
    """The symbol's report: finished buckets, plus the unfinished one if ``with_current``."""
    if with_current:
        n, v, b, x = s.cur_count, s.cur_volume, s.cur_buy, s.cur_notional
        return TradeStats(
            seq, recv_ns, symbol, as_of_ms, s.last_price, s.count + n, s.volume + v,
            s.buy_volume + b, s.notional + x,
            tuple(
                WindowStats(w.window_ms, w.count + n, w.volume + v, w.buy_volume + b, w.notional + x)
                for w in s.windows
            ),
        )  # fmt: skip
    windows = []  # a plain loop: a comprehension is one more call per report on 3.11
    for w in s.windows:
        windows.append(WindowStats(w.window_ms, w.count, w.volume, w.buy_volume, w.notional))
    return TradeStats(
        seq, recv_ns, symbol, as_of_ms, s.last_price, s.count, s.volume, s.buy_volume, s.notional,
        tuple(windows),
    )  # fmt: skip


def current_stats(state: TradesState, symbol: str) -> TradeStats | None:
    """The symbol's statistics including the unfinished bucket (None if no trade yet).

    Windows are as of the symbol's latest trade time (buckets that left them
    were evicted when the current bucket opened).  Read-only.
    """
    s = state.symbols.get(symbol)
    if s is None or s.cur_start < 0:
        return None
    return _stats(symbol, s, s.last_ms, -1, -1, True)


@attrs.frozen
class TradeAggregator:
    """Reducer: per-symbol trade statistics (see the module docstring for every rule).

    Args:
        source: ``"auto"`` | ``"trade"`` | ``"aggTrade"`` — which trade events count.
        windows_ms: rolling VWAP/volume windows, each a multiple of ``bucket_ms``.
        bucket_ms: window granularity and :class:`TradeStats` cadence.
        emit_stats: emit :class:`TradeStats` when a bucket finishes.
    """

    name: str = "trades"
    source: Literal["auto", "trade", "aggTrade"] = attrs.field(
        default="auto", validator=attrs.validators.in_(SOURCES)
    )
    windows_ms: tuple[int, ...] = (60_000, 300_000)
    bucket_ms: int = 1000
    emit_stats: bool = True

    def __attrs_post_init__(self) -> None:
        if self.bucket_ms <= 0:
            raise ValueError(f"bucket_ms must be > 0, got {self.bucket_ms}")
        for w in self.windows_ms:
            if w <= 0 or w % self.bucket_ms:
                raise ValueError(
                    f"window {w} ms is not a positive multiple of bucket_ms={self.bucket_ms}"
                )

    def initial(self) -> TradesState:
        return TradesState()

    def step(self, state: TradesState, event: Any) -> tuple[TradesState, Sequence[Any]]:
        """No event but a selected trade (:meth:`on_trade`) concerns the aggregator."""
        return state, NO_OUTPUTS

    def on_trade(
        self, state: TradesState, event: Trade, t: int | None
    ) -> tuple[TradesState, Sequence[Any]]:
        """Fold one trade the selection rule gave time ``t`` (None: set aside, ignored)."""
        s = state.symbols.get(event.symbol)
        if s is None:
            s = state.symbols[event.symbol] = SymbolTrades(
                [TradeWindow(w) for w in self.windows_ms]
            )
        if t is None:
            return state, NO_OUTPUTS
        if t < s.last_ms:
            t = s.last_ms
        else:
            s.last_ms = t
        out: Sequence[Any] = NO_OUTPUTS
        start = t - t % self.bucket_ms
        if start != s.cur_start:
            out = self._roll(event.symbol, s, start, event)
        p, q = event.price, event.qty
        s.last_price = p
        s.cur_count += event.last_id - event.first_id + 1 if event.agg else 1
        s.cur_volume += q
        s.cur_notional += p * q
        if event.side == BUY:
            s.cur_buy += q
        return state, out

    def _roll(self, sym: str, s: SymbolTrades, start: int, event: Trade) -> Sequence[Any]:
        """Finish the current bucket: fold it into session and windows; maybe report."""
        prev = s.cur_start
        out: Sequence[Any] = NO_OUTPUTS
        if prev >= 0:
            n, v, buy, notional = s.cur_count, s.cur_volume, s.cur_buy, s.cur_notional
            s.count += n
            s.volume += v
            s.buy_volume += buy
            s.notional += notional
            entry = (prev, n, v, buy, notional)
            for w in s.windows:
                w.buckets.append(entry)
                w.count += n
                w.volume += v
                w.buy_volume += buy
                w.notional += notional
            if self.emit_stats:
                as_of = prev + self.bucket_ms - 1
                out = (_stats(sym, s, as_of, event.seq, event.recv_ns, False),)
        for w in s.windows:  # drop the buckets that left each window (start <= start - W)
            b = w.buckets
            upto = start - w.window_ms
            while b and b[0][0] <= upto:
                _, n, v, buy, notional = b.popleft()
                w.count -= n
                w.volume -= v
                w.buy_volume -= buy
                w.notional -= notional
        s.cur_start = start
        s.cur_count = s.cur_volume = s.cur_buy = s.cur_notional = 0
        return out

    def snapshot(self, state: TradesState) -> Any:
        return serde.converter.unstructure(state)

    def restore(self, data: Any) -> TradesState:
        return serde.converter.structure(data, TradesState)


# --------------------------------------------------------------------------- the trade tape


@serde.register
@attrs.define(slots=True)
class SymbolTape:
    """One symbol's last accepted trades, oldest first: ``(time_ms, price, qty, side, trades)``.

    ``trades`` counts exchange trades (an aggTrade covers ``last_id - first_id + 1``).
    """

    recent: deque[tuple[int, int, int, str, int]]


@serde.register
@attrs.define(slots=True)
class TapeState:
    symbols: dict[str, SymbolTape] = attrs.Factory(dict)


@attrs.frozen
class TradeTape:
    """Reducer: each symbol's last ``size`` trades (time and sales), no outputs.

    The same trades count as for the aggregator and the candles
    (:func:`engine.trades.select_trade`: one trade kind per symbol, duplicate
    ids dropped).  A trade is placed at its own exchange time (not clamped).
    """

    name: str = "tape"
    size: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    source: Literal["auto", "trade", "aggTrade"] = attrs.field(
        default="auto", validator=attrs.validators.in_(SOURCES)
    )

    def initial(self) -> TapeState:
        return TapeState()

    def step(self, state: TapeState, event: Any) -> tuple[TapeState, Sequence[Any]]:
        """No event but a selected trade (:meth:`on_trade`) concerns the tape."""
        return state, NO_OUTPUTS

    def on_trade(
        self, state: TapeState, event: Trade, t: int | None
    ) -> tuple[TapeState, Sequence[Any]]:
        s = state.symbols.get(event.symbol)
        if s is None:
            s = state.symbols[event.symbol] = SymbolTape(deque(maxlen=self.size))
        if t is not None:
            n = event.last_id - event.first_id + 1 if event.agg else 1
            s.recent.append((t, event.price, event.qty, event.side, n))
        return state, NO_OUTPUTS

    def snapshot(self, state: TapeState) -> Any:
        return serde.converter.unstructure(state)

    def restore(self, data: Any) -> TapeState:
        state = serde.converter.structure(data, TapeState)
        for s in state.symbols.values():  # the bound is configuration, not data
            s.recent = deque(s.recent, maxlen=self.size)
        return state
