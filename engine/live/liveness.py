"""Deciding that a connection is dead, and when to try again: pings, the stale watchdog, backoff.

Owns the liveness rules of one connection (:class:`engine.live.conn.Conn`):
:func:`pinger` sends our own pings and :func:`await_pong` decides that the
connection has stalled (neither the pong nor any frame for the ping timeout:
a connection still delivering frames while its pong waits behind them is
alive); :func:`watchdog` decides that it is stale (no data frame for
``stale_after_s``); :class:`Backoff` spaces reconnects (exponential, full
jitter, capped).  Each rule ends a connection by raising its
:class:`~engine.live.errors.CaptureError`.

Must not: journal, close or reconnect anything (:mod:`engine.live.connection`
does, on the error raised here), send anything but pings, or read the
connection's frames (it only looks at ``Conn.frames``, the reader's count).
"""

from __future__ import annotations

import random
import struct
from typing import Any

import trio
from trio_websocket import ConnectionClosed as WsClosed

from engine.live.config import LiveConfig
from engine.live.conn import Conn
from engine.live.errors import StaleConnection, StalledConnection, closed_error
from engine.live.throttle import ControlLimiter

__all__ = ["Backoff", "pinger", "await_pong", "watchdog"]


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base·2^attempt))``.

    Randomness is fine here (the I/O shell, not a reducer); the generator is
    injected so tests can pin it.
    """

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self.base, self.cap, self.rng = base, cap, rng
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self.rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


async def pinger(c: Conn, ws: Any, cfg: LiveConfig, limiter: ControlLimiter) -> None:
    """Own pings every ``cfg.ping_interval_s`` (through the connection's control ``limiter``:
    pings count), each awaited by :func:`await_pong`; raises StalledConnection."""
    n = 0
    while True:
        await trio.sleep(cfg.ping_interval_s)
        await limiter.acquire()
        n += 1
        await await_pong(c, ws, struct.pack("!Q", n), cfg.ping_timeout_s)


async def await_pong(c: Conn, ws: Any, payload: bytes, timeout_s: float) -> None:
    """Wait for the pong of ``payload``; the connection has stalled only when neither the
    pong nor any frame arrived for ``timeout_s``.

    A pong is read in order behind the frames sent before it.  When we read slower
    than the venue sends (a loaded machine, a burst), frames keep arriving while the
    pong waits behind them: that connection is alive, and closing it would discard
    every frame the kernel still holds for it.  A dead peer or path sends nothing.
    """
    answered = trio.Event()
    closed: list[WsClosed] = []

    async def ping() -> None:
        if c.closing is not None:
            # A clean close began after this ping was due (acquire need not yield, and a
            # new task runs up to its first checkpoint: the helpers' cancellation has not
            # reached it): our close frame is out, and wsproto refuses a ping after it, a
            # protocol error that aborted the connection and lost the frames still coming
            # before the peer's close.
            answered.set()
            return
        try:
            await ws.ping(payload)
        except WsClosed as exc:
            closed.append(exc)
        answered.set()

    stalled = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ping)
        seen = c.frames
        while not answered.is_set():
            with trio.move_on_after(timeout_s):
                await answered.wait()
            if not answered.is_set() and c.frames == seen:
                stalled = True
                nursery.cancel_scope.cancel()
                break
            seen = c.frames
    if stalled:
        raise StalledConnection(f"ping unanswered for {timeout_s} s")
    if closed:
        raise closed_error(closed[0]) from None


async def watchdog(c: Conn, limit: float) -> None:
    """No data frame for ``limit`` s ⇒ StaleConnection (server pings do not reach get_message).

    Judged only at a wake-up that came on time: after one that came late (the whole process
    did not run for a while, a loaded machine), frames may be waiting unread in the socket,
    and closing now would discard them; the reader gets one more step to take them first.
    """
    step = min(1.0, limit / 4)
    seen, since = c.frames, trio.current_time()
    woke = since
    while True:
        await trio.sleep(step)
        now = trio.current_time()
        late, woke = now - woke > 2 * step, now
        if c.frames != seen:
            seen, since = c.frames, now
        elif now - since >= limit and not late:
            raise StaleConnection(f"no data for {now - since:.1f} s")
