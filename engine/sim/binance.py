"""The Binance dialect of the simulator and the replay server: what Binance's wire looks like.

This module owns, for Binance spot (``/api/v3``) and USD-M futures (``/fapi/v1``):

* the WebSocket paths — ``/ws/<stream>``, ``/ws`` + SUBSCRIBE, and
  ``/stream?streams=a/b`` whose frames carry the ``{"stream":..,"data":..}``
  wrapper (:func:`ws_route`, :func:`wrap`);
* the control messages — SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS /
  SET_PROPERTY / GET_PROPERTY with Binance's replies and error codes 0..3
  (:func:`control_reply`);
* the REST routes (depth, ping, time) and their error bodies: ``-1102`` no
  symbol, ``-1121`` unknown symbol, ``-1100`` bad limit (:class:`RestPaths`,
  :func:`depth_request`, :func:`error_body`);
* the notices and corruptions a fault sends in Binance's shapes
  (:func:`server_shutdown`, :func:`garbage`, :func:`drift`).

The market payloads themselves (trade, depthUpdate, kline, ...) are rendered by
:class:`engine.sim.model.Market`'s encoder, :mod:`engine.sim.binance_frames`.

Pure functions and constants: no I/O, no clock, no market state.  It must not
depend on the engine's codecs or reducers (the server must not interpret what
it serves); the next venues get modules of their own beside this one.
"""

from __future__ import annotations

import json
import random
from collections.abc import Container
from typing import Any, Protocol
from urllib.parse import parse_qs

import attrs

from engine.num import parse, render
from engine.sim import dialect
from engine.sim.binance_frames import BinanceFuturesFrames, BinanceSpotFrames
from engine.sim.frames import FrameEncoder

__all__ = [
    "BinanceDialect",
    "BinanceFuturesDialect",
    "METHODS",
    "SPOT",
    "USDM",
    "RestError",
    "RestPaths",
    "control_reply",
    "depth_request",
    "diff_stream",
    "drift",
    "error_body",
    "garbage",
    "json_body",
    "server_shutdown",
    "ws_route",
    "wrap",
]

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")

#: The largest depth snapshot Binance serves.
MAX_DEPTH_LIMIT = 5000


@attrs.frozen
class RestPaths:
    """One Binance market's REST routes."""

    depth: str
    ping: str
    time: str

    @classmethod
    def under(cls, prefix: str) -> RestPaths:
        return cls(f"{prefix}/depth", f"{prefix}/ping", f"{prefix}/time")

    def route(self, path: str) -> str | None:
        """``"depth"``, ``"ping"``, ``"time"`` or None for ``path``."""
        return {self.depth: "depth", self.ping: "ping", self.time: "time"}.get(path)


SPOT = RestPaths.under("/api/v3")
USDM = RestPaths.under("/fapi/v1")


def json_body(obj: Any) -> bytes:
    """Compact JSON, as Binance sends it."""
    return json.dumps(obj, separators=(",", ":")).encode()


def error_body(msg: str, code: int = -1) -> bytes:
    """Binance's REST / handshake error body ``{"code":..,"msg":..}``."""
    return json_body({"code": code, "msg": msg})


class RestError(dialect.RestError):
    """A REST request Binance answers with an error: ``status`` and the body's ``code``/``msg``."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(status, error_body(msg, code))
        self.code, self.msg = code, msg


def depth_request(query: dict[str, str], known: Container[str]) -> tuple[str, int]:
    """``(SYMBOL, limit)`` of a depth request (limit defaults to 100, clamped to 1..5000).

    Raises:
        RestError: Binance's parameter errors (no symbol, unknown symbol, bad limit).
    """
    symbol = query.get("symbol")
    if not symbol:
        raise RestError(
            400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
        )
    if symbol not in known:
        raise RestError(400, -1121, "Invalid symbol.")
    limit_s = query.get("limit", "100")
    if not limit_s.isdigit() or len(limit_s) > 20:
        raise RestError(
            400,
            -1100,
            "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
        )
    return symbol, min(max(int(limit_s), 1), MAX_DEPTH_LIMIT)


# --------------------------------------------------------------------------- WebSocket


def ws_route(path: str, query: str) -> tuple[bool, list[str]] | None:
    """``(combined, streams)`` of a WebSocket path (no trailing ``/``), or None if unknown."""
    if path == "/ws" or path.startswith("/ws/"):
        return False, [s for s in path[4:].split("/") if s]
    if path == "/stream":
        names = parse_qs(query).get("streams", [""])[-1]
        return True, [s for s in names.split("/") if s]
    return None


_WRAP: dict[str, bytes] = {}


def wrap(stream: str, payload: bytes) -> bytes:
    """A combined-stream frame: ``{"stream":"<stream>","data":<payload>}`` (Binance's exact form)."""
    p = _WRAP.get(stream)
    if p is None:
        if len(_WRAP) > 65536:
            _WRAP.clear()
        p = _WRAP[stream] = b'{"stream":"' + stream.encode() + b'","data":'
    return p + payload + b"}"


def diff_stream(symbol: str) -> str:
    """The stream of a symbol's 100 ms diff-depth batches (what a gap fault withholds)."""
    return f"{symbol.lower()}@depth@100ms"


def _error(code: int, msg: str, rid: Any) -> bytes:
    return json_body({"error": {"code": code, "msg": msg}, "id": rid})


def _result(result: Any, rid: Any) -> bytes:
    return json_body({"result": result, "id": rid})


class Subscriber(Protocol):
    """What :func:`control_reply` reads and changes of a connection."""

    subs: dict[str, None]
    combined: bool

    def subscribe(self, stream: str) -> None: ...
    def unsubscribe(self, stream: str) -> None: ...


def _valid_id(rid: Any) -> bool:
    return (
        rid is None
        or (isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid < 2**63)
        or (
            isinstance(rid, str)
            and 0 < len(rid) <= 36
            and rid.replace("-", "").replace("_", "").isalnum()
        )
    )


def control_reply(
    conn: Subscriber, text: str | None, valid: Container[str], max_streams: int
) -> bytes:
    """One client message → its reply (and the (un)subscription it asks for, if valid)."""
    if text is None:
        return _error(3, "Invalid JSON: expected a text frame", None)
    try:
        req = json.loads(text)
    except ValueError as exc:
        return _error(3, f"Invalid JSON: {exc}", None)
    if not isinstance(req, dict):
        return _error(2, "Invalid request: request must be a JSON object", None)
    if "id" not in req:
        return _error(2, "Invalid request: missing field `id`", None)
    rid = req["id"]
    if not _valid_id(rid):
        return _error(
            2,
            "Invalid request: request ID must be an unsigned integer or a string of up to 36 alphanumerics",
            None,
        )
    if "method" not in req:
        return _error(2, "Invalid request: missing field `method`", rid)
    method = req["method"]
    if method not in METHODS:
        return _error(
            2,
            f"Invalid request: unknown variant `{method}`, expected one of "
            + ", ".join(f"`{m}`" for m in METHODS),
            rid,
        )
    params = req.get("params", [])
    if method == "LIST_SUBSCRIPTIONS":
        return _result(list(conn.subs), rid)
    if not isinstance(params, list):
        return _error(2, "Invalid request: `params` must be an array", rid)
    if method in ("SET_PROPERTY", "GET_PROPERTY"):
        return _property(conn, method, params, rid)
    if any(not isinstance(p, str) for p in params):
        return _error(1, "Invalid value type: expected String", rid)
    if not params:
        return _error(2, "Invalid request: `params` must name at least one stream", rid)
    unknown = [p for p in params if p not in valid]
    if unknown:
        return _error(2, f"Invalid request: unknown stream `{unknown[0]}`", rid)
    if method == "SUBSCRIBE":
        new = [p for p in dict.fromkeys(params) if p not in conn.subs]
        if len(conn.subs) + len(new) > max_streams:
            return _error(
                2, f"Invalid request: too many streams (max {max_streams} per connection)", rid
            )
        for p in new:
            conn.subscribe(p)
    else:
        for p in params:
            conn.unsubscribe(p)
    return _result(None, rid)


def _property(conn: Subscriber, method: str, params: list[Any], rid: Any) -> bytes:
    if not params or params[0] != "combined":
        return _error(0, "Unknown property", rid)
    if method == "GET_PROPERTY":
        return _result(conn.combined, rid)
    if len(params) != 2 or not isinstance(params[1], bool):
        return _error(1, "Invalid value type: expected Boolean", rid)
    conn.combined = params[1]
    return _result(None, rid)


# --------------------------------------------------------------------------- faults' shapes


def server_shutdown(ms: int) -> bytes:
    """The ``serverShutdown`` notice (sent unwrapped on raw and combined connections alike)."""
    return f'{{"e":"serverShutdown","E":{ms}}}'.encode()


def garbage(
    rng: random.Random, stream: str, ms: int, combined: bool
) -> list[tuple[str, bytes, int]]:
    """Four invalid frames ``(kind, bytes, opcode)``: binary junk, truncated JSON, a
    depthUpdate with wrong types, non-JSON text (shaped for ``stream``'s symbol)."""
    sym = stream.split("@", 1)[0].upper()
    wrong = (
        f'{{"e":"depthUpdate","E":"soon","s":"{sym}","U":"x","u":null,'
        f'"b":[[1.5,2]],"a":{{"p":"1"}}}}'
    )
    good = f'{{"e":"trade","E":{ms},"s":"{sym}","t":1,"p":"1.00000000","q":"1.00000000"}}'
    if combined:
        wrong = f'{{"stream":"{stream}","data":{wrong}}}'
        good = f'{{"stream":"{stream}","data":{good}}}'
    return [
        ("binary", bytes(rng.randrange(256) for _ in range(rng.randrange(8, 64))), 0x2),
        ("truncated", good[: rng.randrange(5, len(good) - 2)].encode(), 0x1),
        ("types", wrong.encode(), 0x1),
        ("notjson", "".join(rng.choice("abc{}[]:,\"' xyz") for _ in range(40)).encode(), 0x1),
    ]


def drift(body: bytes, step: int) -> bytes:
    """A snapshot that disagrees with the stream: the deepest bid's quantity grows by one lot step.

    The deepest level, because the market rarely touches it: a verification that
    compares this snapshot with the book a few updates later still sees the drift
    (a drifted best level would usually be overwritten by the next diffs).
    """
    snap = json.loads(body)
    side = snap["bids"] or snap["asks"]
    if side:
        p, qty = side[-1]
        side[-1] = [p, render(parse(qty) + step, 8)]
    return json_body(snap)


# --------------------------------------------------------------------------- the dialect


class BinanceDialect:
    """Binance spot's :class:`engine.sim.dialect.Dialect` (``rest_paths``: the markets whose REST
    routes it answers; the replay server answers spot and USD-M alike)."""

    replays_by_stream = True

    def __init__(self, name: str = "binance", rest_paths: tuple[RestPaths, ...] = (SPOT,)) -> None:
        self.name = name
        self.rest_paths = rest_paths

    def encoder(self) -> FrameEncoder:
        return BinanceSpotFrames()

    def ws_route(self, path: str, query: str) -> tuple[bool, list[str]] | None:
        return ws_route(path, query)

    wrap = staticmethod(wrap)

    def control_reply(self, conn: Any, text: str | None, host: dialect.DialectHost) -> list[bytes]:
        return [control_reply(conn, text, host.valid_streams, host.max_streams)]

    def rest_route(self, path: str) -> str | None:
        return next((r for p in self.rest_paths if (r := p.route(path))), None)

    def depth_request(
        self, path: str, query: dict[str, str], known: Container[str]
    ) -> tuple[str, int]:
        return depth_request(query, known)

    def rest_answer(self, route: str, host: dialect.DialectHost) -> tuple[int, bytes]:
        if route == "time":
            return 200, json_body({"serverTime": host.sim_now()})
        return 200, b"{}"  # ping

    error_body = staticmethod(error_body)
    server_shutdown = staticmethod(server_shutdown)
    garbage = staticmethod(garbage)
    diff_stream = staticmethod(diff_stream)


class BinanceFuturesDialect(BinanceDialect):
    """Binance USD-M: the spot wire with ``/fapi/v1`` REST and the futures depth fields (``pu``)."""

    def __init__(
        self, name: str = "binance-futures", rest_paths: tuple[RestPaths, ...] = (USDM,)
    ) -> None:
        super().__init__(name, rest_paths)

    def encoder(self) -> FrameEncoder:
        return BinanceFuturesFrames()

    def ws_route(self, path: str, query: str) -> tuple[bool, list[str]] | None:
        """As spot, also under the ``/public`` and ``/market`` paths (served alike here)."""
        for prefix in ("/public", "/market"):
            if path.startswith(prefix + "/"):
                path = path[len(prefix) :]
                break
        return ws_route(path, query)
