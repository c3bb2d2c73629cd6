"""Connection actions: events the live runtime must answer on a connection, turned into outputs.

Owns :class:`ConnectionActions`, a small pure reducer: a ``ServerShutdown``
event (Binance's ``serverShutdown`` notice: this connection will be closed
for maintenance) becomes a :class:`engine.outputs.RotateRequest`, which the
runtime answers by rotating — without a gap — the connection that delivered
that frame.  Like ``SnapshotRequest``, the action is an output of the fold:
live and replay produce it alike (``engine replay --check`` compares it), and
what the runtime does in answer comes back as journaled frames.

Must not: read a clock, do I/O, or know about connections beyond the frame
that carried the event (the runtime knows which connection delivered a seq).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from engine import serde
from engine.events import ServerShutdown
from engine.outputs import RotateRequest
from engine.reducer import NO_OUTPUTS

__all__ = ["ConnectionActions", "ActionsState"]


@serde.register
@attrs.define(slots=True)
class ActionsState:
    #: RotateRequests produced (one per serverShutdown notice)
    rotate_requests: int = 0


@attrs.frozen
class ConnectionActions:
    """Reducer: ``ServerShutdown`` → ``RotateRequest(seq, recv_ns, "serverShutdown")``; nothing else."""

    name: str = "conn_actions"

    def initial(self) -> ActionsState:
        return ActionsState()

    def step(self, state: ActionsState, event: Any) -> tuple[ActionsState, Sequence[Any]]:
        if type(event) is ServerShutdown:
            state.rotate_requests += 1
            return state, (RotateRequest(event.seq, event.recv_ns, "serverShutdown"),)
        return state, NO_OUTPUTS

    def snapshot(self, state: ActionsState) -> Any:
        return serde.converter.unstructure(state)

    def restore(self, data: Any) -> ActionsState:
        return serde.converter.structure(data, ActionsState)
