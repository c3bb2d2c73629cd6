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

Trade consumers (:class:`TradeConsumer`)
    Reducers that fold trades under the shared selection rule of
    :mod:`engine.trades` (aggregator, tape, candles, anomaly detector) also
    expose their per-trade update as ``on_trade``; the pipeline then folds a
    run of them with one symbol lookup and one selection per trade instead of
    one each (see :mod:`engine.tradefan`).  ``step`` stays the definition:
    it is the lookup, the selection and ``on_trade``, nothing else.

Outputs that ask the live runtime to *do* something (fetch a snapshot,
reconnect) are ordinary outputs (see :mod:`engine.outputs`); what the runtime
does in answer comes back as journaled frames, so replay sees it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ["Reducer", "TradeConsumer", "NO_OUTPUTS"]

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


@runtime_checkable
class TradeConsumer(Reducer[S], Protocol[S]):
    """A reducer whose trade handling is: symbol record → :func:`~engine.trades.select_trade` → update.

    Conventions the pipeline's fused fold relies on: ``state.counts`` is the
    state's :class:`~engine.trades.SelectCounts`, each symbol record has a
    ``sel`` (:class:`~engine.trades.TradeSelect`), ``step`` returns the state
    object it was given for every event (updates are in place), and
    ``step(state, trade)`` is exactly ``state, engine.trades.fold_trade(self, state, trade)``
    (record, selection rule, ``on_trade``).
    """

    #: which trades count: "auto" | "trade" | "aggTrade" (engine.trades)
    source: str

    def trade_record(self, state: S, symbol: str) -> Any:
        """The symbol's record in ``state``, created if new."""
        ...

    def on_trade(self, state: S, rec: Any, event: Any, t: int | None) -> Sequence[Any]:
        """Fold one trade; ``t`` is its selected exchange time, None if the rule set it aside."""
        ...
