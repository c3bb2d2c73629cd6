"""A published book checked against what the exchange itself says: drift verification with
a shadow book, and the bookTicker cross-check.

Owns: the half of :class:`engine.book_reducer.BookReducer` that *checks* a book
rather than keeps it (a mixin the reducer inherits, so the state stays the
reducer's :class:`~engine.book_reducer.SymbolBook`): starting a verification
(SnapshotRequest(purpose="verify")), the shadow ``Sync`` that buffers and
replays like a first sync, the comparison over the snapshot's price range
(BookVerified, or DriftDetected and the main book ADOPTing the shadow's), its
abandonment (VerificationAbandoned), and the bookTickers held until the book
reaches their ``u`` (TopOfBookMismatch).  The rules themselves are described
in :mod:`engine.book_reducer`'s header.

Must not: change the main book's phase except through :func:`engine.book_sync.adopt`,
read a clock, do I/O, or raise on any event.  It uses the reducer's
``_rule``, ``max_buffer``, ``max_pending_tickers``, ``_vtimeout_ns``,
``_symbol`` and ``_after_update``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.book import Book
from engine.book_outputs import (
    BookVerified,
    DriftDetected,
    TopOfBookMismatch,
    VerificationAbandoned,
)
from engine.book_sync import (
    LOSES_BOOK,
    PUBLISHED,
    Sync,
    adopt,
    ask,
    feed_diff,
    feed_replayed,
    feed_snapshot,
)
from engine.events import BookSnapshot, BookTicker, DepthDiff
from engine.outputs import SnapshotRequest
from engine.reducer import NO_OUTPUTS

if TYPE_CHECKING:
    from engine.book_reducer import BookState, SymbolBook

__all__ = ["BookChecks"]


class BookChecks:
    """Verification and bookTicker checks of :class:`engine.book_reducer.BookReducer` (a mixin)."""

    __slots__ = ()

    if TYPE_CHECKING:
        _rule: Any
        max_buffer: int
        max_pending_tickers: int
        _vtimeout_ns: int

        def _symbol(self, state: BookState, symbol: str) -> SymbolBook: ...

        def _after_update(self, sb: SymbolBook, ev: Any, out: list[Any]) -> None: ...

    # ----------------------------------------------------------- verification (shadow book)

    def _start_verify(self, sb: SymbolBook, ev: Any, reason: str, out: list[Any]) -> None:
        sb.last_verify_ns = ev.recv_ns
        shadow = sb.shadow = Sync()
        ask(shadow)
        sb.shadow_snapshot_id = -1
        sb.shadow_since_ns = ev.recv_ns
        sb.counts.verify_requests += 1
        out.append(SnapshotRequest(ev.seq, ev.recv_ns, ev.symbol, "verify", reason))

    def _abandon(self, sb: SymbolBook, ev: Any, reason: str, out: list[Any]) -> None:
        sb.shadow = None
        sb.counts.verify_abandoned += 1
        out.append(VerificationAbandoned(ev.seq, ev.recv_ns, ev.symbol, reason))

    def _verify_snapshot(self, sb: SymbolBook, ev: BookSnapshot, out: list[Any]) -> None:
        shadow = sb.shadow
        if shadow is None or shadow.phase in PUBLISHED:
            # unrequested (or a second answer): verify from here with an empty buffer
            shadow = sb.shadow = Sync()
            sb.shadow_since_ns = ev.recv_ns
        depth = ev.depth
        sb.shadow_bid_floor = (
            None
            if not ev.bids or (depth is not None and len(ev.bids) < depth)
            else min(p for p, _ in ev.bids)
        )
        sb.shadow_ask_ceiling = (
            None
            if not ev.asks or (depth is not None and len(ev.asks) < depth)
            else max(p for p, _ in ev.asks)
        )
        sb.shadow_snapshot_id = ev.last_id
        _, replay = feed_snapshot(self._rule, shadow, ev)
        for d in replay:
            act, _ = feed_diff(self._rule, shadow, d, self.max_buffer)
            if act in LOSES_BOOK:
                self._abandon(sb, ev, f"verification snapshot {ev.last_id} does not chain", out)
                return
        feed_replayed(shadow)
        self._maybe_compare(sb, ev, out)

    def _shadow_diff(self, sb: SymbolBook, ev: DepthDiff, out: list[Any]) -> None:
        shadow = sb.shadow
        assert shadow is not None
        if shadow.phase not in PUBLISHED and ev.recv_ns - sb.shadow_since_ns >= self._vtimeout_ns:
            self._abandon(sb, ev, "no verification snapshot came", out)
            return
        act, dropped = feed_diff(self._rule, shadow, ev, self.max_buffer)
        if act in LOSES_BOOK:
            self._abandon(
                sb, ev, f"verification snapshot {sb.shadow_snapshot_id} does not chain", out
            )
            return
        if dropped:
            self._abandon(sb, ev, "verification buffer full", out)
            return
        self._maybe_compare(sb, ev, out)

    def _maybe_compare(self, sb: SymbolBook, ev: Any, out: list[Any]) -> None:
        shadow = sb.shadow
        main = sb.main.book
        assert shadow is not None
        theirs = shadow.book
        if theirs is None or main is None or theirs.last_id != main.last_id:
            return
        diffs = main.diff_range(theirs, sb.shadow_bid_floor, sb.shadow_ask_ceiling)
        sb.shadow = None
        c = sb.counts
        if not diffs:
            c.verified += 1
            lo, hi = sb.shadow_bid_floor, sb.shadow_ask_ceiling
            n = sum(1 for p in theirs.bids if lo is None or p >= lo) + sum(
                1 for p in theirs.asks if hi is None or p <= hi
            )
            out.append(
                BookVerified(ev.seq, ev.recv_ns, ev.symbol, main.last_id, sb.shadow_snapshot_id, n)
            )
            return
        c.drift += 1
        out.append(
            DriftDetected(
                ev.seq,
                ev.recv_ns,
                ev.symbol,
                main.last_id,
                sb.shadow_snapshot_id,
                [(d.price, d.ours, d.theirs) for d in diffs if d.side == "bid"],
                [(d.price, d.ours, d.theirs) for d in diffs if d.side == "ask"],
            )
        )
        adopt(sb.main, shadow)
        sb.crossed = False
        self._after_update(sb, ev, out)

    # ----------------------------------------------------------- bookTicker cross-check

    def _ticker(self, state: BookState, ev: BookTicker) -> Sequence[Any]:
        sb = self._symbol(state, ev.symbol)
        sb.counts.tickers_seen += 1
        book = sb.main.book if sb.main.phase in PUBLISHED else None
        if book is not None and not sb.pending:
            if ev.update_id < book.last_id:
                sb.counts.tickers_uncomparable += 1
                return NO_OUTPUTS
            if ev.update_id == book.last_id:
                out: list[Any] = []
                self._compare_ticker(sb, ev, book, out, ev)
                return out
        pending = sb.pending
        pending.append(ev)
        if len(pending) > self.max_pending_tickers:
            del pending[0]
            sb.counts.tickers_dropped += 1
        if book is not None:
            out = []
            self._check_tickers(sb, ev, out)
            return out
        return NO_OUTPUTS

    def _check_tickers(self, sb: SymbolBook, ev: Any, out: list[Any]) -> None:
        """Resolve held bookTickers the book's id has reached (== compare, < uncomparable)."""
        book = sb.main.book
        assert book is not None
        pending = sb.pending
        bid = book.last_id
        i = 0
        n = len(pending)
        while i < n and pending[i].update_id <= bid:
            t = pending[i]
            if t.update_id == bid:
                self._compare_ticker(sb, t, book, out, ev)
            else:
                sb.counts.tickers_uncomparable += 1
            i += 1
        if i:
            del pending[:i]

    def _compare_ticker(
        self, sb: SymbolBook, t: BookTicker, book: Book, out: list[Any], at: Any
    ) -> None:
        c = sb.counts
        c.tickers_compared += 1
        b = book.best_bid() or (0, 0)
        a = book.best_ask() or (0, 0)
        ours = (b[0], b[1], a[0], a[1])
        theirs = (t.bid_price, t.bid_qty, t.ask_price, t.ask_qty)
        if ours == theirs:
            c.tickers_matched += 1
            return
        c.tickers_mismatched += 1
        out.append(
            TopOfBookMismatch(at.seq, at.recv_ns, t.symbol, t.seq, t.update_id, ours, theirs)
        )
        if sb.shadow is None:
            self._start_verify(sb, at, f"bookTicker mismatch at u={t.update_id}", out)
