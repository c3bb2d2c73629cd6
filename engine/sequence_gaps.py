"""Id continuity the exchange promises: trade ids per symbol, message numbers per connection.

Owns :class:`SequenceGaps`, a pure reducer that judges the numbers codecs only
decode (a codec is stateless: continuity needs memory, so it is a fold):

* **trade ids** (``trade_ids=True``; Coinbase Exchange ``matches``): a
  product's ``trade_id`` rises by exactly 1 per trade, so a step > 1 is a lost
  trade (:class:`TradeIdGap`, the missing ids ``expected..got-1``).  A
  trade at or below the last id seen is a repeat (``last_match`` after a
  resubscribe, an overlapping connection): counted, not a gap.  Coinbase's
  ``sequence`` field is *not* judged: it counts the product's whole full
  channel, so its steps exceed 1 by design.
* **connection message numbers** (:class:`~engine.events.StreamSequence`;
  Coinbase Advanced Trade ``sequence_num``): per connection, numbers rise by
  exactly 1 across every channel and product.  Any other step is a
  :class:`SequenceGap`: some message was lost, possibly a book update, so every
  book that came over that connection gets a ``SnapshotRequest(purpose="sync")``
  (the runtime answers it by resubscribing: a fresh in-stream snapshot resets
  the book).  A connection is known by its URL (``source``): a
  ``ConnectionOpened``/``ConnectionClosed`` for it starts its numbering afresh
  (each connection counts from its own start); two connections open at once
  to the same URL would look like gaps (the runtime does not do that for a
  venue with connection-wide numbers).  The books of a connection are the
  symbols of the DepthDiff/BookSnapshot events decoded from the same frame as
  one of its StreamSequence events (the codec emits that first).

Must not: read a clock, do I/O, or decide anything about book levels (that is
:mod:`engine.book_reducer`); never raises on any event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from engine import serde
from engine.events import (
    BookSnapshot,
    ConnectionClosed,
    ConnectionOpened,
    DepthDiff,
    StreamSequence,
    Trade,
)
from engine.outputs import SnapshotRequest
from engine.reducer import NO_OUTPUTS

__all__ = ["SequenceGaps", "GapsState", "SymbolIds", "TradeIdGap", "SequenceGap"]


# =============================================================== outputs


@serde.register
@attrs.frozen
class TradeIdGap:
    """Trades ``expected``..``got - 1`` of ``symbol`` never arrived (trade ids rise by 1)."""

    seq: int
    recv_ns: int
    symbol: str
    expected: int
    got: int


@serde.register
@attrs.frozen
class SequenceGap:
    """Messages ``expected``..``got - 1`` of the connection at ``source`` never arrived.

    ``got < expected`` is a step back (a restarted count without a new
    connection): as bad, since numbering can no longer be trusted.
    ``symbols`` are the books that came over the connection: each is resynced.
    """

    seq: int
    recv_ns: int
    source: str
    expected: int
    got: int
    symbols: list[str]


# =============================================================== state


@serde.register
@attrs.define(slots=True, eq=True)
class SymbolIds:
    """Trade-id continuity of one symbol."""

    last_trade_id: int = -1
    trades_checked: int = 0
    trade_id_gaps: int = 0
    trades_missing: int = 0
    trades_repeated: int = 0


@serde.register
@attrs.define(slots=True, eq=True)
class StreamIds:
    """Message-number continuity of one connection (by URL)."""

    last: int = -1
    #: the books (symbols) that came over this connection, in first-seen order
    symbols: list[str] = attrs.Factory(list)


@serde.register
@attrs.define(slots=True, eq=True)
class GapsState:
    symbols: dict[str, SymbolIds] = attrs.Factory(dict)
    streams: dict[str, StreamIds] = attrs.Factory(dict)
    #: (journal seq, source) of the last StreamSequence: ties a frame's book events to it
    last_frame: tuple[int, str] | None = None
    sequence_checked: int = 0
    sequence_gaps: int = 0


# =============================================================== the reducer


@attrs.frozen
class SequenceGaps:
    """Reducer: trade-id and connection message-number continuity (module docstring).

    Args:
        trade_ids: judge trade-id continuity per symbol (venues whose public
            trade ids are consecutive per product).
    """

    trade_ids: bool = False
    name: str = "sequence_gaps"

    def initial(self) -> GapsState:
        return GapsState()

    def snapshot(self, state: GapsState) -> Any:
        return serde.dump(state)

    def restore(self, data: Any) -> GapsState:
        st = serde.load(data)
        if not isinstance(st, GapsState):
            raise ValueError(f"not a GapsState checkpoint: {type(st).__name__}")
        return st

    def step(self, state: GapsState, event: Any) -> tuple[GapsState, Sequence[Any]]:
        t = type(event)
        if t is Trade:
            return state, self._trade(state, event) if self.trade_ids else NO_OUTPUTS
        if t is StreamSequence:
            return state, self._number(state, event)
        if t is DepthDiff or t is BookSnapshot:
            lf = state.last_frame
            if lf is not None and lf[0] == event.seq:
                syms = state.streams[lf[1]].symbols
                if event.symbol not in syms:
                    syms.append(event.symbol)
            return state, NO_OUTPUTS
        if t is ConnectionOpened or t is ConnectionClosed:
            state.streams.pop(event.source, None)
        return state, NO_OUTPUTS

    # ----------------------------------------------------------- trade ids

    def _trade(self, state: GapsState, ev: Trade) -> Sequence[Any]:
        s = state.symbols.get(ev.symbol)
        if s is None:
            s = state.symbols[ev.symbol] = SymbolIds()
        s.trades_checked += 1
        last = s.last_trade_id
        tid = ev.first_id
        if last >= 0 and tid <= last:
            s.trades_repeated += 1
            return NO_OUTPUTS
        s.last_trade_id = ev.last_id
        if last < 0 or tid == last + 1:
            return NO_OUTPUTS
        s.trade_id_gaps += 1
        s.trades_missing += tid - last - 1
        return (TradeIdGap(ev.seq, ev.recv_ns, ev.symbol, last + 1, tid),)

    # ----------------------------------------------------------- connection numbers

    def _number(self, state: GapsState, ev: StreamSequence) -> Sequence[Any]:
        st = state.streams.get(ev.source)
        if st is None:
            st = state.streams[ev.source] = StreamIds()
        state.last_frame = (ev.seq, ev.source)
        state.sequence_checked += 1
        last, st.last = st.last, ev.number
        if last < 0 or ev.number == last + 1:
            return NO_OUTPUTS
        state.sequence_gaps += 1
        syms = list(st.symbols)
        out: list[Any] = [SequenceGap(ev.seq, ev.recv_ns, ev.source, last + 1, ev.number, syms)]
        reason = f"sequence_num gap on {ev.source}: expected {last + 1}, got {ev.number}"
        out += [SnapshotRequest(ev.seq, ev.recv_ns, s, "sync", reason) for s in syms]
        return out

    # ----------------------------------------------------------- queries

    def symbol_summary(self, state: GapsState, symbol: str) -> dict[str, Any] | None:
        """Trade-id continuity counts of ``symbol`` (for replay summaries), None if none."""
        s = state.symbols.get(symbol)
        if s is None:
            return None
        return {
            "trades_checked": s.trades_checked,
            "trade_id_gaps": s.trade_id_gaps,
            "trades_missing": s.trades_missing,
            "trades_repeated": s.trades_repeated,
        }

    def summary(self, state: GapsState) -> dict[str, Any]:
        """Connection message-number counts (for replay summaries)."""
        return {"sequence_checked": state.sequence_checked, "sequence_gaps": state.sequence_gaps}
