"""Typed market events: what codecs produce from journaled frames, shared by all exchanges.

Every event is a small frozen, slotted attrs class carrying the journal ``seq``
and ``recv_ns`` (local receive time, ns) of the frame it came from, so any
output can be traced back to the exact bytes that caused it.

Conventions (one place for them):

* Prices and quantities are ``int`` units of ``1e-18`` (see :mod:`engine.num`).
* Exchange times are ``int`` milliseconds since the epoch as the exchange sent
  them (``exch_ms`` = event time ``E``, ``txn_ms`` = transaction time ``T``);
  ``None`` where the exchange does not send one.
* ``symbol`` is the exchange's instrument name, upper case ("BTCUSDT").
* Book levels are lists of ``(price, qty)`` tuples; ``qty == 0`` removes a level.
* ``side`` of a trade is the *aggressor*: ``"buy"`` or ``"sell"``.

This module holds data only: no parsing, no I/O, no behaviour.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from attrs import frozen as event  # events are small frozen, slotted attrs value classes

__all__ = [
    "BUY",
    "SELL",
    "Side",
    "Level",
    "Levels",
    "Trade",
    "DepthDiff",
    "BookSnapshot",
    "BookTicker",
    "Ticker24h",
    "Kline",
    "SubscriptionAck",
    "SubscriptionError",
    "ServerShutdown",
    "Heartbeat",
    "StreamSequence",
    "DecodeError",
    "ConnectionOpened",
    "ConnectionClosed",
    "CAPTURE_STOPPED",
    "END_OF_RECORDING",
    "IMPORT_ENDED",
    "ConnectionFailed",
    "FrameConn",
    "Marker",
    "ControlSent",
    "MarketEvent",
    "Event",
    "EXCERPT_BYTES",
]

BUY: Literal["buy"] = "buy"
SELL: Literal["sell"] = "sell"
Side: TypeAlias = Literal["buy", "sell"]
Level: TypeAlias = tuple[int, int]
Levels: TypeAlias = list[tuple[int, int]]

#: How many bytes of an undecodable frame a DecodeError keeps (the frame itself stays in the journal).
EXCERPT_BYTES = 200

# --------------------------------------------------------------------------- market data


@event
class Trade:
    """One trade, or one aggregate trade (Binance aggTrade covers ids first_id..last_id).

    For a plain trade ``first_id == last_id == trade_id`` and ``agg`` is False.
    ``side`` is the aggressor (Binance ``m`` true ⇒ buyer is maker ⇒ ``"sell"``).
    """

    seq: int
    recv_ns: int
    symbol: str
    trade_id: int
    price: int
    qty: int
    side: Side
    exch_ms: int | None
    txn_ms: int | None
    first_id: int
    last_id: int
    agg: bool = False


@event
class DepthDiff:
    """An incremental book update covering exchange update ids ``first_id``..``last_id``.

    ``prev_id`` is the previous event's last id where the exchange sends it
    (Binance USD-M ``pu``), else None.  Levels set absolute quantities.
    """

    seq: int
    recv_ns: int
    symbol: str
    first_id: int
    last_id: int
    prev_id: int | None
    exch_ms: int | None
    txn_ms: int | None
    bids: Levels
    asks: Levels
    #: the exchange's checksum of its book after this update (Kraken, OKX), else None;
    #: the sync rule (:mod:`engine.book_sync`) verifies it
    checksum: int | None = None


@event
class BookSnapshot:
    """A full (or top-N) book at update id ``last_id``.

    ``origin`` is ``"rest"`` for a REST depth response, ``"stream"`` for an
    in-stream snapshot (Binance partial depth ``@depth5/10/20``).  ``depth`` is
    the requested level limit per side (None if unknown): levels deeper than
    the snapshot covers are unknown, not absent.
    """

    seq: int
    recv_ns: int
    symbol: str
    last_id: int
    bids: Levels
    asks: Levels
    depth: int | None
    origin: Literal["rest", "stream"]
    exch_ms: int | None = None
    txn_ms: int | None = None
    #: the exchange's checksum of this book (Kraken, OKX), else None
    checksum: int | None = None
    #: the decimals the exchange prints this instrument's prices / quantities with, where a
    #: checksum is computed on those strings (Kraken), else None
    price_decimals: int | None = None
    qty_decimals: int | None = None


@event
class BookTicker:
    """The exchange's best bid/offer, valid at update id ``update_id``."""

    seq: int
    recv_ns: int
    symbol: str
    update_id: int
    bid_price: int
    bid_qty: int
    ask_price: int
    ask_qty: int
    exch_ms: int | None = None
    txn_ms: int | None = None


@event
class Ticker24h:
    """Rolling 24 h statistics of one instrument: the one ticker model of every venue.

    Binance's ``24hrTicker`` fills every field (``bid_qty``/``ask_qty``: ``B``/``A``, when
    sent); another venue fills what it sends and leaves the rest None (never a
    made-up value): each codec's header maps its fields.  ``open_price`` is the
    price 24 h ago (the window's open), ``volume`` is in the instrument's
    quantity unit (base currency or contracts), ``quote_volume`` in the quote
    currency; ``first_id``/``last_id`` are trade ids, ``count`` trades.

    ``partial`` marks a delta (Bybit linear/inverse send the changed fields
    only): its None fields are *unchanged*, not absent, and
    :class:`engine.tickers.TickerMerge` folds it into the symbol's last full
    ticker (its output is that merged, full ticker).
    """

    seq: int
    recv_ns: int
    symbol: str
    exch_ms: int | None
    last_price: int | None
    last_qty: int | None
    open_price: int | None
    high_price: int | None
    low_price: int | None
    vwap: int | None
    volume: int | None
    quote_volume: int | None
    price_change: int | None
    bid_price: int | None
    ask_price: int | None
    open_ms: int | None
    close_ms: int | None
    first_id: int | None
    last_id: int | None
    count: int | None
    bid_qty: int | None = None
    ask_qty: int | None = None
    partial: bool = False


@event
class Kline:
    """One candle as the exchange reports it; ``closed`` is Binance's ``x``.

    ``trades`` is the number of trades (``n``); ``first_id``/``last_id`` the
    trade ids it covers (``f``/``L``, -1 when none).
    """

    seq: int
    recv_ns: int
    symbol: str
    exch_ms: int | None
    interval: str
    start_ms: int
    end_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    trades: int
    closed: bool
    first_id: int
    last_id: int
    taker_buy_volume: int
    taker_buy_quote_volume: int


# --------------------------------------------------------------------------- session / control


@event
class SubscriptionAck:
    """Reply to a control request: ``result`` is None for (UN)SUBSCRIBE, the stream list for LIST."""

    seq: int
    recv_ns: int
    request_id: int | str | None
    result: list[str] | None


@event
class SubscriptionError:
    """Error reply to a control request (Binance codes 0..3)."""

    seq: int
    recv_ns: int
    request_id: int | str | None
    code: int
    msg: str


@event
class ServerShutdown:
    """The server announced maintenance: reconnect now (Binance ``serverShutdown``)."""

    seq: int
    recv_ns: int
    exch_ms: int | None


@event
class Heartbeat:
    """A venue's keep-alive traffic: the answer to our application ping (``"pong"``) or the
    server's own heartbeat (``"heartbeat"``); ``exch_ms`` when the venue stamps it."""

    seq: int
    recv_ns: int
    kind: str
    exch_ms: int | None


@event
class StreamSequence:
    """The exchange's connection-wide message counter, as the frame carried it.

    Coinbase Advanced Trade stamps every message of a connection (every channel
    and product, heartbeats included) with ``sequence_num``: a step other than
    +1 means messages were lost.  The codec only decodes the number; judging
    the steps is the book reducer's (:class:`engine.sequence_gaps.StreamNumbers`).
    ``source`` is the connection's URL.
    """

    seq: int
    recv_ns: int
    source: str
    number: int


@event
class DecodeError:
    """A frame the codec could not turn into events.  The frame itself stays in the journal.

    ``reason`` says what was wrong and where (field, value); ``excerpt`` holds
    at most :data:`EXCERPT_BYTES` bytes of the payload.
    """

    seq: int
    recv_ns: int
    source: str
    reason: str
    excerpt: bytes


# --------------------------------------------------------------------------- local (connection) events
# Not decoded from exchange bytes: the pipeline makes these from journaled
# connection frames, for every exchange alike.  Reducers need them: a closed
# connection breaks every diff chain that ran on it.


@event
class ConnectionOpened:
    seq: int
    recv_ns: int
    conn: int
    source: str


#: ``ConnectionClosed.reason`` of the close ``engine run`` makes when it stops
CAPTURE_STOPPED = "capture stopped"
#: ``ConnectionClosed.reason`` of the close an importer writes where an imported capture ends
IMPORT_ENDED = "end of capture"
#: reasons of a close that ends the recording rather than breaking the feed (the capture's
#: stop; the end of an imported Tardis capture): a book stays on the air at such a close, as
#: the last book the recording holds (nothing follows that could be published stale)
END_OF_RECORDING = frozenset({CAPTURE_STOPPED, IMPORT_ENDED})


@event
class ConnectionClosed:
    """The connection ended: ``code``/``reason`` as the peer (or we) closed it; None if dropped."""

    seq: int
    recv_ns: int
    conn: int
    source: str
    code: int | None
    reason: str


@event
class ConnectionFailed:
    """A connect attempt, a read or a REST request failed (timeout, refused, TLS, bad status)."""

    seq: int
    recv_ns: int
    conn: int
    source: str
    reason: str


@event
class FrameConn:
    """The decoded events that follow (until the next FrameConn) came over connection ``conn``.

    Made by the pipeline from the journal's ``conn`` column, only when a decoded
    frame's connection differs from the previous one's (and once after a
    restore): the book reducer needs it to follow one connection per book
    across a rotation's overlap and to know which books a close takes off the
    air.  ``conn`` 0 is the engine's own (REST answers).
    """

    seq: int
    recv_ns: int
    conn: int


@event
class Marker:
    """A note the engine wrote into the journal (e.g. ``"drift BTCUSDT"``, ``"resync"``)."""

    seq: int
    recv_ns: int
    source: str
    text: str


@event
class ControlSent:
    """A control message we sent (journaled dir=out): the rate limiter audits these on replay."""

    seq: int
    recv_ns: int
    conn: int
    source: str
    payload: bytes


MarketEvent: TypeAlias = Trade | DepthDiff | BookSnapshot | BookTicker | Ticker24h | Kline
Event: TypeAlias = (
    MarketEvent
    | SubscriptionAck
    | SubscriptionError
    | ServerShutdown
    | Heartbeat
    | StreamSequence
    | DecodeError
    | ConnectionOpened
    | ConnectionClosed
    | ConnectionFailed
    | Marker
    | ControlSent
)
