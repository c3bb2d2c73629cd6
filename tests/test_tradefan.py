"""The fused trade fold (engine.tradefan) is the one-by-one fold: same outputs, same states.

Real reducers (the standard trade consumers, with a non-trade reducer and a
trade consumer of another source around them), fed the anomaly tests'
realistic two-symbol streams with arbitrary events mixed in; compared event
by event, through snapshots and restores.  The fused stage runs both with
its optional C common case (engine._tradepath, built in CI) and without.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.anomaly import AnomalyDetector
from engine.book_reducer import BookReducer
from engine.candles import Candles
from engine.codecs.base import SyncRule
from engine.events import Trade
from engine.pipeline import Pipeline
from engine.tradefan import TradeFan, _c_member
from engine.trades import TradeAggregator, TradeTape, select_trade
from tests.strategies import events as any_event
from tests.test_anomaly import streams


def reducers() -> list[Any]:
    return [
        BookReducer(SyncRule.BINANCE_SPOT),
        TradeAggregator(bucket_ms=500, windows_ms=(1000, 5000)),
        TradeTape(size=4),
        Candles(intervals=("1s", "5s"), sma_periods=(2,), ema_periods=(2,), max_fill=3),
        AnomalyDetector(volume_interval_ms=1000, volume_baseline=3, large_window=3,
                        price_jump_bps=500, spread_window=3, stale_after_ms=5),
        TradeTape(name="agg-tape", size=2, source="aggTrade"),  # another source: not fused in
    ]  # fmt: skip


try:
    from engine import _tradepath
except ImportError:  # optional: the C-only checks skip, the rest runs in Python
    _tradepath = None  # type: ignore[assignment]

natives = [False] + ([True] if _tradepath is not None else [])
needs_c = pytest.mark.skipif(_tradepath is None, reason="engine._tradepath was not built")

mixed = st.lists(st.tuples(st.integers(0, 120), any_event()), max_size=4)


def interleave(stream: list, extra: list) -> list:
    out = list(stream)
    for pos, e in sorted(extra, key=lambda x: x[0]):
        out.insert(min(pos, len(out)), e)
    return out


def test_plan_fuses_adjacent_consumers_of_one_source_only() -> None:
    p = Pipeline(None, reducers())
    fans = [fan for _, fan, stage in p._stages if stage is not None]
    assert len(fans) == 1 and [m.name for m in fans[0].members] == [
        "trades", "tape", "candles", "anomaly"
    ]  # fmt: skip
    assert [i for i, _, stage in p._stages if stage is None] == [0, 5]
    (stage,) = [stage for _, _, stage in p._stages if stage is not None]
    if _tradepath is not None:  # the fold calls the C runner, which returns through the fan
        assert type(stage).__name__ == "Runner"
    _, fan, stage = Pipeline(None, reducers(), native=False)._stages[1]
    assert stage is fan  # no C path: the fold calls the fan itself
    # a reducer between two consumers splits the run; fuse=False makes no fan at all
    split = Pipeline(
        None, [TradeAggregator(), BookReducer(SyncRule.BINANCE_SPOT), Candles(), AnomalyDetector()]
    )
    assert [len(f.members) for _, f, stage in split._stages if stage is not None] == [2]
    assert all(stage is None for _, _, stage in Pipeline(None, reducers(), fuse=False)._stages)


@pytest.mark.parametrize("native", natives)
@given(stream=streams(), extra=mixed)
def test_fused_fold_equals_one_by_one(native: bool, stream: list, extra: list) -> None:
    events = interleave(stream, extra)
    fused = Pipeline(None, reducers(), native=native)
    plain = Pipeline(None, reducers(), fuse=False)
    for e in events:
        assert fused.fold_events(e.seq, [e]) == plain.fold_events(e.seq, [e])
    assert fused.snapshot() == plain.snapshot()
    assert fused.states == plain.states


@pytest.mark.parametrize("native", natives)
@given(stream=streams(), cut=st.integers(0, 120))
def test_restore_relinks(native: bool, stream: list, cut: int) -> None:
    plain = Pipeline(None, reducers(), fuse=False)
    head = plain.fold_events(0, stream[:cut])
    fused = Pipeline(None, reducers(), native=native)
    fused.fold_events(0, stream[: cut // 2])  # links made, then thrown away by the restore
    fused.restore(plain.snapshot())
    # the fused stage folds the head exactly as the one-by-one fold did
    assert Pipeline(None, reducers(), native=native).fold_events(0, stream[:cut]) == head
    assert fused.fold_events(0, stream[cut:]) == plain.fold_events(0, stream[cut:])
    assert fused.snapshot() == plain.snapshot()


@needs_c
def test_c_common_case_applies_what_python_would_and_declines_the_rest() -> None:
    """Direct: the C path handles the common case of each member and leaves edges to Python."""
    members = [TradeAggregator(), TradeTape(size=3), Candles(intervals=("1m", "5m")),
               AnomalyDetector()]  # fmt: skip
    spec = _tradepath.spec(tuple(_c_member(m) for m in members))
    c_states = [m.initial() for m in members]
    py_states = [m.initial() for m in members]
    t0 = 1_714_521_600_000  # a 5-minute boundary
    p = 10_000_000
    trades = [  # bits of the members left to Python: agg 1, tape 2, candles 4, anomaly 8
        (-1, Trade(1, 1, "X", 1, p, 3, "buy", t0, t0, 1, 1, True)),  # first: all Python
        (0, Trade(2, 2, "X", 2, p + 100, 2, "sell", t0 + 5, t0 + 5, 2, 4, True)),  # all in C
        (8, Trade(3, 3, "X", 5, p, 10**20, "buy", t0 + 900, t0 + 900, 5, 5, True)),  # qty>int64
        # a new bucket; the detector's volume sums now exceed int64 (the huge qty): Python
        (9, Trade(4, 4, "X", 6, p, 1, "buy", t0 + 1000, t0 + 1000, 6, 6, True)),
        (-1, Trade(5, 5, "X", 6, p, 1, "buy", t0 + 1001, t0 + 1001, 6, 6, True)),  # duplicate
        (13, Trade(6, 6, "X", 7, p // 2, 1, "sell", t0 + 60_000, t0 + 60_000, 7, 7, True)),
    ]  # the last: a new bucket, the 1m candle closes, a price jump
    for want, ev in trades:
        recs = [m.trade_record(s, "X") for m, s in zip(members, c_states, strict=True)]
        crecs = (*recs[:3], (c_states[3], recs[3]))
        left = _tradepath.run(spec, ev, recs[0].sel, crecs)
        assert left == want, ev
        if left < 0:
            t = select_trade(c_states[0].counts, recs[0].sel, ev, "auto")
            left = 0b1111
        else:
            t = ev.txn_ms
        for k, (m, s) in enumerate(zip(members, c_states, strict=True)):
            if left & (1 << k):
                if k:  # the shared selection ran once; the others take its result
                    recs[k].sel = recs[0].sel
                m.on_trade(s, recs[k], ev, t)
        for m, s in zip(members, py_states, strict=True):
            m.step(s, ev)
        for k, m in enumerate(members):  # every record as Python's own step leaves it
            assert recs[k] == m.trade_record(py_states[k], "X"), (ev.seq, k)
        assert c_states[3].now == py_states[3].now


def test_members_that_disagree_are_folded_one_by_one() -> None:
    """A state no pipeline makes (one member saw a trade the others did not): still exact."""
    t1 = Trade(1, 10**9, "X", 5, 100, 10**8, "buy", 1000, 1000, 5, 5)
    t2 = Trade(2, 2 * 10**9, "X", 6, 101, 10**8, "sell", 2000, 2000, 6, 6)
    fused = Pipeline(None, [TradeAggregator(), TradeTape()])
    plain = Pipeline(None, [TradeAggregator(), TradeTape()], fuse=False)
    for p in (fused, plain):
        p.states[1], _ = p.reducers[1].step(p.states[1], t1)  # only the tape saw t1
    for t in (t1, t2):
        assert fused.fold_events(t.seq, [t]) == plain.fold_events(t.seq, [t])
    assert fused.snapshot() == plain.snapshot()
    fan = next(f for _, f, _ in fused._stages if isinstance(f, TradeFan))
    assert fan._apart and not fan._records  # nothing linked: folded one by one
    fused.restore(plain.snapshot())
    assert not fan._apart  # a restore is a fresh start
