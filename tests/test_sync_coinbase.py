"""Coinbase's sync rule and continuity checks as hypothesis state machines against naive models.

``CoinbaseMachine``: a BookReducer with the Coinbase rule (the book comes only
from in-stream snapshots, which reset it; update ids only rise: the Exchange
feed's journal seq, Advanced Trade's sequence_num, several events of one
message sharing it) against a naive model written from ../shared/protocols.md
(no table): diffs before the first snapshot are dropped once it comes, every
later diff applies, a resubscribe's snapshot replaces the book.  An
"exchange" evolves a true book; rules subscribe (snapshot of the truth),
deliver an update, lose one (undetectable on this feed: the book then
differs from the truth until the next snapshot, exactly as the model's),
deliver a second event of the same message, deliver a diff from before the
book's snapshot, and checkpoint/restore.  After every step the published
book equals the model's, a fresh snapshot makes it the truth, the outputs
(SnapshotRequest, BookSynced, CrossedBook) are the model's, no gap is ever
reported but the connection's: every frame carries Advanced Trade's
connection-wide number, and a lost message (the book's or another
channel's) takes the published book off the air at the next number
(GapDetected, a sync request, nothing published until the resubscribe's
snapshot, a resync), a reconnect counts afresh; and a table-driven twin
(``inline=False``) agrees.

``TradeIdsMachine``: :class:`engine.sequence_gaps.TradeIds` against a naive
model: per-product trade ids rise by 1; lost trades are TradeIdGaps naming
the missing ids, repeats are counted, never gaps.
"""

from __future__ import annotations

import json

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine import serde
from engine.book_reducer import BookReducer, BookSynced, CrossedBook, GapDetected
from engine.codecs.base import SyncRule
from engine.events import (
    BookSnapshot,
    ConnectionOpened,
    DepthDiff,
    StreamSequence,
    Trade,
)
from engine.outputs import SnapshotRequest
from engine.sequence_gaps import TradeIdGap, TradeIds

SYM = "BTC-USD"
URL = "wss://advanced-trade-ws.coinbase.com"
bid_px = st.integers(min_value=1, max_value=12)  # the truth never crosses; lost updates may
ask_px = st.integers(min_value=13, max_value=24)
qty = st.integers(min_value=0, max_value=4)
changes = st.tuples(
    st.lists(st.tuples(bid_px, qty), max_size=4), st.lists(st.tuples(ask_px, qty), max_size=4)
)


def apply(book: tuple[dict, dict], bids, asks) -> None:
    for d, levels in zip(book, (bids, asks), strict=True):
        for p, q in levels:
            if q:
                d[p] = q
            else:
                d.pop(p, None)


def crossed(book: tuple[dict, dict]) -> bool:
    b, a = book
    return bool(b and a and max(b) >= min(a))


class CoinbaseMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        kw = dict(verify_interval_s=None, sync_retry_s=1e9)
        self.reducer = BookReducer(SyncRule.COINBASE, **kw)
        self.state = self.reducer.initial()
        self.twin = BookReducer(SyncRule.COINBASE, inline=False, **kw)
        self.twin_state = self.twin.initial()
        self.truth: tuple[dict, dict] = ({}, {})
        self.seq = 0  # journal seq = the id of each frame's events
        self.model_book: tuple[dict, dict] | None = None
        self.model_id = -1
        self.model_crossed = False
        self.requested = False  # a sync SnapshotRequest is outstanding (diffs before a book)
        self.fresh = False  # the book is a snapshot of the truth no lost update has touched
        self.last_diff: DepthDiff | None = None
        self.num = -1  # the connection's last message number (Advanced Trade sequence_num)
        self.lost = 0  # messages lost since (any channel: the book's or another's)
        self.resyncing = False  # a published book was lost: its next snapshot is a resync
        self.model_gaps = self.model_resyncs = 0
        self.counting = False  # a number has been seen on this connection

    def _feed(self, ev, want):
        self.state, outs = self.reducer.step(self.state, ev)
        self.twin_state, twin_outs = self.twin.step(self.twin_state, ev)
        assert list(twin_outs) == list(outs) and self.twin_state == self.state
        got = []
        for o in outs:
            assert o.seq == ev.seq and o.symbol == SYM
            if isinstance(o, SnapshotRequest):
                got.append(("request", o.purpose))
            elif isinstance(o, BookSynced):
                got.append(("synced", o.last_id, o.resync))
            elif isinstance(o, CrossedBook):
                got.append(("crossed",))
            elif isinstance(o, GapDetected):
                assert "sequence_num gap" in o.reason
                got.append(("gap",))
            else:
                raise AssertionError(f"unexpected output {o}")
        assert got == want

    def _crossing(self, want):
        now = crossed(self.model_book)
        if now and not self.model_crossed:
            want.append(("crossed",))
        self.model_crossed = now

    # ------------------------------------------------------------ the exchange and the feed

    def _number(self):
        """The frame's connection-wide number comes first (the codec emits it first); after a
        loss it reveals a gap that takes the published book off the air."""
        self.num += 1 + self.lost
        want: list = []
        # the first number of a connection is its start: a loss before it cannot show
        if self.lost and self.counting and self.model_book is not None:
            want = [("gap",), ("request", "sync")]
            event("a sequence_num gap took the book off the air")
            self.model_gaps += 1
            self.model_book = None
            self.resyncing = self.requested = True
            self.fresh = self.model_crossed = False
        self.lost = 0
        self.counting = True
        self._feed(StreamSequence(self.seq, self.seq, URL, self.num), want)

    @rule()
    def subscribe(self):
        """A (re)subscribe: the exchange sends a snapshot of its book in the stream."""
        self.seq += 1
        self._number()
        b, a = self.truth
        snap = BookSnapshot(
            self.seq, self.seq, SYM, self.seq, sorted(b.items()), sorted(a.items()), None, "stream"
        )
        self.model_book = (dict(b), dict(a))
        self.model_id = self.seq
        self.requested = False
        self.fresh = True
        self.model_crossed = False
        if self.resyncing:
            event("resynced by a fresh snapshot")
        want = [("synced", self.seq, self.resyncing)]
        self.model_resyncs += self.resyncing
        self.resyncing = False
        self._crossing(want)  # announced after BookSynced
        self._feed(snap, want)

    def _diff(self, bids, asks, same_id: bool = False) -> DepthDiff:
        if not same_id:
            self.seq += 1
            self._number()
        i = self.seq
        return DepthDiff(i, i, SYM, i, i, None, None, None, list(bids), list(asks))

    def _deliver(self, d: DepthDiff):
        want: list = []
        if self.model_book is None:
            if not self.requested:
                want.append(("request", "sync"))
                self.requested = True
        elif d.last_id >= self.model_id:
            apply(self.model_book, d.bids, d.asks)
            self.model_id = d.last_id
            self._crossing(want)
        self._feed(d, want)
        self.last_diff = d

    @rule(c=changes)
    def update(self, c):
        apply(self.truth, *c)
        self._deliver(self._diff(*c))

    @rule(c=changes)
    def lose_update(self, c):
        """The exchange changed its book; the update never arrived (nothing can tell)."""
        apply(self.truth, *c)
        self.seq += 1
        self.lost += 1
        self.fresh = False

    @rule()
    def lose_another_channels_message(self):
        """A trade or heartbeat of the same connection never arrived: the book cannot know
        what was lost, so the gap still costs it (Coinbase: resubscribe)."""
        self.lost += 1

    @rule()
    def reconnect(self):
        """A new connection counts from its own start."""
        self.seq += 1
        self.num, self.lost, self.counting = -1, 0, False
        self._feed(ConnectionOpened(self.seq, self.seq, 2, URL), [])

    @precondition(lambda self: self.last_diff is not None and self.last_diff.last_id == self.seq)
    @rule(c=changes)
    def another_event_of_the_same_message(self, c):
        """Advanced Trade: several events of one message share its sequence_num."""
        apply(self.truth, *c)
        self._deliver(self._diff(*c, same_id=True))

    @precondition(lambda self: self.model_book is not None and self.model_id > 1)
    @rule(c=changes, data=st.data())
    def diff_from_before_the_snapshot(self, c, data):
        """An update older than the book (its id below the book's): already in it, dropped."""
        old = data.draw(st.integers(min_value=0, max_value=self.model_id - 1))
        self.seq += 1
        self._number()
        if self.model_book is None:
            return  # the number revealed a loss: the book is gone (tested above)
        d = DepthDiff(self.seq, self.seq, SYM, old, old, None, None, None, *map(list, c))
        self._feed(d, [])

    @rule()
    def checkpoint_and_restore(self):
        data = json.loads(json.dumps(self.reducer.snapshot(self.state)))
        self.state = self.reducer.restore(data)
        self.twin_state = self.twin.restore(json.loads(json.dumps(serde.dump(self.twin_state))))

    # ------------------------------------------------------------ invariants

    @invariant()
    def published_book_is_the_models(self):
        c = self.reducer.counts(self.state).get(SYM)
        if c is not None:
            assert (c.gaps, c.resyncs) == (self.model_gaps, self.model_resyncs)
        book = self.reducer.book(self.state, SYM)
        if self.model_book is None:
            assert book is None
            return
        assert book is not None
        assert (book.bids, book.asks) == self.model_book
        assert book.last_id == self.model_id
        if self.fresh:
            assert (book.bids, book.asks) == self.truth
        assert self.reducer.sync_state(self.state, SYM) in ("primed", "synced")


TestCoinbaseSync = CoinbaseMachine.TestCase


# =============================================================== trade ids

PRODUCTS = ["BTC-USD", "ETH-USD"]


class TradeIdsMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        self.reducer = TradeIds()
        self.state = self.reducer.initial()
        self.seq = 0
        self.next_tid = dict.fromkeys(PRODUCTS, 1000)
        self.model_last: dict[str, int] = {}
        self.model_gaps = dict.fromkeys(PRODUCTS, 0)
        self.model_missing = dict.fromkeys(PRODUCTS, 0)
        self.model_repeats = dict.fromkeys(PRODUCTS, 0)

    def _trade(self, sym, tid, want):
        self.seq += 1
        s = self.seq
        ev = Trade(s, s, sym, tid, 1, 1, "buy", 0, 0, tid, tid, False)
        self.state, outs = self.reducer.step(self.state, ev)
        assert list(outs) == want

    @rule(sym=st.sampled_from(PRODUCTS), lost=st.integers(min_value=0, max_value=3))
    def trade(self, sym, lost):
        tid = self.next_tid[sym] + lost
        self.next_tid[sym] = tid + 1
        last = self.model_last.get(sym)
        want = []
        if last is not None and tid != last + 1:
            want = [TradeIdGap(self.seq + 1, self.seq + 1, sym, last + 1, tid)]
            self.model_gaps[sym] += 1
            self.model_missing[sym] += tid - last - 1
        self.model_last[sym] = tid
        self._trade(sym, tid, want)

    @precondition(lambda self: self.model_last)
    @rule(data=st.data())
    def repeated_trade(self, data):
        sym = data.draw(st.sampled_from(sorted(self.model_last)))
        tid = data.draw(st.integers(min_value=1000, max_value=self.model_last[sym]))
        self.model_repeats[sym] += 1
        self._trade(sym, tid, [])

    @rule()
    def checkpoint_and_restore(self):
        self.state = self.reducer.restore(json.loads(json.dumps(self.reducer.snapshot(self.state))))

    @invariant()
    def counts_are_the_models(self):
        for sym in PRODUCTS:
            rep = self.reducer.symbol_summary(self.state, sym)
            if rep is None:
                assert sym not in self.model_last
                continue
            assert rep["trade_id_gaps"] == self.model_gaps[sym]
            assert rep["trades_missing"] == self.model_missing[sym]
            assert rep["trades_repeated"] == self.model_repeats[sym]


TestTradeIds = TradeIdsMachine.TestCase
