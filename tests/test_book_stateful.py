"""BookReducer as a hypothesis state machine against a naive model (spot and USD-M rules).

An "exchange" evolves a true book one diff at a time (update ids ascend,
futures diffs carry ``pu``).  Rules deliver the next diff, lose one (gap),
resend the last one (duplicate), resend an old one (stale), deliver a REST
snapshot of the truth at some past or current id (stale or fresh), deliver a
bookTicker, or checkpoint the reducer through JSON and restore it.

Checked after every step:

* whenever the reducer publishes a book, its levels are the truth at the
  book's update id, and every query agrees with a naive recomputation;
* the sync-relevant outputs (SnapshotRequest "sync", GapDetected,
  BookSynced, BufferOverflow) equal what a naive model of the Binance
  procedure (written from ../shared/protocols.md, no table) predicts;
* truthful data never yields DriftDetected, TopOfBookMismatch or CrossedBook.
"""

from __future__ import annotations

import json
from fractions import Fraction

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine.book_reducer import (
    BookReducer,
    BookSynced,
    BufferOverflow,
    CrossedBook,
    DriftDetected,
    GapDetected,
    TopOfBookMismatch,
)
from engine.codecs.base import SyncRule
from engine.events import BookSnapshot, BookTicker, DepthDiff
from engine.outputs import SnapshotRequest

SYM = "BTCUSDT"
LIMIT = 6  # small buffer so overflow happens

bid_px = st.integers(min_value=1, max_value=12)  # bids and asks never cross in the truth
ask_px = st.integers(min_value=13, max_value=24)
qty = st.integers(min_value=0, max_value=4)


class NaiveSync:
    """The Binance procedure written out plainly (protocols.md), predicting outputs."""

    def __init__(self, futures: bool) -> None:
        self.futures = futures
        self.book_id: int | None = None  # None: no book
        self.first = False  # no diff chained onto the snapshot yet
        self.buffer: list[DepthDiff] = []
        self.overflowed = False

    def _judge(self, d: DepthDiff) -> str:
        i = self.book_id
        assert i is not None
        if self.futures:
            if self.first:
                return "stale" if d.last_id < i else ("apply" if d.first_id <= i else "gap")
            if d.prev_id == i:
                return "apply"
            return "stale" if d.last_id <= i else "gap"
        if d.last_id <= i:
            return "stale"
        return "apply" if d.first_id <= i + 1 else "gap"

    def _buffer(self, d: DepthDiff, out: list) -> None:
        self.buffer.append(d)
        if len(self.buffer) > LIMIT:
            self.buffer.pop(0)
            if not self.overflowed:
                self.overflowed = True
                out.append(("BufferOverflow",))

    def diff(self, d: DepthDiff, out: list, live: bool = True) -> None:
        if self.book_id is None:
            if not self.buffer and not self.requested:
                out.append(("SnapshotRequest",))
                self.requested = True
            self._buffer(d, out)
            return
        v = self._judge(d)
        if v == "stale":
            return
        if v == "apply":
            self.book_id = d.last_id
            self.first = False
            return
        if not self.first or live:  # a published book (live diff after BookSynced) had a gap
            out.append(("GapDetected", self.book_id))
        out.append(("SnapshotRequest",))
        self.requested = True
        self.book_id = None
        self.overflowed = False
        self.buffer = []
        self._buffer(d, out)

    requested = False

    def snapshot(self, last_id: int, out: list) -> None:
        if self.book_id is not None and not self.first:
            return  # a verification: never changes the main book on truthful data
        pending = self.buffer
        self.buffer = []
        self.overflowed = False
        self.requested = False
        self.book_id, self.first = last_id, True
        mark = len(out)
        for d in pending:
            if self.book_id is None:
                self._buffer(d, out)
            else:
                self.diff(d, out, live=False)
        if self.book_id is not None:
            out.insert(mark, ("BookSynced", self.book_id))


class BookMachine(RuleBasedStateMachine):
    futures = False

    @initialize()
    def setup(self):
        rule_name = SyncRule.BINANCE_FUTURES if self.futures else SyncRule.BINANCE_SPOT
        self.reducer = BookReducer(
            rule_name, max_buffer=LIMIT, verify_interval_s=None, sync_retry_s=1e9
        )
        self.state = self.reducer.initial()
        self.model = NaiveSync(self.futures)
        self.truth_bids: dict[int, int] = {}
        self.truth_asks: dict[int, int] = {}
        self.history: dict[int, tuple[dict, dict]] = {100: ({}, {})}
        self.tid = 100  # the exchange's current update id
        self.sent: list[DepthDiff] = []  # every diff the exchange produced
        self.next_i = 0  # next diff to deliver
        self.delivered: list[DepthDiff] = []
        self.seq = 0
        self.last_outputs: list = []

    # ------------------------------------------------------------ the exchange

    @rule(
        span=st.integers(min_value=1, max_value=3),
        bids=st.lists(st.tuples(bid_px, qty), max_size=4),
        asks=st.lists(st.tuples(ask_px, qty), max_size=4),
    )
    def exchange_update(self, span, bids, asks):
        prev = self.sent[-1].last_id if self.sent else 100
        first = self.tid + 1
        self.tid += span
        for d, levels in ((self.truth_bids, bids), (self.truth_asks, asks)):
            for p, q in levels:
                if q:
                    d[p] = q
                else:
                    d.pop(p, None)
        self.history[self.tid] = (dict(self.truth_bids), dict(self.truth_asks))
        self.sent.append(
            DepthDiff(
                0, 0, SYM, first, self.tid, prev if self.futures else None, None, None, bids, asks
            )
        )

    # ------------------------------------------------------------ delivery

    def _feed(self, ev, model_call):
        want: list = []
        model_call(want)
        self.state, outs = self.reducer.step(self.state, ev)
        outs = list(outs)
        got = []
        for o in outs:
            assert not isinstance(o, DriftDetected | TopOfBookMismatch | CrossedBook), o
            assert o.seq == ev.seq and o.recv_ns == ev.recv_ns and o.symbol == SYM
            if isinstance(o, SnapshotRequest) and o.purpose == "sync":
                got.append(("SnapshotRequest",))
            elif isinstance(o, GapDetected):
                got.append(("GapDetected", o.book_id))
            elif isinstance(o, BookSynced):
                got.append(("BookSynced", o.last_id))
            elif isinstance(o, BufferOverflow):
                got.append(("BufferOverflow",))
        assert got == want
        self.last_outputs = outs

    def _stamp(self, d):
        self.seq += 1
        return DepthDiff(
            self.seq,
            self.seq * 1000,
            d.symbol,
            d.first_id,
            d.last_id,
            d.prev_id,
            None,
            None,
            d.bids,
            d.asks,
        )

    def _deliver(self, d):
        ev = self._stamp(d)
        self.delivered.append(d)
        self._feed(ev, lambda out: self.model.diff(ev, out))

    @precondition(lambda self: self.next_i < len(self.sent))
    @rule()
    def deliver_next(self):
        d = self.sent[self.next_i]
        self.next_i += 1
        self._deliver(d)

    @precondition(lambda self: self.next_i < len(self.sent))
    @rule()
    def lose_next(self):
        self.next_i += 1  # a gap: this diff never arrives

    @precondition(lambda self: bool(self.delivered))
    @rule()
    def duplicate_last(self):
        self._deliver(self.delivered[-1])

    @precondition(lambda self: bool(self.delivered))
    @rule(data=st.data())
    def stale_old(self, data):
        self._deliver(data.draw(st.sampled_from(self.delivered)))

    @rule(data=st.data())
    def snapshot(self, data):
        # REST: the truth at the exchange's current id, or an older one (slow response)
        ids = sorted(self.history)
        L = data.draw(st.sampled_from(ids[-4:]))
        b, a = self.history[L]
        self.seq += 1
        ev = BookSnapshot(
            self.seq, self.seq * 1000, SYM, L, list(b.items()), list(a.items()), None, "rest"
        )
        self._feed(ev, lambda out: self.model.snapshot(L, out))

    @rule(data=st.data())
    def book_ticker(self, data):
        L = data.draw(st.sampled_from(sorted(self.history)[-5:]))
        b, a = self.history[L]
        bb = max(b.items()) if b else (0, 0)
        ba = min(a.items()) if a else (0, 0)
        self.seq += 1
        ev = BookTicker(self.seq, self.seq * 1000, SYM, L, bb[0], bb[1], ba[0], ba[1])
        self._feed(ev, lambda out: None)

    @rule()
    def checkpoint_and_restore(self):
        data = json.loads(json.dumps(self.reducer.snapshot(self.state)))
        restored = self.reducer.restore(data)
        assert restored == self.state
        self.state = restored

    # ------------------------------------------------------------ invariants

    @invariant()
    def published_book_is_the_truth(self):
        if not hasattr(self, "reducer"):
            return
        book = self.reducer.book(self.state, SYM)
        assert (book is None) == (self.model.book_id is None)
        if book is None:
            return
        assert book.last_id == self.model.book_id
        tb, ta = self.history[book.last_id]
        assert book.bids == tb and book.asks == ta
        bids = sorted(tb.items(), reverse=True)
        asks = sorted(ta.items())
        assert book.top(3) == (bids[:3], asks[:3])
        if bids and asks:
            assert book.mid() == Fraction(bids[0][0] + asks[0][0], 2)
            assert book.spread() == asks[0][0] - bids[0][0]

    @invariant()
    def counts_are_consistent(self):
        if not hasattr(self, "reducer"):
            return
        c = self.reducer.totals(self.state)
        assert c.tickers_mismatched == 0 and c.drift == 0 and c.crossed == 0
        assert c.tickers_compared == c.tickers_matched
        pending = len(self.state.symbols[SYM].pending) if SYM in self.state.symbols else 0
        assert (
            c.tickers_seen
            == c.tickers_matched + c.tickers_uncomparable + c.tickers_dropped + pending
        )


class FuturesBookMachine(BookMachine):
    futures = True


TestSpotBook = BookMachine.TestCase
TestFuturesBook = FuturesBookMachine.TestCase
