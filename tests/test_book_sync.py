"""engine.book_sync's table, case by case, and the reducer's inlined steady case against it.

Every (phase, input) pair of TABLE is driven through the driver functions
with a real Sync (for the spot and futures rules, and a rule with a checksum
and resetting in-stream snapshots, so BAD_CHECKSUM and RESET happen, also
one truncating its book to the snapshot's depth, as Kraken's): the
phase and action that come out are the table's, and the Sync's invariants
hold.  Then the reducer: for every phase a Sync can be in between events,
every diff input that phase takes, with and without a verification or a
bookTicker in flight, a verification falling due, a crossing diff, and every
rule, ``BookReducer`` (with its inlined steady case) and
``BookReducer(inline=False)`` (every diff through the driver) produce the
same outputs and the same state, and the main book moves as TABLE says.
"""

from __future__ import annotations

import copy
import itertools
from typing import ClassVar

import attrs
import pytest

from engine import book_sync
from engine.book import Book
from engine.book_reducer import (
    BookReducer,
    BookResumed,
    BookSynced,
    BookWithdrawn,
    ChecksumMismatch,
    GapDetected,
)
from engine.book_sync import (
    ADOPT,
    APPLY,
    ASK,
    BAD_CHECKSUM,
    CLOSE,
    CLOSE_KEEP,
    DIFF,
    GAP,
    HAS_BOOK,
    PRIMED,
    REPLAYED,
    RESET,
    SNAPSHOT,
    STALE,
    STEADY_PHASES,
    SUSPENDED,
    SYNCED,
    TABLE,
    BinanceSpotRule,
    Sync,
    classify,
)
from engine.codecs.base import SyncRule
from engine.events import (
    CAPTURE_STOPPED,
    BookSnapshot,
    BookTicker,
    ConnectionClosed,
    DepthDiff,
    FrameConn,
)
from engine.outputs import SnapshotRequest

S = "BTCUSDT"
SEC = 1_000_000_000
BAD = 666  # a bid at this price fails the test rule's checksum


@attrs.frozen
class ChecksumRule(BinanceSpotRule):
    """Spot chaining plus what other venues have: a checksum and resetting in-stream snapshots."""

    name: ClassVar[str] = "test-checksum"
    has_checksum: bool = True
    stream_snapshot_resets: bool = True
    resumes_after_close: bool = False  # a resubscribing venue: the new subscription's snapshot

    def verify(self, sync: Sync, msg: DepthDiff | BookSnapshot, bids: object, asks: object) -> bool:
        return sync.book is not None and BAD not in sync.book.bids


@attrs.frozen
class TruncatingChecksumRule(ChecksumRule):
    """ChecksumRule on a book kept at its snapshot's depth (Kraken): its verify (overridden,
    as Kraken's is) also fails a book holding more bids than that depth, so a diff applied
    without the driver's truncation, or without the verify, shows as a mismatch."""

    name: ClassVar[str] = "test-checksum-truncating"
    truncates: bool = True

    def verify(self, sync: Sync, msg: DepthDiff | BookSnapshot, bids: object, asks: object) -> bool:
        deep = sync.depth is not None and sync.book is not None and len(sync.book.bids) > sync.depth
        return not deep and super().verify(sync, msg, bids, asks)


@attrs.frozen
class TruncatingRule(BinanceSpotRule):
    """Spot chaining on a book kept at its snapshot's depth, no checksum (a diff's is ignored)."""

    name: ClassVar[str] = "test-truncating"
    truncates: bool = True


TEST_RULES = (ChecksumRule(), TruncatingChecksumRule(), TruncatingRule())


@pytest.fixture(autouse=True)
def checksum_rule(monkeypatch):
    for rule in TEST_RULES:
        monkeypatch.setitem(book_sync.RULES, rule.name, rule)


RULE_NAMES = [SyncRule.BINANCE_SPOT, SyncRule.BINANCE_FUTURES] + [r.name for r in TEST_RULES]


def diff(U, u, pu=None, bids=(), asks=(), seq=0, ns=0, checksum=None):
    return DepthDiff(seq, ns, S, U, u, pu, None, None, list(bids), list(asks), checksum)


def candidates(book_id: int) -> list[DepthDiff]:
    """Diffs around ``book_id`` that between them are STALE, APPLY and GAP for every rule."""
    b = book_id
    out = []
    for U, u in ((b - 5, b - 1), (b - 1, b), (b, b + 2), (b + 1, b + 2), (b + 5, b + 7)):
        for pu in (b - 6, b, b + 4, None):
            out.append(diff(U, u, pu, bids=[(10, U % 7 + 1)]))
    return out


def diff_for(rule, sync: Sync, inp: str) -> DepthDiff | None:
    """A diff that is ``inp`` for ``sync`` under ``rule`` (None: the rule cannot produce it)."""
    if inp == DIFF:
        return diff(1, 2, bids=[(10, 1)])
    if inp == BAD_CHECKSUM:
        if not rule.has_checksum:
            return None
        good = diff_for(rule, sync, APPLY)
        return diff(good.first_id, good.last_id, good.prev_id, bids=[(BAD, 1)])
    for d in candidates(sync.book.last_id):
        if classify(rule, sync, d) == inp:
            return d
    return None


def sync_in(phase: str) -> Sync:
    """A Sync in ``phase`` as the invariants want it: a book in HAS_BOOK, else a buffer."""
    s = Sync()
    s.phase = phase  # the test builds every phase directly, the engine only through TABLE
    if phase in HAS_BOOK:
        s.book = Book.from_levels(100, [(10, 1), (9, 2)], [(11, 1)])
    elif phase != "idle":
        s.buffer = [diff(95, 96, 94), diff(97, 98, 96)]
    return s


def run(rule, s: Sync, inp: str) -> str | None:
    """Drive ``inp`` into ``s`` through the matching driver function (None: not producible)."""
    if inp in (DIFF, STALE, APPLY, GAP, BAD_CHECKSUM):
        d = diff_for(rule, s, inp)
        if d is None:
            return None
        assert book_sync.classify(rule, s, d) in (inp, APPLY)
        return book_sync.feed_diff(rule, s, d, limit=10)[0]
    if inp in (SNAPSHOT, RESET):
        origin = "stream" if inp == RESET else "rest"
        if inp == RESET and not rule.stream_snapshot_resets:
            return None
        snap = BookSnapshot(0, 0, S, 97, [(10, 3)], [(11, 3)], None, origin)
        return book_sync.feed_snapshot(rule, s, snap)[0]
    if inp == REPLAYED:
        return book_sync.feed_replayed(s)
    if inp == ASK:
        return book_sync.ask(s)
    if inp == ADOPT:
        verified = sync_in(SYNCED)
        verified.book.apply([(10, 5)], [], verified.book.last_id)
        action = book_sync.adopt(s, verified)
        assert s.book is verified.book
        return action
    if inp in (CLOSE, CLOSE_KEEP):
        if (inp == CLOSE_KEEP) != rule.resumes_after_close:
            return None
        return book_sync.feed_close(rule, s)
    raise AssertionError(f"no driver for input {inp!r}")


CASES = [(phase, inp) for phase, row in TABLE.items() for inp in row]


@pytest.mark.parametrize(("phase", "inp"), CASES)
def test_every_table_case_is_what_the_driver_does(phase, inp):
    want_phase, want_action = TABLE[phase][inp]
    done = 0
    for name in RULE_NAMES:
        rule = book_sync.rule_for(name)
        s = sync_in(phase)
        action = run(rule, s, inp)
        if action is None:
            continue
        done += 1
        assert (s.phase, action) == (want_phase, want_action), name
        assert (s.book is not None) == (s.phase in HAS_BOOK)
        if s.book is not None:
            assert s.buffer == []
    assert done, f"no rule produces ({phase}, {inp})"


def test_a_missing_case_is_a_bug_not_a_silent_default():
    s = sync_in(SYNCED)
    with pytest.raises(KeyError):
        book_sync.ask(s)


# ----------------------------------------------------------------- the reducer


class Feed:
    """One reducer and its state, with events stamped 1 ms apart."""

    def __init__(self, reducer: BookReducer) -> None:
        self.r = reducer
        self.state = reducer.initial()
        self.seq = 0
        self.ns = 10 * SEC

    def step(self, ev):
        self.state, outs = self.r.step(self.state, ev)
        return list(outs)

    def stamp(self, advance_ns=1_000_000):
        self.seq += 1
        self.ns += advance_ns
        return self.seq, self.ns

    def diff(self, U, u, pu=None, bids=(), asks=(), advance_ns=1_000_000, checksum=None):
        seq, ns = self.stamp(advance_ns)
        return self.step(diff(U, u, pu, bids, asks, seq, ns, checksum))

    def snap(self, last_id, bids=((10, 1), (9, 2)), asks=((20, 1),)):
        seq, ns = self.stamp()
        depth = len(bids) if self.r._rule.truncates else None  # a deeper bid pushes one out
        return self.step(BookSnapshot(seq, ns, S, last_id, list(bids), list(asks), depth, "rest"))

    def ticker(self, u):
        seq, ns = self.stamp()
        return self.step(BookTicker(seq, ns, S, u, 10, 1, 20, 1))

    def via(self, conn):
        """The frames from here on come over connection ``conn`` (what the pipeline says)."""
        seq, ns = self.stamp()
        return self.step(FrameConn(seq, ns, conn))

    def close(self, conn, code=1006):
        seq, ns = self.stamp()
        return self.step(ConnectionClosed(seq, ns, conn, "wss://x", code, "gone"))

    @property
    def main(self) -> Sync:
        return self.state.symbols[S].main


def reach(f: Feed, phase: str, shadow: bool, pending: bool) -> bool:
    """Drive ``f`` into ``phase`` with real events; False if that combination cannot exist."""
    if phase == "idle":
        return not (shadow or pending)  # a symbol never seen
    if phase == SUSPENDED:
        if shadow or not f.r._rule.resumes_after_close:
            return False  # a close abandons a verification; other rules lose the book
        f.via(1)
        f.snap(100)
        f.diff(100, 101, 99)
        f.close(1)
        f.via(2)
    elif phase in ("buffering", "resyncing"):
        if shadow:
            return False  # a verification ends when the main book is lost
        if phase == "resyncing":
            f.snap(100)
            f.diff(100, 101, 99)
            f.diff(110, 111, 109)  # gap
        else:
            f.diff(101, 102, 100)
    else:
        f.snap(100)
        if phase == SYNCED:
            f.diff(100, 101, 99)
    if shadow:  # a verification falls due (interval 60 s of event time) with a stale diff
        f.diff(90, 91, 89, advance_ns=61 * SEC)
        assert f.state.symbols[S].shadow is not None
    if pending:
        f.ticker(f.main.book.last_id + 50 if f.main.book else 500)
    assert f.r.sync_state(f.state, S) == phase
    return True


@pytest.mark.parametrize("rule_name", RULE_NAMES)
@pytest.mark.parametrize("phase", STEADY_PHASES)
def test_inlined_steady_case_equals_the_table_for_every_case(rule_name, phase):
    rule = book_sync.rule_for(rule_name)
    if phase == SUSPENDED and not rule.resumes_after_close:
        pytest.skip("only a rule with resumes_after_close suspends a book")
    tried = 0
    for shadow, pending, due, crossing in itertools.product((False, True), repeat=4):
        kw = dict(verify_interval_s=60.0)
        fast, slow = (
            Feed(BookReducer(rule_name, **kw)),
            Feed(BookReducer(rule_name, inline=False, **kw)),
        )
        if not (reach(fast, phase, shadow, pending) and reach(slow, phase, shadow, pending)):
            continue
        assert fast.state == slow.state
        main = copy.deepcopy(fast.main) if fast.state.symbols else Sync()
        for inp in TABLE[phase]:
            if inp not in (DIFF, STALE, APPLY, GAP, BAD_CHECKSUM):
                continue  # not a diff: the inlined case never sees it
            d = diff_for(rule, main, inp)
            if d is None:
                continue
            bids = list(d.bids) + ([(20, 1)] if crossing else [])  # bid at the best ask: crossed
            a, b = copy.deepcopy(fast), copy.deepcopy(slow)
            advance = 61 * SEC if due else 1_000_000
            args = (d.first_id, d.last_id, d.prev_id, bids, d.asks)
            got = a.diff(*args, advance_ns=advance, checksum=7)  # counted if the rule has one
            want = b.diff(*args, advance_ns=advance, checksum=7)
            assert got == want, (phase, inp, shadow, pending, due, crossing)
            assert a.state == b.state, (phase, inp, shadow, pending, due, crossing)
            assert a.main.phase == TABLE[phase][inp][0]
            tried += 1
    assert tried


def test_a_primed_book_is_published_but_reported_primed_until_a_diff_chains():
    f = Feed(BookReducer(SyncRule.BINANCE_SPOT))
    assert f.r.sync_state(f.state, S) == "idle"
    assert [type(o) for o in f.diff(101, 102)] == [SnapshotRequest]
    assert f.r.sync_state(f.state, S) == "buffering" and f.r.book(f.state, S) is None
    out = f.snap(105)  # newer than the buffered diff: nothing chains yet
    assert [type(o) for o in out] == [BookSynced]
    assert f.r.sync_state(f.state, S) == PRIMED
    assert f.r.book(f.state, S).last_id == 105  # published: the exchange's book at its id
    assert f.diff(105, 105) == []  # stale: still primed
    assert f.r.sync_state(f.state, S) == PRIMED
    assert f.diff(106, 107) == []
    assert f.r.sync_state(f.state, S) == SYNCED
    out = f.diff(110, 111)  # gap
    assert [type(o) for o in out] == [GapDetected, SnapshotRequest]
    assert f.r.sync_state(f.state, S) == "resyncing" and f.r.book(f.state, S) is None


def test_checksum_failure_is_a_mismatch_and_the_next_sync_a_resync():
    f = Feed(BookReducer(ChecksumRule.name))
    f.snap(100)
    f.diff(101, 101)
    out = f.diff(102, 102, bids=[(BAD, 1)])
    assert [type(o) for o in out] == [ChecksumMismatch, SnapshotRequest]
    assert (out[0].book_id, out[0].last_id) == (101, 102)
    assert out[1].reason == "checksum mismatch" and f.r.book(f.state, S) is None
    assert f.r.sync_state(f.state, S) == "resyncing"
    assert f.diff(103, 103) == []  # buffered (the rejected diff is not: it is in the bad book)
    out = f.snap(102, bids=[(10, 1)])
    assert [type(o) for o in out] == [BookSynced] and out[0].resync and out[0].replayed == 1
    assert f.r.sync_state(f.state, S) == SYNCED


def test_a_resetting_stream_snapshot_reloads_a_synced_book_instead_of_verifying_it():
    f = Feed(BookReducer(ChecksumRule.name))
    f.snap(100)
    f.diff(101, 101)
    seq, ns = f.stamp()
    out = f.step(BookSnapshot(seq, ns, S, 300, [(10, 9)], [(20, 9)], None, "stream"))
    assert [type(o) for o in out] == [BookSynced] and not out[0].resync
    assert f.r.book(f.state, S).bids == {10: 9} and f.r.sync_state(f.state, S) == PRIMED


# ----------------------------------------------------------------- connections (issue 14)


def test_a_close_suspends_a_binance_book_and_the_next_connections_chaining_diff_resumes_it():
    f = Feed(BookReducer(SyncRule.BINANCE_SPOT))
    f.via(1)
    f.snap(100)
    f.diff(100, 101)
    out = f.close(1)
    assert [type(o) for o in out] == [BookWithdrawn] and out[0].kept and out[0].book_id == 101
    assert f.r.book(f.state, S) is None and f.r.sync_state(f.state, S) == SUSPENDED
    f.via(2)
    assert f.diff(100, 101) == [] and f.r.book(f.state, S) is None  # stale: still suspended
    out = f.diff(102, 103)  # chains: nothing was lost, no snapshot asked for
    assert [type(o) for o in out] == [BookResumed] and (out[0].book_id, out[0].last_id) == (
        101,
        103,
    )
    assert f.r.sync_state(f.state, S) == SYNCED and f.r.book(f.state, S).last_id == 103


def test_a_suspended_book_whose_next_diff_does_not_chain_is_a_gap_and_a_resync():
    f = Feed(BookReducer(SyncRule.BINANCE_FUTURES))
    f.via(1)
    f.snap(100)
    f.diff(99, 101, 98)
    f.close(1)
    f.via(2)
    out = f.diff(105, 107, 104)  # pu 104 ≠ 101: updates were lost while disconnected
    assert [type(o) for o in out] == [GapDetected, SnapshotRequest]
    assert f.r.book(f.state, S) is None
    out = f.snap(107)
    assert [type(o) for o in out] == [BookSynced] and out[0].resync


def test_a_resubscribing_venues_book_is_lost_at_a_close_and_rebuilt_by_the_next_snapshot():
    f = Feed(BookReducer(ChecksumRule.name))  # resumes_after_close False, stream resets
    f.via(1)
    f.snap(100)
    f.diff(101, 101)
    out = f.close(1)
    assert [type(o) for o in out] == [BookWithdrawn] and not out[0].kept
    assert f.r.book(f.state, S) is None and f.r.sync_state(f.state, S) == "resyncing"
    f.via(2)
    seq, ns = f.stamp()
    out = f.step(BookSnapshot(seq, ns, S, 300, [(10, 9)], [(20, 9)], None, "stream"))
    assert [type(o) for o in out] == [BookSynced] and out[0].resync
    assert f.r.book(f.state, S).last_id == 300


def test_a_rotations_successor_running_ahead_is_held_until_the_old_connection_closes():
    f = Feed(BookReducer(SyncRule.BINANCE_SPOT))
    f.via(1)
    f.snap(100)
    f.diff(100, 101)
    f.via(2)  # the successor is already at 104..105: folded as one stream, a gap
    assert f.diff(104, 105) == []
    f.via(1)  # the old connection is still delivering what came before
    assert f.diff(102, 103) == [] and f.r.book(f.state, S).last_id == 103
    f.via(2)
    assert f.diff(106, 107) == []
    assert f.r.book(f.state, S).last_id == 103  # held, not applied yet
    assert f.close(1) == []  # the successor takes over: its held diffs chain, no withdrawal
    assert f.r.book(f.state, S).last_id == 107 and f.r.sync_state(f.state, S) == SYNCED
    assert f.diff(108, 108) == [] and f.r.book(f.state, S).last_id == 108


def test_the_close_that_ends_the_recording_leaves_the_last_book_on_the_air():
    f = Feed(BookReducer(ChecksumRule.name))
    f.via(1)
    f.snap(100)
    seq, ns = f.stamp()
    out = f.step(ConnectionClosed(seq, ns, 1, "wss://x", 1000, CAPTURE_STOPPED))
    assert out == [] and f.r.book(f.state, S).last_id == 100


def test_without_connection_frames_a_close_changes_no_book():
    """Events not from a journal (no FrameConn): no book is known to follow any connection."""
    f = Feed(BookReducer(SyncRule.BINANCE_SPOT))
    f.snap(100)
    f.diff(100, 101)
    assert f.close(1) == [] and f.r.sync_state(f.state, S) == SYNCED


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_apply_checked_answers_whether_the_book_is_crossed_after_its_truncation(depth: int) -> None:
    """``apply_checked`` answers ``(inp, crossed)``: Book.apply's crossed, which the
    truncation to the snapshot's depth keeps (it keeps each side's best levels), unless it
    keeps none (depth 0: an empty book is not crossed)."""
    rule = TruncatingRule()
    book = Book.from_levels(1, [(10, 1), (9, 1)], [(12, 1), (13, 1)])
    sync = Sync(SYNCED, book, depth=depth)
    verdict, crossed = book_sync.apply_checked(rule, sync, diff(2, 2, bids=[(12, 5)]))
    assert verdict == APPLY
    assert crossed is (depth > 0) and crossed is book.crossed()
    assert len(book.bids) <= depth and len(book.asks) <= depth
