"""Outbound rate limiting: a pure scheduler for control messages, and an audit of journaled sends.

Owns: :class:`RateLimiter` (the live runtime asks it *when* it may send),
:class:`SendAudit` (replay checks that what *was* sent kept the limit), their
inputs (:class:`Request`, :class:`Tick`), outputs (:class:`NextRelease`,
:class:`RequestRejected`, :class:`RateViolation`; releases are
:class:`engine.outputs.SendRequest`) and the published limits.  Must not: read
the clock, sleep, send, or raise on any event — time is the ``t_ns`` the caller
passes, and the caller does the sending and the sleeping.

Why a sliding-window log and not a token bucket
    Exchanges state their limit as "at most N messages per window" (Binance
    spot: 5 per second per connection, pings and pongs included; exceeding it
    disconnects, repeat offenders are banned).  A token bucket of capacity N
    can release N at once and then refill one every W/N, which puts up to
    2N-1 messages into some window of length W — a violation.  The log keeps the
    times of the last N releases per connection: a message may go at ``t`` only
    if fewer than N releases lie in ``(t - W, t]``.  That is exactly the
    guarantee wanted — *in any window of length W, at most N releases* — for
    O(N) memory per connection and O(1) work per message.

Weighted requests: ``Request.weight`` lets one reducer keep a weight budget
too (Binance REST: request weight per minute); the live runtime's REST
snapshots go through it the same way as its control messages.

Live use (one code path with tests)::

    state, outs = limiter.step(state, Request(now_ns, conn, payload))
    # outs: SendRequest (send now), NextRelease(conn, at_ns) (sleep until then,
    # then step a Tick(at_ns)), RequestRejected (queue full / connection gone)

    Requests that cannot go now wait in a FIFO queue per connection, at most
    ``max_queue``; when it is full the **newest** request is rejected
    (:class:`RequestRejected`, ``reason="queue full"``) — older requests (the
    subscribe that came first) keep their place.  A ``ConnectionClosed`` for the
    connection drops its queue the same way (``reason="connection closed"``).
    Time never runs backwards: ``t_ns`` earlier than one already seen counts
    as the latest time seen, so a stepped-back wall clock cannot break the limit.

Audit use (replay)
    :class:`SendAudit` is fed the journal's outbound frames (``dir == "out"``,
    as :class:`engine.journal.schema.Frame`; :func:`audit_frames` runs it over an
    iterable) and reports every send that made some window hold more than N
    sends (:class:`RateViolation`).

Pongs: the WebSocket library answers server pings itself, outside this
limiter; Binance spot pings every 20 s, so one pong in 20 s shares the budget.
``CONTROL_LIMITS`` keeps the published numbers; the live runtime uses one less (room for the pong).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
from attrs import frozen

from engine import serde
from engine.events import ConnectionClosed, ControlSent
from engine.journal.schema import Dir, Frame, Kind
from engine.outputs import SendRequest
from engine.reducer import NO_OUTPUTS

__all__ = [
    "Request",
    "Tick",
    "NextRelease",
    "RequestRejected",
    "RateViolation",
    "RateLimiter",
    "LimiterState",
    "ConnLimit",
    "SendAudit",
    "AuditState",
    "audit_frames",
    "SECOND_NS",
    "CONTROL_LIMITS",
    "control_limit",
]

SECOND_NS = 1_000_000_000

#: Published control messages per second per connection (pings and pongs count), by exchange.
CONTROL_LIMITS = {"binance": 5, "sim": 5, "binance-futures": 10}


def control_limit(exchange: str) -> int:
    """The exchange's published control messages per second per connection (5 if unknown)."""
    return CONTROL_LIMITS.get(exchange, 5)


# --------------------------------------------------------------------------- inputs / outputs


@serde.register
@frozen
class Request:
    """The runtime wants to send ``payload`` on connection ``conn``; ``t_ns`` is now.

    ``seq`` is carried to the :class:`SendRequest` (-1 if the request has none).
    """

    t_ns: int
    conn: int
    payload: bytes
    seq: int = -1
    #: what the request costs in the window (REST request weight); counted as at most ``limit``
    weight: int = 1


@serde.register
@frozen
class Tick:
    """Time has reached ``t_ns`` (the runtime woke up at a :class:`NextRelease`)."""

    t_ns: int


@serde.register
@frozen
class NextRelease:
    """Connection ``conn`` has queued requests; the next may go at ``at_ns``: step a Tick then."""

    conn: int
    at_ns: int
    queued: int


@serde.register
@frozen
class RequestRejected:
    """A request that will never be sent: ``reason`` is "queue full" or "connection closed"."""

    seq: int
    t_ns: int
    conn: int
    payload: bytes
    reason: str


@serde.register
@frozen
class RateViolation:
    """A journaled send (``seq``) made ``count`` sends within ``window_ns`` on ``conn`` (> limit).

    ``count`` saturates at :data:`AUDIT_CAP`.
    """

    seq: int
    recv_ns: int
    conn: int
    count: int
    limit: int
    window_ns: int


# --------------------------------------------------------------------------- the limiter


@serde.register
@attrs.define(slots=True)
class ConnLimit:
    """One connection: its release log (one time per unit of weight, the last ``limit``) and its queue."""

    sent: deque[int] = attrs.Factory(deque)
    queue: deque[Request] = attrs.Factory(deque)


@serde.register
@attrs.define(slots=True)
class LimiterState:
    now: int = 0
    conns: dict[int, ConnLimit] = attrs.Factory(dict)
    released: int = 0
    rejected: int = 0


@attrs.frozen
class RateLimiter:
    """Reducer: at most ``limit`` weight released per ``window_ns`` per connection (sliding-window log).

    Each request weighs ``Request.weight`` (1 for a control message; a REST
    request's published weight), counted as at most ``limit`` so that a request
    heavier than the whole budget still goes, alone in its window.  The log
    holds one release time per unit of weight, so weight 1 is the plain
    "at most N messages per window" rule, and the memory stays N per connection.

    Args:
        limit: N, the most weight released in any window.
        window_ns: W, the window length in ns.
        max_queue: waiting requests per connection before the newest is rejected.
    """

    name: str = "ratelimit"
    limit: int = 5
    window_ns: int = SECOND_NS
    max_queue: int = 64

    def __attrs_post_init__(self) -> None:
        if self.limit <= 0 or self.window_ns <= 0 or self.max_queue < 0:
            raise ValueError("limit and window_ns must be > 0 and max_queue >= 0")

    def initial(self) -> LimiterState:
        return LimiterState()

    def next_release_ns(self, state: LimiterState, conn: int) -> int | None:
        """When connection ``conn``'s next queued request may go (None: nothing queued)."""
        c = state.conns.get(conn)
        if c is None or not c.queue:
            return None
        return self._free_at(c, state.now, c.queue[0].weight)

    def _free_at(self, c: ConnLimit, now: int, weight: int) -> int:
        """When a request of ``weight`` fits: once the log's oldest surplus entries left the window.

        ``sent`` holds one time per unit of weight (at most ``limit``, oldest first);
        ``weight`` more fit at ``t`` when all but ``limit - weight`` of them are
        older than ``t - W``, i.e. when the ``k``-th oldest left the window.
        """
        k = len(c.sent) + min(weight, self.limit) - self.limit
        if k <= 0:
            return now
        return max(now, c.sent[k - 1] + self.window_ns)

    def step(self, state: LimiterState, event: Any) -> tuple[LimiterState, Sequence[Any]]:
        tp = type(event)
        if tp is Request:
            return state, self._request(state, event)
        if tp is Tick:
            out: list[Any] = []
            self._advance(state, event.t_ns, out)
            return state, out
        if tp is ConnectionClosed:
            return state, self._closed(state, event)
        return state, NO_OUTPUTS

    def _closed(self, state: LimiterState, event: ConnectionClosed) -> list[Any]:
        """Reject the closed connection's queue; forget connections whose sends left the window.

        The closed connection's send times are kept until they leave the window:
        a request that (wrongly) reuses its id must still respect them.
        """
        now = state.now  # the close's own time is not ours to advance to (queues would stall)
        c = state.conns.get(event.conn)
        out: list[Any] = []
        if c is not None and c.queue:
            state.rejected += len(c.queue)
            out = [
                RequestRejected(r.seq, r.t_ns, r.conn, r.payload, "connection closed")
                for r in c.queue
            ]
            c.queue.clear()
        for k in [k for k, v in state.conns.items() if not v.queue and not v.sent]:
            del state.conns[k]
        for k in [
            k for k, v in state.conns.items() if not v.queue and v.sent[-1] + self.window_ns <= now
        ]:
            del state.conns[k]
        return out

    def _advance(self, state: LimiterState, t_ns: int, out: list[Any]) -> int:
        """Move time to ``t_ns`` (never back) and release whatever the new time allows."""
        if t_ns > state.now:
            state.now = t_ns
            for conn, c in state.conns.items():
                if c.queue:
                    self._drain(state, conn, c, t_ns, out)
        return state.now

    def _request(self, state: LimiterState, r: Request) -> list[Any]:
        out: list[Any] = []
        t = self._advance(state, r.t_ns, out)
        c = state.conns.get(r.conn)
        if c is None:
            c = state.conns[r.conn] = ConnLimit(deque(maxlen=self.limit))
        # a non-empty queue (after the advance) means its head cannot go yet: nor can r (FIFO)
        if len(c.queue) >= self.max_queue and (c.queue or self._free_at(c, t, r.weight) > t):
            state.rejected += 1
            out.append(RequestRejected(r.seq, r.t_ns, r.conn, r.payload, "queue full"))
            head = c.queue[0].weight if c.queue else r.weight
            out.append(NextRelease(r.conn, self._free_at(c, t, head), len(c.queue)))
            return out
        c.queue.append(r)
        self._drain(state, r.conn, c, t, out)
        return out

    def _drain(self, state: LimiterState, conn: int, c: ConnLimit, t: int, out: list) -> None:
        """Release queued requests in FIFO order while the window allows; say when to retry."""
        q, sent, free_at = c.queue, c.sent, self._free_at
        while q and free_at(c, t, q[0].weight) <= t:
            r = q.popleft()
            if r.weight == 1:
                sent.append(t)  # the log's maxlen drops the oldest entry
            else:
                sent.extend([t] * min(r.weight, self.limit))
            state.released += 1
            out.append(SendRequest(r.seq, t, r.conn, r.payload))
        if q:
            out.append(NextRelease(conn, free_at(c, t, q[0].weight), len(q)))

    def snapshot(self, state: LimiterState) -> Any:
        return serde.converter.unstructure(state)

    def restore(self, data: Any) -> LimiterState:
        state = serde.converter.structure(data, LimiterState)
        for c in state.conns.values():
            c.sent = deque(c.sent, maxlen=self.limit)
        return state


# --------------------------------------------------------------------------- the audit

#: The most send times an audit keeps per connection (a flood cannot grow memory).
AUDIT_CAP = 1024


@serde.register
@attrs.define(slots=True)
class AuditState:
    #: conn → times of its sends still inside the window
    conns: dict[int, deque[int]] = attrs.Factory(dict)
    sends: int = 0
    violations: int = 0


@attrs.frozen
class SendAudit:
    """Reducer over journaled outbound frames: reports sends that broke ``limit`` per ``window_ns``."""

    name: str = "send_audit"
    limit: int = 5
    window_ns: int = SECOND_NS

    def initial(self) -> AuditState:
        return AuditState()

    def step(self, state: AuditState, event: Any) -> tuple[AuditState, Sequence[Any]]:
        tp = type(event)
        if tp is ControlSent:  # the pipeline's form of a journaled outbound frame
            t, conn, seq = event.recv_ns, event.conn, event.seq
        elif tp is Frame:
            if event.dir != Dir.OUT or event.kind not in (Kind.TEXT, Kind.BINARY):
                return state, NO_OUTPUTS
            t, conn, seq = event.recv_ns, event.conn, event.seq
        else:
            if tp is ConnectionClosed:
                state.conns.pop(event.conn, None)
            return state, NO_OUTPUTS
        d = state.conns.get(conn)
        if d is None:
            d = state.conns[conn] = deque(maxlen=AUDIT_CAP)
        edge = t - self.window_ns
        while d and d[0] <= edge:
            d.popleft()
        d.append(t)
        state.sends += 1
        if len(d) > self.limit:
            state.violations += 1
            return state, (RateViolation(seq, t, conn, len(d), self.limit, self.window_ns),)
        return state, NO_OUTPUTS

    def snapshot(self, state: AuditState) -> Any:
        return serde.converter.unstructure(state)

    def restore(self, data: Any) -> AuditState:
        state = serde.converter.structure(data, AuditState)
        state.conns = {k: deque(v, maxlen=AUDIT_CAP) for k, v in state.conns.items()}
        return state


def audit_frames(frames: Iterable[Frame], audit: SendAudit = SendAudit()) -> list[RateViolation]:
    """Every violation in a journal's frames (e.g. ``JournalReader(path).frames()``)."""
    state = audit.initial()
    out: list[RateViolation] = []
    for f in frames:
        state, o = audit.step(state, f)
        out.extend(o)
    return out
