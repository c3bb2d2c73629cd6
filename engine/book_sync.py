"""The order book's sync state machine, as data: one table, one driver, the chain rules.

Every state-machine concern of book syncing lives in this file (h11
``_state.py`` style).  :mod:`engine.book_reducer` turns the *actions* this
module returns into outputs and counts; this module emits nothing, reads no
clock and does no I/O.

States (``Sync.phase``)::

    IDLE ──diff──▶ BUFFERING ──snapshot──▶ PRIMED ──chaining diff──▶ SYNCED
                       ▲                     │ gap: snapshot too old    │ gap / bad checksum
                       └─────── refetch ─────┘                          ▼
                                PRIMED ◀────────── snapshot ───────── RESYNCING

* IDLE: nothing known; the first diff asks for a snapshot (REQUEST) and is buffered.
* BUFFERING / RESYNCING: a snapshot is wanted; diffs are buffered (bounded,
  oldest dropped first: a snapshot that arrives later is newer than them
  anyway).  RESYNCING differs only in how we got here (a gap), for counts.
* PRIMED: the book is a snapshot and no diff has chained onto it yet, so the
  rule's *first-diff* test applies.  A gap here means the snapshot is older
  than the stream ("fetch again" in Binance's procedure), not a lost update.
* SYNCED: live diffs chain by the rule's *next-diff* test.

Invariants:

* ``book`` is not None exactly in PRIMED and SYNCED, and only then may the
  book be published; ``buffer`` is empty in PRIMED and SYNCED.
* Diffs in the buffer keep their arrival order; LOAD replays them through the
  same table, so a snapshot plus buffer ends in the same state as a snapshot
  followed by the same diffs live.
* Every transition is in :data:`TABLE`; an (phase, input) pair missing from
  it is a bug here, not bad exchange input (exchange input always maps to
  one of the inputs below).

Rules (one per :class:`engine.codecs.base.SyncRule` constant) classify a diff
against the book's update id as STALE (drop), APPLY or GAP.  Binance spot and
USD-M differ exactly on the first diff: futures applies a first diff whose
``u`` equals the snapshot's ``lastUpdateId`` (AKROUSDT in the real capture),
spot drops it.  Other exchanges implement :class:`ChainRule`: sequence
numbers (OKX ``prevSeqId``/``seqId``, Coinbase ``sequence_num``) fit
``first``/``next``; in-stream snapshots that reset the book (Bybit, OKX,
Kraken) set ``stream_snapshot_resets``; checksums (Kraken, OKX) implement
``checksum_ok``.
"""

from __future__ import annotations

from typing import Final

import attrs

from engine import serde
from engine.book import Book
from engine.codecs.base import SyncRule
from engine.events import BookSnapshot, DepthDiff

__all__ = [
    "IDLE",
    "BUFFERING",
    "RESYNCING",
    "PRIMED",
    "SYNCED",
    "DIFF",
    "STALE",
    "APPLY",
    "GAP",
    "BAD_CHECKSUM",
    "SNAPSHOT",
    "RESET",
    "TABLE",
    "ChainRule",
    "BinanceSpotRule",
    "BinanceFuturesRule",
    "RULES",
    "rule_for",
    "Sync",
    "feed_diff",
    "feed_snapshot",
]

# ---------------------------------------------------------------- states
IDLE: Final = "idle"
BUFFERING: Final = "buffering"
RESYNCING: Final = "resyncing"
PRIMED: Final = "primed"
SYNCED: Final = "synced"

# ---------------------------------------------------------------- inputs
DIFF: Final = "diff"  # a diff while there is no book (not classified)
STALE: Final = "stale"  # rule: already covered by the book
APPLY: Final = "apply"  # rule: chains onto the book
GAP: Final = "gap"  # rule: updates are missing between the book and this diff
BAD_CHECKSUM: Final = "bad_checksum"  # rule: the book after applying fails the exchange checksum
SNAPSHOT: Final = "snapshot"  # a REST snapshot (or an in-stream one that does not reset)
RESET: Final = "reset"  # an in-stream snapshot that replaces the book (Bybit/OKX/Kraken)

# ---------------------------------------------------------------- actions (what the caller must do)
A_REQUEST: Final = "request"  # ask for a snapshot (purpose "sync"), buffer the diff
A_BUFFER: Final = "buffer"
A_LOAD: Final = "load"  # book := snapshot, then replay the buffer
A_DROP: Final = "drop"  # stale diff
A_APPLY: Final = "apply"
A_REFETCH: Final = "refetch"  # snapshot older than the stream: ask again, buffer the diff
A_RESYNC: Final = "resync"  # lost updates: report a gap, ask for a snapshot, buffer the diff
A_VERIFY: Final = "verify"  # a snapshot for a synced book: the caller runs the drift check

#: phase → input → (next phase, action).  The whole state machine.
TABLE: Final[dict[str, dict[str, tuple[str, str]]]] = {
    IDLE: {
        DIFF: (BUFFERING, A_REQUEST),
        SNAPSHOT: (PRIMED, A_LOAD),
        RESET: (PRIMED, A_LOAD),
    },
    BUFFERING: {
        DIFF: (BUFFERING, A_BUFFER),
        SNAPSHOT: (PRIMED, A_LOAD),
        RESET: (PRIMED, A_LOAD),
    },
    RESYNCING: {
        DIFF: (RESYNCING, A_BUFFER),
        SNAPSHOT: (PRIMED, A_LOAD),
        RESET: (PRIMED, A_LOAD),
    },
    PRIMED: {
        STALE: (PRIMED, A_DROP),
        APPLY: (SYNCED, A_APPLY),
        GAP: (BUFFERING, A_REFETCH),
        BAD_CHECKSUM: (RESYNCING, A_RESYNC),
        # a second snapshot before any diff chained (a repeated request's answer): take it
        SNAPSHOT: (PRIMED, A_LOAD),
        RESET: (PRIMED, A_LOAD),
    },
    SYNCED: {
        STALE: (SYNCED, A_DROP),
        APPLY: (SYNCED, A_APPLY),
        GAP: (RESYNCING, A_RESYNC),
        BAD_CHECKSUM: (RESYNCING, A_RESYNC),
        SNAPSHOT: (SYNCED, A_VERIFY),
        RESET: (PRIMED, A_LOAD),
    },
}

HAS_BOOK: Final = frozenset({PRIMED, SYNCED})


# ---------------------------------------------------------------- rules


class ChainRule:
    """How diffs chain onto a book: the interface every exchange's sync rule implements.

    ``first(book_id, diff)`` judges the first diff after a snapshot,
    ``next(book_id, diff)`` every later one; both return STALE, APPLY or GAP
    and must never raise (bad exchange input is a GAP or STALE, never an
    exception).  Rules are stateless: all state is in :class:`Sync`.
    """

    name: str = "abstract"
    #: An in-stream snapshot (``origin == "stream"``) replaces the book (Bybit, OKX, Kraken).
    stream_snapshot_resets: bool = False
    #: Whether :meth:`checksum_ok` means anything (Kraken, OKX); the reducer skips it otherwise.
    has_checksum: bool = False

    def first(self, book_id: int, diff: DepthDiff) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def next(self, book_id: int, diff: DepthDiff) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def checksum_ok(self, book: Book, diff: DepthDiff) -> bool:
        """After applying ``diff``: does the book match the exchange's checksum?"""
        return True


class BinanceSpotRule(ChainRule):
    """Binance spot: drop ``u ≤ id``; apply if ``U ≤ id+1`` (then ``U ≤ id+1 ≤ u``); else gap.

    The same test serves the first diff (id = ``lastUpdateId``) and the later
    ones (overlapping diffs are fine: levels are absolute).  A first diff with
    ``u == lastUpdateId`` is dropped (it is already in the snapshot).
    """

    name = SyncRule.BINANCE_SPOT

    def first(self, book_id: int, diff: DepthDiff) -> str:
        if diff.last_id <= book_id:
            return STALE
        return APPLY if diff.first_id <= book_id + 1 else GAP

    next = first


class BinanceFuturesRule(ChainRule):
    """Binance USD-M: first diff drops ``u < lid``, applies ``U ≤ lid ≤ u``; then ``pu == prev u``.

    Unlike spot, a first diff with ``u == lastUpdateId`` is *applied* (the
    snapshot and that event end at the same id and futures' ``pu`` chain
    continues from it).  After the first, only ``pu`` decides: ``pu`` equal
    to the book's id chains; otherwise an event at or below the book's id is
    a duplicate (stale) and anything else is a gap.  A missing ``pu`` (a
    malformed frame the codec still passed on) is a gap, never a guess.
    """

    name = SyncRule.BINANCE_FUTURES

    def first(self, book_id: int, diff: DepthDiff) -> str:
        if diff.last_id < book_id:
            return STALE
        return APPLY if diff.first_id <= book_id else GAP

    def next(self, book_id: int, diff: DepthDiff) -> str:
        if diff.prev_id == book_id:
            return APPLY
        return STALE if diff.last_id <= book_id else GAP


RULES: Final[dict[str, ChainRule]] = {
    SyncRule.BINANCE_SPOT: BinanceSpotRule(),
    SyncRule.BINANCE_FUTURES: BinanceFuturesRule(),
}


def rule_for(name: str) -> ChainRule:
    """The rule for a :class:`SyncRule` constant.

    Raises:
        ValueError: unknown rule name (our misuse: pass a SyncRule constant).
    """
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"unknown sync rule {name!r}; use one of {sorted(RULES)}") from None


# ---------------------------------------------------------------- the driver


@serde.register
@attrs.define(slots=True, eq=True)
class Sync:
    """One book's sync state: phase, the book (PRIMED/SYNCED only) and the diff buffer."""

    phase: str = IDLE
    book: Book | None = None
    buffer: list[DepthDiff] = attrs.Factory(list)


def classify(rule: ChainRule, sync: Sync, diff: DepthDiff) -> str:
    """The table input a diff is for ``sync`` in its current phase."""
    book = sync.book
    if book is None:
        return DIFF
    if sync.phase == SYNCED:
        return rule.next(book.last_id, diff)
    return rule.first(book.last_id, diff)


def feed_diff(rule: ChainRule, sync: Sync, diff: DepthDiff, limit: int) -> tuple[str, int]:
    """Run one diff through the table; returns ``(action, dropped)``.

    ``dropped`` is how many old diffs the bounded buffer let go (0 or 1).
    BAD_CHECKSUM is handled here: after an APPLY the rule may reject the book.
    """
    phase = sync.phase
    inp = classify(rule, sync, diff)
    phase2, action = TABLE[phase][inp]
    dropped = 0
    if action == A_APPLY:
        book = sync.book
        assert book is not None
        book.apply(diff.bids, diff.asks, diff.last_id)
        if rule.has_checksum and not rule.checksum_ok(book, diff):
            phase2, action = TABLE[phase2][BAD_CHECKSUM]
            sync.book = None
            # the diff is part of the bad book; the next snapshot starts after it
    elif action in (A_REQUEST, A_BUFFER, A_REFETCH, A_RESYNC):
        if action in (A_REFETCH, A_RESYNC):
            sync.book = None
        buf = sync.buffer
        buf.append(diff)
        if len(buf) > limit:
            del buf[0]
            dropped = 1
    sync.phase = phase2
    return action, dropped


def feed_snapshot(rule: ChainRule, sync: Sync, snap: BookSnapshot) -> tuple[str, list[DepthDiff]]:
    """Run a snapshot through the table.

    Returns ``(action, replay)``: on A_LOAD the book is the snapshot and
    ``replay`` holds the buffered diffs, which the caller must now feed back
    through :func:`feed_diff` in order (with whatever it does per diff, e.g.
    bookTicker checks at each intermediate id).  On A_VERIFY (a synced book)
    nothing changed: the caller runs the drift check.
    """
    inp = RESET if (snap.origin == "stream" and rule.stream_snapshot_resets) else SNAPSHOT
    phase2, action = TABLE[sync.phase][inp]
    if action != A_LOAD:
        return action, []
    sync.phase = phase2
    sync.book = Book.from_levels(snap.last_id, snap.bids, snap.asks)
    replay, sync.buffer = sync.buffer, []
    return action, replay
