"""The OKX v5 public dialect of the simulator: what OKX's wire looks like around the market model.

This module owns, for ``engine simulate --venue okx`` / ``engine run --exchange okx --sim``:

* the encoder (:class:`OkxFrames`, a :class:`~engine.sim.frames.FrameEncoder`):
  the model's 100 ms depth batches become ``books`` updates (``seqId`` = the
  model's last update id, ``prevSeqId`` = the one before its first, the
  checksum of the model's book after the change), its trades ``trades``
  messages (``side`` = the taker's), its REST snapshot an
  ``/api/v5/market/books`` body, its 24 h ticker a ``tickers`` message (last,
  open, high, low, volumes of the model's rolling day, the best bid/ask with
  their sizes); OKX has no aggTrade, bookTicker or kline frame here, so those
  are not sent;
* the WebSocket endpoint ``/ws/v5/public`` (streams only by ``subscribe``),
  the replies to ``{"op":"subscribe"|"unsubscribe","args":[..]}`` (an
  ``event`` per arg, ``60018`` for an unknown channel or instrument, and
  after a ``books`` subscription the in-stream snapshot), and ``ping`` →
  ``pong``;
* the fault shapes: the ``notice`` 64008 before a shutdown, garbage in OKX's
  shapes, ``gap`` withholding a ``books`` update (the next ``prevSeqId``
  does not chain), ``drift`` serving an edited book in the next snapshot.

Frames are spelled by the codec's own encoder (:meth:`engine.codecs.okx.Okx.encode`,
with the one checksum of :mod:`engine.codecs.okx_checksum`), so the
simulator cannot drift from what the codec decodes; nothing here decodes.

A drift fault edits the deepest level the model serves (:func:`engine.sim.faults.drifted`).
OKX stamps a snapshot with the checksum of *its* top 25; a drifted snapshot is
one whose levels disagree with it, so the checksum is taken from
``book.bids(25)``/``book.asks(25)`` (the drift lands on the 25th level
there) and the levels from ``book.bids(400)``: the client's check of the
snapshot's own checksum catches it and resubscribes.

Pure: no I/O, no clock, no market state.
"""

from __future__ import annotations

import json
import random
from collections.abc import Container, Iterable
from typing import Any

from engine.codecs.okx import BOOK_CHANNELS, Okx, stream_name
from engine.codecs.okx_checksum import DEPTH, checksum_of_levels
from engine.events import BUY, SELL, BookSnapshot, DepthDiff, ServerShutdown, Trade
from engine.sim import dialect
from engine.sim.frames import BookView, CandleSums, FrameEncoder, NoFrames, day_ticker

__all__ = ["OkxDialect", "OkxFrames", "WS_PATH", "BOOK_LEVELS"]

WS_PATH = "/ws/v5/public"
#: levels per side of OKX's ``books`` snapshot
BOOK_LEVELS = BOOK_CHANNELS["books"]
#: the model channel → OKX channel (the rest the model makes have no OKX frame here)
_CHANNEL = {"depth@100ms": "books", "trade": "trades", "ticker": "tickers"}


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class OkxFrames(NoFrames):
    """The OKX encoder (see the module docstring); one per market."""

    def __init__(self) -> None:
        self._codec = Okx()

    def stream(self, symbol: str, channel: str) -> str:
        """``books:BTC-USDT`` / ``trades:BTC-USDT`` as :meth:`Okx.streams` names them."""
        return stream_name(_CHANNEL.get(channel, f"model-{channel}"), symbol)

    def trade(
        self, symbol: str, et: int, tid: int, price: int, qty: int, buyer_maker: bool
    ) -> bytes:
        side = SELL if buyer_maker else BUY
        return self._codec.encode(Trade(0, 0, symbol, tid, price, qty, side, et, et, tid, tid))

    def ticker(
        self,
        symbol: str,
        e: int,
        day: CandleSums,
        prev_close: int,
        last_qty: int,
        top: tuple[int, int, int, int],
    ) -> bytes:
        """The ``tickers`` message of the model's rolling day (OKX sends no VWAP, ids or count)."""
        return self._codec.encode(day_ticker(symbol, e, day, last_qty, top))

    def depth_update(
        self,
        symbol: str,
        e: int,
        first: int,
        last: int,
        bids: Iterable[tuple[int, int]],
        asks: Iterable[tuple[int, int]],
        book: BookView,
    ) -> bytes:
        cs = checksum_of_levels(book.bids(DEPTH), book.asks(DEPTH))
        diff = DepthDiff(0, 0, symbol, last, last, first - 1, e, None, list(bids), list(asks), cs)
        return self._codec.encode(diff)

    def stream_snapshot(self, book: BookView, e: int) -> bytes:
        """The in-stream ``books`` snapshot (``prevSeqId`` -1) sent after a subscription."""
        cs = checksum_of_levels(book.bids(DEPTH), book.asks(DEPTH))
        bids, asks = book.bids(BOOK_LEVELS), book.asks(BOOK_LEVELS)
        snap = BookSnapshot(0, 0, book.symbol, book.last_id, bids, asks, BOOK_LEVELS, "stream",
                            e, None, cs)  # fmt: skip
        return self._codec.encode(snap)

    def snapshot(self, book: BookView, limit: int, e: int) -> bytes:
        """The REST ``/api/v5/market/books`` body (``seqId``: where the stream resumes)."""
        snap = BookSnapshot(0, 0, book.symbol, book.last_id, book.bids(limit), book.asks(limit),
                            limit, "rest", e)  # fmt: skip
        return self._codec.encode(snap)


def _error(code: str, msg: str, rid: Any = None) -> bytes:
    reply: dict[str, Any] = {"event": "error", "code": code, "msg": msg, "connId": "sim"}
    if isinstance(rid, str):
        reply["id"] = rid
    return _json(reply)


class OkxDialect:
    """OKX v5 public's :class:`engine.sim.dialect.Dialect`."""

    replays_by_stream = False

    def __init__(self, name: str = "okx") -> None:
        self.name = name
        self._frames = OkxFrames()

    def encoder(self) -> FrameEncoder:
        return OkxFrames()

    def ws_route(self, path: str, query: str) -> tuple[bool, list[str]] | None:
        return (False, []) if path == WS_PATH else None

    @staticmethod
    def wrap(stream: str, payload: bytes) -> bytes:
        return payload

    def control_reply(self, conn: Any, text: str | None, host: dialect.DialectHost) -> list[bytes]:
        """OKX's answers: ``pong``; one ``event`` per arg; a book subscription's snapshot."""
        if text == "ping":
            return [b"pong"]
        try:
            req = json.loads(text) if text is not None else None
        except ValueError:
            req = None
        if not isinstance(req, dict) or req.get("op") not in ("subscribe", "unsubscribe"):
            return [_error("60012", f"Invalid request: {str(text)[:100]}")]
        rid, op, args = req.get("id"), req["op"], req.get("args")
        if not isinstance(args, list) or not args:
            return [_error("60012", "Invalid request: 'args' must be a non-empty array", rid)]
        out: list[bytes] = []
        for a in args:
            ch = a.get("channel") if isinstance(a, dict) else None
            inst = a.get("instId") if isinstance(a, dict) else None
            stream = stream_name(str(ch), str(inst))
            if stream not in host.valid_streams:
                out.append(_error("60018", f"Wrong URL or channel:{ch},instId:{inst} doesn't exist",
                                  rid))  # fmt: skip
                continue
            if op == "subscribe" and stream not in conn.subs:
                if len(conn.subs) >= host.max_streams:
                    out.append(_error("60014", "Requests too frequent or too many channels", rid))
                    continue
                conn.subscribe(stream)
            elif op == "unsubscribe":
                conn.unsubscribe(stream)
            reply: dict[str, Any] = {"event": op, "arg": {"channel": ch, "instId": inst}}
            if isinstance(rid, str):
                reply["id"] = rid
            out.append(_json(reply))
            if op == "subscribe" and ch in BOOK_CHANNELS:
                out.append(self._frames.stream_snapshot(host.book(str(inst)), host.sim_now()))
        return out

    def rest_route(self, path: str) -> str | None:
        return "depth" if path == "/api/v5/market/books" else None

    def depth_request(
        self, path: str, query: dict[str, str], known: Container[str]
    ) -> tuple[str, int]:
        """``(instId, sz)``: sz defaults to 1 and is at most 400, as OKX serves it."""
        inst = query.get("instId", "")
        if inst not in known:
            raise dialect.RestError(200, _json({"code": "51001", "msg": "Instrument ID does "
                                                "not exist", "data": []}))  # fmt: skip
        sz = query.get("sz", "1")
        if not sz.isdigit() or len(sz) > 6:
            raise dialect.RestError(200, _json({"code": "51000", "msg": "Parameter sz error",
                                                "data": []}))  # fmt: skip
        return inst, min(max(int(sz), 1), BOOK_LEVELS)

    def rest_answer(self, route: str, host: dialect.DialectHost) -> tuple[int, bytes]:
        return 404, self.error_body("Not found")

    @staticmethod
    def error_body(msg: str) -> bytes:
        return _json({"code": "50000", "msg": msg, "data": []})

    def server_shutdown(self, ms: int) -> bytes:
        return self._frames._codec.encode(ServerShutdown(0, 0, ms))

    @staticmethod
    def garbage(
        rng: random.Random, stream: str, ms: int, combined: bool
    ) -> list[tuple[str, bytes, int]]:
        """Four invalid frames: binary junk, truncated JSON, a books update with wrong types,
        non-JSON text (shaped for ``stream``'s instrument)."""
        inst = stream.partition(":")[2] or "BTC-USDT"
        good = (f'{{"arg":{{"channel":"trades","instId":"{inst}"}},"data":[{{"instId":"{inst}",'
                f'"tradeId":"1","px":"1","sz":"1","side":"buy","ts":"{ms}"}}]}}')  # fmt: skip
        wrong = (f'{{"arg":{{"channel":"books","instId":"{inst}"}},"action":"update","data":'
                 f'[{{"asks":[[1.5,2]],"bids":{{"p":"1"}},"ts":{ms},"checksum":"x"}}]}}')  # fmt: skip
        return [
            ("binary", bytes(rng.randrange(256) for _ in range(rng.randrange(8, 64))), 0x2),
            ("truncated", good[: rng.randrange(5, len(good) - 2)].encode(), 0x1),
            ("types", wrong.encode(), 0x1),
            ("notjson", "".join(rng.choice("abc{}[]:,\"' xyz") for _ in range(40)).encode(), 0x1),
        ]

    @staticmethod
    def diff_stream(symbol: str) -> str:
        return stream_name("books", symbol)
