"""Outputs the live runtime acts on: the contract between the fold and the I/O shell.

Reducers keep their own output classes beside them (book outputs in the book
module, alerts in the anomaly module ...).  The few outputs here are *actions*:
the live runtime (``engine run``) watches for them and answers with I/O whose
results are journaled as frames, so a replay sees exactly what live saw.
Replay ignores them (it already has the answers in the journal).
"""

from __future__ import annotations

from attrs import frozen

from engine import serde

__all__ = ["SnapshotRequest", "SendRequest", "RotateRequest"]


@serde.register
@frozen
class SnapshotRequest:
    """Fetch a REST depth snapshot for ``symbol`` (after a gap, at start-up, or to verify).

    ``purpose`` is ``"sync"`` (the book has no valid state) or ``"verify"``
    (periodic drift check against a synced book).
    """

    seq: int
    recv_ns: int
    symbol: str
    purpose: str
    reason: str


@serde.register
@frozen
class SendRequest:
    """A control message the rate limiter released: the runtime sends ``payload`` on ``conn``."""

    seq: int
    recv_ns: int
    conn: int
    payload: bytes


@serde.register
@frozen
class RotateRequest:
    """Replace the connection that delivered frame ``seq``: open a successor, then close it.

    From :class:`engine.connection_actions.ConnectionActions` (``reason`` =
    ``"serverShutdown"``: the server announced it will close the connection).
    The runtime rotates without a gap; the rotation is journaled as frames.
    """

    seq: int
    recv_ns: int
    reason: str
