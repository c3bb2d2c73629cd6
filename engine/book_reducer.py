"""The order book reducer: every symbol's book as a pure fold over depth events.

Owns: per-symbol sync (every phase change is a transition of
:mod:`engine.book_sync`'s table: this module turns the table's *actions*
into outputs and counts, and never sets a phase itself), the bounded diff
buffer's overflow policy, snapshot requests (sync and periodic verify, timed
by *event* time ``recv_ns``), crossed-book detection, the state classes, the
counts and the queries (``book``, ``sync_state``, ``counts``).  The checks of a
published book against the exchange (drift verification with a shadow book,
the bookTicker cross-check) are :mod:`engine.book_verify`'s, and which
connection feeds each book and what a close does to it (suspend or lose it,
a rotation's hand-over, a connection-wide sequence break) are
:mod:`engine.book_feeds`'s: two mixins of the reducer, described below and
there; the output classes it emits live in
:mod:`engine.book_outputs` (re-exported here).  Must not: read a clock, do
I/O, use randomness or globals, or raise on any event (unknown events are
ignored).

How the pieces fit, per symbol::

    DepthDiff ──▶ main Sync ──(apply)──▶ crossed? ─▶ pending bookTickers reached? ─▶ verify due?
        └──────▶ shadow Sync (only while a verification runs) ─▶ same id as main? ─▶ compare
    BookSnapshot ─▶ table says LOAD: main loads, replays its buffer, PUBLISH → BookSynced
                 └▶ table says VERIFY (main synced): shadow loads, replays its buffer, compare
    BookTicker ──▶ held until the book's id reaches its u: == u compare, jumped past → uncomparable

Reported states (``sync_state``): "idle", "buffering", "resyncing" (no
book), "primed" (a snapshot no diff has chained onto yet), "synced" and
"suspended" (its connection closed: kept, not published; Binance only).  A
primed book is published (``book`` returns it, BookSynced announced it): why,
in :mod:`engine.book_sync`.  ``BookSynced.resync`` is true when the snapshot
ended a RESYNCING wait (the table's RELOADED).

The steady case (synced, no verification or held bookTicker, the diff
chains: ``book_sync.INLINE``) is inlined in :meth:`BookReducer.step`, the
engine's hottest path; it is exactly TABLE's (SYNCED, APPLY) transition plus
the counts and checks :meth:`BookReducer._main_diff` would do, and is off
(``inline=False``) or the table's whenever that could differ.  Under a rule
with a checksum (or truncation) it applies the diff with the driver's own
``book_sync.apply_checked`` (apply, truncate, the rule's verify: never a
copy) and, when the checksum rejects the book, hands that judgement to the
driver (``book_sync.feed_judged``) exactly as a non-inlined diff would.

Exchange checksums (rules with ``has_checksum``: Kraken, OKX): the table
applies a chaining diff, then the rule's ``verify`` judges the book; a
pass counts ``checksums_verified`` (diffs carrying a checksum only), a failure
is the table's REJECT: a :class:`ChecksumMismatch`, the book dropped (nothing
published until a fresh snapshot) and a sync request, which the runtime
answers by the codec's resync (refetch or resubscribe).  Sequence breaks are
``gaps`` (GapDetected).  A snapshot carrying a checksum is judged by the
driver as it loads (:func:`engine.book_sync.feed_snapshot`, for every rule
with a checksum: Kraken v2 and OKX send one): a pass counts as verified, a
failure is a ChecksumMismatch (``book_id``: the book's id before it, -1 if
none), the snapshot never published, and a sync request.

Drift verification: a SnapshotRequest(purpose="verify") starts a shadow
``Sync`` (the table's ASK) that buffers the diffs from that moment, exactly
like a first sync.  When the snapshot comes the shadow loads it and replays
its buffer; from then on both books take every diff.  As soon as both stand
at the same update id they are compared over the price range the snapshot
covers (bids ≥ its lowest bid, asks ≤ its highest ask, unless a side holds
fewer levels than the requested depth: then that whole side).  A difference
is a DriftDetected listing the levels, and the main Sync ADOPTs the shadow's
book (its phase stays: the stream position was right, the levels were not).
A snapshot that arrives unrequested while synced gets the same treatment
(empty buffer).  If the shadow cannot chain (the table's action loses its
book: gap, snapshot older than its buffer) or waits too long, the
verification is abandoned and counted, never guessed.

The bookTicker check (see issue 5): a bookTicker is pushed in real time while
diffs come in 100 ms batches, so it is held until the book reaches its ``u``:
equal → compare best bid/ask price and qty; past → uncomparable.  A mismatch
is a TopOfBookMismatch and asks for a verify snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from engine import book_outputs, serde
from engine.book import Book
from engine.book_feeds import BookFeeds
from engine.book_outputs import (  # the rest re-exported (__all__)
    BookResumed,
    BookSynced,
    BookVerified,  # noqa: F401
    BookWithdrawn,  # noqa: F401
    BufferOverflow,
    ChecksumMismatch,
    CrossedBook,
    DriftDetected,  # noqa: F401
    GapDetected,
    TopOfBookMismatch,  # noqa: F401
    VerificationAbandoned,  # noqa: F401
)
from engine.book_sync import (
    A_APPLY,
    A_DROP,
    A_PUBLISH,
    A_REFETCH,
    A_REJECT,
    A_REQUEST,
    A_RESUME,
    A_RESYNC,
    A_RETRACT,
    A_VERIFY,
    APPLY,
    BAD_CHECKSUM,
    IDLE,
    INLINE,
    PUBLISHED,
    RELOADED,
    RESYNCING,
    TABLE,
    Sync,
    apply_checked,
    feed_diff,
    feed_judged,
    feed_replayed,
    feed_snapshot,
    rule_for,
)
from engine.book_verify import BookChecks
from engine.events import (
    BookSnapshot,
    BookTicker,
    ConnectionClosed,
    ConnectionOpened,
    DepthDiff,
    FrameConn,
    StreamSequence,
)
from engine.outputs import SnapshotRequest
from engine.reducer import NO_OUTPUTS
from engine.sequence_gaps import StreamNumbers

__all__ = ["BookReducer", "BookState", "SymbolBook", "BookCounts"]
__all__ += book_outputs.__all__  # re-exported: the reducer's outputs

SECOND_NS = 1_000_000_000


# =============================================================== state


@serde.register
@attrs.define(slots=True, eq=True)
class BookCounts:
    """Per-symbol counters (all monotonic).

    An applied diff is counted once, in the one of two counts that says whether an exchange
    checksum vouched for it (:attr:`diffs_applied` and :attr:`checksums_verified` are their
    sums): the steady path pays one increment a diff, checksum or not.
    """

    #: applied diffs whose exchange checksum the book then matched (rules with a checksum,
    #: diffs carrying one); every diff, also those replayed from the buffer after a snapshot
    diffs_verified: int = 0
    #: applied diffs no checksum tested (the rule has none, or the diff carried none)
    diffs_untested: int = 0
    #: loaded snapshots whose own checksum the book matched (rules with a checksum)
    snapshots_verified: int = 0
    stale_diffs: int = 0
    #: sequence breaks (the diff did not chain onto the book), GapDetected
    gaps: int = 0
    #: applied diffs the book then failed the checksum of: ChecksumMismatch, then a resync
    checksum_mismatches: int = 0
    syncs: int = 0
    resyncs: int = 0
    snapshots_too_old: int = 0
    sync_requests: int = 0
    buffer_dropped: int = 0
    verify_requests: int = 0
    verified: int = 0
    verify_abandoned: int = 0
    drift: int = 0
    crossed: int = 0
    tickers_seen: int = 0
    tickers_compared: int = 0
    tickers_matched: int = 0
    tickers_mismatched: int = 0
    tickers_uncomparable: int = 0
    tickers_dropped: int = 0
    #: the feeding connection closed under a published book (BookWithdrawn)
    withdrawn: int = 0
    #: suspended books published again by the next connection's chaining diff (BookResumed)
    resumed: int = 0

    @property
    def diffs_applied(self) -> int:
        """Diffs applied to the main book (verified or untested)."""
        return self.diffs_verified + self.diffs_untested

    @property
    def checksums_verified(self) -> int:
        """Exchange checksums the book matched: applied diffs' and loaded snapshots'."""
        return self.diffs_verified + self.snapshots_verified


@serde.register
@attrs.define(slots=True, eq=True)
class SymbolBook:
    """Everything the reducer keeps for one symbol."""

    main: Sync = attrs.Factory(Sync)
    shadow: Sync | None = None
    #: id of the snapshot the shadow loaded (-1: still waiting for it)
    shadow_snapshot_id: int = -1
    #: compare range of the shadow's snapshot (None = whole side)
    shadow_bid_floor: int | None = None
    shadow_ask_ceiling: int | None = None
    shadow_since_ns: int = 0
    #: bookTickers waiting for the book to reach their update id, in arrival order
    pending: list[BookTicker] = attrs.Factory(list)
    requested_ns: int | None = None  # when the outstanding sync request was made
    last_verify_ns: int | None = None
    crossed: bool = False
    overflowing: bool = False
    counts: BookCounts = attrs.Factory(BookCounts)
    #: the connection whose depth the book follows (-1: none yet, or it closed)
    feed: int = -1
    #: depth of ``held_conn`` (another connection, a rotation's successor) held while the
    #: book follows ``feed``: replayed when ``feed`` closes (bounded, oldest dropped)
    held: list[DepthDiff | BookSnapshot] = attrs.Factory(list)
    held_conn: int = -1


@serde.register
@attrs.define(slots=True, eq=True)
class BookState:
    symbols: dict[str, SymbolBook] = attrs.Factory(dict)
    #: connection-wide message numbers (venues that number them: a break loses the books)
    streams: StreamNumbers = attrs.Factory(StreamNumbers)
    #: the connection the current frame came over (FrameConn; -1: not told, 0: REST)
    conn: int = -1


# =============================================================== the reducer


@attrs.frozen
class BookReducer(BookFeeds, BookChecks):
    """Order books for all symbols of one codec's stream (see the module docstring).

    Args:
        sync_rule: a :class:`engine.codecs.base.SyncRule` constant (``codec.sync_rule``).
        max_buffer: diffs buffered per symbol while waiting for a snapshot (oldest dropped).
        max_pending_tickers: bookTickers held per symbol waiting for their ``u``.
        verify_interval_s: ask for a verification snapshot this often (event time); None: never.
        sync_retry_s: re-ask for a sync snapshot if none came within this time (event time).
        verify_timeout_s: abandon a verification whose snapshot has not come within this time.
        inline: fold the steady case (synced, no verification or bookTicker in flight, the
            diff chains) inline in :meth:`step`; False sends every diff through
            :mod:`engine.book_sync`'s driver.  Same states and outputs either way
            (``tests/test_book_sync.py``); the inlined path is faster.
    """

    sync_rule: str
    max_buffer: int = 10_000
    max_pending_tickers: int = 1_000
    verify_interval_s: float | None = 300.0
    sync_retry_s: float = 10.0
    verify_timeout_s: float = 30.0
    inline: bool = True
    name: str = "book"
    _rule: Any = attrs.field(init=False, repr=False, eq=False)
    #: the phase whose APPLY step() inlines (book_sync.INLINE), None: no inlining
    _inline_phase: str | None = attrs.field(init=False, repr=False, eq=False)
    #: the rule checks (checksum) or truncates: the inlined apply is book_sync.apply_checked
    _checked: bool = attrs.field(init=False, repr=False, eq=False)
    _verify_ns: int | None = attrs.field(init=False, repr=False, eq=False)
    _retry_ns: int = attrs.field(init=False, repr=False, eq=False)
    _vtimeout_ns: int = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        rule = rule_for(self.sync_rule)
        object.__setattr__(self, "_rule", rule)
        phase, inp = INLINE
        ok = self.inline and TABLE[phase][inp] == (phase, A_APPLY)
        object.__setattr__(self, "_inline_phase", phase if ok else None)
        object.__setattr__(self, "_checked", rule.has_checksum or rule.truncates)
        v = self.verify_interval_s
        object.__setattr__(self, "_verify_ns", None if v is None else int(v * SECOND_NS))
        object.__setattr__(self, "_retry_ns", int(self.sync_retry_s * SECOND_NS))
        object.__setattr__(self, "_vtimeout_ns", int(self.verify_timeout_s * SECOND_NS))

    # ----------------------------------------------------------- protocol

    def initial(self) -> BookState:
        return BookState()

    def snapshot(self, state: BookState) -> dict[str, Any]:
        return serde.dump(state)

    def restore(self, data: Any) -> BookState:
        st = serde.load(data)
        if not isinstance(st, BookState):
            raise ValueError(f"not a BookState checkpoint: {type(st).__name__}")
        return st

    def book(self, state: BookState, symbol: str) -> Book | None:
        """The published book of ``symbol`` (primed or synced), else None.  Read-only for callers.

        A primed book is published: see :mod:`engine.book_sync` (a snapshot is
        the exchange's book at its id); :meth:`sync_state` tells the two apart.
        """
        sb = state.symbols.get(symbol)
        if sb is None or sb.main.phase not in PUBLISHED:
            return None
        return sb.main.book

    def sync_state(self, state: BookState, symbol: str) -> str:
        """``symbol``'s sync state: "idle", "buffering", "primed", "synced", "resyncing" or
        "suspended".

        "primed": the book is a snapshot no diff has chained onto yet (published,
        not yet confirmed by the stream); "synced": live diffs chain onto it.
        """
        sb = state.symbols.get(symbol)
        return IDLE if sb is None else sb.main.phase

    def counts(self, state: BookState) -> dict[str, BookCounts]:
        return {s: sb.counts for s, sb in state.symbols.items()}

    def totals(self, state: BookState) -> BookCounts:
        """The counts summed over all symbols."""
        t = BookCounts()
        for sb in state.symbols.values():
            for f in attrs.fields(BookCounts):
                setattr(t, f.name, getattr(t, f.name) + getattr(sb.counts, f.name))
        return t

    def step(self, state: BookState, event: Any) -> tuple[BookState, Sequence[Any]]:
        t = type(event)
        if t is DepthDiff:
            # The steady state, inlined (the engine's hottest path): book_sync.INLINE
            # (synced, the diff chains: TABLE keeps it synced and applies it), nothing
            # else in flight, and (a rule with a checksum) the book passes it.  Everything
            # else goes through _diff and the table's driver.
            out: list[Any]
            sb = state.symbols.get(event.symbol)
            if sb is not None:
                main = sb.main
                if (
                    main.phase == self._inline_phase
                    and sb.feed == state.conn
                    and sb.shadow is None
                    and not sb.pending
                    and self._rule.next(book_id := main.book.last_id, event) == APPLY  # type: ignore[union-attr]
                ):
                    if self._checked:  # the driver's own apply, truncation and checksum
                        verdict, crossed = apply_checked(self._rule, main, event)
                        if verdict != APPLY:
                            out = []  # rejected: the table's step, as _main_diff takes it
                            self._diff_slow(sb, event, out, (BAD_CHECKSUM, book_id))
                            return state, out
                        if event.checksum is not None and self._rule.has_checksum:
                            sb.counts.diffs_verified += 1
                        else:
                            sb.counts.diffs_untested += 1
                    else:
                        crossed = main.book.apply(event.bids, event.asks, event.last_id)  # type: ignore[union-attr]
                        sb.counts.diffs_untested += 1
                    v = self._verify_ns
                    due = v is not None and event.recv_ns - sb.last_verify_ns >= v  # type: ignore[operator]
                    if crossed is sb.crossed and not due:
                        return state, NO_OUTPUTS
                    out = self._crossed_changed(sb, event) if crossed is not sb.crossed else []
                    if due:
                        self._start_verify(sb, event, "periodic", out)
                    return state, out
            return state, self._diff(state, event)
        if t is BookTicker:
            return state, self._ticker(state, event)
        if t is BookSnapshot:
            state.streams.saw_snapshot(event.seq, event.symbol)
            if event.origin == "stream" and not self._follows(state, event):
                return state, NO_OUTPUTS
            return state, self._snapshot(state, event)
        if t is StreamSequence:
            brk = state.streams.number(event)
            return state, NO_OUTPUTS if brk is None else self._break(state, event, *brk)
        if t is FrameConn:
            state.conn = event.conn
            return state, NO_OUTPUTS
        if t is ConnectionOpened:
            state.streams.reset(event.source)
        elif t is ConnectionClosed:
            state.streams.reset(event.source)
            return state, self._closed(state, event)
        return state, NO_OUTPUTS

    # ----------------------------------------------------------- depth diffs

    def _symbol(self, state: BookState, symbol: str) -> SymbolBook:
        sb = state.symbols.get(symbol)
        if sb is None:
            sb = state.symbols[symbol] = SymbolBook()
        return sb

    def _diff(self, state: BookState, ev: DepthDiff) -> Sequence[Any]:
        """Every diff that is not the steady case :meth:`step` handles inline."""
        if not self._follows(state, ev):
            return NO_OUTPUTS
        out: list[Any] = []
        self._diff_slow(self._symbol(state, ev.symbol), ev, out)
        return out

    def _diff_slow(
        self,
        sb: SymbolBook,
        ev: DepthDiff,
        out: list[Any],
        judged: tuple[str, int] | None = None,
    ) -> None:
        """Every diff path but the steady one: buffering, gaps, shadow, pending tickers.

        ``judged``: the table input :meth:`step` already found having applied the diff
        (book_sync.apply_checked: a rejected checksum) and the book's id before it; the
        driver then only takes the table's step (book_sync.feed_judged)."""
        was_published = sb.main.phase in PUBLISHED
        self._main_diff(sb, ev, out, judged=judged)
        shadow = sb.shadow
        if shadow is not None:
            if not was_published or sb.main.phase not in PUBLISHED:
                self._abandon(sb, ev, "main book lost sync", out)
            else:
                self._shadow_diff(sb, ev, out)
        if sb.main.phase in PUBLISHED:
            v = self._verify_ns
            if (
                v is not None
                and sb.shadow is None
                and sb.last_verify_ns is not None
                and ev.recv_ns - sb.last_verify_ns >= v
            ):
                self._start_verify(sb, ev, "periodic", out)
        elif sb.requested_ns is None:
            if sb.main.phase == RESYNCING:  # lost at a close: the next connection's first diff
                self._request_sync(sb, ev, "connection closed: need a snapshot", out)
        elif ev.recv_ns - sb.requested_ns >= self._retry_ns:
            self._request_sync(sb, ev, "no snapshot came: asking again", out)

    def _main_diff(
        self,
        sb: SymbolBook,
        ev: DepthDiff,
        out: list[Any],
        at: Any = None,
        judged: tuple[str, int] | None = None,
    ) -> None:
        """Feed one diff to the main book.  Outputs are stamped with ``at`` (the event being
        stepped: a snapshot when its buffer is replayed), defaulting to the diff itself;
        ``judged``: see :meth:`_diff_slow`."""
        at = ev if at is None else at
        main = sb.main
        if judged is None:
            book_id = main.book.last_id if main.book is not None else -1
            action, dropped = feed_diff(self._rule, main, ev, self.max_buffer)
        else:
            inp, book_id = judged
            action, dropped = feed_judged(main, ev, inp, self.max_buffer)
        c = sb.counts
        if action == A_APPLY or action == A_RESUME:
            if ev.checksum is not None and self._rule.has_checksum:
                c.diffs_verified += 1
            else:
                c.diffs_untested += 1
            if action == A_RESUME:
                c.resumed += 1
                out.append(
                    BookResumed(at.seq, at.recv_ns, ev.symbol, book_id, ev.first_id, ev.last_id)
                )
            self._after_update(sb, at, out)
        elif action == A_DROP:
            c.stale_diffs += 1
        elif action == A_REQUEST:
            self._request_sync(sb, at, "first diff: need a snapshot", out)
        elif action == A_REFETCH or action == A_RETRACT:
            c.snapshots_too_old += 1
            reason = f"snapshot {book_id} older than diff U={ev.first_id}"
            if action == A_REFETCH:  # a snapshot being loaded: Binance's "fetch again"
                self._request_sync(sb, at, reason, out)
            else:  # a primed book was published (BookSynced): for its consumers a gap
                self._gap(sb, ev, at, book_id, reason, out)
        elif action == A_RESYNC:
            self._gap(sb, ev, at, book_id, "diff does not chain onto the book", out)
        elif action == A_REJECT:  # applied, then the exchange checksum rejected the book
            c.checksum_mismatches += 1
            sb.crossed = False
            out.append(
                ChecksumMismatch(at.seq, at.recv_ns, ev.symbol, book_id, ev.last_id, ev.checksum)
            )
            self._request_sync(sb, at, "checksum mismatch", out)
        if dropped:
            c.buffer_dropped += dropped
            if not sb.overflowing:
                sb.overflowing = True
                out.append(BufferOverflow(at.seq, at.recv_ns, ev.symbol, self.max_buffer))

    def _gap(
        self, sb: SymbolBook, ev: DepthDiff, at: Any, book_id: int, reason: str, out: list[Any]
    ) -> None:
        sb.counts.gaps += 1
        sb.crossed = False
        out.append(
            GapDetected(
                at.seq, at.recv_ns, ev.symbol, book_id, ev.first_id, ev.last_id, ev.prev_id, reason
            )
        )
        self._request_sync(sb, at, f"gap: {reason}", out)

    def _request_sync(self, sb: SymbolBook, ev: Any, reason: str, out: list[Any]) -> None:
        sb.requested_ns = ev.recv_ns
        sb.counts.sync_requests += 1
        out.append(SnapshotRequest(ev.seq, ev.recv_ns, ev.symbol, "sync", reason))

    def _after_update(self, sb: SymbolBook, ev: Any, out: list[Any]) -> None:
        """After the published book changed: crossed check, then bookTickers it reached."""
        book = sb.main.book
        assert book is not None
        if book.crossed() != sb.crossed:
            out.extend(self._crossed_changed(sb, ev))
        if sb.pending:
            self._check_tickers(sb, ev, out)

    def _crossed_changed(self, sb: SymbolBook, ev: Any) -> list[Any]:
        book = sb.main.book
        assert book is not None
        sb.crossed = not sb.crossed
        if not sb.crossed:
            return []
        sb.counts.crossed += 1
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is not None and ask is not None
        return [CrossedBook(ev.seq, ev.recv_ns, ev.symbol, book.last_id, bid[0], ask[0])]

    # ----------------------------------------------------------- snapshots

    def _snapshot(self, state: BookState, ev: BookSnapshot) -> list[Any]:
        sb = self._symbol(state, ev.symbol)
        out: list[Any] = []
        main = sb.main
        prev_id = main.book.last_id if main.book is not None else -1
        action, replay = feed_snapshot(self._rule, main, ev)
        if action == A_VERIFY:
            self._verify_snapshot(sb, ev, out)
            return out
        if action == A_REJECT:  # the snapshot fails its own checksum: not loaded, ask again
            sb.counts.checksum_mismatches += 1
            sb.crossed = False
            if sb.shadow is not None:
                self._abandon(sb, ev, "main book lost", out)
            out.append(
                ChecksumMismatch(ev.seq, ev.recv_ns, ev.symbol, prev_id, ev.last_id, ev.checksum)
            )
            self._request_sync(sb, ev, "snapshot checksum mismatch", out)
            return out
        if ev.checksum is not None and self._rule.has_checksum:
            sb.counts.snapshots_verified += 1
        # A_LOAD: the snapshot is the main book; replay the buffer onto it
        resync = main.phase == RELOADED
        if sb.shadow is not None:
            self._abandon(sb, ev, "main book reloaded", out)
        sb.requested_ns = None
        sb.overflowing = False
        sb.crossed = False
        sb.last_verify_ns = ev.recv_ns
        k = len(out)
        self._after_update(sb, ev, out)
        for d in replay:  # after a gap/refetch in the replay the rest goes back to the buffer
            self._main_diff(sb, d, out, ev)
        if feed_replayed(main) != A_PUBLISH:  # the replay asked for another snapshot
            return out
        book = main.book
        assert book is not None
        c = sb.counts
        c.syncs += 1
        if resync:
            c.resyncs += 1
        out.insert(
            k,
            BookSynced(
                ev.seq,
                ev.recv_ns,
                ev.symbol,
                ev.last_id,
                book.last_id,
                len(book.bids),
                len(book.asks),
                len(replay),
                resync,
            ),
        )
        return out
