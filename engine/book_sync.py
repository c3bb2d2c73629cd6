"""The order book's sync state machine, as data: one table, one driver, the chain rules.

Every state-machine concern of book syncing lives in this file (h11
``_state.py`` style).  :mod:`engine.book_reducer` turns the *actions* this
module returns into outputs and counts; this module emits nothing, reads no
clock and does no I/O.  Every change of ``Sync.phase`` is a lookup in
:data:`TABLE` made by the driver functions at the bottom (``feed_diff``,
``feed_snapshot``, ``feed_replayed``, ``ask``, ``adopt``, ``feed_break``,
``feed_close``); nothing else assigns a phase.

States (``Sync.phase``)::

                    snapshot              replayed
    IDLE ─diff─▶ BUFFERING ─────▶ LOADED ────────▶ PRIMED ──chaining diff──▶ SYNCED ─┐ snapshot: verify
      └───ask───────▲  ▲ gap: refetch │               │ gap: retract          │     │ drift: adopt
                       └──────────────┘               ▼                       │ ◀───┘
                            RELOADED ◀──snapshot── RESYNCING ◀────────────────┘ gap / bad checksum
                      replayed ─▶ PRIMED, gap: refetch ─▶ RESYNCING

  A snapshot also loads from IDLE (none asked for), from PRIMED (a second
  answer) and, if the rule's in-stream snapshots reset the book, from SYNCED.
  The feeding connection's close (``feed_close``)::

    SYNCED ─close_keep─▶ SUSPENDED ─chaining diff─▶ SYNCED        (Binance: the chain proves it)
                             │ gap ─▶ RESYNCING, snapshot ─▶ RELOADED
    PRIMED / SYNCED ─close─▶ RESYNCING                             (the resubscription's snapshot)
    PRIMED ─close_keep─▶ RESYNCING
  A diff that chains while LOADED/RELOADED goes to SYNCED within the same step.

* IDLE: nothing known; the first diff asks for a snapshot (REQUEST) and is buffered.
  ``ask`` puts a fresh Sync into BUFFERING without a diff: a verification's
  shadow book, whose snapshot the reducer has already requested.
* BUFFERING / RESYNCING: a snapshot is wanted; diffs are buffered (bounded,
  oldest dropped first: a snapshot that arrives later is newer than them
  anyway).  RESYNCING means a book had been published and was lost (a gap or
  a checksum failure): the sync its snapshot brings is a *resync*.
* LOADED / RELOADED: the snapshot is the book and the buffered diffs are
  being replayed onto it; transient, inside one snapshot's step (never seen
  between events, never in a checkpoint).  Nothing has been published yet,
  so a gap here is Binance's "snapshot too old, fetch again" (REFETCH), not a
  lost update.  RELOADED is the same for a snapshot that ends a RESYNCING
  wait.  ``feed_replayed`` ends the step: PUBLISH, or WAIT if the replay
  asked again.
* PRIMED: the book is a snapshot and no diff has chained onto it yet, so the
  rule's *first-diff* test applies.  A gap here means the snapshot is older
  than the stream (as in LOADED), but the book was published, so it is
  RETRACTed: reported as a gap, and the next sync is a resync.
* SYNCED: at least one live diff has chained, so the stream is known to
  continue from the book; diffs chain by the rule's *next-diff* test.
* SUSPENDED: the connection that fed a SYNCED book closed, under a rule whose
  update ids run across connections (``resumes_after_close``: Binance).  The
  book is kept but not published: nothing proves it current.  The first diff
  of the next connection is judged by the *next-diff* test: if it chains,
  nothing was lost and the book is published again (RESUME, no snapshot
  fetched); a gap is a resync as from SYNCED; a snapshot reloads it.

A closed connection (issue 14: "the book is never published between the
break and the new snapshot").  When the connection a published book follows
closes (the reducer knows which: :mod:`engine.book_reducer`), the book comes
off the air in the same step.  For a rule with ``resumes_after_close``
(Binance spot and USD-M) a SYNCED book is SUSPENDED (input CLOSE_KEEP), not
dropped: Binance's update ids are the symbol's, not the connection's, so the
new connection's first diff proves (or disproves) continuity with the same
test as every other diff, and a reconnect costs no REST snapshot (weight 50
per symbol at depth 5000 on spot, of 6000 a minute per IP: a shard of a few
hundred symbols reconnecting would exhaust it and risk a ban), while a diff
that does not chain costs exactly one, as any gap.  A PRIMED book is lost
instead (its first-diff test is not the next-diff test on USD-M, and a close
inside that one diff interval is rare).  Every other rule's venue answers a
new subscription with its own snapshot (Kraken, OKX, Bybit, Coinbase:
``Resubscribe``), which replaces the book anyway, so the book is lost at the
close (input CLOSE: RESYNCING, LOSE) and that snapshot rebuilds it.

Publishing a PRIMED book (decided here, see issue 11): a PRIMED book *is*
published (:data:`PUBLISHED`: ``BookReducer.book`` returns it, BookSynced
announces it, the crossed and bookTicker checks run on it).  Binance's REST
snapshot is the exchange's own book at ``lastUpdateId``, exactly right at
that id; what is not yet known is only whether the stream carries on from
it.  Withholding it would hide a correct book from consumers for up to one
diff interval after every (re)sync, and would change the fold's outputs.
What a PRIMED book must not be is *reported* as synced: every report of the
state (``BookReducer.sync_state``, replay summaries, ``engine book``, export,
dashboard) says ``primed`` until a diff chains onto it.  If the first diff
reveals the snapshot was too old, the RETRACT is a GapDetected, which tells
consumers to drop what they saw.

Drift (see :mod:`engine.book_reducer`): when a verification finds our book
wrong, ADOPT replaces the book by the verified shadow's (same update id) and
keeps the phase: the stream position was right, only the levels were not.

Invariants:

* ``book`` is not None exactly in :data:`HAS_BOOK` (LOADED, RELOADED, PRIMED,
  SYNCED, SUSPENDED), and only PRIMED and SYNCED books may be published; ``buffer`` is
  empty whenever there is a book.
* A book whose connection closed is not published until a diff of a live
  connection chains onto it (SUSPENDED → SYNCED) or a snapshot reloads it.
* Between two events a Sync is IDLE, BUFFERING, RESYNCING, PRIMED, SYNCED or SUSPENDED
  (:data:`STEADY_PHASES`): every snapshot step ends with ``feed_replayed``.
* Diffs in the buffer keep their arrival order; the replay after a LOAD goes
  through the same table, so a snapshot plus buffer ends in the same state as
  a snapshot followed by the same diffs live.
* A RESET under a rule with ``reset_drops_buffer`` (Bybit) replays nothing:
  such a snapshot comes on the connection after every diff buffered before
  it and is the book after them, so the buffer is dropped unjudged.  (Judged
  against a snapshot whose ids restarted, ``u = 1`` after a Bybit service
  restart, an old buffered diff would look like a gap after every snapshot.)
* A resetting stream snapshot at exactly a SYNCED book's update id, under a
  rule with ``same_id_snapshot_verifies`` (Bybit: the exchange's own book at
  our id, e.g. on a second connection), is the input SNAPSHOT, not RESET: the
  reducer verifies our book against it (drift), instead of silently
  replacing it.  At any other id it resets as usual.
* A rule with a checksum (``has_checksum``) has judged every book it leaves
  in a phase with a book: after each applied diff and after loading a
  snapshot, a book that fails the exchange's checksum goes (BAD_CHECKSUM,
  A_REJECT) before anyone can read it.
* Every transition is in :data:`TABLE`; a (phase, input) pair missing from
  it is a bug here, not bad exchange input (exchange input always maps to
  one of the inputs below).  The reducer may inline the steady case
  (:data:`INLINE`: SYNCED, APPLY) only while the table says it stays SYNCED
  with A_APPLY; under a rule with a checksum or truncation it applies the diff
  with :func:`apply_checked` (the driver's own apply, truncation and verify)
  and hands anything but APPLY to :func:`feed_judged`; ``tests/test_book_sync.py``
  checks the inlined path against the table for every case.

A *break* (:func:`feed_break`) is a GAP that no diff reveals: the venue numbers
every message of a connection (Coinbase Advanced Trade ``sequence_num``) and
one went missing, so each published book of that connection goes through the
table's GAP transition as if a diff had not chained (nothing is buffered: no
diff caused it); a book without a published state is left as it is.

Rules (one per :class:`engine.codecs.base.SyncRule` constant) classify a diff
against the book's update id as STALE (drop), APPLY or GAP.  Binance spot and
USD-M differ exactly on the first diff: futures applies a first diff whose
``u`` equals the snapshot's ``lastUpdateId`` (AKROUSDT in the real capture),
spot drops it.  Other exchanges implement :class:`ChainRule`: sequence
numbers (OKX ``prevSeqId``/``seqId``, Coinbase ``sequence_num``) fit
``first``/``next``; in-stream snapshots that reset the book (Bybit, OKX,
Kraken) set ``stream_snapshot_resets``; checksums (Kraken, OKX) implement
:meth:`ChainRule.verify`.  Rules are frozen slotted attrs classes whose flags
are fields with the rule's defaults (a flag is read on every diff, and CPython
3.11 specializes a slot read, not a class attribute read through an instance).

Depth truncation (a rule with ``truncates``: Kraken).  The exchange keeps
only the subscribed depth and sends no removal for a level an insert pushes
out of it, so the driver keeps the snapshot's ``depth`` (``Sync.depth``): after
a LOAD and after every applied diff, and *before* the checksum is tested, each
side of the book holds at most ``Sync.depth`` levels (the worst ones go).
``Sync.price_decimals``/``qty_decimals`` are the snapshot's too: the precision
a checksum renders the book's ints at, kept with the book so replay from any
checkpoint verifies exactly as live did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Final

import attrs

from engine import serde
from engine.book import Book
from engine.codecs.base import SyncRule
from engine.codecs.kraken_book import matches as kraken_matches
from engine.codecs.okx_checksum import matches as okx_matches
from engine.events import BookSnapshot, DepthDiff

__all__ = [
    "IDLE",
    "BUFFERING",
    "RESYNCING",
    "LOADED",
    "RELOADED",
    "PRIMED",
    "SYNCED",
    "SUSPENDED",
    "DIFF",
    "STALE",
    "APPLY",
    "GAP",
    "BAD_CHECKSUM",
    "SNAPSHOT",
    "RESET",
    "REPLAYED",
    "ASK",
    "ADOPT",
    "CLOSE",
    "CLOSE_KEEP",
    "TABLE",
    "HAS_BOOK",
    "PUBLISHED",
    "STEADY_PHASES",
    "LOSES_BOOK",
    "INLINE",
    "ChainRule",
    "BinanceSpotRule",
    "BinanceFuturesRule",
    "KrakenRule",
    "BybitRule",
    "BybitLegacyRule",
    "OkxRule",
    "CoinbaseRule",
    "RULES",
    "rule_for",
    "Sync",
    "classify",
    "apply_checked",
    "feed_judged",
    "feed_diff",
    "feed_snapshot",
    "feed_replayed",
    "ask",
    "adopt",
    "feed_break",
    "feed_close",
]

# ---------------------------------------------------------------- states
IDLE: Final = "idle"
BUFFERING: Final = "buffering"
RESYNCING: Final = "resyncing"
LOADED: Final = "loaded"  # transient: inside a snapshot's step
RELOADED: Final = "reloaded"  # transient: inside a snapshot's step, ending a RESYNCING wait
PRIMED: Final = "primed"
SYNCED: Final = "synced"
SUSPENDED: Final = "suspended"  # its connection closed: kept, not published, until a diff chains

# ---------------------------------------------------------------- inputs
DIFF: Final = "diff"  # a diff while there is no book (not classified)
STALE: Final = "stale"  # rule: already covered by the book
APPLY: Final = "apply"  # rule: chains onto the book
GAP: Final = "gap"  # rule: updates are missing between the book and this diff
BAD_CHECKSUM: Final = "bad_checksum"  # rule: the book after applying fails the exchange checksum
SNAPSHOT: Final = "snapshot"  # a REST snapshot (or an in-stream one that does not reset)
RESET: Final = "reset"  # an in-stream snapshot that replaces the book (Bybit/OKX/Kraken)
REPLAYED: Final = "replayed"  # the buffered diffs have been replayed after a LOAD
ASK: Final = "ask"  # a snapshot was asked for before any diff (a verification's shadow)
ADOPT: Final = "adopt"  # verification found drift: the verified shadow book replaces ours
CLOSE: Final = "close"  # the feeding connection closed; the next one's snapshot rebuilds the book
CLOSE_KEEP: Final = "close_keep"  # ... under a rule whose ids chain across connections

# ---------------------------------------------------------------- actions (what the caller must do)
A_REQUEST: Final = "request"  # ask for a snapshot (purpose "sync"), buffer the diff
A_BUFFER: Final = "buffer"
A_LOAD: Final = "load"  # book := snapshot; replay the buffer, then feed_replayed
A_DROP: Final = "drop"  # stale diff
A_APPLY: Final = "apply"
A_REFETCH: Final = "refetch"  # unpublished snapshot older than the stream: ask again, buffer
A_RETRACT: Final = "retract"  # published (PRIMED) snapshot older than the stream: report a gap,
#                               ask again, buffer the diff
A_RESYNC: Final = "resync"  # lost updates: report a gap, ask for a snapshot, buffer the diff
A_REJECT: Final = "reject"  # checksum failed after applying: report a gap, ask (the diff is
#                             part of the bad book, so it is not buffered)
A_VERIFY: Final = "verify"  # a snapshot for a synced book: the caller runs the drift check
A_PUBLISH: Final = "publish"  # the loaded book is valid from now on (BookSynced)
A_WAIT: Final = "wait"  # nothing to do: a snapshot is (still) wanted
A_ADOPT: Final = "adopt"  # the book is now the shadow's (DriftDetected)
A_SUSPEND: Final = "suspend"  # the book is kept but not published (BookWithdrawn, kept)
A_LOSE: Final = "lose"  # the book is dropped until a snapshot (BookWithdrawn, not kept)
A_RESUME: Final = "resume"  # apply: the diff chains onto a suspended book, published again

#: phase → input → (next phase, action).  The whole state machine.
TABLE: Final[dict[str, dict[str, tuple[str, str]]]] = {
    IDLE: {
        DIFF: (BUFFERING, A_REQUEST),
        SNAPSHOT: (LOADED, A_LOAD),
        RESET: (LOADED, A_LOAD),
        ASK: (BUFFERING, A_WAIT),
    },
    BUFFERING: {
        DIFF: (BUFFERING, A_BUFFER),
        SNAPSHOT: (LOADED, A_LOAD),
        RESET: (LOADED, A_LOAD),
        REPLAYED: (BUFFERING, A_WAIT),  # the replay found the snapshot too old
    },
    RESYNCING: {
        DIFF: (RESYNCING, A_BUFFER),
        SNAPSHOT: (RELOADED, A_LOAD),
        RESET: (RELOADED, A_LOAD),
        REPLAYED: (RESYNCING, A_WAIT),  # the replay found a gap or the snapshot too old
    },
    LOADED: {
        STALE: (LOADED, A_DROP),
        APPLY: (SYNCED, A_APPLY),
        GAP: (BUFFERING, A_REFETCH),
        BAD_CHECKSUM: (RESYNCING, A_REJECT),
        REPLAYED: (PRIMED, A_PUBLISH),
    },
    RELOADED: {
        STALE: (RELOADED, A_DROP),
        APPLY: (SYNCED, A_APPLY),
        GAP: (RESYNCING, A_REFETCH),
        BAD_CHECKSUM: (RESYNCING, A_REJECT),
        REPLAYED: (PRIMED, A_PUBLISH),
    },
    PRIMED: {
        STALE: (PRIMED, A_DROP),
        APPLY: (SYNCED, A_APPLY),
        GAP: (RESYNCING, A_RETRACT),
        BAD_CHECKSUM: (RESYNCING, A_REJECT),
        # a second snapshot before any diff chained (a repeated request's answer): take it
        SNAPSHOT: (LOADED, A_LOAD),
        RESET: (LOADED, A_LOAD),
        ADOPT: (PRIMED, A_ADOPT),
        CLOSE: (RESYNCING, A_LOSE),
        CLOSE_KEEP: (RESYNCING, A_LOSE),  # first-diff test ≠ next-diff test (USD-M): refetch
    },
    SYNCED: {
        STALE: (SYNCED, A_DROP),
        APPLY: (SYNCED, A_APPLY),
        GAP: (RESYNCING, A_RESYNC),
        BAD_CHECKSUM: (RESYNCING, A_REJECT),
        SNAPSHOT: (SYNCED, A_VERIFY),
        RESET: (LOADED, A_LOAD),
        REPLAYED: (SYNCED, A_PUBLISH),  # a buffered diff chained during the replay
        ADOPT: (SYNCED, A_ADOPT),
        CLOSE: (RESYNCING, A_LOSE),
        CLOSE_KEEP: (SUSPENDED, A_SUSPEND),
    },
    SUSPENDED: {
        STALE: (SUSPENDED, A_DROP),
        APPLY: (SYNCED, A_RESUME),  # the new connection continues the book: nothing was lost
        GAP: (RESYNCING, A_RESYNC),
        BAD_CHECKSUM: (RESYNCING, A_REJECT),
        SNAPSHOT: (RELOADED, A_LOAD),
        RESET: (RELOADED, A_LOAD),
    },
}

#: phases whose Sync holds a book
HAS_BOOK: Final = frozenset({LOADED, RELOADED, PRIMED, SYNCED, SUSPENDED})
#: phases whose book may be published (read by consumers)
PUBLISHED: Final = frozenset({PRIMED, SYNCED})
#: the phases a Sync can be in between two events (what a sync state report shows)
STEADY_PHASES: Final = (IDLE, BUFFERING, PRIMED, SYNCED, RESYNCING, SUSPENDED)
#: actions after which the Sync holds no book any more
LOSES_BOOK: Final = frozenset({A_REFETCH, A_RETRACT, A_RESYNC, A_REJECT, A_LOSE})
#: actions that apply the diff to the book
_APPLIES: Final = frozenset({A_APPLY, A_RESUME})
#: actions that put the diff into the buffer
_BUFFERS: Final = frozenset({A_REQUEST, A_BUFFER, A_REFETCH, A_RETRACT, A_RESYNC})
#: the (phase, input) case a reducer may inline: it must map to (phase, A_APPLY)
INLINE: Final = (SYNCED, APPLY)


# ---------------------------------------------------------------- rules

#: one side of the levels a diff's apply set (a book checksum's hint), None after a snapshot load
Hint = Sequence[tuple[int, int]] | None


@attrs.frozen
class ChainRule:
    """How diffs chain onto a book: the interface every exchange's sync rule implements.

    ``first(book_id, diff)`` judges the first diff after a snapshot,
    ``next(book_id, diff)`` every later one; both return STALE, APPLY or GAP
    and must never raise (bad exchange input is a GAP or STALE, never an
    exception).  Rules are stateless: all state is in :class:`Sync`.  A rule
    is a frozen attrs class; a subclass sets its flags by redeclaring the
    fields with its own defaults (``has_checksum: bool = True``), and is
    itself decorated ``@attrs.frozen``.
    """

    name: ClassVar[str] = "abstract"
    #: An in-stream snapshot (``origin == "stream"``) replaces the book (Bybit, OKX, Kraken).
    stream_snapshot_resets: bool = False
    #: Whether :meth:`verify` means anything (Kraken, OKX); the driver skips it otherwise.
    has_checksum: bool = False
    #: Keep the book at the snapshot's depth after every message (Kraken; module docstring).
    truncates: bool = False
    #: A RESET drops the diff buffer instead of replaying it (Bybit; see the module invariants).
    reset_drops_buffer: bool = False
    #: A resetting snapshot at a SYNCED book's own id verifies it (Bybit; module invariants).
    same_id_snapshot_verifies: bool = False
    #: Update ids run across connections, so a closed connection's book is SUSPENDED and
    #: the next connection's first chaining diff publishes it again (Binance; module docstring).
    resumes_after_close: bool = False

    def first(self, book_id: int, diff: DepthDiff) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def next(self, book_id: int, diff: DepthDiff) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def verify(self, sync: Sync, msg: DepthDiff | BookSnapshot, bids: Hint, asks: Hint) -> bool:
        """The rule's checksum test after the diff ``msg`` was applied to ``sync.book`` (or
        the snapshot ``msg`` loaded, when it carries a checksum): does the book match it?

        ``bids, asks``: the levels the diff's apply set (``msg.bids, msg.asks``), the hint a
        book checksum reads only those again by; None after a snapshot was loaded.  Called
        only for a rule with ``has_checksum``; it reads ``sync`` (the book, and what the
        snapshot told: Kraken's precision) and changes nothing.
        """
        return True


@attrs.frozen
class BinanceSpotRule(ChainRule):
    """Binance spot: drop ``u ≤ id``; apply if ``U ≤ id+1`` (then ``U ≤ id+1 ≤ u``); else gap.

    The same test serves the first diff (id = ``lastUpdateId``) and the later
    ones (overlapping diffs are fine: levels are absolute).  A first diff with
    ``u == lastUpdateId`` is dropped (it is already in the snapshot).
    """

    name: ClassVar[str] = SyncRule.BINANCE_SPOT
    resumes_after_close: bool = True

    def first(self, book_id: int, diff: DepthDiff) -> str:
        if diff.last_id <= book_id:
            return STALE
        return APPLY if diff.first_id <= book_id + 1 else GAP

    next = first


@attrs.frozen
class BinanceFuturesRule(ChainRule):
    """Binance USD-M: first diff drops ``u < lid``, applies ``U ≤ lid ≤ u``; then ``pu == prev u``.

    Unlike spot, a first diff with ``u == lastUpdateId`` is *applied* (the
    snapshot and that event end at the same id and futures' ``pu`` chain
    continues from it).  After the first, only ``pu`` decides: ``pu`` equal
    to the book's id chains; otherwise an event at or below the book's id is
    a duplicate (stale) and anything else is a gap.  A missing ``pu`` (a
    malformed frame the codec still passed on) is a gap, never a guess.
    """

    name: ClassVar[str] = SyncRule.BINANCE_FUTURES
    resumes_after_close: bool = True

    def first(self, book_id: int, diff: DepthDiff) -> str:
        if diff.last_id < book_id:
            return STALE
        return APPLY if diff.first_id <= book_id else GAP

    def next(self, book_id: int, diff: DepthDiff) -> str:
        if diff.prev_id == book_id:
            return APPLY
        return STALE if diff.last_id <= book_id else GAP


@attrs.frozen
class KrakenRule(ChainRule):
    """Kraken (v1 and v2): no update ids, a checksum after every book message, a bounded depth.

    The codecs give every book message the journal ``seq`` as its id, so a
    diff newer than the book applies and an older one (buffered before the
    snapshot that covers it) is stale; nothing here can see a lost message:
    the checksum does.  Every book message of the stream carries one (v1:
    updates; v2: snapshots too), tested after the book was truncated to the
    subscribed depth, at the snapshot's precision
    (:func:`engine.codecs.kraken_book.checksum`).  A diff without a checksum
    cannot be tested and passes; a book whose precision is unknown (a
    snapshot without levels) fails as soon as it holds a level.  An in-stream
    snapshot (a resubscription's answer) replaces the book.
    """

    name: ClassVar[str] = SyncRule.KRAKEN
    stream_snapshot_resets: bool = True
    has_checksum: bool = True
    truncates: bool = True

    def first(self, book_id: int, diff: DepthDiff) -> str:
        return APPLY if diff.last_id > book_id else STALE

    next = first

    def verify(self, sync: Sync, msg: DepthDiff | BookSnapshot, bids: Hint, asks: Hint) -> bool:
        # (the engine's hottest rule: it runs after every Kraken book message, so it reads each
        # attribute once and leaves the unknown precision to the checksum's own definition)
        want = msg.checksum
        if want is None:
            return True
        try:
            return kraken_matches(
                want, sync.book, sync.price_decimals, sync.qty_decimals, bids, asks
            )
        except ValueError:  # a level finer than the precision (or at none known): not Kraken's
            return False


@attrs.frozen
class BybitRule(ChainRule):
    """Bybit v5 ``orderbook.N``: an in-stream snapshot resets the book; a delta chains if ``u == id + 1``.

    The codec gives a delta ``first_id == last_id == u``.  ``u ≤ id`` is
    stale (a topic carried by two connections across a rotation; or the
    deltas of an old connection after the new one's snapshot); ``u > id + 1``
    is a gap (a delta was lost: resubscribe for a fresh snapshot).  Every
    snapshot (``u = 1`` after a service restart too, and each message of a
    depth-1 topic) replaces the book through RESET, dropping the buffer
    (``reset_drops_buffer``), except one at exactly a synced book's ``u``,
    which verifies it (``same_id_snapshot_verifies``).
    """

    name: ClassVar[str] = SyncRule.BYBIT
    stream_snapshot_resets: bool = True
    reset_drops_buffer: bool = True
    same_id_snapshot_verifies: bool = True

    def first(self, book_id: int, diff: DepthDiff) -> str:
        u = diff.last_id
        if u <= book_id:
            return STALE
        return APPLY if u == book_id + 1 and diff.first_id == u else GAP

    next = first


@attrs.frozen
class BybitLegacyRule(ChainRule):
    """Bybit's legacy realtime ``orderBookL2_25`` (recordings before v5): ids are ``cross_seq``.

    ``cross_seq`` is the matching engine's sequence across instruments: it
    increases but skips, so a lost delta cannot be told from a normal step.
    Deltas at or below the book's id are stale, every later one applies; an
    in-stream snapshot resets the book.  Books of this protocol are rebuilt,
    never verified (nothing in it could verify them).
    """

    name: ClassVar[str] = SyncRule.BYBIT_LEGACY
    stream_snapshot_resets: bool = True
    reset_drops_buffer: bool = True

    def first(self, book_id: int, diff: DepthDiff) -> str:
        return STALE if diff.last_id <= book_id else APPLY

    next = first


@attrs.frozen
class OkxRule(ChainRule):
    """OKX v5 ``books``: ``prevSeqId`` chains onto the previous ``seqId``; the CRC32 checksum.

    The codec gives ``last_id = seqId`` and ``prev_id = prevSeqId``.  After a
    snapshot (in-stream: prevSeqId -1, it resets the book; or REST, OKX's newer
    procedure): a diff whose ``prevSeqId`` is the book's id chains; else one
    with ``seqId ≤ id`` is dropped and the first applied one must have
    ``prevSeqId ≤ id < seqId``.  Afterwards only ``prevSeqId == id`` chains
    (steps are not 1; a keep-alive update repeats the id, ``prevSeqId ==
    seqId``, and chains too; OKX's maintenance reset, ``seqId < prevSeqId``,
    chains on its ``prevSeqId``); a diff at or below the id is a duplicate
    (another connection's) and anything else a gap.  2022 recordings carry no
    sequence numbers (``prev_id`` None): every diff applies and the checksum
    alone judges the chain.  The checksum (:mod:`engine.codecs.okx_checksum`)
    is verified when OKX sent one (the codec maps OKX's 0, "none", to None).
    """

    name: ClassVar[str] = SyncRule.OKX
    stream_snapshot_resets: bool = True
    has_checksum: bool = True

    def first(self, book_id: int, diff: DepthDiff) -> str:
        prev = diff.prev_id
        if prev is None or prev == book_id:
            return APPLY
        if diff.last_id <= book_id:
            return STALE
        return APPLY if prev <= book_id else GAP

    def next(self, book_id: int, diff: DepthDiff) -> str:
        prev = diff.prev_id
        if prev is None or prev == book_id:
            return APPLY
        return STALE if diff.last_id <= book_id else GAP

    def verify(self, sync: Sync, msg: DepthDiff | BookSnapshot, bids: Hint, asks: Hint) -> bool:
        cs = msg.checksum
        return True if cs is None else okx_matches(cs, sync.book, bids, asks)


@attrs.frozen
class CoinbaseRule(ChainRule):
    """Coinbase (Exchange level2, Advanced Trade l2_data): snapshots in-stream, no chain to check.

    The book comes only from in-stream snapshots (sent on every (re)subscribe),
    which reset it.  Update ids only rise: on the Exchange feed they are the
    journal seq of the frame (level2 has no sequence), on Advanced Trade the
    connection-wide ``sequence_num``.  So a diff whose id is below the book's
    came before the snapshot (STALE: the snapshot already holds it) and any
    other applies; an equal id is a later event of the same message (Advanced
    Trade sends several) or a repeat, and levels are absolute, so applying it
    again is harmless.  There is never a GAP here: the Exchange feed cannot
    show a lost update at all, and Advanced Trade's ``sequence_num`` counts the
    whole connection (every channel and product), so its gaps are judged per
    connection (:class:`engine.sequence_gaps.StreamNumbers`, a break is :func:`feed_break`).
    """

    name: ClassVar[str] = SyncRule.COINBASE
    stream_snapshot_resets: bool = True

    def first(self, book_id: int, diff: DepthDiff) -> str:
        return STALE if diff.last_id < book_id else APPLY

    next = first


RULES: Final[dict[str, ChainRule]] = {
    SyncRule.BINANCE_SPOT: BinanceSpotRule(),
    SyncRule.BINANCE_FUTURES: BinanceFuturesRule(),
    SyncRule.KRAKEN: KrakenRule(),
    SyncRule.BYBIT: BybitRule(),
    SyncRule.BYBIT_LEGACY: BybitLegacyRule(),
    SyncRule.OKX: OkxRule(),
    SyncRule.COINBASE: CoinbaseRule(),
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
    """One book's sync state: phase, the book (:data:`HAS_BOOK` only) and the diff buffer.

    Create it as ``Sync()`` (IDLE); only the driver functions below change
    its phase.
    """

    phase: str = IDLE
    book: Book | None = None
    buffer: list[DepthDiff] = attrs.Factory(list)
    #: the loaded snapshot's depth and precision (what a truncating, checksummed rule needs)
    depth: int | None = None
    price_decimals: int | None = None
    qty_decimals: int | None = None


def _step(sync: Sync, inp: str) -> str:
    """The one place a phase changes: look ``inp`` up in TABLE, move, return the action."""
    sync.phase, action = TABLE[sync.phase][inp]
    return action


def classify(rule: ChainRule, sync: Sync, diff: DepthDiff) -> str:
    """The table input a diff is for ``sync`` in its current phase."""
    book = sync.book
    if book is None:
        return DIFF
    if sync.phase == SYNCED or sync.phase == SUSPENDED:
        return rule.next(book.last_id, diff)
    return rule.first(book.last_id, diff)


def feed_diff(rule: ChainRule, sync: Sync, diff: DepthDiff, limit: int) -> tuple[str, int]:
    """Run one diff through the table; returns ``(action, dropped)``.

    ``dropped`` is how many old diffs the bounded buffer let go (0 or 1).
    BAD_CHECKSUM is decided here: if the table says APPLY, the diff is applied
    and a rule with a checksum may reject the resulting book, which turns the
    input into BAD_CHECKSUM for the same phase.
    """
    inp = classify(rule, sync, diff)
    if TABLE[sync.phase][inp][1] in _APPLIES:
        inp = apply_checked(rule, sync, diff, inp)[0]
    return feed_judged(sync, diff, inp, limit)


def apply_checked(
    rule: ChainRule, sync: Sync, diff: DepthDiff, inp: str = APPLY
) -> tuple[str, bool]:
    """Apply ``diff`` to ``sync.book`` (the table applies it for ``inp``), truncate it to the
    snapshot's depth (a rule with ``truncates``) and test the rule's checksum (``verify``).
    Returns ``(inp, crossed)``: ``inp`` if the book passes, BAD_CHECKSUM if it fails, and
    whether the book is crossed now (what :meth:`Book.apply` answered: the truncation keeps
    each side's best levels, so it changes that only when it keeps none).  The phase is not
    changed: the caller ends the step with :func:`feed_judged` (the reducer's inlined steady
    case skips that when the answer is APPLY from SYNCED, the table's :data:`INLINE` no-op)."""
    book = sync.book
    assert book is not None
    crossed = book.apply(diff.bids, diff.asks, diff.last_id)
    if rule.truncates and sync.depth is not None:
        book.truncate(sync.depth)
        if sync.depth < 1:
            crossed = False
    if rule.has_checksum and not rule.verify(sync, diff, diff.bids, diff.asks):
        return BAD_CHECKSUM, crossed
    return inp, crossed


def feed_judged(sync: Sync, diff: DepthDiff, inp: str, limit: int) -> tuple[str, int]:
    """The table step of a diff already judged ``inp`` (applied by :func:`apply_checked` if
    the table applies it): the phase moves, the book goes if the action loses it, the diff
    is buffered if the action buffers it.  Returns ``(action, dropped)`` as :func:`feed_diff`."""
    action = _step(sync, inp)
    if action in LOSES_BOOK:
        sync.book = None
    dropped = 0
    if action in _BUFFERS:
        buf = sync.buffer
        buf.append(diff)
        if len(buf) > limit:
            del buf[0]
            dropped = 1
    return action, dropped


def feed_snapshot(rule: ChainRule, sync: Sync, snap: BookSnapshot) -> tuple[str, list[DepthDiff]]:
    """Run a snapshot through the table.

    Returns ``(action, replay)``.  A_REJECT: a rule with a checksum found the
    snapshot's own checksum wrong (phase RESYNCING, no book, the buffer kept).  On A_LOAD
    the book is the snapshot (phase
    LOADED or RELOADED) and ``replay`` holds the buffered diffs, which the
    caller must now feed back through :func:`feed_diff` in order (with
    whatever it does per diff, e.g. bookTicker checks at each intermediate
    id), then end the step with :func:`feed_replayed`.  On A_VERIFY (a synced
    book) nothing changed: the caller runs the drift check.  A rule with a
    checksum first checks a loaded snapshot that carries one (``checksum`` not
    None) against it: a mismatch is the table's BAD_CHECKSUM (A_REJECT: no
    book, the buffer kept).
    """
    inp = RESET if (snap.origin == "stream" and rule.stream_snapshot_resets) else SNAPSHOT
    if (
        inp == RESET
        and rule.same_id_snapshot_verifies
        and sync.phase == SYNCED
        and sync.book is not None
        and sync.book.last_id == snap.last_id
    ):
        inp = SNAPSHOT  # the exchange's book at our id: verify ours against it
    action = _step(sync, inp)
    if action != A_LOAD:
        return action, []
    sync.book = Book.from_levels(snap.last_id, snap.bids, snap.asks)
    sync.depth, sync.price_decimals, sync.qty_decimals = (
        snap.depth,
        snap.price_decimals,
        snap.qty_decimals,
    )
    if rule.truncates and snap.depth is not None:
        sync.book.truncate(snap.depth)
    if rule.has_checksum and snap.checksum is not None and not rule.verify(sync, snap, None, None):
        # the exchange's own checksum rejects its snapshot as we read it: never load it
        sync.book = None
        return _step(sync, BAD_CHECKSUM), []
    replay, sync.buffer = sync.buffer, []
    if inp == RESET and rule.reset_drops_buffer:
        replay = []
    return action, replay


def feed_replayed(sync: Sync) -> str:
    """End a snapshot's step after its buffer was replayed: A_PUBLISH (the book is valid)
    or A_WAIT (the replay lost the book again and asked for another snapshot)."""
    return _step(sync, REPLAYED)


def ask(sync: Sync) -> str:
    """A snapshot was requested for a fresh Sync (a verification's shadow): buffer from now on."""
    return _step(sync, ASK)


def adopt(sync: Sync, verified: Sync) -> str:
    """Drift: ``verified`` (a shadow at the same update id) holds the right levels; take its book.

    The phase follows the table (it keeps ``sync``'s stream position); ``verified``
    must not be used afterwards (its book is now ``sync``'s).
    """
    action = _step(sync, ADOPT)
    sync.book = verified.book
    return action


def feed_break(sync: Sync) -> str | None:
    """The stream that fed this book lost messages it cannot place (a connection-wide
    counter skipped: :mod:`engine.sequence_gaps`): the book is lost exactly as by a GAP
    diff (the table's RETRACT from PRIMED, RESYNC from SYNCED).  None when there is no
    published book to lose (a snapshot is already wanted)."""
    if sync.phase not in PUBLISHED:
        return None
    action = _step(sync, GAP)
    sync.book = None
    return action


def feed_close(rule: ChainRule, sync: Sync) -> str | None:
    """The connection this book followed closed: a published book comes off the air
    (SUSPENDED under a rule with ``resumes_after_close`` if it was SYNCED, else lost:
    RESYNCING).  None when nothing is published (a snapshot is wanted already, or the
    book is suspended)."""
    if sync.phase not in PUBLISHED:
        return None
    action = _step(sync, CLOSE_KEEP if rule.resumes_after_close else CLOSE)
    if action in LOSES_BOOK:
        sync.book = None
    return action
