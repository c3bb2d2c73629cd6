"""Bybit's legacy realtime protocol (cryptofeed's 2021 capture): import, decode, replay.

The capture (fixtures/bybit/BYBIT.ws.26.0, origin in fixtures/bybit/NOTICE.md) is real; nothing
in that protocol can verify a book (``cross_seq`` skips, no checksum), so what is checked is what
it can show: every frame decodes, both books rebuild from their snapshots and stay uncrossed at
their 25 levels a side through every delta, and the trades keep their taker side and exact sizes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine import num
from engine.codecs.bybit_legacy import BybitLegacy
from engine.events import (
    SELL,
    BookSnapshot,
    DecodeError,
    DepthDiff,
    Heartbeat,
    SubscriptionAck,
    Trade,
)
from engine.journal.reader import JournalReader
from engine.replay.importers import import_cryptofeed

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "bybit"
RAW = FIX / "BYBIT.ws.26.0"
JOURNAL = FIX / "legacy-journal"


def frames(path):
    return [
        (f.seq, f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
        for f in JournalReader(path).frames()
    ]


def test_import_names_the_legacy_codec_and_matches_the_committed_journal(tmp_path):
    rep = import_cryptofeed([RAW], tmp_path / "j")
    assert rep.bad == 0 and rep.frames == 600
    assert frames(tmp_path / "j") == frames(JOURNAL)
    assert JournalReader(tmp_path / "j").metadata["exchange"] == "bybit-legacy"


def test_every_inbound_frame_of_the_capture_decodes():
    codec = BybitLegacy()
    kinds: dict[type, int] = {}
    for f in JournalReader(JOURNAL).frames():
        if f.dir != "in":
            continue
        evs = codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload)
        assert evs and not any(isinstance(e, DecodeError) for e in evs), evs
        for e in evs:
            kinds[type(e)] = kinds.get(type(e), 0) + 1
    assert kinds[BookSnapshot] == 2 and kinds[SubscriptionAck] == 4
    assert kinds[DepthDiff] > 500 and kinds[Trade] > 50


def test_the_capture_replays_with_both_books_rebuilt_and_never_crossed():
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "replay", str(JOURNAL), "--json"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    s = json.loads(out.stdout)
    assert s["exchange"] == "bybit-legacy" and s["decode_errors"] == 0
    assert set(s["symbols"]) == {"BTCUSD", "EOSUSD"}
    for sym, d in s["symbols"].items():
        b = d["book"]
        assert b["state"] == "synced" and b["syncs"] == 1, sym
        assert b["gaps"] == 0 and b["crossed"] == 0 and b["drift"] == 0, sym
        assert (b["bid_levels"], b["ask_levels"]) == (25, 25), sym  # deletes keep the window
        assert b["diffs_applied"] > 250, sym


def test_deltas_trades_and_replies_as_recorded():
    c = BybitLegacy()
    delta = (
        b'{"topic":"orderBookL2_25.BTCUSD","type":"delta","data":{"delete":[{"price":"60604.00",'
        b'"symbol":"BTCUSD","id":606040000,"side":"Buy"}],"update":[{"price":"60617.00","symbol":"BTCUSD",'
        b'"id":606170000,"side":"Sell","size":4100285}],"insert":[],"transactTimeE6":0},'
        b'"cross_seq":5938954563,"timestamp_e6":1618677785537926}'
    )
    (d,) = c.decode(1, 2, "text", "u", delta)
    assert d == DepthDiff(
        1, 2, "BTCUSD", 5938954563, 5938954563, None, 1618677785537, None,
        [(num.parse("60604.00"), 0)], [(num.parse("60617.00"), num.parse("4100285"))],
    )  # fmt: skip
    trade = (
        b'{"topic":"trade.EOSUSD","data":[{"trade_time_ms":1618677788758,"timestamp":"2021-04-17T16:43:08.000Z",'
        b'"symbol":"EOSUSD","side":"Sell","size":1,"price":7.971,"tick_direction":"MinusTick",'
        b'"trade_id":"2b855a01-c958-5725-806a-d1d3b02a577b","cross_seq":1225777380}]}'
    )
    (t,) = c.decode(1, 2, "text", "u", trade)
    assert (t.side, t.price, t.qty, t.txn_ms, t.trade_id) == (
        SELL, num.parse("7.971"), num.ONE, 1618677788758, 0
    )  # fmt: skip
    pong = b'{"success":true,"ret_msg":"pong","conn_id":"x","request":{"op":"ping","args":null}}'
    assert c.decode(1, 2, "text", "u", pong) == [Heartbeat(1, 2, "pong", None)]
    assert c.subscribe(["trade.BTCUSD", "orderBookL2_25.BTCUSD"], 1) == [
        b'{"op":"subscribe","args":["trade.BTCUSD"]}',
        b'{"op":"subscribe","args":["orderBookL2_25.BTCUSD"]}',
    ]  # what the recording shows cryptofeed sent


@pytest.mark.parametrize(
    "payload,reason",
    [
        (b"{", "invalid JSON"),
        (b'{"topic":"instrument_info.100ms.BTCUSD"}', "unknown topic"),
        (b'{"topic":"orderBookL2_25.BTCUSD","type":"delta","data":{},"cross_seq":-3}', "cross_seq"),
        (b'{"topic":"orderBookL2_25.BTCUSD","type":"snapshot","data":[{"price":"1","symbol":"BTCUSD",'
         b'"side":"Up","size":1}],"cross_seq":3}', "neither Buy nor Sell"),
        (b'{"topic":"trade.BTCUSD","data":[{"trade_time_ms":1,"symbol":"BTCUSD","side":"Buy",'
         b'"size":1,"price":1e-20}]}', "price"),
        (b'{"hello":1}', "unknown message"),
    ],
)  # fmt: skip
def test_bad_frames_are_decode_errors(payload, reason):
    (e,) = BybitLegacy().decode(1, 2, "text", "u", payload)
    assert isinstance(e, DecodeError) and reason in e.reason, e.reason
