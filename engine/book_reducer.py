"""The order book reducer: every symbol's book as a pure fold over depth events.

Owns: per-symbol sync (driven by :mod:`engine.book_sync`'s table), the
bounded diff buffer's overflow policy, snapshot requests (sync and periodic
verify, timed by *event* time ``recv_ns``), drift verification with a shadow
book, the bookTicker cross-check, crossed-book detection, the counts, and the
book output classes.  Must not: read a clock, do I/O, use randomness or
globals, or raise on any event (unknown events are ignored).

How the pieces fit, per symbol::

    DepthDiff ──▶ main Sync ──(apply)──▶ crossed? ─▶ pending bookTickers reached? ─▶ verify due?
        └──────▶ shadow Sync (only while a verification runs) ─▶ same id as main? ─▶ compare
    BookSnapshot ─▶ main not synced: LOAD + replay buffer   |  synced: shadow LOAD + replay its buffer
    BookTicker ──▶ held until the book's id reaches its u: == u compare, jumped past → uncomparable

Drift verification: a SnapshotRequest(purpose="verify") starts a shadow
``Sync`` that buffers the diffs from that moment, exactly like a first sync.
When the snapshot comes the shadow loads it and replays its buffer; from then
on both books take every diff.  As soon as both stand at the same update id
they are compared over the price range the snapshot covers (bids ≥ its
lowest bid, asks ≤ its highest ask, unless a side holds fewer levels than the
requested depth: then that whole side).  A difference is a DriftDetected
listing the levels, and the shadow replaces the main book.  A snapshot that
arrives unrequested while synced gets the same treatment (empty buffer).
If the shadow cannot chain (gap, snapshot older than its buffer) or waits too
long, the verification is abandoned and counted, never guessed.

The bookTicker check (see issue 5): a bookTicker is pushed in real time while
diffs come in 100 ms batches, so it is held until the book reaches its ``u``:
equal → compare best bid/ask price and qty; past → uncomparable.  A mismatch
is a TopOfBookMismatch and asks for a verify snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from attrs import frozen as output  # outputs are frozen, slotted attrs values like events

from engine import serde
from engine.book import Book
from engine.book_sync import (
    A_APPLY,
    A_DROP,
    A_LOAD,
    A_REFETCH,
    A_REQUEST,
    A_RESYNC,
    APPLY,
    BUFFERING,
    HAS_BOOK,
    SYNCED,
    Sync,
    feed_diff,
    feed_snapshot,
    rule_for,
)
from engine.events import BookSnapshot, BookTicker, DepthDiff
from engine.outputs import SnapshotRequest
from engine.reducer import NO_OUTPUTS

__all__ = [
    "BookReducer",
    "BookState",
    "SymbolBook",
    "BookCounts",
    "BookSynced",
    "GapDetected",
    "BufferOverflow",
    "DriftDetected",
    "BookVerified",
    "VerificationAbandoned",
    "CrossedBook",
    "TopOfBookMismatch",
]

SECOND_NS = 1_000_000_000


# =============================================================== outputs


@serde.register
@output
class BookSynced:
    """The book is valid and published from now on (a snapshot loaded and its buffer replayed)."""

    seq: int
    recv_ns: int
    symbol: str
    snapshot_id: int
    last_id: int
    bid_levels: int
    ask_levels: int
    replayed: int
    resync: bool


@serde.register
@output
class GapDetected:
    """Updates were lost between the book (at ``book_id``) and this diff: the book is discarded."""

    seq: int
    recv_ns: int
    symbol: str
    book_id: int
    first_id: int
    last_id: int
    prev_id: int | None
    reason: str


@serde.register
@output
class BufferOverflow:
    """The diff buffer hit its limit while waiting for a snapshot: oldest diffs are being dropped.

    Reported once per waiting episode; ``BookCounts.buffer_dropped`` counts every drop.
    """

    seq: int
    recv_ns: int
    symbol: str
    limit: int


@serde.register
@output
class DriftDetected:
    """Our book differs from the exchange's: ``bids``/``asks`` list (price, ours, theirs).

    ``source`` is ``"snapshot"`` (shadow-book verification).  The shadow
    replaced the main book.
    """

    seq: int
    recv_ns: int
    symbol: str
    last_id: int
    snapshot_id: int
    bids: list[tuple[int, int, int]]
    asks: list[tuple[int, int, int]]
    source: str = "snapshot"


@serde.register
@output
class BookVerified:
    """A verification snapshot agreed with our book over ``levels`` compared levels."""

    seq: int
    recv_ns: int
    symbol: str
    last_id: int
    snapshot_id: int
    levels: int


@serde.register
@output
class VerificationAbandoned:
    """A verification could not be completed (``reason``); nothing is known about drift."""

    seq: int
    recv_ns: int
    symbol: str
    reason: str


@serde.register
@output
class CrossedBook:
    """Best bid ≥ best ask after applying an update (reported once per episode)."""

    seq: int
    recv_ns: int
    symbol: str
    last_id: int
    bid: int
    ask: int


@serde.register
@output
class TopOfBookMismatch:
    """The exchange's bookTicker at ``update_id`` disagrees with our book at that same id (drift).

    ``ours``/``theirs`` are (bid price, bid qty, ask price, ask qty); 0 = side empty.
    ``seq``/``recv_ns`` are the event that brought the book to ``update_id`` (the
    bookTicker itself was held since ``ticker_seq``).
    """

    seq: int
    recv_ns: int
    symbol: str
    ticker_seq: int
    update_id: int
    ours: tuple[int, int, int, int]
    theirs: tuple[int, int, int, int]


# =============================================================== state


@serde.register
@attrs.define(slots=True, eq=True)
class BookCounts:
    """Per-symbol counters (all monotonic)."""

    diffs_applied: int = 0
    stale_diffs: int = 0
    gaps: int = 0
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
    resync: bool = False  # the current wait for a snapshot follows a gap or drift
    counts: BookCounts = attrs.Factory(BookCounts)


@serde.register
@attrs.define(slots=True, eq=True)
class BookState:
    symbols: dict[str, SymbolBook] = attrs.Factory(dict)


# =============================================================== the reducer


@attrs.frozen
class BookReducer:
    """Order books for all symbols of one codec's stream (see the module docstring).

    Args:
        sync_rule: a :class:`engine.codecs.base.SyncRule` constant (``codec.sync_rule``).
        max_buffer: diffs buffered per symbol while waiting for a snapshot (oldest dropped).
        max_pending_tickers: bookTickers held per symbol waiting for their ``u``.
        verify_interval_s: ask for a verification snapshot this often (event time); None: never.
        sync_retry_s: re-ask for a sync snapshot if none came within this time (event time).
        verify_timeout_s: abandon a verification whose snapshot has not come within this time.
    """

    sync_rule: str
    max_buffer: int = 10_000
    max_pending_tickers: int = 1_000
    verify_interval_s: float | None = 300.0
    sync_retry_s: float = 10.0
    verify_timeout_s: float = 30.0
    name: str = "book"
    _rule: Any = attrs.field(init=False, repr=False, eq=False)
    _verify_ns: int | None = attrs.field(init=False, repr=False, eq=False)
    _retry_ns: int = attrs.field(init=False, repr=False, eq=False)
    _vtimeout_ns: int = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_rule", rule_for(self.sync_rule))
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
        """The published book of ``symbol``: None unless synced.  Read-only for callers."""
        sb = state.symbols.get(symbol)
        if sb is None or sb.main.phase not in HAS_BOOK:
            return None
        return sb.main.book

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
            # The steady state, inlined (the engine's hottest path): synced, nothing else
            # in flight, the diff chains.  Everything else goes through _diff.
            sb = state.symbols.get(event.symbol)
            if sb is not None:
                main = sb.main
                if (
                    main.phase == SYNCED
                    and sb.shadow is None
                    and not sb.pending
                    and self._rule.next(main.book.last_id, event) == APPLY  # type: ignore[union-attr]
                ):
                    crossed = main.book.apply(event.bids, event.asks, event.last_id)  # type: ignore[union-attr]
                    sb.counts.diffs_applied += 1
                    if crossed is not sb.crossed:
                        return state, self._crossed_changed(sb, event)
                    v = self._verify_ns
                    if v is not None and event.recv_ns - sb.last_verify_ns >= v:  # type: ignore[operator]
                        out: list[Any] = []
                        self._start_verify(sb, event, "periodic", out)
                        return state, out
                    return state, NO_OUTPUTS
            return state, self._diff(state, event)
        if t is BookTicker:
            return state, self._ticker(state, event)
        if t is BookSnapshot:
            return state, self._snapshot(state, event)
        return state, NO_OUTPUTS

    # ----------------------------------------------------------- depth diffs

    def _symbol(self, state: BookState, symbol: str) -> SymbolBook:
        sb = state.symbols.get(symbol)
        if sb is None:
            sb = state.symbols[symbol] = SymbolBook()
        return sb

    def _diff(self, state: BookState, ev: DepthDiff) -> Sequence[Any]:
        """Every diff that is not the steady case :meth:`step` handles inline."""
        out: list[Any] = []
        self._diff_slow(self._symbol(state, ev.symbol), ev, out)
        return out

    def _diff_slow(self, sb: SymbolBook, ev: DepthDiff, out: list[Any]) -> None:
        """Every diff path but the steady one: buffering, gaps, shadow, pending tickers."""
        was_synced = sb.main.phase in HAS_BOOK
        self._main_diff(sb, ev, out)
        shadow = sb.shadow
        if shadow is not None:
            if not was_synced or sb.main.phase not in HAS_BOOK:
                self._abandon(sb, ev, "main book lost sync", out)
            else:
                self._shadow_diff(sb, ev, out)
        if sb.main.phase in HAS_BOOK:
            v = self._verify_ns
            if (
                v is not None
                and sb.shadow is None
                and sb.last_verify_ns is not None
                and ev.recv_ns - sb.last_verify_ns >= v
            ):
                self._start_verify(sb, ev, "periodic", out)
        elif sb.requested_ns is not None and ev.recv_ns - sb.requested_ns >= self._retry_ns:
            self._request_sync(sb, ev, "no snapshot came: asking again", out)

    def _main_diff(self, sb: SymbolBook, ev: DepthDiff, out: list[Any], at: Any = None) -> None:
        """Feed one diff to the main book.  Outputs are stamped with ``at`` (the event being
        stepped: a snapshot when its buffer is replayed), defaulting to the diff itself."""
        at = ev if at is None else at
        main = sb.main
        book_id = main.book.last_id if main.book is not None else -1
        action, dropped = feed_diff(self._rule, main, ev, self.max_buffer)
        c = sb.counts
        if action == A_APPLY:
            if main.phase in HAS_BOOK:
                c.diffs_applied += 1
                self._after_update(sb, at, out)
            else:  # applied, then the exchange checksum rejected the book
                self._gap(sb, ev, at, book_id, "checksum mismatch", out)
        elif action == A_DROP:
            c.stale_diffs += 1
        elif action == A_REQUEST:
            self._request_sync(sb, at, "first diff: need a snapshot", out)
        elif action == A_REFETCH:
            c.snapshots_too_old += 1
            reason = f"snapshot {book_id} older than diff U={ev.first_id}"
            if at is ev:
                # a live diff: the snapshot's book was already published (BookSynced), so
                # for its consumers this is a gap and the next sync a resync
                self._gap(sb, ev, at, book_id, reason, out)
            else:  # replaying the buffer inside the snapshot's step: Binance's "fetch again"
                self._request_sync(sb, at, reason, out)
        elif action == A_RESYNC:
            self._gap(sb, ev, at, book_id, "diff does not chain onto the book", out)
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
        sb.resync = True
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
        if main.phase == SYNCED:
            self._verify_snapshot(sb, ev, out)
            return out
        if sb.shadow is not None:
            self._abandon(sb, ev, "main book reloaded", out)
        action, replay = feed_snapshot(self._rule, main, ev)
        if action != A_LOAD:  # pragma: no cover - the table maps every non-synced phase to LOAD
            return out
        sb.requested_ns = None
        sb.overflowing = False
        sb.crossed = False
        sb.last_verify_ns = ev.recv_ns
        k = len(out)
        self._after_update(sb, ev, out)
        for d in replay:
            if main.phase in HAS_BOOK:
                self._main_diff(sb, d, out, ev)
            else:  # a gap/refetch during the replay: the rest goes back to the buffer
                feed_diff(self._rule, main, d, self.max_buffer)
        book = main.book
        if book is None:  # the snapshot was older than the buffered stream: asked again
            return out
        c = sb.counts
        c.syncs += 1
        if sb.resync:
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
                sb.resync,
            ),
        )
        sb.resync = False
        return out

    # ----------------------------------------------------------- verification (shadow book)

    def _start_verify(self, sb: SymbolBook, ev: Any, reason: str, out: list[Any]) -> None:
        sb.last_verify_ns = ev.recv_ns
        sb.shadow = Sync(phase=BUFFERING)
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
        if shadow is None or shadow.phase in HAS_BOOK:
            # unrequested (or a second answer): verify from here with an empty buffer
            shadow = sb.shadow = Sync(phase=BUFFERING)
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
            if act in (A_REFETCH, A_RESYNC):
                self._abandon(sb, ev, f"verification snapshot {ev.last_id} does not chain", out)
                return
        self._maybe_compare(sb, ev, out)

    def _shadow_diff(self, sb: SymbolBook, ev: DepthDiff, out: list[Any]) -> None:
        shadow = sb.shadow
        assert shadow is not None
        if shadow.phase not in HAS_BOOK and ev.recv_ns - sb.shadow_since_ns >= self._vtimeout_ns:
            self._abandon(sb, ev, "no verification snapshot came", out)
            return
        act, dropped = feed_diff(self._rule, shadow, ev, self.max_buffer)
        if act in (A_REFETCH, A_RESYNC):
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
        sb.main = Sync(phase=shadow.phase, book=theirs)
        sb.crossed = False
        self._after_update(sb, ev, out)

    # ----------------------------------------------------------- bookTicker cross-check

    def _ticker(self, state: BookState, ev: BookTicker) -> Sequence[Any]:
        sb = self._symbol(state, ev.symbol)
        sb.counts.tickers_seen += 1
        book = sb.main.book if sb.main.phase in HAS_BOOK else None
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
