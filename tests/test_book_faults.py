"""BookReducer fault scenarios built from events: gaps, drift, crossed books, overflow, mismatches.

Each scenario keeps an "exchange truth" next to the events, so recovery is
checked against what the book must be, not against the reducer's own view.
"""

from __future__ import annotations

import json

import attrs

from engine.book_reducer import (
    BookReducer,
    BookSynced,
    BookVerified,
    BufferOverflow,
    CrossedBook,
    DriftDetected,
    GapDetected,
    TopOfBookMismatch,
    VerificationAbandoned,
)
from engine.codecs.base import SyncRule
from engine.events import BookSnapshot, BookTicker, ConnectionClosed, DecodeError, DepthDiff, Trade
from engine.outputs import SnapshotRequest

S = "BTCUSDT"
SEC = 1_000_000_000


@attrs.define
class Feed:
    """Builds events with increasing seq / recv_ns (1 ms apart) and folds them."""

    reducer: BookReducer
    state: object = None
    seq: int = 0
    ns: int = 10 * SEC

    def __attrs_post_init__(self):
        self.state = self.reducer.initial()

    def step(self, ev):
        self.state, outs = self.reducer.step(self.state, ev)
        return list(outs)

    def _stamp(self, advance_ns):
        self.seq += 1
        self.ns += advance_ns
        return self.seq, self.ns

    def diff(self, U, u, bids=(), asks=(), pu=None, advance_ns=1_000_000):
        seq, ns = self._stamp(advance_ns)
        return self.step(DepthDiff(seq, ns, S, U, u, pu, None, None, list(bids), list(asks)))

    def snap(self, last_id, bids, asks, depth=None):
        seq, ns = self._stamp(1_000_000)
        return self.step(BookSnapshot(seq, ns, S, last_id, list(bids), list(asks), depth, "rest"))

    def ticker(self, u, bid, ask):
        seq, ns = self._stamp(1_000_000)
        return self.step(BookTicker(seq, ns, S, u, bid[0], bid[1], ask[0], ask[1]))

    @property
    def book(self):
        return self.reducer.book(self.state, S)

    @property
    def counts(self):
        return self.reducer.counts(self.state)[S]


def kinds(outs):
    return [type(o).__name__ for o in outs]


def synced_feed(**kw) -> Feed:
    f = Feed(BookReducer(SyncRule.BINANCE_SPOT, **kw))
    out = f.diff(101, 102, bids=[(100, 1)])
    assert kinds(out) == ["SnapshotRequest"] and out[0].purpose == "sync"
    assert f.book is None  # never published before a snapshot
    assert f.diff(103, 104, asks=[(110, 3)]) == []  # buffered, no second request
    out = f.snap(100, [(100, 5), (99, 2)], [(110, 1), (111, 4)])
    assert kinds(out) == ["BookSynced"]
    assert out[0].snapshot_id == 100 and out[0].last_id == 104 and out[0].replayed == 2
    assert f.book.bids == {100: 1, 99: 2} and f.book.asks == {110: 3, 111: 4}
    return f


def test_gap_is_detected_reported_once_and_recovered_from_the_next_snapshot():
    f = synced_feed()
    out = f.diff(107, 108, bids=[(98, 7)])  # 105..106 lost
    assert kinds(out) == ["GapDetected", "SnapshotRequest"]
    gap, req = out
    assert (gap.book_id, gap.first_id, gap.last_id) == (104, 107, 108)
    assert req.purpose == "sync" and "gap" in req.reason
    assert f.book is None
    assert f.diff(109, 110, asks=[(111, 0)]) == []  # buffered; the request is not repeated
    out = f.snap(108, [(100, 1), (99, 2), (98, 7)], [(110, 3), (111, 4)])
    assert kinds(out) == ["BookSynced"] and out[0].resync and out[0].last_id == 110
    assert f.book.bids == {100: 1, 99: 2, 98: 7} and f.book.asks == {110: 3}
    c = f.counts
    assert (c.gaps, c.resyncs, c.syncs, c.sync_requests, c.stale_diffs) == (1, 1, 2, 2, 1)


def test_stale_snapshot_is_refetched_and_duplicates_are_ignored():
    f = Feed(BookReducer(SyncRule.BINANCE_SPOT))
    f.diff(201, 205, bids=[(100, 1)])
    out = f.snap(190, [(100, 9)], [(110, 1)])  # older than the buffered stream: fetch again
    assert kinds(out) == ["SnapshotRequest"] and "older" in out[0].reason
    assert f.book is None and f.counts.snapshots_too_old == 1 and f.counts.gaps == 0
    out = f.snap(203, [(100, 9)], [(110, 1)])
    assert kinds(out) == ["BookSynced"] and f.book.last_id == 205
    assert f.diff(201, 205, bids=[(100, 77)]) == []  # duplicate: ignored
    assert f.book.bids == {100: 1} and f.counts.stale_diffs == 1


def test_sync_request_is_repeated_after_the_retry_time_of_event_time():
    f = Feed(BookReducer(SyncRule.BINANCE_SPOT, sync_retry_s=5.0))
    assert kinds(f.diff(1, 2)) == ["SnapshotRequest"]
    assert f.diff(3, 4, advance_ns=4 * SEC) == []
    out = f.diff(5, 6, advance_ns=2 * SEC)
    assert kinds(out) == ["SnapshotRequest"] and "again" in out[0].reason


def test_buffer_overflow_is_bounded_counted_and_reported_once():
    f = Feed(BookReducer(SyncRule.BINANCE_SPOT, max_buffer=3))
    f.diff(1, 1)
    outs = []
    for i in range(2, 8):
        outs += f.diff(i, i, bids=[(100, i)])
    assert kinds(outs) == ["BufferOverflow"] and outs[0].limit == 3
    assert len(f.state.symbols[S].main.buffer) == 3 and f.counts.buffer_dropped == 4
    out = f.snap(5, [(100, 5)], [(110, 1)])  # the kept diffs 5..7 chain onto it
    assert kinds(out) == ["BookSynced"] and f.book.bids == {100: 7}


def _verify_setup():
    f = synced_feed(verify_interval_s=60.0)
    # the book now (id 104): bids 100:1 99:2, asks 110:3 111:4
    out = f.diff(105, 105, bids=[(99, 3)], advance_ns=61 * SEC)
    assert kinds(out) == ["SnapshotRequest"] and out[0].purpose == "verify"
    assert f.counts.verify_requests == 1
    return f


def test_verification_snapshot_that_agrees_reports_verified():
    f = _verify_setup()
    assert f.diff(106, 107, asks=[(112, 1)]) == []  # shadow buffers it
    # the exchange's snapshot at 106 (the REST answer raced the stream), deep levels beyond depth 2
    out = f.snap(106, [(100, 1), (99, 3)], [(110, 3), (111, 4)], depth=2)
    assert kinds(out) == ["BookVerified"] and out[0].last_id == 107 and out[0].snapshot_id == 106
    assert f.state.symbols[S].shadow is None and f.counts.verified == 1


def test_drift_is_detected_listing_levels_and_the_shadow_replaces_the_book():
    f = _verify_setup()
    # The truth: bid 99 is really 4 and an ask level 115 exists that we never saw
    # (a corrupted/lost update that the chain could not reveal).
    truth_bids = [(100, 1), (99, 4), (95, 1)]
    truth_asks = [(110, 3), (111, 4), (115, 2)]
    assert f.diff(106, 106, bids=[(100, 1)]) == []
    out = f.snap(105, truth_bids, truth_asks, depth=1000)  # replays 106 onto the shadow
    assert kinds(out) == ["DriftDetected"]
    d = out[0]
    assert isinstance(d, DriftDetected) and d.last_id == 106 and d.snapshot_id == 105
    assert d.bids == [(95, 0, 1), (99, 3, 4)] and d.asks == [(115, 0, 2)]
    assert f.book.bids == dict(truth_bids) and f.book.asks == dict(truth_asks)
    assert f.book.last_id == 106 and f.counts.drift == 1
    # and the repaired book keeps chaining
    assert f.diff(107, 107, bids=[(95, 0)]) == [] and f.book.bids == {100: 1, 99: 4}


def test_verification_is_abandoned_when_it_cannot_chain_or_times_out():
    f = _verify_setup()
    out = f.snap(103, [(100, 1)], [(110, 3)])  # older than the book, no buffered diffs to bridge
    assert out == []
    out = f.diff(106, 106)  # shadow at 103 cannot chain a diff starting at 106
    assert kinds(out) == ["VerificationAbandoned"] and "chain" in out[0].reason
    assert f.book.last_id == 106 and f.counts.verify_abandoned == 1
    # a request whose snapshot never comes
    out = f.diff(107, 107, advance_ns=61 * SEC)
    assert kinds(out) == ["SnapshotRequest"]
    out = f.diff(108, 108, advance_ns=31 * SEC)
    assert kinds(out) == ["VerificationAbandoned"] and isinstance(out[0], VerificationAbandoned)


def test_crossed_book_is_reported_once_per_episode():
    f = synced_feed()
    out = f.diff(105, 105, bids=[(110, 1)])  # bid 110 >= ask 110
    assert kinds(out) == ["CrossedBook"] and isinstance(out[0], CrossedBook)
    assert (out[0].bid, out[0].ask) == (110, 110)
    assert f.diff(106, 106, bids=[(111, 1)]) == []  # still crossed: not again
    assert f.diff(107, 107, bids=[(110, 0), (111, 0)]) == []  # uncrossed
    assert kinds(f.diff(108, 108, asks=[(99, 1)])) == ["CrossedBook"]
    assert f.counts.crossed == 2


def test_book_ticker_held_until_its_u_then_compared():
    f = synced_feed()  # id 104: best bid 100x1, best ask 110x3
    assert f.ticker(104, (100, 1), (110, 3)) == []  # at the book's id: compared now
    assert f.ticker(106, (100, 5), (110, 3)) == []  # held: the book is at 104
    assert f.ticker(107, (1, 1), (2, 2)) == []  # held; the book will jump past it
    assert f.counts.tickers_compared == 1
    assert f.diff(105, 106, bids=[(100, 5)]) == []  # reaches 106 exactly: match
    assert f.diff(107, 109) == []  # jumps past 107 (inside a batch): uncomparable
    c = f.counts
    assert (c.tickers_compared, c.tickers_matched, c.tickers_uncomparable) == (2, 2, 1)
    assert f.ticker(100, (1, 1), (2, 2)) == []  # behind the book: uncomparable
    out = f.ticker(109, (100, 5), (111, 4))  # wrong ask: a mismatch asks for verification
    assert kinds(out) == ["TopOfBookMismatch", "SnapshotRequest"]
    m = out[0]
    assert isinstance(m, TopOfBookMismatch)
    assert m.ours == (100, 5, 110, 3) and m.theirs == (100, 5, 111, 4)
    assert out[1].purpose == "verify" and f.counts.tickers_mismatched == 1


def test_pending_book_tickers_are_bounded():
    f = Feed(BookReducer(SyncRule.BINANCE_SPOT, max_pending_tickers=2))
    for u in (5, 6, 7):
        f.ticker(u, (1, 1), (2, 1))
    assert f.counts.tickers_dropped == 1 and len(f.state.symbols[S].pending) == 2


def test_other_events_are_ignored():
    f = synced_feed()
    before = json.dumps(f.reducer.snapshot(f.state), sort_keys=True)
    for ev in (
        Trade(1, 1, S, 1, 100, 1, "buy", None, None, 1, 1),
        DecodeError(2, 2, "wss://x", "bad", b"{"),
        ConnectionClosed(3, 3, 1, "wss://x", None, ""),
    ):
        assert f.step(ev) == []
    assert json.dumps(f.reducer.snapshot(f.state), sort_keys=True) == before


def test_fault_scenario_restores_mid_way_to_identical_outputs():
    def script(f: Feed, checkpoint: bool):
        outs = []
        steps = [
            lambda: f.diff(101, 102, bids=[(100, 1)]),
            lambda: f.snap(101, [(100, 5)], [(110, 1)]),
            lambda: f.ticker(104, (100, 1), (110, 1)),
            lambda: f.diff(103, 103, asks=[(110, 2)], advance_ns=61 * SEC),
            lambda: f.diff(104, 104),
            lambda: f.snap(103, [(100, 1)], [(110, 9)]),
            lambda: f.diff(107, 108),
            lambda: f.diff(109, 109, bids=[(101, 1)]),
            lambda: f.snap(108, [(100, 1)], [(110, 1)]),
        ]
        for s in steps:
            if checkpoint:
                f.state = f.reducer.restore(json.loads(json.dumps(f.reducer.snapshot(f.state))))
            outs += s()
        return outs

    r = BookReducer(SyncRule.BINANCE_SPOT, verify_interval_s=60.0)
    a, b = script(Feed(r), False), script(Feed(r), True)
    assert a == b
    names = kinds(a)
    for want in ("BookSynced", "DriftDetected", "GapDetected", "SnapshotRequest"):
        assert want in names
    assert isinstance(a[1], BookSynced)
    assert not any(isinstance(o, BufferOverflow | BookVerified) for o in a)
    assert any(isinstance(o, GapDetected) for o in a)
    assert [o.purpose for o in a if isinstance(o, SnapshotRequest)] == ["sync", "verify", "sync"]


def test_gap_right_after_a_published_snapshot_is_a_gap_and_the_next_sync_a_resync():
    """No diff had chained yet, but BookSynced was out: consumers saw that book, so say so."""
    f = Feed(BookReducer(SyncRule.BINANCE_SPOT))
    out = f.snap(200, [(100, 1)], [(110, 1)])
    assert kinds(out) == ["BookSynced"]
    out = f.diff(205, 207, bids=[(100, 2)])  # 201..204 never seen
    assert kinds(out) == ["GapDetected", "SnapshotRequest"] and out[0].book_id == 200
    assert f.book is None and f.counts.gaps == 1 and f.counts.snapshots_too_old == 1
    out = f.snap(207, [(100, 3)], [(110, 1)])
    assert kinds(out) == ["BookSynced"] and out[0].resync
