"""The reducer protocol: pure, deterministic folds over the event log.

A reducer is an immutable *configuration* object with four methods::

    state0           = reducer.initial()
    state1, outputs  = reducer.step(state0, event)
    data             = reducer.snapshot(state1)      # plain dict/list/int/str (cattrs)
    state1_again     = reducer.restore(data)

Rules every reducer keeps (replay depends on them):

* no clock, no I/O, no randomness, no globals: time comes from the event
  (``event.recv_ns`` / exchange times);
* ``step`` may update the state it owns in place for speed and return it,
  but ``restore(snapshot(s))`` must continue exactly like ``s``;
* ``outputs`` is a sequence of typed output objects (frozen attrs); return
  the shared empty tuple ``()`` when there are none (the common case);
* ``step`` must never raise on any event the codecs can produce, including
  ``DecodeError`` and connection events: ignore what does not concern you.

Outputs that ask the live runtime to *do* something (fetch a snapshot,
reconnect) are ordinary outputs (see :mod:`engine.outputs`); what the runtime
does in answer comes back as journaled frames, so replay sees it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ["Reducer", "NO_OUTPUTS"]

S = TypeVar("S")

#: The empty output sequence; return it instead of allocating a new list.
NO_OUTPUTS: tuple[()] = ()


@runtime_checkable
class Reducer(Protocol[S]):
    """Structural type for reducers (see the module docstring for the rules)."""

    #: Short unique name, used as the key in checkpoints and output streams.
    name: str

    def initial(self) -> S: ...

    def step(self, state: S, event: Any) -> tuple[S, Sequence[Any]]: ...

    def snapshot(self, state: S) -> Any: ...

    def restore(self, data: Any) -> S: ...
