"""Bybit's sync rule in the BookReducer, as a hypothesis state machine against a naive model.

An "exchange" evolves one topic's true book (``u`` + 1 per delta).  Rules deliver the next
delta, lose one (a gap), resend one already delivered (stale: a second connection), deliver a
stream snapshot of the truth now or a few deltas back (a resubscribe's or a new connection's:
the deltas after it are delivered again), restart the service (``u`` starts again at 1 with a
snapshot), corrupt our published book at one level (what nothing in the stream can reveal),
and checkpoint the reducer through JSON.

Checked after every step: the sync outputs (SnapshotRequest "sync", GapDetected, BookSynced,
BufferOverflow, BookVerified, DriftDetected) and the reported sync state equal what the Bybit
procedure written out plainly (from the v5 docs: a snapshot replaces the book, a delta must be
``u`` + 1, anything else is lost sync) predicts; the published book is the truth at its ``u``
(plus unrepaired corruption); a second reducer with ``inline=False`` agrees on every output and
state.  Plus the two driver behaviours Bybit added, case by case.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine.book_reducer import (
    BookReducer,
    BookSynced,
    BookVerified,
    BufferOverflow,
    CrossedBook,
    DriftDetected,
    GapDetected,
)
from engine.codecs.base import SyncRule
from engine.events import BookSnapshot, DepthDiff
from engine.outputs import SnapshotRequest

SYM = "BTCUSDT"
LIMIT = 5
DEPTH = 50  # the topic depth: more than the truth ever holds, so a verification covers the book

bid_px = st.integers(min_value=1, max_value=12)  # bids and asks never cross in the truth
ask_px = st.integers(min_value=13, max_value=24)
qty = st.integers(min_value=0, max_value=4)


class NaiveBybit:
    """Bybit's procedure, written plainly: predicts the sync outputs and the book."""

    def __init__(self) -> None:
        self.book: tuple[dict[int, int], dict[int, int]] | None = None
        self.u = 0
        self.primed = False  # a snapshot no delta has chained onto yet
        self.seen = self.requested = self.resync = self.overflowed = False
        self.buffered = 0

    def state(self) -> str:
        if self.book is not None:
            return "primed" if self.primed else "synced"
        if not self.seen:
            return "idle"
        return "resyncing" if self.resync else "buffering"

    def _buffer(self, out: list) -> None:
        self.buffered += 1
        if self.buffered > LIMIT:
            self.buffered = LIMIT
            if not self.overflowed:
                self.overflowed = True
                out.append(("BufferOverflow",))

    def delta(self, d: DepthDiff, out: list) -> bool:
        """Predict one delta's outputs; True when it is applied."""
        self.seen = True
        if self.book is None:
            if not self.requested:
                out.append(("SnapshotRequest",))
                self.requested = True
            self._buffer(out)
            return False
        if d.last_id <= self.u:
            return False  # stale
        if d.last_id == self.u + 1:
            for levels, side in ((d.bids, self.book[0]), (d.asks, self.book[1])):
                for p, q in levels:
                    if q:
                        side[p] = q
                    else:
                        side.pop(p, None)
            self.u, self.primed = d.last_id, False
            return True
        out.append(("GapDetected", self.u))
        out.append(("SnapshotRequest",))
        self.book, self.requested, self.resync, self.buffered = None, True, True, 0
        self._buffer(out)
        return False

    def snapshot(self, u: int, bids: dict, asks: dict, out: list, corrupt: dict) -> bool:
        """Predict a stream snapshot's outputs; True when it verified (the book is kept)."""
        self.seen = True
        if self.book is not None and not self.primed and u == self.u:
            wrong = {k: v for k, v in corrupt.items()}
            if wrong:
                out.append(("DriftDetected", u, sorted(wrong)))
            else:
                out.append(("BookVerified", u))
            self.book = (dict(bids), dict(asks))
            return True
        self.book = (dict(bids), dict(asks))
        self.u, self.primed = u, True
        self.requested = self.overflowed = False
        self.buffered = 0
        out.append(("BookSynced", u, self.resync))
        self.resync = False
        return False


class BybitMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        kw = dict(max_buffer=LIMIT, verify_interval_s=None, sync_retry_s=1e9)
        self.reducer = BookReducer(SyncRule.BYBIT, **kw)
        self.state = self.reducer.initial()
        self.table_driven = BookReducer(SyncRule.BYBIT, inline=False, **kw)
        self.td_state = self.table_driven.initial()
        self.model = NaiveBybit()
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.u = 1000  # the exchange's current u
        self.epoch = 0  # service restarts so far
        self.history: dict[tuple[int, int], tuple[dict, dict]] = {(0, 1000): ({}, {})}
        self.sent: list[DepthDiff] = []  # this epoch's deltas, in order
        self.next_i = 0
        self.delivered: list[DepthDiff] = []
        self.book_epoch = 0
        self.corrupt: dict[tuple[str, int], int] = {}
        self.seq = 0

    # ------------------------------------------------------------ the exchange

    @rule(
        bids=st.lists(st.tuples(bid_px, qty), max_size=4),
        asks=st.lists(st.tuples(ask_px, qty), max_size=4),
    )
    def exchange_update(self, bids, asks):
        self.u += 1
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for p, q in levels:
                if q:
                    side[p] = q
                else:
                    side.pop(p, None)
        self.history[(self.epoch, self.u)] = (dict(self.bids), dict(self.asks))
        self.sent.append(DepthDiff(0, 0, SYM, self.u, self.u, None, None, None, bids, asks))

    # ------------------------------------------------------------ delivery

    def _feed(self, ev, model_call):
        want: list = []
        model_call(want)
        self.state, outs = self.reducer.step(self.state, ev)
        self.td_state, td_outs = self.table_driven.step(self.td_state, ev)
        assert list(td_outs) == list(outs)
        assert self.td_state == self.state
        got = []
        for o in outs:
            assert not isinstance(o, CrossedBook), o
            assert o.seq == ev.seq and o.symbol == SYM
            if isinstance(o, SnapshotRequest):
                assert o.purpose == "sync"
                got.append(("SnapshotRequest",))
            elif isinstance(o, GapDetected):
                got.append(("GapDetected", o.book_id))
            elif isinstance(o, BookSynced):
                got.append(("BookSynced", o.last_id, o.resync))
            elif isinstance(o, BufferOverflow):
                got.append(("BufferOverflow",))
            elif isinstance(o, BookVerified):
                got.append(("BookVerified", o.last_id))
            elif isinstance(o, DriftDetected):
                listed = [("bid", p) for p, _, _ in o.bids] + [("ask", p) for p, _, _ in o.asks]
                got.append(("DriftDetected", o.last_id, sorted(listed)))
        assert got == want

    def _deliver(self, d: DepthDiff) -> None:
        self.seq += 1
        ev = DepthDiff(self.seq, self.seq * 1000, SYM, d.first_id, d.last_id, None, None, None,
                       d.bids, d.asks)  # fmt: skip
        self.delivered.append(d)

        def model_call(out):
            if self.model.delta(ev, out):  # absolute levels overwrite a corrupted one
                for side, levels in (("bid", d.bids), ("ask", d.asks)):
                    for p, _ in levels:
                        self.corrupt.pop((side, p), None)

        self._feed(ev, model_call)

    @precondition(lambda self: self.next_i < len(self.sent))
    @rule()
    def deliver_next(self):
        self.next_i += 1
        self._deliver(self.sent[self.next_i - 1])

    @precondition(lambda self: self.next_i < len(self.sent))
    @rule()
    def lose_next(self):
        self.next_i += 1

    @precondition(lambda self: bool(self.delivered))
    @rule(data=st.data())
    def resend_delivered(self, data):
        self._deliver(data.draw(st.sampled_from(self.delivered[-4:])))

    def _snapshot(self, u: int) -> None:
        b, a = self.history[(self.epoch, u)]
        self.seq += 1
        ev = BookSnapshot(self.seq, self.seq * 1000, SYM, u, list(b.items()), list(a.items()),
                          DEPTH, "stream")  # fmt: skip

        def model_call(out):
            self.model.snapshot(u, b, a, out, self.corrupt)
            self.corrupt = {}  # verified and repaired, or replaced
            self.book_epoch = self.epoch

        self._feed(ev, model_call)

    @rule(back=st.integers(min_value=0, max_value=3))
    def snapshot(self, back):
        """A (re)subscription's snapshot at the current u, or a few deltas back; then the
        deltas after it come (again) on that connection."""
        ids = sorted(u for e, u in self.history if e == self.epoch)
        u = ids[max(0, len(ids) - 1 - back)]
        self._snapshot(u)
        self.next_i = sum(1 for d in self.sent if d.last_id <= u)

    @precondition(lambda self: self.model.book is not None and self.book_epoch == self.epoch)
    @rule()
    def snapshot_at_our_u(self):
        """A second connection's snapshot at exactly our book's u (a verification when synced)."""
        u = self.model.u
        self._snapshot(u)
        self.next_i = sum(1 for d in self.sent if d.last_id <= u)

    @rule()
    def service_restart(self):
        """Bybit restarts: ``u`` starts again at 1, with a snapshot."""
        self.epoch += 1
        self.u = 1
        self.history[(self.epoch, 1)] = (dict(self.bids), dict(self.asks))
        self.sent, self.next_i, self.delivered = [], 0, []
        self._snapshot(1)

    @precondition(lambda self: self.model.book is not None)
    @rule(data=st.data())
    def corrupt_book(self, data):
        side = data.draw(st.sampled_from(["bid", "ask"]))
        p = data.draw(bid_px if side == "bid" else ask_px)
        truth = self.model.book[0 if side == "bid" else 1].get(p, 0)
        q = data.draw(st.sampled_from([x for x in range(5) if x != truth]))
        for red, state in ((self.reducer, self.state), (self.table_driven, self.td_state)):
            book = red.book(state, SYM)
            book.apply([(p, q)] if side == "bid" else [], [(p, q)] if side == "ask" else [],
                       book.last_id)  # fmt: skip
        self.corrupt[(side, p)] = q

    @rule()
    def checkpoint_and_restore(self):
        data = json.loads(json.dumps(self.reducer.snapshot(self.state)))
        restored = self.reducer.restore(data)
        assert restored == self.state
        self.state = restored
        self.td_state = self.table_driven.restore(data)

    # ------------------------------------------------------------ invariants

    @invariant()
    def published_book_is_the_truth(self):
        if not hasattr(self, "reducer"):
            return
        book = self.reducer.book(self.state, SYM)
        assert (book is None) == (self.model.book is None)
        assert self.reducer.sync_state(self.state, SYM) == self.model.state()
        if book is None:
            return
        assert book.last_id == self.model.u
        truth = self.history[(self.book_epoch, book.last_id)]
        assert (book.bids, book.asks) == _overlay(truth, self.corrupt)
        assert (book.bids, book.asks) == _overlay(self.model.book, self.corrupt)


def _overlay(book: tuple[dict, dict], corrupt: dict) -> tuple[dict, dict]:
    """A book's (bids, asks) with the corrupted levels as our book holds them."""
    b, a = (dict(x) for x in book)
    for (side, p), q in corrupt.items():
        levels = b if side == "bid" else a
        if q:
            levels[p] = q
        else:
            levels.pop(p, None)
    return b, a


TestBybitSync = BybitMachine.TestCase


# ------------------------------------------------------------ the driver behaviours, case by case


def _diff(u, bids=()):
    return DepthDiff(u, u, SYM, u, u, None, None, None, list(bids), [])


def _snap(u, bids, seq=0):
    return BookSnapshot(seq, seq, SYM, u, list(bids), [(20, 1)], DEPTH, "stream")


def test_a_restart_snapshot_syncs_although_older_numbered_deltas_were_buffered():
    r = BookReducer(SyncRule.BYBIT, verify_interval_s=None)
    s = r.initial()
    s, _ = r.step(s, _snap(500, [(10, 1)]))
    s, _ = r.step(s, _diff(501, [(10, 2)]))
    s, out = r.step(s, _diff(503))  # a delta lost: resyncing, 503 buffered
    assert [type(o) for o in out] == [GapDetected, SnapshotRequest]
    s, out = r.step(s, _snap(1, [(9, 1)]))  # the service restarted: u = 1
    assert [type(o) for o in out] == [BookSynced] and out[0].resync
    s, _ = r.step(s, _diff(2, [(8, 1)]))
    assert r.sync_state(s, SYM) == "synced" and r.book(s, SYM).bids == {9: 1, 8: 1}


def test_a_snapshot_at_the_synced_books_own_u_verifies_it_and_repairs_drift():
    r = BookReducer(SyncRule.BYBIT, verify_interval_s=None)
    s = r.initial()
    s, _ = r.step(s, _snap(7, [(10, 1)]))
    s, _ = r.step(s, _diff(8, [(11, 1)]))
    s, out = r.step(s, _snap(8, [(10, 1), (11, 1)]))
    assert [type(o) for o in out] == [BookVerified]
    r.book(s, SYM).apply([(5, 3)], [], 8)  # our book goes wrong without a gap
    s, out = r.step(s, _snap(8, [(10, 1), (11, 1)]))
    assert [type(o) for o in out] == [DriftDetected] and out[0].bids == [(5, 3, 0)]
    assert r.book(s, SYM).bids == {10: 1, 11: 1} and r.sync_state(s, SYM) == "synced"
    s, out = r.step(s, _snap(9, [(4, 4)]))  # any other u: the snapshot replaces the book
    assert [type(o) for o in out] == [BookSynced] and r.book(s, SYM).bids == {4: 4}
