"""The WebSocket client under the capture: trio-websocket on our own TCP/TLS stream, and what we change of it.

Owns: :func:`open_client` (trio-websocket's ``wrap_client_stream`` with our
wsproto connection, and a handshake that fails *typed*), :func:`send_close`
(our close frame, leaving the connection readable), and the lossless text
decoding (:data:`INVALID_TEXT`).  Everything here that touches an internal
of trio-websocket or wsproto is named and guarded; tests over real sockets
(``tests/test_live_hostile.py``) fail if a new version moves one.
Must not: journal, count or decide anything (that is :mod:`engine.live.connection`).

Two things trio-websocket 0.12 / wsproto 1.2 do that a capture cannot accept:

* **A broken handshake answer** (garbage, a wrong ``Sec-WebSocket-Accept``, an
  HTTP head over h11's limit) makes wsproto raise ``RemoteProtocolError`` with
  a *server's* reject event as hint, which trio-websocket then tries to send as
  a client: h11 raises ``LocalProtocolError`` and the task dies untyped.  Here
  the handshake's protocol errors become :class:`ConnectFailed` (with wsproto's
  reason), and a peer that closes during the handshake is one too, at once
  rather than at the connect timeout.
* **A ping after our close frame** (a ping flood while we close): trio-websocket
  answers it with a pong, which wsproto refuses once our close is sent
  (``LocalProtocolError``, the connection's task dies untyped).  Here a pong
  that may no longer be sent is not sent (RFC 6455: nothing follows a close).
* **A text frame that is not UTF-8** fails the connection with 1007 and its
  bytes are lost.  Here text is decoded with ``surrogateescape``
  (:class:`_LosslessText`): every byte that is not UTF-8 becomes a lone
  surrogate, which valid UTF-8 never decodes to, so ``msg.encode()`` fails for
  exactly those messages and ``msg.encode("utf-8", "surrogateescape")`` gives
  back their exact bytes.  The reader journals them as ``binary`` with
  ``code`` :data:`INVALID_TEXT` and the connection goes on.
"""

from __future__ import annotations

from typing import Any

import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Event, Pong
from wsproto.frame_protocol import MessageDecoder
from wsproto.utilities import RemoteProtocolError

from engine.live.errors import ConnectFailed

__all__ = ["INVALID_TEXT", "CaptureClient", "open_client", "send_close"]

#: ``code`` of an inbound ``binary`` frame that arrived as a *text* frame whose bytes are
#: not UTF-8 (the close code RFC 6455 would have failed the connection with); payload exact
INVALID_TEXT = 1007


class _LosslessText(MessageDecoder):
    """wsproto's message decoder, decoding text with ``surrogateescape`` (see the module docstring).

    wsproto assigns ``decoder`` (a strict incremental UTF-8 decoder) when a
    text message starts; this property makes that decoder lenient.
    """

    @property  # type: ignore[override]
    def decoder(self) -> Any:
        return self._lenient

    @decoder.setter
    def decoder(self, value: Any) -> None:
        if value is not None:
            value.errors = "surrogateescape"
        self._lenient = value


class CaptureClient(WSConnection):
    """A client wsproto connection: typed handshake errors, no pong after our close, lossless text.

    :class:`_LosslessText` is installed in ``receive_data``, right when the
    handshake creates the connection and before any frame is decoded (wsproto
    decodes lazily, in ``events()``), so no frame, even one in the handshake's
    own read, is decoded strictly.  If a wsproto version lays its internals out
    otherwise, the strict decoder stays (an invalid text frame then closes the
    connection with 1007: journaled as the close and an ``invalid_data`` error).
    """

    def __init__(self) -> None:
        super().__init__(ConnectionType.CLIENT)
        self._lossless = False

    def send(self, event: Event) -> bytes:
        if isinstance(event, Pong) and self.state is not ConnectionState.OPEN:
            return b""  # closing: a pong may not follow our close frame
        return super().send(event)

    def receive_data(self, data: bytes | None) -> None:
        try:
            super().receive_data(data)
        except RemoteProtocolError as exc:
            if self.connection is None:  # the handshake answer: nothing to send back, fail typed
                why = exc.__cause__ or exc.__context__
                raise ConnectFailed(f"handshake: {exc}" + (f" ({why})" if why else "")) from None
            raise
        if not self._lossless and self.connection is not None:
            self._lossless = True
            proto = getattr(self.connection, "_proto", None)
            if isinstance(getattr(proto, "_message_decoder", None), MessageDecoder):
                proto._message_decoder = _LosslessText()  # type: ignore[union-attr]


async def open_client(
    nursery: trio.Nursery,
    stream: Any,
    host: str,
    resource: str,
    *,
    message_queue_size: int,
    max_message_size: int,
    receive_buffer_size: int = 65536,
) -> Any:
    """``trio_websocket.wrap_client_stream`` with :class:`CaptureClient`; returns once the handshake is done.

    Raises :class:`ConnectFailed` when the peer closes during the handshake (a
    protocol error in its answer raises it from the reader task, in ``nursery``).
    """
    ws = trio_websocket.WebSocketConnection(
        stream,
        CaptureClient(),
        host=host,
        path=resource,
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
    )
    nursery.start_soon(ws._reader_task)
    opened, closed = ws._open_handshake, ws._close_handshake
    async with trio.open_nursery() as waits:

        async def first(event: trio.Event) -> None:
            await event.wait()
            waits.cancel_scope.cancel()

        waits.start_soon(first, opened)
        waits.start_soon(first, closed)
    if not opened.is_set():
        raise ConnectFailed("handshake: the peer closed the connection before accepting it")
    return ws


async def send_close(ws: Any, code: int, reason: str) -> None:
    """Send our close frame and leave the connection *readable* until the peer's close arrives.

    trio-websocket's ``aclose()`` closes its message queue first: frames the
    server sent before it saw our close would be discarded, unjournaled.  RFC 6455
    lets an endpoint keep receiving after sending its close, so this sends the
    frame through the connection's own send path (the one internal we rely on;
    without it we fall back to ``aclose()`` and lose that tail).
    """
    send = getattr(ws, "_send", None)
    proto = getattr(ws, "_wsproto", None)
    if send is None or proto is None:
        await ws.aclose(code, reason)
        return
    if proto.state is ConnectionState.OPEN:
        await send(CloseConnection(code=code, reason=reason))
