"""Coinbase Exchange feed codec (``coinbase``): journaled frames ⇄ typed events, both ways.

Owns the Exchange WebSocket feed (``wss://ws-feed.exchange.coinbase.com``,
formerly ``ws-feed.pro.coinbase.com``): decoding its frames into events and
encoding events back into the frames the simulator and the replay server
send, plus the subscribe/unsubscribe messages a client sends (sans-I/O, like
h11: bytes in, events out; events in, bytes out).  The wire helpers both
Coinbase dialects share (numbers, times, the decimal text form) live here
too; Advanced Trade is :mod:`engine.codecs.coinbase_advanced`.  Must not: do
I/O, read the clock, keep state between frames, or raise on exchange input
(a frame it cannot read is exactly one :class:`~engine.events.DecodeError`
naming the field and the problem).

Decisions worth knowing:

* **Book ids.**  ``level2``/``level2_batch`` carry no sequence number and no
  checksum.  A snapshot and every ``l2update`` take the journal ``seq`` of
  their frame as update id (``last_id``; ``first_id`` too): ids then rise
  frame by frame in the one order live and replay both see, so the sync rule
  (:class:`engine.book_sync.CoinbaseRule`) can tell an update older than the
  in-stream snapshot from a newer one, and nothing else: a lost ``l2update``
  is undetectable on this feed (book health is "no crossed book" plus a
  fresh snapshot on every (re)subscribe).
* **Aggressor.**  A ``match``'s ``side`` is the *maker* order's side; the
  aggressor (:attr:`engine.events.Trade.side`) is the opposite: ``"sell"``
  (a maker sell order was lifted) ⇒ ``"buy"``.  ``last_match`` (the last trade
  before the subscription, sent once) is a trade like any other.
* **Sequences.**  ``match``/``ticker``/``heartbeat`` carry ``sequence``, which
  counts the product's whole *full* channel: its steps exceed 1 by design, so
  it is never a gap signal.  ``trade_id`` continuity per product is
  (:class:`engine.sequence_gaps.TradeIds`, a reducer: the codec only decodes the numbers).
* **Ticker** (``ticker``) → :class:`~engine.events.Ticker24h`: ``price`` →
  ``last_price``, ``last_size`` → ``last_qty``, ``open_24h`` → ``open_price``,
  ``high_24h``/``low_24h``, ``volume_24h`` → ``volume`` (base currency),
  ``best_bid``/``best_ask`` (and ``best_bid_size``/``best_ask_size``, which
  the feed added after 2021) → the best bid/ask and sizes, ``time`` →
  ``exch_ms``, ``trade_id`` → ``last_id`` (the last trade's id).  Not sent, so
  None: ``vwap``, ``quote_volume``, ``price_change``, the window's times,
  ``first_id``, ``count``.  Not kept: ``volume_30d``, ``side`` (the ``match``
  stream has the trade itself), ``sequence`` (not a gap signal, below).  No
  :class:`~engine.events.BookTicker`: level2 books carry no update id a best
  bid/ask could be compared at.
* ``heartbeat`` is a :class:`~engine.events.Heartbeat` (keep-alive traffic).
  Any other ``type`` is a DecodeError.
* ``subscriptions`` → :class:`~engine.events.SubscriptionAck` with the
  subscribed streams (``"<channel>:<product>"``); ``error`` →
  :class:`~engine.events.SubscriptionError` (code 0: Coinbase sends none).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import orjson

from engine import num
from engine.codecs.base import (
    ConnLimits,
    Resubscribe,
    SyncRule,
    VenueDefaults,
    decode_error,
    instrument_name,
    internal_reason,
)
from engine.codecs.binance_wire import MAX, PRICE_MEMO_MAX, Bad, json_object, levels, number
from engine.codecs.ticker_wire import decode_ticker, encode_fields
from engine.events import (
    BUY,
    SELL,
    BookSnapshot,
    DecodeError,
    DepthDiff,
    Heartbeat,
    SubscriptionAck,
    SubscriptionError,
    Ticker24h,
    Trade,
)
from engine.timefmt import format_ns, parse_iso

__all__ = [
    "CoinbaseCodec",
    "CoinbaseExchange",
    "CHANNELS",
    "HOSTS",
    "iso_ms",
    "ms_iso",
    "text",
    "error_event",
    "split_streams",
    "int_id",
]

#: The Exchange feed's hosts (the capture in fixtures/ used the legacy ``pro`` one).
HOSTS = ("wss://ws-feed.exchange.coinbase.com", "wss://ws-feed.pro.coinbase.com")

#: channel name (as given to :meth:`CoinbaseExchange.streams`) → what it carries.
CHANNELS: dict[str, str] = {
    "level2_batch": "book snapshot + l2update, 50 ms batches (public)",
    "level2": "book snapshot + l2update (authenticated since 2023)",
    "matches": "trades (match, last_match)",
    "ticker": "last trade, best bid/ask and 24 h figures (Ticker24h)",
    "heartbeat": "one heartbeat a second per product (no event)",
}

SECOND_NS = 1_000_000_000
MS_NS = 1_000_000


# --------------------------------------------------------------------------- shared wire helpers


def iso_ms(s: Any, where: str) -> int:
    """A Coinbase ISO-8601 time (``2021-04-17T16:43:37.075687Z``) → epoch ms (truncated), exactly."""
    if not isinstance(s, str):
        raise Bad(f"{where}: expected an ISO-8601 time string, got {type(s).__name__}")
    try:
        return parse_iso(s) // MS_NS
    except ValueError:
        raise Bad(f"{where}: not an ISO-8601 time: {s[:40]!r}") from None


def ms_iso(ms: int | None) -> str:
    """Epoch ms → the time text Coinbase writes (microseconds, ``Z``); None → the epoch."""
    return format_ns((ms or 0) * MS_NS, 6)


def text(units: int, decimals: int | None = None) -> str:
    """Units → the exchange's decimal text: ``decimals`` of them, or as few as exactness needs."""
    if decimals is not None:
        return num.render(units, decimals)
    s = num.render(units, num.SCALE)
    return s.rstrip("0").rstrip(".") if "." in s else s


def int_id(v: Any, where: str) -> int:
    """A non-negative int64 id, given as a JSON int or a string of digits (Advanced Trade)."""
    if isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= 19:
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX:
        raise Bad(f"{where}: expected a non-negative int64 id, got {v!r:.40}")
    return v


def error_event(seq: int, recv_ns: int, source: str, reason: str, payload: Any) -> DecodeError:
    return decode_error(seq, recv_ns, source, reason, payload)


def split_streams(streams: Iterable[str]) -> dict[str, list[str]]:
    """``["level2_batch:BTC-USD", "heartbeats"]`` → channel → products, in first-seen order
    (a bare channel, Advanced Trade's ``heartbeats``, has none).

    Raises:
        ValueError: a stream that is not ``<channel>:<product>`` or a bare channel.
    """
    out: dict[str, list[str]] = {}
    for s in streams:
        ch, colon, product = s.partition(":")
        if not ch or (colon and not product):
            raise ValueError(f"bad Coinbase stream {s!r}: expected '<channel>:<PRODUCT-ID>'")
        products = out.setdefault(ch, [])
        if product:
            products.append(product)
    return out


# --------------------------------------------------------------------------- message shapes

RawLevels = list[tuple[str, str]]


class _Snapshot(msgspec.Struct, tag="snapshot", gc=False):
    product_id: str
    bids: RawLevels
    asks: RawLevels
    time: str | None = None


class _L2Update(msgspec.Struct, tag="l2update", gc=False):
    product_id: str
    changes: list[tuple[str, str, str]]
    time: str


class _Match(msgspec.Struct, tag="match", gc=False):
    trade_id: int
    side: str
    size: str
    price: str
    product_id: str
    time: str
    sequence: int | None = None


class _LastMatch(_Match, tag="last_match", gc=False):
    pass


class _Ticker(msgspec.Struct, tag="ticker", gc=False):
    product_id: str
    price: str | None = None
    last_size: str | None = None
    open_24h: str | None = None
    high_24h: str | None = None
    low_24h: str | None = None
    volume_24h: str | None = None
    best_bid: str | None = None
    best_bid_size: str | None = None
    best_ask: str | None = None
    best_ask_size: str | None = None
    time: str | None = None
    trade_id: int | None = None
    sequence: int | None = None


#: the ticker fields that are sizes or volumes (the rest are prices)
_QTY_FIELDS = frozenset({"last_qty", "volume", "bid_qty", "ask_qty"})
#: Ticker24h field → the Exchange feed's ``ticker`` key (module docstring)
_TICKER = {
    "last_price": "price", "last_qty": "last_size", "open_price": "open_24h",
    "high_price": "high_24h", "low_price": "low_24h", "volume": "volume_24h",
    "bid_price": "best_bid", "bid_qty": "best_bid_size", "ask_price": "best_ask",
    "ask_qty": "best_ask_size",
}  # fmt: skip


class _Heartbeat(msgspec.Struct, tag="heartbeat", gc=False):
    product_id: str | None = None
    time: str | None = None


class _Channel(msgspec.Struct, gc=False):
    name: str
    product_ids: list[str] = []


class _Subscriptions(msgspec.Struct, tag="subscriptions", gc=False):
    channels: list[_Channel | str]


class _Error(msgspec.Struct, tag="error", gc=False):
    message: str
    reason: str | None = None


_Message = (
    _Snapshot | _L2Update | _Match | _LastMatch | _Ticker | _Heartbeat | _Subscriptions | _Error
)
_TYPES = frozenset(
    ("snapshot", "l2update", "match", "last_match", "ticker", "heartbeat", "subscriptions", "error")
)


# --------------------------------------------------------------------------- the codec


class CoinbaseCodec(VenueDefaults):
    """What both Coinbase dialects share: the never-raise guard, URLs, resync by resubscribe.

    Connections: every stream is subscribed by message (none in the URL); the
    feed accepts about 8 client messages a second per connection (Coinbase
    publishes 8/s per IP for unauthenticated sockets; the live limiter keeps
    one less).  No application ping: the server pings at the WebSocket level
    and the ``heartbeat(s)`` channel keeps quiet subscriptions open.  Books
    have no REST snapshot that chains onto the feed (:meth:`snapshot_url` is
    None, so verify requests go unanswered): a resync resubscribes the book
    channel for the product, whose answer is a fresh in-stream snapshot.
    """

    name = "coinbase"
    rest_base = ""
    #: the book channel :meth:`resync` resubscribes (the first of these the capture has)
    book_channels: tuple[str, ...] = ()
    limits = ConnLimits(
        streams_in_url=False, max_per_subscribe=100, max_per_conn=500, control_per_window=8
    )

    def decode(
        self, seq: int, recv_ns: int, kind: str, source: str, payload: bytes
    ) -> Sequence[Any]:
        """Events of one journaled inbound frame; never raises (see the module docstring)."""
        try:
            if kind != "text" and kind != "binary":
                raise Bad(f"{self.name} codec decodes text frames, not {kind!r}")
            return self._decode(seq, recv_ns, source, payload)
        except Bad as exc:
            reason = str(exc)
        except Exception as exc:  # never raise out of a codec: a bug here is still just an event
            reason = internal_reason(exc)
        return [error_event(seq, recv_ns, source, reason, payload)]

    def _decode(self, seq: int, recv_ns: int, source: str, payload: bytes) -> list[Any]:
        raise NotImplementedError  # pragma: no cover - each dialect decodes its own frames

    def ws_url(self, base_url: str, streams: Sequence[str]) -> str:
        """Coinbase subscribes by message: the URL is the host itself."""
        return base_url

    def subscribe(self, streams: Sequence[str], request_id: int = 0) -> list[bytes]:
        raise NotImplementedError  # pragma: no cover - each dialect spells its own

    def unsubscribe(self, streams: Sequence[str], request_id: int = 0) -> list[bytes]:
        raise NotImplementedError  # pragma: no cover - each dialect spells its own

    def resync(
        self, symbol: str, streams: Sequence[str], rest_base: str, limit: int, request_id: int
    ) -> Resubscribe | None:
        """Unsubscribe then subscribe ``symbol``'s book stream: the feed answers with a snapshot."""
        mine = tuple(s for s in streams if s.partition(":")[2] == symbol)
        book = tuple(s for s in mine if s.partition(":")[0] in self.book_channels)
        if not book:
            return None
        return Resubscribe(
            book,
            tuple(self.unsubscribe(book, request_id)),
            tuple(self.subscribe(book, request_id + 1)),
        )

    def normalized(self, symbol: str) -> str:
        """Spot product ids are already ``BASE-QUOTE``; any other (Advanced Trade's futures,
        ``BIT-28JUN24-CDE``) as spelled."""
        s = symbol.upper()
        parts = s.split("-")
        return instrument_name(parts[0], parts[1]) if len(parts) == 2 and all(parts) else s


class CoinbaseExchange(CoinbaseCodec):
    """The Coinbase Exchange feed: decode (frames → events) and encode (events → frames)."""

    name = "coinbase"
    sync_rule = SyncRule.COINBASE
    ws_base = HOSTS[0]
    default_channels: tuple[str, ...] = ("level2_batch", "matches", "heartbeat")
    book_channels = ("level2_batch", "level2")
    #: match trade ids rise by 1 per product: engine.sequence_gaps.TradeIds judges them
    trade_ids_consecutive = True

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(_Message)
        self._generic = msgspec.json.Decoder()
        self._prices: dict[str, int] = {}  # price string → units: a pure memo (see wire.levels)

    # ..................................................................... decode

    def _decode(self, seq: int, recv_ns: int, source: str, payload: bytes) -> list[Any]:
        try:
            msg = self._decoder.decode(payload)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            self._explain(payload, exc)  # raises Bad naming what is wrong
        return self._handle(seq, recv_ns, msg)

    def _explain(self, payload: bytes, exc: Exception) -> None:
        """Why the typed decode failed, as a Bad: bad JSON, no or unknown ``type``, or a field."""
        obj = json_object(self._generic, payload)
        t = obj.get("type")
        if not isinstance(t, str):
            keys = ",".join(sorted(str(k)[:20] for k in obj)[:10])
            raise Bad(f"message without a 'type' (keys {keys})")
        if t not in _TYPES:
            raise Bad(f"unknown message type {t[:40]!r}")
        raise Bad(f"{t}: {exc}")

    def _handle(self, seq: int, recv_ns: int, m: Any) -> list[Any]:
        t = type(m)
        if t is _L2Update:
            bids: list[tuple[int, int]] = []
            asks: list[tuple[int, int]] = []
            get = self._prices.get
            for i, ch in enumerate(m.changes):
                side, p, q = ch
                pv = get(p)
                if pv is None:
                    pv = number(p, f"changes[{i}] price")
                    if len(self._prices) >= PRICE_MEMO_MAX:
                        self._prices.clear()
                    self._prices[p] = pv
                lvl = (pv, number(q, f"changes[{i}] size"))
                if side == "buy":
                    bids.append(lvl)
                elif side == "sell":
                    asks.append(lvl)
                else:
                    raise Bad(f"changes[{i}]: side must be 'buy' or 'sell', got {side[:20]!r}")
            ms = iso_ms(m.time, "time")
            return [DepthDiff(seq, recv_ns, m.product_id, seq, seq, None, ms, None, bids, asks)]
        if t is _Match or t is _LastMatch:
            if m.side == "sell":
                side = BUY  # the maker sold: the aggressor bought
            elif m.side == "buy":
                side = SELL
            else:
                raise Bad(
                    f"{t.__struct_config__.tag}: side must be 'buy' or 'sell', got {m.side[:20]!r}"
                )
            tid = int_id(m.trade_id, "trade_id")
            ms = iso_ms(m.time, "time")
            return [
                Trade(
                    seq, recv_ns, m.product_id, tid, number(m.price, "price"),
                    number(m.size, "size"), side, ms, ms, tid, tid, False,
                )
            ]  # fmt: skip
        if t is _Snapshot:
            snap_ms = None if m.time is None else iso_ms(m.time, "time")
            return [
                BookSnapshot(
                    seq, recv_ns, m.product_id, seq, levels(m.bids, "bids", self._prices),
                    levels(m.asks, "asks", self._prices), None, "stream", snap_ms,
                )
            ]  # fmt: skip
        if t is _Heartbeat:
            hb_ms = None if m.time is None else iso_ms(m.time, "time")
            return [Heartbeat(seq, recv_ns, "heartbeat", hb_ms)]
        if t is _Ticker:
            tk_ms = None if m.time is None else iso_ms(m.time, "time")
            last_tid = None if m.trade_id is None else int_id(m.trade_id, "trade_id")
            fields = msgspec.structs.asdict(m)
            return [
                decode_ticker(
                    seq, recv_ns, m.product_id, tk_ms, fields, _TICKER, "ticker", last_id=last_tid
                )
            ]
        if t is _Subscriptions:
            streams: list[str] = []
            for c in m.channels:
                if isinstance(c, str):
                    streams.append(c)
                else:
                    streams.extend(f"{c.name}:{p}" for p in c.product_ids)
            return [SubscriptionAck(seq, recv_ns, None, streams)]
        # _Error
        msg = m.message if m.reason is None else f"{m.message}: {m.reason}"
        return [SubscriptionError(seq, recv_ns, None, 0, msg)]

    # ..................................................................... what a client sends

    def streams(self, symbols: Sequence[str], channels: Sequence[str]) -> list[str]:
        """Stream names ``"<channel>:<PRODUCT-ID>"`` for symbols × channels.

        Raises:
            ValueError: an unknown channel (the message lists the valid ones).
        """
        for ch in channels:
            if ch not in CHANNELS:
                raise ValueError(
                    f"unknown Coinbase channel {ch!r}; choose from {', '.join(CHANNELS)}"
                )
        return [f"{ch}:{s.upper()}" for ch in channels for s in symbols]

    def subscribe(self, streams: Sequence[str], request_id: int = 0) -> list[bytes]:
        """One subscribe message for ``streams`` (Coinbase has no request ids: acks are
        ``subscriptions`` messages listing everything subscribed)."""
        return [self._control("subscribe", streams)]

    def unsubscribe(self, streams: Sequence[str], request_id: int = 0) -> list[bytes]:
        return [self._control("unsubscribe", streams)]

    @staticmethod
    def _control(op: str, streams: Sequence[str]) -> bytes:
        by_channel = split_streams(streams)
        channels = [{"name": ch, "product_ids": ps} for ch, ps in by_channel.items()]
        return orjson.dumps({"type": op, "channels": channels})

    # ..................................................................... encode (server side)

    @staticmethod
    def encode_snapshot(snap: BookSnapshot, decimals: tuple[int, int] | None = None) -> bytes:
        """The ``snapshot`` frame of ``snap`` (``decimals``: price and size decimals, else minimal)."""
        pd, qd = decimals or (None, None)
        msg: dict[str, Any] = {
            "type": "snapshot",
            "product_id": snap.symbol,
            "bids": [[text(p, pd), text(q, qd)] for p, q in snap.bids],
            "asks": [[text(p, pd), text(q, qd)] for p, q in snap.asks],
        }
        if snap.exch_ms is not None:
            msg["time"] = ms_iso(snap.exch_ms)
        return orjson.dumps(msg)

    @staticmethod
    def encode_l2update(diff: DepthDiff, decimals: tuple[int, int] | None = None) -> bytes:
        """The ``l2update`` frame of ``diff`` (bids as ``buy`` changes, then asks as ``sell``)."""
        pd, qd = decimals or (None, None)
        changes = [["buy", text(p, pd), text(q, qd)] for p, q in diff.bids]
        changes += [["sell", text(p, pd), text(q, qd)] for p, q in diff.asks]
        return orjson.dumps(
            {
                "type": "l2update",
                "product_id": diff.symbol,
                "changes": changes,
                "time": ms_iso(diff.exch_ms),
            }
        )

    @staticmethod
    def encode_match(
        trade: Trade,
        sequence: int,
        decimals: tuple[int, int] | None = None,
        last: bool = False,
        maker_order_id: str = "",
        taker_order_id: str = "",
    ) -> bytes:
        """The ``match`` (``last_match`` if ``last``) frame of ``trade``: ``side`` is the maker's."""
        pd, qd = decimals or (None, None)
        return orjson.dumps(
            {
                "type": "last_match" if last else "match",
                "trade_id": trade.trade_id,
                "maker_order_id": maker_order_id,
                "taker_order_id": taker_order_id,
                "side": "sell" if trade.side == BUY else "buy",
                "size": text(trade.qty, qd),
                "price": text(trade.price, pd),
                "product_id": trade.symbol,
                "sequence": sequence,
                "time": ms_iso(trade.txn_ms if trade.txn_ms is not None else trade.exch_ms),
            }
        )

    @staticmethod
    def encode_ticker(
        ticker: Ticker24h, sequence: int, decimals: tuple[int, int] | None = None
    ) -> bytes:
        """The ``ticker`` frame of ``ticker`` (the fields it holds; prices at ``decimals[0]``,
        sizes and volumes at ``decimals[1]``, else minimal)."""
        pd, qd = decimals or (None, None)
        msg: dict[str, Any] = {"type": "ticker", "sequence": sequence}
        msg["product_id"] = ticker.symbol
        qty_fields = {k: v for k, v in _TICKER.items() if k in _QTY_FIELDS}
        msg.update(encode_fields(ticker, {k: v for k, v in _TICKER.items() if k not in _QTY_FIELDS},
                                 lambda u: text(u, pd)))  # fmt: skip
        msg.update(encode_fields(ticker, qty_fields, lambda u: text(u, qd)))
        if ticker.exch_ms is not None:
            msg["time"] = ms_iso(ticker.exch_ms)
        if ticker.last_id is not None:
            msg["trade_id"] = ticker.last_id
        return orjson.dumps(msg)

    @staticmethod
    def encode_subscriptions(streams: Sequence[str]) -> bytes:
        """The ``subscriptions`` ack listing ``streams`` (all the connection's subscriptions)."""
        by_channel = split_streams(streams)
        return orjson.dumps(
            {
                "type": "subscriptions",
                "channels": [{"name": ch, "product_ids": ps} for ch, ps in by_channel.items()],
            }
        )

    @staticmethod
    def encode_error(message: str, reason: str | None = None) -> bytes:
        msg: dict[str, Any] = {"type": "error", "message": message}
        if reason is not None:
            msg["reason"] = reason
        return orjson.dumps(msg)

    @staticmethod
    def encode_heartbeat(product: str, sequence: int, last_trade_id: int, ms: int) -> bytes:
        return orjson.dumps(
            {
                "type": "heartbeat",
                "last_trade_id": last_trade_id,
                "product_id": product,
                "sequence": sequence,
                "time": ms_iso(ms),
            }
        )
