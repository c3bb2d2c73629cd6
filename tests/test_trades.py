"""TradeAggregator: hypothesis against a brute-force recomputation over all accepted trades."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import serde
from engine.events import BookTicker, ConnectionClosed, DecodeError, Trade
from engine.trades import TradeAggregator, TradeStats, current_stats, round_div
from tests.helpers.alone import run

SYMBOLS = ("BTCUSDT", "ETHUSDT")


# the draws of trade_streams(), each strategy built once: one built inside the composite is
# validated and labelled anew at every draw (most of the time of the properties using it)
SYMBOL = st.sampled_from(SYMBOLS)
TIME_STEPS = st.sampled_from([0, 0, 1, 7, 250, 999, 1000, 4000, 61_000])
TIME_BACK = st.sampled_from([0, 0, 0, 0, 3])
SIDE = st.sampled_from(["buy", "sell"])


@st.composite
def trade_streams(draw: st.DrawFn) -> list[Trade]:
    """Trades for two symbols: mostly increasing ids/times, some repeats, both kinds mixed."""
    n = draw(st.integers(0, 120))
    t = {s: draw(st.integers(0, 10**6)) for s in SYMBOLS}
    tid = dict.fromkeys(SYMBOLS, 1)
    out: list[Trade] = []
    for seq in range(n):
        sym = draw(SYMBOL)
        t[sym] += draw(TIME_STEPS)
        ts = t[sym] - draw(TIME_BACK)  # occasional out-of-order time
        agg = draw(st.integers(0, 3)) == 0
        width = draw(st.integers(0, 3)) if agg else 0
        if draw(st.integers(0, 15)) == 0:
            first = max(1, tid[sym] - 2)  # a duplicate / overlapping id range
        else:
            first = tid[sym]
            tid[sym] += width + 1
        out.append(
            Trade(
                seq=seq,
                recv_ns=seq * 1000,
                symbol=sym,
                trade_id=first,
                price=draw(st.integers(1, 10**9)),
                qty=draw(st.integers(1, 10**8)),
                side=draw(SIDE),
                exch_ms=ts + 1,
                txn_ms=ts,
                first_id=first,
                last_id=first + width,
                agg=agg,
            )
        )
    return out


def accepted(trades: list[Trade], source: str) -> list[tuple[Trade, int]]:
    """Naive selection: (trade, clamped time) of the trades that count."""
    kind: dict[str, bool] = {}
    hi: dict[str, int] = {}
    clock: dict[str, int] = {}
    out = []
    for ev in trades:
        want = kind.setdefault(ev.symbol, ev.agg if source == "auto" else source == "aggTrade")
        if ev.agg != want or ev.first_id <= hi.get(ev.symbol, 0):
            continue
        hi[ev.symbol] = ev.last_id
        clock[ev.symbol] = max(clock.get(ev.symbol, 0), ev.txn_ms)
        out.append((ev, clock[ev.symbol]))
    return out


def brute(acc: list[tuple[Trade, int]], symbol: str, bucket: int, windows, at_bucket: int):
    rows = [(e, t) for e, t in acc if e.symbol == symbol]
    vol = sum(e.qty for e, _ in rows)
    notional = sum(e.price * e.qty for e, _ in rows)
    buy = sum(e.qty for e, _ in rows if e.side == "buy")
    count = sum(e.last_id - e.first_id + 1 for e, _ in rows)
    win = []
    for w in windows:
        inw = [(e, t) for e, t in rows if t - t % bucket > at_bucket - w]
        wv = sum(e.qty for e, _ in inw)
        wn = sum(e.price * e.qty for e, _ in inw)
        win.append((wv, wn, sum(e.last_id - e.first_id + 1 for e, _ in inw)))
    return vol, notional, buy, count, win, rows[-1][0].price if rows else None


def check(stats: TradeStats, exp) -> None:
    vol, notional, buy, count, win, last = exp
    assert (stats.volume, stats.notional, stats.buy_volume, stats.count) == (
        vol,
        notional,
        buy,
        count,
    )
    assert stats.sell_volume == vol - buy
    assert stats.last_price == last
    assert stats.vwap_exact == Fraction(notional, vol)
    assert stats.vwap == round(Fraction(notional, vol))  # Python's round is half-even
    for ws, (wv, wn, wc) in zip(stats.windows, win, strict=True):
        assert (ws.volume, ws.notional, ws.count) == (wv, wn, wc)
        assert ws.vwap_exact == (Fraction(wn, wv) if wv else None)


@pytest.mark.parametrize("source", ["auto", "trade", "aggTrade"])
@given(trades=trade_streams())
def test_vwap_and_totals_equal_brute_force(source: str, trades: list[Trade]) -> None:
    agg = TradeAggregator(source=source, windows_ms=(2000, 60_000), bucket_ms=1000)
    a, outs = run(agg, trades)
    acc = accepted(trades, source)
    for sym in SYMBOLS:
        rows = [t for e, t in acc if e.symbol == sym]
        stats = current_stats(a.state, sym)
        if not rows:
            assert stats is None
            continue
        check(stats, brute(acc, sym, 1000, agg.windows_ms, rows[-1] - rows[-1] % 1000))
    # every periodic report equals brute force over the trades before the one that caused it
    by_seq = {e.seq: i for i, e in enumerate(trades)}
    for o in outs:
        prefix = accepted(trades[: by_seq[o.seq]], source)
        check(o, brute(prefix, o.symbol, 1000, agg.windows_ms, o.as_of_ms - 999))


@given(trades=trade_streams(), cut=st.integers(0, 120))
def test_snapshot_restore_continues_identically(trades: list[Trade], cut: int) -> None:
    agg = TradeAggregator(bucket_ms=500, windows_ms=(1000, 5000))
    whole, outs_whole = run(agg, trades)
    half, outs1 = run(agg, trades[:cut])
    resumed, outs2 = run(agg, trades[cut:], half.resumed())  # through JSON
    assert outs1 + outs2 == outs_whole
    assert resumed.snapshot() == whole.snapshot()
    for o in outs_whole:
        assert serde.load(json.loads(json.dumps(serde.dump(o)))) == o


def test_aggtrade_counts_trade_ids_and_aggressor_split() -> None:
    """aggTrade 100..104 is five trades; Binance m=true (aggressor sold) lands in sell volume."""
    agg = TradeAggregator(source="aggTrade")
    t1 = Trade(1, 1, "X", 7, 2 * 10**8, 3 * 10**8, "sell", 1001, 1000, 100, 104, True)
    t2 = Trade(2, 2, "X", 8, 4 * 10**8, 1 * 10**8, "buy", 1001, 1000, 105, 105, True)
    raw = Trade(3, 3, "X", 106, 9 * 10**8, 1 * 10**8, "buy", 1001, 1000, 106, 106, False)
    a, _ = run(agg, [t1, t2, raw, t1])  # raw skipped (kind), repeated t1 dropped (dup)
    s = current_stats(a.state, "X")
    assert s is not None
    assert (s.count, s.volume, s.buy_volume, s.sell_volume) == (6, 4 * 10**8, 10**8, 3 * 10**8)
    assert s.vwap_exact == Fraction(2 * 3 + 4 * 1, 4) * 10**8
    assert (a.counts.skipped, a.counts.duplicates) == (1, 1)


def test_ignores_non_trades_and_untimed() -> None:
    agg = TradeAggregator()
    evs = [
        BookTicker(1, 1, "X", 5, 1, 1, 2, 1),
        DecodeError(2, 2, "wss://x", "bad", b"{"),
        ConnectionClosed(3, 3, 1, "wss://x", None, ""),
        Trade(4, 4, "X", 1, 10, 10, "buy", None, None, 1, 1),
    ]
    a, outs = run(agg, evs)
    assert outs == [] and a.counts.untimed == 1 and current_stats(a.state, "X") is None


def test_round_div_half_even() -> None:
    assert [round_div(n, 2) for n in (1, 3, 5, -1, -3)] == [0, 2, 2, 0, -2]
    assert round_div(7, 3) == 2 and round_div(8, 3) == 3


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="multiple of bucket_ms"):
        TradeAggregator(windows_ms=(1500,), bucket_ms=1000)
    with pytest.raises(ValueError):
        TradeAggregator(source="both")  # type: ignore[arg-type]


def test_recorded_stats_keep_the_format_of_stored_vwap_fields() -> None:
    """vwap / sell_volume became properties; recorded outputs still carry them (replay --check)."""
    agg = TradeAggregator(windows_ms=(2000,))
    _, outs = run(agg, [
        Trade(i, i, "X", i + 1, 3 * 10**8 + i, 10**8, "buy" if i else "sell", t, t, i + 1, i + 1)
        for i, t in enumerate((1000, 1500, 2100))
    ])  # fmt: skip
    (stats,) = outs
    d = serde.dump(stats)
    assert set(d) == {"type", "seq", "recv_ns", "symbol", "as_of_ms", "last_price", "count",
                      "volume", "buy_volume", "sell_volume", "notional", "vwap", "windows"}  # fmt: skip
    assert d["vwap"] == stats.vwap and d["sell_volume"] == stats.sell_volume == 10**8
    assert set(d["windows"][0]) == {
        "window_ms",
        "count",
        "volume",
        "buy_volume",
        "notional",
        "vwap",
    }
    assert serde.load(json.loads(json.dumps(d))) == stats
