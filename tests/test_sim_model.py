"""The simulator's market model, without sockets: determinism, Binance's id rules, kline/ticker definitions."""

from __future__ import annotations

import json
from collections import defaultdict
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import num
from engine.num import parse
from engine.sim.binance_frames import BinanceSpotFrames
from engine.sim.instruments import SymbolSpec, spec_for
from engine.sim.model import FIXED_FRAMES_PER_S, FRAMES_PER_EVENT, Market

T0 = 1_704_067_200_000  # a minute boundary


def frames(m: Market, ms: int) -> list[tuple[str, dict]]:
    return [(s, json.loads(p)) for s, p in m.advance(m.now_ms + ms)]


def by_stream(fr: list[tuple[str, dict]], suffix: str) -> list[dict]:
    return [d for s, d in fr if s.endswith("@" + suffix)]


def apply(book: dict[int, int], levels: list[list[str]]) -> None:
    for p, q in levels:
        if parse(q):
            book[parse(p)] = parse(q)
        else:
            book.pop(parse(p), None)


@pytest.fixture(scope="module")
def whole_4s() -> list[tuple[str, bytes]]:
    """Four seconds of ``Market(seed=5, activity=300)`` in one call (the same for every example)."""
    return Market(seed=5, activity=300).advance(T0 + 4_000)


@given(cuts=st.lists(st.integers(0, 4_000), max_size=12))
def test_advance_is_independent_of_how_time_is_cut(
    whole_4s: list[tuple[str, bytes]], cuts: list[int]
) -> None:
    whole = whole_4s
    m = Market(seed=5, activity=300)
    parts: list[tuple[str, bytes]] = []
    for c in sorted(cuts) + [4_000]:
        parts += m.advance(T0 + c)
    assert parts == whole


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    a = Market(seed=1).advance(T0 + 3_000)
    assert a == Market(seed=1).advance(T0 + 3_000)
    assert a != Market(seed=2).advance(T0 + 3_000)


def test_a_symbols_stream_does_not_depend_on_the_other_symbols() -> None:
    alone = [x for x in Market(seed=3, symbols=["ETHUSDT"]).advance(T0 + 3_000)]
    mixed = [x for x in Market(seed=3, symbols=["BTCUSDT", "ETHUSDT"]).advance(T0 + 3_000)]
    assert alone == [x for x in mixed if x[0].startswith("ethusdt@")]


def test_depth_batches_chain_and_replay_to_the_models_book() -> None:
    m = Market(seed=9, activity=400, symbols=["BTCUSDT", "SHIBUSDT"])
    snap = json.loads(m.snapshot("SHIBUSDT", 5000))
    bids = {parse(p): parse(q) for p, q in snap["bids"]}
    asks = {parse(p): parse(q) for p, q in snap["asks"]}
    prev_u = snap["lastUpdateId"]
    fr = frames(m, 5_000)
    diffs = [d for s, d in fr if s == "shibusdt@depth@100ms"]
    assert len(diffs) > 40
    for d in diffs:
        assert d["U"] == prev_u + 1 and d["u"] >= d["U"], (prev_u, d["U"], d["u"])
        assert d["E"] % 100 == 0
        apply(bids, d["b"])
        apply(asks, d["a"])
        prev_u = d["u"]
    last_e = diffs[-1]["E"]
    replica = Market(seed=9, activity=400, symbols=["BTCUSDT", "SHIBUSDT"])
    replica.advance(last_e - 1)  # state after every event before the flush at last_e
    uid, rb, ra = replica.book("SHIBUSDT")
    assert (uid, rb, ra) == (prev_u, bids, asks)
    # the 1 s diff stream chains too, and book tickers share the id space and are never crossed
    slow = [d for s, d in fr if s == "shibusdt@depth"]
    for a, b in pairwise(slow):
        assert b["U"] == a["u"] + 1
    tickers = [d for s, d in fr if s == "shibusdt@bookTicker"]
    assert tickers and all(parse(t["b"]) < parse(t["a"]) for t in tickers)
    assert [t["u"] for t in tickers] == sorted({t["u"] for t in tickers})
    assert snap["lastUpdateId"] < tickers[0]["u"] <= prev_u + 100


def test_prices_and_quantities_are_exact_strings_on_the_grid() -> None:
    m = Market(seed=4, activity=300)
    for s, d in frames(m, 3_000):
        if not s.endswith("@trade"):
            continue
        spec = m.spec(d["s"])
        for key, grid in (("p", spec.tick), ("q", spec.step)):
            assert len(d[key].split(".")[1]) == 8
            assert parse(d[key]) % grid == 0 and parse(d[key]) > 0
    shib = json.loads(m.snapshot("SHIBUSDT", 1))
    assert shib["bids"][0][0].startswith("0.0000")


def test_snapshot_honours_limit_and_sides_are_sorted() -> None:
    m = Market(seed=2)
    m.advance(T0 + 2_000)
    s = json.loads(m.snapshot("BTCUSDT", 7))
    assert len(s["bids"]) == 7 and len(s["asks"]) == 7
    bp = [parse(p) for p, _ in s["bids"]]
    ap = [parse(p) for p, _ in s["asks"]]
    assert bp == sorted(bp, reverse=True) and ap == sorted(ap) and bp[0] < ap[0]
    assert s["lastUpdateId"] == m.book("BTCUSDT")[0]


def test_snapshot_taken_mid_batch_passes_the_spot_sync_rule() -> None:
    m = Market(seed=8, activity=500)
    m.advance(T0 + 1_050)  # mid-way through a 100 ms batch
    lid = json.loads(m.snapshot("ETHUSDT", 1000))["lastUpdateId"]
    diffs = [d for s, d in frames(m, 1_000) if s == "ethusdt@depth@100ms"]
    live = [d for d in diffs if d["u"] > lid]
    assert live[0]["U"] <= lid + 1 <= live[0]["u"]


def test_aggtrades_cover_their_trades_exactly() -> None:
    fr = frames(Market(seed=6, activity=400, symbols=["BTCUSDT"]), 5_000)
    trades = {d["t"]: d for d in by_stream(fr, "trade")}
    aggs = by_stream(fr, "aggTrade")
    assert aggs
    ids = []
    for a in aggs:
        covered = [trades[t] for t in range(a["f"], a["l"] + 1)]
        ids += [c["t"] for c in covered]
        assert {c["p"] for c in covered} == {a["p"]}
        assert {c["m"] for c in covered} == {a["m"]} and {c["T"] for c in covered} == {a["T"]}
        assert sum(parse(c["q"]) for c in covered) == parse(a["q"])
    assert ids == sorted(trades) and ids == list(range(ids[0], ids[-1] + 1))
    assert [a["a"] for a in aggs] == list(range(aggs[0]["a"], aggs[0]["a"] + len(aggs)))


def kline_of(trades: list[dict], t: int, prev_close: int) -> dict:
    """The documented kline definition, written independently of the model."""
    if not trades:
        p = prev_close
        return dict(o=p, h=p, l=p, c=p, v=0, q=0, V=0, Q=0, n=0, f=-1, L=-1)
    ps = [parse(x["p"]) for x in trades]
    qs = [parse(x["q"]) for x in trades]
    quote = [p * q // num.ONE for p, q in zip(ps, qs, strict=True)]
    taker_buy = [not x["m"] for x in trades]
    return dict(
        o=ps[0],
        h=max(ps),
        l=min(ps),
        c=ps[-1],
        v=sum(qs),
        q=sum(quote),
        V=sum(q for q, b in zip(qs, taker_buy, strict=True) if b),
        Q=sum(q for q, b in zip(quote, taker_buy, strict=True) if b),
        n=len(trades),
        f=trades[0]["t"],
        L=trades[-1]["t"],
    )


def test_klines_follow_the_documented_definition_from_the_models_own_trades() -> None:
    m = Market(seed=11, activity=40, symbols=["ETHUSDT", "SHIBUSDT"], start_ms=T0)
    fr = frames(m, 185_000)
    for sym in ("ethusdt", "shibusdt"):
        trades = [d for s, d in fr if s == f"{sym}@trade"]
        klines = [d for s, d in fr if s == f"{sym}@kline_1m"]
        closed = [k for k in klines if k["k"]["x"]]
        assert [k["k"]["t"] for k in closed] == [T0, T0 + 60_000, T0 + 120_000]
        prev_close = m.spec(sym).price
        for k in klines:
            kk, e = k["k"], k["E"]
            assert kk["T"] == kk["t"] + 59_999 and kk["i"] == "1m" and kk["B"] == "0"
            assert (e == kk["t"] + 60_000) == kk["x"] and e % 2000 == 0
            window = [x for x in trades if kk["t"] <= x["T"] < min(e, kk["t"] + 60_000)]
            before = [x for x in trades if x["T"] < kk["t"]]
            prev_close = parse(before[-1]["p"]) if before else m.spec(sym).price
            want = kline_of(window, kk["t"], prev_close)
            got = {f: (kk[f] if isinstance(kk[f], int) else parse(kk[f])) for f in want}
            assert got == want, (sym, e)


def test_empty_minute_kline_carries_the_previous_close() -> None:
    m = Market(seed=1, activity=0.01, symbols=["BTCUSDT"], start_ms=T0)
    kl = by_stream(frames(m, 61_000), "kline_1m")
    assert any(k["k"]["n"] == 0 for k in kl)
    for k in kl:
        if k["k"]["n"] == 0:
            assert k["k"]["f"] == k["k"]["L"] == -1 and k["k"]["v"] == "0.00000000"
            assert k["k"]["o"] == k["k"]["c"] == k["k"]["h"] == k["k"]["l"]


def test_ticker_totals_match_the_trades_since_start() -> None:
    m = Market(seed=12, activity=200, symbols=["BTCUSDT"])
    fr = frames(m, 70_000)
    trades = by_stream(fr, "trade")
    tk = by_stream(fr, "ticker")[-1]
    seen = [t for t in trades if t["T"] < tk["E"]]
    assert tk["n"] == len(seen) and tk["F"] == seen[0]["t"] and tk["L"] == seen[-1]["t"]
    assert parse(tk["v"]) == sum(parse(t["q"]) for t in seen)
    assert parse(tk["c"]) == parse(seen[-1]["p"]) and parse(tk["o"]) == parse(seen[0]["p"])
    assert parse(tk["p"]) == parse(tk["c"]) - parse(tk["o"])
    assert tk["C"] - tk["O"] == 86_400_000


def test_inject_gap_skips_ids_between_batches() -> None:
    m = Market(seed=3, activity=300, symbols=["BTCUSDT"])
    before = by_stream(frames(m, 1_000), "depth@100ms")
    m.inject_gap("BTCUSDT", 7)
    after = by_stream(frames(m, 1_000), "depth@100ms")
    assert after[0]["U"] == before[-1]["u"] + 1 + 7
    assert all(b["U"] == a["u"] + 1 for a, b in pairwise(after))


def test_frames_per_event_calibration_holds() -> None:
    m = Market(seed=0, activity=2_000, symbols=["BTCUSDT"])
    n = len(m.advance(T0 + 10_000))
    per_event = (n / 10 - FIXED_FRAMES_PER_S) / 2_000
    assert abs(per_event - FRAMES_PER_EVENT) / FRAMES_PER_EVENT < 0.15


def test_specs_validate_and_unknown_symbols_get_a_deterministic_grid() -> None:
    with pytest.raises(ValueError, match="exact"):
        SymbolSpec("BNBBTC", parse("0.000001"), parse("0.001"), parse("0.01"))
    with pytest.raises(ValueError, match="tick grid"):
        SymbolSpec("X", parse("0.01"), parse("1"), parse("100.005"))
    assert spec_for("xyzusdt", 3) == spec_for("XYZUSDT", 3)
    m = Market(seed=3, symbols=["xyzusdt"])
    assert m.symbols == ["XYZUSDT"] and "xyzusdt@trade" in m.streams()
    with pytest.raises(KeyError):
        m.snapshot("NOPE", 5)


def test_memory_stays_bounded_on_a_long_busy_run() -> None:
    m = Market(seed=1, activity=3_000, symbols=["SHIBUSDT"])
    counts = defaultdict(int)
    for s, _ in m.advance(T0 + 20_000):
        counts[s] += 1
    _, bids, asks = m.book("SHIBUSDT")
    assert len(bids) <= 300 and len(asks) <= 300


class UnitsFrames(BinanceSpotFrames):
    """Another wire: streams named ``SYMBOL/channel``, trades as JSON arrays of exact units."""

    def stream(self, symbol: str, channel: str) -> str:
        return f"{symbol}/{channel}"

    def trade(
        self, symbol: str, et: int, tid: int, price: int, qty: int, buyer_maker: bool
    ) -> bytes:
        return json.dumps([symbol, et, tid, price, qty, buyer_maker]).encode()


def test_another_encoder_spells_the_same_market() -> None:
    binance = Market(seed=4, activity=200, start_ms=T0).advance(T0 + 3_000)
    market = Market(seed=4, activity=200, start_ms=T0, encoder=UnitsFrames())
    other = market.advance(T0 + 3_000)
    assert market.streams()[0] == "BTCUSDT/trade"
    assert [s.replace("/", "@").lower() for s, _ in other] == [s.lower() for s, _ in binance]
    trades = [json.loads(p) for s, p in binance if s.endswith("@trade")]
    assert len(trades) > 20
    assert [json.loads(p) for s, p in other if s.endswith("/trade")] == [
        [t["s"], t["E"], t["t"], parse(t["p"]), parse(t["q"]), t["m"]] for t in trades
    ]
    # what the other encoder does not override is spelled as before, byte for byte
    assert [p for s, p in other if not s.endswith("/trade")] == [
        p for s, p in binance if not s.endswith("@trade")
    ]
