"""The fused trade fold: a run of trade consumers, one symbol lookup and one selection per trade.

Why: the standard pipeline has four reducers that consume trades under the
one selection rule of :mod:`engine.trades` (aggregator, tape, candles,
anomaly detector).  Folded one by one, each trade costs four reducer calls,
four symbol lookups and four runs of :func:`~engine.trades.select_trade`
over four copies of the same selection state (``bench/reducers.py
--diagnose``: ``trio-unfused`` vs ``trio-python`` is what fusing saves in
Python; ``trio`` adds the C common case below).  Those copies always hold equal values (same rule, same
events, same start), so a :class:`TradeFan` keeps *one*: it links the
members' per-symbol ``sel`` records and their states' ``counts`` to a single
shared object, selects once, and calls each member's ``on_trade``.

It is an optimisation, never a second definition: for any event that is not
a trade it calls each member's ``step``; for a trade it performs exactly
the steps ``TradeConsumer.step`` is defined as (:mod:`engine.reducer`),
in member order, so outputs and states equal the one-by-one fold (a
hypothesis test in ``tests/test_tradefan.py`` pins that, snapshots
included).  Links are made only between records whose values are equal and
are rebuilt after a restore or when a member returns a new state object; if
the members ever disagree (a state no single pipeline produces: one member
restored or stepped on its own), every link is undone and the fan folds one
by one until the next restore.  Records are never replaced once created
(the :class:`~engine.reducer.TradeConsumer` contract), so a link stays valid.

The common case in C
    When the optional extension :mod:`engine._tradepath` is built, a trade
    that is the common case of the selection rule goes to it first with the
    records of the members it knows (exactly ``TradeAggregator``,
    ``TradeTape``, ``Candles`` and ``AnomalyDetector``: trade inside the
    current bucket / every open candle, nothing fires).  It applies what those
    members' ``on_trade`` would and declines everything else (new bucket,
    candle close, late trade, broken connection, an alert, a new or stale
    stream, first trade of a symbol, duplicates ...), which then runs in
    Python as above; other members always run in Python.  The pipeline then
    calls the fan through a C runner (:attr:`TradeFan.stage`): a trade that C
    applies to every member never enters Python at all.  The
    Python ``on_trade`` stays the definition: ``tests/test_tradefan.py`` folds
    with the C path, without it and one by one and requires equal results.

Must not: read the clock, do I/O, or raise on any event (it is part of the fold).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from engine.anomaly import AnomalyDetector, AnomalyState, SymbolWatch
from engine.candles import Candles, CandleSeries, SymbolCandles
from engine.events import Trade
from engine.reducer import NO_OUTPUTS, TradeConsumer
from engine.trades import (
    SymbolTape,
    SymbolTrades,
    TradeAggregator,
    TradeSelect,
    TradeTape,
    select_trade,
)

try:  # optional C common case (engine/_tradepath.c); None: all Python
    import engine._tradepath as _tradepath
except ImportError:  # pragma: no cover - the extension is optional
    _tradepath = None  # type: ignore[assignment]
else:
    _tradepath.configure(
        {
            "Trade": Trade,
            "TradeSelect": TradeSelect,
            "SymbolTrades": SymbolTrades,
            "SymbolTape": SymbolTape,
            "SymbolCandles": SymbolCandles,
            "CandleSeries": CandleSeries,
            "AnomalyState": AnomalyState,
            "SymbolWatch": SymbolWatch,
        }
    )


def _c_member(m: Any) -> tuple[Any, ...] | None:
    """What the C path does for member ``m`` (exact classes only: a subclass may differ)."""
    tp = type(m)
    if tp is TradeAggregator:
        return ("agg", m.bucket_ms)
    if tp is TradeTape:
        return ("tape",)
    if tp is Candles:
        return ("candles",)
    if tp is AnomalyDetector and m._big < 2**124:
        big = m._big
        return (
            "anomaly", 1 if m._stale_ns else 0, 0 if m.volume_interval_ms is None else 1,
            big >> 62, big & (2**62 - 1), m._k100, m.large_window or 0, m.large_ratio_pct,
            -1 if m.price_jump_bps is None else m.price_jump_bps,
        )  # fmt: skip
    return None


__all__ = ["TradeFan", "plan"]


class TradeFan:
    """Fold the trade consumers at ``indices`` of a pipeline's ``states`` list as one stage.

    ``states`` is the pipeline's list (shared, updated in place); the fan
    reads and writes only its members' slots.
    """

    __slots__ = (
        "members", "indices", "states", "source", "_records", "_counts", "_apart", "_cspec",
        "_paired",
    )  # fmt: skip

    def __init__(
        self,
        members: Sequence[TradeConsumer[Any]],
        indices: Sequence[int],
        states: list[Any],
        native: bool | None = None,
    ) -> None:
        sources = {m.source for m in members}
        if len(sources) != 1:
            raise ValueError(f"a TradeFan needs one selection source, got {sorted(sources)}")
        self.members = tuple(members)
        self.indices = tuple(indices)
        self.states = states
        self.source = sources.pop()
        #: symbol -> (shared sel, ((bit, on_trade, state, record), ...), C records or None)
        self._records: dict[str, Any] = {}
        #: the C path's view of the members (None: all Python); native=None: when built
        c_members = tuple(_c_member(m) for m in self.members)
        #: members whose C record is the pair (state, record): the anomaly detector's
        self._paired = tuple(c is not None and c[0] == "anomaly" for c in c_members)
        use_c = (_tradepath is not None) if native is None else native
        if use_c and _tradepath is None:
            raise RuntimeError("native=True but engine._tradepath was not built")
        self._cspec = (
            _tradepath.spec(c_members)  # type: ignore[union-attr]
            if use_c and any(c_members) and len(c_members) <= 32  # the C mask's width
            else None
        )
        #: the SelectCounts every member's state shares; None until linked
        self._counts: Any = None
        #: the members' states disagree: fold everything one by one until reset()
        self._apart = False

    def reset(self) -> None:
        """Forget every link (after a restore, or when a member replaced its state object)."""
        self._records.clear()
        self._counts = None
        self._apart = False

    def __call__(self, ev: Any) -> Sequence[Any]:
        """Fold ``ev`` through every member, in order; their outputs, concatenated."""
        if type(ev) is Trade and not self._apart:
            entry = self._records.get(ev.symbol)
            if entry is None:
                entry = self._link(ev.symbol)
            if entry is not None:
                sel, calls, crecs = entry
                left = -1  # bits of the members still to fold in Python (-1: all of them)
                if crecs is not None:
                    left = _tradepath.run(self._cspec, ev, sel, crecs)  # type: ignore[union-attr, arg-type]
                    if left == 0:  # selected, and C applied every member: the common case
                        return NO_OUTPUTS
                return self._finish(ev, sel, calls, left)
        return self._one_by_one(ev)

    def _finish(self, ev: Trade, sel: Any, calls: Any, left: int) -> Sequence[Any]:
        """The Python part of a trade: select (unless C did), then the members left to Python."""
        if left > 0:  # selected by C, which applied the members whose bit is clear
            t = ev.txn_ms
            if t is None:
                t = ev.exch_ms
        else:
            t = select_trade(self._counts, sel, ev, self.source)
            left = -1
        out: list[Any] | None = None
        for bit, on_trade, state, rec in calls:
            if left & bit:
                o = on_trade(state, rec, ev, t)
                if o:
                    if out is None:
                        out = list(o)
                    else:
                        out.extend(o)
        return out if out else NO_OUTPUTS

    def _resume(self, ev: Any, code: int, entry: Any) -> Sequence[Any]:
        """The C runner's way back for a trade: -2 it did nothing (fold as :meth:`__call__`),
        else finish with the symbol's ``entry`` the runner already looked up."""
        if code == -2:
            return self(ev)
        return self._finish(ev, entry[0], entry[1], code)

    @property
    def stage(self) -> Any:
        """What the pipeline calls per event: the C runner when there is a C path, else self.

        The runner looks the symbol up and runs the C common case without entering
        Python at all; whatever it does not finish comes back through :meth:`_resume`,
        and every other event goes straight to :meth:`_one_by_one`.
        """
        if self._cspec is None:
            return self
        return _tradepath.runner(  # type: ignore[union-attr]
            self._cspec, self._records, self._resume, self._one_by_one
        )

    def _one_by_one(self, ev: Any) -> Sequence[Any]:
        states = self.states
        out: list[Any] = []
        for i, m in zip(self.indices, self.members, strict=True):
            before = states[i]
            states[i], o = m.step(before, ev)
            out += o
            if states[i] is not before:  # its records and counts are new objects: relink
                self._records.clear()
                self._counts = None
        return out or NO_OUTPUTS

    def _link(self, symbol: str) -> Any:
        """Share one ``sel`` among the members' records of ``symbol`` (and one ``counts``).

        Returns the entry for :meth:`__call__`, or None when the members'
        values differ (a state no single pipeline produces): then every link
        is undone and the fan folds one by one from here on.
        """
        states = [self.states[i] for i in self.indices]
        counts = states[0].counts
        recs = [m.trade_record(s, symbol) for m, s in zip(self.members, states, strict=True)]
        sel = recs[0].sel
        if any(s.counts != counts for s in states) or any(r.sel != sel for r in recs):
            self._unlink(states)
            return None
        for s in states:
            s.counts = counts
        self._counts = counts
        for r in recs:
            r.sel = sel
        calls = tuple(
            (1 << k, m.on_trade, s, r)
            for k, (m, s, r) in enumerate(zip(self.members, states, recs, strict=True))
        )
        crecs = None
        if self._cspec is not None:
            crecs = tuple(
                (s, r) if paired else r
                for paired, s, r in zip(self._paired, states, recs, strict=True)
            )
        entry = (sel, calls, crecs)
        self._records[symbol] = entry
        return entry

    def _unlink(self, states: list[Any]) -> None:
        """Give every member its own ``counts`` and ``sel`` objects again; stop fusing."""
        for k, s in enumerate(states):
            if k:
                s.counts = copy.copy(s.counts)
        for symbol in self._records:
            for k, (m, s) in enumerate(zip(self.members, states, strict=True)):
                if k:
                    rec = m.trade_record(s, symbol)
                    rec.sel = copy.copy(rec.sel)
        self._records.clear()
        self._counts = None
        self._apart = True


def plan(
    reducers: Sequence[Any], states: list[Any], fuse: bool = True, native: bool | None = None
) -> list[tuple[Any, ...]]:
    """The pipeline's fold stages: ``(index, step, None)`` per reducer, or ``(-1, fan, stage)``.

    ``stage`` is the callable the fold calls per event (:attr:`TradeFan.stage`).

    With ``fuse``, each maximal run of two or more adjacent trade consumers
    with the same ``source`` becomes one :class:`TradeFan` (adjacency keeps
    the output order of the one-by-one fold); ``native`` as for TradeFan.
    """
    stages: list[tuple[Any, ...]] = []
    run: list[int] = []

    def close_run() -> None:
        if len(run) >= 2:
            fan = TradeFan([reducers[i] for i in run], run.copy(), states, native)
            stages.append((-1, fan, fan.stage))
        else:
            stages.extend((i, reducers[i].step, None) for i in run)
        run.clear()

    for i, r in enumerate(reducers):
        if fuse and isinstance(r, TradeConsumer):
            if run and reducers[run[0]].source != r.source:
                close_run()
            run.append(i)
        else:
            close_run()
            stages.append((i, r.step, None))
    close_run()
    return stages
