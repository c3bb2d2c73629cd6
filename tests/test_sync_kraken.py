"""The Kraken sync rule against a naive model: truncation, the checksum after every message, resync.

A hypothesis state machine plays a Kraken feed: the exchange keeps its own
depth-limited book, sends snapshots (a subscription's answer) and updates
with the checksum of its book after each, and sometimes loses an update or
corrupts a checksum (of an update or of a snapshot).  The book reducer (``SyncRule.KRAKEN``) is held to a
naive model written independently of the engine: dicts re-sorted on every
message, the checksum rendered through :class:`decimal.Decimal`.  After every
step both agree on the sync state and on the published book; a checksum that
failed is a ChecksumMismatch plus a sync SnapshotRequest, and no book is published
until the next snapshot; a published book's top 10 levels are the exchange's.
Some updates carry no checksum (they pass untested).  The counts are the model's: applied
diffs, the checksums verified (diffs' and snapshots'), the mismatches; a second reducer with
``inline=False`` (every diff through the table's driver) agrees on every count.
"""

from __future__ import annotations

import zlib
from decimal import Decimal

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from engine import num
from engine.book_reducer import BookReducer, ChecksumMismatch, GapDetected
from engine.codecs.base import SyncRule
from engine.events import BookSnapshot, DepthDiff
from engine.outputs import SnapshotRequest

S = "GRT/ETH"
DEPTH = 10
SPAN = 30  # price ticks a side: more than DEPTH, so inserts push levels out


def naive_digits(units: int, decimals: int) -> str:
    text = format(Decimal(units).scaleb(-num.SCALE), f".{decimals}f")
    return text.replace(".", "").lstrip("0")


def naive_checksum(bids: dict[int, int], asks: dict[int, int], pd: int, qd: int) -> int:
    text = ""
    for side in (sorted(asks.items())[:10], sorted(bids.items(), reverse=True)[:10]):
        for p, q in side:
            text += naive_digits(p, pd) + naive_digits(q, qd)
    return zlib.crc32(text.encode())


def naive_truncate(bids: dict[int, int], asks: dict[int, int], depth: int) -> None:
    for p in sorted(bids, reverse=True)[depth:]:
        del bids[p]
    for p in sorted(asks)[depth:]:
        del asks[p]


def naive_apply(book: tuple[dict[int, int], dict[int, int]], bids, asks) -> None:
    for side, levels in zip(book, (bids, asks), strict=True):
        for p, q in levels:
            if q:
                side[p] = q
            else:
                side.pop(p, None)


level_changes = st.lists(
    st.tuples(st.booleans(), st.integers(0, SPAN - 1), st.integers(0, 3)), min_size=1, max_size=6
)


class KrakenFeed(RuleBasedStateMachine):
    @initialize(pd=st.integers(0, min(10, num.SCALE)), qd=st.integers(0, 8))
    def start(self, pd, qd):
        self.pd, self.qd = pd, qd
        self.tick = 10 ** (num.SCALE - pd)
        self.lot = 10 ** (num.SCALE - qd)
        self.reducer = BookReducer(SyncRule.KRAKEN, verify_interval_s=None)
        self.state = self.reducer.initial()
        self.table_driven = BookReducer(SyncRule.KRAKEN, verify_interval_s=None, inline=False)
        self.twin = self.table_driven.initial()
        # the counts the model expects: applied diffs, checksums verified, mismatches
        self.applied = self.verified = self.mismatches = 0
        self.seq = 0
        self.exchange: tuple[dict[int, int], dict[int, int]] = ({}, {})
        # the naive model of what the reducer must hold
        self.phase = "idle"
        self.book: tuple[dict[int, int], dict[int, int]] | None = None

    # ------------------------------------------------------------- the exchange

    def _levels(self, changes):
        bids, asks = [], []
        for is_bid, i, q in changes:
            price = (i + 1) * self.tick if is_bid else (SPAN + 1 + i) * self.tick
            (bids if is_bid else asks).append((price, q * 7 * self.lot))
        return bids, asks

    def _exchange_update(self, changes):
        bids, asks = self._levels(changes)
        naive_apply(self.exchange, bids, asks)
        naive_truncate(*self.exchange, DEPTH)
        return bids, asks, naive_checksum(*self.exchange, self.pd, self.qd)

    def _step(self, ev):
        self.state, outs = self.reducer.step(self.state, ev)
        self.twin, twin_outs = self.table_driven.step(self.twin, ev)
        assert list(twin_outs) == list(outs)
        return list(outs)

    # ------------------------------------------------------------- rules

    @rule(wrong=st.booleans())
    def snapshot(self, wrong):
        """A (re)subscription's answer: the exchange's book as it stands, with its checksum
        (a v2 snapshot carries one; ``wrong``: it does not match the levels)."""
        self.seq += 1
        bids, asks = sorted(self.exchange[0].items()), sorted(self.exchange[1].items())
        known = bool(bids or asks)
        check = naive_checksum(*self.exchange, self.pd, self.qd)
        if wrong:
            check = (check + 1) % 2**32
        ev = BookSnapshot(
            self.seq, self.seq, S, self.seq, bids, asks, DEPTH, "stream", None, None, check,
            self.pd if known else None, self.qd if known else None,
        )  # fmt: skip
        outs = self._step(ev)
        bad = [o for o in outs if isinstance(o, ChecksumMismatch)]
        if wrong:
            assert [o.last_id for o in bad] == [self.seq]
            assert [o.purpose for o in outs if isinstance(o, SnapshotRequest)] == ["sync"]
            self.book, self.phase = None, "resyncing"
            self.mismatches += 1
            return
        assert not bad
        self.verified += 1
        self.book = (dict(self.exchange[0]), dict(self.exchange[1]))
        self.phase = "primed"
        self.precision_known = known  # an empty snapshot says nothing of the precision

    @rule(changes=level_changes, wrong=st.booleans(), carried=st.integers(0, 3))
    def update(self, changes, wrong, carried):
        """An update with the exchange's checksum (``wrong``: one that does not match), or
        (``carried`` 0) with none: it passes untested."""
        bids, asks, check = self._exchange_update(changes)
        if wrong:
            check = (check + 1) % 2**32
        if not carried:
            check = None
        self.seq += 1
        outs = self._step(DepthDiff(self.seq, self.seq, S, self.seq, self.seq, None, None, None,
                                    bids, asks, check))  # fmt: skip
        if self.book is None:
            if self.phase == "idle":
                self.phase = "buffering"
            return
        naive_apply(self.book, bids, asks)
        naive_truncate(*self.book, DEPTH)
        checkable = self.precision_known or not (self.book[0] or self.book[1])
        if check is None or (checkable and naive_checksum(*self.book, self.pd, self.qd) == check):
            self.phase = "synced"
            assert not [o for o in outs if isinstance(o, ChecksumMismatch | GapDetected)]
            self.applied += 1
            self.verified += check is not None
        else:
            self.phase, self.book = "resyncing", None
            self.mismatches += 1
            bad = [o for o in outs if isinstance(o, ChecksumMismatch)]
            assert [(o.last_id, o.checksum) for o in bad] == [(self.seq, check)]
            assert [o.purpose for o in outs if isinstance(o, SnapshotRequest)] == ["sync"]

    @rule(changes=level_changes)
    def lost_update(self, changes):
        """The exchange's book moves on; the message never reaches us."""
        self._exchange_update(changes)

    @rule()
    def checkpoint(self):
        self.state = self.reducer.restore(self.reducer.snapshot(self.state))
        self.twin = self.table_driven.restore(self.table_driven.snapshot(self.twin))

    # ------------------------------------------------------------- invariants

    @invariant()
    def agrees_with_the_model(self):
        assert self.reducer.sync_state(self.state, S) == self.phase
        book = self.reducer.book(self.state, S)
        if self.book is None:
            assert book is None
            return
        assert book is not None
        assert (book.bids, book.asks) == self.book
        assert len(book.bids) <= DEPTH and len(book.asks) <= DEPTH

    @invariant()
    def the_counts_are_the_models(self):
        c = self.reducer.totals(self.state)
        assert (c.diffs_applied, c.checksums_verified, c.checksum_mismatches) == (
            self.applied, self.verified, self.mismatches
        )
        assert c == self.table_driven.totals(self.twin)

    @invariant()
    def a_published_book_shows_the_exchanges_top(self):
        book = self.reducer.book(self.state, S)
        if book is not None and self.phase in ("primed", "synced") and self.book is not None:
            # the last checksum (or the snapshot) vouched for the top 10 (CRC32 collisions aside)
            top = book.top(10)
            ex_b = sorted(self.exchange[0].items(), reverse=True)[:10]
            ex_a = sorted(self.exchange[1].items())[:10]
            if naive_checksum(*self.book, self.pd, self.qd) == naive_checksum(
                *self.exchange, self.pd, self.qd
            ):
                assert top == (ex_b, ex_a)


TestKrakenFeed = KrakenFeed.TestCase
