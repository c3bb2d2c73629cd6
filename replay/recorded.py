"""What a journal recorded, as the replay server serves it: the stream of each frame, the REST bodies.

This module owns

* naming the Binance stream of each recorded inbound frame
  (:class:`StreamNamer`): the combined wrapper's ``"stream"``, else the
  recorded connection's URL (``/ws/<stream>``) and the SUBSCRIBE messages the
  recorder sent on that connection (matched to the payload's event type and
  symbol when a raw connection carried several streams);
* for venues whose frames the Binance naming does not fit, :class:`ConnNamer`:
  every inbound text frame belongs to its recorded *connection*
  (``!conn<id>``), acks, snapshots and heartbeats included, so a client is
  served one recorded connection's frames exactly as they came;
* the REST index (:class:`RestIndex`): recorded ``/api/v3/depth`` and
  ``/fapi/v1/depth`` bodies per symbol, "latest at or before an instant, else
  the first one";

Byte exactness: a recorded combined frame ``{"stream":"<s>","data":<d>}``
(Binance's exact compact form) is split into ``<s>`` and the *byte slice*
``<d>``; a wrapper in any other form (extra spaces, other key order) is parsed
and its data re-serialized compactly (equal as JSON, not as bytes; counted in
``reserialized``).

Pure: no I/O, no clock.  It must not decode markets with the engine's codecs (it names and
slices bytes) nor pace or send anything (:mod:`engine.replay.server` does).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

from engine.journal.schema import Dir, Frame, Kind
from engine.sim import binance

__all__ = [
    "AnyStreamName",
    "ConnNamer",
    "RecordedDialect",
    "conn_stream",
    "RestIndex",
    "StreamNamer",
    "stream_frames",
]

#: REST paths whose recorded bodies are served per ``symbol``.
DEPTH_PATHS = (binance.SPOT.depth, binance.USDM.depth)

_PREFIX = b'{"stream":"'
_MID = b'","data":'
_STREAM_NAME = re.compile(r"^[A-Za-z0-9!_@.\-]{1,200}$")


# =========================================================================== stream names


class AnyStreamName(frozenset[str]):
    """The recorded stream names, but *membership* accepts any well-formed name.

    The simulator checks ``name in server.valid_streams`` on URLs and
    SUBSCRIBE; Binance itself accepts unknown names and sends nothing for them,
    which is what a replay must do too (iteration still lists what was recorded).
    """

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(_STREAM_NAME.match(name))


def _url_streams(url: str) -> tuple[bool, list[str]]:
    """(combined?, streams named in the URL) of a recorded connection URL."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if path.endswith("/stream"):
        qs = parse_qs(parts.query)
        names = qs.get("streams", [""])[-1]
        return True, [s for s in names.split("/") if s]
    i = path.find("/ws")
    if i >= 0 and (len(path) == i + 3 or path[i + 3] == "/"):
        return False, [s for s in path[i + 4 :].split("/") if s]
    return False, []


_EVENT_STREAM = {
    "depthUpdate": ("@depth",),
    "trade": ("@trade",),
    "aggTrade": ("@aggTrade",),
    "kline": ("@kline_",),
    "24hrTicker": ("@ticker",),
    "24hrMiniTicker": ("@miniTicker",),
    "bookTicker": ("@bookTicker",),
    "markPriceUpdate": ("@markPrice",),
    "forceOrder": ("@forceOrder",),
}


def _matches(stream: str, obj: dict[str, Any]) -> bool:
    """Could ``obj`` (a raw payload) be an event of ``stream``?"""
    sym, _, rest = stream.partition("@")
    s = obj.get("s")
    if isinstance(s, str) and s.lower() != sym:
        return False
    e = obj.get("e")
    if isinstance(e, str):
        kinds = _EVENT_STREAM.get(e)
        if kinds is None:
            return False
        at = "@" + rest
        # "@depth" must not match "@depth5" (a partial-depth stream): the kind ends the
        # name, or is followed by an "@<speed>" suffix, or is a prefix ending in "_"
        return any(
            at.startswith(k) and (k.endswith("_") or len(at) == len(k) or at[len(k)] == "@")
            for k in kinds
        )
    if "lastUpdateId" in obj:  # partial depth: @depth5/10/20
        return rest.startswith("depth") and rest[5:6].isdigit()
    if "u" in obj and "b" in obj and "a" in obj:  # spot bookTicker has no "e"
        return rest == "bookTicker"
    return False


@attrs.define
class _Conn:
    combined: bool
    streams: list[str]


class StreamNamer:
    """Which Binance stream each recorded inbound frame belongs to, and its bare data bytes.

    Fed every frame in journal order (:meth:`observe` for outbound SUBSCRIBE /
    UNSUBSCRIBE, :meth:`name` for inbound text).  Pure: no I/O, no clock.
    """

    def __init__(self) -> None:
        self._conns: dict[tuple[int, str], _Conn] = {}
        self.reserialized = 0
        self.unnamed = 0
        #: +1 whenever a SUBSCRIBE / UNSUBSCRIBE changed what a connection carries
        self.version = 0

    def snapshot(self) -> dict[tuple[int, str], tuple[bool, tuple[str, ...]]]:
        """What the SUBSCRIBEs so far decided (enough to name every later frame alike)."""
        return {k: (c.combined, tuple(c.streams)) for k, c in self._conns.items()}

    @classmethod
    def restored(cls, snap: dict[tuple[int, str], tuple[bool, tuple[str, ...]]]) -> StreamNamer:
        n = cls()
        n._conns = {k: _Conn(combined, list(streams)) for k, (combined, streams) in snap.items()}
        return n

    def _conn(self, conn: int, source: str) -> _Conn:
        key = (conn, source)
        c = self._conns.get(key)
        if c is None:
            combined, streams = _url_streams(source)
            c = self._conns[key] = _Conn(combined, streams)
        return c

    def observe(self, conn: int, source: str, payload: bytes) -> None:
        """An outbound control message on ``conn``: track (UN)SUBSCRIBE params."""
        try:
            msg = json.loads(payload)
        except ValueError:
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("params"), list):
            return
        c = self._conn(conn, source)
        params = [p for p in msg["params"] if isinstance(p, str)]
        if msg.get("method") == "SUBSCRIBE":
            c.streams.extend(p for p in params if p not in c.streams)
            self.version += 1
        elif msg.get("method") == "UNSUBSCRIBE":
            c.streams[:] = [s for s in c.streams if s not in params]
            self.version += 1
        # SET_PROPERTY combined needs nothing: the wrapper on the frames themselves tells us

    def name(self, conn: int, source: str, payload: bytes) -> tuple[str, bytes] | None:
        """``(stream, data bytes)`` of an inbound text frame, or None (a reply, a notice, junk)."""
        if payload.startswith(_PREFIX):
            end = payload.find(_MID, len(_PREFIX))
            if end > 0 and payload.endswith(b"}"):
                stream = payload[len(_PREFIX) : end].decode("utf-8", "replace")
                if _STREAM_NAME.match(stream):
                    return stream, payload[end + len(_MID) : -1]
        obj: Any
        try:
            obj = json.loads(payload)
        except ValueError:
            self.unnamed += 1
            return None
        if not isinstance(obj, dict):
            self.unnamed += 1
            return None
        if isinstance(obj.get("stream"), str) and "data" in obj:
            self.reserialized += 1
            data = json.dumps(obj["data"], separators=(",", ":"), ensure_ascii=False)
            return obj["stream"], data.encode()
        if "result" in obj or "error" in obj or obj.get("e") == "serverShutdown":
            return None  # a reply to the recorder's control message, or a notice
        c = self._conn(conn, source)
        if len(c.streams) == 1:
            return c.streams[0], payload
        hits = [s for s in c.streams if _matches(s, obj)]
        if len(hits) == 1:
            return hits[0], payload
        self.unnamed += 1
        return None


def conn_stream(conn: int) -> str:
    """The name :class:`ConnNamer` gives the frames of recorded connection ``conn``."""
    return f"!conn{conn}"


class ConnNamer:
    """Names every inbound text frame by its recorded connection (``!conn<id>``), bytes as recorded.

    The same interface as :class:`StreamNamer`; it keeps no state (what the
    recorder subscribed is in the recorded replies themselves).
    """

    version = 0
    unnamed = 0
    reserialized = 0

    def snapshot(self) -> dict[tuple[int, str], tuple[bool, tuple[str, ...]]]:
        return {}

    @classmethod
    def restored(cls, snap: Any) -> ConnNamer:
        return cls()

    def observe(self, conn: int, source: str, payload: bytes) -> None:
        pass

    def name(self, conn: int, source: str, payload: bytes) -> tuple[str, bytes] | None:
        return conn_stream(conn), payload


# =========================================================================== serving by connection


class RecordedDialect:
    """The replay server's dialect for a venue served by recorded connection.

    Any WebSocket path opens a connection; its first message (the client's
    subscribe) starts the replay of one recorded connection; no message is
    answered by invention: the recorded connection's frames *are* the answers
    (acks, snapshots, heartbeats, pongs), at their recorded times.  REST: the
    body recorded for the same URL.
    """

    replays_by_stream = False

    def __init__(self, name: str, rest_paths: set[str]) -> None:
        self.name = name
        self._rest_paths = rest_paths

    def encoder(self) -> Any:  # pragma: no cover - a replay has no market model
        raise NotImplementedError("a replay serves recorded frames")

    def ws_route(self, path: str, query: str) -> tuple[bool, list[str]]:
        return False, []

    @staticmethod
    def wrap(stream: str, payload: bytes) -> bytes:
        return payload

    def control_reply(self, conn: Any, text: str | None, host: Any) -> list[bytes]:
        if not conn.subs:
            conn.subscribe(host.recorded_connection(conn))
        return []

    def rest_route(self, path: str) -> str | None:
        return "depth" if path in self._rest_paths else None

    def depth_request(self, path: str, query: dict[str, str], known: Any) -> tuple[str, int]:
        raise NotImplementedError  # pragma: no cover - depth() looks the URL up itself

    def rest_answer(self, route: str, host: Any) -> tuple[int, bytes]:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def error_body(msg: str) -> bytes:
        return json.dumps({"error": msg}).encode()

    def server_shutdown(self, ms: int) -> bytes | None:
        return None

    def garbage(
        self, rng: Any, stream: str, ms: int, combined: bool
    ) -> list[tuple[str, bytes, int]]:
        return [("binary", bytes(rng.randrange(256) for _ in range(16)), 0x2)]

    def diff_stream(self, symbol: str) -> str:
        return ""


# =========================================================================== REST


@attrs.define
class _Body:
    recv_ns: int
    status: int
    body: bytes


def url_key(path: str, query: dict[str, str]) -> str:
    """A request's path and query, the parameters sorted: how recorded REST URLs are matched."""
    return path + "?" + "&".join(f"{k}={v}" for k, v in sorted(query.items()))


class RestIndex:
    """Recorded depth snapshots per (path, SYMBOL), in receive order; and every recorded REST
    body by its exact URL (:meth:`lookup_url`, for venues served by connection)."""

    def __init__(self) -> None:
        self._bodies: dict[tuple[str, str], list[_Body]] = {}
        self._urls: dict[str, list[_Body]] = {}

    def add(self, recv_ns: int, source: str, status: int | None, body: bytes) -> None:
        url = urlsplit(source)
        path = url.path
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        self._urls.setdefault(url_key(path, query), []).append(_Body(recv_ns, status or 200, body))
        if path not in DEPTH_PATHS:
            return
        sym = parse_qs(url.query).get("symbol", [""])[-1].upper()
        if sym:
            self._bodies.setdefault((path, sym), []).append(_Body(recv_ns, status or 200, body))

    def symbols(self, path: str) -> list[str]:
        return sorted(s for p, s in self._bodies if p == path)

    def paths(self) -> set[str]:
        """Every recorded REST path."""
        return {k.partition("?")[0] for k in self._urls}

    def lookup_url(self, path: str, query: dict[str, str], at_ns: int) -> tuple[int, bytes] | None:
        """(status, body) recorded for exactly this URL (parameters in any order): the latest
        at or before ``at_ns``, else the first; None if never requested."""
        return _latest(self._urls.get(url_key(path, query)), at_ns)

    def lookup(self, path: str, symbol: str, at_ns: int) -> tuple[int, bytes] | None:
        """(status, body) of the latest snapshot received at or before ``at_ns``, else the first."""
        return _latest(self._bodies.get((path, symbol.upper())), at_ns)

    def __len__(self) -> int:
        return sum(len(v) for v in self._bodies.values())


def _latest(bodies: list[_Body] | None, at_ns: int) -> tuple[int, bytes] | None:
    """The latest body received at or before ``at_ns``, else the first (None: none)."""
    if not bodies:
        return None
    best = bodies[0]
    for b in bodies:  # few per URL; a bisect is not worth the index
        if b.recv_ns <= at_ns:
            best = b
        else:
            break
    return best.status, best.body


# =========================================================================== the index pass


def stream_frames(
    frames: Iterable[Frame], namer: StreamNamer | ConnNamer, rest: RestIndex | None = None
) -> Iterator[tuple[int, str, bytes]]:
    """``(recv_ns, stream, data)`` of every nameable inbound text frame, in journal order.

    Outbound frames feed ``namer`` (SUBSCRIBE / UNSUBSCRIBE); inbound REST bodies
    go to ``rest`` if given.
    """
    for f in frames:
        if f.dir == Dir.OUT:
            namer.observe(f.conn, f.source, f.payload)
        elif f.dir == Dir.IN and f.kind == Kind.TEXT:
            named = namer.name(f.conn, f.source, f.payload)
            if named is not None:
                yield f.recv_ns, named[0], named[1]
        elif rest is not None and f.dir == Dir.IN and f.kind == Kind.REST:
            rest.add(f.recv_ns, f.source, f.code, f.payload)
