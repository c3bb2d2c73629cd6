"""The fused trade fold (engine.tradefan) is the one-by-one fold: same outputs, same states.

Real reducers (the standard trade consumers, with a non-trade reducer and a
trade consumer of another source around them), fed the anomaly tests'
realistic two-symbol streams with arbitrary events mixed in; compared event
by event, through snapshots and restores.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from engine.anomaly import AnomalyDetector
from engine.book_reducer import BookReducer
from engine.candles import Candles
from engine.codecs.base import SyncRule
from engine.events import Trade
from engine.pipeline import Pipeline
from engine.tradefan import TradeFan
from engine.trades import TradeAggregator, TradeTape
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


mixed = st.lists(st.tuples(st.integers(0, 120), any_event()), max_size=4)


def interleave(stream: list, extra: list) -> list:
    out = list(stream)
    for pos, e in sorted(extra, key=lambda x: x[0]):
        out.insert(min(pos, len(out)), e)
    return out


def test_plan_fuses_adjacent_consumers_of_one_source_only() -> None:
    p = Pipeline(None, reducers())
    fans = [fan for _, _, fan in p._stages if fan is not None]
    assert len(fans) == 1 and [m.name for m in fans[0].members] == [
        "trades", "tape", "candles", "anomaly"
    ]  # fmt: skip
    assert [i for i, _, fan in p._stages if fan is None] == [0, 5]
    # a reducer between two consumers splits the run; fuse=False makes no fan at all
    split = Pipeline(
        None, [TradeAggregator(), BookReducer(SyncRule.BINANCE_SPOT), Candles(), AnomalyDetector()]
    )
    assert [len(f.members) for _, _, f in split._stages if f is not None] == [2]
    assert all(f is None for _, _, f in Pipeline(None, reducers(), fuse=False)._stages)


@given(stream=streams(), extra=mixed)
def test_fused_fold_equals_one_by_one(stream: list, extra: list) -> None:
    events = interleave(stream, extra)
    fused, plain = Pipeline(None, reducers()), Pipeline(None, reducers(), fuse=False)
    for e in events:
        assert fused.fold_events(e.seq, [e]) == plain.fold_events(e.seq, [e])
    assert fused.snapshot() == plain.snapshot()
    assert fused.states == plain.states


@given(stream=streams(), cut=st.integers(0, 120))
def test_restore_relinks(stream: list, cut: int) -> None:
    plain = Pipeline(None, reducers(), fuse=False)
    head = plain.fold_events(0, stream[:cut])
    fused = Pipeline(None, reducers())
    fused.fold_events(0, stream[: cut // 2])  # links made, then thrown away by the restore
    fused.restore(plain.snapshot())
    assert head is not None
    assert fused.fold_events(0, stream[cut:]) == plain.fold_events(0, stream[cut:])
    assert fused.snapshot() == plain.snapshot()


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
    fan = next(f for _, _, f in fused._stages if isinstance(f, TradeFan))
    assert fan._apart and not fan._records  # nothing linked: folded one by one
    fused.restore(plain.snapshot())
    assert not fan._apart  # a restore is a fresh start
