"""Which connection feeds each book, and what a connection's end does to the books it fed.

Owns: the half of :class:`engine.book_reducer.BookReducer` (a mixin, like
:mod:`engine.book_verify`; the state stays the reducer's
:class:`~engine.book_reducer.SymbolBook`) that reads connection events:
following one connection per book (``SymbolBook.feed``: the first connection
that delivers the symbol's depth, told by the pipeline's
:class:`~engine.events.FrameConn`), holding a rotation successor's depth until
the old connection closes (``held``), taking a closed connection's books off
the air (the sync table's CLOSE / CLOSE_KEEP through
:func:`engine.book_sync.feed_close`: BookWithdrawn), and a connection-wide
sequence break (:func:`engine.book_sync.feed_break`: GapDetected).  Why a
closed connection's book is suspended (Binance) or lost (every other venue):
:mod:`engine.book_sync`.

Must not: change a phase except through :mod:`engine.book_sync`'s drivers,
read a clock, do I/O, or raise on any event.  It uses the reducer's
``_rule``, ``max_buffer``, ``_symbol``, ``_diff_slow`` and ``_snapshot``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.book_outputs import BookWithdrawn, GapDetected, VerificationAbandoned
from engine.book_sync import A_SUSPEND, feed_break, feed_close
from engine.events import (
    END_OF_RECORDING,
    BookSnapshot,
    ConnectionClosed,
    DepthDiff,
    StreamSequence,
)
from engine.outputs import SnapshotRequest

if TYPE_CHECKING:
    from engine.book_reducer import BookState, SymbolBook

__all__ = ["BookFeeds"]


class BookFeeds:
    """Connections and books of :class:`engine.book_reducer.BookReducer` (a mixin)."""

    __slots__ = ()

    if TYPE_CHECKING:
        _rule: Any
        max_buffer: int

        def _symbol(self, state: BookState, symbol: str) -> SymbolBook: ...

        def _diff_slow(self, sb: SymbolBook, ev: DepthDiff, out: list[Any]) -> None: ...

        def _snapshot(self, state: BookState, ev: BookSnapshot) -> list[Any]: ...

    def _follows(self, state: BookState, ev: DepthDiff | BookSnapshot) -> bool:
        """Does the book follow the connection ``ev`` came over?  Else ``ev`` is held.

        A book follows one connection: the first that delivers its depth, until
        it closes.  Across a rotation's overlap the successor delivers the same
        depth, possibly *ahead* of the old connection (which is still reading
        what the server sent before our close): folding both as one stream would
        take the successor's lead for a gap.  So the successor's depth is held
        (bounded: :attr:`max_buffer`, oldest dropped) and replayed onto the book
        when the old connection closes (:meth:`_closed`).  Frames of no known
        connection (``state.conn`` ≤ 0: REST, or events not from a journal) are
        always followed.
        """
        c = state.conn
        sb = self._symbol(state, ev.symbol)
        if c <= 0 or sb.feed == c:
            return True
        if sb.feed < 0:
            sb.feed = c
            return True
        if sb.held_conn != c:
            if sb.held_conn >= 0:  # a third connection: keep the older successor's
                return False
            sb.held_conn = c
        held = sb.held
        held.append(ev)
        if len(held) > self.max_buffer:
            del held[0]
            sb.counts.buffer_dropped += 1
        return False

    def _closed(self, state: BookState, ev: ConnectionClosed) -> list[Any]:
        """Connection ``ev.conn`` closed.  Each book that followed it either switches to the
        connection whose depth was held (a rotation: the held depth is replayed onto it), or
        comes off the air (:func:`engine.book_sync.feed_close`: BookWithdrawn), unless the close
        ends the recording (:data:`engine.events.END_OF_RECORDING`: the book stays the last
        one the recording holds)."""
        out: list[Any] = []
        k = ev.conn
        for sym, sb in state.symbols.items():
            if sb.held_conn == k:  # the successor went first
                sb.held, sb.held_conn = [], -1
            if sb.feed != k:
                continue
            held, sb.held = sb.held, []
            sb.feed, sb.held_conn = sb.held_conn, -1
            if held:
                for h in held:
                    if type(h) is DepthDiff:
                        self._diff_slow(sb, h, out)
                    else:
                        out.extend(self._snapshot(state, h))  # type: ignore[arg-type]
                continue
            if ev.reason in END_OF_RECORDING:
                continue
            main = sb.main
            book_id = main.book.last_id if main.book is not None else -1
            action = feed_close(self._rule, main)
            if action is None:
                continue
            self._main_lost(sb, ev, sym, "connection closed", out)
            sb.counts.withdrawn += 1
            kept = action == A_SUSPEND
            if not kept:  # A_LOSE: the next snapshot (the new subscription's, or the first
                sb.crossed = False  # diff's request) rebuilds it
                sb.requested_ns = None
            why = f"connection {k} closed ({ev.code} {ev.reason})".replace(" )", ")")
            out.append(BookWithdrawn(ev.seq, ev.recv_ns, sym, book_id, k, kept, why))
        return out

    def _break(
        self, state: BookState, ev: StreamSequence, expected: int, books: list[str]
    ) -> list[Any]:
        """Messages of ``ev.source``'s connection were lost: each of its published books is
        lost as by a gap (:func:`engine.book_sync.feed_break`) and asked for afresh."""
        out: list[Any] = []
        reason = f"sequence_num gap on {ev.source}: expected {expected}, got {ev.number}"
        for sym in books:
            sb = state.symbols.get(sym)
            if sb is None:
                continue
            book_id = sb.main.book.last_id if sb.main.book is not None else -1
            if feed_break(sb.main) is None:
                continue
            self._main_lost(sb, ev, sym, "main book lost sync", out)
            sb.counts.gaps += 1
            sb.crossed = False
            out.append(
                GapDetected(
                    ev.seq, ev.recv_ns, sym, book_id, ev.number, ev.number, expected - 1, reason
                )
            )
            sb.requested_ns = ev.recv_ns
            sb.counts.sync_requests += 1
            out.append(SnapshotRequest(ev.seq, ev.recv_ns, sym, "sync", f"gap: {reason}"))
        return out

    def _main_lost(self, sb: SymbolBook, ev: Any, sym: str, reason: str, out: list[Any]) -> None:
        """The main book went off the air by a connection event (no symbol on ``ev``):
        a verification in flight is abandoned."""
        if sb.shadow is not None:
            sb.shadow = None
            sb.counts.verify_abandoned += 1
            out.append(VerificationAbandoned(ev.seq, ev.recv_ns, sym, reason))
