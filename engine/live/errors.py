"""The capture's typed errors: what can end one connection or one REST request.

Owns: :class:`CaptureError` and its kinds (the key each is counted under in
``CaptureStatus.errors``), and :func:`closed_error`, the mapping from
trio-websocket's ``ConnectionClosed`` to them.  Must not: decide what happens
next (the connection and REST modules journal the error and go on: none of
these stops the capture) or hold anything about bad *content* (a well-formed
frame with bad data is journaled and becomes a ``DecodeError`` event).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CaptureError",
    "ConnectFailed",
    "CaptureTimeout",
    "StaleConnection",
    "StalledConnection",
    "InvalidData",
    "ServerClosed",
    "ResponseTooLarge",
    "closed_error",
]


class CaptureError(Exception):
    """Something ended one connection or one REST request; the capture goes on.

    ``kind`` is the key under which it is counted in ``CaptureStatus.errors``.
    """

    kind = "error"


class ConnectFailed(CaptureError):
    """The TCP/TLS connect or the WebSocket handshake failed (refused, DNS, TLS, HTTP 4xx/5xx)."""

    kind = "connect_failed"


class CaptureTimeout(CaptureError):
    """Something we waited for did not come in time (base of stale and stalled)."""

    kind = "timeout"


class StaleConnection(CaptureTimeout):
    """No data frame for ``stale_after_s`` although the socket is alive (heartbeats do not count).

    Differs from :class:`StalledConnection`: the peer may still answer pings
    (e.g. Binance futures' old ``/stream`` path, which handshakes and then sends nothing).
    """

    kind = "stale"


class StalledConnection(CaptureTimeout):
    """Our own ping went unanswered, and nothing else arrived, for ``ping_timeout_s``: the peer
    (or the path) is dead."""

    kind = "stalled"


class InvalidData(CaptureError):
    """The peer broke the WebSocket protocol (oversized frame, bad framing, a frame wsproto refuses).

    Bad *content* in a well-formed frame is not this: it is journaled and becomes
    a DecodeError event in the pipeline.  Nor is a text frame that is not UTF-8:
    its exact bytes are journaled (see :mod:`engine.live.websocket`).
    """

    kind = "invalid_data"


class ResponseTooLarge(CaptureError):
    """A REST response body longer than ``LiveConfig.max_rest_bytes``: abandoned, not journaled."""

    kind = "rest_too_large"


class ServerClosed(CaptureError):
    """The server closed the connection (``code``/``reason``; 1006 = dropped without a close frame)."""

    kind = "server_close"

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"server closed: code={code} reason={reason!r}")
        self.code = code
        self.reason = reason


def closed_error(exc: Any) -> CaptureError:
    """trio-websocket's ``ConnectionClosed`` → our typed error (protocol errors are invalid data)."""
    r = exc.reason
    code = getattr(r, "code", None)
    reason = getattr(r, "reason", None) or ""
    if code in (1002, 1007, 1009):
        return InvalidData(f"protocol error, close {code}: {reason}")
    return ServerClosed(code, reason or ("dropped" if code == 1006 else ""))
