"""Binance codecs against real captures (fixtures/journals, converted from cryptofeed) and edge cases."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import orjson
import pytest

from engine import num
from engine.codecs.base import Codec, SyncRule
from engine.codecs.binance import BinanceFutures, BinanceSpot
from engine.codecs.registry import get_codec
from engine.events import (
    BookSnapshot,
    BookTicker,
    DecodeError,
    DepthDiff,
    Kline,
    ServerShutdown,
    SubscriptionAck,
    SubscriptionError,
    Trade,
)
from engine.journal.reader import JournalReader

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "journals"
SPOT_URL = "wss://stream.binance.com:9443/stream?streams=bnbbtc@depth@100ms"


def decode_journal(codec, name):
    out = []
    for f in JournalReader(FIX / name).frames():
        if f.dir == "in" and f.kind in ("text", "rest"):
            out.append((f, codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload)))
    return out


def one(codec, payload, source=SPOT_URL, kind="text"):
    if isinstance(payload, dict):
        payload = orjson.dumps(payload)
    evs = codec.decode(7, 99, kind, source, payload)
    assert len(evs) == 1
    return evs[0]


@pytest.mark.parametrize(
    "exchange,journal,expected",
    [
        (
            "binance",
            "binance-spot",
            {"DepthDiff": 177, "BookTicker": 84, "BookSnapshot": 4, "Trade": 2, "Kline": 2},
        ),
        (
            "binance-futures",
            "binance-futures",
            {"DepthDiff": 764, "BookTicker": 613, "BookSnapshot": 4, "Trade": 91, "Kline": 67},
        ),
    ],
)
def test_every_real_frame_decodes(exchange, journal, expected):
    codec = get_codec(exchange)
    counts = Counter()
    for f, evs in decode_journal(codec, journal):
        assert len(evs) == 1
        ev = evs[0]
        assert not isinstance(ev, DecodeError), ev
        assert (ev.seq, ev.recv_ns) == (f.seq, f.recv_ns)
        counts[type(ev).__name__] += 1
    assert counts == Counter(expected)


@pytest.mark.parametrize(
    "exchange,journal", [("binance", "binance-spot"), ("binance-futures", "binance-futures")]
)
def test_levels_render_back_to_the_exchange_strings(exchange, journal):
    """Exactness: every price/qty string renders back byte for byte from its units."""
    codec = get_codec(exchange)
    checked = 0
    for f, (ev,) in decode_journal(codec, journal):
        if not isinstance(ev, DepthDiff | BookSnapshot):
            continue
        body = orjson.loads(f.payload)
        data = body.get("data", body)
        raw_b = data.get("b", data.get("bids"))
        raw_a = data.get("a", data.get("asks"))
        for raw, got in ((raw_b, ev.bids), (raw_a, ev.asks)):
            assert len(raw) == len(got)
            for (ps, qs), (p, q) in zip(raw, got, strict=True):
                assert num.render(p, num.decimals_of(ps)) == ps
                assert num.render(q, num.decimals_of(qs)) == qs
                checked += 1
    assert checked > 1000


def test_spot_values_and_snapshot_chain():
    codec = BinanceSpot()
    evs = [e for _, (e,) in decode_journal(codec, "binance-spot")]
    d = next(e for e in evs if isinstance(e, DepthDiff))
    assert (d.symbol, d.first_id, d.last_id, d.prev_id, d.exch_ms, d.txn_ms) == (
        "NKNUSDT",
        499869750,
        499869752,
        None,
        1633998512068,
        None,
    )
    assert d.bids[0] == (num.parse("0.3513"), num.parse("6195")) and d.asks == []
    snap = next(e for e in evs if isinstance(e, BookSnapshot))
    assert (snap.symbol, snap.last_id, snap.depth, snap.origin) == (
        "NKNUSDT",
        499869752,
        1000,
        "rest",
    )
    assert snap.bids[0] == (num.parse("0.3521"), num.parse("672"))
    bt = next(e for e in evs if isinstance(e, BookTicker))
    assert (bt.symbol, bt.update_id, bt.bid_price, bt.exch_ms) == (
        "NKNUSDT",
        499869768,
        num.parse("0.3521"),
        None,
    )
    tr = next(e for e in evs if isinstance(e, Trade))
    assert tr.agg and tr.side == "buy" and tr.first_id == tr.last_id == 19862790
    k = next(e for e in evs if isinstance(e, Kline))
    assert (k.interval, k.closed, k.trades, k.open) == ("1m", False, 30, num.parse("0.3527"))


def test_futures_values():
    codec = BinanceFutures()
    evs = [e for _, (e,) in decode_journal(codec, "binance-futures")]
    d = next(e for e in evs if isinstance(e, DepthDiff))
    assert (d.symbol, d.prev_id, d.txn_ms) == ("SUSHIUSDT", 600859598061, 1626992741024)
    assert d.bids[0] == (num.parse("7.5040"), num.parse("813"))
    bt = next(e for e in evs if isinstance(e, BookTicker))
    assert (bt.exch_ms, bt.txn_ms) == (1626992741017, 1626992741012)
    snap = next(e for e in evs if isinstance(e, BookSnapshot))
    assert (snap.exch_ms, snap.txn_ms, snap.origin) == (1626992741264, 1626992741261, "rest")


TRADE_NEW = {
    "e": "trade",
    "E": 1672515782136,
    "s": "BNBBTC",
    "t": 12345,
    "p": "0.001",
    "q": "100",
    "T": 1672515782136,
    "m": True,
    "M": True,
}


def test_trade_old_shape_with_b_a_and_new_shape_decode_alike():
    codec = BinanceSpot()
    new = one(codec, TRADE_NEW)
    old = one(codec, {**TRADE_NEW, "b": 88, "a": 50})
    wrapped = one(codec, {"stream": "bnbbtc@trade", "data": {**TRADE_NEW, "b": 88, "a": 50}})
    assert new == old == wrapped
    assert new == Trade(
        7,
        99,
        "BNBBTC",
        12345,
        num.parse("0.001"),
        100 * num.ONE,
        "sell",
        1672515782136,
        1672515782136,
        12345,
        12345,
        False,
    )


PARTIAL = {"lastUpdateId": 160, "bids": [["0.0024", "10"]], "asks": [["0.0026", "100"]]}


def test_partial_depth_symbol_from_stream_name_or_url():
    codec = BinanceSpot()
    a = one(codec, {"stream": "bnbbtc@depth10@100ms", "data": PARTIAL})
    b = one(codec, PARTIAL, source="wss://stream.binance.com:9443/ws/bnbbtc@depth10@100ms")
    assert (
        a
        == b
        == BookSnapshot(
            7, 99, "BNBBTC", 160, [(num.parse("0.0024"), 10 * num.ONE)], [(num.parse("0.0026"), 100 * num.ONE)], 10, "stream"
        )
    )
    err = one(codec, PARTIAL, source="wss://stream.binance.com:9443/stream?streams=x")
    assert isinstance(err, DecodeError) and "without a symbol" in err.reason


def test_futures_partial_depth_is_a_snapshot():
    codec = BinanceFutures()
    data = {
        "e": "depthUpdate",
        "E": 5,
        "T": 4,
        "s": "BTCUSDT",
        "U": 1,
        "u": 9,
        "pu": 0,
        "b": [["7.6110", "2"]],
        "a": [],
    }
    ev = one(codec, {"stream": "btcusdt@depth5@100ms", "data": data})
    assert ev == BookSnapshot(
        7, 99, "BTCUSDT", 9, [(num.parse("7.6110"), 2 * num.ONE)], [], 5, "stream", 5, 4
    )


def test_control_shutdown_and_unknown():
    codec = BinanceSpot()
    assert one(codec, b'{"result":null,"id":1}') == SubscriptionAck(7, 99, 1, None)
    assert one(codec, b'{"result":["btcusdt@aggTrade"],"id":3}') == SubscriptionAck(
        7, 99, 3, ["btcusdt@aggTrade"]
    )
    assert one(
        codec, b'{"error":{"code":2,"msg":"Invalid request"},"id":null}'
    ) == SubscriptionError(7, 99, None, 2, "Invalid request")
    assert one(codec, b'{"e":"serverShutdown","E":1700000000000}') == ServerShutdown(
        7, 99, 1700000000000
    )
    u = one(codec, b'{"e":"markPriceUpdate","E":1,"s":"BTCUSDT"}')
    assert isinstance(u, DecodeError) and u.reason == "unknown event type 'markPriceUpdate'"
    u2 = one(codec, {"stream": "btcusdt@markPrice", "data": {"e": "markPriceUpdate"}})
    assert isinstance(u2, DecodeError) and "unknown event type 'markPriceUpdate'" in u2.reason


DEPTH = {
    "e": "depthUpdate",
    "E": 1,
    "s": "BNBBTC",
    "U": 157,
    "u": 160,
    "b": [["0.0024", "10"]],
    "a": [["0.0026", "100"]],
}


def _depth(**over):
    return {"stream": "bnbbtc@depth@100ms", "data": {**DEPTH, **over}}


@pytest.mark.parametrize(
    "payload,reason",
    [
        (_depth(u="160"), r"Expected `int`, got `str` - at `\$.u`"),
        (_depth(b=[["0.0024", 10]]), r"Expected `str`, got `int`"),
        (
            {"stream": "bnbbtc@depth@100ms", "data": {k: v for k, v in DEPTH.items() if k != "U"}},
            r"missing required field `U`",
        ),
        (_depth(b=[["0.0024", "1e5"]]), r"b\[0\] qty: not a decimal number: '1e5'"),
        (_depth(b=[["0x10", "1"]]), r"b\[0\] price: not a decimal number"),
        (_depth(a=[["0.0026", "-5"]]), r"a\[0\] qty: negative value '-5'"),
        (
            _depth(a=[["0.1234567890123456789", "1"]]),
            r"a\[0\] price: .* more than 18 significant decimals",
        ),
        (_depth(a=[["1" * 21, "1"]]), r"a\[0\] price: .* out of range"),
        (_depth(u=2**63), r"<= 9223372036854775807 - at `\$.u`"),
        (_depth(U=-1), r">= 0 - at `\$.U`"),
        (_depth(U=200), r"U=200 > last u=160"),
        (_depth(e="depthUpdat"), r"unknown event type 'depthUpdat'"),
        (b'{"stream":"bnbbtc@depth@100ms","data":{"e":"depthUp', r"invalid JSON"),
        (b"\x00\xff garbage", r"invalid JSON"),
        (b"[1,2]", r"expected a JSON object"),
        (b'{"hello":1}', r"unknown message"),
        ({"stream": 5, "data": {}}, r"'stream' must be a string"),
    ],
)
def test_invalid_input_names_field_and_problem(payload, reason):
    ev = one(BinanceSpot(), payload)
    assert isinstance(ev, DecodeError)
    assert re.search(reason, ev.reason), ev.reason
    assert (
        ev.source == SPOT_URL
        and ev.excerpt == (payload if isinstance(payload, bytes) else orjson.dumps(payload))[:200]
    )


def test_trailing_zero_decimals_beyond_18_are_exact():
    ev = one(BinanceSpot(), _depth(b=[["0.000022880", "1.0000000000000000000"]]))
    assert ev.bids == [(num.parse("0.00002288"), num.ONE)]


def test_more_than_8_decimals_decode_exactly():
    ev = one(BinanceSpot(), _depth(b=[["0.0000000001", "0.000000000000000001"]]))
    assert ev.bids == [(num.ONE // 10**10, 1)]


def test_futures_depth_requires_pu():
    ev = one(BinanceFutures(), _depth(T=1))
    assert isinstance(ev, DecodeError) and "'pu'" in ev.reason


def test_whitespace_between_tokens_changes_no_event():
    """Spaced real frames (the C scanner declines them) decode to the very same events."""
    for exchange, journal in (("binance", "binance-spot"), ("binance-futures", "binance-futures")):
        codec = get_codec(exchange)
        for f, (ev,) in decode_journal(codec, journal)[:300]:
            spaced = f.payload.replace(b",", b", ")
            assert codec.decode(f.seq, f.recv_ns, f.kind, f.source, spaced) == [ev]


def test_rest_errors_and_other_kinds():
    codec = BinanceSpot()
    url = "https://api.binance.com/api/v3/depth?symbol=NOPE&limit=100"
    ev = one(codec, b'{"code":-1121,"msg":"Invalid symbol."}', source=url, kind="rest")
    assert isinstance(ev, DecodeError) and ev.reason == "REST error -1121: Invalid symbol."
    ev = one(codec, b"{}", source="https://api.binance.com/api/v3/exchangeInfo", kind="rest")
    assert isinstance(ev, DecodeError) and "unsupported REST endpoint" in ev.reason
    ev = one(codec, b"x", kind="open")
    assert isinstance(ev, DecodeError) and "not 'open'" in ev.reason


def test_outbound_messages_and_urls():
    spot, fut = BinanceSpot(), BinanceFutures()
    s = spot.streams(["BTCUSDT", "ethusdt"], ["depth", "trade", "kline_1m", "depth5"])
    assert s == [
        "btcusdt@depth@100ms",
        "ethusdt@depth@100ms",
        "btcusdt@trade",
        "ethusdt@trade",
        "btcusdt@kline_1m",
        "ethusdt@kline_1m",
        "btcusdt@depth5@100ms",
        "ethusdt@depth5@100ms",
    ]
    with pytest.raises(ValueError, match="valid: trade"):
        spot.streams(["BTCUSDT"], ["nope"])
    assert spot.ws_url("wss://stream.binance.com:9443/", s[:2]) == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms"
    )
    [sub] = spot.subscribe(s[:1], 4)
    assert orjson.loads(sub) == {
        "method": "SUBSCRIBE",
        "params": s[:1],
        "id": 4,
    }
    assert [orjson.loads(m)["method"] for m in spot.unsubscribe(s[:1], 5)] == ["UNSUBSCRIBE"]
    assert spot.snapshot_url("https://api.binance.com", "btcusdt", 1000) == (
        "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000"
    )
    assert fut.snapshot_url("https://fapi.binance.com", "BTCUSDT", 500) == (
        "https://fapi.binance.com/fapi/v1/depth?symbol=BTCUSDT&limit=500"
    )
    fs = fut.streams(
        ["BTCUSDT"], ["depth", "bookTicker", "trade", "aggTrade", "kline_1m", "ticker"]
    )
    assert fut.streams_by_path(fs + ["btcusdt@markPrice@1s"]) == {
        "/public": ["btcusdt@depth@100ms", "btcusdt@bookTicker", "btcusdt@trade"],
        "/market": [
            "btcusdt@aggTrade",
            "btcusdt@kline_1m",
            "btcusdt@ticker",
            "btcusdt@markPrice@1s",
        ],
    }
    assert fut.ws_url("wss://fstream.binance.com", fs[:2]) == (
        "wss://fstream.binance.com/public/stream?streams=btcusdt@depth@100ms/btcusdt@bookTicker"
    )
    with pytest.raises(ValueError, match="streams_by_path"):
        fut.ws_url("wss://fstream.binance.com", fs)
    # a base with an explicit path is taken as is (the simulator, or the old /stream endpoint)
    assert fut.ws_url("wss://x/market", fs[3:4]) == "wss://x/market/stream?streams=btcusdt@aggTrade"


def test_registry():
    for name, cls, rule in (
        ("sim", BinanceSpot, SyncRule.BINANCE_SPOT),
        ("binance", BinanceSpot, SyncRule.BINANCE_SPOT),
        ("binance-futures", BinanceFutures, SyncRule.BINANCE_FUTURES),
    ):
        c = get_codec(name)
        assert isinstance(c, Codec) and type(c) is cls and c.name == name and c.sync_rule == rule
    with pytest.raises(ValueError, match="binance, binance-delivery, binance-futures"):
        get_codec("mtgox")


def test_a_24h_ticker_decodes_every_field_best_bid_and_ask_sizes_included():
    """Binance's documented 24hrTicker (``B``/``A`` are the best bid/ask quantities)."""
    from engine import num
    from engine.events import Ticker24h

    d = {
        "e": "24hrTicker", "E": 1672515782136, "s": "BNBBTC", "p": "-0.0015", "P": "250.00",
        "w": "0.0018", "x": "0.0009", "c": "0.0025", "Q": "10", "b": "0.0024", "B": "10",
        "a": "0.0026", "A": "100", "o": "0.0010", "h": "0.0025", "l": "0.0010", "v": "10000",
        "q": "18", "O": 0, "C": 86400000, "F": 0, "L": 18150, "n": 18151,
    }  # fmt: skip
    ev = one(BinanceSpot(), {"stream": "bnbbtc@ticker", "data": d})
    assert isinstance(ev, Ticker24h) and not ev.partial
    assert (ev.bid_price, ev.bid_qty, ev.ask_price, ev.ask_qty) == tuple(
        map(num.parse, ("0.0024", "10", "0.0026", "100"))
    )
    assert (ev.price_change, ev.count, ev.last_id) == (-num.parse("0.0015"), 18151, 18150)
