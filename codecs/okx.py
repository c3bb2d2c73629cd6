"""OKX v5 public codec: journaled frames → typed events, and events → the frames OKX sends.

Owns: decoding OKX v5 public WebSocket frames (``books`` snapshots and
updates, ``trades``, the ``event`` replies to subscribe/unsubscribe, errors
and notices, the text ``pong``) and REST ``GET /api/v5/market/books`` bodies;
encoding the same events back into OKX's frames (what the simulator and the
replay server send: :meth:`Okx.encode`), and the client's messages
(subscribe, unsubscribe, ``ping``).  Must not: do I/O, read the clock, keep
state between frames (the price memo is a pure memo), or raise on exchange
input: a frame it cannot read is one :class:`~engine.events.DecodeError`.

Mapping (the sync rule is :class:`engine.book_sync.OkxRule`):

* ``books`` (and the ``books-l2-tbt``/``books50-l2-tbt`` variants):
  ``action: "snapshot"`` → :class:`BookSnapshot` (``origin="stream"``: it
  resets the book), ``"update"`` → :class:`DepthDiff`.  Ids:
  ``first_id = last_id = seqId``, ``prev_id = prevSeqId``.  Recordings from
  before OKX sent sequence numbers (2022) carry neither: then both ids are the
  message's ``ts`` and ``prev_id`` is None, which tells the rule that only the
  checksum can judge the chain.  ``checksum`` 0 is OKX's "no checksum" (sent
  since 2026-06) and becomes None; any other value is verified by the rule.
  Levels are ``[px, sz, "0", orders]``: size "0" removes (OKX often removes
  levels we never had: normal).  ``exch_ms`` is ``ts``.
* ``trades``: ``side`` is already the taker's (the aggressor); one message may
  carry several trades.  A ``count`` > 1 (OKX aggregates the fills of one
  taker order; ``tradeId`` is the last) is an aggregate trade covering
  ``tradeId - count + 1 .. tradeId``.
* ``{"event":"subscribe"|"unsubscribe","arg":{..},"id"?}`` →
  :class:`SubscriptionAck` (``result`` the stream name ``channel:instId``);
  ``{"event":"error","code","msg"}`` → :class:`SubscriptionError`;
  ``{"event":"notice","code":"64008"}`` (service upgrade, reconnect) →
  :class:`ServerShutdown`; the text ``pong`` → :class:`Heartbeat`;
  ``channel-conn-count`` is journaled control traffic with no event.
* REST books: ``{"code":"0","data":[{"asks","bids","ts","seqId"}]}`` →
  :class:`BookSnapshot` (``origin="rest"``, ``depth`` the ``sz`` asked for);
  a non-zero ``code`` is a DecodeError with OKX's message.

* ``tickers`` → :class:`Ticker24h` (one per data item; the fields OKX does not
  send are None: ``vwap``, ``price_change``, ``open_ms``/``close_ms``, trade
  ids and ``count``).  ``last`` → ``last_price``, ``lastSz`` → ``last_qty``,
  ``open24h`` → ``open_price`` (the price 24 h ago), ``high24h``/``low24h``,
  ``vol24h`` → ``volume`` (base currency on SPOT, contracts on SWAP/FUTURES),
  ``bidPx``/``bidSz``/``askPx``/``askSz`` → ``bid_price``/``bid_qty``/
  ``ask_price``/``ask_qty`` ("" = no best level: None), ``ts`` → ``exch_ms``.
  ``volCcy24h`` is the quote currency volume only on SPOT (→ ``quote_volume``);
  on derivatives it is in the base currency, which the model has no field for
  (None, not mislabelled).  ``sodUtc0``/``sodUtc8`` are not kept.  No
  :class:`BookTicker`: OKX's best bid/ask carry no book update id, and the book
  reducer compares a BookTicker with the book at that id.

Not decoded (a DecodeError names the channel, so an undecoded subscription is
visible): every other channel.

Numbers: prices and sizes are strings, parsed by :func:`engine.num.parse`
(through the shared :func:`engine.codecs.binance_wire.number` and ``levels``
helpers: non-negative, int64).  The encoder writes OKX's shortest decimal text
(:func:`engine.codecs.okx_checksum.text`), so encode → decode is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import orjson

from engine.codecs.base import (
    FUTURE,
    PERPETUAL,
    ConnLimits,
    KeepAlive,
    Resubscribe,
    SyncRule,
    VenueDefaults,
    decode_error,
    expiry_yymmdd,
    instrument_name,
    internal_reason,
)
from engine.codecs.binance_wire import MAX, Bad, json_object, levels, number
from engine.codecs.okx_checksum import text
from engine.codecs.ticker_wire import decode_ticker, encode_fields
from engine.events import (
    BUY,
    SELL,
    BookSnapshot,
    DepthDiff,
    Heartbeat,
    ServerShutdown,
    SubscriptionAck,
    SubscriptionError,
    Ticker24h,
    Trade,
)

__all__ = ["Okx", "CHANNELS", "BOOK_CHANNELS", "REST_BOOKS_PATH", "stream_name"]

#: channel as given to :meth:`Okx.streams` → OKX channel name ("depth"/"trade": the engine's names)
CHANNELS: dict[str, str] = {
    "books": "books",
    "books-l2-tbt": "books-l2-tbt",
    "books50-l2-tbt": "books50-l2-tbt",
    "trades": "trades",
    "tickers": "tickers",
    "depth": "books",
    "trade": "trades",
    "ticker": "tickers",
}
#: OKX book channels → the depth OKX keeps in them (levels per side)
BOOK_CHANNELS: dict[str, int] = {"books": 400, "books-l2-tbt": 400, "books50-l2-tbt": 50}
REST_BOOKS_PATH = "/api/v5/market/books"
#: args per subscribe request, streams per connection (see :class:`Okx`)
MAX_PER_SUBSCRIBE = 100
MAX_PER_CONN = 200
#: OKX notice code: "the connection will soon be closed for a service upgrade"
_NOTICE_UPGRADE = "64008"
_SILENT_EVENTS = frozenset({"channel-conn-count", "channel-conn-count-error"})
#: Ticker24h field → OKX ``tickers`` key (module docstring); SPOT adds ``volCcy24h``
_TICKER: dict[str, str] = {
    "last_price": "last", "last_qty": "lastSz", "open_price": "open24h",
    "high_price": "high24h", "low_price": "low24h", "volume": "vol24h",
    "bid_price": "bidPx", "bid_qty": "bidSz", "ask_price": "askPx", "ask_qty": "askSz",
}  # fmt: skip
_SPOT_TICKER = {**_TICKER, "quote_volume": "volCcy24h"}


# --------------------------------------------------------------------------- wire shapes


class _Arg(msgspec.Struct, gc=False):
    channel: str
    instId: str = ""


class _Book(msgspec.Struct, gc=False):
    asks: list[list[str]]
    bids: list[list[str]]
    ts: str
    checksum: int | None = None
    prevSeqId: int | None = None
    seqId: int | None = None


class _BooksMsg(msgspec.Struct, gc=False):
    arg: _Arg
    data: list[_Book]
    action: str = ""


class _Trade(msgspec.Struct, gc=False):
    instId: str
    tradeId: str
    px: str
    sz: str
    side: str
    ts: str
    count: str | None = None


class _TradesMsg(msgspec.Struct, gc=False):
    arg: _Arg
    data: list[_Trade]


class _Rest(msgspec.Struct, gc=False):
    code: str
    msg: str = ""
    data: list[_Book] = []


def stream_name(channel: str, inst_id: str) -> str:
    """The engine's name of one OKX subscription: ``"books:BTC-USDT"``."""
    return f"{channel}:{inst_id}"


def _book_keys(symbol: str) -> set[tuple[str, str]]:
    return {(ch, symbol) for ch in BOOK_CHANNELS}


def _ms(s: str, where: str) -> int:
    if not (s.isascii() and s.isdigit() and len(s) < 19):
        raise Bad(f"{where}: not a millisecond time {s[:40]!r}")
    return int(s)


def _pairs(raw: list[list[str]], side: str, prices: dict[str, int]) -> list[tuple[int, int]]:
    """``[[px, sz, "0", orders], ...]`` → unit pairs (the shared ``levels`` parser)."""
    for i, lv in enumerate(raw):
        if len(lv) < 2:
            raise Bad(f"{side}[{i}]: a level needs [price, size, ...], got {len(lv)} fields")
    return levels([(lv[0], lv[1]) for lv in raw], side, prices)


def _level_text(levels_: Sequence[tuple[int, int]]) -> list[list[str]]:
    return [[text(p), text(q), "0", "1" if q else "0"] for p, q in levels_]


def _inst_type(inst_id: str) -> str:
    """OKX's instType from an instId's shape (``BTC-USDT`` spot, ``-SWAP``, else futures)."""
    parts = inst_id.split("-")
    return "SPOT" if len(parts) == 2 else "SWAP" if parts[-1] == "SWAP" else "FUTURES"


def _tickers(seq: int, recv_ns: int, data: Any) -> list[Any]:
    """The Ticker24h of each ``tickers`` data item (module docstring)."""
    if not isinstance(data, list):
        raise Bad("tickers: 'data' must be an array")
    out: list[Any] = []
    for i, d in enumerate(data):
        where = f"tickers data[{i}]"
        if not isinstance(d, dict) or not isinstance(d.get("instId"), str) or not d["instId"]:
            raise Bad(f"{where}: an object with an instId")
        inst = d["instId"]
        ts = d.get("ts")
        if not isinstance(ts, str):
            raise Bad(f"{where}.ts: expected a millisecond time string")
        kind = d.get("instType") or _inst_type(inst)
        fields = _SPOT_TICKER if kind == "SPOT" else _TICKER
        out.append(decode_ticker(seq, recv_ns, inst, _ms(ts, f"{where}.ts"), d, fields, where))
    return out


# --------------------------------------------------------------------------- codec


class Okx(VenueDefaults):
    """OKX v5 public (``wss://ws.okx.com:8443/ws/v5/public``): decode and encode.

    Live: streams are subscribed after connecting (none in the URL), at most
    :data:`MAX_PER_SUBSCRIBE` args a request (OKX caps a request at 64 KB of
    args) and :data:`MAX_PER_CONN` a connection (our choice: OKX publishes
    no per-connection cap for public channels); OKX allows 480 subscribe /
    unsubscribe requests per connection per hour.  A text ``ping`` every 25 s
    (OKX disconnects after 30 s without traffic) is answered by ``pong``.  A
    book is resynced by unsubscribing and subscribing its ``books`` stream:
    OKX then sends a fresh snapshot, which resets the book (the checksum
    failure procedure OKX documents).
    """

    name = "okx"
    sync_rule = SyncRule.OKX
    ws_base = "wss://ws.okx.com:8443"
    ws_path = "/ws/v5/public"
    rest_base = "https://www.okx.com"
    depth_path = REST_BOOKS_PATH
    default_channels = ("books", "trades")
    limits = ConnLimits(
        streams_in_url=False,
        max_per_subscribe=MAX_PER_SUBSCRIBE,
        max_per_conn=MAX_PER_CONN,
        control_per_window=480,
        control_window_s=3600.0,
    )
    keepalive = KeepAlive(b"ping", 25.0)

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name
        self._books = msgspec.json.Decoder(_BooksMsg)
        self._trades = msgspec.json.Decoder(_TradesMsg)
        self._rest = msgspec.json.Decoder(_Rest)
        self._generic = msgspec.json.Decoder()
        self._prices: dict[str, int] = {}  # price string → units: a pure memo (wire.levels)

    # ..................................................................... decode

    def decode(
        self, seq: int, recv_ns: int, kind: str, source: str, payload: bytes
    ) -> Sequence[Any]:
        """Events of one journaled inbound frame; never raises (see the module docstring)."""
        try:
            if kind == "text" or kind == "binary":
                if payload == b"pong":
                    return [Heartbeat(seq, recv_ns, "pong", None)]
                if payload[:19] == b'{"arg":{"channel":"':
                    end = payload.find(b'"', 19)
                    ch = payload[19:end]
                    if ch == b"books" or ch == b"books-l2-tbt" or ch == b"books50-l2-tbt":
                        try:
                            msg = self._books.decode(payload)
                        except (msgspec.DecodeError, UnicodeDecodeError):
                            pass  # the generic path names the problem
                        else:
                            return self._book_events(seq, recv_ns, msg)
                    elif ch == b"trades" or ch == b"trades-all":
                        try:
                            tmsg = self._trades.decode(payload)
                        except (msgspec.DecodeError, UnicodeDecodeError):
                            pass
                        else:
                            return self._trade_events(seq, recv_ns, tmsg)
                return self._decode_generic(seq, recv_ns, payload)
            if kind == "rest":
                return self._decode_rest(seq, recv_ns, source, payload)
            raise Bad(f"{self.name} codec decodes text and rest frames, not {kind!r}")
        except Bad as exc:
            reason = str(exc)
        except Exception as exc:  # never raise out of a codec: a bug here is still just an event
            reason = internal_reason(exc)
        return [decode_error(seq, recv_ns, source, reason, payload)]

    def _decode_generic(self, seq: int, recv_ns: int, payload: bytes) -> list[Any]:
        obj = json_object(self._generic, payload)
        ev = obj.get("event")
        if ev is not None:
            return self._event(seq, recv_ns, obj, ev)
        arg = obj.get("arg")
        if isinstance(arg, dict) and "data" in obj:
            ch = arg.get("channel")
            where = f"channel {str(ch)[:40]!r}"
            if ch in BOOK_CHANNELS:
                return self._book_events(seq, recv_ns, self._convert(obj, _BooksMsg, where))
            if ch in ("trades", "trades-all"):
                return self._trade_events(seq, recv_ns, self._convert(obj, _TradesMsg, where))
            if ch == "tickers":
                return _tickers(seq, recv_ns, obj["data"])
            raise Bad(f"{where} is not decoded (no event type for it)")
        keys = ",".join(sorted(str(k)[:20] for k in obj)[:10])
        raise Bad(f"unknown message (no 'event' or 'arg'+'data'; keys {keys})")

    @staticmethod
    def _convert(obj: Any, typ: type, what: str) -> Any:
        try:
            return msgspec.convert(obj, typ)
        except msgspec.ValidationError as exc:
            raise Bad(f"{what}: {exc}") from None

    def _event(self, seq: int, recv_ns: int, obj: dict[str, Any], ev: Any) -> list[Any]:
        rid = obj.get("id")
        if rid is not None and not isinstance(rid, str):
            raise Bad(f"event reply: 'id' must be a string, got {rid!r:.40}")
        if ev in ("subscribe", "unsubscribe"):
            arg = self._convert(obj.get("arg"), _Arg, f"{ev} reply 'arg'")
            return [SubscriptionAck(seq, recv_ns, rid, [stream_name(arg.channel, arg.instId)])]
        if ev == "error":
            code = obj.get("code")
            msg = obj.get("msg")
            if not (isinstance(code, str) and code.isdigit() and len(code) < 10):
                raise Bad(f"error reply: 'code' must be a numeric string, got {code!r:.40}")
            return [SubscriptionError(seq, recv_ns, rid, int(code), str(msg)[:500])]
        if ev == "notice":
            if obj.get("code") == _NOTICE_UPGRADE:
                return [ServerShutdown(seq, recv_ns, None)]
            raise Bad(f"notice {str(obj.get('code'))[:20]}: {str(obj.get('msg'))[:200]}")
        if ev in _SILENT_EVENTS:
            return []
        raise Bad(f"unknown event {str(ev)[:40]!r}")

    def _book_events(self, seq: int, recv_ns: int, msg: _BooksMsg) -> list[Any]:
        symbol = msg.arg.instId
        if not symbol:
            raise Bad("books message without arg.instId")
        action = msg.action
        if action not in ("snapshot", "update"):
            raise Bad(f"books: unknown action {action[:20]!r}")
        depth = BOOK_CHANNELS.get(msg.arg.channel)
        out: list[Any] = []
        for i, d in enumerate(msg.data):
            ts = _ms(d.ts, f"data[{i}].ts")
            bids = _pairs(d.bids, "bids", self._prices)
            asks = _pairs(d.asks, "asks", self._prices)
            cs = d.checksum or None  # 0: OKX sends no checksum (since 2026-06)
            if cs is not None and not -(1 << 31) <= cs < 1 << 31:
                raise Bad(f"data[{i}].checksum {cs} is not a signed 32-bit int")
            sid, prev = d.seqId, d.prevSeqId
            if (sid is None) != (prev is None):
                raise Bad(f"data[{i}]: seqId and prevSeqId come together (one is missing)")
            if sid is not None and not (0 <= sid <= MAX and -1 <= prev <= MAX):  # type: ignore[operator]
                raise Bad(f"data[{i}]: seqId {sid} / prevSeqId {prev} out of range")
            if action == "snapshot":
                last = ts if sid is None else sid
                out.append(
                    BookSnapshot(
                        seq, recv_ns, symbol, last, bids, asks, depth, "stream", ts, None, cs
                    )
                )
            else:
                if sid is not None and prev == -1:
                    raise Bad(f"data[{i}]: an update with prevSeqId -1 (only snapshots have it)")
                last = ts if sid is None else sid
                out.append(
                    DepthDiff(seq, recv_ns, symbol, last, last, prev, ts, None, bids, asks, cs)
                )
        return out

    def _trade_events(self, seq: int, recv_ns: int, msg: _TradesMsg) -> list[Any]:
        out: list[Any] = []
        for i, t in enumerate(msg.data):
            where = f"data[{i}]"
            tid_s = t.tradeId
            if not (tid_s.isascii() and tid_s.isdigit() and len(tid_s) < 20 and int(tid_s) <= MAX):
                raise Bad(f"{where}.tradeId: not a numeric id {tid_s[:40]!r}")
            tid = int(tid_s)
            if t.side not in ("buy", "sell"):
                raise Bad(f"{where}.side: {t.side[:20]!r} is neither 'buy' nor 'sell'")
            n = 1
            if t.count is not None:
                if not (t.count.isascii() and t.count.isdigit() and 0 < int(t.count) <= tid + 1):
                    raise Bad(f"{where}.count: {t.count[:20]!r} is not a trade count")
                n = int(t.count)
            ts = _ms(t.ts, f"{where}.ts")
            out.append(
                Trade(
                    seq,
                    recv_ns,
                    t.instId,
                    tid,
                    number(t.px, f"{where}.px"),
                    number(t.sz, f"{where}.sz"),
                    BUY if t.side == "buy" else SELL,
                    ts,
                    ts,
                    tid - n + 1,
                    tid,
                    n > 1,
                )
            )
        return out

    def _decode_rest(self, seq: int, recv_ns: int, source: str, payload: bytes) -> list[Any]:
        url = urlsplit(source)
        if not url.path.endswith(REST_BOOKS_PATH):
            raise Bad(f"unsupported REST endpoint {url.path[:80]!r} (expected {REST_BOOKS_PATH})")
        q = parse_qs(url.query)
        symbol = (q.get("instId") or [""])[0]
        if not symbol:
            raise Bad("REST books URL has no instId= parameter")
        sz = (q.get("sz") or [""])[0]
        depth = int(sz) if sz.isdigit() and len(sz) < 7 else None
        try:
            body = self._rest.decode(payload)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise Bad(f"REST books body: {exc}") from None
        if body.code != "0":
            raise Bad(f"REST error {body.code[:20]}: {body.msg[:200]}")
        if len(body.data) != 1:
            raise Bad(f"REST books body: expected one book in 'data', got {len(body.data)}")
        d = body.data[0]
        if d.seqId is None or not 0 <= d.seqId <= MAX:
            raise Bad(
                "REST books body: no valid seqId (a snapshot must say where the stream resumes)"
            )
        return [
            BookSnapshot(
                seq,
                recv_ns,
                symbol,
                d.seqId,
                _pairs(d.bids, "bids", self._prices),
                _pairs(d.asks, "asks", self._prices),
                depth,
                "rest",
                _ms(d.ts, "data[0].ts"),
                None,
                d.checksum or None,
            )
        ]

    # ..................................................................... outbound (client)

    def streams(self, symbols: Sequence[str], channels: Sequence[str]) -> list[str]:
        """Subscription names ``channel:instId`` for symbols × channels.

        Raises:
            ValueError: an unknown channel (the message lists the valid ones).
        """
        out: list[str] = []
        for ch in channels:
            okx = CHANNELS.get(ch)
            if okx is None:
                raise ValueError(f"unknown OKX channel {ch!r}; valid: {', '.join(CHANNELS)}")
            out.extend(stream_name(okx, s.upper()) for s in symbols)  # OKX ids are upper case
        return out

    def ws_url(self, base_url: str, streams: Sequence[str]) -> str:
        """OKX subscribes by message, not URL: the public endpoint (``/ws/v5/public``)."""
        base = base_url.rstrip("/")
        return base if urlsplit(base).path not in ("", "/") else base + self.ws_path

    @staticmethod
    def _args(streams: Sequence[str]) -> list[dict[str, str]]:
        args = []
        for s in streams:
            ch, sep, inst = s.partition(":")
            if not sep or not ch or not inst:
                raise ValueError(f"not an OKX stream name 'channel:instId': {s!r}")
            args.append({"channel": ch, "instId": inst})
        return args

    def subscribe(self, streams: Sequence[str], request_id: int) -> list[bytes]:
        """One ``subscribe`` request for ``streams`` (the runtime chunks by ``limits``)."""
        msg = {"id": str(request_id), "op": "subscribe", "args": self._args(streams)}
        return [orjson.dumps(msg)]

    def unsubscribe(self, streams: Sequence[str], request_id: int) -> list[bytes]:
        msg = {"id": str(request_id), "op": "unsubscribe", "args": self._args(streams)}
        return [orjson.dumps(msg)]

    def snapshot_url(self, rest_base: str, symbol: str, limit: int) -> str:
        """REST books URL: ``/api/v5/market/books?instId=BTC-USDT&sz=400`` (OKX's own spelling;
        OKX serves at most 400 levels)."""
        return f"{rest_base.rstrip('/')}{REST_BOOKS_PATH}?instId={symbol}&sz={min(limit, 400)}"

    def resync(
        self, symbol: str, streams: Sequence[str], rest_base: str, limit: int, request_id: int
    ) -> Resubscribe | None:
        """Resubscribe the symbol's book stream(s): OKX answers with a fresh snapshot."""
        mine = tuple(s for s in streams if s.partition(":")[::2] in _book_keys(symbol))
        if not mine:
            return None
        return Resubscribe(
            mine,
            tuple(self.unsubscribe(mine, request_id)),
            tuple(self.subscribe(mine, request_id + 1)),
        )

    def normalized(self, symbol: str) -> str:
        """instId → name: spot ``BTC-USDT`` as is; ``UNI-USD-SWAP`` → ``UNI-USD-PERP``;
        ``BTC-USD-220527`` → ``BTC-USD-20220527``; options and the unknown as spelled."""
        s = symbol.upper()
        parts = s.split("-")
        if len(parts) not in (2, 3) or not all(parts):
            return s
        if len(parts) == 2:
            return instrument_name(parts[0], parts[1])
        if parts[2] == "SWAP":
            return instrument_name(parts[0], parts[1], PERPETUAL)
        expiry = expiry_yymmdd(parts[2])
        return instrument_name(parts[0], parts[1], FUTURE, expiry) if expiry else s

    # ..................................................................... outbound (server)

    def encode(self, event: Any, channel: str = "books") -> bytes:
        """The frame OKX sends for ``event`` (the simulator's and replay server's dialect).

        BookSnapshot (stream) / DepthDiff → a ``books`` message on ``channel``;
        BookSnapshot (rest) → a REST books body; Trade → a ``trades`` message;
        Ticker24h → a ``tickers`` message (instType from the instId's shape);
        SubscriptionAck / SubscriptionError / ServerShutdown → their ``event``
        replies.  A DepthDiff with ``prev_id`` None is written the 2022 way
        (no seqId/prevSeqId; its ``ts`` is the id).

        Raises:
            ValueError: an event this dialect has no frame for (our misuse).
        """
        t = type(event)
        if t is DepthDiff or t is BookSnapshot:
            d: dict[str, Any] = {
                "asks": _level_text(event.asks),
                "bids": _level_text(event.bids),
                "ts": str(event.exch_ms if event.exch_ms is not None else event.recv_ns // 10**6),
                "checksum": event.checksum or 0,
            }
            if t is BookSnapshot and event.origin == "rest":
                d["seqId"] = event.last_id
                del d["checksum"]
                return orjson.dumps({"code": "0", "msg": "", "data": [d]})
            if t is BookSnapshot:  # a 2022 snapshot (id = ts) decodes the same with seqId = ts
                d["prevSeqId"], d["seqId"] = -1, event.last_id
                action = "snapshot"
            else:
                if event.prev_id is not None:
                    d["prevSeqId"], d["seqId"] = event.prev_id, event.last_id
                action = "update"
            arg = {"channel": channel, "instId": event.symbol}
            return orjson.dumps({"arg": arg, "action": action, "data": [d]})
        if t is Trade:
            tr: dict[str, str] = {
                "instId": event.symbol,
                "tradeId": str(event.trade_id),
                "px": text(event.price),
                "sz": text(event.qty),
                "side": event.side,
                "ts": str(event.txn_ms if event.txn_ms is not None else event.exch_ms),
            }
            if event.agg:
                tr["count"] = str(event.last_id - event.first_id + 1)
            arg = {"channel": "trades", "instId": event.symbol}
            return orjson.dumps({"arg": arg, "data": [tr]})
        if t is Ticker24h:
            kind = _inst_type(event.symbol)
            tk: dict[str, Any] = {"instType": kind, "instId": event.symbol}
            tk.update(encode_fields(event, _SPOT_TICKER if kind == "SPOT" else _TICKER, text))
            tk["ts"] = str(event.exch_ms if event.exch_ms is not None else event.recv_ns // 10**6)
            arg = {"channel": "tickers", "instId": event.symbol}
            return orjson.dumps({"arg": arg, "data": [tk]})
        if t is SubscriptionAck:
            ch, _, inst = (event.result or [":"])[0].partition(":")
            reply: dict[str, Any] = {"event": "subscribe", "arg": {"channel": ch, "instId": inst}}
            if event.request_id is not None:
                reply["id"] = str(event.request_id)
            return orjson.dumps(reply)
        if t is SubscriptionError:
            err: dict[str, Any] = {"event": "error", "code": str(event.code), "msg": event.msg}
            if event.request_id is not None:
                err["id"] = str(event.request_id)
            return orjson.dumps(err)
        if t is ServerShutdown:
            return orjson.dumps(
                {"event": "notice", "code": _NOTICE_UPGRADE, "msg": "service upgrade"}
            )
        raise ValueError(f"the OKX dialect has no frame for {t.__name__}")
