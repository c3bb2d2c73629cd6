"""Binance spot and USD-M futures codecs: journaled frames → typed events.

Owns: decoding the Binance frames (combined ``{"stream","data"}`` wrapper and
raw ``/ws/<stream>`` frames, control replies, REST ``/api/v3/depth`` and
``/fapi/v1/depth`` bodies) into events, and the two codec classes.  The
message shapes, number and routing helpers live in
:mod:`engine.codecs.binance_wire`; stream names, subscribe messages and URLs
(what is sent) in :mod:`engine.codecs.binance_urls`.

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
  bytes); every price and quantity then goes through ``engine.num.parse``
  (the one number parser), prices behind a pure memo.  A frame the typed
  Struct rejects takes the generic path, which names the field in its error.
* **C fast path.**  When the optional extension ``engine._depthscan`` is
  built, a ``depthUpdate`` frame of the exact shape Binance sends (combined or
  raw, fixed key order, no whitespace, escapes, signs or exponents, at most 18
  decimals) is scanned by :func:`scan_depth` straight into its DepthDiff; on
  anything else it answers None and the Python path decides, so it cannot change
  what a frame decodes to (tests/test_depthscan.py compares both).
* **Validation** (all paths): wrong JSON types, missing fields, non-decimal
  strings, more than 18 significant decimals, negative prices or quantities,
  values beyond ``num.MAX`` or ids outside int64, ``U > u`` → DecodeError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import msgspec

from engine.codecs import binance_wire as wire
from engine.codecs.base import SyncRule, decode_error, internal_reason
from engine.codecs.binance_urls import CHANNELS, FUTURES_PATHS, FuturesOutbound, SpotOutbound
from engine.codecs.binance_wire import (
    E_KIND,
    ROUTE_CACHE_MAX,
    Bad,
    json_object,
    levels,
    number,
    route_of,
    stream_of_url,
)
from engine.events import (
    BUY,
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
    # exactly the eleven fields it knows (no other field, validator, converter or hook)
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
            "checksum",
        )
        or hasattr(DepthDiff, "__attrs_post_init__")
        or hasattr(DepthDiff, "__attrs_pre_init__")
        or any(a.validator is not None or a.converter is not None for a in attrs.fields(DepthDiff))
    ):  # pragma: no cover - a guard for a future change of DepthDiff
        scan_depth = None
    else:
        _configure_scan(DepthDiff)

__all__ = ["BinanceSpot", "BinanceFutures", "CHANNELS", "FUTURES_PATHS"]


# --------------------------------------------------------------------------- codec


class _Binance(SpotOutbound):
    """Shared Binance decoding; the subclasses set the dialect (spot vs USD-M futures)."""

    name = "binance"
    sync_rule = SyncRule.BINANCE_SPOT
    futures = False
    ws_base = "wss://stream.binance.com:9443"
    rest_base = "https://api.binance.com"

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name
        self._wrapped: dict[str, msgspec.json.Decoder[Any]] = {}
        self._plain: dict[str, type] = {
            "depth": wire.Depth,
            "partial": wire.Depth if self.futures else wire.Partial,
            "trade": wire.Trade,
            "aggTrade": wire.AggTrade,
            "bookTicker": wire.BookTicker,
            "ticker": wire.Ticker,
            "kline": wire.Kline,
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
        # None: read it from the frame).  A pure memo of route_of: bounded, and it cannot
        # change what a frame decodes to.
        self._routes: dict[bytes, tuple[Any, Callable[..., Any], int | None, str | None]] = {}
        self._generic = msgspec.json.Decoder()
        self._depth_handler = self._handlers["depth"]  # routes holding it may take the C path
        self._raw_diffs: dict[str, bool] = {}  # raw connection URL → not partial depth (a memo)
        self._prices: dict[str, int] = {}  # price string → units: a pure memo (see wire.levels)
        self._rest = msgspec.json.Decoder(wire.Partial)

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
                            return handler(seq, recv_ns, w.data, name, depth)
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
            raise Bad(f"{self.name} codec decodes text and rest frames, not {kind!r}")
        except Bad as exc:
            reason = str(exc)
        except Exception as exc:  # never raise out of a codec: a bug here is still just an event
            reason = internal_reason(exc)
        return [self._error(seq, recv_ns, source, reason, payload)]

    @staticmethod
    def _error(seq: int, recv_ns: int, source: str, reason: str, payload: Any) -> DecodeError:
        return decode_error(seq, recv_ns, source, reason, payload)

    def _learn(
        self, raw_name: bytes
    ) -> tuple[Any, Callable[..., Any], int | None, str | None] | None:
        if b"\\" in raw_name:
            return None
        try:
            name = raw_name.decode()  # no escapes: exactly the string the JSON holds
        except UnicodeDecodeError:
            return None
        r = route_of(name)
        if r is None:
            return None
        route = (
            self._wrapped[r[0]],
            self._handlers[r[0]],
            r[1],
            None if r[0] == "partial" else name,
        )
        if len(self._routes) < ROUTE_CACHE_MAX:
            self._routes[raw_name] = route
        return route

    def _raw_diff(self, source: str) -> bool:
        """True unless a raw connection's URL names a partial depth stream (a memo, as _learn)."""
        diff = self._raw_diffs.get(source)
        if diff is None:
            stream = stream_of_url(source)
            r = route_of(stream) if stream else None
            diff = r is None or r[0] != "partial"
            if len(self._raw_diffs) < ROUTE_CACHE_MAX:
                self._raw_diffs[source] = diff
        return diff

    def _convert(self, obj: Any, typ: Any, what: str) -> Any:
        # typ: a class or a type expression (``list[str] | None``), as msgspec.convert takes
        try:
            return msgspec.convert(obj, typ)
        except msgspec.ValidationError as exc:
            raise Bad(f"{what}: {exc}") from None

    def _decode_generic(self, seq: int, recv_ns: int, source: str, payload: bytes) -> list[Any]:
        obj = json_object(self._generic, payload)
        if "stream" in obj and "data" in obj:
            stream = obj["stream"]
            if not isinstance(stream, str):
                raise Bad(f"'stream' must be a string, got {type(stream).__name__}")
            data = obj["data"]
            r = route_of(stream)
            if r is None:
                if isinstance(data, dict) and isinstance(data.get("e"), str):
                    raise Bad(f"unknown event type {data['e'][:40]!r} on stream {stream[:60]!r}")
                raise Bad(f"unknown stream {stream[:60]!r}")
            kind, depth = r
            typ = self._plain[kind]
            return self._handlers[kind](
                seq, recv_ns, self._convert(data, typ, f"{stream[:60]} data"), stream, depth
            )
        if "id" in obj and ("result" in obj or "error" in obj or "code" in obj):
            return [self._control(seq, recv_ns, obj)]
        e = obj.get("e")
        stream = stream_of_url(source)
        r = route_of(stream) if stream else None
        if e is not None:
            if not isinstance(e, str):
                raise Bad(f"'e' must be a string, got {type(e).__name__}")
            if e == "serverShutdown":
                sd = self._convert(obj, wire.Shutdown, "serverShutdown")
                return [ServerShutdown(seq, recv_ns, sd.E)]
            kind_e = E_KIND.get(e)
            if kind_e is None:
                raise Bad(f"unknown event type {e[:40]!r}")
            if kind_e == "depth" and r is not None and r[0] == "partial":
                kind, depth = r  # futures partial depth on a raw /ws/<s>@depthN connection
            else:
                kind, depth = kind_e, None
            typ = self._plain[kind]
            data = self._convert(obj, typ, e)
            return self._handlers[kind](seq, recv_ns, data, stream, depth)
        if "lastUpdateId" in obj:
            if r is None or r[0] != "partial":
                raise Bad("partial depth without a symbol: no stream name in the frame or the URL")
            return self._partial(
                seq, recv_ns, self._convert(obj, wire.Partial, "partial depth"), stream, r[1]
            )
        if "u" in obj and "b" in obj and "a" in obj:
            return self._book_ticker(
                seq, recv_ns, self._convert(obj, wire.BookTicker, "bookTicker"), stream, None
            )
        keys = ",".join(sorted(str(k)[:20] for k in obj)[:10])
        raise Bad(f"unknown message (no event type; keys {keys})")

    def _control(self, seq: int, recv_ns: int, obj: dict[str, Any]) -> Any:
        rid = obj.get("id")
        if rid is not None and (isinstance(rid, bool) or not isinstance(rid, int | str)):
            raise Bad(f"control reply: 'id' must be an int, a string or null, got {rid!r:.40}")
        if "error" in obj or "code" in obj:
            err = obj.get("error", obj)
            e = self._convert(err, wire.Err, "control error")
            return SubscriptionError(seq, recv_ns, rid, e.code, e.msg)
        result = self._convert(obj["result"], list[str] | None, "control result")
        return SubscriptionAck(seq, recv_ns, rid, result)

    def _decode_rest(self, seq: int, recv_ns: int, source: str, payload: bytes) -> list[Any]:
        url = urlsplit(source)
        if not url.path.endswith(self.depth_path):
            raise Bad(f"unsupported REST endpoint {url.path[:80]!r} (expected {self.depth_path})")
        q = parse_qs(url.query)
        symbol = (q.get("symbol") or [""])[0].upper()
        if not symbol:
            raise Bad("REST depth URL has no symbol= parameter")
        limit_s = (q.get("limit") or [""])[0]
        limit = int(limit_s) if limit_s.isdigit() and len(limit_s) < 7 else None
        try:
            body = self._rest.decode(payload)
        except msgspec.ValidationError as exc:
            try:
                err = msgspec.json.decode(payload, type=wire.Err)
            except (msgspec.DecodeError, UnicodeDecodeError):
                raise Bad(f"REST depth body: {exc}") from None
            raise Bad(f"REST error {err.code}: {err.msg[:200]}") from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise Bad(f"REST depth body: invalid JSON: {exc}") from None
        return [
            BookSnapshot(
                seq,
                recv_ns,
                symbol,
                body.lastUpdateId,
                levels(body.bids, "bids", self._prices),
                levels(body.asks, "asks", self._prices),
                limit,
                "rest",
                body.E,
                body.T,
            )
        ]

    # ..................................................................... per-message handlers
    # (seq, recv_ns, typed data, stream name or None, partial depth) → events

    def _depth(self, seq, recv_ns, d, stream, depth):  # type: ignore[no-untyped-def]
        if d.e != "depthUpdate":
            raise Bad(f"unknown event type {d.e[:40]!r} on a depth stream")
        if d.U > d.u:
            raise Bad(f"depthUpdate: first update id U={d.U} > last u={d.u}")
        if self.futures and d.pu is None:
            raise Bad("depthUpdate: missing field 'pu' (USD-M futures sends it on every diff)")
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
                levels(d.b, "b", self._prices),
                levels(d.a, "a", self._prices),
            )
        ]

    def _partial(self, seq, recv_ns, d, stream, depth):  # type: ignore[no-untyped-def]
        if isinstance(d, wire.Depth):  # futures partial depth: diff-shaped, but a top-N snapshot
            if d.e != "depthUpdate":
                raise Bad(f"unknown event type {d.e[:40]!r} on a depth stream")
            return [
                BookSnapshot(
                    seq,
                    recv_ns,
                    d.s,
                    d.u,
                    levels(d.b, "b", self._prices),
                    levels(d.a, "a", self._prices),
                    depth,
                    "stream",
                    d.E,
                    d.T,
                )
            ]
        symbol = stream.partition("@")[0].upper() if stream else ""
        if not symbol:
            raise Bad("partial depth without a symbol: no stream name in the frame or the URL")
        return [
            BookSnapshot(
                seq,
                recv_ns,
                symbol,
                d.lastUpdateId,
                levels(d.bids, "bids", self._prices),
                levels(d.asks, "asks", self._prices),
                depth,
                "stream",
                d.E,
                d.T,
            )
        ]

    def _book_ticker(self, seq, recv_ns, d, stream, depth):  # type: ignore[no-untyped-def]
        if d.e is not None and d.e != "bookTicker":
            raise Bad(f"unknown event type {d.e[:40]!r} on a bookTicker stream")
        return [
            BookTicker(
                seq,
                recv_ns,
                d.s,
                d.u,
                number(d.b, "b"),
                number(d.B, "B"),
                number(d.a, "a"),
                number(d.A, "A"),
                d.E,
                d.T,
            )
        ]

    def _trade(self, seq, recv_ns, d, stream, depth):  # type: ignore[no-untyped-def]
        if d.e != "trade":
            raise Bad(f"unknown event type {d.e[:40]!r} on a trade stream")
        return [
            Trade(
                seq,
                recv_ns,
                d.s,
                d.t,
                number(d.p, "p"),
                number(d.q, "q"),
                SELL if d.m else BUY,
                d.E,
                d.T,
                d.t,
                d.t,
                False,
            )
        ]

    def _agg_trade(self, seq, recv_ns, d, stream, depth):  # type: ignore[no-untyped-def]
        if d.e != "aggTrade":
            raise Bad(f"unknown event type {d.e[:40]!r} on an aggTrade stream")
        if d.f > d.l:
            raise Bad(f"aggTrade: first trade id f={d.f} > last l={d.l}")
        return [
            Trade(
                seq,
                recv_ns,
                d.s,
                d.a,
                number(d.p, "p"),
                number(d.q, "q"),
                SELL if d.m else BUY,
                d.E,
                d.T,
                d.f,
                d.l,
                True,
            )
        ]

    def _kline(self, seq, recv_ns, d, stream, depth):  # type: ignore[no-untyped-def]
        if d.e != "kline":
            raise Bad(f"unknown event type {d.e[:40]!r} on a kline stream")
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
                number(k.o, "k.o"),
                number(k.h, "k.h"),
                number(k.l, "k.l"),
                number(k.c, "k.c"),
                number(k.v, "k.v"),
                number(k.q, "k.q"),
                k.n,
                k.x,
                k.f,
                k.L,
                number(k.V, "k.V"),
                number(k.Q, "k.Q"),
            )
        ]

    def _ticker(self, seq, recv_ns, d, stream, depth):  # type: ignore[no-untyped-def]
        if d.e != "24hrTicker":
            raise Bad(f"unknown event type {d.e[:40]!r} on a ticker stream")
        return [
            Ticker24h(
                seq,
                recv_ns,
                d.s,
                d.E,
                number(d.c, "c"),
                number(d.Q, "Q"),
                number(d.o, "o"),
                number(d.h, "h"),
                number(d.l, "l"),
                number(d.w, "w"),
                number(d.v, "v"),
                number(d.q, "q"),
                number(d.p, "p", signed=True),
                None if d.b is None else number(d.b, "b"),
                None if d.a is None else number(d.a, "a"),
                d.O,
                d.C,
                d.F,
                d.L,
                d.n,
                None if d.B is None else number(d.B, "B"),
                None if d.A is None else number(d.A, "A"),
            )
        ]


class BinanceSpot(_Binance):
    """Binance spot (and the embedded simulator, which speaks this dialect as ``name="sim"``)."""


class BinanceFutures(FuturesOutbound, _Binance):
    """Binance USD-M futures: ``pu``/``T`` on depth, ``/fapi/v1/depth``, ``/public`` vs ``/market``."""

    name = "binance-futures"
    sync_rule = SyncRule.BINANCE_FUTURES
    futures = True
    ws_base = "wss://fstream.binance.com"
    rest_base = "https://fapi.binance.com"
