"""Candles: brute-force regrouping, exact indicators, and the kline cross-check (simulator + real)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import num, serde
from engine.candles import CandleClosed, Candles, KlineMismatch, interval_ms, live_indicators
from engine.events import ConnectionClosed, Kline, Trade
from tests.helpers import alone

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def trade(seq: int, sym: str, tid: int, t: int, price: int, qty: int = 10**8, side="buy") -> Trade:
    return Trade(seq, seq * 10, sym, tid, price, qty, side, t + 1, t, tid, tid)


@st.composite
def streams(draw: st.DrawFn) -> list[Trade]:
    """Raw trades of two symbols: gaps of several intervals, occasional late (earlier) times."""
    n = draw(st.integers(0, 150))
    clock = {"A": draw(st.integers(0, 50_000)), "B": 0}
    out = []
    for seq in range(n):
        sym = draw(st.sampled_from("AB"))
        clock[sym] += draw(st.sampled_from([0, 1, 10, 300, 999, 1000, 2500, 7000, 40_000]))
        back = draw(st.sampled_from([0, 0, 0, 0, 0, 600, 3000]))
        out.append(trade(seq, sym, seq + 1, max(0, clock[sym] - back), draw(st.integers(1, 50))))
    return out


def regroup(trades: list[Trade], symbol: str, length: int, max_fill: int) -> list[tuple]:
    """Brute force: group by interval in arrival order, drop late ones, fill gaps flat."""
    groups: list[tuple[int, list[Trade]]] = []
    for ev in trades:
        if ev.symbol != symbol:
            continue
        s = ev.txn_ms - ev.txn_ms % length
        if groups and s < groups[-1][0]:
            continue  # late
        if groups and s == groups[-1][0]:
            groups[-1][1].append(ev)
        else:
            groups.append((s, [ev]))
    out = []
    for i, (s, g) in enumerate(groups[:-1]):
        ps = [e.price for e in g]
        buy = sum(e.qty for e in g if e.side == "buy")
        vol = sum(e.qty for e in g)
        out.append(
            (
                s,
                ps[0],
                max(ps),
                min(ps),
                ps[-1],
                vol,
                buy,
                len(g),
                g[0].first_id,
                g[-1].last_id,
                i > 0,
                False,
            )
        )
        gap = (groups[i + 1][0] - s) // length - 1
        if 0 < gap <= max_fill:
            c = ps[-1]
            out += [
                (s + k * length, c, c, c, c, 0, 0, 0, -1, -1, True, True) for k in range(1, gap + 1)
            ]
    return out


def candle_tuple(c: CandleClosed) -> tuple:
    return (
        c.start_ms,
        c.open,
        c.high,
        c.low,
        c.close,
        c.volume,
        c.taker_buy_volume,
        c.trades,
        c.first_id,
        c.last_id,
        c.complete,
        c.filled,
    )


def run(cfg: Candles, events):
    """The candles' state and outputs after folding ``events`` through a pipeline of their own."""
    a, outs = alone.run(cfg, events)
    return a.state, outs


CFG = Candles(intervals=("1s", "5s", "1m"), sma_periods=(1, 3), ema_periods=(2, 4), max_fill=3)


@given(trades=streams())
def test_candles_equal_brute_force_regrouping(trades: list[Trade]) -> None:
    state, outs = run(CFG, trades)
    late = 0
    for iv in CFG.intervals:
        for sym in "AB":
            ours = [candle_tuple(c) for c in outs if c.interval == iv and c.symbol == sym]
            assert ours == regroup(trades, sym, interval_ms(iv), CFG.max_fill)
            # late trades: their interval start is before the running maximum
            hi = -1
            for ev in trades:
                if ev.symbol == sym:
                    s = ev.txn_ms - ev.txn_ms % interval_ms(iv)
                    late += s < hi
                    hi = max(hi, s)
    assert state.late == late


@given(trades=streams())
def test_sma_exact_and_ema_within_one_unit(trades: list[Trade]) -> None:
    _, outs = run(CFG, trades)
    for iv in CFG.intervals:
        for sym in "AB":
            closes: list[int] = []
            ema: dict[int, Fraction] = {}
            for c in (c for c in outs if c.interval == iv and c.symbol == sym):
                closes.append(c.close)
                exp_sma = {
                    p: round(Fraction(sum(closes[-p:]), p)) for p in (1, 3) if len(closes) >= p
                }
                assert dict(c.sma) == exp_sma
                for p in (2, 4):
                    if len(closes) == p:
                        ema[p] = Fraction(sum(closes), p)
                    elif len(closes) > p:
                        ema[p] += (closes[-1] - ema[p]) * Fraction(2, p + 1)
                got = dict(c.ema)
                assert set(got) == set(ema)
                for p, v in ema.items():
                    assert abs(got[p] - v) <= Fraction(1, 2) + Fraction(p + 1, 4 * num.ONE)


@given(trades=streams(), cut=st.integers(0, 150))
def test_snapshot_restore_continues_identically(trades: list[Trade], cut: int) -> None:
    end, whole = alone.run(CFG, trades)
    half, o1 = alone.run(CFG, trades[:cut])
    resumed, o2 = alone.run(CFG, trades[cut:], half.resumed())  # through JSON
    assert o1 + o2 == whole
    assert resumed.snapshot() == end.snapshot()
    for o in whole:
        assert serde.load(json.loads(json.dumps(serde.dump(o)))) == o


def test_live_indicators_use_open_candle() -> None:
    cfg = Candles(intervals=("1s",), sma_periods=(2,), ema_periods=(2,))
    state, _ = run(
        cfg, [trade(1, "A", 1, 0, 10), trade(2, "A", 2, 1000, 20), trade(3, "A", 3, 1500, 31)]
    )
    sma, ema = live_indicators(cfg, state, "A", "1s")
    assert sma == {2: Fraction(10 + 31, 2)}
    assert ema == {2: 20}  # seeded with the SMA of the two closes (10, 31) = 20.5 → 20 (half-even)
    assert live_indicators(cfg, state, "A", "5m") is None


def test_connection_break_makes_candles_incomplete_and_unfilled() -> None:
    cfg = Candles(intervals=("1s",), sma_periods=(), ema_periods=())
    evs = [
        trade(1, "A", 1, 500, 10),
        trade(2, "A", 2, 1500, 11),  # closes [0,1s) (first: incomplete)
        trade(3, "A", 3, 2500, 12),  # closes [1s,2s): complete
        ConnectionClosed(4, 40, 1, "wss://127.0.0.1/stream", None, "dropped"),
        trade(5, "A", 5, 6500, 13),  # closes [2s,3s) (interrupted), gap 3s..5s not filled
        trade(6, "A", 6, 7500, 14),  # closes [6s,7s): opened after the break → incomplete
        trade(7, "A", 7, 8500, 15),  # closes [7s,8s): complete again
    ]
    _, outs = run(cfg, evs)
    assert [(c.start_ms, c.complete, c.filled) for c in outs] == [
        (0, False, False),
        (1000, True, False),
        (2000, False, False),
        (6000, False, False),
        (7000, True, False),
    ]


def kline_of(c: CandleClosed, seq: int, **change) -> Kline:
    k = Kline(
        seq,
        seq * 10,
        c.symbol,
        c.end_ms + 1,
        c.interval,
        c.start_ms,
        c.end_ms,
        c.open,
        c.high,
        c.low,
        c.close,
        c.volume,
        0,
        c.trades,
        True,
        c.first_id,
        c.last_id,
        0,
        0,
    )
    return attrs.evolve(k, **change)


def test_kline_before_or_after_our_close_and_uncomparable() -> None:
    cfg = Candles(intervals=("1s",), sma_periods=(), ema_periods=())
    base = [trade(1, "A", 1, 500, 10), trade(2, "A", 2, 1200, 11), trade(3, "A", 3, 1700, 9)]
    _, outs = run(cfg, [*base, trade(4, "A", 4, 2100, 12)])
    first, second = outs
    # early kline (held until our candle closes), late kline (compared with a recent candle)
    for evs in (
        [*base, kline_of(second, 9), trade(4, "A", 4, 2100, 12)],
        [*base, trade(4, "A", 4, 2100, 12), kline_of(second, 9)],
    ):
        state, o = run(cfg, evs)
        assert (state.matches, state.mismatches, state.uncomparable) == (1, 0, 0)
        assert not [x for x in o if isinstance(x, KlineMismatch)]
    # the first candle started before the capture: uncomparable, never a mismatch
    state, o = run(cfg, [*base, trade(4, "A", 4, 2100, 12), kline_of(first, 9, volume=1)])
    assert (state.matches, state.mismatches, state.uncomparable) == (0, 0, 1)
    # a corrupted kline is reported with exactly the fields that differ
    state, o = run(cfg, [*base, kline_of(second, 9, high=99, trades=5), trade(4, "A", 4, 2100, 12)])
    mm = [x for x in o if isinstance(x, KlineMismatch)]
    assert mm == [KlineMismatch(4, 40, "A", "1s", 1000, (("high", 11, 99), ("trades", 2, 5)))]
    assert state.mismatches == 1


# --------------------------------------------------------------------------- simulator cross-check


def sim_events(minutes: float, source: str):
    """Simulator payloads → Binance codec → events (in-process, no sockets)."""
    sim = pytest.importorskip("engine.sim.model")
    binance = pytest.importorskip("engine.codecs.binance")
    start = sim.DEFAULT_START_MS + 23_000  # starts mid-minute: the first candle is uncomparable
    m = sim.Market(seed=11, symbols=["BTCUSDT", "ETHUSDT"], activity=15, start_ms=start)
    codec = binance.BinanceSpot()
    src = "wss://127.0.0.1:9443/stream?streams=" + "/".join(m.streams())
    events = []
    for seq, (stream, payload) in enumerate(m.advance(start + int(minutes * 60_000))):
        if stream.endswith(("@depth@100ms", "@depth", "@bookTicker", "@ticker")):
            continue
        if not stream.endswith("@" + source) and "kline" not in stream:
            continue
        frame = b'{"stream":"%s","data":%s}' % (stream.encode(), payload)
        events.extend(codec.decode(seq, seq * 1000, "text", src, frame))
    return events


@pytest.mark.parametrize("source", ["trade", "aggTrade"])
def test_simulator_klines_match_our_candles(source: str) -> None:
    events = sim_events(4.6, source)
    cfg = Candles(intervals=("1m", "5m"), source=source)
    state, outs = run(cfg, events)
    assert [o for o in outs if isinstance(o, KlineMismatch)] == []
    assert state.mismatches == 0
    assert state.matches >= 6  # 2 symbols × ≥3 fully observed minutes
    assert state.uncomparable >= 2  # each symbol's first (partial) minute
    # corrupt one closed, fully observed kline: exactly one mismatch naming the field
    i = next(
        i
        for i, e in enumerate(events)
        if isinstance(e, Kline)
        and e.closed
        and e.start_ms % 60_000 == 0
        and e.start_ms > events[0].txn_ms + 60_000
    )
    bad = list(events)
    bad[i] = attrs.evolve(events[i], trades=events[i].trades + 1)
    state, outs = run(cfg, bad)
    mm = [o for o in outs if isinstance(o, KlineMismatch)]
    assert len(mm) == 1 and mm[0].fields == (("trades", events[i].trades, events[i].trades + 1),)


def test_real_capture_partial_minute_is_consistent_with_exchange_klines() -> None:
    """The real Binance capture spans 30 s: no closed kline, so nothing is comparable — but
    every open (x=false) exchange kline must cover our aggTrades of that minute."""
    journal = FIXTURES / "journals" / "binance-spot"
    if not journal.exists():
        pytest.skip("fixtures/journals/binance-spot not present")
    from engine.codecs.binance import BinanceSpot
    from engine.journal.reader import JournalReader

    codec = BinanceSpot()
    cfg = Candles(intervals=("1m",))
    a = alone.Alone(cfg)
    state = a.state
    klines = 0
    for f in JournalReader(journal).frames():
        if f.kind != "text" or f.dir != "in":
            continue
        for ev in codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload):
            outs = a.feed([ev])
            assert not outs  # nothing closes within 30 s
            if isinstance(ev, Kline) and ev.symbol in state.symbols:
                ser = state.symbols[ev.symbol].series[0]
                if ser.start == ev.start_ms and ser.last_id <= ev.last_id:
                    klines += 1
                    assert ev.first_id <= ser.first_id  # our first aggTrade is inside it
                    assert ser.trades <= ev.trades and ser.volume <= ev.volume
                    assert ev.low <= ser.low and ser.high <= ev.high
    assert klines >= 1
    assert (state.matches, state.mismatches) == (0, 0)
