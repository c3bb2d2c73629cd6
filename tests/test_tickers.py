"""Tickers of every venue in the one ticker model (Ticker24h): real captures, deltas, round trips.

* Real captures: every ``tickers`` frame of cryptofeed's 2022 OKX recording
  (fixtures/raw/OKX.ws.1.0) and every ``ticker`` frame of its 2021 Coinbase
  recording (the committed journal fixtures/journals/coinbase, see
  fixtures/raw/NOTICE.md) decodes, each number equal to the exchange's own
  string read exactly, and nothing the venue did not send is filled in.
* Bybit linear/inverse deltas merge into the symbol's last full ticker in
  :class:`engine.tickers.TickerMerge`: a stateful test against a naive dict
  model (with checkpoints through JSON on the way), and the whole pipeline of
  a ``bybit-linear`` journal of hand-written frames in Bybit's documented
  shapes, through replay and ``engine export``.
* Every venue's ticker encoder round-trips through its decoder; bad tickers are
  DecodeErrors; the simulators send tickers ``engine run --sim`` captures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine import num
from engine.assembly import build_pipeline
from engine.codecs import kraken_v1 as v1
from engine.codecs.bybit import BybitInverse, BybitLinear, BybitSpot, ticker_frame
from engine.codecs.coinbase import CoinbaseExchange
from engine.codecs.coinbase_advanced import CoinbaseAdvanced
from engine.codecs.kraken import KrakenV2, encode_ticker
from engine.codecs.okx import Okx
from engine.events import (
    BookSnapshot,
    BookTicker,
    DecodeError,
    DepthDiff,
    StreamSequence,
    Ticker24h,
)
from engine.journal.reader import JournalReader
from engine.journal.writer import JournalWriter
from engine.replay.export import export_journal, read_table
from engine.tickers import MERGED_FIELDS, TickerMerge

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.alone import Alone  # noqa: E402

FIX = Path(__file__).resolve().parent.parent / "fixtures"
OKX_RAW = FIX / "raw" / "OKX.ws.1.0"
COINBASE = FIX / "journals" / "coinbase"
P = num.parse
NUMBERS = ("last_price", "last_qty", "open_price", "high_price", "low_price", "vwap", "volume",
           "quote_volume", "price_change", "bid_price", "ask_price", "bid_qty", "ask_qty")  # fmt: skip


def frames_of(raw: Path) -> list[bytes]:
    out = []
    for line in raw.read_text().splitlines():
        head, sep, body = line.partition(": ")
        if sep and " " not in head:  # "<ts>: <frame>": a received frame
            out.append(body.encode())
    return out


def values(t: Ticker24h) -> dict[str, int | None]:
    return {f: getattr(t, f) for f in NUMBERS}


# =============================================================== real captures


def test_every_okx_ticker_of_the_real_capture_decodes_exactly():
    codec = Okx()
    got: dict[str, int] = {}
    for payload in frames_of(OKX_RAW):
        msg = json.loads(payload)
        if msg.get("arg", {}).get("channel") != "tickers" or "data" not in msg:
            continue
        (t,) = codec.decode(3, 4, "text", "wss://x", payload)
        (d,) = msg["data"]
        spot = d["instType"] == "SPOT"
        assert values(t) == {
            "last_price": P(d["last"]), "last_qty": P(d["lastSz"]), "open_price": P(d["open24h"]),
            "high_price": P(d["high24h"]), "low_price": P(d["low24h"]), "vwap": None,
            "volume": P(d["vol24h"]),
            # volCcy24h is the quote volume only on SPOT (the base coin's on derivatives)
            "quote_volume": P(d["volCcy24h"]) if spot else None,
            "price_change": None, "bid_price": P(d["bidPx"]), "ask_price": P(d["askPx"]),
            "bid_qty": P(d["bidSz"]), "ask_qty": P(d["askSz"]),
        }  # fmt: skip
        assert t.symbol == d["instId"] and t.exch_ms == int(d["ts"]) and not t.partial
        assert (t.open_ms, t.close_ms, t.first_id, t.last_id, t.count) == (None,) * 5
        assert codec.decode(3, 4, "text", "wss://x", codec.encode(t)) == [t]
        got[t.symbol] = got.get(t.symbol, 0) + 1
    assert got == {"BTC-USD-220527": 2, "UNI-USD-SWAP": 1, "BTC-USDT": 25}, got


def test_every_coinbase_ticker_of_the_real_capture_decodes_exactly():
    codec = CoinbaseExchange()
    n, products = 0, set()
    for f in JournalReader(COINBASE).frames():
        if f.dir != "in" or f.kind != "text" or b'"type":"ticker"' not in f.payload:
            continue
        d = json.loads(f.payload)
        (t,) = codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload)
        assert type(t) is Ticker24h, t
        assert values(t) == {
            "last_price": P(d["price"]), "last_qty": P(d["last_size"]) if "last_size" in d else None,
            "open_price": P(d["open_24h"]), "high_price": P(d["high_24h"]),
            "low_price": P(d["low_24h"]), "vwap": None, "volume": P(d["volume_24h"]),
            "quote_volume": None, "price_change": None, "bid_price": P(d["best_bid"]),
            "ask_price": P(d["best_ask"]), "bid_qty": None, "ask_qty": None,  # 2021: no sizes
        }  # fmt: skip
        assert t.last_id == d.get("trade_id") and t.symbol == d["product_id"]
        assert t.exch_ms is not None and t.seq == f.seq
        assert codec.decode(f.seq, f.recv_ns, "text", f.source, codec.encode_ticker(t, 1)) == [t]
        n += 1
        products.add(t.symbol)
    assert n >= 10 and len(products) == 10, (n, products)


def test_the_coinbase_capture_replays_its_tickers_with_no_decode_error():
    import engine

    with engine.open(COINBASE) as j:
        assert len(list(j.events(types=DecodeError))) == 0
        tickers = list(j.events(types=Ticker24h))
        rows = j.table("ticker")
    assert rows.num_rows == len(tickers) > 0
    assert rows.column("last_price").to_pylist() == [
        Decimal(t.last_price).scaleb(-num.SCALE) for t in tickers
    ]
    assert rows.column("vwap").null_count == rows.num_rows  # not sent: null, never 0


# =============================================================== Bybit: snapshot, delta, merge

LINEAR_SNAPSHOT = (
    b'{"topic":"tickers.BTCUSDT","type":"snapshot","data":{"symbol":"BTCUSDT",'
    b'"tickDirection":"PlusTick","price24hPcnt":"0.017103","lastPrice":"17216.00",'
    b'"prevPrice24h":"16926.50","highPrice24h":"17281.50","lowPrice24h":"16915.00",'
    b'"prevPrice1h":"17238.00","markPrice":"17217.33","indexPrice":"17227.36",'
    b'"openInterest":"68744.761","openInterestValue":"1183601235.91",'
    b'"turnover24h":"1570383121.943499","volume24h":"91705.276",'
    b'"nextFundingTime":"1673280000000","fundingRate":"-0.000212","bid1Price":"17215.50",'
    b'"bid1Size":"84.489","ask1Price":"17216.00","ask1Size":"83.020"},'
    b'"cs":24987956059,"ts":1673272861686}'
)
LINEAR_DELTA = (
    b'{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT",'
    b'"lastPrice":"17216.50","bid1Price":"17216.00","bid1Size":"2.3","ask1Price":"17216.50",'
    b'"ask1Size":"1.2","volume24h":"91706.001"},"cs":24987956123,"ts":1673272861786}'
)
SPOT_SNAPSHOT = (
    b'{"topic":"tickers.BTCUSDT","ts":1673853746003,"type":"snapshot","cs":2588407389,'
    b'"data":{"symbol":"BTCUSDT","lastPrice":"21109.77","highPrice24h":"21426.99",'
    b'"lowPrice24h":"20575","prevPrice24h":"20704.93","volume24h":"6780.866843",'
    b'"turnover24h":"141946527.22907118","price24hPcnt":"0.0196","usdIndexPrice":"21120.24"}}'
)


def test_bybit_spot_and_linear_snapshots_and_a_delta():
    (spot,) = BybitSpot().decode(1, 2, "text", "wss://x", SPOT_SNAPSHOT)
    assert values(spot) == {
        "last_price": P("21109.77"), "last_qty": None, "open_price": P("20704.93"),
        "high_price": P("21426.99"), "low_price": P("20575"), "vwap": None,
        "volume": P("6780.866843"), "quote_volume": P("141946527.22907118"),
        "price_change": None, "bid_price": None, "ask_price": None, "bid_qty": None,
        "ask_qty": None,
    }  # fmt: skip
    assert spot.exch_ms == 1673853746003 and not spot.partial
    (snap,) = BybitLinear().decode(3, 4, "text", "wss://x", LINEAR_SNAPSHOT)
    assert (snap.bid_price, snap.bid_qty, snap.ask_price, snap.ask_qty) == (
        P("17215.50"), P("84.489"), P("17216.00"), P("83.020"),
    )  # fmt: skip
    assert snap.quote_volume == P("1570383121.943499") and not snap.partial
    (delta,) = BybitLinear().decode(5, 6, "text", "wss://x", LINEAR_DELTA)
    assert delta.partial and delta.exch_ms == 1673272861786
    assert values(delta) == {**dict.fromkeys(NUMBERS), "last_price": P("17216.50"),
                             "bid_price": P("17216.00"), "bid_qty": P("2.3"),
                             "ask_price": P("17216.50"), "ask_qty": P("1.2"),
                             "volume": P("91706.001")}  # fmt: skip
    # inverse: turnover24h is in the base coin, which the model has no field for
    inv = LINEAR_SNAPSHOT.replace(b"BTCUSDT", b"BTCUSD")
    (i,) = BybitInverse().decode(7, 8, "text", "wss://x", inv)
    assert i.quote_volume is None and i.volume == P("91705.276")


def test_a_bybit_linear_journal_merges_deltas_through_replay_and_export(tmp_path):
    j = tmp_path / "j"
    w = JournalWriter.create(j, {"exchange": "bybit-linear"})
    src = BybitLinear.ws_base
    w.append(1_000, 0, "in", "text", src, LINEAR_DELTA)  # before any snapshot: cannot merge
    w.append(2_000, 0, "in", "text", src, LINEAR_SNAPSHOT)
    w.append(3_000, 0, "in", "text", src, LINEAR_DELTA)
    w.close()
    p = build_pipeline("bybit-linear")
    outs = [o for f in JournalReader(j).frames()
            for _, o in p.feed(f.seq, f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload)]  # fmt: skip
    merged = [o for o in outs if type(o) is Ticker24h]
    (snap,) = BybitLinear().decode(2, 2_000, "text", src, LINEAR_SNAPSHOT)
    want = attrs.evolve(snap, seq=3, recv_ns=3_000, exch_ms=1673272861786,
                        last_price=P("17216.50"), bid_price=P("17216.00"), bid_qty=P("2.3"),
                        ask_price=P("17216.50"), ask_qty=P("1.2"), volume=P("91706.001"))  # fmt: skip
    assert merged == [want]
    st_ = p.state("tickers")
    assert (st_.merged, st_.unmerged) == ({"BTCUSDT": 1}, {"BTCUSDT": 1})
    assert st_.last["BTCUSDT"] == want
    rep = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(j), "--json"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert rep.returncode == 0, rep.stderr
    assert json.loads(rep.stdout)["symbols"]["BTCUSDT"]["tickers"] == {
        "deltas_merged": 1, "deltas_unmerged": 1, "last_exch_ms": 1673272861786,
    }  # fmt: skip
    res = export_journal(j, tmp_path / "out", interval_s=None)
    assert res.rows["ticker"] == 2  # the snapshot and the merged delta; never a partial row
    t = read_table(tmp_path / "out", "ticker")
    assert t.column("seq").to_pylist() == [2, 3]
    assert t.column("high_price").to_pylist() == [Decimal("17281.5")] * 2  # kept from the snapshot
    assert t.column("bid_qty").to_pylist() == [Decimal("84.489"), Decimal("2.3")]
    # spot has no deltas, so no merge reducer: its pipeline is as before
    assert "tickers" not in [r.name for r in build_pipeline("bybit").reducers]


# A naive model of the merge: per symbol a dict of the fields a ticker holds.
syms = st.sampled_from(["BTCUSDT", "ETHUSDT"])
field_values = st.fixed_dictionaries(
    {}, optional={f: st.integers(0, 10**30) for f in MERGED_FIELDS if f != "exch_ms"}
)


def ticker_of(sym: str, seq: int, ms: int | None, vals: dict, partial: bool) -> Ticker24h:
    base = Ticker24h(seq, seq * 10, sym, ms, *([None] * 16))
    return attrs.evolve(base, partial=partial, **vals)


class MergeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.alone = Alone(TickerMerge())
        self.model: dict[str, dict] = {}
        self.seq = 0
        self.unmerged = 0

    def _feed(self, ev: Ticker24h) -> list:
        return self.alone.feed([ev])

    @rule(sym=syms, vals=field_values, ms=st.none() | st.integers(0, 2**40))
    def full(self, sym, vals, ms):
        self.seq += 1
        ev = ticker_of(sym, self.seq, ms, vals, False)
        assert self._feed(ev) == []
        self.model[sym] = {f: getattr(ev, f) for f in MERGED_FIELDS}

    @rule(sym=syms, vals=field_values, ms=st.none() | st.integers(0, 2**40))
    def delta(self, sym, vals, ms):
        self.seq += 1
        outs = self._feed(ticker_of(sym, self.seq, ms, vals, True))
        if sym not in self.model:
            self.unmerged += 1
            assert outs == []
            return
        m = self.model[sym]
        m.update(vals)
        if ms is not None:
            m["exch_ms"] = ms
        (o,) = outs
        assert type(o) is Ticker24h and not o.partial and o.symbol == sym
        assert (o.seq, o.recv_ns) == (self.seq, self.seq * 10)
        assert {f: getattr(o, f) for f in MERGED_FIELDS} == m

    @precondition(lambda self: self.seq > 0)
    @rule()
    def checkpoint(self):
        self.alone = self.alone.resumed()  # the state survives a checkpoint through JSON

    @invariant()
    def counts(self):
        assert sum(self.alone.state.unmerged.values()) == self.unmerged
        assert set(self.alone.state.last) == set(self.model)


TestMergeAgainstANaiveModel = MergeMachine.TestCase
TestMergeAgainstANaiveModel.settings = settings(max_examples=60, stateful_step_count=30)


# =============================================================== encode ↔ decode

u = st.integers(0, 10**24)


def opt(s):
    return st.none() | s


@given(st.sampled_from(["BTC-USDT", "UNI-USD-SWAP", "BTC-USD-220527"]), st.data())
def test_okx_tickers_round_trip(inst, data):
    spot = inst.count("-") == 1
    t = Ticker24h(1, 2, inst, data.draw(st.integers(0, 2**50)), data.draw(opt(u)),
                  data.draw(opt(u)), data.draw(opt(u)), data.draw(opt(u)), data.draw(opt(u)),
                  None, data.draw(opt(u)), data.draw(opt(u)) if spot else None, None,
                  data.draw(opt(u)), data.draw(opt(u)), None, None, None, None, None,
                  data.draw(opt(u)), data.draw(opt(u)))  # fmt: skip
    assert Okx().decode(1, 2, "text", "x", Okx().encode(t)) == [t]


@given(st.sampled_from([BybitSpot, BybitLinear, BybitInverse]), st.booleans(), st.data())
def test_bybit_tickers_round_trip(cls, partial, data):
    pd, qd = data.draw(st.integers(0, 8)), data.draw(st.integers(0, 8))
    px = st.integers(0, 10**9).map(lambda v: v * 10 ** (num.SCALE - pd))
    qty = st.integers(0, 10**9).map(lambda v: v * 10 ** (num.SCALE - qd))
    quote = st.integers(0, 10**12).map(lambda v: v * 10 ** max(0, num.SCALE - pd - qd))
    spot, inverse = cls.category == "spot", cls.category == "inverse"
    book = (lambda s: None) if spot else (lambda s: data.draw(opt(s)))
    t = Ticker24h(1, 2, "BTCUSDT", data.draw(opt(st.integers(0, 2**50))), data.draw(opt(px)),
                  None, data.draw(opt(px)), data.draw(opt(px)), data.draw(opt(px)), None,
                  data.draw(opt(qty)), None if inverse else data.draw(opt(quote)), None,
                  book(px), book(px), None, None, None, None, None, book(qty), book(qty),
                  partial)  # fmt: skip
    assert cls().decode(1, 2, "text", "x", ticker_frame(t, cls.category, pd, qd)) == [t]


@given(st.data())
def test_coinbase_exchange_and_advanced_tickers_round_trip(data):
    t = Ticker24h(5, 6, "BTC-USD", data.draw(st.integers(0, 2**45)), data.draw(opt(u)),
                  data.draw(opt(u)), data.draw(opt(u)), data.draw(opt(u)), data.draw(opt(u)),
                  None, data.draw(opt(u)), None, None, data.draw(opt(u)), data.draw(opt(u)),
                  None, None, None, data.draw(opt(st.integers(0, 2**62))), None,
                  data.draw(opt(u)), data.draw(opt(u)))  # fmt: skip
    ex = CoinbaseExchange()
    assert ex.decode(5, 6, "text", "x", ex.encode_ticker(t, 77)) == [t]
    adv = CoinbaseAdvanced()
    a = attrs.evolve(t, last_qty=None, open_price=None, last_id=None)
    got = adv.decode(5, 6, "text", "x", adv.encode_tickers([a], 9))
    assert got == [StreamSequence(5, 6, "x", 9), a]


def kraken_bbo(data, pd: int, symbol: str):
    """Kraken's numbers (prices at ``pd`` decimals, volumes at 8) and a best bid/offer of them."""
    px = st.integers(1, 10**9).map(lambda v: v * 10 ** (num.SCALE - pd))
    qty = st.integers(0, 10**12).map(lambda v: v * 10 ** (num.SCALE - 8))
    bbo = BookTicker(4, 5, symbol, 4, data.draw(px), data.draw(qty), data.draw(px),
                     data.draw(qty))  # fmt: skip
    return px, qty, bbo


@given(st.integers(0, 8), st.data())
def test_kraken_v2_ticker_with_24h_figures_round_trips(pd, data):
    px, qty, bbo = kraken_bbo(data, pd, "BTC/USD")
    change = data.draw(st.integers(-(10**9), 10**9)) * 10 ** (num.SCALE - pd)
    day = Ticker24h(4, 5, "BTC/USD", data.draw(opt(st.integers(0, 2**45))), data.draw(px), None,
                    None, data.draw(px), data.draw(px), data.draw(opt(px)), data.draw(qty), None,
                    change, bbo.bid_price, bbo.ask_price, None, None, None, None, None,
                    bbo.bid_qty, bbo.ask_qty)  # fmt: skip
    k = KrakenV2()
    assert k.decode(4, 5, "text", "x", encode_ticker(bbo, pd, 8, day)) == [bbo, day]
    assert k.decode(4, 5, "text", "x", encode_ticker(bbo, pd, 8)) == [bbo]  # bid/offer only


# Kraken v1's documented ticker (its WebSocket v1 docs): the recorded capture has no ticker channel
KRAKEN_V1_TICKER = (
    b'[0,{"a":["5525.40000",1,"1.000"],"b":["5525.10000",1,"1.000"],'
    b'"c":["5525.10000","0.00398963"],"v":["2634.11501494","3591.17907851"],'
    b'"p":["5631.44067","5653.78939"],"t":[11493,16267],"l":["5505.00000","5505.00000"],'
    b'"h":["5783.00000","5783.00000"],"o":["5760.70000","5763.40000"]},"ticker","XBT/USD"]'
)


def test_kraken_v1_ticker_is_a_book_ticker_and_the_24h_slots_of_a_ticker():
    bbo, day = v1.KrakenV1().decode(7, 8, "text", "x", KRAKEN_V1_TICKER)
    assert bbo == BookTicker(7, 8, "XBT/USD", 7, P("5525.10000"), P("1.000"), P("5525.40000"),
                             P("1.000"))  # fmt: skip
    assert values(day) == {
        "last_price": P("5525.10000"), "last_qty": P("0.00398963"), "open_price": P("5763.40000"),
        "high_price": P("5783.00000"), "low_price": P("5505.00000"), "vwap": P("5653.78939"),
        "volume": P("3591.17907851"), "quote_volume": None, "price_change": None,
        "bid_price": P("5525.10000"), "ask_price": P("5525.40000"), "bid_qty": P("1.000"),
        "ask_qty": P("1.000"),
    }  # fmt: skip
    assert day.count == 16267 and not day.partial  # the last 24 hours' trades, not today's
    assert (day.exch_ms, day.open_ms, day.close_ms, day.first_id, day.last_id) == (None,) * 5
    # a best bid/offer alone (the arrays only): no 24 h ticker is made up
    only = json.loads(KRAKEN_V1_TICKER)
    only[1] = {k: only[1][k] for k in ("a", "b")}
    assert v1.KrakenV1().decode(7, 8, "text", "x", json.dumps(only).encode()) == [bbo]


@given(st.integers(0, 8), st.data())
def test_kraken_v1_ticker_with_24h_figures_round_trips(pd, data):
    px, qty, bbo = kraken_bbo(data, pd, "XBT/USD")
    last = data.draw(opt(st.tuples(px, qty)))
    day = Ticker24h(4, 5, "XBT/USD", None, last and last[0], last and last[1],
                    data.draw(opt(px)), data.draw(opt(px)), data.draw(opt(px)), data.draw(opt(px)),
                    data.draw(opt(qty)), None, None, bbo.bid_price, bbo.ask_price, None, None,
                    None, None, data.draw(opt(st.integers(0, 2**40))), bbo.bid_qty, bbo.ask_qty)  # fmt: skip
    k = v1.KrakenV1()
    frame = v1.encode_ticker(bbo, 9, pd, 8, day)
    want = [bbo, day] if any(json.loads(frame)[1].get(key) for key in "cvptlho") else [bbo]
    assert k.decode(4, 5, "text", "x", frame) == want
    assert k.decode(4, 5, "text", "x", v1.encode_ticker(bbo, 9, pd, 8)) == [bbo]


def test_a_kraken_v1_book_ticker_is_never_compared_with_a_book_at_another_moment():
    """Its id is its own frame's seq; Kraken's book ids are seqs of the book frames: the
    reducer holds it until the next book message and counts it uncomparable, no mismatch."""
    p = build_pipeline("kraken-v1")
    pd, qd = 1, 8
    snap = BookSnapshot(0, 0, "XBT/USD", 0, [(P("100.0"), P("1"))], [(P("101.0"), P("2"))],
                        1000, "stream", 1_000, None, None, pd, qd)  # fmt: skip
    bbo = BookTicker(0, 0, "XBT/USD", 0, P("99.0"), P("5"), P("102.0"), P("5"))  # not our top
    upd = DepthDiff(0, 0, "XBT/USD", 0, 0, None, 2_000, None, [(P("100.0"), P("3"))], [], None)
    frames = [v1.encode_snapshot(snap, 1), v1.encode_ticker(bbo, 2, pd, qd),
              v1.encode_update(upd, 1, 1000, pd, qd)]  # fmt: skip
    outs = [o for seq, f in enumerate(frames, 1)
            for _, o in p.feed(seq, seq * 1000, 0, "in", "text", "wss://x", f)]  # fmt: skip
    assert [type(o).__name__ for o in outs if "Mismatch" in type(o).__name__] == []
    c = p.state("book").symbols["XBT/USD"].counts
    assert (c.tickers_seen, c.tickers_compared, c.tickers_uncomparable) == (1, 0, 1)


# =============================================================== bad input


@pytest.mark.parametrize(
    ("codec", "payload", "reason"),
    [
        (Okx(), b'{"arg":{"channel":"tickers","instId":"A-B"},"data":[{"instId":"A-B",'
                b'"ts":"1","bidPx":"-1"}]}', "bidPx: negative"),
        (Okx(), b'{"arg":{"channel":"tickers","instId":"A-B"},"data":{"x":1}}', "'data' must"),
        (BybitLinear(), LINEAR_DELTA.replace(b'"2.3"', b"2.3"), "bid1Size: expected a decimal"),
        (BybitLinear(), LINEAR_DELTA.replace(b'"delta"', b'"update"'), "unknown type 'update'"),
        (BybitLinear(), LINEAR_DELTA.replace(b'"ts":1673272861786', b'"ts":"soon"'), "'ts'"),
        (CoinbaseExchange(), b'{"type":"ticker","product_id":"A-B","price":"1e5x"}', "price"),
        (CoinbaseExchange(), b'{"type":"ticker","product_id":"A-B","time":"noon"}', "time"),
        (CoinbaseAdvanced(), b'{"channel":"ticker","sequence_num":1,"events":[{"tickers":'
                             b'[{"product_id":"A-B","price":"x"}]}]}', "tickers[0].price"),
        (KrakenV2(), b'{"channel":"ticker","type":"update","data":[{"symbol":"A/B","bid":1,'
                     b'"bid_qty":1,"ask":2,"ask_qty":1,"last":"x"}]}', "last"),
        (v1.KrakenV1(), KRAKEN_V1_TICKER.replace(b"11493,16267", b'11493,"16267"'), "'t'"),
        (v1.KrakenV1(), KRAKEN_V1_TICKER.replace(b'"0.00398963"', b"0.00398963"), "c[1]"),
        (v1.KrakenV1(), KRAKEN_V1_TICKER.replace(b',"5505.00000"]', b"]"), "'l' must"),
    ],
)  # fmt: skip
def test_a_bad_ticker_is_a_decode_error_naming_the_field(codec, payload, reason):
    evs = codec.decode(1, 2, "text", "x", payload)
    err = evs[-1]
    assert type(err) is DecodeError and reason in err.reason, evs
    assert all(type(e) in (DecodeError, StreamSequence) for e in evs)


# =============================================================== simulators and streams


def test_ticker_channels_name_each_venues_streams():
    assert Okx().streams(["btc-usdt"], ["tickers"]) == ["tickers:BTC-USDT"]
    assert Okx().streams(["BTC-USDT"], ["ticker"]) == ["tickers:BTC-USDT"]
    assert BybitLinear().streams(["btcusdt"], ["ticker"]) == ["tickers.BTCUSDT"]
    assert CoinbaseExchange().streams(["BTC-USD"], ["ticker"]) == ["ticker:BTC-USD"]
    assert CoinbaseAdvanced().streams(["BTC-USD"], ["ticker"]) == ["ticker:BTC-USD"]


@pytest.mark.parametrize(
    ("venue", "channels", "symbol"),
    [
        # one venue's capture in the default suite (every venue's encode→decode round trip is
        # there too); all three in the slow profile
        ("okx", "books,trades,tickers", "BTC-USDT"),
        pytest.param("bybit-linear", "depth,trade,ticker", "BTCUSDT", marks=pytest.mark.slow),
        pytest.param(
            "coinbase", "level2_batch,matches,heartbeat,ticker", "BTC-USD", marks=pytest.mark.slow
        ),
    ],
)
def test_engine_run_sim_captures_each_venues_tickers(tmp_path, venue, channels, symbol):
    out = tmp_path / "j"
    cmd = [sys.executable, "-m", "engine.cli", "run", "--exchange", venue, "--sim", "--channels",
           channels, "--symbols", symbol, "--duration", "2.5", "--no-dashboard", "--out", str(out)]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    pipe = build_pipeline(venue)
    tickers = []  # full tickers: the venue's own, and Bybit's deltas as the pipeline merged them
    for f in JournalReader(out).frames():
        outs = pipe.feed(f.seq, f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
        if f.dir == "in" and f.kind == "text":
            evs = pipe.codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload)
            tickers += [ev for ev in evs if type(ev) is Ticker24h and not ev.partial]
        tickers += [o for _, o in outs if type(o) is Ticker24h]
    assert len(tickers) >= 2 and {t.symbol for t in tickers} == {symbol}
    for t in tickers:  # the model's day: a last price inside the day's range, a two-sided book
        assert t.low_price <= t.last_price <= t.high_price and t.bid_price < t.ask_price
        assert t.vwap is None and t.count is None  # not sent by these venues
    chk = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(out), "--check"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert chk.returncode == 0, chk.stdout[-2000:] + chk.stderr[-2000:]


KRAKEN_TICKER = (
    b'{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":63428.1,'
    b'"bid_qty":0.25,"ask":63428.2,"ask_qty":1.5,"last":63428.2,"volume":1234.56789012,'
    b'"vwap":63012.7,"low":62000.0,"high":64000.0,"change":-120.5,"change_pct":-0.19}]}'
)
TICKER_FRAMES = (
    [(Okx(), p) for p in frames_of(OKX_RAW) if b'"channel":"tickers"' in p and b'"data"' in p][:4]
    + [(BybitSpot(), SPOT_SNAPSHOT), (BybitLinear(), LINEAR_SNAPSHOT),
       (BybitLinear(), LINEAR_DELTA), (KrakenV2(), KRAKEN_TICKER),
       (v1.KrakenV1(), KRAKEN_V1_TICKER)]
    + [(CoinbaseExchange(), f.payload) for f in JournalReader(COINBASE).frames()
       if b'"type":"ticker"' in f.payload][:3]
)  # fmt: skip
OK = (Ticker24h, BookTicker, StreamSequence, DecodeError)


@given(st.sampled_from(TICKER_FRAMES), st.data())
def test_mutated_tickers_never_raise(frame, data):
    codec, payload = frame
    f = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        f[data.draw(st.integers(0, len(f) - 1))] = data.draw(st.integers(0, 255))
    evs = codec.decode(1, 2, "text", "x", bytes(f))
    assert evs and all(type(e) in OK for e in evs)


@given(st.sampled_from(TICKER_FRAMES), st.data())
def test_a_ticker_field_deleted_or_retyped_is_a_ticker_or_a_decode_error(frame, data):
    codec, payload = frame
    msg = json.loads(payload)
    if isinstance(msg, list):  # Kraken v1: [channelID, ticker, "ticker", pair]
        item = msg[1]
    else:
        item = msg["data"][0] if isinstance(msg.get("data"), list) else msg.get("data", msg)
    key = data.draw(st.sampled_from(sorted(item)))
    new = data.draw(st.sampled_from([None, 1, -1, "", "x", [], {}, True, "1e400", "-0.5"]))
    if new is None:
        del item[key]
    else:
        item[key] = new
    evs = codec.decode(1, 2, "text", "x", json.dumps(msg).encode())
    assert evs and all(type(e) in OK for e in evs)
    for e in evs:  # whatever decodes is exact: never a float's rounding
        if type(e) is Ticker24h:
            assert all(type(v) is int for v in values(e).values() if v is not None)
