"""Binance spot and USD-M futures codecs: journaled frames → typed events, and the bytes/URLs to send.

Owns: the Binance wire formats (combined ``{"stream","data"}`` wrapper and raw
``/ws/<stream>`` frames, control replies, REST ``/api/v3/depth`` and
``/fapi/v1/depth`` bodies), stream naming, subscribe messages, snapshot URLs
and the futures ``/public`` vs ``/market`` URL split.

Must not: do I/O, read the clock, keep state between frames, or raise on
exchange input.  Every frame it cannot turn into events becomes exactly one
:class:`~engine.events.DecodeError` whose reason names the field and the
problem (the frame itself stays in the journal).

Decisions worth knowing:

* **Unknown but well-formed messages are errors.**  An event type we have no
  event class for (``markPriceUpdate``, ``forceOrder`` ...) yields a
  ``DecodeError("unknown event type 'x'")``: it is counted like any other
  decode error, so a subscription nobody decodes is visible, not silently
  dropped.
* **Hot path.**  Combined-stream text frames are decoded in one go by a
  msgspec typed Struct chosen from the stream name (peeked from the first
  bytes), levels are parsed with ``int(a + b) * 10**(8 - decimals)``.  That is
  only exact-and-validated when the payload holds no sign, underscore,
  backslash, whitespace or non-ASCII byte, which one cheap scan of the payload
  checks; any other frame takes the strict path (``engine.num.parse`` per
  value, with field names in the errors).  Both paths give identical events.
* **C fast path.**  When the optional extension ``engine._depthscan`` is
  built, a ``depthUpdate`` frame of the exact shape Binance sends (combined or
  raw, fixed key order, no whitespace, escapes, signs or exponents, at most 8
  decimals) is scanned by :func:`scan_depth` straight into its DepthDiff; on
  anything else it answers None and the paths above decide, so it cannot change
  what a frame decodes to (tests/test_depthscan.py compares both).
* **Validation** (all paths): wrong JSON types, missing fields, non-decimal
  strings, more than 8 significant decimals, negative prices or quantities,
  values or ids outside int64, ``U > u`` → DecodeError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import attrs
import msgspec
import orjson

from engine import num
from engine.codecs.base import SyncRule
from engine.events import (
    BUY,
    EXCERPT_BYTES,
    SELL,
    BookSnapshot,
    BookTicker,
    DecodeError,
    DepthDiff,
    Kline,
    ServerShutdown,
    SubscriptionAck,
    SubscriptionError,
    Ticker24h,
    Trade,
)

try:  # optional C fast path for depthUpdate frames (engine/_depthscan.c); None: pure Python
    from engine._depthscan import configure as _configure_scan
    from engine._depthscan import scan_depth
except ImportError:  # pragma: no cover - the extension is optional
    scan_depth = None
else:
    # the scanner fills DepthDiff's slots directly: only right while __init__ just stores
    # exactly the ten fields it knows (no other field, validator, converter or hook)
    if (
        tuple(a.name for a in attrs.fields(DepthDiff))
        != (
            "seq",
            "recv_ns",
            "symbol",
            "first_id",
            "last_id",
            "prev_id",
            "exch_ms",
            "txn_ms",
            "bids",
            "asks",
        )
        or hasattr(DepthDiff, "__attrs_post_init__")
        or hasattr(DepthDiff, "__attrs_pre_init__")
        or any(a.validator is not None or a.converter is not None for a in attrs.fields(DepthDiff))
    ):  # pragma: no cover - a guard for a future change of DepthDiff
        scan_depth = None
    else:
        _configure_scan(DepthDiff)

__all__ = ["BinanceSpot", "BinanceFutures", "CHANNELS", "FUTURES_PATHS"]

_MAX = 2**63 - 1  # int64: journals, Arrow exports and Parquet hold every value
Id = Annotated[int, msgspec.Meta(ge=0, le=_MAX)]
OptId = Annotated[int, msgspec.Meta(ge=-1, le=_MAX)]  # Binance uses -1 for "none"
Ms = Annotated[int, msgspec.Meta(ge=0, le=_MAX)]
RawLevels = list[tuple[str, str]]

#: channel name (as given to :meth:`streams`) → stream suffix.
CHANNELS: dict[str, str] = {
    "trade": "trade",
    "aggTrade": "aggTrade",
    "depth": "depth@100ms",
    "depth5": "depth5@100ms",
    "depth10": "depth10@100ms",
    "depth20": "depth20@100ms",
    "bookTicker": "bookTicker",
    "ticker": "ticker",
    "kline_1m": "kline_1m",
}

#: USD-M futures, since 2026-04-23: which URL path serves which stream kind.
FUTURES_PATHS: dict[str, str] = {
    "depth": "/public",
    "bookTicker": "/public",
    "trade": "/public",
    "aggTrade": "/market",
    "kline": "/market",
    "ticker": "/market",
    "markPrice": "/market",
    "forceOrder": "/market",
}


# --------------------------------------------------------------------------- wire shapes


class _Depth(msgspec.Struct, gc=False):
    e: str
    E: Ms
    s: str
    U: Id
    u: Id
    b: RawLevels
    a: RawLevels
    T: Ms | None = None
    pu: OptId | None = None


class _Partial(msgspec.Struct, gc=False):  # spot @depthN and REST depth bodies
    lastUpdateId: Id
    bids: RawLevels
    asks: RawLevels
    E: Ms | None = None
    T: Ms | None = None


class _BookTicker(msgspec.Struct, gc=False):
    u: Id
    s: str
    b: str
    B: str
    a: str
    A: str
    e: str | None = None
    E: Ms | None = None
    T: Ms | None = None


class _Trade(msgspec.Struct, gc=False):
    e: str
    E: Ms
    s: str
    t: Id
    p: str
    q: str
    T: Ms
    m: bool


class _AggTrade(msgspec.Struct, gc=False):
    e: str
    E: Ms
    s: str
    a: Id
    p: str
    q: str
    f: Id
    l: Id  # noqa: E741 - Binance's name
    T: Ms
    m: bool


class _K(msgspec.Struct, gc=False):
    t: Ms
    T: Ms
    s: str
    i: str
    f: OptId
    L: OptId
    o: str
    c: str
    h: str
    l: str  # noqa: E741
    v: str
    n: Id
    x: bool
    q: str
    V: str
    Q: str


class _Kline(msgspec.Struct, gc=False):
    e: str
    E: Ms
    s: str
    k: _K


class _Ticker(msgspec.Struct, gc=False):
    e: str
    E: Ms
    s: str
    p: str
    w: str
    c: str
    Q: str
    o: str
    h: str
    l: str  # noqa: E741
    v: str
    q: str
    O: Ms  # noqa: E741
    C: Ms
    F: OptId
    L: OptId
    n: Id
    b: str | None = None
    a: str | None = None


class _Shutdown(msgspec.Struct, gc=False):
    e: str
    E: Ms | None = None


class _Err(msgspec.Struct, gc=False):
    code: int
    msg: str


class _Bad(Exception):
    """Internal: a frame is invalid; the message is the DecodeError reason."""


# --------------------------------------------------------------------------- numbers

_MUL = tuple(10 ** (num.SCALE - i) for i in range(num.SCALE + 1))


def _clean(payload: bytes) -> bool:
    """True if the fast number parser is exact on this payload.

    ``int()`` also accepts signs, underscores, surrounding whitespace and
    non-ASCII digits.  Every number we parse sits inside a JSON string, where
    a raw control character (tab, newline ...) is invalid JSON: the only such
    bytes a decoded string can hold are ``-``, ``+``, ``_``, space and
    non-ASCII ones, or anything at all written as an escape (backslash).  A
    payload without those bytes can only hold plain ASCII digit strings.
    (``int in bytes`` is a memchr: five of them cost less than one copying pass.)
    """
    return payload.isascii() and not (
        45 in payload or 43 in payload or 95 in payload or 32 in payload or 92 in payload
    )  # - + _ space backslash


def _strict(s: str, where: str, signed: bool = False) -> int:
    """One decimal string → units, with an error that names the field."""
    try:
        v = num.parse(s)
    except num.PrecisionError as exc:
        raise _Bad(f"{where}: {exc}") from None
    if v < 0 and not signed:
        raise _Bad(f"{where}: negative value {s!r}")
    if not -_MAX <= v <= _MAX:
        raise _Bad(f"{where}: {s[:40]!r} is out of range")
    return v


def _levels_strict(raw: RawLevels, side: str) -> list[tuple[int, int]]:
    return [
        (_strict(p, f"{side}[{i}] price"), _strict(q, f"{side}[{i}] qty"))
        for i, (p, q) in enumerate(raw)
    ]


#: Bound of a codec's price memo (see :func:`_levels`); it is emptied when full.
PRICE_MEMO_MAX = 1 << 16


def _levels(raw: RawLevels, side: str, fast: bool, prices: dict[str, int]) -> list[tuple[int, int]]:
    """Parse ``[[price, qty], ...]`` strings into unit tuples (the hot loop of the engine).

    ``prices`` memoizes price strings the fast parser has read (a book's
    updates keep hitting the same few hundred prices near the top, so most
    prices of a live stream were seen moments before).  A pure memo: an entry is the exact value of its
    string, so it cannot change what a frame decodes to.  Quantities repeat
    far less and are always parsed.
    """
    if fast:
        out = []
        ap = out.append
        mul = _MUL
        get = prices.get
        try:
            for p, q in raw:
                pv = get(p)
                if pv is None:
                    pa, _, pb = p.partition(".")
                    pv = int(pa + pb) * mul[len(pb)]
                    if pv > _MAX:
                        break
                    if len(prices) >= PRICE_MEMO_MAX:
                        prices.clear()
                    prices[p] = pv
                qa, _, qb = q.partition(".")
                qv = int(qa + qb) * mul[len(qb)]
                if qv > _MAX:
                    break
                ap((pv, qv))
            else:
                return out
        except (ValueError, IndexError):
            pass  # >8 decimals (maybe trailing zeros) or not a number: the strict path decides
    return _levels_strict(raw, side)


def _one(s: str, where: str, fast: bool, signed: bool = False) -> int:
    if fast:
        a, _, b = s.partition(".")
        try:
            v = int(a + b) * _MUL[len(b)]
            if v <= _MAX:
                return v
        except (ValueError, IndexError):
            pass
    return _strict(s, where, signed)


# --------------------------------------------------------------------------- streams


def _route_of(stream: str) -> tuple[str, int | None] | None:
    """Stream name → (handler kind, partial depth) or None if we do not decode it."""
    _, at, rest = stream.partition("@")
    if not at:
        return None
    ch = rest.split("@", 1)[0]
    if ch == "depth":
        return ("depth", None)
    if ch.startswith("depth") and ch[5:].isdigit():
        return ("partial", int(ch[5:]))
    if ch.startswith("kline_"):
        return ("kline", None)
    if ch in ("trade", "aggTrade", "bookTicker", "ticker"):
        return (ch, None)
    return None


def _stream_of_url(source: str) -> str | None:
    """The stream of a raw ``.../ws/<stream>`` connection URL, else None."""
    path = urlsplit(source).path
    i = path.rfind("/ws/")
    if i < 0:
        return None
    name = path[i + 4 :]
    return name if "@" in name and "/" not in name else None


_E_KIND = {
    "depthUpdate": "depth",
    "trade": "trade",
    "aggTrade": "aggTrade",
    "kline": "kline",
    "24hrTicker": "ticker",
    "bookTicker": "bookTicker",
}

_ROUTE_CACHE_MAX = 4096


# --------------------------------------------------------------------------- codec


class _Binance:
    """Shared Binance logic; the subclasses set the dialect (spot vs USD-M futures)."""

    name = "binance"
    sync_rule = SyncRule.BINANCE_SPOT
    futures = False
    ws_base = "wss://stream.binance.com:9443"
    rest_base = "https://api.binance.com"
    depth_path = "/api/v3/depth"

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name
        self._wrapped: dict[str, msgspec.json.Decoder[Any]] = {}
        self._plain: dict[str, type] = {
            "depth": _Depth,
            "partial": _Depth if self.futures else _Partial,
            "trade": _Trade,
            "aggTrade": _AggTrade,
            "bookTicker": _BookTicker,
            "ticker": _Ticker,
            "kline": _Kline,
        }
        for kind, typ in self._plain.items():
            # Only partial depth reads the stream name from the decoded frame (its symbol);
            # the others skip it unallocated and get the peeked name (see decode()).
            fields: list[Any] = [("data", typ)]
            if kind == "partial":
                fields.insert(0, ("stream", str))
            wrapper = msgspec.defstruct(f"_W_{kind}", fields, gc=False)
            self._wrapped[kind] = msgspec.json.Decoder(wrapper)
        self._handlers: dict[str, Callable[..., Any]] = {
            "depth": self._depth,
            "partial": self._partial,
            "trade": self._trade,
            "aggTrade": self._agg_trade,
            "bookTicker": self._book_ticker,
            "ticker": self._ticker,
            "kline": self._kline,
        }
        # stream name (bytes, as peeked) → (decoder, handler, partial depth, stream name or
        # None: read it from the frame).  A pure memo of _route_of: bounded, and it cannot
        # change what a frame decodes to.
        self._routes: dict[bytes, tuple[Any, Callable[..., Any], int | None, str | None]] = {}
        self._generic = msgspec.json.Decoder()
        self._depth_handler = self._handlers["depth"]  # routes holding it may take the C path
        self._raw_diffs: dict[str, bool] = {}  # raw connection URL → not partial depth (a memo)
        self._prices: dict[str, int] = {}  # price string → units: a pure memo (see _levels)
        self._rest = msgspec.json.Decoder(_Partial)

    # ..................................................................... decode

    def decode(
        self, seq: int, recv_ns: int, kind: str, source: str, payload: bytes
    ) -> Sequence[Any]:
        """Events of one journaled inbound frame; never raises (see the module docstring)."""
        try:
            if kind == "text" or kind == "binary":
                if payload[:11] == b'{"stream":"':
                    end = payload.find(b'"', 11)
                    route = self._routes.get(payload[11:end])
                    if route is None:
                        route = self._learn(payload[11:end])
                    if route is not None:
                        dec, handler, depth, name = route
                        if handler is self._depth_handler and scan_depth is not None:
                            ev = scan_depth(payload, seq, recv_ns, self.futures)
                            if ev is not None:
                                return [ev]
                        try:
                            w = dec.decode(payload)
                        except (msgspec.DecodeError, UnicodeDecodeError):
                            pass  # the generic path gives the definitive error
                        else:
                            if name is None:
                                name = w.stream
                            return handler(seq, recv_ns, w.data, name, depth, _clean(payload))
                elif (
                    payload[:19] == b'{"e":"depthUpdate",'
                    and scan_depth is not None
                    and self._raw_diff(source)
                ):
                    ev = scan_depth(payload, seq, recv_ns, self.futures)
                    if ev is not None:
                        return [ev]
                return self._decode_generic(seq, recv_ns, source, payload)
            if kind == "rest":
                return self._decode_rest(seq, recv_ns, source, payload)
            raise _Bad(f"{self.name} codec decodes text and rest frames, not {kind!r}")
        except _Bad as exc:
            reason = str(exc)
        except Exception as exc:  # never raise out of a codec: a bug here is still just an event
            reason = f"internal error {type(exc).__name__}: {exc}"
        return [self._error(seq, recv_ns, source, reason, payload)]

    @staticmethod
    def _error(seq: int, recv_ns: int, source: str, reason: str, payload: Any) -> DecodeError:
        excerpt = bytes(payload[:EXCERPT_BYTES]) if isinstance(payload, bytes | bytearray) else b""
        return DecodeError(seq, recv_ns, source, reason[:500], excerpt)

    def _learn(
        self, raw_name: bytes
    ) -> tuple[Any, Callable[..., Any], int | None, str | None] | None:
        if b"\\" in raw_name:
            return None
        try:
            name = raw_name.decode()  # no escapes: exactly the string the JSON holds
        except UnicodeDecodeError:
            return None
        r = _route_of(name)
        if r is None:
            return None
        route = (
            self._wrapped[r[0]],
            self._handlers[r[0]],
            r[1],
            None if r[0] == "partial" else name,
        )
        if len(self._routes) < _ROUTE_CACHE_MAX:
            self._routes[raw_name] = route
        return route

    def _raw_diff(self, source: str) -> bool:
        """True unless a raw connection's URL names a partial depth stream (a memo, as _learn)."""
        diff = self._raw_diffs.get(source)
        if diff is None:
            stream = _stream_of_url(source)
            r = _route_of(stream) if stream else None
            diff = r is None or r[0] != "partial"
            if len(self._raw_diffs) < _ROUTE_CACHE_MAX:
                self._raw_diffs[source] = diff
        return diff

    def _convert(self, obj: Any, typ: type, what: str) -> Any:
        try:
            return msgspec.convert(obj, typ)
        except msgspec.ValidationError as exc:
            raise _Bad(f"{what}: {exc}") from None

    def _decode_generic(self, seq: int, recv_ns: int, source: str, payload: bytes) -> list[Any]:
        try:
            obj = self._generic.decode(payload)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise _Bad(f"invalid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise _Bad(f"expected a JSON object, got {type(obj).__name__}")
        fast = _clean(payload)
        if "stream" in obj and "data" in obj:
            stream = obj["stream"]
            if not isinstance(stream, str):
                raise _Bad(f"'stream' must be a string, got {type(stream).__name__}")
            data = obj["data"]
            r = _route_of(stream)
            if r is None:
                if isinstance(data, dict) and isinstance(data.get("e"), str):
                    raise _Bad(f"unknown event type {data['e'][:40]!r} on stream {stream[:60]!r}")
                raise _Bad(f"unknown stream {stream[:60]!r}")
            kind, depth = r
            typ = self._plain[kind]
            return self._handlers[kind](
                seq, recv_ns, self._convert(data, typ, f"{stream[:60]} data"), stream, depth, fast
            )
        if "id" in obj and ("result" in obj or "error" in obj or "code" in obj):
            return [self._control(seq, recv_ns, obj)]
        e = obj.get("e")
        stream = _stream_of_url(source)
        r = _route_of(stream) if stream else None
        if e is not None:
            if not isinstance(e, str):
                raise _Bad(f"'e' must be a string, got {type(e).__name__}")
            if e == "serverShutdown":
                sd = self._convert(obj, _Shutdown, "serverShutdown")
                return [ServerShutdown(seq, recv_ns, sd.E)]
            kind_e = _E_KIND.get(e)
            if kind_e is None:
                raise _Bad(f"unknown event type {e[:40]!r}")
            if kind_e == "depth" and r is not None and r[0] == "partial":
                kind, depth = r  # futures partial depth on a raw /ws/<s>@depthN connection
            else:
                kind, depth = kind_e, None
            typ = self._plain[kind]
            data = self._convert(obj, typ, e)
            return self._handlers[kind](seq, recv_ns, data, stream, depth, fast)
        if "lastUpdateId" in obj:
            if r is None or r[0] != "partial":
                raise _Bad("partial depth without a symbol: no stream name in the frame or the URL")
            return self._partial(
                seq, recv_ns, self._convert(obj, _Partial, "partial depth"), stream, r[1], fast
            )
        if "u" in obj and "b" in obj and "a" in obj:
            return self._book_ticker(
                seq, recv_ns, self._convert(obj, _BookTicker, "bookTicker"), stream, None, fast
            )
        keys = ",".join(sorted(str(k)[:20] for k in obj)[:10])
        raise _Bad(f"unknown message (no event type; keys {keys})")

    def _control(self, seq: int, recv_ns: int, obj: dict[str, Any]) -> Any:
        rid = obj.get("id")
        if rid is not None and (isinstance(rid, bool) or not isinstance(rid, int | str)):
            raise _Bad(f"control reply: 'id' must be an int, a string or null, got {rid!r:.40}")
        if "error" in obj or "code" in obj:
            err = obj.get("error", obj)
            e = self._convert(err, _Err, "control error")
            return SubscriptionError(seq, recv_ns, rid, e.code, e.msg)
        result = self._convert(obj["result"], list[str] | None, "control result")
        return SubscriptionAck(seq, recv_ns, rid, result)

    def _decode_rest(self, seq: int, recv_ns: int, source: str, payload: bytes) -> list[Any]:
        url = urlsplit(source)
        if not url.path.endswith(self.depth_path):
            raise _Bad(f"unsupported REST endpoint {url.path[:80]!r} (expected {self.depth_path})")
        q = parse_qs(url.query)
        symbol = (q.get("symbol") or [""])[0].upper()
        if not symbol:
            raise _Bad("REST depth URL has no symbol= parameter")
        limit_s = (q.get("limit") or [""])[0]
        limit = int(limit_s) if limit_s.isdigit() and len(limit_s) < 7 else None
        try:
            body = self._rest.decode(payload)
        except msgspec.ValidationError as exc:
            try:
                err = msgspec.json.decode(payload, type=_Err)
            except (msgspec.DecodeError, UnicodeDecodeError):
                raise _Bad(f"REST depth body: {exc}") from None
            raise _Bad(f"REST error {err.code}: {err.msg[:200]}") from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise _Bad(f"REST depth body: invalid JSON: {exc}") from None
        fast = _clean(payload)
        return [
            BookSnapshot(
                seq,
                recv_ns,
                symbol,
                body.lastUpdateId,
                _levels(body.bids, "bids", fast, {}),
                _levels(body.asks, "asks", fast, {}),
                limit,
                "rest",
                body.E,
                body.T,
            )
        ]

    # ..................................................................... per-message handlers
    # (seq, recv_ns, typed data, stream name or None, partial depth, fast numbers) → events

    def _depth(self, seq, recv_ns, d, stream, depth, fast):  # type: ignore[no-untyped-def]
        if d.e != "depthUpdate":
            raise _Bad(f"unknown event type {d.e[:40]!r} on a depth stream")
        if d.U > d.u:
            raise _Bad(f"depthUpdate: first update id U={d.U} > last u={d.u}")
        if self.futures and d.pu is None:
            raise _Bad("depthUpdate: missing field 'pu' (USD-M futures sends it on every diff)")
        return [
            DepthDiff(
                seq,
                recv_ns,
                d.s,
                d.U,
                d.u,
                d.pu,
                d.E,
                d.T,
                _levels(d.b, "b", fast, self._prices),
                _levels(d.a, "a", fast, self._prices),
            )
        ]

    def _partial(self, seq, recv_ns, d, stream, depth, fast):  # type: ignore[no-untyped-def]
        if isinstance(d, _Depth):  # futures partial depth: diff-shaped, but a top-N snapshot
            if d.e != "depthUpdate":
                raise _Bad(f"unknown event type {d.e[:40]!r} on a depth stream")
            return [
                BookSnapshot(
                    seq,
                    recv_ns,
                    d.s,
                    d.u,
                    _levels(d.b, "b", fast, {}),
                    _levels(d.a, "a", fast, {}),
                    depth,
                    "stream",
                    d.E,
                    d.T,
                )
            ]
        symbol = stream.partition("@")[0].upper() if stream else ""
        if not symbol:
            raise _Bad("partial depth without a symbol: no stream name in the frame or the URL")
        return [
            BookSnapshot(
                seq,
                recv_ns,
                symbol,
                d.lastUpdateId,
                _levels(d.bids, "bids", fast, {}),
                _levels(d.asks, "asks", fast, {}),
                depth,
                "stream",
                d.E,
                d.T,
            )
        ]

    def _book_ticker(self, seq, recv_ns, d, stream, depth, fast):  # type: ignore[no-untyped-def]
        if d.e is not None and d.e != "bookTicker":
            raise _Bad(f"unknown event type {d.e[:40]!r} on a bookTicker stream")
        return [
            BookTicker(
                seq,
                recv_ns,
                d.s,
                d.u,
                _one(d.b, "b", fast),
                _one(d.B, "B", fast),
                _one(d.a, "a", fast),
                _one(d.A, "A", fast),
                d.E,
                d.T,
            )
        ]

    def _trade(self, seq, recv_ns, d, stream, depth, fast):  # type: ignore[no-untyped-def]
        if d.e != "trade":
            raise _Bad(f"unknown event type {d.e[:40]!r} on a trade stream")
        return [
            Trade(
                seq,
                recv_ns,
                d.s,
                d.t,
                _one(d.p, "p", fast),
                _one(d.q, "q", fast),
                SELL if d.m else BUY,
                d.E,
                d.T,
                d.t,
                d.t,
                False,
            )
        ]

    def _agg_trade(self, seq, recv_ns, d, stream, depth, fast):  # type: ignore[no-untyped-def]
        if d.e != "aggTrade":
            raise _Bad(f"unknown event type {d.e[:40]!r} on an aggTrade stream")
        if d.f > d.l:
            raise _Bad(f"aggTrade: first trade id f={d.f} > last l={d.l}")
        return [
            Trade(
                seq,
                recv_ns,
                d.s,
                d.a,
                _one(d.p, "p", fast),
                _one(d.q, "q", fast),
                SELL if d.m else BUY,
                d.E,
                d.T,
                d.f,
                d.l,
                True,
            )
        ]

    def _kline(self, seq, recv_ns, d, stream, depth, fast):  # type: ignore[no-untyped-def]
        if d.e != "kline":
            raise _Bad(f"unknown event type {d.e[:40]!r} on a kline stream")
        k = d.k
        return [
            Kline(
                seq,
                recv_ns,
                d.s,
                d.E,
                k.i,
                k.t,
                k.T,
                _one(k.o, "k.o", fast),
                _one(k.h, "k.h", fast),
                _one(k.l, "k.l", fast),
                _one(k.c, "k.c", fast),
                _one(k.v, "k.v", fast),
                _one(k.q, "k.q", fast),
                k.n,
                k.x,
                k.f,
                k.L,
                _one(k.V, "k.V", fast),
                _one(k.Q, "k.Q", fast),
            )
        ]

    def _ticker(self, seq, recv_ns, d, stream, depth, fast):  # type: ignore[no-untyped-def]
        if d.e != "24hrTicker":
            raise _Bad(f"unknown event type {d.e[:40]!r} on a ticker stream")
        return [
            Ticker24h(
                seq,
                recv_ns,
                d.s,
                d.E,
                _one(d.c, "c", fast),
                _one(d.Q, "Q", fast),
                _one(d.o, "o", fast),
                _one(d.h, "h", fast),
                _one(d.l, "l", fast),
                _one(d.w, "w", fast),
                _one(d.v, "v", fast),
                _one(d.q, "q", fast),
                _one(d.p, "p", fast, signed=True),
                None if d.b is None else _one(d.b, "b", fast),
                None if d.a is None else _one(d.a, "a", fast),
                d.O,
                d.C,
                d.F,
                d.L,
                d.n,
            )
        ]

    # ..................................................................... outbound

    def streams(self, symbols: Sequence[str], channels: Sequence[str]) -> list[str]:
        """Stream names for symbols × channels, e.g. ``btcusdt@depth@100ms``.

        Raises:
            ValueError: an unknown channel (the message lists the valid ones).
        """
        out = []
        for ch in channels:
            suffix = CHANNELS.get(ch)
            if suffix is None and ch.startswith("kline_") and len(ch) > 6:
                suffix = ch
            if suffix is None:
                raise ValueError(
                    f"unknown Binance channel {ch!r}; valid: {', '.join(CHANNELS)} or kline_<interval>"
                )
            out.extend(f"{s.lower()}@{suffix}" for s in symbols)
        return out

    def ws_url(self, base_url: str, streams: Sequence[str]) -> str:
        """Combined-stream URL ``<base>/stream?streams=a/b/c``."""
        if not streams:
            raise ValueError("ws_url needs at least one stream")
        return f"{base_url.rstrip('/')}/stream?streams={'/'.join(streams)}"

    def _control_msg(self, method: str, streams: Sequence[str], request_id: int) -> bytes:
        return orjson.dumps({"method": method, "params": list(streams), "id": request_id})

    def subscribe(self, streams: Sequence[str], request_id: int) -> bytes:
        return self._control_msg("SUBSCRIBE", streams, request_id)

    def unsubscribe(self, streams: Sequence[str], request_id: int) -> bytes:
        return self._control_msg("UNSUBSCRIBE", streams, request_id)

    def snapshot_url(self, rest_base: str, symbol: str, limit: int) -> str:
        """REST depth snapshot URL (spot ``/api/v3/depth``, futures ``/fapi/v1/depth``)."""
        return f"{rest_base.rstrip('/')}{self.depth_path}?symbol={symbol.upper()}&limit={limit}"


class BinanceSpot(_Binance):
    """Binance spot (and the embedded simulator, which speaks this dialect as ``name="sim"``)."""


class BinanceFutures(_Binance):
    """Binance USD-M futures: ``pu``/``T`` on depth, ``/fapi/v1/depth``, ``/public`` vs ``/market``."""

    name = "binance-futures"
    sync_rule = SyncRule.BINANCE_FUTURES
    futures = True
    ws_base = "wss://fstream.binance.com"
    rest_base = "https://fapi.binance.com"
    depth_path = "/fapi/v1/depth"

    @staticmethod
    def stream_path(stream: str) -> str:
        """The URL path (``/public`` or ``/market``) that serves ``stream`` since 2026-04-23.

        Raises:
            ValueError: a stream kind we do not know the path of.
        """
        ch = stream.partition("@")[2].split("@", 1)[0]
        key = (
            "depth"
            if ch.startswith("depth")
            else "kline"
            if ch.startswith("kline_")
            else "markPrice"
            if ch.startswith("markPrice")
            else ch
        )
        path = FUTURES_PATHS.get(key)
        if path is None:
            raise ValueError(f"no known futures URL path for stream {stream!r}")
        return path

    def streams_by_path(self, streams: Sequence[str]) -> dict[str, list[str]]:
        """Group streams by URL path: open one connection per key (order kept)."""
        out: dict[str, list[str]] = {}
        for s in streams:
            out.setdefault(self.stream_path(s), []).append(s)
        return out

    def ws_url(self, base_url: str, streams: Sequence[str]) -> str:
        """Combined-stream URL; appends ``/public`` or ``/market`` unless ``base_url`` has a path.

        Raises:
            ValueError: the streams need different paths (use :meth:`streams_by_path`).
        """
        if not streams:
            raise ValueError("ws_url needs at least one stream")
        base = base_url.rstrip("/")
        if urlsplit(base).path in ("", "/"):
            paths = self.streams_by_path(streams)
            if len(paths) > 1:
                raise ValueError(
                    f"streams need different URL paths {sorted(paths)}: "
                    "open one connection per path (BinanceFutures.streams_by_path)"
                )
            base += next(iter(paths))
        return f"{base}/stream?streams={'/'.join(streams)}"
