"""The Bybit v5 dialect of the simulator and the replay server: what Bybit's public wire looks like.

This module owns, for ``bybit`` (spot), ``bybit-linear`` and ``bybit-inverse``:

* the WebSocket paths: ``/v5/public/<category>`` (and the bare root, which the
  capture's ``--sim`` URL points at); no stream is named in a URL (:meth:`BybitDialect.ws_route`);
* the client messages and Bybit's replies (:func:`control_reply`): ``subscribe``
  (at most 10 topics a request on spot, each a topic the market serves, no more
  topics than the connection allows; a book topic is followed by its
  in-stream snapshot, a ``tickers`` topic by the full ticker its deltas build
  on), ``unsubscribe`` and ``ping`` (spot's pong echoes
  ``op: "ping"`` with ``ret_msg: "pong"``; linear/inverse answer ``op: "pong"``
  with the server time), refusals as ``success: false`` with ``ret_msg``;
* no REST (Bybit books sync in-stream: every REST path is a 404 in Bybit's
  ``retCode`` error shape) and no maintenance notice (``shutdown`` only closes);
* the corrupt frames of the ``garbage`` fault, in Bybit's shapes.

Faults map onto Bybit's failure modes by themselves: ``gap`` withholds one
delta of ``orderbook.50.<symbol>`` from a connection, which the client sees as
``u`` skipping (and resubscribes); ``drift`` serves the next in-stream snapshot
edited (the client takes it: Bybit's snapshot is the book, only a later
snapshot at a synced book's own ``u`` could reveal it).

The market frames themselves are :mod:`engine.sim.bybit_frames` (through the
Bybit codec's encoder).  Must not: do I/O, hold market state, or decode what it
serves with the engine's codecs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Container
from typing import Any

from engine.codecs.bybit import pong_frame, reply_frame
from engine.sim import dialect
from engine.sim.bybit_frames import BOOK_DEPTH, BybitFrames
from engine.sim.frames import FrameEncoder

__all__ = ["BybitDialect", "control_reply", "MAX_ARGS"]

#: topics one subscribe request may name (Bybit spot's documented limit)
MAX_ARGS = 10


def _book_symbol(topic: str) -> str | None:
    head, _, symbol = topic.rpartition(".")
    return symbol if head == f"orderbook.{BOOK_DEPTH}" else None


def _known(topic: str, valid: Container[str]) -> bool:
    return topic in valid and topic.startswith(("orderbook.", "publicTrade.", "tickers."))


def control_reply(
    conn: Any,
    text: str | None,
    host: dialect.DialectHost,
    category: str,
    tickers: BybitFrames | None = None,
) -> list[bytes]:
    """One client message → Bybit's replies (and the (un)subscription it asks for, if valid);
    ``tickers``: the market's encoder, whose last full tickers a ``tickers`` subscription gets."""
    if text is None:
        return [reply_frame("", None, False, "error:binary frames are not supported")]
    try:
        req = json.loads(text)
    except ValueError:
        return [reply_frame("", None, False, "error:request not json")]
    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
        return [reply_frame("", None, False, "error:missing op")]
    op, rid = req["op"], req.get("req_id")
    if rid is not None and not isinstance(rid, str):
        rid = str(rid)
    if op == "ping":
        return [pong_frame(category, rid, host.sim_now())]
    if op not in ("subscribe", "unsubscribe"):
        return [reply_frame(op[:40], rid, False, f"error:unknown op {op[:40]}")]
    args = req.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        return [reply_frame(op, rid, False, "error:args must be a non-empty list of topics")]
    if op == "unsubscribe":
        for t in args:
            conn.unsubscribe(t)
        return [reply_frame(op, rid, True)]
    if len(args) > MAX_ARGS:
        return [reply_frame(op, rid, False, f"error:args size >{MAX_ARGS}")]
    unknown = [t for t in args if not _known(t, host.valid_streams)]
    if unknown:
        return [reply_frame(op, rid, False, f"error:handler not found,topic:{unknown[0][:80]}")]
    new = [t for t in dict.fromkeys(args) if t not in conn.subs]
    if len(conn.subs) + len(new) > host.max_streams:
        return [reply_frame(op, rid, False, f"error:too many topics (max {host.max_streams})")]
    for t in new:
        conn.subscribe(t)
    out = [reply_frame(op, rid, True)]
    for t in dict.fromkeys(args):
        sym = _book_symbol(t)
        if sym is not None:  # a book subscription starts with the topic's snapshot
            out.append(host.snapshot(sym, BOOK_DEPTH, host.book(sym)))
        elif tickers is not None and t.startswith("tickers."):  # the deltas' base
            snap = tickers.ticker_snapshot(t.partition(".")[2])
            if snap is not None:
                out.append(snap)
    return out


def error_body(msg: str) -> bytes:
    """Bybit's REST error body."""
    return json.dumps(
        {"retCode": 10001, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": 0},
        separators=(",", ":"),
    ).encode()


def garbage(
    rng: random.Random, stream: str, ms: int, combined: bool
) -> list[tuple[str, bytes, int]]:
    """Four invalid frames ``(kind, bytes, opcode)``: binary junk, a truncated publicTrade,
    an orderbook delta with wrong types, non-JSON text (shaped for ``stream``'s symbol)."""
    sym = stream.rpartition(".")[2]
    good = (
        f'{{"topic":"publicTrade.{sym}","type":"snapshot","ts":{ms},"data":[{{"T":{ms},'
        f'"s":"{sym}","S":"Buy","v":"1","p":"1.00","L":"PlusTick","i":"1","BT":false}}]}}'
    )
    wrong = (
        f'{{"topic":"orderbook.{BOOK_DEPTH}.{sym}","type":"delta","ts":"soon","data":{{"s":"{sym}",'
        f'"b":[[1.5,2]],"a":{{"p":"1"}},"u":null,"seq":"x"}}}}'
    )
    return [
        ("binary", bytes(rng.randrange(256) for _ in range(rng.randrange(8, 64))), 0x2),
        ("truncated", good[: rng.randrange(5, len(good) - 2)].encode(), 0x1),
        ("types", wrong.encode(), 0x1),
        ("notjson", "".join(rng.choice("abc{}[]:,\"' xyz") for _ in range(40)).encode(), 0x1),
    ]


class BybitDialect:
    """Bybit v5 public streams of one category (:class:`engine.sim.dialect.Dialect`)."""

    #: the replay server serves a Bybit journal by recorded connection (no stream in any URL)
    replays_by_stream = False

    def __init__(self, name: str = "bybit", category: str = "spot") -> None:
        self.name, self.category = name, category
        self._path = f"/v5/public/{category}"
        self._enc: BybitFrames | None = None

    def encoder(self) -> FrameEncoder:
        self._enc = BybitFrames(self.category)
        return self._enc

    def ws_route(self, path: str, query: str) -> tuple[bool, list[str]] | None:
        return (False, []) if path in ("", "/", self._path) else None

    def wrap(self, stream: str, payload: bytes) -> bytes:
        return payload

    def control_reply(self, conn: Any, text: str | None, host: dialect.DialectHost) -> list[bytes]:
        return control_reply(conn, text, host, self.category, self._enc)

    def rest_route(self, path: str) -> str | None:
        return None

    def depth_request(
        self, path: str, query: dict[str, str], known: Container[str]
    ) -> tuple[str, int]:
        raise dialect.RestError(404, error_body("books sync in-stream: no REST snapshot here"))

    def rest_answer(self, route: str, host: dialect.DialectHost) -> tuple[int, bytes]:
        return 404, error_body(f"unknown route {route[:40]}")

    error_body = staticmethod(error_body)

    def server_shutdown(self, ms: int) -> bytes | None:
        return None

    garbage = staticmethod(garbage)

    def diff_stream(self, symbol: str) -> str:
        return f"orderbook.{BOOK_DEPTH}.{symbol.upper()}"
