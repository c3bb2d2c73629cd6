"""Kraken WebSocket v2 (``wss://ws.kraken.com/v2``, the live protocol): frames ↔ typed events.

Owns both directions of the v2 dialect: *decoding* a journaled frame into
events (``book`` snapshot/update with its checksum, ``trade``, ``ticker``,
the ``subscribe``/``unsubscribe`` acks, ``heartbeat``/``status``/``pong``)
and *encoding* the same events back into Kraken's frames (the simulator, the
replay server, the round-trip tests), plus the subscribe / unsubscribe /
ping messages a client sends.  Must not: do I/O, read the clock, keep state
between frames, or raise on exchange input (a frame it cannot read is one
DecodeError naming the field).

Decisions worth knowing:

* **Numbers.**  v2 sends prices and quantities as JSON *numbers*.  The frame
  is decoded by msgspec with a float hook that hands over each number's text
  (``0.00100000`` stays ``"0.00100000"``), which
  :func:`engine.num.parse_json_number` turns into exact units: never a float.
  A decimal *string* there (as some of Kraken's own examples print) is read
  the same way.
* **Precision.**  Kraken pushes v2 numbers "onto the wire containing full
  precision" (its checksum guide), so a snapshot's own tokens say the
  instrument's price and quantity decimals
  (:attr:`~engine.events.BookSnapshot.price_decimals`); the sync rule keeps
  them with the book and renders the checksum at them.  Taking them from the
  journaled snapshot frame (not from an earlier ``instrument`` message a
  stateless codec could not see) makes replay verify exactly as live did,
  from any checkpoint.  Zero quantities (removals) are printed as ``0`` and
  are left out of that count.
* **Ids and depth.**  v2 has no update ids: every book message gets the
  journal ``seq`` (see :class:`engine.book_sync.KrakenRule`).  The frames do
  not repeat the subscribed depth, so the codec's :attr:`KrakenV2.depth` is
  the one it subscribes with and stamps on every snapshot.
* **Trades**: ``side`` is the taker's (the aggressor), ``trade_id`` Kraken's.
  **Ticker** becomes a BookTicker (best bid/ask and their quantities) whose
  ``update_id`` is its ``seq``, never compared with a book at another moment;
  when the item carries 24 h figures it also becomes a
  :class:`~engine.events.Ticker24h`: ``last`` → ``last_price``, ``volume``
  (24 h, base currency), ``vwap`` (24 h), ``low``/``high`` → ``low_price``/
  ``high_price``, ``change`` → ``price_change`` (signed), ``bid``/``bid_qty``/
  ``ask``/``ask_qty``, ``timestamp`` (where sent) → ``exch_ms``.  Not sent, so
  None: ``last_qty``, ``open_price``, ``quote_volume``, times, trade ids,
  ``count``; ``change_pct`` is not kept.
* The ``instrument`` channel is read (a frame is not an error) but yields no
  event: the precision comes from the book itself (above).
* **Unknown but well-formed messages are errors** (counted), as for Binance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import orjson

from engine.codecs.base import KeepAlive, SyncRule
from engine.codecs.kraken_book import (
    DEPTHS,
    Bad,
    KrakenCodec,
    by_channel,
    iso_ms,
    json_number,
    max_decimals,
    ms_iso,
)
from engine.codecs.ticker_wire import decode_ticker, encode_fields, json_token
from engine.events import (
    BUY,
    SELL,
    BookSnapshot,
    BookTicker,
    DepthDiff,
    Heartbeat,
    Side,
    SubscriptionAck,
    SubscriptionError,
    Ticker24h,
    Trade,
)
from engine.num import render

__all__ = [
    "KrakenV2",
    "CHANNELS",
    "encode_book",
    "encode_trades",
    "encode_ticker",
    "encode_ack",
]

#: v2 channel names as the codec's ``streams`` take them
CHANNELS = ("book", "trade", "ticker")
_QUIET_CHANNELS = frozenset({"status", "instrument"})
_SIDES: dict[object, Side] = {"buy": BUY, "sell": SELL}
#: Ticker24h field → v2 ``ticker`` key (module docstring)
_TICKER = {
    "last_price": "last", "volume": "volume", "vwap": "vwap", "low_price": "low",
    "high_price": "high", "price_change": "change", "bid_price": "bid", "bid_qty": "bid_qty",
    "ask_price": "ask", "ask_qty": "ask_qty",
}  # fmt: skip
#: the keys that make an item a 24 h ticker too (not only a best bid/offer)
_DAY_KEYS = ("last", "volume", "vwap", "low", "high", "change")


class KrakenV2(KrakenCodec):
    """The Kraken v2 codec (exchange name ``kraken``)."""

    name = "kraken"
    sync_rule = SyncRule.KRAKEN
    ws_base = "wss://ws.kraken.com/v2"
    channels = CHANNELS
    #: the book depth this codec subscribes with and stamps on every snapshot: Kraken's default,
    #: the 10 levels its checksum covers, so every lost update within the book is a mismatch
    depth = 10
    keepalive: KeepAlive | None = KeepAlive(b'{"method":"ping"}', 20.0)

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name
        self._json = msgspec.json.Decoder(float_hook=str)

    # ..................................................................... decode

    def _message(self, seq: int, recv_ns: int, msg: Any) -> list[Any]:
        if not isinstance(msg, dict):
            raise Bad(f"expected a JSON object, got {type(msg).__name__}")
        channel = msg.get("channel")
        if channel is not None:
            return self._channel(seq, recv_ns, channel, msg)
        method = msg.get("method")
        if isinstance(method, str):
            return self._reply(seq, recv_ns, method, msg)
        keys = ",".join(sorted(str(k)[:20] for k in msg)[:10])
        raise Bad(f"unknown message (no channel or method; keys {keys})")

    def _reply(self, seq: int, recv_ns: int, method: str, msg: dict[str, Any]) -> list[Any]:
        if method == "pong":
            return [Heartbeat(seq, recv_ns, "pong", None)]
        if method not in ("subscribe", "unsubscribe"):
            raise Bad(f"unknown method {method[:40]!r}")
        rid = msg.get("req_id")
        if rid is not None and (isinstance(rid, bool) or not isinstance(rid, int | str)):
            raise Bad(f"{method}: 'req_id' must be an int or a string, got {rid!r:.40}")
        if msg.get("success") is not True:
            return [SubscriptionError(seq, recv_ns, rid, 0, str(msg.get("error", ""))[:200])]
        res = msg.get("result")
        ch = res.get("channel") if isinstance(res, dict) else None
        sym = res.get("symbol") if isinstance(res, dict) else None
        if not isinstance(ch, str) or not isinstance(sym, str):
            raise Bad(f"{method} ack: needs result.channel and result.symbol")
        return [SubscriptionAck(seq, recv_ns, rid, [f"{ch}:{sym}"])]

    def _channel(self, seq: int, recv_ns: int, channel: Any, msg: dict[str, Any]) -> list[Any]:
        if channel == "heartbeat":
            return [Heartbeat(seq, recv_ns, "heartbeat", None)]
        if channel in _QUIET_CHANNELS:
            return []
        data = msg.get("data")
        typ = msg.get("type")
        if not isinstance(data, list):
            raise Bad(f"{str(channel)[:20]}: 'data' must be an array")
        if typ not in ("snapshot", "update"):
            raise Bad(f"{str(channel)[:20]}: 'type' must be snapshot or update, got {typ!r:.20}")
        if channel == "book":
            return [self._book(seq, recv_ns, typ == "snapshot", d) for d in data]
        if channel == "trade":
            return [self._trade(seq, recv_ns, d) for d in data]
        if channel == "ticker":
            return [ev for d in data for ev in self._ticker(seq, recv_ns, d)]
        raise Bad(f"unknown channel {str(channel)[:40]!r}")

    def _book(self, seq: int, recv_ns: int, snapshot: bool, d: Any) -> Any:
        if not isinstance(d, dict) or not isinstance(d.get("symbol"), str):
            raise Bad("book: each data item is an object with a symbol")
        sym = d["symbol"]
        where = f"book {sym[:20]}"
        texts: tuple[list[str], list[str]] = ([], [])
        bids = _levels(d.get("bids", []), texts, f"{where} bids")
        asks = _levels(d.get("asks", []), texts, f"{where} asks")
        check = d.get("checksum")
        if check is not None and (
            isinstance(check, bool) or not isinstance(check, int) or not 0 <= check < 1 << 32
        ):
            raise Bad(f"{where}: checksum must be an unsigned 32-bit int, got {check!r:.30}")
        ts = d.get("timestamp")
        exch_ms = iso_ms(ts, f"{where} timestamp") if ts is not None else None
        if snapshot:
            return BookSnapshot(
                seq,
                recv_ns,
                sym,
                seq,
                bids,
                asks,
                self.depth,
                "stream",
                exch_ms,
                None,
                check,
                max_decimals(texts[0]),
                max_decimals(texts[1]),
            )
        if not bids and not asks:
            raise Bad(f"{where}: an update without levels")
        return DepthDiff(seq, recv_ns, sym, seq, seq, None, exch_ms, None, bids, asks, check)

    def _trade(self, seq: int, recv_ns: int, d: Any) -> Trade:
        if not isinstance(d, dict) or not isinstance(d.get("symbol"), str):
            raise Bad("trade: each data item is an object with a symbol")
        sym = d["symbol"]
        where = f"trade {sym[:20]}"
        side = _SIDES.get(d.get("side"))
        if side is None:
            raise Bad(f"{where}: side must be 'buy' or 'sell', got {d.get('side')!r:.20}")
        tid = d.get("trade_id")
        if isinstance(tid, bool) or not isinstance(tid, int) or tid < 0:
            raise Bad(f"{where}: trade_id must be a non-negative int, got {tid!r:.30}")
        ms = iso_ms(d.get("timestamp"), f"{where} timestamp")
        return Trade(
            seq,
            recv_ns,
            sym,
            tid,
            json_number(d.get("price"), f"{where} price"),
            json_number(d.get("qty"), f"{where} qty"),
            side,
            ms,
            ms,
            tid,
            tid,
        )

    def _ticker(self, seq: int, recv_ns: int, d: Any) -> list[Any]:
        if not isinstance(d, dict) or not isinstance(d.get("symbol"), str):
            raise Bad("ticker: each data item is an object with a symbol")
        sym = d["symbol"]
        where = f"ticker {sym[:20]}"
        bbo = self._bbo(seq, recv_ns, sym, where, d)
        if not any(d.get(k) is not None for k in _DAY_KEYS):
            return [bbo]
        ts = d.get("timestamp")
        ms = None if ts is None else iso_ms(ts, f"{where} timestamp")
        return [bbo, decode_ticker(seq, recv_ns, sym, ms, d, _TICKER, where, parse=json_token)]

    @staticmethod
    def _bbo(seq: int, recv_ns: int, sym: str, where: str, d: dict[str, Any]) -> BookTicker:
        return BookTicker(
            seq,
            recv_ns,
            sym,
            seq,
            json_number(d.get("bid"), f"{where} bid"),
            json_number(d.get("bid_qty"), f"{where} bid_qty"),
            json_number(d.get("ask"), f"{where} ask"),
            json_number(d.get("ask_qty"), f"{where} ask_qty"),
        )

    # ..................................................................... outbound

    def subscribe_messages(
        self, streams: Sequence[str], request_id: int, method: str = "subscribe"
    ) -> list[bytes]:
        """One message per channel (``params.channel`` is one name), ids from ``request_id``."""
        out: list[bytes] = []
        for i, (ch, syms) in enumerate(by_channel(streams, self.channels).items()):
            params: dict[str, Any] = {"channel": ch, "symbol": syms}
            if ch == "book":
                params["depth"] = self.depth
            if method == "subscribe" and ch != "trade":
                params["snapshot"] = True
            out.append(orjson.dumps({"method": method, "params": params, "req_id": request_id + i}))
        return out


def _levels(raw: Any, texts: tuple[list[str], list[str]], where: str) -> list[tuple[int, int]]:
    if not isinstance(raw, list):
        raise Bad(f"{where}: expected an array of levels")
    out: list[tuple[int, int]] = []
    for lv in raw:
        if not isinstance(lv, dict):
            raise Bad(f"{where}: a level is an object {{price, qty}}")
        p, q = lv.get("price"), lv.get("qty")
        units = json_number(q, f"{where} qty")
        out.append((json_number(p, f"{where} price"), units))
        texts[0].append(p if isinstance(p, str) else str(p))
        if units:
            texts[1].append(q if isinstance(q, str) else str(q))
    return out


# --------------------------------------------------------------------------- encode (sim, server, tests)


def _tok(units: int, decimals: int) -> msgspec.Raw:
    return msgspec.Raw(render(units, decimals).encode())


_ENC = msgspec.json.Encoder()


def _rows(levels: Sequence[tuple[int, int]], pd: int, qd: int) -> list[dict[str, Any]]:
    return [
        {"price": _tok(p, pd), "qty": _tok(q, qd) if q else msgspec.Raw(b"0")} for p, q in levels
    ]


def encode_book(ev: BookSnapshot | DepthDiff, pd: int, qd: int) -> bytes:
    """The v2 frame of a snapshot or an update, numbers at ``pd``/``qd`` decimals (0 for removals)."""
    item: dict[str, Any] = {
        "symbol": ev.symbol,
        "bids": _rows(ev.bids, pd, qd),
        "asks": _rows(ev.asks, pd, qd),
        "checksum": ev.checksum if ev.checksum is not None else 0,
    }
    if ev.exch_ms is not None:
        item["timestamp"] = ms_iso(ev.exch_ms)
    typ = "snapshot" if isinstance(ev, BookSnapshot) else "update"
    return _ENC.encode({"channel": "book", "type": typ, "data": [item]})


def encode_trades(trades: Sequence[Trade], pd: int, qd: int) -> bytes:
    """The v2 frame of trades (``update``; market orders)."""
    data = [
        {
            "symbol": t.symbol,
            "side": t.side,
            "price": _tok(t.price, pd),
            "qty": _tok(t.qty, qd),
            "ord_type": "market",
            "trade_id": t.trade_id,
            "timestamp": ms_iso(t.exch_ms if t.exch_ms is not None else 0),
        }
        for t in trades
    ]
    return _ENC.encode({"channel": "trade", "type": "update", "data": data})


def encode_ticker(ev: BookTicker, pd: int, qd: int, day: Ticker24h | None = None) -> bytes:
    """The v2 ticker frame of a best bid/offer, with the 24 h figures of ``day`` if given
    (prices at ``pd`` decimals, quantities and volume at ``qd``; bid/ask are ``ev``'s)."""
    item: dict[str, Any] = {"symbol": ev.symbol}
    if day is not None:
        qty_keys = {"volume", "bid_qty", "ask_qty"}
        item.update(encode_fields(day, {f: k for f, k in _TICKER.items() if k not in qty_keys},
                                  lambda u: _tok(u, pd)))  # fmt: skip
        item.update(encode_fields(day, {f: k for f, k in _TICKER.items() if k in qty_keys},
                                  lambda u: _tok(u, qd)))  # fmt: skip
        if day.exch_ms is not None:
            item["timestamp"] = ms_iso(day.exch_ms)
    item.update(
        bid=_tok(ev.bid_price, pd),
        bid_qty=_tok(ev.bid_qty, qd),
        ask=_tok(ev.ask_price, pd),
        ask_qty=_tok(ev.ask_qty, qd),
    )
    return _ENC.encode({"channel": "ticker", "type": "update", "data": [item]})


def encode_ack(
    method: str, channel: str, symbol: str, req_id: int | None, error: str | None = None
) -> bytes:
    """A subscribe/unsubscribe reply: success, or ``error`` (its message)."""
    msg: dict[str, Any] = {"method": method, "success": error is None}
    if error is None:
        res: dict[str, Any] = {"channel": channel, "symbol": symbol}
        if channel == "book":
            res["depth"] = KrakenV2.depth
            if KrakenV2.depth not in DEPTHS:  # pragma: no cover - a constant
                raise ValueError(f"Kraken book depth must be one of {DEPTHS}")
        msg["result"] = res
    else:
        msg["error"] = error
        msg["symbol"] = symbol
    if req_id is not None:
        msg["req_id"] = req_id
    return orjson.dumps(msg)
