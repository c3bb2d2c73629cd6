"""Bybit v5 codec: documented frames decode to the right events, encoder and decoder round-trip,
bad input is a DecodeError (never an exception), and what a client sends has Bybit's shape.

No real v5 recording exists here: the frames below are written by hand in exactly the shapes of
Bybit's v5 public WebSocket documentation (orderbook, publicTrade, subscribe/ping replies).
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import num
from engine.codecs.bybit import (
    BybitInverse,
    BybitLinear,
    BybitSpot,
    book_frame,
    pong_frame,
    reply_frame,
    trades_frame,
)
from engine.codecs.registry import get_codec
from engine.events import (
    BUY,
    SELL,
    BookSnapshot,
    DecodeError,
    DepthDiff,
    Heartbeat,
    SubscriptionAck,
    SubscriptionError,
    Trade,
)

P = num.parse
URL = "wss://stream.bybit.com/v5/public/spot"

SNAPSHOT = (
    b'{"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1672304484978,"data":{"s":"BTCUSDT",'
    b'"b":[["16493.50","0.006"],["16493.00","0.100"]],"a":[["16611.00","0.029"],["16612.00","0.213"]],'
    b'"u":18521288,"seq":7961638724},"cts":1672304484976}'
)
DELTA = (
    b'{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1687940967466,"data":{"s":"BTCUSDT",'
    b'"b":[["30247.20","30.028"],["30245.40","0.224"],["30242.10","0"]],"a":[["30248.70","0"]],'
    b'"u":18521289,"seq":7961638725},"cts":1687940967464}'
)
# spot: decimal trade ids; linear/inverse: UUIDs
SPOT_TRADE = (
    b'{"topic":"publicTrade.BTCUSDT","ts":1672304486868,"type":"snapshot","data":['
    b'{"i":"2290000000061666327","T":1672304486865,"p":"16578.50","v":"0.001","S":"Buy","s":"BTCUSDT","BT":false},'
    b'{"i":"2290000000061666328","T":1672304486866,"p":"16578.00","v":"0.250","S":"Sell","s":"BTCUSDT","BT":false}]}'
)
LINEAR_TRADE = (
    b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":[{"T":1672304486865,'
    b'"s":"BTCUSDT","S":"Sell","v":"0.001","p":"16578.50","L":"PlusTick",'
    b'"i":"20f43950-d8dd-5b31-9112-a178eb6023af","BT":false}]}'
)
SUB_OK = b'{"success":true,"ret_msg":"","conn_id":"2324d924-aa4d-45b0-a858-7b8be29ab52b","req_id":"10001","op":"subscribe"}'
SUB_FAIL = (
    b'{"success":false,"ret_msg":"error:handler not found,topic:orderbook.40.BTCUSDT",'
    b'"conn_id":"2324d924-aa4d-45b0-a858-7b8be29ab52b","req_id":"","op":"subscribe"}'
)
SPOT_PONG = b'{"success":true,"ret_msg":"pong","conn_id":"0970e817-426e-429a-a679-ff7f55e0b16a","op":"ping"}'
LINEAR_PONG = (
    b'{"req_id":"100001","op":"pong","args":["1675418560633"],"conn_id":"cfcb4ocsvfriu23r3er0-1b"}'
)


def dec(payload, kind="text", codec=None):
    return (codec or BybitSpot()).decode(7, 99, kind, URL, payload)


def test_snapshot_and_delta_as_documented():
    (s,) = dec(SNAPSHOT)
    assert s == BookSnapshot(
        7, 99, "BTCUSDT", 18521288,
        [(P("16493.50"), P("0.006")), (P("16493.00"), P("0.100"))],
        [(P("16611.00"), P("0.029")), (P("16612.00"), P("0.213"))],
        50, "stream", 1672304484978, 1672304484976,
    )  # fmt: skip
    (d,) = dec(DELTA)
    assert d == DepthDiff(
        7, 99, "BTCUSDT", 18521289, 18521289, None, 1687940967466, 1687940967464,
        [(P("30247.20"), P("30.028")), (P("30245.40"), P("0.224")), (P("30242.10"), 0)],
        [(P("30248.70"), 0)],
    )  # fmt: skip
    assert d.checksum is None  # Bybit sends no book checksum


def test_depth_one_snapshot_and_a_frame_without_cts():
    f = b'{"topic":"orderbook.1.ETHUSDT","type":"snapshot","ts":5,"data":{"s":"ETHUSDT","b":[["1.5","2"]],"a":[],"u":1,"seq":3}}'
    (s,) = dec(f)
    assert (s.depth, s.last_id, s.txn_ms, s.bids, s.asks) == (1, 1, None, [(P("1.5"), P("2"))], [])


def test_trades_map_the_taker_side_and_keep_spot_ids():
    a, b = dec(SPOT_TRADE)
    assert a == Trade(
        7, 99, "BTCUSDT", 2290000000061666327, P("16578.50"), P("0.001"), BUY,
        1672304486868, 1672304486865, 2290000000061666327, 2290000000061666327, False,
    )  # fmt: skip
    assert (b.side, b.trade_id, b.qty) == (SELL, 2290000000061666328, P("0.250"))
    (t,) = dec(LINEAR_TRADE, codec=BybitLinear())
    assert (t.side, t.trade_id, t.first_id, t.price) == (SELL, 0, 0, P("16578.50"))  # UUID: no id


def test_control_replies_and_pongs():
    assert dec(SUB_OK) == [SubscriptionAck(7, 99, 10001, None)]
    (e,) = dec(SUB_FAIL)
    assert e == SubscriptionError(
        7, 99, None, 0, "error:handler not found,topic:orderbook.40.BTCUSDT"
    )
    assert dec(SPOT_PONG) == [Heartbeat(7, 99, "pong", None)]
    assert dec(LINEAR_PONG, codec=BybitLinear()) == [Heartbeat(7, 99, "pong", 1675418560633)]
    unsub = b'{"success":true,"ret_msg":"","conn_id":"x","req_id":"abc","op":"unsubscribe"}'
    assert dec(unsub) == [SubscriptionAck(7, 99, "abc", None)]


@pytest.mark.parametrize(
    "payload,reason",
    [
        (b"not json", "invalid JSON"),
        (b"[1,2]", "expected a JSON object"),
        (b'{"topic":"kline.1.BTCUSDT","data":{}}', "unknown topic 'kline.1.BTCUSDT'"),
        (b'{"topic":"tickers.BTCUSDT","data":{}}', "whose symbol is the topic's"),
        (b'{"foo":1}', "unknown message"),
        (SNAPSHOT.replace(b'"16493.50"', b'"16493.5x"'), "b[0] price"),
        (SNAPSHOT.replace(b'"0.006"', b'"-0.006"'), "b[0] qty: negative"),
        (SNAPSHOT.replace(b'"u":18521288', b'"u":-1'), "u"),
        (SNAPSHOT.replace(b'"type":"snapshot"', b'"type":"partial"'), "unknown type 'partial'"),
        (SNAPSHOT.replace(b'"s":"BTCUSDT"', b'"s":"ETHUSDT"'), "not the topic's symbol"),
        (
            SNAPSHOT.replace(b"orderbook.50.", b"orderbook.x."),
            "expected orderbook.<depth>.<symbol>",
        ),
        (SPOT_TRADE.replace(b'"S":"Buy"', b'"S":"buy"'), "neither Buy nor Sell"),
        (SPOT_TRADE.replace(b'"p":"16578.50"', b'"p":16578.5'), "data"),
        (SUB_OK.replace(b'"op":"subscribe"', b'"op":"auth"'), "unknown op 'auth'"),
        (SUB_OK.replace(b'"success":true,', b""), "without 'success'"),
    ],
)
def test_bad_frames_are_decode_errors_that_say_where(payload, reason):
    (e,) = dec(payload)
    assert isinstance(e, DecodeError) and reason in e.reason, e.reason
    assert e.excerpt == payload[:200] and e.source == URL


def test_rest_bodies_are_not_decoded_and_say_why():
    (e,) = dec(b'{"retCode":0,"result":{}}', kind="rest")
    assert isinstance(e, DecodeError) and "in-stream snapshots" in e.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.sampled_from([SNAPSHOT, DELTA, SPOT_TRADE, SUB_OK]).flatmap(
    lambda f: st.integers(0, len(f) - 1).flatmap(
        lambda i: st.binary(min_size=1, max_size=3).map(lambda b: f[:i] + b + f[i + 1 :])
    )
))  # fmt: skip
def test_garbage_and_mutations_never_raise(payload):
    for codec in (BybitSpot(), BybitLinear()):
        evs = codec.decode(1, 2, "text", URL, payload)
        assert isinstance(evs, list)
        assert all(not isinstance(e, DecodeError) or e.reason for e in evs)


# --------------------------------------------------------------------------- round trips

DEC = st.integers(0, 8)


@st.composite
def book_events(draw):
    pd, qd = draw(DEC), draw(DEC)
    px = st.integers(1, 10**7).map(lambda v: v * 10 ** (num.SCALE - pd))
    qty = st.integers(0, 10**7).map(lambda v: v * 10 ** (num.SCALE - qd))
    side = st.lists(st.tuples(px, qty), max_size=6)
    sym = draw(st.sampled_from(["BTCUSDT", "ETHUSDC", "1000PEPEUSDT", "BTCUSD"]))
    u = draw(st.integers(0, 2**63 - 1))
    ts = draw(st.none() | st.integers(0, 2**45))
    cts = draw(st.none() | st.integers(0, 2**45))
    depth = draw(st.sampled_from([1, 50, 200, 1000]))
    if draw(st.booleans()):
        ev = BookSnapshot(3, 4, sym, u, draw(side), draw(side), depth, "stream", ts, cts)
    else:
        ev = DepthDiff(3, 4, sym, u, u, None, ts, cts, draw(side), draw(side))
    return ev, depth, pd, qd


@settings(max_examples=200, deadline=None)
@given(book_events(), st.integers(0, 2**40))
def test_book_frames_round_trip(case, cross_seq):
    ev, depth, pd, qd = case
    frame = book_frame(ev, depth, pd, qd, cross_seq)
    assert BybitSpot().decode(3, 4, "text", URL, frame) == [ev]
    assert BybitInverse().decode(3, 4, "text", URL, frame) == [ev]


@st.composite
def trade_lists(draw):
    pd, qd = draw(DEC), draw(DEC)
    sym = draw(st.sampled_from(["BTCUSDT", "XRPUSDT"]))
    ts = draw(st.integers(0, 2**45))
    out = []
    for _ in range(draw(st.integers(1, 5))):
        tid = draw(st.sampled_from([0]) | st.integers(1, 2**63 - 1))
        out.append(
            Trade(
                3, 4, sym, tid,
                draw(st.integers(1, 10**9)) * 10 ** (num.SCALE - pd),
                draw(st.integers(1, 10**9)) * 10 ** (num.SCALE - qd),
                draw(st.sampled_from([BUY, SELL])), ts, draw(st.integers(0, 2**45)), tid, tid, False,
            )
        )  # fmt: skip
    return out, pd, qd, ts


@settings(max_examples=200, deadline=None)
@given(trade_lists())
def test_trade_frames_round_trip(case):
    trades, pd, qd, ts = case
    assert BybitLinear().decode(3, 4, "text", URL, trades_frame(trades, pd, qd, ts)) == trades


def test_replies_round_trip():
    c = BybitSpot()
    assert c.decode(1, 2, "text", URL, reply_frame("subscribe", 5, True)) == [
        SubscriptionAck(1, 2, 5, None)
    ]
    assert c.decode(1, 2, "text", URL, reply_frame("subscribe", None, False, "args size >10")) == [
        SubscriptionError(1, 2, None, 0, "args size >10")
    ]
    assert c.decode(1, 2, "text", URL, pong_frame("spot", 9, 5)) == [Heartbeat(1, 2, "pong", None)]
    assert c.decode(1, 2, "text", URL, pong_frame("linear", 9, 5)) == [Heartbeat(1, 2, "pong", 5)]


def test_encoders_refuse_values_they_cannot_render_exactly():
    ev = DepthDiff(1, 2, "BTCUSDT", 5, 5, None, None, None, [(P("1.25"), P("1"))], [])
    with pytest.raises(ValueError):
        book_frame(ev, 50, 1, 0)
    t = Trade(1, 2, "BTCUSDT", 1, P("1"), P("1"), BUY, None, None, 1, 1)
    with pytest.raises(ValueError, match="txn_ms"):
        trades_frame([t], 2, 2, 0)


# --------------------------------------------------------------------------- what a client sends


def test_topics_subscribe_chunks_keepalive_and_resync():
    c = get_codec("bybit")
    topics = c.streams(["btcusdt", "ETHUSDT"], ["depth", "trade", "depth50"])
    assert topics == [
        "orderbook.50.BTCUSDT", "orderbook.50.ETHUSDT", "publicTrade.BTCUSDT",
        "publicTrade.ETHUSDT",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="one order book depth per symbol"):
        c.streams(["BTCUSDT"], ["depth", "depth1"])  # two u counters, one book: refused
    assert c.streams(["BTCUSDT"], ["depth1"]) == ["orderbook.1.BTCUSDT"]
    assert [orjson.loads(m) for m in c.subscribe(topics[:2], 3)] == [
        {"req_id": "3", "op": "subscribe", "args": topics[:2]}
    ]
    many = c.streams([f"S{i}USDT" for i in range(23)], ["depth"])
    msgs = [orjson.loads(m) for m in c.subscribe(many, 10)]
    assert [len(m["args"]) for m in msgs] == [10, 10, 3]  # spot: at most 10 args a request
    assert [m["req_id"] for m in msgs] == ["10", "11", "12"]
    assert sum((m["args"] for m in msgs), []) == many
    assert c.limits.max_per_subscribe == 10 and not c.limits.streams_in_url
    assert [orjson.loads(m)["op"] for m in c.unsubscribe(["publicTrade.BTCUSDT"], 4)] == [
        "unsubscribe"
    ]
    assert orjson.loads(c.keepalive.payload) == {"op": "ping"} and c.keepalive.interval_s == 20
    with pytest.raises(ValueError, match="unknown Bybit channel"):
        c.streams(["BTCUSDT"], ["kline"])
    # a lost delta: resubscribe the symbol's book topics only (a fresh snapshot follows)
    plan = c.resync("ETHUSDT", topics, c.rest_base, 50, 20)
    assert plan.streams == ("orderbook.50.ETHUSDT",)
    assert [orjson.loads(m) for m in plan.unsubscribe + plan.subscribe] == [
        {"req_id": "40", "op": "unsubscribe", "args": list(plan.streams)},
        {"req_id": "41", "op": "subscribe", "args": list(plan.streams)},
    ]
    assert c.resync("XRPUSDT", topics, c.rest_base, 50, 1) is None
    assert c.snapshot_url(c.rest_base, "BTCUSDT", 50) is None  # nothing to verify against


def test_venue_variants():
    for name, cat in (("bybit", "spot"), ("bybit-linear", "linear"), ("bybit-inverse", "inverse")):
        c = get_codec(name)
        assert c.name == name and c.ws_base.endswith(f"/v5/public/{cat}")
        assert c.ws_url(c.ws_base, ["orderbook.50.BTCUSDT"]) == c.ws_base
        assert c.sync_rule == "bybit"
    assert get_codec("bybit").normalized("BTCUSDT") == "BTC-USDT"
    assert get_codec("bybit-inverse").normalized("BTCUSD") == "BTC-USD-PERP"
