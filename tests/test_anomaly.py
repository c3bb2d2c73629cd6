"""AnomalyDetector: every alert kind fires exactly where a naive scan over the event list says.

The naive scans recompute each rule from the whole event prefix at every
event (quadratic, obviously right); the detector does it incrementally with
bounded state.  Plus snapshot → JSON → restore continuity, no exception on
arbitrary events, worked examples and a run over the real captures.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from fractions import Fraction
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import num, serde
from engine.anomaly import (
    CROSSED_BOOK,
    LARGE_TRADE,
    PRICE_JUMP,
    STALE_STREAM,
    VOLUME_SPIKE,
    WIDE_SPREAD,
    Alert,
    AnomalyDetector,
)
from engine.events import (
    BookSnapshot,
    BookTicker,
    ConnectionClosed,
    DecodeError,
    DepthDiff,
    Kline,
    Marker,
    Ticker24h,
    Trade,
)
from engine.num import ONE
from tests.helpers import alone
from tests.strategies import events as any_event

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MS = 1_000_000
SYMS = ("A", "B")

CFG = AnomalyDetector(
    volume_interval_ms=1000,
    volume_baseline=3,
    volume_ratio_pct=200,
    large_notional=2000,  # engine quote units: price ~1000 × qty ≥ 2
    large_window=3,
    large_ratio_pct=300,
    price_jump_bps=500,
    spread_abs=6,
    spread_bps=4000,
    spread_window=3,
    spread_median_ratio_pct=250,
    spread_median_min_bps=None,
    stale_after_ms=5,
)


# --------------------------------------------------------------------------- streams


# the draws of streams(), each strategy built once: one built inside the composite is
# validated and labelled anew at every draw (that was most of these properties' time)
RECV_STEPS = st.sampled_from([0, 10**5, MS, 2 * MS, 3 * MS, 6 * MS, 20 * MS])
LATE = st.sampled_from([0, 0, 0, 0, 0, 4 * MS])
SYMBOL = st.sampled_from(SYMS)
WHAT = st.sampled_from("tttttqqqqsddkxm")
CLOCK_STEPS = st.sampled_from([0, 1, 300, 999, 1000, 2500, 7000])
TS_BACK = st.sampled_from([0, 0, 0, 0, 600])
PRICE_STEPS = st.sampled_from([0, 0, 1, -1, 7, -9, 300, -250, 5])
QTY_TENTHS = st.sampled_from([0, 1, 2, 3, 5, 10, 40])
SIDE = st.sampled_from(["buy", "sell"])
ASK_OVER_BID = st.sampled_from([-2, 0, 1, 1, 1, 2, 3, 8, 30])
NONE_OR_7 = st.none() | st.just(7)
ASK_QTY = st.sampled_from([0, 1, 1])
ORIGIN = st.sampled_from(["rest", "stream"])
INTERVAL = st.sampled_from(["1m", "5m"])
OTHER = st.sampled_from(range(3))  # a marker, a closed connection, a decode error


@st.composite
def streams(draw: st.DrawFn) -> list:
    """Two symbols: trades (mostly one kind, some duplicate ids, late times), quotes (some
    crossed or wide, some one-sided), depth/kline/ticker stream events, and unrelated events
    that only move journal time; receive times mostly rise in ms steps, sometimes go back."""
    n = draw(st.integers(0, 120))
    recv = 0
    clock = dict.fromkeys(SYMS, draw(st.integers(0, 5000)))
    tid = dict.fromkeys(SYMS, 1)
    price = dict.fromkeys(SYMS, 1000)  # units: a step of 300 is a 30 % jump
    out: list = []
    for seq in range(1, n + 1):
        recv += draw(RECV_STEPS)
        r = recv - draw(LATE)
        sym = draw(SYMBOL)
        what = draw(WHAT)
        if what == "t":
            clock[sym] += draw(CLOCK_STEPS)
            ts = max(0, clock[sym] - draw(TS_BACK))
            agg = draw(st.integers(0, 9)) == 0  # mostly plain trades: the other kind is skipped
            if draw(st.integers(0, 12)) == 0:
                first = max(1, tid[sym] - 1)  # duplicate id
            else:
                first = tid[sym]
                tid[sym] += 1
            step = draw(PRICE_STEPS)
            if step == 5:
                step = price[sym] // 20  # exactly 5 % (the jump threshold) when divisible
            price[sym] = max(1, price[sym] + step)
            qty = draw(QTY_TENTHS) * ONE // 10
            untimed = draw(st.integers(0, 30)) == 0
            out.append(
                Trade(seq, r, sym, first, price[sym], qty, draw(SIDE),
                      None if untimed else ts + 1, None if untimed else ts, first, first, agg)
            )  # fmt: skip
        elif what in "qs":
            bid = draw(st.integers(0, 40))
            ask = bid + draw(ASK_OVER_BID)
            ask = max(ask, 0)
            if what == "q":
                out.append(BookTicker(seq, r, sym, seq, bid, 1, ask, 1, draw(NONE_OR_7)))
            else:
                bids = [(bid, 1), (max(bid - 1, 0), 0 if draw(st.booleans()) else 1)] if bid else []
                asks = [(ask + 5, 1), (ask, draw(ASK_QTY))] if ask else []
                origin = draw(ORIGIN)
                out.append(BookSnapshot(seq, r, sym, seq, bids, asks, 20, origin))
        elif what == "d":
            out.append(DepthDiff(seq, r, sym, seq, seq, None, None, None, [], []))
        elif what == "k":
            iv = draw(INTERVAL)
            out.append(Kline(seq, r, sym, None, iv, 0, 59_999, 1, 1, 1, 1, 0, 0, 0, False, -1, -1,
                             0, 0))  # fmt: skip
        elif what == "x":
            out.append(
                Ticker24h(seq, r, sym, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, None, None, 0, 0, -1, -1, 0)
            )
        else:
            out.append(
                [
                    Marker(seq, r, "engine", "note"),
                    ConnectionClosed(seq, r, 1, "wss://x", None, "dropped"),
                    DecodeError(seq, r, "wss://x", "bad", b"{"),
                ][draw(OTHER)]
            )
    return out


def run(cfg: AnomalyDetector, events):
    """The detector's state and alerts after folding ``events`` through a pipeline of its own."""
    a, outs = alone.run(cfg, events)
    return a.state, outs


def key(a: Alert) -> tuple:
    return (a.seq, a.kind, a.symbol, a.exch_ms, a.value, a.threshold, a.unit)


def ours(cfg: AnomalyDetector, events, *kinds: str, detail: str | None = None) -> list[tuple]:
    _, outs = run(cfg, events)
    return picked(outs, *kinds, detail=detail)


def picked(outs, *kinds: str, detail: str | None = None) -> list[tuple]:
    """The keys of the alerts of ``kinds`` (whose detail starts with ``detail``) among ``outs``."""
    return [
        key(a) for a in outs if a.kind in kinds and (detail is None or a.detail.startswith(detail))
    ]


# --------------------------------------------------------------------------- naive scans


def accepted(events) -> list[tuple[Trade, int, int]]:
    """(trade, its exchange time, the symbol's clamped clock) of the trades that count."""
    kind: dict[str, bool] = {}
    hi: dict[str, int] = {}
    clock: dict[str, int] = {}
    out = []
    for e in events:
        if type(e) is not Trade:
            continue
        t = e.txn_ms if e.txn_ms is not None else e.exch_ms
        if t is None:
            continue
        if e.agg != kind.setdefault(e.symbol, e.agg):
            continue
        if e.first_id <= hi.get(e.symbol, 0):
            continue
        hi[e.symbol] = e.last_id
        clock[e.symbol] = max(clock.get(e.symbol, t), t)
        out.append((e, t, clock[e.symbol]))
    return out


def naive_volume(cfg: AnomalyDetector, events) -> list[tuple]:
    size, n, ratio = cfg.volume_interval_ms, cfg.volume_baseline, cfg.volume_ratio_pct
    acc = accepted(events)
    fired: set[tuple[str, int]] = set()
    out = []
    for i, (e, t, tc) in enumerate(acc):
        mine = [(x, xc - xc % size) for x, _, xc in acc[: i + 1] if x.symbol == e.symbol]
        b = tc - tc % size
        vol = sum(x.qty for x, xb in mine if xb == b)
        base = sum(x.qty for x, xb in mine if b - n * size <= xb < b)
        watched_long_enough = mine[0][1] <= b - n * size
        if (e.symbol, b) in fired or not watched_long_enough or base == 0:
            continue
        if Fraction(vol) >= Fraction(ratio, 100) * Fraction(base, n):
            fired.add((e.symbol, b))
            thr = math.ceil(Fraction(ratio * base, 100 * n))
            out.append((e.seq, VOLUME_SPIKE, e.symbol, t, vol, thr, num.UNIT))
    return out


def naive_large_notional(cfg: AnomalyDetector, events) -> list[tuple]:
    big = cfg.large_notional
    return [
        (e.seq, LARGE_TRADE, e.symbol, t, e.price * e.qty // ONE, big, num.UNIT)
        for e, t, _ in accepted(events)
        if Fraction(e.price * e.qty, ONE) >= big
    ]


def naive_large_recent(cfg: AnomalyDetector, events) -> list[tuple]:
    k, ratio = cfg.large_window, cfg.large_ratio_pct
    acc = accepted(events)
    out = []
    for i, (e, t, _) in enumerate(acc):
        before = [x.qty for x, _, _ in acc[:i] if x.symbol == e.symbol]
        if len(before) < k:
            continue
        mean = Fraction(sum(before[-k:]), k)
        if mean and e.qty >= mean * Fraction(ratio, 100):
            out.append(
                (e.seq, LARGE_TRADE, e.symbol, t, e.qty, math.ceil(mean * ratio / 100), num.UNIT)
            )
    return out


def naive_jump(cfg: AnomalyDetector, events) -> list[tuple]:
    out = []
    acc = accepted(events)
    for i, (e, t, _) in enumerate(acc):
        before = [x.price for x, _, _ in acc[:i] if x.symbol == e.symbol]
        if not before:
            continue
        move = Fraction(abs(e.price - before[-1]) * 10_000, before[-1])
        if move >= cfg.price_jump_bps:
            out.append(
                (e.seq, PRICE_JUMP, e.symbol, t, math.floor(move), cfg.price_jump_bps, "bps")
            )
    return out


def quotes(events) -> list[tuple]:
    """(event, bid, ask) of every quote with both sides."""
    out = []
    for e in events:
        if type(e) is BookTicker:
            bid, ask = e.bid_price, e.ask_price
        elif type(e) is BookSnapshot:
            bid = max([p for p, q in e.bids if q > 0], default=0)
            ask = min([p for p, q in e.asks if q > 0], default=0)
        else:
            continue
        if bid > 0 and ask > 0:
            out.append((e, bid, ask))
    return out


def naive_quotes(cfg: AnomalyDetector, events, criterion: str) -> list[tuple]:
    """Alerts of one criterion (crossed, abs, bps, median): met now and not on the previous quote.

    Crossing is judged on BookTickers alone (crossed snapshots are the book reducer's).
    """
    qs = quotes(events)
    if criterion == "crossed":
        qs = [q for q in qs if type(q[0]) is BookTicker]

    def met(i: int) -> tuple[int, int, str] | None:
        e, bid, ask = qs[i]
        if criterion == "crossed":
            return (bid - ask, 0, num.UNIT) if bid >= ask else None
        if bid >= ask:
            return None
        spread = ask - bid
        if criterion == "abs":
            return (spread, cfg.spread_abs, num.UNIT) if spread >= cfg.spread_abs else None
        if criterion == "bps":
            bps = Fraction(spread * 10_000) / Fraction(ask + bid, 2)
            return (math.floor(bps), cfg.spread_bps, "bps") if bps >= cfg.spread_bps else None
        prior = [a - b for x, b, a in qs[:i] if x.symbol == e.symbol and b < a]
        if len(prior) < cfg.spread_window:
            return None
        median = statistics.median_low(prior[-cfg.spread_window :])
        limit = Fraction(median * cfg.spread_median_ratio_pct, 100)
        floor = cfg.spread_median_min_bps
        if floor is not None and Fraction(spread * 10_000) / Fraction(ask + bid, 2) < floor:
            return None
        return (spread, math.ceil(limit), num.UNIT) if median and spread >= limit else None

    out = []
    for i, (e, _, _) in enumerate(qs):
        prev = [j for j in range(i) if qs[j][0].symbol == e.symbol]
        now = met(i)
        if now is not None and (not prev or met(prev[-1]) is None):
            kind = CROSSED_BOOK if criterion == "crossed" else WIDE_SPREAD
            out.append((e.seq, kind, e.symbol, e.exch_ms, *now))
    return out


def stream_of(e) -> tuple[str, str] | None:
    tp = type(e)
    if tp is Trade:
        return e.symbol, "aggTrade" if e.agg else "trade"
    if tp is DepthDiff:
        return e.symbol, "depth"
    if tp is BookTicker:
        return e.symbol, "bookTicker"
    if tp is BookSnapshot and e.origin == "stream":
        return e.symbol, "partialDepth"
    if tp is Ticker24h:
        return e.symbol, "ticker"
    if tp is Kline:
        return e.symbol, "kline_" + e.interval
    return None


def naive_stale(cfg: AnomalyDetector, events) -> list[tuple]:
    lim = cfg.stale_after_ms * MS
    watched = cfg.stale_kinds
    nows = list(itertools.accumulate((e.recv_ns for e in events), max))  # journal time
    latest: dict[tuple[str, str], int] = {}  # stream -> index of its latest event so far
    alerted_at: dict[tuple[str, str], int] = {}  # stream -> index of its latest alert
    out = []
    for i, e in enumerate(events):
        if stream_of(e) is not None:
            latest[stream_of(e)] = i
        found = []
        for s, j in latest.items():
            if watched is not None and s[1] not in watched:
                continue
            if nows[i] - nows[j] >= lim and alerted_at.get(s, -1) < j:
                found.append((nows[j], s[0], s[1]))
        for last, sym, kind in sorted(found):
            alerted_at[(sym, kind)] = i
            out.append(
                (e.seq, STALE_STREAM, sym, None, (nows[i] - last) // MS, cfg.stale_after_ms, "ms")
            )
    return out


# --------------------------------------------------------------------------- properties


@given(events=streams())
def test_volume_spikes_fire_where_naive_scan_says(events) -> None:
    assert ours(CFG, events, VOLUME_SPIKE) == naive_volume(CFG, events)


@given(events=streams())
def test_large_trades_fire_where_naive_scan_says(events) -> None:
    _, outs = run(CFG, events)  # one run, both criteria
    assert picked(outs, LARGE_TRADE, detail="notional") == naive_large_notional(CFG, events)
    assert picked(outs, LARGE_TRADE, detail="vs recent") == naive_large_recent(CFG, events)


@given(events=streams())
def test_price_jumps_fire_where_naive_scan_says(events) -> None:
    assert ours(CFG, events, PRICE_JUMP) == naive_jump(CFG, events)


@pytest.mark.parametrize("window,floor_bps", [(3, None), (4, None), (3, 3000)])
@given(events=streams())
def test_spread_alerts_fire_where_naive_scan_says(window: int, floor_bps, events) -> None:
    cfg = attrs.evolve(CFG, spread_window=window, spread_median_min_bps=floor_bps)
    _, outs = run(cfg, events)  # one run, every criterion
    assert picked(outs, CROSSED_BOOK) == naive_quotes(cfg, events, "crossed")
    for criterion, prefix in (("abs", "abs"), ("bps", "bps"), ("median", "vs median")):
        assert picked(outs, WIDE_SPREAD, detail=prefix) == naive_quotes(cfg, events, criterion)


@pytest.mark.parametrize("kinds", [None, ("trade", "bookTicker")])
@given(events=streams())
def test_stale_streams_fire_where_naive_scan_says(kinds, events) -> None:
    cfg = attrs.evolve(CFG, stale_kinds=kinds)
    assert ours(cfg, events, STALE_STREAM) == naive_stale(cfg, events)


@given(events=streams(), cut=st.integers(0, 120))
def test_snapshot_restore_through_json_continues_identically(events, cut: int) -> None:
    end, whole = alone.run(CFG, events)
    half, o1 = alone.run(CFG, events[:cut])
    restored = half.resumed()  # through JSON
    assert restored.state == half.state
    end2, o2 = alone.run(CFG, events[cut:], restored)
    assert o1 + o2 == whole
    assert end2.state == end.state and end2.snapshot() == end.snapshot()
    for a in whole:
        assert serde.load(json.loads(json.dumps(serde.dump(a)))) == a
        assert a.value >= a.threshold  # the one convention of every kind


@given(events=st.lists(any_event(), max_size=30))
def test_never_raises_on_arbitrary_events(events) -> None:
    a, outs = alone.run(CFG, events)
    _, outs = alone.run(CFG, events, a.resumed())
    for a in outs:
        assert isinstance(a.line(), str)
    run(AnomalyDetector(), events)


# --------------------------------------------------------------------------- worked examples


def tr(seq: int, t_ms: int, price: int, qty: int, sym: str = "BTCUSDT") -> Trade:
    return Trade(seq, t_ms * MS, sym, seq, price, qty, "buy", t_ms + 1, t_ms, seq, seq)


def test_volume_spike_worked_example() -> None:
    cfg = AnomalyDetector(
        volume_interval_ms=1000, volume_baseline=4, volume_ratio_pct=300, large_notional=None,
        large_window=None, price_jump_bps=None, stale_after_ms=None,
    )  # fmt: skip
    p = 100 * ONE
    # one unit per second for 5 s (interval 0 is the first watched, so 4..: baseline is full)
    evs = [tr(i + 1, i * 1000 + 10, p, ONE) for i in range(5)]
    # second 5: the baseline is seconds 1..4, mean 1 unit: 3 units fire, at the third trade
    evs += [tr(10, 5100, p, ONE), tr(11, 5200, p, ONE), tr(12, 5300, p, ONE), tr(13, 5400, p, ONE)]
    _, outs = run(cfg, evs)
    assert [(a.seq, a.kind, a.value, a.threshold) for a in outs] == [
        (12, VOLUME_SPIKE, 3 * ONE, 3 * ONE)
    ]
    assert outs[0].line() == (
        "1970-01-01T00:00:05.300000000Z ALERT volume_spike BTCUSDT value=3.000000000000000000 >= "
        "threshold=3.000000000000000000 [1e-18] exch=1970-01-01T00:00:05.300Z seq=12 " + outs[0].detail
    )


def test_stale_stream_one_alert_per_episode() -> None:
    cfg = AnomalyDetector(stale_after_ms=1000)
    tick = [BookTicker(i, i * 100 * MS, "ETHUSDT", i, 10, 1, 11, 1) for i in range(1, 40)]
    evs = [tr(100, 0, 10 * ONE, ONE, "ETHUSDT"), *tick[:20]]  # ticker runs to 2.0 s
    evs.append(tr(101, 2500, 10 * ONE, ONE, "ETHUSDT"))  # the trade stream is back at 2.5 s
    evs += tick[20:]  # 2.1 .. 3.9 s
    _, outs = run(cfg, evs)
    stale = [
        (a.seq, a.symbol, a.value, a.detail.split()[0]) for a in outs if a.kind == STALE_STREAM
    ]
    # silent since 0 s: noticed at the 1.0 s ticker, once; silent again since 2.5 s: at 3.5 s
    assert stale == [(10, "ETHUSDT", 1000, "trade"), (35, "ETHUSDT", 1000, "trade")]


def test_spread_episodes_and_crossed_quote() -> None:
    cfg = AnomalyDetector(spread_abs=5, spread_bps=None, spread_window=None, stale_after_ms=None)

    def q(seq: int, bid: int, ask: int) -> BookTicker:
        return BookTicker(seq, seq, "X", seq, bid, 1, ask, 1)

    evs = [q(1, 100, 101), q(2, 100, 106), q(3, 100, 107), q(4, 101, 101), q(5, 100, 110)]
    _, outs = run(cfg, evs)
    assert [(a.seq, a.kind, a.value, a.threshold) for a in outs] == [
        (2, WIDE_SPREAD, 6, 5),  # episode starts; seq 3 is the same episode
        (4, CROSSED_BOOK, 0, 0),  # locked counts as crossed, and ends the wide episode
        (5, WIDE_SPREAD, 10, 5),  # a new episode
    ]


def test_real_captures_fold_quietly() -> None:
    """The real Binance captures (30 s each): no crossed bookTicker, nothing stale, no raise."""
    from engine.codecs.binance import BinanceFutures, BinanceSpot
    from engine.journal.reader import JournalReader

    for name, codec in (("binance-spot", BinanceSpot()), ("binance-futures", BinanceFutures())):
        journal = FIXTURES / "journals" / name
        if not journal.exists():
            pytest.skip(f"fixtures/journals/{name} not present")
        cfg = AnomalyDetector()
        a = alone.Alone(cfg)
        state = a.state
        alerts = []
        for f in JournalReader(journal).frames():
            if f.dir != "in" or f.kind not in ("text", "rest"):
                continue
            for ev in codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload):
                alerts += a.feed([ev])
        kinds = {a.kind for a in alerts}
        assert CROSSED_BOOK not in kinds and STALE_STREAM not in kinds, alerts
        assert state.symbols
