"""One WebSocket connection of a capture: what it carries and its runtime state.

Owns which streams go on which connection and in which URL (the codec's
:class:`~engine.codecs.base.ConnLimits`): :func:`shard_streams` puts at most
``min(LiveConfig.max_streams_per_conn, limits.max_per_conn)`` streams on a
connection, grouped by ``codec.streams_by_path``; :func:`conn_url` puts as
many as fit ``max_url_len`` in the URL when the venue takes ``streams_in_url``
(the rest are subscribed after connecting, at most ``limits.max_per_subscribe``
a request), none otherwise.  And :class:`Conn`, the runtime's state of one
connection (one journal ``conn`` id), shared by its tasks.

Must not: connect, send, journal or time anything (that is
:mod:`engine.live.connection` and :mod:`engine.live.liveness`), or know a
venue (every difference is a codec attribute).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import trio

from engine.live.errors import CaptureError

__all__ = ["Conn", "shard_streams", "conn_url"]


def shard_streams(codec: Any, streams: Sequence[str], per_conn: int) -> list[list[str]]:
    """Split streams into connection shards: by URL path first (futures), then ``per_conn`` each
    (never more than the codec's ``limits.max_per_conn``)."""
    per_conn = max(1, min(per_conn, codec.limits.max_per_conn))
    groups = list(codec.streams_by_path(streams).values())
    return [g[i : i + per_conn] for g in groups for i in range(0, len(g), per_conn)]


def conn_url(codec: Any, base: str, streams: Sequence[str], max_url_len: int) -> tuple[str, int]:
    """The URL of a connection carrying ``streams``, and how many of them it names (a prefix).

    With ``limits.streams_in_url``, as many as fit ``max_url_len`` (halving, one at least);
    otherwise the URL carries none: every stream is subscribed after connecting."""
    url = codec.ws_url(base, list(streams))
    if not codec.limits.streams_in_url:
        return url, 0
    k = len(streams)
    while len(url) > max_url_len and k > 1:
        k = max(1, k // 2)
        url = codec.ws_url(base, list(streams[:k]))
    return url, k


@attrs.define(eq=False)
class Conn:
    """The runtime's state of one WebSocket connection (one journal ``conn`` id)."""

    id: int
    shard: int
    url: str
    streams: list[str]
    url_streams: int
    ws: Any = None
    opened_at: float = 0.0
    frames: int = 0
    scope: trio.CancelScope | None = None
    error: CaptureError | None = None
    rotating: bool = False
    #: set once the first frame arrived (a predecessor may close then)
    ready: trio.Event = attrs.Factory(trio.Event)
    #: set by the successor when it is ready: close now
    release: trio.Event = attrs.Factory(trio.Event)
    #: set when rotation starts or the connection ended: the shard loop acts
    signal: trio.Event = attrs.Factory(trio.Event)
    #: set when rotation starts (the session's rotation task waits on it)
    rotate: trio.Event = attrs.Factory(trio.Event)
    limiter: Any = None
    done: bool = False
    #: the TCP (or TLS) stream under ``ws``: ours to close, whatever trio-websocket did
    stream: Any = None
    #: the session's nursery and the cancel scope of its helper tasks (all but the reader)
    session: trio.Nursery | None = None
    helpers: trio.CancelScope | None = None
    #: why we are closing it cleanly (our close frame sent, still reading until the peer's)
    closing: str | None = None
    #: set when the reader saw the peer's close after ours: nothing it sent is lost
    read_done: trio.Event = attrs.Factory(trio.Event)
    #: control requests sent so far (their ids: ``id * 10_000 + n``)
    requests: int = 0
