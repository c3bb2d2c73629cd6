"""Kraken codecs (v1 ``kraken-v1``, v2 ``kraken``): the checksum, decoding, and encode ↔ decode.

The checksum is held to protocols.md's vector and to every update of the real
v1 capture (fixtures/kraken, cut from cryptofeed's sample data); each codec's
encoder and decoder are paired by hypothesis (h11 style: encode(events) →
decode → the same events); bad frames are DecodeErrors, never exceptions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import num
from engine.book import Book
from engine.codecs import kraken as v2
from engine.codecs import kraken_v1 as v1
from engine.codecs.base import Codec
from engine.codecs.kraken_book import checksum, checksum_of_levels, normalized
from engine.codecs.registry import get_codec
from engine.events import (
    BookSnapshot,
    BookTicker,
    DecodeError,
    DepthDiff,
    Heartbeat,
    SubscriptionAck,
    SubscriptionError,
    Trade,
)
from engine.journal.reader import JournalReader
from engine.replay.importers import import_cryptofeed

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "kraken"
P = num.parse


def test_checksum_vector_of_protocols_md():
    q = P("0.00000500")
    asks = [(P(f"0.{5005 + 5 * i:05d}"), q) for i in range(10)]
    bid_prices = ["0.05000", "0.04995", "0.04990"] + [f"0.0{4980 - 5 * i}" for i in range(7)]
    bids = [(P(p), q) for p in bid_prices]
    assert checksum_of_levels(bids, asks, 5, 8) == 974947235
    # from a Book, with deeper levels that do not count
    book = Book.from_levels(1, bids + [(P("0.01"), q)], asks + [(P("0.09"), q)])
    assert checksum(book, 5, 8) == 974947235
    assert checksum(book, 6, 8) != 974947235  # the precision is part of the checksum


def _capture_frames():
    for line in (FIX / "KRAKEN.ws.50.0").read_text().splitlines():
        ts, sep, body = line.partition(": ")
        if sep and ts.replace(".", "").isdigit():
            yield body.encode()


def test_checksum_of_every_update_of_the_real_capture():
    """Apply the capture with a plain Book: every update's "c" is our book's checksum."""
    codec = get_codec("kraken-v1")
    books: dict[str, tuple[Book, int, int, int]] = {}
    verified: dict[str, int] = {}
    for seq, payload in enumerate(_capture_frames(), 1):
        for ev in codec.decode(seq, seq, "text", "wss://ws.kraken.com", payload):
            assert not isinstance(ev, DecodeError), ev
            if isinstance(ev, BookSnapshot):
                assert ev.depth == 1000 and ev.checksum is None
                books[ev.symbol] = (
                    Book.from_levels(seq, ev.bids, ev.asks),
                    ev.price_decimals,
                    ev.qty_decimals,
                    ev.depth,
                )
            elif isinstance(ev, DepthDiff):
                book, pd, qd, depth = books[ev.symbol]
                book.apply(ev.bids, ev.asks, seq)
                book.truncate(depth)
                assert ev.checksum is not None
                assert checksum(book, pd, qd) == ev.checksum, (seq, ev.symbol)
                verified[ev.symbol] = verified.get(ev.symbol, 0) + 1
    assert verified == {"SC/EUR": 818, "ETH/CHF": 317, "OCEAN/XBT": 148, "GRT/ETH": 20}
    # the pairs' own precision, read from the strings: 9 decimals fit the number model
    assert {s: b[1:3] for s, b in books.items()} == {
        "SC/EUR": (6, 8),
        "ETH/CHF": (5, 8),
        "OCEAN/XBT": (9, 8),
        "GRT/ETH": (9, 8),
    }


def test_the_committed_journal_is_what_the_importer_makes(tmp_path):
    rep = import_cryptofeed([FIX / "KRAKEN.ws.50.0"], tmp_path / "j")
    assert rep.bad == 0

    def frames(p):
        return [
            (f.seq, f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
            for f in JournalReader(p).frames()
        ]

    assert frames(tmp_path / "j") == frames(FIX / "journal")
    assert JournalReader(tmp_path / "j").metadata["exchange"] == "kraken-v1"


# ----------------------------------------------------------------- v1 decoding details


def dec1(payload, seq=7):
    return list(v1.KrakenV1().decode(seq, 99, "text", "wss://ws.kraken.com", payload))


def test_v1_two_dict_update_republish_and_control_messages():
    frame = (
        b'[1920,{"a":[["0.042990","364630.28272081","1618678145.920470","r"]]},'
        b'{"b":[["0.042990","0.00000000","1618678145.920708"]],"c":"4105471083"},"book-1000","SC/EUR"]'
    )
    (d,) = dec1(frame)
    assert d == DepthDiff(
        7, 99, "SC/EUR", 7, 7, None, 1618678145920, None,
        [(P("0.04299"), 0)], [(P("0.04299"), P("364630.28272081"))], 4105471083,
    )  # fmt: skip
    assert dec1(b'{"event":"heartbeat"}') == [Heartbeat(7, 99, "heartbeat", None)]
    assert dec1(b'{"event":"pong","reqid":3}') == [Heartbeat(7, 99, "pong", None)]
    assert dec1(b'{"event":"systemStatus","status":"online","version":"1.8.3"}') == []
    ack = (
        b'{"channelID":1664,"channelName":"book-1000","event":"subscriptionStatus","pair":'
        b'"WAVES/EUR","status":"subscribed","subscription":{"depth":1000,"name":"book"},"reqid":4}'
    )
    assert dec1(ack) == [SubscriptionAck(7, 99, 4, ["book:WAVES/EUR"])]
    err = v1.encode_status(0, "book", "XBT/USDX", 5, 10, status="error")
    (e,) = dec1(err)
    assert isinstance(e, SubscriptionError) and e.request_id == 5 and "XBT/USDX" in e.msg


def test_v1_trades_side_is_the_taker():
    frame = (
        b'[0,[["5541.20000","0.15850568","1534614057.321597","s","l",""],'
        b'["6060.00000","0.02455000","1534614057.324998","b","l",""]],"trade","XBT/USD"]'
    )
    a, b = dec1(frame, seq=3)
    assert (a.side, b.side) == ("sell", "buy")
    assert (a.trade_id, b.trade_id) == (30000, 30001) and a.price == P("5541.2")
    assert a.exch_ms == 1534614057321


@pytest.mark.parametrize(
    "payload,why",
    [
        (b"not json", "invalid JSON"),
        (b'[1,{"a":[["1.0","2.0"]]},"book-10","X/Y"]', "level is"),
        (b'[1,{"a":[["1.0","2.0","1.0","x"]]},"book-10","X/Y"]', "level is"),
        (b'[1,{"a":[["1.0","-2.0","1.0"]]},"book-10","X/Y"]', "negative"),
        (b'[1,{"a":[["1e5","2.0","1.0"]]},"book-10","X/Y"]', "not a decimal"),
        (b'[1,{"a":[["1.0","2.0","1.0"]],"c":"12x"},"book-10","X/Y"]', "checksum"),
        (b'[1,{"as":[["1.0","2.0","1.0"]],"c":"12"},"book-10","X/Y"]', "snapshot carries no"),
        (b'[1,{"zz":[]},"book-10","X/Y"]', "unknown key"),
        (b'[1,{"a":1},"spread","X/Y"]', "unknown channel"),
        (b'[1,[["1","1","1.0","x","l",""]],"trade","X/Y"]', "side must be"),
        (b'{"event":"wat"}', "unknown event"),
        (b'{"x":1}', "no 'event'"),
        (b"[1,2]", "expected [id"),
        (b"42", "array or object"),
    ],
)
def test_v1_bad_frames_are_decode_errors(payload, why):
    (e,) = dec1(payload)
    assert isinstance(e, DecodeError) and why in e.reason, e.reason
    assert e.excerpt == payload[:200]


def test_outbound_messages_resync_and_normalized_symbols():
    c1, c2 = v1.KrakenV1(), v2.KrakenV2()
    for c in (c1, c2):
        assert isinstance(c, Codec) and c.snapshot_url("https://x", "BTC/USD", 10) is None
        assert not c.limits.streams_in_url and c.keepalive is not None
    streams = c2.streams(["BTC/USD", "ETH/USD"], ["book", "trade"])
    assert streams == ["book:BTC/USD", "book:ETH/USD", "trade:BTC/USD", "trade:ETH/USD"]
    msgs = [json.loads(m) for m in c2.subscribe(streams, 10)]
    assert msgs == [
        {"method": "subscribe", "req_id": 10,
         "params": {"channel": "book", "symbol": ["BTC/USD", "ETH/USD"], "depth": 10, "snapshot": True}},
        {"method": "subscribe", "req_id": 11,
         "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"]}},
    ]  # fmt: skip
    assert [json.loads(m) for m in c2.unsubscribe(["book:BTC/USD"], 3)] == [{
        "method": "unsubscribe", "req_id": 3,
        "params": {"channel": "book", "symbol": ["BTC/USD"], "depth": 10},
    }]  # fmt: skip
    assert [json.loads(m) for m in c1.subscribe(["book:XBT/USD"], 1)] == [{
        "event": "subscribe", "pair": ["XBT/USD"], "reqid": 1,
        "subscription": {"name": "book", "depth": 1000},
    }]  # fmt: skip
    plan = c2.resync("ETH/USD", streams, "", 100, 7)
    assert plan is not None and plan.streams == ("book:ETH/USD",)
    assert [json.loads(m)["method"] for m in plan.unsubscribe + plan.subscribe] == [
        "unsubscribe",
        "subscribe",
    ]
    assert [json.loads(m)["req_id"] for m in plan.unsubscribe + plan.subscribe] == [7, 8]
    assert c2.resync("SOL/USD", streams, "", 100, 1) is None  # no book stream of it here
    assert json.loads(c2.keepalive.payload) == {"method": "ping"}
    assert json.loads(c1.keepalive.payload) == {"event": "ping"}
    with pytest.raises(ValueError, match="unknown Kraken channel"):
        c2.streams(["BTC/USD"], ["depth"])
    assert normalized("XBT/CHF") == "BTC-CHF" and c2.normalized("xdg/usd") == "DOGE-USD"
    assert c1.normalized("XBTUSDT") == "BTC-USDT" and c2.normalized("WHAT") == "WHAT"
    assert c2.ws_url("wss://ws.kraken.com/v2", streams) == "wss://ws.kraken.com/v2"


# ----------------------------------------------------------------- v2 decoding details


def dec2(payload, seq=7):
    return list(v2.KrakenV2().decode(seq, 99, "text", "wss://ws.kraken.com/v2", payload))


def test_v2_numbers_are_exact_tokens_and_precision_comes_from_them():
    frame = (
        b'{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD",'
        b'"bids":[{"price":45283.5,"qty":0.10000000},{"price":45283.4,"qty":1e-05}],'
        b'"asks":[{"price":45285.2,"qty":0.00100000}],"checksum":3310070434,'
        b'"timestamp":"2023-10-06T17:35:55.440295Z"}]}'
    )
    (s,) = dec2(frame)
    assert s.bids == [(P("45283.5"), P("0.1")), (P("45283.4"), P("0.00001"))]
    assert s.asks == [(P("45285.2"), P("0.001"))]
    assert (s.price_decimals, s.qty_decimals, s.depth, s.origin) == (1, 8, 10, "stream")
    assert s.checksum == 3310070434 and s.last_id == 7 and s.exch_ms == 1696613755440
    upd = (
        b'{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":'
        b'[{"price":45283.5,"qty":0}],"asks":[],"checksum":1,"timestamp":"2023-10-06T17:35:56Z"}]}'
    )
    assert dec2(upd) == [
        DepthDiff(7, 99, "BTC/USD", 7, 7, None, 1696613756000, None, [(P("45283.5"), 0)], [], 1)
    ]


def test_v2_control_replies_and_quiet_channels():
    assert dec2(v2.encode_ack("subscribe", "book", "BTC/USD", 3)) == [
        SubscriptionAck(7, 99, 3, ["book:BTC/USD"])
    ]
    (e,) = dec2(v2.encode_ack("subscribe", "book", "XBT/USDX", 4, "Currency pair not supported"))
    assert isinstance(e, SubscriptionError) and e.msg == "Currency pair not supported"
    assert dec2(b'{"channel":"heartbeat"}') == [Heartbeat(7, 99, "heartbeat", None)]
    pong = b'{"method":"pong","req_id":1,"time_in":"x","time_out":"y"}'
    assert dec2(pong) == [Heartbeat(7, 99, "pong", None)]
    for quiet in (
        b'{"channel":"status","type":"update","data":[{"system":"online"}]}',
        b'{"channel":"instrument","type":"snapshot","data":{"pairs":[]}}',
    ):
        assert dec2(quiet) == []


@pytest.mark.parametrize(
    "payload,why",
    [
        (b"[1]", "expected a JSON object"),
        (b'{"channel":"book","type":"update","data":[{"symbol":"X","bids":[{"price":true,"qty":1}]}]}', "expected a number"),
        (b'{"channel":"book","type":"update","data":[{"symbol":"X","bids":[{"price":1,"qty":-1}]}]}', "negative"),
        (b'{"channel":"book","type":"update","data":[{"symbol":"X","bids":[]}]}', "without levels"),
        (b'{"channel":"book","type":"update","data":[{"symbol":"X","bids":[{"price":1,"qty":1}],"checksum":-1}]}', "checksum"),
        (b'{"channel":"book","type":"delta","data":[]}', "snapshot or update"),
        (b'{"channel":"trade","type":"update","data":[{"symbol":"X","side":"up"}]}', "side must"),
        (b'{"channel":"ohlc","type":"update","data":[]}', "unknown channel"),
        (b'{"method":"amend"}', "unknown method"),
        (b'{"hello":1}', "no channel or method"),
    ],
)  # fmt: skip
def test_v2_bad_frames_are_decode_errors(payload, why):
    (e,) = dec2(payload)
    assert isinstance(e, DecodeError) and why in e.reason, e.reason


# ----------------------------------------------------------------- encode → decode, both dialects


@st.composite
def priced_levels(draw, pd: int, qd: int, zero: bool):
    """Distinct prices at ``pd`` decimals, quantities at ``qd`` (0 allowed for updates)."""
    p_unit = 10 ** (num.SCALE - min(pd, num.SCALE))
    q_unit = 10 ** (num.SCALE - min(qd, num.SCALE))
    prices = draw(st.lists(st.integers(1, 10**7), max_size=12, unique=True))
    qmin = 0 if zero else 1
    return [(p * p_unit, draw(st.integers(qmin, 10**9)) * q_unit) for p in prices]


precision = st.tuples(st.integers(0, 8), st.integers(0, 8))
exch_ms = st.integers(1_500_000_000_000, 1_900_000_000_000)
checksums = st.integers(0, 2**32 - 1)


@st.composite
def snapshots(draw):
    pd, qd = draw(precision)
    bids = draw(priced_levels(pd, qd, False))
    asks = draw(priced_levels(pd, qd, False))
    seq = draw(st.integers(1, 10**12))
    return pd, qd, seq, bids, asks, draw(exch_ms)


@given(snapshots())
def test_v1_snapshot_roundtrip(snap):
    pd, qd, seq, bids, asks, ms = snap
    known = bool(bids or asks)  # an empty book has no times and no precision to tell
    ev = BookSnapshot(
        seq, 5, "GRT/ETH", seq, bids, asks, 1000, "stream", ms if known else None, None, None,
        pd if known else None, qd if known else None,
    )  # fmt: skip
    assert v1.KrakenV1().decode(seq, 5, "text", "u", v1.encode_snapshot(ev, 42)) == [ev]


@given(snapshots(), checksums, st.booleans())
def test_v1_update_roundtrip(snap, check, with_checksum):
    pd, qd, seq, bids, asks, ms = snap
    if not bids and not asks:
        bids = [(num.ONE, 0)]
    c = check if with_checksum else None
    ev = DepthDiff(seq, 5, "SC/EUR", seq, seq, None, ms, None, bids, asks, c)
    frame = v1.encode_update(ev, 1920, 1000, pd, qd)
    assert v1.KrakenV1().decode(seq, 5, "text", "u", frame) == [ev]


@given(
    st.lists(st.tuples(st.integers(1, 10**9), st.integers(1, 10**9), st.booleans()), min_size=1),
    exch_ms,
    st.integers(1, 10**9),
)
def test_v1_trades_and_ticker_roundtrip(rows, ms, seq):
    tick, lot = 10 ** (num.SCALE - 7), 10 ** (num.SCALE - 8)
    trades = [
        Trade(seq, 5, "XBT/USD", tid, p * tick, q * lot, "buy" if b else "sell", ms, ms, tid, tid)
        for i, (p, q, b) in enumerate(rows)
        for tid in [seq * v1.TRADE_IDS_PER_FRAME + i]
    ]
    c = v1.KrakenV1()
    assert c.decode(seq, 5, "text", "u", v1.encode_trades(trades, 0, 7, 8)) == trades
    p, q, _ = rows[0]
    t = BookTicker(seq, 5, "XBT/USD", seq, p * tick, q * lot, (p + 1) * tick, (q + 1) * lot)
    assert c.decode(seq, 5, "text", "u", v1.encode_ticker(t, 7, 7, 8)) == [t]


@given(snapshots(), checksums, st.booleans())
def test_v2_book_roundtrip(snap, check, as_snapshot):
    pd, qd, seq, bids, asks, ms = snap
    codec = v2.KrakenV2()
    if as_snapshot:
        known = bool(bids or asks)
        ev: BookSnapshot | DepthDiff = BookSnapshot(
            seq, 5, "BTC/USD", seq, bids, asks, codec.depth, "stream", ms, None, check,
            pd if known else None, qd if known else None,
        )  # fmt: skip
    else:
        if not bids and not asks:
            asks = [(num.ONE, 0)]
        ev = DepthDiff(seq, 5, "BTC/USD", seq, seq, None, ms, None, bids, asks, check)
    assert codec.decode(seq, 5, "text", "u", v2.encode_book(ev, pd, qd)) == [ev]


@given(
    st.lists(
        st.tuples(
            st.integers(1, 10**9), st.integers(1, 10**9), st.booleans(), st.integers(0, 10**9)
        ),
        min_size=1,
    ),
    exch_ms,
)
def test_v2_trades_and_ticker_roundtrip(rows, ms):
    tick, lot = 10 ** (num.SCALE - 6), 10 ** (num.SCALE - 8)
    trades = [
        Trade(8, 5, "ETH/USD", tid, p * tick, q * lot, "buy" if b else "sell", ms, ms, tid, tid)
        for p, q, b, tid in rows
    ]
    c = v2.KrakenV2()
    assert c.decode(8, 5, "text", "u", v2.encode_trades(trades, 6, 8)) == trades
    p, q, _, _ = rows[0]
    t = BookTicker(8, 5, "ETH/USD", 8, p * tick, q * lot, (p + 1) * tick, q * lot)
    assert c.decode(8, 5, "text", "u", v2.encode_ticker(t, 6, 8)) == [t]
