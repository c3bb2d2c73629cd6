"""The Coinbase codecs (Exchange feed ``coinbase``, Advanced Trade ``coinbase-advanced``).

On the real capture (fixtures/journals/coinbase: cryptofeed's COINBASE.ws.28.0,
10 products, level2 + matches + ticker): ``engine replay --json`` shows every
book synced, no crossed book, no trade-id gap, no decode error; the aggressor
side is the opposite of ``match.side`` (the maker's), which the book at each
trade confirms; the raw excerpt imports to exactly the journal's frames.
Then h11-style round trips (encode(events) → decode → the same events) for
both dialects, and bad input: one DecodeError per frame, never an exception.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import num
from engine.book_reducer import BookReducer
from engine.codecs.binance_wire import MAX
from engine.codecs.coinbase import CoinbaseExchange
from engine.codecs.coinbase_advanced import CoinbaseAdvanced
from engine.codecs.registry import get_codec
from engine.events import (
    BookSnapshot,
    DecodeError,
    DepthDiff,
    Heartbeat,
    StreamSequence,
    SubscriptionAck,
    SubscriptionError,
    Trade,
)
from engine.journal.reader import JournalReader
from engine.replay.importers import import_cryptofeed, import_tardis

FIXTURES = Path(__file__).parent.parent / "fixtures"
JOURNAL = FIXTURES / "journals" / "coinbase"
EXCERPT = FIXTURES / "raw" / "COINBASE.ws.28.0.excerpt"
TARDIS = FIXTURES / "raw" / "coinbase.tardis.txt"
SRC = "wss://ws-feed.exchange.coinbase.com"
ADV = "wss://advanced-trade-ws.coinbase.com"
PRODUCTS = 10


def decoded_frames(codec=None):
    """(frame, events) of every inbound frame of the fixture journal."""
    return decoded_frames_of(JOURNAL, codec)


def decoded_frames_of(journal: Path, codec=None):
    reader = JournalReader(journal)
    codec = codec or get_codec(reader.metadata["exchange"])
    for f in reader.frames():
        if f.dir == "in" and f.kind == "text":
            yield f, codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload)


# --------------------------------------------------------------------------- the real capture


def test_the_capture_replays_every_book_synced_uncrossed_and_every_trade_id_in_line():
    run = subprocess.run(
        [sys.executable, "-m", "engine.cli", "replay", str(JOURNAL), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    d = json.loads(run.stdout)
    assert d["exchange"] == "coinbase" and d["decode_errors"] == 0
    syms = d["symbols"]
    assert len(syms) == PRODUCTS
    books = {s: v["book"] for s, v in syms.items()}
    ids = {s: v["trade_ids"] for s, v in syms.items()}
    assert all(b["state"] == "synced" and b["syncs"] == 1 for b in books.values())
    assert sum(b["crossed"] for b in books.values()) == 0
    assert sum(b["gaps"] for b in books.values()) == 0
    assert sum(i["trade_id_gaps"] for i in ids.values()) == 0
    assert sum(i["trades_repeated"] for i in ids.values()) == 0
    checked = sum(i["trades_checked"] for i in ids.values())
    applied = sum(b["diffs_applied"] for b in books.values())
    assert checked == 107 and applied == 9719  # 10 last_match + 97 match; every l2update
    print(
        f"coinbase capture: {len(books)} books synced, {applied} l2updates applied, 0 crossed;"
        f" {checked} trade ids checked, 0 gaps"
    )


def test_the_aggressor_is_the_opposite_of_the_maker_side_the_book_agrees():
    """A match's price rests on the maker's side of the book (or was just consumed from it,
    so it lies inside the spread), never on the aggressor's own side."""
    br = BookReducer(sync_rule=get_codec("coinbase").sync_rule)
    state = br.initial()
    on_maker_side = wrong_side = matches = 0
    sides = set()
    for f, events in decoded_frames():
        live = not f.payload.startswith(b'{"type":"last_match"')  # last_match predates the book
        for ev in events:
            if type(ev) is Trade and live:
                book = br.book(state, ev.symbol)
                assert book is not None
                matches += 1
                sides.add(ev.side)
                maker = book.asks if ev.side == "buy" else book.bids
                own = book.bids if ev.side == "buy" else book.asks
                on_maker_side += ev.price in maker
                wrong_side += ev.price in own
                bid, ask = book.best_bid(), book.best_ask()
                assert ev.price > bid[0] if ev.side == "buy" else ev.price < ask[0]
            state, _ = br.step(state, ev)
    assert matches == 97 and sides == {"buy", "sell"}
    assert wrong_side == 0 and on_maker_side >= matches // 2


def test_a_match_maps_maker_side_to_the_opposite_aggressor():
    c = CoinbaseExchange()
    frame = (
        b'{"type":"match","trade_id":7,"side":"sell","size":"1.5","price":"0.00001305",'
        b'"product_id":"SKL-BTC","sequence":177100030,"time":"2021-04-17T16:43:37.089723Z"}'
    )
    (t,) = c.decode(3, 9, "text", SRC, frame)
    assert (t.side, t.trade_id, t.price, t.qty) == (
        "buy",
        7,
        num.parse("0.00001305"),
        num.parse("1.5"),
    )
    (t,) = c.decode(3, 9, "text", SRC, frame.replace(b'"side":"sell"', b'"side":"buy"'))
    assert t.side == "sell"


def test_the_excerpt_imports_to_exactly_the_journals_frames(tmp_path):
    """The raw excerpt (three products of the capture) imports to the same frames, byte for
    byte and ns for ns, as those products' frames of the committed journal."""
    out = tmp_path / "j"
    import_cryptofeed([str(EXCERPT)], str(out), None)
    mine = [(f.recv_ns, f.dir, f.kind, f.source, f.payload) for f in JournalReader(out).frames()]
    assert JournalReader(out).metadata["exchange"] == "coinbase"
    theirs = {
        (f.recv_ns, f.dir, f.kind, f.source, f.payload) for f in JournalReader(JOURNAL).frames()
    }
    assert len(mine) == 351 and all(f in theirs for f in mine)


def test_a_tardis_file_of_coinbase_messages_imports_and_replays_synced(tmp_path):
    """Tardis keeps Coinbase's messages as sent (the in-stream snapshot included): imported
    with ``--exchange coinbase`` they replay exactly like the capture they came from."""
    out = tmp_path / "t"
    import_tardis([str(TARDIS)], str(out), "coinbase")
    payloads = [f.payload for f in JournalReader(out).frames() if f.kind == "text"]
    lines = [line.split(b" ", 1)[1].rstrip(b"\n") for line in TARDIS.read_bytes().splitlines()]
    assert payloads == lines
    br = BookReducer(sync_rule=get_codec("coinbase").sync_rule)
    state, kinds = br.initial(), set()
    for _, events in decoded_frames_of(out):
        for ev in events:
            kinds.add(type(ev).__name__)
            state, _ = br.step(state, ev)
    assert kinds == {"SubscriptionAck", "BookSnapshot", "DepthDiff", "Trade", "Ticker24h"}
    assert br.sync_state(state, "SKL-GBP") == "synced"


# --------------------------------------------------------------------------- round trips

ids = st.integers(min_value=1, max_value=2**62)
units = st.integers(min_value=1, max_value=MAX)  # the codecs' range (int64 units)
qtys = st.integers(min_value=0, max_value=MAX)
ms = st.integers(min_value=0, max_value=4_102_444_800_000)  # to 2100
products = st.sampled_from(["BTC-USD", "SKL-BTC", "ETH-EUR"])
levels = st.lists(st.tuples(units, qtys), max_size=6)
sides = st.sampled_from(["buy", "sell"])


@given(st.lists(st.tuples(st.sampled_from(["snap", "diff", "trade"]), products, levels, levels, ms, ids, units, units, sides), min_size=1, max_size=8))  # fmt: skip
def test_exchange_round_trip_encode_then_decode_gives_the_same_events(items):
    c = CoinbaseExchange()
    for seq, (kind, sym, bids, asks, t, tid, price, qty, side) in enumerate(items, 1):
        if kind == "snap":
            ev: object = BookSnapshot(seq, seq * 7, sym, seq, bids, asks, None, "stream", t)
            frame = c.encode_snapshot(ev)  # type: ignore[arg-type]
        elif kind == "diff":
            ev = DepthDiff(seq, seq * 7, sym, seq, seq, None, t, None, bids, asks)
            frame = c.encode_l2update(ev)  # type: ignore[arg-type]
        else:
            ev = Trade(seq, seq * 7, sym, tid, price, qty, side, t, t, tid, tid, False)  # type: ignore[arg-type]
            frame = c.encode_match(ev, sequence=tid * 3)  # type: ignore[arg-type]
        assert list(c.decode(seq, seq * 7, "text", SRC, frame)) == [ev]


def test_exchange_round_trip_at_the_instruments_decimals():
    c = CoinbaseExchange()
    bids = [(num.parse("0.5762"), num.parse("335.0"))]
    snap = BookSnapshot(4, 5, "SKL-GBP", 4, bids, [], None, "stream", None)
    frame = c.encode_snapshot(snap, decimals=(4, 1))
    assert orjson.loads(frame)["bids"] == [["0.5762", "335.0"]]
    assert c.decode(4, 5, "text", SRC, frame) == [snap]


@given(
    st.lists(st.tuples(st.booleans(), products, levels, levels), min_size=1, max_size=4),
    st.integers(min_value=0, max_value=2**40),
    ms,
)
def test_advanced_round_trip_of_one_l2_data_frame(items, sn, t):
    c = CoinbaseAdvanced()
    evs = [
        BookSnapshot(9, 1, p, sn, b, a, None, "stream", t)
        if snap
        else DepthDiff(9, 1, p, sn, sn, None, t, None, b, a)
        for snap, p, b, a in items
    ]
    frame = c.encode_book(evs, sn)
    assert list(c.decode(9, 1, "text", ADV, frame)) == [StreamSequence(9, 1, ADV, sn), *evs]


@given(
    st.lists(st.tuples(products, units, units, sides, ms), min_size=1, max_size=6),
    st.integers(min_value=0, max_value=2**40),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_advanced_round_trip_of_market_trades_in_trade_id_order(rows, sn, snapshot, rnd):
    c = CoinbaseAdvanced()
    tids = rnd.sample(range(1, 10**9), len(rows))
    trades = [
        Trade(2, 3, p, tid, price, qty, side, t, t, tid, tid, False)  # type: ignore[arg-type]
        for tid, (p, price, qty, side, t) in zip(tids, rows, strict=True)
    ]
    frame = c.encode_trades(trades, sn, snapshot=snapshot)
    got = list(c.decode(2, 3, "text", ADV, frame))
    assert got == [StreamSequence(2, 3, ADV, sn), *sorted(trades, key=lambda t: t.trade_id)]


def test_advanced_control_frames_decode_to_acks_and_sequence_numbers():
    c = CoinbaseAdvanced()
    hb = c.encode_heartbeat(5, counter=3049, ms=1_700_000_000_000)
    assert c.decode(1, 2, "text", ADV, hb) == [
        StreamSequence(1, 2, ADV, 5),
        Heartbeat(1, 2, "heartbeat", 1_700_000_000_000),
    ]
    ack = c.encode_subscriptions(["level2:BTC-USD", "level2:ETH-USD", "heartbeats"], 1, 0)
    assert c.decode(1, 2, "text", ADV, ack) == [
        StreamSequence(1, 2, ADV, 1),
        SubscriptionAck(1, 2, None, ["level2:BTC-USD", "level2:ETH-USD", "heartbeats"]),
    ]
    err = c.decode(1, 2, "text", ADV, c.encode_error("failure to subscribe"))
    assert err == [SubscriptionError(1, 2, None, 0, "failure to subscribe")]


def test_exchange_control_frames_decode_to_acks():
    c = CoinbaseExchange()
    ack = c.encode_subscriptions(["level2_batch:BTC-USD", "matches:BTC-USD", "heartbeat:BTC-USD"])
    assert c.decode(1, 2, "text", SRC, ack) == [
        SubscriptionAck(
            1, 2, None, ["level2_batch:BTC-USD", "matches:BTC-USD", "heartbeat:BTC-USD"]
        )
    ]
    (e,) = c.decode(1, 2, "text", SRC, c.encode_error("Failed to subscribe", "level2 needs auth"))
    assert e == SubscriptionError(1, 2, None, 0, "Failed to subscribe: level2 needs auth")
    hb = c.encode_heartbeat("BTC-USD", 90, 20, 1_700_000_000_000)
    assert c.decode(1, 2, "text", SRC, hb) == [Heartbeat(1, 2, "heartbeat", 1_700_000_000_000)]


# --------------------------------------------------------------------------- what a client sends


def test_subscribe_messages_of_both_dialects():
    ex = CoinbaseExchange()
    streams = ex.streams(["BTC-USD", "ETH-USD"], ["level2_batch", "matches", "heartbeat"])
    assert [orjson.loads(m) for m in ex.subscribe(streams, 1)] == [
        {
            "type": "subscribe",
            "channels": [
                {"name": ch, "product_ids": ["BTC-USD", "ETH-USD"]}
                for ch in ("level2_batch", "matches", "heartbeat")
            ],
        }
    ]
    assert orjson.loads(ex.unsubscribe(streams[:1], 2)[0])["type"] == "unsubscribe"
    adv = CoinbaseAdvanced()
    streams = adv.streams(["BTC-USD", "ETH-USD"], ["level2", "market_trades", "heartbeats"])
    assert [orjson.loads(m) for m in adv.subscribe(streams, 1)] == [
        {"type": "subscribe", "channel": "level2", "product_ids": ["BTC-USD", "ETH-USD"]},
        {"type": "subscribe", "channel": "market_trades", "product_ids": ["BTC-USD", "ETH-USD"]},
        {"type": "subscribe", "channel": "heartbeats"},
    ]
    for codec in (ex, adv):
        with pytest.raises(ValueError, match="unknown Coinbase"):
            codec.streams(["BTC-USD"], ["depth"])
        assert codec.snapshot_url("https://api.exchange.coinbase.com", "BTC-USD", 50) is None
        assert codec.normalized("BTC-USD") == "BTC-USD"
        assert not codec.limits.streams_in_url


def test_a_resync_resubscribes_the_symbols_book_stream_only():
    ex = CoinbaseExchange()
    streams = ex.streams(["BTC-USD", "ETH-USD"], ["level2_batch", "matches"])
    r = ex.resync("ETH-USD", streams, "", 50, 7)
    assert r.streams == ("level2_batch:ETH-USD",)
    assert [orjson.loads(m)["type"] for m in r.unsubscribe + r.subscribe] == [
        "unsubscribe",
        "subscribe",
    ]
    assert orjson.loads(r.subscribe[0])["channels"] == [
        {"name": "level2_batch", "product_ids": ["ETH-USD"]}
    ]
    adv = CoinbaseAdvanced()
    streams = adv.streams(["BTC-USD"], ["level2", "market_trades", "heartbeats"])
    r = adv.resync("BTC-USD", streams, "", 50, 1)
    assert r.streams == ("level2:BTC-USD",)
    assert [orjson.loads(m) for m in r.subscribe] == [
        {"type": "subscribe", "channel": "level2", "product_ids": ["BTC-USD"]}
    ]
    assert ex.resync("BTC-USD", ["matches:BTC-USD"], "", 50, 1) is None


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("codec", "payload", "reason"),
    [
        ("coinbase", b"not json", "invalid JSON"),
        ("coinbase", b"[1,2]", "expected a JSON object"),
        ("coinbase", b'{"product_id":"X"}', "without a 'type'"),
        ("coinbase", b'{"type":"full"}', "unknown message type 'full'"),
        ("coinbase", b'{"type":"l2update","product_id":"X","changes":[["up","1","2"]],"time":"2021-04-17T16:43:37Z"}', "side must be"),
        ("coinbase", b'{"type":"l2update","product_id":"X","changes":[["buy","1e5","2"]],"time":"2021-04-17T16:43:37Z"}', "changes[0] price"),
        ("coinbase", b'{"type":"l2update","product_id":"X","changes":[["buy","1","-2"]],"time":"2021-04-17T16:43:37Z"}', "negative"),
        ("coinbase", b'{"type":"l2update","product_id":"X","changes":[],"time":"yesterday"}', "not an ISO-8601 time"),
        ("coinbase", b'{"type":"match","trade_id":-1,"side":"buy","size":"1","price":"1","product_id":"X","time":"2021-04-17T16:43:37Z"}', "trade_id"),
        ("coinbase", b'{"type":"snapshot","product_id":"X","bids":[["1"]],"asks":[]}', "snapshot:"),
        ("coinbase-advanced", b'{"channel":"candles","sequence_num":1,"events":[]}', "unknown channel 'candles'"),
        ("coinbase-advanced", b'{"channel":"l2_data","events":[]}', "missing field 'sequence_num'"),
        ("coinbase-advanced", b'{"channel":"l2_data","sequence_num":1,"events":[{"type":"update","product_id":"X","updates":[{"side":"bid"}]}]}', "missing field"),
        ("coinbase-advanced", b'{"channel":"l2_data","sequence_num":1,"events":[{"type":"update","product_id":"X","updates":[{"side":"up","price_level":"1","new_quantity":"1"}]}]}', "expected 'bid' or 'offer'"),
        ("coinbase-advanced", b'{"channel":"market_trades","sequence_num":1,"events":[{"type":"update","trades":[{"trade_id":"x1","product_id":"X","price":"1","size":"1","side":"BUY","time":"2021-04-17T16:43:37Z"}]}]}', "trade_id"),
        ("coinbase-advanced", b"\xff\xfe", "invalid message"),
    ],
)  # fmt: skip
def test_a_bad_frame_is_one_decode_error_naming_the_problem(codec, payload, reason):
    (e,) = get_codec(codec).decode(11, 12, "text", SRC, payload)
    assert type(e) is DecodeError and reason in e.reason and e.excerpt == payload[:200]
    assert (e.seq, e.recv_ns, e.source) == (11, 12, SRC)


@functools.cache
def real_frames() -> list[bytes]:
    return [f.payload for f, _ in decoded_frames() if len(f.payload) < 2000][:200]


@given(st.data())
def test_mutated_real_frames_never_raise_and_fail_as_one_decode_error(data):
    frames = real_frames()
    frame = bytearray(data.draw(st.sampled_from(frames)))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    for name in ("coinbase", "coinbase-advanced"):
        events = get_codec(name).decode(1, 2, "text", SRC, bytes(frame))
        errors = [e for e in events if type(e) is DecodeError]
        assert not errors or events == errors[:1]


def test_a_rest_frame_is_a_decode_error_not_an_exception():
    for name in ("coinbase", "coinbase-advanced"):
        (e,) = get_codec(name).decode(1, 2, "rest", "https://x", b"{}")
        assert type(e) is DecodeError and "text frames" in e.reason
