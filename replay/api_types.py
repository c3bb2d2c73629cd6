"""The values the Python API returns: a journal's span, replayed outputs, the book and state at T.

Owns :class:`Span`, :class:`OutputRecord`, :class:`BookAt` and
:class:`StateAt` (re-exported by :mod:`engine.replay.api`, where they are
made).  They present what the replay functions computed; they must not fold,
read a journal or format numbers themselves (the exact decimal text comes from
:func:`engine.replay.replay.book_summary`, the Arrow decimals from
:func:`engine.replay.export.decimals`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NamedTuple

import attrs
import pyarrow as pa

from engine.book import Book
from engine.pipeline import Pipeline
from engine.replay.checkpoints import CheckpointInfo
from engine.replay.export import decimals
from engine.replay.replay import book_summary, candles_summary, trades_summary
from engine.timefmt import format_ns

__all__ = ["Span", "OutputRecord", "BookAt", "StateAt"]


@attrs.frozen
class Span:
    """A journal's extent: its first and last frame (receive time in epoch ns, and seq)."""

    first_ns: int
    last_ns: int
    first_seq: int
    last_seq: int

    @property
    def first(self) -> str:
        """The first receive time as exact ISO-8601 UTC text (nanoseconds)."""
        return format_ns(self.first_ns)

    @property
    def last(self) -> str:
        """The last receive time as exact ISO-8601 UTC text (nanoseconds)."""
        return format_ns(self.last_ns)

    def __contains__(self, t_ns: object) -> bool:
        return isinstance(t_ns, int) and self.first_ns <= t_ns <= self.last_ns

    def __str__(self) -> str:
        return f"{self.first} … {self.last}"


class OutputRecord(NamedTuple):
    """One replayed output and the seq of the journal frame that caused it."""

    seq: int
    output: Any


@attrs.frozen
class BookAt:
    """One symbol's order book at an instant (what ``engine book --json`` prints as ``book``).

    ``summary`` is that very dict (exact decimal text; health counters);
    ``book`` the engine's own :class:`engine.book.Book` (int prices in 1e-18
    units, with ``execution_price``, ``depth_within``, ``ladder`` ...) or None
    when the book was not synced at that time.  Prices and quantities below
    are exact :class:`~decimal.Decimal` values.
    """

    symbol: str
    at_ns: int
    #: the last frame folded (the state is the one right after it)
    seq: int
    depth: int
    summary: dict[str, Any]
    book: Book | None = attrs.field(eq=False, repr=False)

    @property
    def at(self) -> str:
        return format_ns(self.at_ns)

    @property
    def synced(self) -> bool:
        return self.book is not None

    @property
    def bids(self) -> list[tuple[Decimal, Decimal]]:
        """``(price, qty)`` of the top ``depth`` bids, best first (empty when not synced)."""
        return [(Decimal(p), Decimal(q)) for p, q in self.summary.get("bids", [])]

    @property
    def asks(self) -> list[tuple[Decimal, Decimal]]:
        """``(price, qty)`` of the top ``depth`` asks, best first (empty when not synced)."""
        return [(Decimal(p), Decimal(q)) for p, q in self.summary.get("asks", [])]

    @property
    def checksums_verified(self) -> int:
        """Diffs whose exchange checksum the book matched (0 for venues without checksums)."""
        return int(self.summary.get("checksums_verified", 0))

    @property
    def checksum_mismatches(self) -> int:
        """Diffs after which the book failed the exchange's checksum (each one resynced)."""
        return int(self.summary.get("checksum_mismatches", 0))

    @property
    def sequence_gaps(self) -> int:
        """Sequence breaks: diffs that did not chain onto the book (each one resynced)."""
        return int(self.summary.get("sequence_gaps", 0))

    @property
    def best_bid(self) -> tuple[Decimal, Decimal] | None:
        return _pair(self.summary.get("best_bid"))

    @property
    def best_ask(self) -> tuple[Decimal, Decimal] | None:
        return _pair(self.summary.get("best_ask"))

    @property
    def spread(self) -> Decimal | None:
        return _dec(self.summary.get("spread"))

    @property
    def mid(self) -> Decimal | None:
        return _dec(self.summary.get("mid"))

    def to_table(self) -> pa.Table:
        """The top ``depth`` levels, long form: side, level (0 = best), price, qty (decimal128)."""
        bids, asks = self.book.top(self.depth) if self.book is not None else ([], [])
        sides = [("bid", bids), ("ask", asks)]
        return pa.table(
            {
                "side": pa.array([s for s, levels in sides for _ in levels], pa.string()),
                "level": pa.array([i for _, lv in sides for i in range(len(lv))], pa.int32()),
                "price": decimals([p for _, levels in sides for p, _ in levels]),
                "qty": decimals([q for _, levels in sides for _, q in levels]),
            }
        )

    def __str__(self) -> str:
        head = f"{self.symbol} at {self.at} (state after seq {self.seq})"
        if self.book is None:
            return f"{head}: book not synced"
        return f"{head}\n{self.book.ladder(self.depth)}"


def _dec(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _pair(level: list[str] | None) -> tuple[Decimal, Decimal] | None:
    return None if not level else (Decimal(level[0]), Decimal(level[1]))


@attrs.frozen
class StateAt:
    """Every reducer's state at an instant: the fold of every frame received at or before it.

    ``pipeline`` is the engine's :class:`~engine.pipeline.Pipeline` in that
    state (yours to keep; nothing else holds it); ``checkpoint`` the checkpoint
    the fold started from (None: the journal's beginning) and
    ``frames_folded`` how many frames were folded after it.
    """

    at_ns: int
    pipeline: Pipeline = attrs.field(eq=False, repr=False)
    checkpoint: CheckpointInfo | None
    frames_folded: int
    #: the symbols asked for (all of the journal's by default)
    symbols: tuple[str, ...]

    @property
    def at(self) -> str:
        return format_ns(self.at_ns)

    @property
    def seq(self) -> int:
        """The last frame folded."""
        return self.pipeline.counters.last_seq

    @property
    def states(self) -> dict[str, Any]:
        """Reducer name → its state ("book", "trades", "tape", "candles", "anomaly", ...)."""
        return {r.name: self.pipeline.state(r.name) for r in self.pipeline.reducers}

    def book(self, symbol: str, depth: int = 10) -> BookAt:
        """The book of ``symbol`` in this state, ``depth`` levels per side."""
        sym = self._symbol(symbol)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, not {depth}")
        summary = book_summary(self.pipeline, sym, depth)
        if summary is None:
            raise ValueError("this journal's pipeline has no order book reducer")
        book = None
        if summary["synced"]:
            reducer: Any = self.pipeline.reducer("book")
            book = reducer.book(self.pipeline.state("book"), sym)
        return BookAt(sym, self.at_ns, self.seq, depth, summary, book)

    def summary(self, depth: int = 10) -> dict[str, dict[str, Any]]:
        """Per symbol: book, trades and candles state, as ``engine book --json`` prints them."""
        p = self.pipeline
        return {
            s: {
                "book": book_summary(p, s, depth),
                "trades": trades_summary(p, s),
                "candles": candles_summary(p, s),
            }
            for s in self.symbols
        }

    def _symbol(self, symbol: str) -> str:
        sym = symbol.strip().upper()
        if sym not in self.symbols:
            raise ValueError(f"unknown symbol {sym!r}; symbols here: {', '.join(self.symbols)}")
        return sym
