"""BookReducer as a hypothesis state machine against a naive model (spot and USD-M rules).

An "exchange" evolves a true book one diff at a time (update ids ascend,
futures diffs carry ``pu``).  Rules deliver the next diff, lose one (gap),
resend the last one (duplicate), resend an old one (stale), deliver a REST
snapshot of the truth at some past or current id (stale: the buffer replay
or the first live diff finds it too old and it is fetched again; or fresh;
while synced it is a verification), deliver a bookTicker, checkpoint the
reducer through JSON and restore it, or corrupt the published book (a level
the stream never set, as a lost update the chain cannot reveal would), which
the next verification must find and repair by adopting the shadow book.
Connections: diffs come over a connection (the pipeline's FrameConn); it can
close (a reconnect follows: the book is suspended, or lost if only primed, and
the next connection's first diff resumes it or is a gap), or a successor can
open beside it (a rotation), deliver the same diffs from any point of the
stream, ahead of the old connection or behind it, and take over when the old
one closes (its diffs held until then, bounded), or close first.

Checked after every step:

* whenever the reducer publishes a book, its levels are the truth at the
  book's update id overlaid with the corruption not yet repaired, and every
  query agrees with a naive recomputation;
* the sync-relevant outputs (SnapshotRequest "sync", GapDetected,
  BookSynced, BufferOverflow) and the reported sync state (idle, buffering,
  primed, synced, resyncing, suspended) and BookWithdrawn/BookResumed equal
  what a naive model of the Binance procedure (written from
  ../shared/protocols.md, no table) predicts, drift repairs included (they
  change levels, never the sync); a book whose connection closed is never
  published until a diff of the next connection chains or a snapshot loads;
* DriftDetected lists exactly the corrupted levels in the verified range,
  BookVerified happens only when that range is clean, and truthful data never
  yields DriftDetected, TopOfBookMismatch or CrossedBook;
* a second reducer with ``inline=False`` (every diff through the table's
  driver, none through the inlined steady case) gives the same outputs and
  the same state at every step.
"""

from __future__ import annotations

import json
from fractions import Fraction

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine.book_reducer import (
    BookReducer,
    BookResumed,
    BookSynced,
    BookVerified,
    BookWithdrawn,
    BufferOverflow,
    CrossedBook,
    DriftDetected,
    GapDetected,
    TopOfBookMismatch,
)
from engine.codecs.base import SyncRule
from engine.events import BookSnapshot, BookTicker, ConnectionClosed, DepthDiff, FrameConn
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
        self.seen = False  # any diff or snapshot yet
        self.resync = False  # a published book was lost: the next sync is a resync
        self.suspended = False  # its connection closed: kept, not published
        self.feed: int | None = None  # the connection the book follows
        self.held: list[DepthDiff] = []  # another connection's diffs, until feed closes
        self.held_conn: int | None = None

    def state(self) -> str:
        if self.book_id is not None:
            if self.suspended:
                return "suspended"
            return "primed" if self.first else "synced"
        if not self.seen:
            return "idle"
        return "resyncing" if self.resync else "buffering"

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

    def published(self) -> bool:
        return self.book_id is not None and not self.suspended

    def arrive(self, conn: int, d: DepthDiff, out: list) -> str:
        """A diff over ``conn``: the book follows the first connection that delivers it."""
        if self.feed is None:
            self.feed = conn
        if conn == self.feed:
            return self.diff(d, out)
        if self.held_conn is None:
            self.held_conn = conn
        if conn == self.held_conn:
            self.held.append(d)
            self.held = self.held[-LIMIT:]
        return "held"

    def close(self, conn: int, out: list) -> list[DepthDiff]:
        """Connection ``conn`` closed; returns the held diffs it hands over (replay them)."""
        if self.held_conn == conn:
            self.held, self.held_conn = [], None
        if self.feed != conn:
            return []
        held, self.held = self.held, []
        self.feed, self.held_conn = self.held_conn, None
        if held or not self.published():
            return held
        if self.first:  # primed: lost; the next connection's first diff asks for a snapshot
            out.append(("BookWithdrawn", False))
            self.book_id = None
            self.resync = True
            self.requested = False
        else:
            out.append(("BookWithdrawn", True))
            self.suspended = True
        return []

    def diff(self, d: DepthDiff, out: list, live: bool = True) -> str:
        """Predict the outputs of one diff; returns the verdict ("apply" when it is applied)."""
        self.seen = True
        if self.book_id is None:
            if not self.buffer and not self.requested:
                out.append(("SnapshotRequest",))
                self.requested = True
            self._buffer(d, out)
            return "buffer"
        v = self._judge(d)
        if v == "stale":
            return v
        if v == "apply":
            if self.suspended:
                out.append(("BookResumed", self.book_id))
                self.suspended = False
            self.book_id = d.last_id
            self.first = False
            return v
        self.suspended = False
        if not self.first or live:  # a published book (live diff after BookSynced) had a gap
            out.append(("GapDetected", self.book_id))
            self.resync = True
        out.append(("SnapshotRequest",))
        self.requested = True
        self.book_id = None
        self.overflowed = False
        self.buffer = []
        self._buffer(d, out)
        return v

    requested = False

    def snapshot(self, last_id: int, out: list) -> None:
        self.seen = True
        if self.book_id is not None and not self.first and not self.suspended:
            return  # a verification: changes levels at most (drift), never the sync
        if self.suspended:  # reloaded: the book had been withdrawn
            self.resync, self.suspended = True, False
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
            out.insert(mark, ("BookSynced", self.book_id, self.resync))
            self.resync = False


def _range(snapshot: tuple[dict, dict]) -> tuple[int | None, int | None]:
    """The price range a full-depth verification snapshot covers: (lowest bid, highest ask)."""
    b, a = snapshot
    return (min(b) if b else None, max(a) if a else None)


class BookMachine(RuleBasedStateMachine):
    futures = False

    @initialize()
    def setup(self):
        rule_name = SyncRule.BINANCE_FUTURES if self.futures else SyncRule.BINANCE_SPOT
        kw = dict(max_buffer=LIMIT, verify_interval_s=None, sync_retry_s=1e9)
        self.reducer = BookReducer(rule_name, **kw)
        self.state = self.reducer.initial()
        self.table_driven = BookReducer(rule_name, inline=False, **kw)
        self.td_state = self.table_driven.initial()
        self.model = NaiveSync(self.futures)
        self.truth_bids: dict[int, int] = {}
        self.truth_asks: dict[int, int] = {}
        self.history: dict[int, tuple[dict, dict]] = {100: ({}, {})}
        self.tid = 100  # the exchange's current update id
        self.sent: list[DepthDiff] = []  # every diff the exchange produced
        self.next_i = 0  # next diff to deliver
        self.delivered: list[DepthDiff] = []
        self.seq = 0
        #: levels of the published book that differ from the truth: (side, price) → our qty
        self.corrupt: dict[tuple[str, int], int] = {}
        self.ever_corrupt = False
        self.conn = 1  # the connection deliver_next uses
        self.succ: int | None = None  # a rotation's successor, while both are open
        self.succ_i = 0  # the successor's next diff
        self.next_conn = 2
        self.via: int | None = None  # the connection of the last frame (FrameConn told)

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

    def _corrupt_in_range(self, snapshot_id: int, book_id: int) -> tuple[list, list]:
        """The (price, ours, theirs) a verification against ``snapshot_id`` must list."""
        floor, ceiling = _range(self.history[snapshot_id])
        tb, ta = self.history[book_id]
        bids = sorted(
            (p, q, tb.get(p, 0))
            for (side, p), q in self.corrupt.items()
            if side == "bid" and (floor is None or p >= floor)
        )
        asks = sorted(
            (p, q, ta.get(p, 0))
            for (side, p), q in self.corrupt.items()
            if side == "ask" and (ceiling is None or p <= ceiling)
        )
        return bids, asks

    def _feed(self, ev, model_call, own_stamp=True):
        corrupt_before = bool(self.corrupt)
        want: list = []
        model_call(want)
        self.state, outs = self.reducer.step(self.state, ev)
        outs = list(outs)
        # the same step with every diff through the table's driver: identical outputs and state
        self.td_state, td_outs = self.table_driven.step(self.td_state, ev)
        assert list(td_outs) == outs
        assert self.td_state == self.state
        got = []
        repaired = False
        for o in outs:
            assert not isinstance(o, CrossedBook), o
            assert o.symbol == SYM
            assert not own_stamp or (o.seq == ev.seq and o.recv_ns == ev.recv_ns)
            if isinstance(o, SnapshotRequest) and o.purpose == "sync":
                got.append(("SnapshotRequest",))
                if "older" in o.reason and "gap" not in o.reason:
                    event("unpublished snapshot too old: fetched again")
            elif isinstance(o, GapDetected):
                got.append(("GapDetected", o.book_id))
                if "older" in o.reason:
                    event("primed book retracted")
            elif isinstance(o, BookSynced):
                got.append(("BookSynced", o.last_id, o.resync))
            elif isinstance(o, BufferOverflow):
                got.append(("BufferOverflow",))
            elif isinstance(o, BookWithdrawn):
                got.append(("BookWithdrawn", o.kept))
                event(f"book withdrawn at a close, kept={o.kept}")
            elif isinstance(o, BookResumed):
                got.append(("BookResumed", o.book_id))
                event("suspended book resumed by the next connection")
            elif isinstance(o, DriftDetected):
                bids, asks = self._corrupt_in_range(o.snapshot_id, o.last_id)
                assert bids or asks
                assert (o.bids, o.asks) == (bids, asks)
                repaired = True
                event("drift found, shadow book adopted")
            elif isinstance(o, BookVerified):
                assert self._corrupt_in_range(o.snapshot_id, o.last_id) == ([], [])
            elif isinstance(o, TopOfBookMismatch):
                assert corrupt_before or self.corrupt, o
        assert got == want
        if repaired or self.model.book_id is None:
            self.corrupt = {}

    def _step_both(self, ev):
        self.state, outs = self.reducer.step(self.state, ev)
        self.td_state, td_outs = self.table_driven.step(self.td_state, ev)
        assert list(outs) == list(td_outs) == []

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

    def _applied(self, d):
        for side, levels in (("bid", d.bids), ("ask", d.asks)):  # absolute levels overwrite
            for p, _ in levels:  # corruption
                self.corrupt.pop((side, p), None)

    def _deliver(self, d, conn=None):
        conn = self.conn if conn is None else conn
        if conn != self.via:  # what the pipeline does before a frame of another connection
            self.via = conn
            self.seq += 1
            self._step_both(FrameConn(self.seq, self.seq * 1000, conn))
        ev = self._stamp(d)
        if conn == self.conn:
            self.delivered.append(d)

        def model_call(out):
            if self.model.arrive(conn, ev, out) == "apply":
                self._applied(d)

        self._feed(ev, model_call)

    def _close(self, conn):
        self.seq += 1
        ev = ConnectionClosed(self.seq, self.seq * 1000, conn, "ws://sim", 1006, "")

        def model_call(out):
            held = self.model.close(conn, out)
            if held:
                event("rotation: the successor's held diffs replayed at the close")
            for d in held:  # a rotation: the successor's diffs replayed
                if self.model.diff(d, out) == "apply":
                    self._applied(d)

        self._feed(ev, model_call, own_stamp=False)

    # ------------------------------------------------------------ connections

    @precondition(lambda self: self.succ is None)
    @rule()
    def reconnect(self):
        """The connection closes; the next one carries on from wherever the exchange is."""
        self._close(self.conn)
        self.conn, self.next_conn = self.next_conn, self.next_conn + 1

    @precondition(lambda self: self.succ is None)
    @rule(data=st.data())
    def rotation_starts(self, data):
        """A successor opens beside the connection; its stream starts anywhere near now."""
        self.succ, self.next_conn = self.next_conn, self.next_conn + 1
        lo = max(0, self.next_i - 2)
        self.succ_i = data.draw(st.integers(min_value=lo, max_value=max(lo, len(self.sent))))

    @precondition(lambda self: self.succ is not None and self.succ_i < len(self.sent))
    @rule()
    def successor_delivers(self):
        self.succ_i += 1
        self._deliver(self.sent[self.succ_i - 1], self.succ)

    @precondition(lambda self: self.succ is not None)
    @rule()
    def rotation_ends(self):
        """The old connection closes (it read everything before the close): the successor feeds."""
        self._close(self.conn)
        self.conn, self.succ = self.succ, None
        self.next_i = max(self.next_i, self.succ_i)

    @precondition(lambda self: self.succ is not None)
    @rule()
    def successor_fails(self):
        self._close(self.succ)
        self.succ = None

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

        def model_call(out):
            if self.model.book_id is None or self.model.first or self.model.suspended:
                self.corrupt = {}  # loads: a new book
            self.model.snapshot(L, out)

        self._feed(ev, model_call)

    @rule(data=st.data())
    def book_ticker(self, data):
        L = data.draw(st.sampled_from(sorted(self.history)[-5:]))
        b, a = self.history[L]
        bb = max(b.items()) if b else (0, 0)
        ba = min(a.items()) if a else (0, 0)
        self.seq += 1
        ev = BookTicker(self.seq, self.seq * 1000, SYM, L, bb[0], bb[1], ba[0], ba[1])
        self._feed(ev, lambda out: None)

    @precondition(lambda self: self.model.published())
    @rule(data=st.data())
    def corrupt_book(self, data):
        """Our book goes wrong at one level without a gap (what verification exists for)."""
        side = data.draw(st.sampled_from(["bid", "ask"]))
        p = data.draw(bid_px if side == "bid" else ask_px)
        tb, ta = self.history[self.model.book_id]
        truth = (tb if side == "bid" else ta).get(p, 0)
        q = data.draw(st.sampled_from([x for x in range(5) if x != truth]))
        for red, state in ((self.reducer, self.state), (self.table_driven, self.td_state)):
            book = red.book(state, SYM)
            book.apply(
                [(p, q)] if side == "bid" else [], [(p, q)] if side == "ask" else [], book.last_id
            )
        self.corrupt[(side, p)] = q
        self.ever_corrupt = True

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
        assert (book is None) == (not self.model.published())
        assert self.reducer.sync_state(self.state, SYM) == self.model.state()
        if book is None:
            return
        assert book.last_id == self.model.book_id
        tb, ta = (dict(x) for x in self.history[book.last_id])
        for (side, p), q in self.corrupt.items():
            levels = tb if side == "bid" else ta
            if q:
                levels[p] = q
            else:
                levels.pop(p, None)
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
        assert c.crossed == 0
        if not self.ever_corrupt:
            assert c.tickers_mismatched == 0 and c.drift == 0
        assert c.tickers_compared == c.tickers_matched + c.tickers_mismatched
        pending = len(self.state.symbols[SYM].pending) if SYM in self.state.symbols else 0
        assert (
            c.tickers_seen
            == c.tickers_compared + c.tickers_uncomparable + c.tickers_dropped + pending
        )


class FuturesBookMachine(BookMachine):
    futures = True


TestSpotBook = BookMachine.TestCase
TestFuturesBook = FuturesBookMachine.TestCase
