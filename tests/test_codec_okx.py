"""The OKX v5 codec: real frames decode, bad ones become DecodeErrors, encode ↔ decode round-trips,
and the checksum matches protocols.md's vector and every non-zero checksum of the real capture.

The capture is fixtures/raw/OKX.ws.1.0 (cryptofeed's 2022 OKX recording, see
fixtures/raw/OKX.NOTICE.md).  The checksum is checked twice over it: once from
the exchange's own strings with a naive dict book (the algorithm alone), once
from our int book rendered back to text (the algorithm plus our decimals).
"""

from __future__ import annotations

import json
import zlib
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import num
from engine.book import Book
from engine.codecs.okx import Okx
from engine.codecs.okx_checksum import checksum, checksum_of_levels, text
from engine.codecs.registry import get_codec
from engine.events import (
    BUY,
    SELL,
    BookSnapshot,
    DecodeError,
    DepthDiff,
    Heartbeat,
    ServerShutdown,
    SubscriptionAck,
    SubscriptionError,
    Trade,
)

RAW = Path(__file__).resolve().parent.parent / "fixtures" / "raw" / "OKX.ws.1.0"
WS = "wss://ws.okx.com:8443/ws/v5/public"
P = num.parse
codec = Okx()


def dec(payload: bytes | str, kind: str = "text", source: str = WS) -> list:
    if isinstance(payload, str):
        payload = payload.encode()
    return list(codec.decode(7, 99, kind, source, payload))


def capture_frames() -> list[bytes]:
    out = []
    for line in RAW.read_text().splitlines():
        head, sep, body = line.partition(": ")
        if sep and " " not in head:  # "<ts>: <frame>": a received frame
            out.append(body.encode())
    return out


# --------------------------------------------------------------------------- checksum


def test_checksum_vector_from_protocols_md():
    bids = [(P("3366.1"), P("7")), (P("3368"), P("8"))]
    asks = [(P("3366.8"), P("9")), (P("3372"), P("8"))]
    assert checksum_of_levels(bids, asks) == 831078360
    # the same text, CRC32 read signed
    crc = zlib.crc32(b"3366.1:7:3366.8:9:3368:8:3372:8")
    assert crc - (1 << 32) * (crc >= 1 << 31) == 831078360


def test_checksum_takes_25_levels_and_continues_with_the_longer_side():
    bids = [(P(str(100 - i)), num.ONE) for i in range(30)]
    asks = [(P(str(200 + i)), P("0.5")) for i in range(3)]
    parts = []
    for i in range(25):
        parts += [str(100 - i), "1"]
        if i < 3:
            parts += [str(200 + i), "0.5"]
    crc = zlib.crc32(":".join(parts).encode())
    assert checksum_of_levels(bids, asks) == (crc - (1 << 32) if crc >= 1 << 31 else crc)


@given(st.integers(-(10**20), 10**20))
def test_text_is_the_shortest_exact_decimal(units):
    s = text(units)
    assert P(s) == units
    assert not s.endswith(".") and not ("." in s and s.endswith("0"))


def _checksum_of_strings(bids: dict, asks: dict) -> int:
    """OKX's recipe on the exchange's own strings (a naive dict book keyed by Decimal)."""
    b = [bids[k] for k in sorted(bids, reverse=True)[:25]]
    a = [asks[k] for k in sorted(asks)[:25]]
    parts = []
    for i in range(max(len(b), len(a))):
        if i < len(b):
            parts += b[i]
        if i < len(a):
            parts += a[i]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def test_every_nonzero_checksum_of_the_real_capture_verifies(capsys):
    naive: dict[str, tuple[dict, dict]] = {}
    books: dict[str, Book] = {}
    verified = 0
    for payload in capture_frames():
        msg = json.loads(payload)
        if msg.get("arg", {}).get("channel") != "books" or "data" not in msg:
            continue
        inst = msg["arg"]["instId"]
        (d,) = msg["data"]
        if msg["action"] == "snapshot":
            naive[inst] = ({}, {})
        for side, key in ((naive[inst][0], "bids"), (naive[inst][1], "asks")):
            for px, sz, *_ in d[key]:
                if Decimal(sz) == 0:
                    side.pop(Decimal(px), None)
                else:
                    side[Decimal(px)] = (px, sz)
        (ev,) = dec(payload)
        if type(ev) is BookSnapshot:
            books[inst] = Book.from_levels(ev.last_id, ev.bids, ev.asks)
        else:
            books[inst].apply(ev.bids, ev.asks, ev.last_id)
        assert d["checksum"] != 0 and ev.checksum == d["checksum"]
        assert _checksum_of_strings(*naive[inst]) == d["checksum"]  # the recipe
        assert checksum(books[inst]) == d["checksum"]  # our ints, rendered back
        verified += 1
    assert verified == 290 and len(books) == 3
    with capsys.disabled():
        print(f"\nOKX capture: {verified} non-zero checksums verified, 0 mismatches")


def test_every_number_of_the_capture_is_written_in_okx_shortest_form():
    # the premise of okx_checksum.text: OKX's strings are exactly what it renders
    for payload in capture_frames():
        msg = json.loads(payload)
        for d in msg.get("data", []):
            for key in ("bids", "asks"):
                for px, sz, *_ in d.get(key, []):
                    assert text(P(px)) == px and text(P(sz)) == sz
            for key in ("px", "sz"):
                if key in d:
                    assert text(P(d[key])) == d[key]


# --------------------------------------------------------------------------- decoding


def test_real_capture_decodes_to_books_trades_tickers_and_acks_without_errors():
    kinds: dict[str, int] = {}
    for payload in capture_frames():
        for ev in dec(payload):
            name = type(ev).__name__
            kinds[name] = kinds.get(name, 0) + 1
    assert kinds == {
        "SubscriptionAck": 18,
        "BookSnapshot": 3,
        "DepthDiff": 287,
        "Trade": 74,
        "Ticker24h": 28,
    }, kinds


def test_book_update_with_sequence_numbers():
    f = (
        '{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{'
        '"asks":[["8476.98","415","0","13"],["8477","0","0","0"]],"bids":[["8476.9","0.00000001","0","1"]],'
        '"ts":"1597026383085","checksum":-1200119424,"prevSeqId":123,"seqId":130}]}'
    )
    (ev,) = dec(f)
    assert ev == DepthDiff(
        7, 99, "BTC-USDT", 130, 130, 123, 1597026383085, None,
        [(P("8476.9"), P("0.00000001"))], [(P("8476.98"), P("415")), (P("8477"), 0)],
        -1200119424,
    )  # fmt: skip


def test_snapshot_and_checksum_zero_means_none():
    f = (
        '{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"snapshot","data":[{'
        '"asks":[["2","1","0","1"]],"bids":[["1","3","0","2"]],"ts":"5","checksum":0,'
        '"prevSeqId":-1,"seqId":40}]}'
    )
    (ev,) = dec(f)
    assert ev == BookSnapshot(
        7, 99, "BTC-USDT", 40, [(P("1"), P("3"))], [(P("2"), P("1"))], 400, "stream", 5, None, None
    )


def test_2022_update_without_sequence_numbers_is_keyed_by_its_time():
    f = (
        '{"arg":{"channel":"books","instId":"X-Y"},"action":"update","data":[{'
        '"asks":[],"bids":[["1.5","2","0","1"]],"ts":"1652459225464","checksum":-914047754}]}'
    )
    (ev,) = dec(f)
    assert (ev.first_id, ev.last_id, ev.prev_id, ev.checksum) == (
        1652459225464, 1652459225464, None, -914047754,
    )  # fmt: skip


def test_trades_side_is_the_taker_and_count_makes_an_aggregate():
    f = (
        '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":['
        '{"instId":"BTC-USDT","tradeId":"130639474","px":"42219.9","sz":"0.12060306","side":"buy","ts":"1630048897897","count":"3"},'
        '{"instId":"BTC-USDT","tradeId":"130639475","px":"42219.8","sz":"1","side":"sell","ts":"1630048897898"}]}'
    )
    a, b = dec(f)
    assert a == Trade(7, 99, "BTC-USDT", 130639474, P("42219.9"), P("0.12060306"), BUY,
                      1630048897897, 1630048897897, 130639472, 130639474, True)  # fmt: skip
    assert b.side == SELL and not b.agg and b.first_id == b.last_id == 130639475


def test_event_replies_and_keepalive():
    assert dec('{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"},"id":"4"}') == [
        SubscriptionAck(7, 99, "4", ["books:BTC-USDT"])
    ]
    assert dec('{"event":"unsubscribe","arg":{"channel":"trades","instId":"A-B"}}') == [
        SubscriptionAck(7, 99, None, ["trades:A-B"])
    ]
    assert dec('{"event":"error","code":"60012","msg":"Invalid request","connId":"a4d3ae55"}') == [
        SubscriptionError(7, 99, None, 60012, "Invalid request")
    ]
    assert dec('{"event":"notice","code":"64008","msg":"The connection will soon be closed"}') == [
        ServerShutdown(7, 99, None)
    ]
    assert dec("pong") == [Heartbeat(7, 99, "pong", None)]
    assert (
        dec('{"event":"channel-conn-count","channel":"books","connCount":"2","connId":"x"}') == []
    )


def test_rest_books_snapshot():
    url = "https://www.okx.com/api/v5/market/books?instId=BTC-USDT&sz=400"
    body = (
        '{"code":"0","msg":"","data":[{"asks":[["41006.8","0.60038921","0","1"]],'
        '"bids":[["41006.3","0.30178218","0","2"]],"ts":"1629966436396","seqId":3456}]}'
    )
    (ev,) = dec(body, "rest", url)
    assert ev == BookSnapshot(7, 99, "BTC-USDT", 3456, [(P("41006.3"), P("0.30178218"))],
                              [(P("41006.8"), P("0.60038921"))], 400, "rest", 1629966436396)  # fmt: skip
    (err,) = dec('{"code":"51001","msg":"Instrument ID does not exist","data":[]}', "rest", url)
    assert type(err) is DecodeError and "51001" in err.reason and "does not exist" in err.reason
    (err,) = dec(body.replace(',"seqId":3456', ""), "rest", url)
    assert type(err) is DecodeError and "seqId" in err.reason


BOOK = '{"arg":{"channel":"books","instId":"A-B"},"action":"update","data":[{"asks":%s,"bids":[],"ts":"1","checksum":5%s}]}'


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("not json", "invalid JSON"),
        ("[1,2]", "expected a JSON object"),
        ('{"foo":1}', "unknown message"),
        ('{"arg":{"channel":"index-tickers","instId":"A-B"},"data":[{}]}',
         "'index-tickers' is not decoded"),
        ('{"arg":{"channel":"tickers","instId":"A-B"},"data":[{}]}', "instId"),
        ('{"arg":{"channel":"tickers","instId":"A-B"},"data":[{"instId":"A-B","ts":"1",'
         '"last":"1.5.1"}]}', "data[0].last"),
        ('{"arg":{"channel":"tickers","instId":"A-B"},"data":[{"instId":"A-B","ts":"x"}]}', "ts"),
        ('{"event":"login","code":"0"}', "unknown event 'login'"),
        (BOOK % ('[["1.5","abc","0","1"]]', ""), "asks[0] qty"),
        (BOOK % ('[["-1.5","1","0","1"]]', ""), "negative"),
        (BOOK % ('[["1.5"]]', ""), "asks[0]"),
        (BOOK % ("[]", ',"seqId":4'), "come together"),
        (BOOK % ("[]", ',"seqId":4,"prevSeqId":-1'), "prevSeqId -1"),
        (BOOK.replace('"update"', '"partial"') % ("[]", ""), "unknown action"),
        (BOOK.replace('"ts":"1"', '"ts":"x"') % ("[]", ""), "ts"),
        (BOOK.replace('"A-B"', '""') % ("[]", ""), "instId"),
        (BOOK.replace('"checksum":5', '"checksum":4294967295') % ("[]", ""), "signed 32-bit"),
        ('{"arg":{"channel":"trades","instId":"A"},"data":[{"instId":"A","tradeId":"1",'
         '"px":"1","sz":"1","side":"up","ts":"1"}]}', "side"),
        ('{"arg":{"channel":"trades","instId":"A"},"data":[{"instId":"A","tradeId":"x1",'
         '"px":"1","sz":"1","side":"buy","ts":"1"}]}', "tradeId"),
    ],
)  # fmt: skip
def test_bad_frames_are_decode_errors_naming_the_problem(payload, reason):
    (ev,) = dec(payload)
    assert type(ev) is DecodeError and reason in ev.reason, ev
    assert ev.excerpt == payload.encode()[:200] and ev.seq == 7


def test_more_decimals_than_the_engine_scale_is_a_decode_error_not_a_rounding():
    px = "0." + "0" * num.SCALE + "1"
    (ev,) = dec(BOOK % (f'[["{px}","1","0","1"]]', ""))
    assert type(ev) is DecodeError and "significant decimals" in ev.reason


@given(st.binary(max_size=300))
def test_decode_never_raises(payload):
    for kind in ("text", "rest", "binary"):
        evs = codec.decode(1, 2, kind, WS + "/api/v5/market/books?instId=A", payload)
        assert all(type(e) is not DecodeError or e.reason for e in evs)


@given(st.data())
def test_mutated_real_frames_never_raise(data):
    frames = capture_frames()
    f = bytearray(data.draw(st.sampled_from(frames)))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(f) - 1))
        f[i] = data.draw(st.integers(0, 255))
    codec.decode(1, 2, "text", WS, bytes(f))


# --------------------------------------------------------------------------- encode ↔ decode

insts = st.sampled_from(["BTC-USDT", "UNI-USD-SWAP", "BTC-USD-220527", "PEPE-USDT"])
ts = st.integers(0, 2**53)
pxs = st.integers(1, 10**16)
lvls = st.lists(st.tuples(pxs, st.integers(0, 10**16)), max_size=6)
cks = st.none() | st.integers(-(2**31), 2**31 - 1).filter(bool)


@st.composite
def okx_events(draw):
    seq, ns, sym, t = (
        draw(st.integers(1, 2**40)),
        draw(st.integers(0, 2**62)),
        draw(insts),
        draw(ts),
    )
    kind = draw(st.sampled_from(["diff", "legacy", "snap", "trade", "ack", "err", "notice"]))
    if kind == "diff":
        sid = draw(st.integers(0, 2**62))
        prev = draw(st.integers(0, 2**62))
        return DepthDiff(seq, ns, sym, sid, sid, prev, t, None, draw(lvls), draw(lvls), draw(cks))
    if kind == "legacy":
        return DepthDiff(seq, ns, sym, t, t, None, t, None, draw(lvls), draw(lvls), draw(cks))
    if kind == "snap":
        lv = st.lists(st.tuples(pxs, st.integers(1, 10**16)), max_size=6)
        return BookSnapshot(seq, ns, sym, draw(st.integers(0, 2**62)), draw(lv), draw(lv), 400,
                            "stream", t, None, draw(cks))  # fmt: skip
    if kind == "trade":
        tid = draw(st.integers(0, 2**62))
        n = draw(st.integers(1, 5))
        return Trade(seq, ns, sym, tid + n, draw(pxs), draw(pxs), draw(st.sampled_from([BUY, SELL])),
                     t, t, tid + 1, tid + n, n > 1)  # fmt: skip
    if kind == "ack":
        ch = draw(st.sampled_from(["books", "trades"]))
        return SubscriptionAck(seq, ns, draw(st.none() | st.just("12")), [f"{ch}:{sym}"])
    if kind == "err":
        return SubscriptionError(seq, ns, draw(st.none() | st.just("3")), 60012, "Invalid request")
    return ServerShutdown(seq, ns, None)


@given(okx_events())
def test_encode_then_decode_gives_the_same_event(ev):
    assert dec_at(ev, codec.encode(ev)) == [ev]


def dec_at(ev, payload: bytes, kind: str = "text", source: str = WS) -> list:
    return list(codec.decode(ev.seq, ev.recv_ns, kind, source, payload))


@given(st.integers(1, 2**40), lvls, lvls, st.integers(0, 2**62), ts)
def test_rest_snapshot_round_trips(seq, bids, asks, sid, t):
    bids = [(p, q) for p, q in bids if q]
    asks = [(p, q) for p, q in asks if q]
    ev = BookSnapshot(seq, 5, "BTC-USDT", sid, bids, asks, 100, "rest", t)
    url = codec.snapshot_url(codec.rest_base, "BTC-USDT", 100)
    assert dec_at(ev, codec.encode(ev), "rest", url) == [ev]


def test_the_encoder_stamps_the_checksum_of_the_book_it_sends():
    book = Book.from_levels(9, [(P("3366.1"), P("7")), (P("3360"), P("8"))],
                            [(P("3366.8"), P("9")), (P("3372"), P("8"))])  # fmt: skip
    bids, asks = book.top(25)
    snap = BookSnapshot(1, 1, "ETH-USDT", 9, bids, asks, 400, "stream", 1, None, checksum(book))
    d = json.loads(codec.encode(snap))["data"][0]
    assert d["bids"] == [["3366.1", "7", "0", "1"], ["3360", "8", "0", "1"]]
    want = zlib.crc32(b"3366.1:7:3366.8:9:3360:8:3372:8")
    assert d["checksum"] == (want - (1 << 32) if want >= 1 << 31 else want)
    assert dec(codec.encode(snap))[0].checksum == d["checksum"]


# --------------------------------------------------------------------------- client side


def test_client_messages_and_urls():
    c = get_codec("okx")
    assert c.name == "okx" and c.sync_rule == "okx"
    streams = c.streams(["BTC-USDT", "ETH-USDT"], ["depth", "trades"])
    assert streams == ["books:BTC-USDT", "books:ETH-USDT", "trades:BTC-USDT", "trades:ETH-USDT"]
    (sub,) = c.subscribe(streams[:2], 5)
    assert json.loads(sub) == {
        "id": "5",
        "op": "subscribe",
        "args": [
            {"channel": "books", "instId": "BTC-USDT"},
            {"channel": "books", "instId": "ETH-USDT"},
        ],
    }
    assert json.loads(c.unsubscribe(streams[2:3], 6)[0])["op"] == "unsubscribe"
    assert c.keepalive.payload == b"ping" and c.keepalive.interval_s < 30
    plan = c.resync("BTC-USDT", streams, c.rest_base, 400, 9)
    assert plan.streams == ("books:BTC-USDT",)
    assert [json.loads(m)["op"] for m in plan.unsubscribe + plan.subscribe] == [
        "unsubscribe", "subscribe",
    ]  # fmt: skip
    assert c.resync("XRP-USDT", streams, c.rest_base, 400, 9) is None
    assert [c.normalized(s) for s in ("BTC-USDT", "UNI-USD-SWAP", "BTC-USD-220527")] == [
        "BTC-USDT", "UNI-USD-PERP", "BTC-USD-20220527",
    ]  # fmt: skip
    assert c.ws_url(c.ws_base, streams) == WS
    assert (
        c.ws_url("ws://127.0.0.1:9000/ws/v5/public", streams) == "ws://127.0.0.1:9000/ws/v5/public"
    )
    assert c.snapshot_url(c.rest_base, "BTC-USDT", 400) == (
        "https://www.okx.com/api/v5/market/books?instId=BTC-USDT&sz=400"
    )
    with pytest.raises(ValueError, match="unknown OKX channel 'kline_1m'"):
        c.streams(["BTC-USDT"], ["kline_1m"])
    with pytest.raises(ValueError, match="no frame for"):
        c.encode(DecodeError(1, 1, "x", "y", b""))
