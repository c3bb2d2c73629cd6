"""One simulated WebSocket client: its tasks, queues, limits, endings and counters.

This module owns :class:`WsConn` — reader, writer, pinger and lifetime tasks in
one nursery — and what happens on its socket:

* the writer's wake loop sends everything queued in one ``send_all`` of
  hand-framed, unmasked server frames (:func:`frame`; no permessage-deflate is
  negotiated, so hand framing is exact: ≥ 50k frames/s, ``bench/simulate.py``);
* back-pressure and limits: more than ``max_buffer`` bytes unsent (or the
  server's global budget, :meth:`engine.sim.transport.Transport.enforce_budget`)
  closes a slow consumer with 1008 "Slow consumer" (what was queued is
  discarded; the close frame follows what the socket already holds, and the
  TCP connection goes after ``close_timeout``); a message above ``max_message`` closes 1009; more than
  ``control_limit`` client messages (text, binary, ping, pong) in any sliding
  ``control_window`` (half-open ``(now-window, now]``) close 1008 "Too many
  requests"; no pong within ``pong_timeout`` of a ping (every
  ``ping_interval``) closes 1008 "Pong timeout"; ``lifetime`` closes 1001;
* endings: the close handshake, or TCP FIN after sent data, then reading until
  the client closes (unread data never becomes an RST);
* the counters (:class:`ConnStats`).

It must not know a venue: replies to client messages, the combined-frame
wrapper and the ping payload come from its server
(:class:`engine.sim.transport.Transport`'s hooks).  It decides no faults; it
carries the state they set (``stalled_until``, ``withheld``), and a venue's
numbering of the connection's messages (``numbered``, from the server's
:meth:`~engine.sim.transport.Transport.numbering`) sees every frame the
client is sent or loses to a fault.

Memory: :meth:`WsConn.buffered` is what a connection holds for its client —
queued frames (plus :data:`FRAME_OVERHEAD` each for their Python objects) and
the chunk a ``send_all`` is writing — the figure the server's budget adds up.

Counting: a frame counts when the ``send_all`` carrying it returned.  An abrupt
end (drop fault, slow consumer, a client that stopped reading) discards frames
not yet handed to the socket and the chunk whose send did not finish: never
counted — a client that journals everything it read holds exactly ``frames``
messages.  (Counting a cut-off chunk's bytes that the kernel took would count
frames left unread in the socket buffers of a client that had stopped
reading; not counting them can undercount a client that was still reading
when a shutdown cut its chunk off, so a server shutdown may leave a client
with a few frames more than ``frames``.)
"""

from __future__ import annotations

import struct
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

import attrs
import trio
import wsproto
import wsproto.events as we

if TYPE_CHECKING:
    from engine.sim.transport import Transport

__all__ = ["FRAME_OVERHEAD", "ConnStats", "WsConn", "frame"]

#: bytes a queued frame costs beyond its wire bytes (its ``bytes`` object and list slot)
FRAME_OVERHEAD = 64
#: the text-frame headers of payloads under 126 bytes, made once
_SMALL_TEXT = tuple(bytes((0x81, n)) for n in range(126))


def _header(n: int, opcode: int) -> bytes:
    if n < 126:
        return bytes((0x80 | opcode, n))
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n)
    return struct.pack("!BBQ", 0x80 | opcode, 127, n)


def frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """An unmasked, unfragmented server frame (RFC 6455 §5.2)."""
    return _header(len(payload), opcode) + payload


@attrs.define
class ConnStats:
    """What the server sent on (and received from) one WebSocket connection."""

    id: int
    path: str
    peer: str
    combined: bool
    opened: float
    closed: float | None = None
    close_kind: str | None = None
    close_code: int | None = None
    close_reason: str | None = None
    frames: int = 0
    #: frames of a write cut off by the connection's end: not in ``frames``, yet the client
    #: may have received any of them (the kernel took part of the write); a client's count
    #: lies between ``frames`` and ``frames + frames_cut``
    frames_cut: int = 0
    payload_bytes: int = 0
    wire_bytes: int = 0
    frames_by_stream: Counter[str] = attrs.Factory(Counter)
    pings_sent: int = 0
    pongs_received: int = 0
    pongs_sent: int = 0
    control_received: int = 0
    faults: list[str] = attrs.Factory(list)
    subscriptions: list[str] = attrs.Factory(list)

    def to_json(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["frames_by_stream"] = dict(self.frames_by_stream)
        return d


#: what a socket raises when the peer is gone
GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


class WsConn:
    """One WebSocket client: reader, writer, pinger and lifetime tasks in one nursery."""

    def __init__(
        self,
        server: Transport,
        stream: trio.SocketStream,
        ws: wsproto.WSConnection,
        cid: int,
        path: str,
        peer: str,
        combined: bool,
        streams: list[str],
    ) -> None:
        self.server = server
        self._wrap = server.wrap  # bound once: push_data is the hot path
        self.cfg = server.config
        self.stream = stream
        self.ws = ws
        self.id = cid
        self.combined = combined
        self.subs: dict[str, None] = dict.fromkeys(streams)
        self.stats = ConnStats(cid, path, peer, combined, time.time())
        self.out: list[bytes] = []
        self.out_len = 0
        #: trio time the socket last took bytes of the chunk being sent (or the send began):
        #: while ``inflight``, how long the client has not read — what the server's budget
        #: closes by (a reader's socket keeps taking)
        self.progress_at = trio.current_time()
        #: bytes of the chunk a send_all is writing now (0 when idle)
        self.inflight = 0
        self.pend: dict[str, int] = {}
        self.pend_frames = 0
        self.pend_payload = 0
        self.wake = trio.Event()
        self.closing = False
        self.ended = False
        #: set by the stall fault: neither send nor read until this trio time
        self.stalled_until = 0.0
        #: set by the gap fault: streams whose next frame is withheld from this client
        self.withheld: set[str] = set()
        #: the venue's numbering of this connection's messages (None: it numbers none)
        self.numbered = server.numbering()
        self.ctl_times: deque[float] = deque()
        self.ping_outstanding: float | None = None
        self.drained = trio.Event()
        self.nursery: trio.Nursery | None = None

    # ---------------------------------------------------------------- queueing

    def push_data(self, stream: str, payload: bytes) -> None:
        """Queue one market frame (called by the pump; must stay cheap)."""
        numbered = self.numbered
        if self.closing or self.stalled_until:
            if numbered is not None and not self.closing:
                numbered(payload)  # lost in the stall: its number is skipped
            return
        if self.withheld and stream in self.withheld:
            self.withheld.discard(stream)
            self.stats.faults.append(f"gap:{stream}")
            if numbered is not None:
                numbered(payload)
            return
        if numbered is not None:
            payload = numbered(payload)
        data = self._wrap(stream, payload) if self.combined else payload
        # _queue inlined (and the frame header's common case): this runs for every frame and
        # subscriber, and the call overhead alone cost ~5% of the push rate.  The header and
        # the payload are queued as two pieces, not concatenated: every subscriber of a stream
        # then holds the *same* payload object (one copy for a hundred clients), and the
        # writer's join makes the one copy the socket needs
        n = len(data)
        head = _SMALL_TEXT[n] if n < 126 else _header(n, 0x1)
        out = self.out
        out.append(head)
        out.append(data)
        self.out_len += len(head) + n
        pend = self.pend
        pend[stream] = pend.get(stream, 0) + 1
        self.pend_frames += 1
        self.pend_payload += n
        if self.out_len > self.cfg.max_buffer:
            self.close_slow(f"more than {self.cfg.max_buffer} bytes unsent")

    def push_message(self, key: str, data: bytes, opcode: int = 0x1) -> None:
        """Queue a non-market frame (reply, notice, garbage), counted under ``key``."""
        self._queue(key, data, opcode)
        self.wake.set()

    def _queue(self, key: str, data: bytes, opcode: int) -> None:
        f = frame(data, opcode)
        self.out.append(f)
        self.out_len += len(f)
        self.pend[key] = self.pend.get(key, 0) + 1
        self.pend_frames += 1
        self.pend_payload += len(data)

    def push_control(self, raw: bytes) -> None:
        """Queue protocol bytes from wsproto (ping, pong, close): not counted as frames."""
        self.out.append(raw)
        self.out_len += len(raw)
        self.wake.set()

    def buffered(self) -> int:
        """Bytes held for this client: queued frames (with their overhead) and the chunk being sent."""
        return self.out_len + self.pend_frames * FRAME_OVERHEAD + self.inflight

    def close_slow(self, why: str) -> None:
        """A client that does not keep up: drop what is queued, close with 1008, count it.

        If a send is in flight, the client's socket is full (it stopped reading
        in the middle of a chunk): a close frame could not reach it, and the
        chunk would stay held until the close timeout, so the connection is
        cut off at once (the chunk freed), its close recorded as 1008 all the same.
        """
        if self.closing or self.ended:
            return
        self._discard_unsent()
        reason = f"Slow consumer: {why}"
        if self.inflight:
            self.abort("slow_consumer", 1008, reason)
        else:
            self.begin_close("slow_consumer", 1008, "Slow consumer")
            self.stats.close_reason = reason
        self.server.limits["slow_consumers"] += 1

    def _discard_unsent(self) -> None:
        self.out, self.out_len, self.pend, self.pend_frames, self.pend_payload = [], 0, {}, 0, 0

    def subscribe(self, stream: str) -> None:
        if stream not in self.subs:
            self.subs[stream] = None
            self.server.index_add(stream, self)

    def unsubscribe(self, stream: str) -> None:
        if stream in self.subs:
            del self.subs[stream]
            self.server.index_remove(stream, self)

    # ---------------------------------------------------------------- tasks

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._writer)
                nursery.start_soon(self._reader)
                nursery.start_soon(self._pinger)
                nursery.start_soon(self._lifetime)
                task = self.server.connection_task(self)
                if task is not None:
                    nursery.start_soon(task)
        finally:
            self.ended = True
            self.server.unregister(self)
            st = self.stats
            st.closed = time.time()
            if st.close_kind is None:
                st.close_kind = "eof"
            st.subscriptions = list(self.subs)
            with trio.move_on_after(self.cfg.close_timeout) as cs:
                cs.shield = True
                await self._tcp_finish()

    async def _tcp_finish(self) -> None:
        """FIN after everything sent, then read until the client closes (no RST on unread data)."""
        try:
            await self.stream.send_eof()
            while await self.stream.receive_some(65536):
                pass
        except (*GONE, OSError):
            pass
        finally:
            await self.stream.aclose()

    async def _send(self, chunk: bytes) -> None:
        """``send_all``, noting in :attr:`progress_at` each time the socket takes bytes."""
        sock = self.stream.socket
        view = memoryview(chunk)
        taken = 0
        while taken < len(chunk):
            try:
                taken += await sock.send(view[taken:])
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            self.progress_at = trio.current_time()

    async def _writer(self) -> None:
        st = self.stats
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            if not self.out:
                self.drained.set()
                continue
            chunk = b"".join(self.out)
            pend, nf, npl = self.pend, self.pend_frames, self.pend_payload
            self._discard_unsent()
            self.inflight = len(chunk)
            self.progress_at = trio.current_time()
            try:
                await self._send(chunk)
            except GONE:
                st.frames_cut += nf
                self._end("reset", None, "client went away")
                return
            except trio.Cancelled:
                st.frames_cut += nf  # the connection ended mid-send (see ConnStats.frames_cut)
                raise
            finally:
                self.inflight = 0
            wire, chunk = len(chunk), b""
            st.frames += nf
            st.payload_bytes += npl
            st.wire_bytes += wire
            fbs = st.frames_by_stream
            for k, v in pend.items():
                fbs[k] += v
            if not self.out:
                self.drained.set()

    async def _reader(self) -> None:
        ws = self.ws
        text_parts: list[str] = []
        size = 0
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except GONE:
                self._end("reset", None, "connection reset by client")
                return
            if self.stalled_until:
                await trio.sleep_until(self.stalled_until)
            if not data:
                self._end("eof", None, "client closed TCP without a close frame")
                return
            try:
                ws.receive_data(data)
                events = list(ws.events())
            except wsproto.utilities.RemoteProtocolError as exc:
                self._end("protocol_error", 1002, str(exc)[:120])
                return
            for ev in events:
                if self.closing and not isinstance(ev, we.CloseConnection):
                    continue  # closing: only the client's close reply matters now
                if isinstance(ev, we.Message):
                    if isinstance(ev, we.TextMessage):
                        text_parts.append(ev.data)
                    size += len(ev.data)
                    if size > self.cfg.max_message:
                        self.begin_close("too_big", 1009, "Message too big")
                        continue
                    if not ev.message_finished:
                        continue
                    text = "".join(text_parts) if text_parts else None
                    text_parts, size = [], 0
                    if self._count_control():
                        for reply in self.server.on_message(self, text):
                            self.push_message("!reply", reply)
                elif isinstance(ev, we.Ping):
                    if not self._count_control():
                        continue
                    self.push_control(ws.send(ev.response()))
                    self.stats.pongs_sent += 1
                elif isinstance(ev, we.Pong):
                    self.stats.pongs_received += 1
                    self.ping_outstanding = None
                    self._count_control()
                elif isinstance(ev, we.CloseConnection):
                    await self._answer_close(ev)
                    return

    async def _answer_close(self, ev: we.CloseConnection) -> None:
        """The client closed: reply (dropping what is queued), drain, end."""
        if self.stats.close_kind is None:
            self.stats.close_kind = "client_close"
            self.stats.close_code, self.stats.close_reason = ev.code, ev.reason
        if not self.closing:
            self.closing = True
            self._discard_unsent()
            try:
                self.push_control(self.ws.send(ev.response()))
            except wsproto.utilities.LocalProtocolError:
                pass
            await self._drain()
        self._cancel()

    def _count_control(self) -> bool:
        """The limit on client messages; False if this one broke it (connection closing)."""
        now = trio.current_time()
        self.stats.control_received += 1
        q = self.ctl_times
        q.append(now)
        while q and q[0] <= now - self.cfg.control_window:
            q.popleft()
        if len(q) > self.cfg.control_limit:
            self.begin_close("rate_limit", 1008, "Too many requests")
            return False
        return True

    async def _pinger(self) -> None:
        cfg = self.cfg
        next_ping = trio.current_time() + cfg.ping_interval
        while True:
            deadline = next_ping
            if self.ping_outstanding is not None:
                deadline = min(deadline, self.ping_outstanding + cfg.pong_timeout)
            await trio.sleep_until(deadline)
            if self.stalled_until:
                await trio.sleep_until(self.stalled_until)
                self.ping_outstanding = None
                next_ping = trio.current_time() + cfg.ping_interval
                continue
            now = trio.current_time()
            if (
                self.ping_outstanding is not None
                and now >= self.ping_outstanding + cfg.pong_timeout
            ):
                self.begin_close("pong_timeout", 1008, "Pong timeout")
                return
            if now >= next_ping and not self.closing:
                self.push_control(self.ws.send(we.Ping(self.server.ping_payload())))
                self.stats.pings_sent += 1
                if self.ping_outstanding is None:
                    self.ping_outstanding = now
                next_ping = now + cfg.ping_interval

    async def _lifetime(self) -> None:
        await trio.sleep(self.cfg.lifetime)
        self.begin_close("lifetime", 1001, "Connection lifetime exceeded")

    # ---------------------------------------------------------------- endings

    def _cancel(self) -> None:
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    def _end(self, kind: str, code: int | None, reason: str | None) -> None:
        st = self.stats
        if st.close_kind is None:
            st.close_kind, st.close_code, st.close_reason = kind, code, reason
        self.closing = True
        self._cancel()

    def abort(self, kind: str, code: int | None, reason: str | None) -> None:
        """End now without a close frame; unsent frames are discarded (and were never counted)."""
        self._discard_unsent()
        self._end(kind, code, reason)

    def begin_close(self, kind: str, code: int, reason: str) -> None:
        """Orderly close: flush what is queued, send a close frame, wait for the reply."""
        if self.closing or self.ended:
            return
        self.closing = True
        st = self.stats
        if st.close_kind is None:
            st.close_kind, st.close_code, st.close_reason = kind, code, reason
        if self.nursery is not None:
            self.nursery.start_soon(self._close_sequence, code, reason)

    async def _close_sequence(self, code: int, reason: str) -> None:
        try:
            self.push_control(self.ws.send(we.CloseConnection(code=code, reason=reason)))
        except wsproto.utilities.LocalProtocolError:
            self._cancel()
            return
        if await self._drain():
            # the reader cancels everything when the client's close reply arrives
            await trio.sleep(self.cfg.close_timeout)
        self._cancel()  # (a client that did not take the close frame will not answer it)

    async def _drain(self) -> bool:
        """Wait (up to ``close_timeout``) until everything queued is sent; False if it was not."""
        with trio.move_on_after(self.cfg.close_timeout):
            while self.out or self.inflight:
                self.drained = trio.Event()
                self.wake.set()
                await self.drained.wait()
        return not (self.out or self.inflight)
