"""Bybit's legacy realtime protocol (``wss://stream.bybit.com/realtime``, before v5), for replaying old recordings.

Owns decoding the frames of that protocol as cryptofeed recorded them in 2021
(``orderBookL2_25.<SYMBOL>`` snapshot/delta with per-level ``id``s,
``trade.<SYMBOL>``, subscribe replies, pongs as Heartbeat) into :mod:`engine.events`, so
``engine import cryptofeed BYBIT.ws...`` journals replay (``--exchange
bybit-legacy``).  Live capture speaks v5 (:mod:`engine.codecs.bybit`); this
module only sends what the recording shows a client sent.  Must not: do I/O,
read the clock, keep state between frames, or raise on exchange input.

What the protocol gives, and what it cannot:

* A snapshot is a list of levels ``{price, id, side, size}``; a delta has
  ``delete`` / ``update`` / ``insert`` lists of the same (a delete carries the
  price too, so levels are keyed by price like every other book here).
  ``side`` ``"Buy"`` is a bid.  Sizes are JSON integers (contracts), prices
  decimal strings; both exact.
* The book's id is ``cross_seq``: the matching engine's sequence across
  instruments, increasing but not continuous, so a lost delta cannot be
  detected (:class:`engine.book_sync.BybitLegacyRule` drops only stale ones).
* Trades: ``side`` is the taker; ``price`` is a JSON *number*, read from its
  text (never through float); ``trade_id`` is a UUID, which the int trade
  model cannot hold: ``trade_id = 0`` ("no id").  ``trade_time_ms`` is the
  trade time (``txn_ms``); ``timestamp_e6`` of a book frame, in µs, gives
  ``exch_ms``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import orjson

from engine import num
from engine.codecs.base import (
    ConnLimits,
    KeepAlive,
    SyncRule,
    VenueDefaults,
    decode_error,
    internal_reason,
)
from engine.codecs.binance_wire import MAX, VMAX, Bad, number
from engine.codecs.bybit_symbols import inverse_name
from engine.events import (
    BUY,
    SELL,
    BookSnapshot,
    DepthDiff,
    Heartbeat,
    SubscriptionAck,
    SubscriptionError,
    Trade,
)

__all__ = ["BybitLegacy"]

_SIDES = {"Buy": "bids", "Sell": "asks"}


def _int(v: Any, where: str) -> int:
    """A JSON integer (given as its text by ``parse_int=str``) in 0..int64."""
    if not (isinstance(v, str) and v.isascii() and v.isdigit() and len(v) < 20):
        raise Bad(f"{where}: expected a non-negative integer, got {v!r:.40}")
    i = int(v)
    if i > MAX:
        raise Bad(f"{where}: {v[:40]} is out of range")
    return i


def _size(v: Any, where: str) -> int:
    """A size: a JSON number (contracts), exact from its text."""
    if not isinstance(v, str):
        raise Bad(f"{where}: expected a number, got {v!r:.40}")
    try:
        q = num.parse_json_number(v)
    except num.PrecisionError as exc:
        raise Bad(f"{where}: {exc}") from None
    if not 0 <= q <= VMAX:
        raise Bad(f"{where}: {v[:40]} is out of range")
    return q


def _dict(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise Bad(f"{where}: expected an object, got {type(v).__name__}")
    return v


def _list(v: Any, where: str) -> list[Any]:
    if not isinstance(v, list):
        raise Bad(f"{where}: expected a list, got {type(v).__name__}")
    return v


class BybitLegacy(VenueDefaults):
    """The legacy realtime protocol (``--exchange bybit-legacy``): replay of old recordings.

    Its live attributes describe the protocol as recorded (one topic a request, as
    cryptofeed sent them; ``{"op":"ping"}``); Bybit has retired its endpoint.
    """

    name = "bybit-legacy"
    sync_rule = SyncRule.BYBIT_LEGACY
    ws_base = "wss://stream.bybit.com/realtime"
    rest_base = "https://api.bybit.com"
    default_channels = ("trade", "depth")
    limits = ConnLimits(
        streams_in_url=False, max_per_subscribe=1, max_per_conn=200, control_per_window=10
    )
    keepalive = KeepAlive(b'{"op":"ping"}', 20.0)

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name

    def normalized(self, symbol: str) -> str:
        """The realtime endpoint carried inverse contracts: ``BTCUSD`` → ``BTC-USD-PERP``."""
        return inverse_name(symbol)

    def decode(
        self, seq: int, recv_ns: int, kind: str, source: str, payload: bytes
    ) -> Sequence[Any]:
        """Events of one journaled inbound frame; never raises."""
        try:
            if kind != "text" and kind != "binary":
                raise Bad(f"{self.name} codec decodes text frames, not {kind!r}")
            try:
                obj = json.loads(payload, parse_float=str, parse_int=str)
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise Bad(f"invalid JSON: {exc}") from None
            return self._message(seq, recv_ns, _dict(obj, "frame"))
        except Bad as exc:
            reason = str(exc)
        except Exception as exc:  # never raise out of a codec: a bug here is still just an event
            reason = internal_reason(exc)
        return [decode_error(seq, recv_ns, source, reason, payload)]

    def _message(self, seq: int, recv_ns: int, obj: dict[str, Any]) -> list[Any]:
        topic = obj.get("topic")
        if isinstance(topic, str):
            name, _, symbol = topic.rpartition(".")
            if name.startswith("orderBookL2_"):
                return self._book(seq, recv_ns, obj, symbol, name)
            if name == "trade":
                return self._trades(seq, recv_ns, obj, symbol)
            raise Bad(f"unknown topic {topic[:60]!r}")
        if "success" in obj:
            request = obj.get("request")
            op = request.get("op") if isinstance(request, dict) else None
            if op == "ping":
                return [Heartbeat(seq, recv_ns, "pong", None)]
            if obj["success"] is True:
                return [SubscriptionAck(seq, recv_ns, None, None)]
            msg = obj.get("ret_msg")
            return [SubscriptionError(seq, recv_ns, None, 0, str(msg)[:500])]
        keys = ",".join(sorted(str(k)[:20] for k in obj)[:10])
        raise Bad(f"unknown message (no topic or success; keys {keys})")

    def _levels(
        self,
        rows: list[Any],
        where: str,
        symbol: str,
        sides: dict[str, list[tuple[int, int]]],
        delete: bool,
    ) -> None:
        for k, row in enumerate(rows):
            r = _dict(row, f"{where}[{k}]")
            if r.get("symbol") != symbol:
                raise Bad(f"{where}[{k}].symbol {r.get('symbol')!r:.40} is not the topic's")
            side = _SIDES.get(r.get("side"))  # type: ignore[arg-type]
            if side is None:
                raise Bad(f"{where}[{k}].side: {r.get('side')!r:.20} is neither Buy nor Sell")
            price = r.get("price")
            if not isinstance(price, str):
                raise Bad(f"{where}[{k}].price: expected a decimal string, got {price!r:.40}")
            qty = 0 if delete else _size(r.get("size"), f"{where}[{k}].size")
            sides[side].append((number(price, f"{where}[{k}].price"), qty))

    def _book(
        self, seq: int, recv_ns: int, obj: dict[str, Any], symbol: str, name: str
    ) -> list[Any]:
        cs = _int(obj.get("cross_seq"), "cross_seq")
        e6 = obj.get("timestamp_e6")
        exch_ms = _int(e6, "timestamp_e6") // 1000 if e6 is not None else None
        sides: dict[str, list[tuple[int, int]]] = {"bids": [], "asks": []}
        typ = obj.get("type")
        if typ == "snapshot":
            self._levels(_list(obj.get("data"), "data"), "data", symbol, sides, False)
            depth_s = name.partition("_")[2]
            depth = int(depth_s) if depth_s.isdigit() and len(depth_s) < 6 else None
            return [
                BookSnapshot(
                    seq, recv_ns, symbol, cs, sides["bids"], sides["asks"], depth, "stream", exch_ms
                )
            ]
        if typ == "delta":
            data = _dict(obj.get("data"), "data")
            for part in ("delete", "update", "insert"):
                rows = _list(data.get(part, []), f"data.{part}")
                self._levels(rows, f"data.{part}", symbol, sides, part == "delete")
            return [
                DepthDiff(
                    seq, recv_ns, symbol, cs, cs, None, exch_ms, None, sides["bids"], sides["asks"]
                )
            ]
        raise Bad(f"book: unknown type {str(typ)[:40]!r} (expected snapshot or delta)")

    def _trades(self, seq: int, recv_ns: int, obj: dict[str, Any], symbol: str) -> list[Any]:
        out: list[Any] = []
        for k, row in enumerate(_list(obj.get("data"), "data")):
            t = _dict(row, f"data[{k}]")
            if t.get("symbol") != symbol:
                raise Bad(f"data[{k}].symbol {t.get('symbol')!r:.40} is not the topic's")
            side = t.get("side")
            if side not in ("Buy", "Sell"):
                raise Bad(f"data[{k}].side: {side!r:.20} is neither Buy nor Sell")
            ms = _int(t.get("trade_time_ms"), f"data[{k}].trade_time_ms")
            out.append(
                Trade(
                    seq,
                    recv_ns,
                    symbol,
                    0,
                    _size(t.get("price"), f"data[{k}].price"),
                    _size(t.get("size"), f"data[{k}].size"),
                    BUY if side == "Buy" else SELL,
                    None,
                    ms,
                    0,
                    0,
                    False,
                )
            )
        return out

    # ..................................................................... outbound

    def streams(self, symbols: Sequence[str], channels: Sequence[str]) -> list[str]:
        """Topics as the recording subscribed them (``orderBookL2_25.BTCUSD``, ``trade.BTCUSD``)."""
        names = {"depth": "orderBookL2_25", "trade": "trade"}
        out: list[str] = []
        for ch in channels:
            if ch not in names:
                raise ValueError(f"unknown Bybit legacy channel {ch!r}; valid: depth, trade")
            out.extend(f"{names[ch]}.{s.upper()}" for s in symbols)
        return out

    def ws_url(self, base_url: str, streams: Sequence[str]) -> str:
        return base_url.rstrip("/")

    def subscribe(self, streams: Sequence[str], request_id: int) -> list[bytes]:
        return [orjson.dumps({"op": "subscribe", "args": [t]}) for t in streams]

    def unsubscribe(self, streams: Sequence[str], request_id: int) -> list[bytes]:
        return [orjson.dumps({"op": "unsubscribe", "args": [t]}) for t in streams]
