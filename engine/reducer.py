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
    :mod:`engine.trades` (aggregator, tape, candles, anomaly detector) do not
    apply the rule themselves and keep none of its memory: the pipeline's
    selection stage applies it once per trade and ``source`` and hands them
    each trade with its selected time through ``on_trade`` (their handler for
    trades; ``step`` handles every other event and ignores trades).  Both are
    pure folds of the same shape.

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
    """A reducer that folds trades as the selection rule of :mod:`engine.trades` hands them over.

    ``on_trade(state, trade, t)`` is its handler for a trade: ``t`` is the
    exchange time :class:`~engine.trades.TradeSelector` (for this consumer's
    ``source``) placed it at, or None when the rule set it aside (other kind,
    duplicate id, no time); a consumer may still look at a set-aside trade (the
    anomaly detector counts it as stream activity).  ``step`` ignores trades.
    """

    #: which trades count: "auto" | "trade" | "aggTrade" (engine.trades)
    source: str

    def on_trade(self, state: S, event: Any, t: int | None) -> tuple[S, Sequence[Any]]:
        """Fold one trade placed at selected time ``t`` (None: set aside)."""
        ...
