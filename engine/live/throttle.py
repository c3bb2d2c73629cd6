"""Waiting for the rate limiter: the I/O shell around the pure sliding-window reducer.

Owns :class:`Throttle` (supplies the time, sleeps until the reducer releases)
and its two uses: :class:`ControlLimiter` (control messages per second on one
connection) and :class:`WeightBudget` (REST request weight per minute).  The
rule itself — at most N (weight) in any sliding window, FIFO — lives once, in
:class:`engine.ratelimit.RateLimiter`.  Must not: count or decide anything
itself, or be used inside the fold (it reads the trio clock).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import trio

from engine.outputs import SendRequest
from engine.ratelimit import NextRelease, RateLimiter, Request, Tick

__all__ = ["Throttle", "ControlLimiter", "WeightBudget"]


class Throttle:
    """At most ``limit`` weight in any sliding ``window`` (seconds); :meth:`acquire` waits when full.

    Concurrent callers are served FIFO.  ``clock`` defaults to trio's clock
    (so a ``MockClock`` drives it in tests).
    """

    def __init__(self, limit: int, window: float, clock: Callable[[], float] | None = None) -> None:
        self._reducer = RateLimiter(limit=limit, window_ns=int(window * 1e9), max_queue=1 << 30)
        self._state = self._reducer.initial()
        self._clock = clock or trio.current_time
        self._next_id = 0
        self._released: set[int] = set()
        self._wake_at: float | None = None

    @property
    def limit(self) -> int:
        return self._reducer.limit

    def _now_ns(self) -> int:
        return int(self._clock() * 1e9)

    def _apply(self, outs: Sequence[Any]) -> None:
        self._wake_at = None
        for o in outs:
            if o.__class__ is SendRequest:
                self._released.add(o.seq)
            elif o.__class__ is NextRelease:
                self._wake_at = o.at_ns / 1e9

    async def acquire(self, weight: int = 1) -> None:
        """Return when this caller may go now (its ``weight`` is counted as of now)."""
        my = self._next_id
        self._next_id += 1
        self._state, outs = self._reducer.step(
            self._state, Request(self._now_ns(), 0, b"", my, weight)
        )
        self._apply(outs)
        while my not in self._released:
            await trio.sleep_until(self._wake_at if self._wake_at is not None else self._clock())
            self._state, outs = self._reducer.step(self._state, Tick(self._now_ns()))
            self._apply(outs)
        self._released.discard(my)


class ControlLimiter(Throttle):
    """At most ``rate`` control messages in any sliding ``window`` on one connection.

    The window is widened by ``margin`` because the server counts on arrival,
    by its own clock: whatever delays one message and not the next (a TCP
    retransmit, ~200 ms; a server, or our own sender, starved of CPU for a
    moment) squeezes sends that left a window apart into one.  0.05 s was
    not enough: on a loaded machine the simulator, counting as Binance does,
    saw 6 of our messages within a second and closed with 1008.  A quarter
    second costs a resubscription wave of 10 messages half a second.
    """

    def __init__(
        self,
        rate: int,
        window: float = 1.0,
        clock: Callable[[], float] | None = None,
        margin: float = 0.25,
    ) -> None:
        super().__init__(rate, window + margin, clock)


class WeightBudget(Throttle):
    """REST request weight per sliding minute (Binance bans IPs that ignore its limits).

    A request heavier than the whole budget still goes, alone in its minute.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] | None = None) -> None:
        super().__init__(per_minute, 60.0, clock)
