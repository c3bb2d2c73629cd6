"""Full tickers from a venue's ticker deltas: the one merge of partial :class:`Ticker24h` events.

Bybit v5 linear/inverse ``tickers`` send one full ``snapshot`` per
subscription and then ``delta`` messages carrying only the fields that
changed; their codec decodes a delta to a Ticker24h with ``partial=True``
whose None fields mean "unchanged".  Knowing the unchanged values needs the
symbol's last full ticker, memory across frames that a codec must not keep (a
replay may start at any checkpoint, and codecs are stateless), so it lives
here, in a pure reducer whose state checkpoints with the others.

:class:`TickerMerge` keeps per symbol the last full ticker: a full ticker
(``partial`` False) replaces it and yields nothing (it is an event already);
a delta is laid over it (every field the delta holds wins, ``seq``/``recv_ns``
are the delta's, ``exch_ms`` too when it has one) and the merged, full ticker
(``partial`` False) is the output — what ``engine export``'s ``ticker`` table
and any consumer of full tickers read.  A delta with no full ticker before it
(a journal or a slice that starts mid-stream) cannot be completed: it is
counted (``unmerged``), not guessed.  ``engine replay --json`` shows both
counts and the last full ticker per symbol (``symbols.S.tickers``).  The pipeline has this reducer only for
codecs whose ``ticker_deltas`` is true (:mod:`engine.assembly`).

Must not: read a clock, do I/O, invent a field, or raise on any event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from engine import serde
from engine.events import Ticker24h
from engine.reducer import NO_OUTPUTS

__all__ = ["TickerMerge", "TickerMergeState", "MERGED_FIELDS"]

#: the fields a delta may change (all but the frame's own seq, recv_ns, symbol, partial)
MERGED_FIELDS = tuple(
    a.name for a in attrs.fields(Ticker24h) if a.name not in ("seq", "recv_ns", "symbol", "partial")
)


@attrs.define(slots=True, eq=True)
class TickerMergeState:
    """Per symbol the last full ticker; how many deltas were merged and how many could not be."""

    last: dict[str, Ticker24h] = attrs.Factory(dict)
    merged: dict[str, int] = attrs.Factory(dict)
    unmerged: dict[str, int] = attrs.Factory(dict)


def merge(base: Ticker24h, delta: Ticker24h) -> Ticker24h:
    """``delta`` laid over ``base``: a full ticker (the module docstring's rule)."""
    changed = {f: v for f in MERGED_FIELDS if (v := getattr(delta, f)) is not None}
    return attrs.evolve(base, seq=delta.seq, recv_ns=delta.recv_ns, partial=False, **changed)


@attrs.frozen
class TickerMerge:
    """Reducer: partial tickers (deltas) → full tickers (module docstring)."""

    name: str = "tickers"

    def initial(self) -> TickerMergeState:
        return TickerMergeState()

    def step(self, state: TickerMergeState, ev: Any) -> tuple[TickerMergeState, Sequence[Any]]:
        if type(ev) is not Ticker24h:
            return state, NO_OUTPUTS
        if not ev.partial:
            state.last[ev.symbol] = ev
            return state, NO_OUTPUTS
        sym = ev.symbol
        base = state.last.get(sym)
        if base is None:
            state.unmerged[sym] = state.unmerged.get(sym, 0) + 1
            return state, NO_OUTPUTS
        full = state.last[sym] = merge(base, ev)
        state.merged[sym] = state.merged.get(sym, 0) + 1
        return state, (full,)

    def symbol_summary(self, state: TickerMergeState, symbol: str) -> dict[str, Any] | None:
        """Deltas merged / not mergeable and the last full ticker's time (replay summaries)."""
        last = state.last.get(symbol)
        if last is None and symbol not in state.unmerged:
            return None
        return {
            "deltas_merged": state.merged.get(symbol, 0),
            "deltas_unmerged": state.unmerged.get(symbol, 0),
            "last_exch_ms": None if last is None else last.exch_ms,
        }

    def snapshot(self, state: TickerMergeState) -> Any:
        return {
            "last": [serde.dump(t) for t in state.last.values()],
            "merged": dict(state.merged),
            "unmerged": dict(state.unmerged),
        }

    def restore(self, data: Any) -> TickerMergeState:
        last = [serde.load(d) for d in data["last"]]
        if not all(type(t) is Ticker24h for t in last):
            raise ValueError("not a TickerMerge checkpoint: 'last' must hold Ticker24h")
        counts = [{str(k): int(v) for k, v in data[n].items()} for n in ("merged", "unmerged")]
        return TickerMergeState({t.symbol: t for t in last}, *counts)
