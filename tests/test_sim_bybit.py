"""The simulator speaking Bybit v5: its frames are what the Bybit codec reads, its books what the
book reducer rebuilds, its replies Bybit's (no sockets here: tests/test_venue_bybit.py runs them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import orjson

from engine.book_reducer import BookReducer, BookSynced, GapDetected
from engine.codecs.bybit import BybitSpot
from engine.events import BookSnapshot, DecodeError, DepthDiff, Heartbeat, Trade
from engine.sim.bybit import BybitDialect
from engine.sim.dialect import get_dialect
from engine.sim.model import Market

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.dialect_host import Conn, Host  # noqa: E402

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SHIBUSDT"]


def _market():
    d = get_dialect("bybit")
    return d, Market(seed=3, symbols=SYMBOLS, activity=40.0, start_ms=1_700_000_000_000,
                     encoder=d.encoder())  # fmt: skip


class Client:
    """A subscribed connection's frames through the codec and a book reducer."""

    def __init__(self, d, m) -> None:
        self.d, self.m, self.host, self.conn = d, m, Host(m), Conn()
        self.codec = BybitSpot()
        self.r = BookReducer(self.codec.sync_rule, verify_interval_s=None)
        self.state = self.r.initial()
        self.seq = 0
        self.kinds: dict[type, int] = {}
        #: symbol → the model's update id of the last delta (the frame's ``seq``, as encoded)
        self.model_id: dict[str, int] = {}
        req = {"op": "subscribe", "args": self.codec.streams(SYMBOLS, ["depth", "trade"])}
        replies = d.control_reply(self.conn, json.dumps(req), self.host)
        assert orjson.loads(replies[0])["success"] is True  # the ack, then each book's snapshot
        assert len(replies) == 1 + len(SYMBOLS)
        for f in replies:
            self.feed(f)

    def feed(self, payload: bytes) -> None:
        self.seq += 1
        evs = self.codec.decode(self.seq, self.seq, "text", "ws://sim", payload)
        for ev in evs:
            assert not isinstance(ev, DecodeError), (ev, payload[:200])
            self.state, outs = self.r.step(self.state, ev)
            for x in [ev, *outs]:
                self.kinds[type(x)] = self.kinds.get(type(x), 0) + 1
                assert not isinstance(x, GapDetected), x
            if isinstance(ev, DepthDiff):
                self.model_id[ev.symbol] = orjson.loads(payload)["data"]["seq"]

    def run(self, ms: int) -> None:
        for stream, payload in self.m.advance(self.m.now_ms + ms):
            if stream in self.conn.subs:
                self.feed(payload)


def test_the_stream_decodes_and_every_book_stays_the_models():
    d, m = _market()
    c = Client(d, m)
    compared = 0
    for _ in range(40):
        c.run(250)
        for sym in SYMBOLS:
            book = c.r.book(c.state, sym)
            assert c.r.sync_state(c.state, sym) in ("primed", "synced")
            if m.book(sym)[0] == c.model_id.get(sym):  # nothing pending in the model
                view = m.view(sym)
                assert book.top(20) == (view.bids(20), view.asks(20)), sym
                compared += 1
    assert compared > 20
    assert c.kinds[DepthDiff] > 100 and c.kinds[Trade] > 20 and c.kinds[BookSynced] == 3


def test_a_snapshot_is_the_book_at_its_u_and_carries_a_drift_edit():
    d, m = _market()
    c = Client(d, m)
    c.run(1000)
    sym = "BTCUSDT"
    for _ in range(400):  # until the model holds changes only the next delta will carry
        if m.book(sym)[0] != c.model_id[sym]:
            break
        c.run(1)
    assert m.book(sym)[0] != c.model_id[sym]
    ours = c.r.book(c.state, sym)
    req = json.dumps({"op": "subscribe", "args": [f"orderbook.50.{sym}"]})
    _, snap = d.control_reply(Conn(), req, c.host)  # a second connection's snapshot
    (ev,) = BybitSpot().decode(1, 1, "text", "x", snap)
    assert isinstance(ev, BookSnapshot) and ev.last_id == ours.last_id and ev.depth == 50
    assert (ev.bids, ev.asks) == ours.top(50)  # exactly the book at its u, not the model's now
    c.host.drift = True
    _, snap = d.control_reply(Conn(), req, c.host)
    (ev2,) = BybitSpot().decode(1, 1, "text", "x", snap)
    assert ev2.bids[:-1] == ev.bids[:-1] and ev2.bids[-1][1] == ev.bids[-1][1] + m.spec(sym).step


def test_replies_as_bybit_gives_them():
    d, m = _market()
    host, conn, codec = Host(m), Conn(), BybitSpot()

    def reply(msg) -> list[dict]:
        return [orjson.loads(f) for f in d.control_reply(conn, msg, host)]

    (pong,) = reply('{"op":"ping","req_id":"5"}')
    assert codec.decode(1, 1, "text", "x", orjson.dumps(pong)) == [Heartbeat(1, 1, "pong", None)]
    too_many = json.dumps({"op": "subscribe", "args": [f"publicTrade.S{i}" for i in range(11)]})
    (r,) = reply(too_many)
    assert r["success"] is False and "args size" in r["ret_msg"]
    (r,) = reply('{"op":"subscribe","req_id":"6","args":["orderbook.40.BTCUSDT"]}')
    assert r["success"] is False and "orderbook.40.BTCUSDT" in r["ret_msg"] and r["req_id"] == "6"
    (r,) = reply('{"op":"subscribe","args":["none:bookTicker.BTCUSDT"]}')
    assert r["success"] is False and not conn.subs  # a channel Bybit lacks is no topic
    (r,) = reply('{"op":"subscribe","args":["publicTrade.BTCUSDT"]}')
    assert r["success"] is True and list(conn.subs) == ["publicTrade.BTCUSDT"]
    (r,) = reply('{"op":"unsubscribe","args":["publicTrade.BTCUSDT"]}')
    assert r["success"] is True and not conn.subs
    assert reply("not json")[0]["success"] is False and reply(None)[0]["success"] is False
    linear = BybitDialect("bybit-linear", "linear")
    (p,) = [orjson.loads(f) for f in linear.control_reply(conn, '{"op":"ping"}', host)]
    assert p["op"] == "pong" and p["args"] == [str(m.now_ms)]
    assert linear.ws_route("/v5/public/linear", "") == (False, []) and not linear.ws_route(
        "/ws", ""
    )
    for kind, payload, _ in d.garbage(
        __import__("random").Random(1), "orderbook.50.BTCUSDT", 5, False
    ):
        (e,) = codec.decode(1, 1, "binary" if kind == "binary" else "text", "x", payload)
        assert isinstance(e, DecodeError), kind
