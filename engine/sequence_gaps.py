"""Id continuity the exchange promises: trade ids per symbol, message numbers per connection.

Codecs only decode these numbers (a codec is stateless; continuity needs
memory), so the rules live here, once:

* **trade ids** — :class:`TradeIds`, a pure reducer (for venues whose public
  trade ids are consecutive per product: Coinbase Exchange ``matches``): a
  product's ``trade_id`` rises by exactly 1 per trade, so a step > 1 is a lost
  trade (:class:`TradeIdGap`, naming the missing ids ``expected..got-1``).  A
  trade at or below the last id seen is a repeat (``last_match`` after a
  resubscribe, an overlapping connection): counted, not a gap.  Coinbase's
  ``sequence`` field is *not* judged: it counts the product's whole full
  channel, so its steps exceed 1 by design.
* **connection message numbers** — :class:`StreamNumbers`, state the book
  reducer keeps and asks (:mod:`engine.book_reducer`), because a break must
  take the books off the air: per connection (known by its URL, ``source``),
  :class:`~engine.events.StreamSequence` numbers (Coinbase Advanced Trade
  ``sequence_num``) rise by exactly 1 across every channel and product.  Any
  other step means messages were lost, possibly book updates, so every book
  that came over that connection is lost (GapDetected, not published until a
  fresh snapshot) and resynced.  A book belongs to the connection whose
  StreamSequence came in the same frame as its snapshot (the codec emits the
  number first).  A ``ConnectionOpened``/``ConnectionClosed`` for a URL starts
  its numbering afresh (each connection counts from its own start); two
  connections open at once to one URL would look like gaps (the runtime does
  not do that for a venue with connection-wide numbers).

Must not: read a clock, do I/O, or touch book levels; never raises on any event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from engine import serde
from engine.events import StreamSequence, Trade
from engine.reducer import NO_OUTPUTS

__all__ = ["TradeIds", "TradeIdsState", "SymbolIds", "TradeIdGap", "StreamNumbers"]


# =============================================================== connection message numbers


@serde.register
@attrs.define(slots=True, eq=True)
class StreamNumbers:
    """Per connection URL: the last message number and the books it carries."""

    last: dict[str, int] = attrs.Factory(dict)
    books: dict[str, list[str]] = attrs.Factory(dict)
    #: (journal seq, source) of the last StreamSequence: ties a frame's snapshot to it
    frame: tuple[int, str] | None = None
    checked: int = 0
    breaks: int = 0

    def number(self, ev: StreamSequence) -> tuple[int, list[str]] | None:
        """Judge one number: None if it continues the connection's count, else
        ``(expected, the books of the connection)`` (a break)."""
        self.frame = (ev.seq, ev.source)
        self.checked += 1
        last = self.last.get(ev.source, -1)
        self.last[ev.source] = ev.number
        if last < 0 or ev.number == last + 1:
            return None
        self.breaks += 1
        return last + 1, list(self.books.get(ev.source, ()))

    def saw_snapshot(self, seq: int, symbol: str) -> None:
        """A snapshot of ``symbol`` in frame ``seq``: the book now rides that frame's connection."""
        f = self.frame
        if f is None or f[0] != seq:
            return
        for syms in self.books.values():
            if symbol in syms:
                syms.remove(symbol)
        self.books.setdefault(f[1], []).append(symbol)

    def reset(self, source: str) -> None:
        """A connection to ``source`` opened or closed: its count starts afresh."""
        self.last.pop(source, None)


# =============================================================== trade ids


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
class TradeIdsState:
    symbols: dict[str, SymbolIds] = attrs.Factory(dict)


@attrs.frozen
class TradeIds:
    """Reducer: trade-id continuity per symbol (module docstring).  Sees every trade (it is
    not a trade consumer: the selection's duplicates are exactly what it counts as repeats)."""

    name: str = "trade_ids"

    def initial(self) -> TradeIdsState:
        return TradeIdsState()

    def snapshot(self, state: TradeIdsState) -> Any:
        return serde.dump(state)

    def restore(self, data: Any) -> TradeIdsState:
        st = serde.load(data)
        if not isinstance(st, TradeIdsState):
            raise ValueError(f"not a TradeIdsState checkpoint: {type(st).__name__}")
        return st

    def step(self, state: TradeIdsState, ev: Any) -> tuple[TradeIdsState, Sequence[Any]]:
        if type(ev) is not Trade:
            return state, NO_OUTPUTS
        s = state.symbols.get(ev.symbol)
        if s is None:
            s = state.symbols[ev.symbol] = SymbolIds()
        s.trades_checked += 1
        last = s.last_trade_id
        tid = ev.first_id
        if last >= 0 and tid <= last:
            s.trades_repeated += 1
            return state, NO_OUTPUTS
        s.last_trade_id = ev.last_id
        if last < 0 or tid == last + 1:
            return state, NO_OUTPUTS
        s.trade_id_gaps += 1
        s.trades_missing += tid - last - 1
        return state, (TradeIdGap(ev.seq, ev.recv_ns, ev.symbol, last + 1, tid),)

    def symbol_summary(self, state: TradeIdsState, symbol: str) -> dict[str, Any] | None:
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
