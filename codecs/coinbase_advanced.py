"""Coinbase Advanced Trade codec (``coinbase-advanced``): journaled frames ⇄ typed events.

Owns the Advanced Trade market-data feed (``wss://advanced-trade-ws.coinbase.com``):
decoding its frames (``l2_data``, ``market_trades``, ``heartbeats``,
``subscriptions``, errors) into events, encoding events into the frames the
simulator and the replay server send, and the one-channel-per-message
subscribe/unsubscribe a client sends.  Shared wire helpers (numbers, times,
decimal text) are :mod:`engine.codecs.coinbase`'s.  Must not: do I/O, read
the clock, keep state between frames, or raise on exchange input (a frame it
cannot read is exactly one :class:`~engine.events.DecodeError`).

Decisions worth knowing:

* **sequence_num.**  Every message of a connection carries ``sequence_num``,
  counting across all its channels and products.  Each frame that has one
  decodes first to a :class:`~engine.events.StreamSequence`; whether a step is
  a gap (⇒ every book of the connection lost and resubscribed for a fresh
  snapshot) is decided per connection by the book reducer with
  :class:`engine.sequence_gaps.StreamNumbers`, never here.
* **Book ids.**  A ``snapshot``/``update`` event's id (``last_id``, and
  ``first_id``) is its message's ``sequence_num``: ids rise along the
  connection, which is all :class:`engine.book_sync.CoinbaseRule` needs.
  Several events of one message share the id (applied in message order).
  ``side`` is ``"bid"`` or ``"offer"`` (``"ask"`` accepted too).
* **Trades.**  ``market_trades``' ``side`` is taken as the aggressor's
  (``BUY`` ⇒ ``"buy"``), as cryptofeed reads it; unlike the Exchange feed's
  ``match`` this is not the maker side (no live capture here to confirm).
  ``trade_id`` is a string of digits.  Trades of one event are emitted in
  ``trade_id`` order (the feed lists the newest first), so the trade
  selection sees them ascend.
* ``heartbeats`` decode to their StreamSequence and a :class:`~engine.events.Heartbeat`;
  ``candles`` and other channels are not decoded (DecodeError "unknown channel").
* ``ticker`` (and ``ticker_batch``): its StreamSequence, then one
  :class:`~engine.events.Ticker24h` per ``tickers`` item (snapshot and update
  items are both whole tickers): ``price`` → ``last_price``, ``volume_24_h``
  → ``volume``, ``low_24_h``/``high_24_h``, ``best_bid``/``best_bid_quantity``/
  ``best_ask``/``best_ask_quantity`` → the best bid/ask and sizes, the
  frame's ``timestamp`` → ``exch_ms``.  Not sent, so None: ``last_qty``,
  ``open_price``, ``vwap``, ``quote_volume``, ``price_change`` (only the
  percentage ``price_percent_chg_24_h``, not kept, nor the 52-week range),
  times, trade ids, ``count``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import orjson

from engine.codecs.base import SyncRule
from engine.codecs.binance_wire import PRICE_MEMO_MAX, Bad, number
from engine.codecs.coinbase import CoinbaseCodec, int_id, iso_ms, ms_iso, split_streams, text
from engine.codecs.ticker_wire import decode_ticker, encode_fields
from engine.events import (
    BUY,
    SELL,
    BookSnapshot,
    DepthDiff,
    Heartbeat,
    Side,
    StreamSequence,
    SubscriptionAck,
    SubscriptionError,
    Ticker24h,
    Trade,
)

__all__ = ["CoinbaseAdvanced", "CHANNELS", "HOST"]

HOST = "wss://advanced-trade-ws.coinbase.com"

#: channel name (as subscribed, and in :meth:`CoinbaseAdvanced.streams`) → what it carries.
CHANNELS: dict[str, str] = {
    "level2": "book snapshot + updates (frames of channel l2_data)",
    "market_trades": "trades",
    "heartbeats": "one a second per connection: keeps quiet channels open",
    "ticker": "last price, best bid/ask and 24 h figures (Ticker24h)",
    "ticker_batch": "the ticker every 5 s (Ticker24h)",
}
#: the channel a frame says it is (``"channel"``) → the channel it was subscribed as
_SUBSCRIBED_AS = {
    "l2_data": "level2", "market_trades": "market_trades", "heartbeats": "heartbeats",
    "ticker": "ticker", "ticker_batch": "ticker_batch",
}  # fmt: skip
#: Ticker24h field → Advanced Trade ``tickers`` item key (module docstring)
_TICKER = {
    "last_price": "price", "volume": "volume_24_h", "low_price": "low_24_h",
    "high_price": "high_24_h", "bid_price": "best_bid", "bid_qty": "best_bid_quantity",
    "ask_price": "best_ask", "ask_qty": "best_ask_quantity",
}  # fmt: skip
_QTY_FIELDS = frozenset({"volume", "bid_qty", "ask_qty"})

_BID_SIDES = frozenset(("bid", "buy"))
_ASK_SIDES = frozenset(("offer", "ask", "sell"))


class _Frame(msgspec.Struct, gc=False):
    channel: str | None = None
    sequence_num: int | None = None
    timestamp: str | None = None
    events: list[dict[str, Any]] = []
    type: str | None = None  # {"type": "error", "message": ...}
    message: str | None = None


class CoinbaseAdvanced(CoinbaseCodec):
    """Coinbase Advanced Trade market data: decode (frames → events) and encode (events → frames)."""

    name = "coinbase-advanced"
    sync_rule = SyncRule.COINBASE
    ws_base = HOST
    default_channels: tuple[str, ...] = ("level2", "market_trades", "heartbeats")
    book_channels = ("level2",)

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(_Frame)
        self._prices: dict[str, int] = {}  # price string → units: a pure memo

    # ..................................................................... decode

    def _decode(self, seq: int, recv_ns: int, source: str, payload: bytes) -> list[Any]:
        try:
            f = self._decoder.decode(payload)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise Bad(f"invalid message: {exc}") from None
        return self._frame(seq, recv_ns, source, f)

    def _frame(self, seq: int, recv_ns: int, source: str, f: _Frame) -> list[Any]:
        if f.channel is None:
            if f.type == "error":
                return [SubscriptionError(seq, recv_ns, None, 0, f.message or "")]
            raise Bad("message without a 'channel'")
        ch = f.channel
        if ch not in _SUBSCRIBED_AS and ch != "subscriptions":
            raise Bad(f"unknown channel {ch[:40]!r}")
        if f.sequence_num is None:
            raise Bad(f"{ch}: missing field 'sequence_num'")
        out: list[Any] = [
            StreamSequence(seq, recv_ns, source, int_id(f.sequence_num, "sequence_num"))
        ]
        ms = None if f.timestamp is None else iso_ms(f.timestamp, "timestamp")
        if ch == "l2_data":
            for i, ev in enumerate(f.events):
                out.append(self._book(seq, recv_ns, f.sequence_num, ms, ev, f"events[{i}]"))
        elif ch == "market_trades":
            for i, ev in enumerate(f.events):
                out.extend(self._trades(seq, recv_ns, ev, f"events[{i}]"))
        elif ch == "ticker" or ch == "ticker_batch":
            for i, ev in enumerate(f.events):
                out.extend(self._tickers(seq, recv_ns, ms, ev, f"events[{i}]"))
        elif ch == "subscriptions":
            streams: list[str] = []
            for ev in f.events:
                subs = ev.get("subscriptions")
                if not isinstance(subs, dict):
                    raise Bad("subscriptions: 'subscriptions' must be an object")
                for name, products in subs.items():
                    if not isinstance(products, list):
                        raise Bad(f"subscriptions: {name[:40]!r} must list products")
                    streams.extend(
                        name if p == name else f"{name}:{p}" for p in products if isinstance(p, str)
                    )
            out.append(SubscriptionAck(seq, recv_ns, None, streams))
        else:  # heartbeats
            out.append(Heartbeat(seq, recv_ns, "heartbeat", ms))
        return out

    def _book(
        self, seq: int, recv_ns: int, sn: int, ms: int | None, ev: Any, where: str
    ) -> BookSnapshot | DepthDiff:
        if not isinstance(ev, dict):
            raise Bad(f"{where}: expected an object")
        t = ev.get("type")
        product = ev.get("product_id")
        updates = ev.get("updates")
        if not isinstance(product, str) or not product:
            raise Bad(f"{where}: missing or bad 'product_id'")
        if not isinstance(updates, list):
            raise Bad(f"{where}: 'updates' must be a list")
        bids: list[tuple[int, int]] = []
        asks: list[tuple[int, int]] = []
        prices = self._prices
        for j, u in enumerate(updates):
            try:
                side, p, q = u["side"], u["price_level"], u["new_quantity"]
            except (TypeError, KeyError) as exc:
                raise Bad(f"{where}.updates[{j}]: missing field {exc}") from None
            if not isinstance(p, str):
                raise Bad(f"{where}.updates[{j}].price_level: expected a string")
            pv = prices.get(p)
            if pv is None:
                pv = number(p, f"{where}.updates[{j}].price_level")
                if len(prices) >= PRICE_MEMO_MAX:
                    prices.clear()
                prices[p] = pv
            lvl = (pv, number(q, f"{where}.updates[{j}].new_quantity"))
            if side in _BID_SIDES:
                bids.append(lvl)
            elif side in _ASK_SIDES:
                asks.append(lvl)
            else:
                raise Bad(f"{where}.updates[{j}].side: expected 'bid' or 'offer', got {side!r:.20}")
        if t == "update":
            return DepthDiff(seq, recv_ns, product, sn, sn, None, ms, None, bids, asks)
        if t == "snapshot":
            return BookSnapshot(seq, recv_ns, product, sn, bids, asks, None, "stream", ms)
        raise Bad(f"{where}: type must be 'snapshot' or 'update', got {t!r:.20}")

    def _trades(self, seq: int, recv_ns: int, ev: Any, where: str) -> list[Trade]:
        trades = ev.get("trades") if isinstance(ev, dict) else None
        if not isinstance(trades, list):
            raise Bad(f"{where}: 'trades' must be a list")
        out: list[Trade] = []
        for j, tr in enumerate(trades):
            w = f"{where}.trades[{j}]"
            try:
                tid_s, product, p, q, side_s, time_s = (
                    tr["trade_id"], tr["product_id"], tr["price"], tr["size"], tr["side"], tr["time"],
                )  # fmt: skip
            except (TypeError, KeyError) as exc:
                raise Bad(f"{w}: missing field {exc}") from None
            side: Side
            if side_s == "BUY":
                side = BUY
            elif side_s == "SELL":
                side = SELL
            else:
                raise Bad(f"{w}.side: expected 'BUY' or 'SELL', got {side_s!r:.20}")
            if not isinstance(product, str) or not product:
                raise Bad(f"{w}.product_id: expected a product id")
            tid = int_id(tid_s, f"{w}.trade_id")
            ms = iso_ms(time_s, f"{w}.time")
            out.append(
                Trade(
                    seq, recv_ns, product, tid, number(p, f"{w}.price"), number(q, f"{w}.size"),
                    side, ms, ms, tid, tid, False,
                )
            )  # fmt: skip
        out.sort(key=lambda t: t.trade_id)
        return out

    @staticmethod
    def _tickers(seq: int, recv_ns: int, ms: int | None, ev: Any, where: str) -> list[Ticker24h]:
        items = ev.get("tickers") if isinstance(ev, dict) else None
        if not isinstance(items, list):
            raise Bad(f"{where}: 'tickers' must be a list")
        out: list[Ticker24h] = []
        for j, it in enumerate(items):
            w = f"{where}.tickers[{j}]"
            if not isinstance(it, dict) or not isinstance(it.get("product_id"), str):
                raise Bad(f"{w}: an object with a product_id")
            out.append(decode_ticker(seq, recv_ns, it["product_id"], ms, it, _TICKER, w))
        return out

    # ..................................................................... what a client sends

    def streams(self, symbols: Sequence[str], channels: Sequence[str]) -> list[str]:
        """``"<channel>:<PRODUCT-ID>"`` for symbols × channels (``heartbeats`` once, bare).

        Raises:
            ValueError: an unknown channel (the message lists the valid ones).
        """
        out: list[str] = []
        for ch in channels:
            if ch not in CHANNELS:
                raise ValueError(
                    f"unknown Coinbase Advanced Trade channel {ch!r}; choose from {', '.join(CHANNELS)}"
                )
            out += [ch] if ch == "heartbeats" else [f"{ch}:{s.upper()}" for s in symbols]
        return out

    def subscribe_messages(self, streams: Sequence[str], op: str = "subscribe") -> list[bytes]:
        """One message per channel (Advanced Trade takes one channel per subscribe)."""
        out = []
        for ch, products in split_streams(streams).items():
            msg: dict[str, Any] = {"type": op, "channel": ch}
            if products:
                msg["product_ids"] = products
            out.append(orjson.dumps(msg))
        return out

    def subscribe(self, streams: Sequence[str], request_id: int = 0) -> list[bytes]:
        """One subscribe message per channel of ``streams`` (Advanced Trade takes one each)."""
        return self.subscribe_messages(streams)

    def unsubscribe(self, streams: Sequence[str], request_id: int = 0) -> list[bytes]:
        return self.subscribe_messages(streams, "unsubscribe")

    # ..................................................................... encode (server side)

    @staticmethod
    def _envelope(channel: str, sequence_num: int, ms: int | None, events: list[Any]) -> bytes:
        return orjson.dumps(
            {
                "channel": channel,
                "client_id": "",
                "timestamp": ms_iso(ms),
                "sequence_num": sequence_num,
                "events": events,
            }
        )

    @classmethod
    def encode_book(
        cls,
        items: Sequence[BookSnapshot | DepthDiff],
        sequence_num: int,
        decimals: tuple[int, int] | None = None,
    ) -> bytes:
        """One ``l2_data`` frame holding ``items`` (snapshots and updates, in order)."""
        pd, qd = decimals or (None, None)
        events = []
        ms = None
        for it in items:
            t = ms_iso(it.exch_ms)
            ups = [
                {"side": "bid", "event_time": t, "price_level": text(p, pd), "new_quantity": text(q, qd)}
                for p, q in it.bids
            ] + [
                {"side": "offer", "event_time": t, "price_level": text(p, pd), "new_quantity": text(q, qd)}
                for p, q in it.asks
            ]  # fmt: skip
            kind = "snapshot" if isinstance(it, BookSnapshot) else "update"
            events.append({"type": kind, "product_id": it.symbol, "updates": ups})
            ms = it.exch_ms if ms is None else ms
        return cls._envelope("l2_data", sequence_num, ms, events)

    @classmethod
    def encode_trades(
        cls,
        trades: Sequence[Trade],
        sequence_num: int,
        decimals: tuple[int, int] | None = None,
        snapshot: bool = False,
    ) -> bytes:
        """One ``market_trades`` frame (newest first, as the feed lists them)."""
        pd, qd = decimals or (None, None)
        rows = [
            {
                "trade_id": str(t.trade_id),
                "product_id": t.symbol,
                "price": text(t.price, pd),
                "size": text(t.qty, qd),
                "side": "BUY" if t.side == BUY else "SELL",
                "time": ms_iso(t.txn_ms if t.txn_ms is not None else t.exch_ms),
            }
            for t in sorted(trades, key=lambda t: -t.trade_id)
        ]
        ms = max((t.txn_ms or t.exch_ms or 0) for t in trades) if trades else None
        kind = "snapshot" if snapshot else "update"
        return cls._envelope("market_trades", sequence_num, ms, [{"type": kind, "trades": rows}])

    @classmethod
    def encode_tickers(
        cls,
        tickers: Sequence[Ticker24h],
        sequence_num: int,
        decimals: tuple[int, int] | None = None,
        snapshot: bool = False,
        channel: str = "ticker",
    ) -> bytes:
        """One ``ticker`` frame of ``tickers`` (the fields each holds; the frame's time is the
        first one's ``exch_ms``)."""
        pd, qd = decimals or (None, None)
        prices = {f: k for f, k in _TICKER.items() if f not in _QTY_FIELDS}
        sizes = {f: k for f, k in _TICKER.items() if f in _QTY_FIELDS}
        rows = []
        for t in tickers:
            row: dict[str, Any] = {"type": "ticker", "product_id": t.symbol}
            row.update(encode_fields(t, prices, lambda u: text(u, pd)))
            row.update(encode_fields(t, sizes, lambda u: text(u, qd)))
            rows.append(row)
        ms = tickers[0].exch_ms if tickers else None
        kind = "snapshot" if snapshot else "update"
        return cls._envelope(channel, sequence_num, ms, [{"type": kind, "tickers": rows}])

    @classmethod
    def encode_heartbeat(cls, sequence_num: int, counter: int, ms: int) -> bytes:
        ev = {"current_time": ms_iso(ms), "heartbeat_counter": counter}
        return cls._envelope("heartbeats", sequence_num, ms, [ev])

    @classmethod
    def encode_subscriptions(cls, streams: Sequence[str], sequence_num: int, ms: int) -> bytes:
        """The ``subscriptions`` ack listing every subscription of the connection."""
        subs = {ch: (ps or [ch]) for ch, ps in split_streams(streams).items()}
        return cls._envelope("subscriptions", sequence_num, ms, [{"subscriptions": subs}])

    @staticmethod
    def encode_error(message: str) -> bytes:
        return orjson.dumps({"type": "error", "message": message})
