"""Bybit v5 public market data: frames → typed events, and events → frames (h11 style).

Owns the Bybit v5 dialect (``wss://stream.bybit.com/v5/public/{spot,linear,inverse}``)
in both directions: decoding ``orderbook.{depth}.{SYMBOL}`` snapshots and
deltas, ``publicTrade.{SYMBOL}``, subscribe/unsubscribe replies and pongs into
:mod:`engine.events`; and encoding what each side sends: the client's
subscribe / unsubscribe / ping messages (:class:`BybitSpot` and its
variants, on :class:`engine.codecs.base.VenueDefaults`) and the server's frames (:func:`book_frame`, :func:`trades_frame`,
:func:`reply_frame`, :func:`pong_frame`), which the simulator and the replay
server use and which the round-trip tests pair with ``decode``.  Must not:
do I/O, read the clock, keep state between frames, or raise on exchange
input: every frame it cannot read becomes one DecodeError naming the field.

Decisions worth knowing:

* **Books sync in-stream.**  After a subscribe Bybit sends a ``snapshot``,
  then ``delta`` messages whose ``u`` goes up by exactly 1 (per topic).  A
  snapshot always replaces the book (also the one with ``u = 1`` after a
  service restart, and depth-1 topics, which send only snapshots).  So a
  snapshot is ``BookSnapshot(origin="stream", depth=<topic depth>)`` and a
  delta is ``DepthDiff(first_id = last_id = u, prev_id=None)``; the chain rule
  is :class:`engine.book_sync.BybitRule`.  ``data.seq`` (the cross sequence)
  increases but is not continuous, so it checks nothing and is not kept.
  Bybit sends no book checksum.
* **REST bodies are not decoded.**  ``u`` is per topic, and
  ``/v5/market/orderbook`` is no topic a capture subscribes, so a REST body
  cannot chain onto the stream; a lost update is repaired by resubscribing
  (:meth:`BybitSpot.resync`: the subscribe brings a fresh snapshot), and
  ``snapshot_url`` is None.  A REST frame is a DecodeError that says so.
* **Times**: ``ts`` (the frame's generation time) is ``exch_ms``; ``cts``
  (matching engine) and a trade's ``T`` are ``txn_ms``.
* **Trades**: ``S`` is the taker side (``"Buy"`` → buy).  ``i`` is a decimal
  id on spot (kept as ``trade_id``) but a UUID on linear/inverse, which the
  one trade model (int ids) cannot hold: those trades get ``trade_id = 0``
  ("no id", which the trade selection does not use for duplicate checks).
* **Control replies**: ``{"success":true,"op":"subscribe","req_id":"7"}`` is a
  SubscriptionAck (``req_id`` back as an int when it is one), ``success:
  false`` a SubscriptionError (code 0: Bybit sends only ``ret_msg``).  Pongs
  (spot: ``"op":"ping"`` with ``ret_msg "pong"``; linear/inverse ``"op":"pong"``
  with the server time) are :class:`~engine.events.Heartbeat` ``"pong"``.
* **Tickers** (``tickers.{SYMBOL}``) → :class:`~engine.events.Ticker24h`:
  ``lastPrice`` → ``last_price``, ``prevPrice24h`` → ``open_price`` (the price
  24 h ago), ``highPrice24h``/``lowPrice24h``, ``volume24h`` → ``volume``
  (base currency on spot/linear, contracts on inverse), ``turnover24h`` →
  ``quote_volume`` (spot/linear; on inverse it is in the base coin, which the
  model has no field for: None), ``bid1Price``/``bid1Size``/``ask1Price``/
  ``ask1Size`` → the best bid/ask and sizes (linear/inverse only), ``ts`` →
  ``exch_ms``.  Not sent, so None: ``last_qty``, ``vwap``, ``price_change``
  (Bybit sends only the ratio ``price24hPcnt``), times, trade ids, ``count``.
  Not kept: mark/index prices, funding, open interest, ``price24hPcnt``.
  Spot sends snapshots only; linear/inverse send one ``snapshot`` and then
  ``delta`` messages with the changed fields only: a delta is a Ticker24h with
  ``partial=True`` whose None fields are unchanged.  Merging it into the
  symbol's last full ticker needs memory across frames, which a codec must
  not keep (a replay may start at any checkpoint), so the merge is a reducer,
  :class:`engine.tickers.TickerMerge` (in the pipeline of the codecs with
  :attr:`BybitSpot.ticker_deltas`), whose output is the full ticker.  No
  :class:`~engine.events.BookTicker`: the ticker's best bid/ask carry no
  ``u`` of the book topic, and the book reducer compares a BookTicker with the
  book at its update id.
* Unknown topics and messages are DecodeErrors (counted, never silently dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import attrs
import msgspec
import orjson

from engine import num
from engine.codecs.base import (
    ConnLimits,
    KeepAlive,
    Resubscribe,
    SyncRule,
    VenueDefaults,
    decode_error,
    internal_reason,
)
from engine.codecs.binance_wire import MAX, Bad, json_object, levels, number
from engine.codecs.bybit_symbols import inverse_name, linear_name, spot_name
from engine.codecs.ticker_wire import decode_ticker
from engine.events import (
    BUY,
    SELL,
    BookSnapshot,
    DepthDiff,
    Heartbeat,
    Side,
    SubscriptionAck,
    SubscriptionError,
    Ticker24h,
    Trade,
)

__all__ = [
    "BybitSpot",
    "BybitLinear",
    "BybitInverse",
    "CHANNELS",
    "book_frame",
    "trades_frame",
    "reply_frame",
    "pong_frame",
    "ticker_frame",
    "ticker_delta",
]

Id = Annotated[int, msgspec.Meta(ge=0, le=MAX)]
Ms = Annotated[int, msgspec.Meta(ge=0, le=MAX)]
RawLevels = list[tuple[str, str]]

#: channel name (as given to :meth:`BybitSpot.streams`) → topic prefix.
CHANNELS: dict[str, str] = {
    "depth": "orderbook.50",
    "depth1": "orderbook.1",
    "depth50": "orderbook.50",
    "depth200": "orderbook.200",
    "depth1000": "orderbook.1000",
    "trade": "publicTrade",
    "ticker": "tickers",
    "tickers": "tickers",
}
#: Ticker24h field → Bybit ``tickers`` key (module docstring); spot sends no bid1/ask1
_TICKER: dict[str, str] = {
    "last_price": "lastPrice", "open_price": "prevPrice24h", "high_price": "highPrice24h",
    "low_price": "lowPrice24h", "volume": "volume24h", "quote_volume": "turnover24h",
    "bid_price": "bid1Price", "bid_qty": "bid1Size", "ask_price": "ask1Price",
    "ask_qty": "ask1Size",
}  # fmt: skip
#: per category: inverse's ``turnover24h`` is in the base coin, not the quote currency;
#: spot sends no best bid/ask
_TICKER_OF = {
    "linear": _TICKER,
    "inverse": {k: v for k, v in _TICKER.items() if k != "quote_volume"},
    "spot": {k: v for k, v in _TICKER.items() if not k.startswith(("bid", "ask"))},
}


def ticker_fields(category: str) -> dict[str, str]:
    """Ticker24h field → ``tickers`` key of a category (the fields its tickers send)."""
    return _TICKER_OF.get(category, _TICKER)


_BOOK_PREFIX = b'{"topic":"orderbook.'


# --------------------------------------------------------------------------- wire shapes


class _BookData(msgspec.Struct, gc=False):
    s: str
    b: RawLevels
    a: RawLevels
    u: Id
    seq: Id | None = None


class _Book(msgspec.Struct, gc=False):
    topic: str
    type: str
    data: _BookData
    ts: Ms | None = None
    cts: Ms | None = None


class _TradeData(msgspec.Struct, gc=False):
    T: Ms
    s: str
    S: str
    v: str
    p: str
    i: str


class _Trades(msgspec.Struct, gc=False):
    topic: str
    data: list[_TradeData]
    ts: Ms | None = None
    type: str | None = None


class _Reply(msgspec.Struct, gc=False):
    op: str
    success: bool | None = None
    ret_msg: str = ""
    req_id: str | None = None
    args: list[Any] | None = None


def _convert(obj: Any, typ: type, what: str) -> Any:
    try:
        return msgspec.convert(obj, typ)
    except msgspec.ValidationError as exc:
        raise Bad(f"{what}: {exc}") from None


def _request_id(rid: str | None) -> int | str | None:
    """Bybit echoes ``req_id`` as a string: back to the int we sent when it is one."""
    if not rid:
        return None
    if rid.isascii() and rid.isdigit() and len(rid) < 19:
        return int(rid)
    return rid


def _trade_id(i: str) -> int:
    """Spot's decimal trade id, else 0 (a UUID: linear/inverse) — see the module docstring."""
    if i.isascii() and i.isdigit() and 0 < len(i) < 20:
        v = int(i)
        if v <= MAX:
            return v
    return 0


# --------------------------------------------------------------------------- the codec


class BybitSpot(VenueDefaults):
    """Bybit v5 spot (``--exchange bybit``); :class:`BybitLinear`/:class:`BybitInverse` differ in host path.

    Limits: spot takes at most 10 topics a subscribe request (Bybit's docs; used for
    linear/inverse too, whose documented bound is 21,000 characters of args a
    connection); Bybit publishes no per-connection message rate for public streams,
    so 10 a second and 200 topics a connection are our conservative choices.
    Keep-alive: ``{"op":"ping"}`` every 20 s, as Bybit recommends.  No REST snapshot:
    a verification request is not answered (the ``u`` chain vouches for every delta);
    a resync resubscribes the book topic.
    """

    name = "bybit"
    category = "spot"
    sync_rule = SyncRule.BYBIT
    ws_base = "wss://stream.bybit.com/v5/public/spot"
    rest_base = "https://api.bybit.com"
    default_channels = ("trade", "depth")
    limits = ConnLimits(
        streams_in_url=False, max_per_subscribe=10, max_per_conn=200, control_per_window=10
    )
    keepalive = KeepAlive(b'{"op":"ping"}', 20.0)
    #: tickers come as snapshot + deltas (linear/inverse): the pipeline merges them
    ticker_deltas = False

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name
        self._book = msgspec.json.Decoder(_Book)
        self._generic = msgspec.json.Decoder()
        self._prices: dict[str, int] = {}  # price string → units: a pure memo (see wire.levels)

    # ..................................................................... decode

    def decode(
        self, seq: int, recv_ns: int, kind: str, source: str, payload: bytes
    ) -> Sequence[Any]:
        """Events of one journaled inbound frame; never raises (see the module docstring)."""
        try:
            if kind == "text" or kind == "binary":
                if payload[: len(_BOOK_PREFIX)] == _BOOK_PREFIX:
                    try:
                        msg = self._book.decode(payload)
                    except (msgspec.DecodeError, UnicodeDecodeError):
                        pass  # the generic path gives the definitive error
                    else:
                        return self._orderbook(seq, recv_ns, msg)
                return self._decode_generic(seq, recv_ns, payload)
            if kind == "rest":
                raise Bad(
                    "Bybit books sync from in-stream snapshots (resubscribe); "
                    "REST bodies are not decoded"
                )
            raise Bad(f"{self.name} codec decodes text frames, not {kind!r}")
        except Bad as exc:
            reason = str(exc)
        except Exception as exc:  # never raise out of a codec: a bug here is still just an event
            reason = internal_reason(exc)
        return [decode_error(seq, recv_ns, source, reason, payload)]

    def _decode_generic(self, seq: int, recv_ns: int, payload: bytes) -> list[Any]:
        obj = json_object(self._generic, payload)
        topic = obj.get("topic")
        if topic is not None:
            if not isinstance(topic, str):
                raise Bad(f"'topic' must be a string, got {type(topic).__name__}")
            if topic.startswith("orderbook."):
                return self._orderbook(seq, recv_ns, _convert(obj, _Book, topic[:60]))
            if topic.startswith("publicTrade."):
                return self._trades(seq, recv_ns, _convert(obj, _Trades, topic[:60]))
            if topic.startswith("tickers."):
                return [self._ticker(seq, recv_ns, topic, obj)]
            raise Bad(f"unknown topic {topic[:60]!r}")
        if "op" in obj:
            return self._reply(seq, recv_ns, _convert(obj, _Reply, "control reply"))
        keys = ",".join(sorted(str(k)[:20] for k in obj)[:10])
        raise Bad(f"unknown message (no topic or op; keys {keys})")

    def _orderbook(self, seq: int, recv_ns: int, m: _Book) -> list[Any]:
        parts = m.topic.split(".")
        if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 6:
            raise Bad(f"orderbook topic {m.topic[:60]!r}: expected orderbook.<depth>.<symbol>")
        d = m.data
        if d.s != parts[2]:
            raise Bad(f"orderbook: data.s {d.s[:40]!r} is not the topic's symbol {parts[2][:40]!r}")
        bids = levels(d.b, "b", self._prices)
        asks = levels(d.a, "a", self._prices)
        if m.type == "delta":
            return [DepthDiff(seq, recv_ns, d.s, d.u, d.u, None, m.ts, m.cts, bids, asks)]
        if m.type == "snapshot":
            return [
                BookSnapshot(
                    seq, recv_ns, d.s, d.u, bids, asks, int(parts[1]), "stream", m.ts, m.cts
                )
            ]
        raise Bad(f"orderbook: unknown type {m.type[:40]!r} (expected snapshot or delta)")

    def _trades(self, seq: int, recv_ns: int, m: _Trades) -> list[Any]:
        symbol = m.topic.partition(".")[2]
        out: list[Any] = []
        for k, t in enumerate(m.data):
            if t.s != symbol:
                raise Bad(
                    f"publicTrade data[{k}].s {t.s[:40]!r} is not the topic's {symbol[:40]!r}"
                )
            side: Side
            if t.S == "Buy":
                side = BUY
            elif t.S == "Sell":
                side = SELL
            else:
                raise Bad(f"publicTrade data[{k}].S: {t.S[:20]!r} is neither Buy nor Sell")
            tid = _trade_id(t.i)
            out.append(
                Trade(
                    seq,
                    recv_ns,
                    t.s,
                    tid,
                    number(t.p, f"data[{k}].p"),
                    number(t.v, f"data[{k}].v"),
                    side,
                    m.ts,
                    t.T,
                    tid,
                    tid,
                    False,
                )
            )
        return out

    def _ticker(self, seq: int, recv_ns: int, topic: str, m: dict[str, Any]) -> Ticker24h:
        symbol = topic.partition(".")[2]
        d = m.get("data")
        if not isinstance(d, dict) or d.get("symbol") != symbol:
            raise Bad(f"{topic[:60]}: 'data' must be an object whose symbol is the topic's")
        typ = m.get("type")
        if typ not in ("snapshot", "delta"):
            raise Bad(f"{topic[:60]}: unknown type {str(typ)[:40]!r} (expected snapshot or delta)")
        ts = m.get("ts")
        if ts is not None and (
            isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= MAX
        ):
            raise Bad(f"{topic[:60]}: 'ts' must be a millisecond time, got {ts!r:.40}")
        return decode_ticker(
            seq, recv_ns, symbol, ts, d, ticker_fields(self.category), "data",
            partial=typ == "delta",
        )  # fmt: skip

    def _reply(self, seq: int, recv_ns: int, r: _Reply) -> list[Any]:
        rid = _request_id(r.req_id)
        if r.op == "pong":  # linear/inverse: args = [server time ms]
            a = r.args[0] if r.args else None
            ms = (
                int(a)
                if isinstance(a, str) and a.isascii() and a.isdigit() and len(a) < 19
                else None
            )
            return [Heartbeat(seq, recv_ns, "pong", ms)]
        if r.op == "ping" and r.ret_msg == "pong":  # spot
            return [Heartbeat(seq, recv_ns, "pong", None)]
        if r.op in ("subscribe", "unsubscribe"):
            if r.success is None:
                raise Bad(f"{r.op} reply without 'success'")
            if r.success:
                return [SubscriptionAck(seq, recv_ns, rid, None)]
            return [SubscriptionError(seq, recv_ns, rid, 0, r.ret_msg[:500])]
        raise Bad(f"unknown op {r.op[:40]!r} in a control reply")

    # ..................................................................... outbound (client)

    def streams(self, symbols: Sequence[str], channels: Sequence[str]) -> list[str]:
        """Topics for symbols × channels, e.g. ``orderbook.50.BTCUSDT``, ``publicTrade.BTCUSDT``.

        Raises:
            ValueError: an unknown channel (the message lists the valid ones), or two
                book depths (``depth1`` and ``depth``...): one book per symbol.
        """
        out: list[str] = []
        books = set()
        for ch in channels:
            prefix = CHANNELS.get(ch)
            if prefix is None:
                raise ValueError(f"unknown Bybit channel {ch!r}; valid: {', '.join(CHANNELS)}")
            if prefix.startswith("orderbook."):
                books.add(prefix)
            out.extend(f"{prefix}.{s.upper()}" for s in symbols)
        if len(books) > 1:
            raise ValueError(
                f"one order book depth per symbol, not {', '.join(sorted(books))}: each topic"
                " counts its own u and a symbol has one book"
            )
        return list(dict.fromkeys(out))  # "depth" and "depth50" name one topic

    def ws_url(self, base_url: str, streams: Sequence[str]) -> str:
        """The connection URL: Bybit subscribes by message, so it is the category's URL itself."""
        return base_url.rstrip("/")

    def _op(self, op: str, streams: Sequence[str], request_id: int) -> list[bytes]:
        """One request per :attr:`limits` ``.max_per_subscribe`` topics, ids ``request_id``, +1 ..."""
        if not streams:
            raise ValueError(f"{op} needs at least one topic")
        k = self.limits.max_per_subscribe
        return [
            orjson.dumps(
                {"req_id": str(request_id + n), "op": op, "args": list(streams[i : i + k])}
            )
            for n, i in enumerate(range(0, len(streams), k))
        ]

    def subscribe(self, streams: Sequence[str], request_id: int) -> list[bytes]:
        return self._op("subscribe", streams, request_id)

    def unsubscribe(self, streams: Sequence[str], request_id: int) -> list[bytes]:
        return self._op("unsubscribe", streams, request_id)

    def resync(
        self, symbol: str, streams: Sequence[str], rest_base: str, limit: int, request_id: int
    ) -> Resubscribe | None:
        """Unsubscribe and subscribe ``symbol``'s book topic(s) again: Bybit answers a subscribe
        with a fresh snapshot (it has no REST snapshot that chains onto a topic's ``u``)."""
        book = tuple(t for t in streams if t.startswith("orderbook.") and t.endswith(f".{symbol}"))
        if not book:
            return None
        # ids 2r and 2r + 1: distinct for distinct r even when the caller counts r by one
        return Resubscribe(
            book,
            tuple(self.unsubscribe(book, 2 * request_id)),
            tuple(self.subscribe(book, 2 * request_id + 1)),
        )

    def normalized(self, symbol: str) -> str:
        return spot_name(symbol)


class BybitLinear(BybitSpot):
    """Bybit v5 USDT/USDC perpetuals and futures (``--exchange bybit-linear``)."""

    name = "bybit-linear"
    category = "linear"
    ticker_deltas = True
    ws_base = "wss://stream.bybit.com/v5/public/linear"

    def normalized(self, symbol: str) -> str:
        return linear_name(symbol)


class BybitInverse(BybitSpot):
    """Bybit v5 inverse contracts (``--exchange bybit-inverse``); quantities are contracts."""

    name = "bybit-inverse"
    category = "inverse"
    ticker_deltas = True
    ws_base = "wss://stream.bybit.com/v5/public/inverse"

    def normalized(self, symbol: str) -> str:
        return inverse_name(symbol)


# --------------------------------------------------------------------------- outbound (server)
# What the simulator and the replay server send; ``decode`` reads these back exactly.


def _levels_out(lv: Sequence[tuple[int, int]], px_dec: int, qty_dec: int) -> list[list[str]]:
    return [[num.render(p, px_dec), num.render(q, qty_dec)] for p, q in lv]


def book_frame(
    ev: BookSnapshot | DepthDiff, depth: int, px_dec: int, qty_dec: int, cross_seq: int = 0
) -> bytes:
    """The ``orderbook.<depth>.<symbol>`` frame of a snapshot or a diff.

    Prices and quantities are rendered with ``px_dec`` / ``qty_dec`` decimals
    (Bybit prints each instrument at fixed decimals).  A diff's ``last_id`` is
    its ``u``; ``cross_seq`` is the frame's ``seq`` (not kept by ``decode``).

    Raises:
        ValueError: a value needs more decimals than given (it would not be exact).
    """
    snap = type(ev) is BookSnapshot
    msg: dict[str, Any] = {
        "topic": f"orderbook.{depth}.{ev.symbol}",
        "type": "snapshot" if snap else "delta",
    }
    if ev.exch_ms is not None:
        msg["ts"] = ev.exch_ms
    msg["data"] = {
        "s": ev.symbol,
        "b": _levels_out(ev.bids, px_dec, qty_dec),
        "a": _levels_out(ev.asks, px_dec, qty_dec),
        "u": ev.last_id,
        "seq": cross_seq,
    }
    if ev.txn_ms is not None:
        msg["cts"] = ev.txn_ms
    return orjson.dumps(msg)


def trades_frame(
    trades: Sequence[Trade], px_dec: int, qty_dec: int, ts: int, uuid_ids: bool = False
) -> bytes:
    """The ``publicTrade.<symbol>`` frame of one symbol's trades (generated at ``ts`` ms).

    Spot's ids are decimal; ``uuid_ids`` spells them UUID-shaped as linear/inverse
    send them (derived from ``trade_id``; they decode to 0, "no id").  A trade with
    ``trade_id`` 0 always gets a UUID-shaped id.

    Raises:
        ValueError: no trades, trades of several symbols, a trade without ``txn_ms``,
            or a value that needs more decimals than given.
    """
    if not trades or len({t.symbol for t in trades}) != 1:
        raise ValueError("trades_frame takes the trades of exactly one symbol")
    data = []
    for k, t in enumerate(trades):
        if t.txn_ms is None:
            raise ValueError("a Bybit trade carries its time T: txn_ms is required")
        if t.trade_id > 0 and not uuid_ids:
            i = str(t.trade_id)
        else:
            n = t.trade_id if t.trade_id > 0 else k
            i = f"{n >> 48 & 0xFFFFFFFF:08x}-0000-5000-8000-{n & 0xFFFFFFFFFFFF:012x}"
        data.append(
            {
                "T": t.txn_ms,
                "s": t.symbol,
                "S": "Buy" if t.side == BUY else "Sell",
                "v": num.render(t.qty, qty_dec),
                "p": num.render(t.price, px_dec),
                "L": "ZeroPlusTick",
                "i": i,
                "BT": False,
            }
        )
    return orjson.dumps(
        {"topic": f"publicTrade.{trades[0].symbol}", "type": "snapshot", "ts": ts, "data": data}
    )


def ticker_frame(ev: Ticker24h, category: str, px_dec: int, qty_dec: int) -> bytes:
    """The ``tickers.<symbol>`` frame of a ticker: a ``delta`` when ``ev.partial``, else a snapshot.

    Prices at ``px_dec`` decimals, sizes and volumes at ``qty_dec`` (turnover at
    both summed: price × size needs them); the fields ``ev`` lacks are left out.

    Raises:
        ValueError: a value that needs more decimals than given (it would not be exact).
    """
    fields = ticker_fields(category)
    data: dict[str, Any] = {"symbol": ev.symbol}
    for f, key in fields.items():
        v = getattr(ev, f)
        if v is not None:
            dec = qty_dec if f in ("volume", "bid_qty", "ask_qty") else px_dec
            data[key] = num.render(v, px_dec + qty_dec if f == "quote_volume" else dec)
    msg: dict[str, Any] = {
        "topic": f"tickers.{ev.symbol}",
        "type": "delta" if ev.partial else "snapshot",
        "data": data,
    }
    if ev.exch_ms is not None:
        msg["ts"] = ev.exch_ms
    return orjson.dumps(msg)


def ticker_delta(prev: Ticker24h, new: Ticker24h, category: str) -> Ticker24h | None:
    """The delta a linear/inverse ``tickers`` topic sends to take ``prev`` to ``new``: the
    fields of the category's ticker whose value changed (``partial``, ``new``'s ``ts``), or
    None when none did (no delta is sent).  Its merge is :class:`engine.tickers.TickerMerge`'s."""
    changed = {f: v for f in ticker_fields(category) if (v := getattr(new, f)) != getattr(prev, f)}
    if not changed:
        return None
    kept = ("seq", "recv_ns", "symbol", "exch_ms", "partial")
    rest: dict[str, Any] = {
        a.name: changed.get(a.name) for a in attrs.fields(Ticker24h) if a.name not in kept
    }
    return attrs.evolve(new, partial=True, **rest)


def reply_frame(op: str, request_id: int | str | None, success: bool, ret_msg: str = "") -> bytes:
    """The server's reply to a subscribe/unsubscribe request."""
    rid = "" if request_id is None else str(request_id)
    return orjson.dumps(
        {"success": success, "ret_msg": ret_msg, "conn_id": "wiretape-sim", "req_id": rid, "op": op}
    )


def pong_frame(category: str, request_id: int | str | None, now_ms: int) -> bytes:
    """The reply to a client ping: spot's shape, or linear/inverse's ``"op":"pong"`` shape."""
    rid = "" if request_id is None else str(request_id)
    if category == "spot":
        return orjson.dumps(
            {
                "success": True,
                "ret_msg": "pong",
                "conn_id": "wiretape-sim",
                "req_id": rid,
                "op": "ping",
            }
        )
    return orjson.dumps(
        {"req_id": rid, "op": "pong", "args": [str(now_ms)], "conn_id": "wiretape-sim"}
    )
