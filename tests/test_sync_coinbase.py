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
reported, and a table-driven twin (``inline=False``) agrees.

``GapsMachine``: :class:`engine.sequence_gaps.SequenceGaps` against a naive
model: per-product trade ids (lost trades are TradeIdGaps naming the
missing ids, repeats are counted) and per-connection message numbers (a gap
is a SequenceGap plus a sync SnapshotRequest for each book that came over the
connection; a reopened connection counts afresh).
"""

from __future__ import annotations

import json

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine import serde
from engine.book_reducer import BookReducer, BookSynced, CrossedBook
from engine.codecs.base import SyncRule
from engine.events import (
    BookSnapshot,
    ConnectionOpened,
    DepthDiff,
    StreamSequence,
    Trade,
)
from engine.outputs import SnapshotRequest
from engine.sequence_gaps import SequenceGap, SequenceGaps, TradeIdGap

SYM = "BTC-USD"
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
            else:
                raise AssertionError(f"unexpected output {o}")
        assert got == want

    def _crossing(self, want):
        now = crossed(self.model_book)
        if now and not self.model_crossed:
            want.append(("crossed",))
        self.model_crossed = now

    # ------------------------------------------------------------ the exchange and the feed

    @rule()
    def subscribe(self):
        """A (re)subscribe: the exchange sends a snapshot of its book in the stream."""
        self.seq += 1
        b, a = self.truth
        snap = BookSnapshot(
            self.seq, self.seq, SYM, self.seq, sorted(b.items()), sorted(a.items()), None, "stream"
        )
        self.model_book = (dict(b), dict(a))
        self.model_id = self.seq
        self.requested = False
        self.fresh = True
        self.model_crossed = False
        want = [("synced", self.seq, False)]
        self._crossing(want)  # announced after BookSynced
        self._feed(snap, want)

    def _diff(self, bids, asks, same_id: bool = False) -> DepthDiff:
        if not same_id:
            self.seq += 1
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
        self.fresh = False

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
        c = self.reducer.counts(self.state)[SYM]
        assert c.gaps == 0 and c.resyncs == 0


TestCoinbaseSync = CoinbaseMachine.TestCase


# =============================================================== trade ids, connection numbers

PRODUCTS = ["BTC-USD", "ETH-USD"]
URLS = ["wss://a", "wss://b"]


class GapsMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        self.reducer = SequenceGaps(trade_ids=True)
        self.state = self.reducer.initial()
        self.seq = 0
        self.next_tid = dict.fromkeys(PRODUCTS, 1000)
        self.model_last_tid: dict[str, int] = {}
        self.model_gaps = dict.fromkeys(PRODUCTS, 0)
        self.model_repeats = dict.fromkeys(PRODUCTS, 0)
        self.next_num = dict.fromkeys(URLS, 0)
        self.model_last_num: dict[str, int] = {}
        self.model_books: dict[str, list[str]] = {u: [] for u in URLS}
        self.model_seq_gaps = 0

    def _step(self, ev, want):
        self.state, outs = self.reducer.step(self.state, ev)
        assert list(outs) == want

    def _stamp(self) -> int:
        self.seq += 1
        return self.seq

    # ------------------------------------------------------------ trades

    def _trade(self, sym, tid, want):
        s = self._stamp()
        self._step(Trade(s, s, sym, tid, 1, 1, "buy", 0, 0, tid, tid, False), want)

    @rule(sym=st.sampled_from(PRODUCTS), lost=st.integers(min_value=0, max_value=3))
    def trade(self, sym, lost):
        tid = self.next_tid[sym] + lost
        self.next_tid[sym] = tid + 1
        last = self.model_last_tid.get(sym)
        want = []
        if last is not None and tid != last + 1:
            want = [TradeIdGap(self.seq + 1, self.seq + 1, sym, last + 1, tid)]
            self.model_gaps[sym] += 1
        self.model_last_tid[sym] = tid
        self._trade(sym, tid, want)

    @precondition(lambda self: self.model_last_tid)
    @rule(data=st.data())
    def repeated_trade(self, data):
        sym = data.draw(st.sampled_from(sorted(self.model_last_tid)))
        tid = data.draw(st.integers(min_value=1000, max_value=self.model_last_tid[sym]))
        self.model_repeats[sym] += 1
        self._trade(sym, tid, [])

    # ------------------------------------------------------------ connection numbers

    @rule(
        url=st.sampled_from(URLS),
        lost=st.integers(min_value=0, max_value=2),
        books=st.lists(st.sampled_from(PRODUCTS), max_size=2),
    )
    def message(self, url, lost, books):
        n = self.next_num[url] + lost
        self.next_num[url] = n + 1
        s = self._stamp()
        last = self.model_last_num.get(url)
        want: list = []
        if last is not None and n != last + 1:
            syms = list(self.model_books[url])
            want = [SequenceGap(s, s, url, last + 1, n, syms)]
            want += [SnapshotRequest(s, s, p, "sync", "") for p in syms]
            self.model_seq_gaps += 1
        self.model_last_num[url] = n
        self.state, outs = self.reducer.step(self.state, StreamSequence(s, s, url, n))
        outs = list(outs)
        # the reason text is the reducer's: compare the rest
        assert [type(o) for o in outs] == [type(o) for o in want]
        if want:
            assert outs[0] == want[0]
            assert [(o.symbol, o.purpose) for o in outs[1:]] == [
                (o.symbol, "sync") for o in want[1:]
            ]
        for p in books:  # the frame's book events
            self._step(DepthDiff(s, s, p, n, n, None, None, None, [], []), [])
            if p not in self.model_books[url]:
                self.model_books[url].append(p)

    @rule(url=st.sampled_from(URLS))
    def reconnect(self, url):
        s = self._stamp()
        self.next_num[url] = 0
        self.model_last_num.pop(url, None)
        self.model_books[url] = []
        self._step(ConnectionOpened(s, s, 1, url), [])

    @rule()
    def checkpoint_and_restore(self):
        self.state = self.reducer.restore(json.loads(json.dumps(self.reducer.snapshot(self.state))))

    @invariant()
    def counts_are_the_models(self):
        for sym in PRODUCTS:
            rep = self.reducer.symbol_summary(self.state, sym)
            if sym not in self.model_last_tid and not self.model_repeats[sym]:
                assert rep is None
                continue
            assert rep["trade_id_gaps"] == self.model_gaps[sym]
            assert rep["trades_repeated"] == self.model_repeats[sym]
        assert self.reducer.summary(self.state)["sequence_gaps"] == self.model_seq_gaps


TestSequenceGaps = GapsMachine.TestCase
