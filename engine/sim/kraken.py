"""The Kraken v2 dialect of the simulator: what ``wss://ws.kraken.com/v2`` looks like around the market.

This module owns, for ``engine simulate --venue kraken`` and ``engine run
--exchange kraken --sim``:

* the WebSocket path — a bare endpoint (``/`` or ``/v2``) that carries no
  streams: every subscription is a message;
* the control messages — ``subscribe`` / ``unsubscribe`` with
  ``params.channel`` (``book``, ``trade``, ``ticker``) and ``params.symbol``
  (one ack per symbol, ``success`` false for an unknown pair or channel, a
  subscription beyond the connection's limit refused), and ``ping`` →
  ``pong``; a ``book`` subscription is followed by its in-stream snapshot (the
  top :attr:`KrakenFrames.depth` levels with their checksum), which is how a
  client resyncs: unsubscribe, subscribe, a fresh snapshot;
* no REST (Kraken's REST book is not what a stream client uses): every REST
  path is a 404 in Kraken's error shape;
* the corruptions the ``garbage`` fault sends, in Kraken's shapes; there is no
  maintenance notice (``shutdown`` only closes).

:class:`KrakenV1Dialect` (``kraken-v1``) is the same wire in v1's messages
(``event``/``reqid``, a ``subscriptionStatus`` per pair, ``ping`` → ``pong``).

The market frames themselves come from :mod:`engine.sim.kraken_frames` (the
codec's encoders).  Pure functions and constants: no I/O, no clock, no market
state; it does not decode what it serves.
"""

from __future__ import annotations

import json
import random
from collections.abc import Container
from typing import Any

from engine.codecs.kraken import CHANNELS, encode_ack
from engine.codecs.kraken_book import ms_iso
from engine.codecs.kraken_v1 import encode_status
from engine.sim import dialect
from engine.sim.frames import FrameEncoder
from engine.sim.kraken_frames import KrakenFrames, KrakenV1Frames, channel_id

__all__ = [
    "KrakenDialect",
    "KrakenV1Dialect",
    "control_reply",
    "control_reply_v1",
    "garbage",
    "error_body",
]


def error_body(msg: str) -> bytes:
    """Kraken's error reply shape ``{"error":..,"success":false}``."""
    return json.dumps({"error": msg, "success": False}, separators=(",", ":")).encode()


def _pong(rid: Any, now_ms: int) -> bytes:
    t = ms_iso(now_ms)
    msg = {"method": "pong", "time_in": t, "time_out": t}
    if rid is not None:
        msg["req_id"] = rid
    return json.dumps(msg, separators=(",", ":")).encode()


def control_reply(conn: Any, text: str | None, host: dialect.DialectHost) -> list[bytes]:
    """One client message → its replies (acks, then a book subscription's snapshot)."""
    if text is None:
        return [error_body("Binary frames are not accepted")]
    try:
        req = json.loads(text)
    except ValueError:
        return [error_body("Malformed request")]
    if not isinstance(req, dict):
        return [error_body("Malformed request")]
    method, rid = req.get("method"), req.get("req_id")
    if method == "ping":
        return [_pong(rid, host.sim_now())]
    if method not in ("subscribe", "unsubscribe"):
        return [error_body(f"Method not found: {str(method)[:40]}")]
    params = req.get("params")
    channel = params.get("channel") if isinstance(params, dict) else None
    symbols = params.get("symbol") if isinstance(params, dict) else None
    if channel not in CHANNELS:
        return [encode_ack(method, str(channel), "", rid, "Channel not supported")]
    if not isinstance(symbols, list) or not symbols:
        return [encode_ack(method, channel, "", rid, "Missing symbol")]
    out: list[bytes] = []
    for sym in symbols:
        stream = f"{channel}:{sym}"
        if not isinstance(sym, str) or stream not in host.valid_streams:
            out.append(encode_ack(method, channel, str(sym), rid, "Currency pair not supported"))
        elif method == "unsubscribe":
            conn.unsubscribe(stream)
            out.append(encode_ack(method, channel, sym, rid))
        elif stream not in conn.subs and len(conn.subs) >= host.max_streams:
            out.append(encode_ack(method, channel, sym, rid, "Subscription limit exceeded"))
        else:
            conn.subscribe(stream)
            out.append(encode_ack(method, channel, sym, rid))
            if channel == "book":
                out.append(host.snapshot(sym, KrakenFrames.depth, host.book(sym)))
    return out


def control_reply_v1(conn: Any, text: str | None, host: dialect.DialectHost) -> list[bytes]:
    """One v1 client message → its replies: a ``subscriptionStatus`` per pair (then a book
    subscription's snapshot), ``pong`` for ``ping``, an ``error`` event otherwise."""

    def err(msg: str, rid: Any = None) -> bytes:
        body: dict[str, Any] = {"event": "error", "errorMessage": msg}
        if rid is not None:
            body["reqid"] = rid
        return json.dumps(body, separators=(",", ":")).encode()

    try:
        req = json.loads(text) if text is not None else None
    except ValueError:
        req = None
    if not isinstance(req, dict):
        return [err("Malformed request")]
    event, rid = req.get("event"), req.get("reqid")
    if event == "ping":
        body: dict[str, Any] = {"event": "pong"}
        if rid is not None:
            body["reqid"] = rid
        return [json.dumps(body, separators=(",", ":")).encode()]
    if event not in ("subscribe", "unsubscribe"):
        return [err(f"Unsupported event {str(event)[:40]}", rid)]
    sub = req.get("subscription")
    name = sub.get("name") if isinstance(sub, dict) else None
    pairs = req.get("pair")
    if name not in CHANNELS or not isinstance(pairs, list) or not pairs:
        return [err("Subscription name invalid or no pair", rid)]
    depth = KrakenV1Frames.depth if name == "book" else None
    out: list[bytes] = []
    for pair in pairs:
        stream = f"{name}:{pair}"
        cid = channel_id(name, str(pair))
        if not isinstance(pair, str) or stream not in host.valid_streams:
            out.append(encode_status(cid, name, str(pair), rid, depth, status="error"))
        elif event == "unsubscribe":
            conn.unsubscribe(stream)
            out.append(encode_status(cid, name, pair, rid, depth, status="unsubscribed"))
        elif stream not in conn.subs and len(conn.subs) >= host.max_streams:
            out.append(encode_status(cid, name, pair, rid, depth, status="error"))
        else:
            conn.subscribe(stream)
            out.append(encode_status(cid, name, pair, rid, depth))
            if name == "book":
                out.append(host.snapshot(pair, KrakenV1Frames.depth, host.book(pair)))
    return out


def garbage(
    rng: random.Random, stream: str, ms: int, combined: bool
) -> list[tuple[str, bytes, int]]:
    """Four invalid frames ``(kind, bytes, opcode)``: binary junk, truncated JSON, a book
    update with wrong types, non-JSON text (shaped for ``stream``'s symbol)."""
    sym = stream.partition(":")[2] or "BTCUSD"
    good = (
        f'{{"channel":"trade","type":"update","data":[{{"symbol":"{sym}","side":"buy",'
        f'"price":1.0,"qty":1.0,"ord_type":"market","trade_id":1,"timestamp":"{ms_iso(ms)}"}}]}}'
    )
    wrong = (
        f'{{"channel":"book","type":"update","data":[{{"symbol":"{sym}",'
        f'"bids":[{{"price":"x","qty":null}}],"asks":{{}},"checksum":"no"}}]}}'
    )
    return [
        ("binary", bytes(rng.randrange(256) for _ in range(rng.randrange(8, 64))), 0x2),
        ("truncated", good[: rng.randrange(5, len(good) - 2)].encode(), 0x1),
        ("types", wrong.encode(), 0x1),
        ("notjson", "".join(rng.choice("abc{}[]:,\"' xyz") for _ in range(40)).encode(), 0x1),
    ]


class KrakenDialect:
    """Kraken v2's :class:`engine.sim.dialect.Dialect`."""

    name = "kraken"
    #: its frames name no stream: the replay server serves a recording by connection
    replays_by_stream = False

    def encoder(self) -> FrameEncoder:
        return KrakenFrames()  # type: ignore[return-value]

    def ws_route(self, path: str, query: str) -> tuple[bool, list[str]] | None:
        return (False, []) if path in ("", "/", "/v2") else None

    @staticmethod
    def wrap(stream: str, payload: bytes) -> bytes:
        return payload

    def control_reply(self, conn: Any, text: str | None, host: dialect.DialectHost) -> list[bytes]:
        return control_reply(conn, text, host)

    def rest_route(self, path: str) -> str | None:
        return None

    def depth_request(
        self, path: str, query: dict[str, str], known: Container[str]
    ) -> tuple[str, int]:
        raise dialect.RestError(404, error_body("Kraken streams have no REST depth here"))

    def rest_answer(self, route: str, host: dialect.DialectHost) -> tuple[int, bytes]:
        return 404, error_body(f"Unknown route {route}")

    error_body = staticmethod(error_body)

    def server_shutdown(self, ms: int) -> bytes | None:
        return None

    garbage = staticmethod(garbage)

    @staticmethod
    def diff_stream(symbol: str) -> str:
        return f"book:{symbol.upper()}"


class KrakenV1Dialect(KrakenDialect):
    """Kraken v1's dialect (``kraken-v1``, the recorded protocol): the same endpoint, book and
    faults, v1's messages (``event``/``reqid``, ``subscriptionStatus``) and frames."""

    name = "kraken-v1"

    def encoder(self) -> FrameEncoder:
        return KrakenV1Frames()  # type: ignore[return-value]

    def control_reply(self, conn: Any, text: str | None, host: dialect.DialectHost) -> list[bytes]:
        return control_reply_v1(conn, text, host)
