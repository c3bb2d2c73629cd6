"""The OKX sync rule in the book reducer, as a hypothesis state machine against a naive model.

An "exchange" evolves a true book (prices of several precisions, as OKX
instruments have) and writes OKX v5 ``books`` frames itself, as JSON text
(snapshot with ``prevSeqId`` -1, updates whose ``seqId`` steps by 1..5, empty
keep-alive updates repeating the id, the maintenance reset where ``seqId``
drops below ``prevSeqId``, the 2022 form without sequence numbers), each
stamped with the checksum of the true book computed here from decimal
strings (``Decimal.normalize``, not the engine's renderer).  The frames go
through the real codec into ``BookReducer(sync_rule="okx")``.  Rules deliver
the next frame, lose one, duplicate one, corrupt a checksum, send a fresh
snapshot (a resubscription), send a REST snapshot (OKX's newer procedure),
and checkpoint/restore the reducer through JSON.

The naive model is OKX's procedure as written in ../shared/protocols.md and
OKX's docs, with its own dict book and its own checksum: a snapshot whose
checksum fails is not a book; an update chains when ``prevSeqId`` is the
book's ``seqId`` (first after a snapshot: ``seqId`` ≤ id dropped,
``prevSeqId`` ≤ id < ``seqId`` applies), duplicates drop, anything else is a
gap; after applying, a non-zero checksum must match.  Checked after every
step: the reducer's GapDetected/BookSynced outputs and sync state are the
model's, a published book is the model's book level for level (and the
truth's whenever sequence numbers are on), and the checksum counters add up.
"""

from __future__ import annotations

import json
import zlib
from decimal import Decimal

import orjson
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine import num, serde
from engine.book_reducer import BookReducer, BookSynced, ChecksumMismatch, GapDetected
from engine.codecs.okx import Okx

SYM = "PEPE-USDT"
WS = "wss://ws.okx.com:8443/ws/v5/public"
REST = "https://www.okx.com/api/v5/market/books?instId=PEPE-USDT&sz=400"

#: prices of mixed precision (a whole number, 1, 3 and 8 decimals) around 1000 .. 1001
bid_px = st.sampled_from(["999", "999.5", "999.125", "999.00000001", "998", "997.7", "996.25"])
ask_px = st.sampled_from(["1001", "1001.5", "1001.125", "1001.00000001", "1002", "1003.7"])
qty = st.sampled_from(["0", "0", "1", "0.5", "2.25", "0.00000001", "30"])


def okx_text(d: Decimal) -> str:
    return format(d.normalize(), "f")


def naive_checksum(bids: dict[Decimal, Decimal], asks: dict[Decimal, Decimal]) -> int:
    b = sorted(bids.items(), reverse=True)[:25]
    a = sorted(asks.items())[:25]
    parts: list[str] = []
    for i in range(max(len(b), len(a))):
        for side in (b, a):
            if i < len(side):
                parts += [okx_text(side[i][0]), okx_text(side[i][1])]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def apply(book: tuple[dict, dict], bids, asks) -> None:
    for side, levels in zip(book, (bids, asks), strict=True):
        for p, q in levels:
            if Decimal(q):
                side[Decimal(p)] = Decimal(q)
            else:
                side.pop(Decimal(p), None)


class Model:
    """OKX's procedure, naively: a dict book, its id, whether a diff has chained yet, a buffer."""

    def __init__(self) -> None:
        self.book: tuple[dict, dict] | None = None
        self.id = -1
        self.chained = False
        self.lost = False  # a published book was lost: the next sync is a resync
        self.wanted = False  # no book: a snapshot has been asked for
        self.buffer: list[tuple] = []  # updates received while there is no book
        self.verified = self.mismatches = 0  # checksums compared

    def _check(self, book: tuple[dict, dict], cs: int | None) -> bool:
        if cs is None:
            return True
        ok = naive_checksum(*book) == cs
        self.verified += ok
        self.mismatches += not ok
        return ok

    def state(self) -> str:
        if self.book is not None:
            return "synced" if self.chained else "primed"
        if not self.wanted:
            return "idle"
        return "resyncing" if self.lost else "buffering"

    def snapshot(self, sid: int, bids, asks, cs: int | None, out: list, rest: bool) -> None:
        if rest and self.book is not None and self.chained:
            return  # a REST snapshot of a synced book is a verification, not a reset
        book: tuple[dict, dict] = ({}, {})
        apply(book, bids, asks)
        if not self._check(book, cs):
            out.append(("ChecksumMismatch",))  # not a book: ask again, keep what was buffered
            self.book, self.lost, self.wanted = None, True, True
            return
        self.book, self.id, self.chained = book, sid, False
        replay, self.buffer = self.buffer, []
        k = len(out)
        for u in replay:  # updates buffered before the snapshot: the first-diff test applies
            self.update(*u, out, loading=True)
        if self.book is not None:
            out.insert(k, ("BookSynced", self.lost))
            self.lost = self.wanted = False

    def update(self, seq_id, prev, bids, asks, cs, out: list, loading: bool = False) -> str:
        if self.book is None:
            self.wanted = True
            self.buffer.append((seq_id, prev, bids, asks, cs))
            return "buffered"
        if prev is not None and prev != self.id:
            if seq_id <= self.id:
                return "stale"
            if self.chained or prev > self.id:  # updates are missing
                if not loading:  # a published book is lost (while loading: fetch again, silently)
                    out.append(("GapDetected",))
                    self.lost = True
                self.book, self.wanted = None, True
                self.buffer.append((seq_id, prev, bids, asks, cs))
                return "gap"
        apply(self.book, bids, asks)
        self.id = seq_id if seq_id is not None else self.id
        if not self._check(self.book, cs):
            out.append(("ChecksumMismatch",))
            self.book, self.lost, self.wanted = None, True, True
            return "mismatch"
        self.chained = True
        return "applied"


class OkxBookMachine(RuleBasedStateMachine):
    legacy = False  # 2022 frames: no seqId / prevSeqId

    @initialize()
    def setup(self):
        self.codec = Okx()
        self.reducer = BookReducer("okx", verify_interval_s=None, sync_retry_s=1e9)
        self.state = self.reducer.initial()
        self.model = Model()
        self.truth: tuple[dict, dict] = ({}, {})
        self.sid = 1000
        self.ts = 1_700_000_000_000
        self.sent: list[tuple[bytes, tuple]] = []  # (frame, what the model needs) per update
        self.next_i = 0
        self.seq = 0
        self.reset_seen = False
        self.snapshot(bids=[("999", "1")], asks=[("1001", "2")])

    # ------------------------------------------------------------ the exchange

    def _frame(self, action: str, d: dict) -> bytes:
        msg = {"arg": {"channel": "books", "instId": SYM}, "action": action, "data": [d]}
        return orjson.dumps(msg)

    @rule(
        step=st.integers(1, 5),
        bids=st.lists(st.tuples(bid_px, qty), max_size=4),
        asks=st.lists(st.tuples(ask_px, qty), max_size=4),
        checksum=st.booleans(),
    )
    def exchange_update(self, step, bids, asks, checksum):
        prev, self.sid, self.ts = self.sid, self.sid + step, self.ts + 100
        apply(self.truth, bids, asks)
        self._queue_update(prev, self.sid, bids, asks, checksum)

    @rule()
    def exchange_keepalive(self):
        self._queue_update(self.sid, self.sid, [], [], True)

    @precondition(lambda self: not self.legacy)
    @rule(drop=st.integers(1, 900))
    def exchange_sequence_reset(self, drop):
        prev, self.sid = self.sid, max(0, self.sid - drop)
        self.reset_seen = True
        self._queue_update(prev, self.sid, [], [], True)

    def _queue_update(self, prev, sid, bids, asks, checksum):
        cs = naive_checksum(*self.truth) if checksum else None
        d: dict = {
            "asks": [[p, q, "0", "1"] for p, q in asks],
            "bids": [[p, q, "0", "1"] for p, q in bids],
            "ts": str(self.ts),
            "checksum": cs or 0,
        }
        if not self.legacy:
            d["prevSeqId"], d["seqId"] = prev, sid
        ids = (None, None) if self.legacy else (sid, prev)
        self.sent.append((self._frame("update", d), (*ids, bids, asks, cs or None)))

    def _levels(self):
        b = [
            [okx_text(p), okx_text(q), "0", "1"]
            for p, q in sorted(self.truth[0].items(), reverse=True)
        ]
        a = [[okx_text(p), okx_text(q), "0", "1"] for p, q in sorted(self.truth[1].items())]
        return b, a

    @rule(
        bids=st.lists(st.tuples(bid_px, qty), max_size=3),
        asks=st.lists(st.tuples(ask_px, qty), max_size=3),
        bad=st.booleans(),
    )
    def snapshot(self, bids, asks, bad=False):
        """A (re)subscription: OKX sends the whole book as it stands, then updates from there."""
        apply(self.truth, bids, asks)
        self.sent, self.next_i = [], 0  # a new subscription: what was in flight is gone
        self.ts += 100
        b, a = self._levels()
        cs = naive_checksum(*self.truth) + (1 if bad else 0)
        cs = cs if cs < 1 << 31 else cs - 2
        d = {"asks": a, "bids": b, "ts": str(self.ts), "checksum": cs}
        if not self.legacy:
            d["prevSeqId"], d["seqId"] = -1, self.sid
        sid = self.ts if self.legacy else self.sid
        self._feed(self._frame("snapshot", d), lambda out: self.model.snapshot(
            sid, [x[:2] for x in b], [x[:2] for x in a], cs or None, out, False))  # fmt: skip
        if bad:
            event("snapshot with a bad checksum")

    # (after a sequence reset the ids of a REST book and ours can coincide across it: no REST then)
    @precondition(lambda self: not self.legacy and not self.reset_seen)
    @rule()
    def rest_snapshot(self):
        """OKX's newer procedure: a REST book at the current seqId (updates still in flight apply)."""
        b, a = self._levels()
        body = {"code": "0", "msg": "", "data": [{"asks": a, "bids": b, "ts": str(self.ts),
                                                   "seqId": self.sid}]}  # fmt: skip
        frame = orjson.dumps(body)
        self._feed(frame, lambda out: self.model.snapshot(
            self.sid, [x[:2] for x in b], [x[:2] for x in a], None, out, True), "rest", REST)  # fmt: skip

    # ------------------------------------------------------------ delivery

    def _feed(self, frame: bytes, model_call, kind: str = "text", source: str = WS) -> None:
        self.seq += 1
        want: list = []
        model_call(want)
        evs = self.codec.decode(self.seq, self.seq * 1000, kind, source, frame)
        assert len(evs) == 1 and type(evs[0]).__name__ != "DecodeError", evs
        self.state, outs = self.reducer.step(self.state, evs[0])
        got = []
        for o in outs:
            if isinstance(o, GapDetected):
                got.append(("GapDetected",))
                event(f"gap: {o.reason}")
            elif isinstance(o, BookSynced):
                got.append(("BookSynced", o.resync))
            elif isinstance(o, ChecksumMismatch):
                got.append(("ChecksumMismatch",))
        assert got == want, (got, want)

    def _deliver(self, i: int) -> None:
        frame, (sid, prev, bids, asks, cs) = self.sent[i]
        self._feed(frame, lambda out: event(self.model.update(sid, prev, bids, asks, cs, out)))

    @precondition(lambda self: self.next_i < len(self.sent))
    @rule()
    def deliver_next(self):
        self.next_i += 1
        self._deliver(self.next_i - 1)

    @precondition(lambda self: self.next_i < len(self.sent))
    @rule()
    def lose_next(self):
        self.next_i += 1

    @precondition(lambda self: 0 < self.next_i)
    @rule(back=st.integers(1, 3))
    def duplicate_old(self, back):
        i = max(0, self.next_i - back)
        frame, info = self.sent[i]
        if info[1] is not None and info[0] == info[1]:
            return  # a keep-alive repeats an id: re-sending one is not a duplicate OKX would send
        self._deliver(i)

    @precondition(lambda self: self.next_i < len(self.sent) and self.sent[self.next_i][1][4])
    @rule()
    def corrupt_next_checksum(self):
        frame, info = self.sent[self.next_i]
        cs = info[4]
        bad = cs + 1 if cs < (1 << 31) - 1 else cs - 1
        frame = frame.replace(f'"checksum":{cs}'.encode(), f'"checksum":{bad or 2}'.encode())
        self.sent[self.next_i] = (frame, (*info[:4], bad or 2))

    @rule()
    def checkpoint_and_restore(self):
        data = json.loads(json.dumps(self.reducer.snapshot(self.state)))
        self.state = self.reducer.restore(data)
        assert json.loads(json.dumps(serde.dump(self.state))) == data

    # ------------------------------------------------------------ invariants

    @invariant()
    def published_book_is_the_models(self):
        if not hasattr(self, "reducer"):
            return
        assert self.reducer.sync_state(self.state, SYM) == self.model.state()
        book = self.reducer.book(self.state, SYM)
        if self.model.book is None:
            assert book is None
            return
        assert book is not None
        as_units = [{num.parse(okx_text(p)): num.parse(okx_text(q)) for p, q in s.items()}
                    for s in self.model.book]  # fmt: skip
        assert (book.bids, book.asks) == tuple(as_units)
        if not self.legacy and not self.reset_seen and self.model.id == self.sid:
            truth = [{num.parse(okx_text(p)): num.parse(okx_text(q)) for p, q in s.items()}
                     for s in self.truth]  # fmt: skip
            assert (book.bids, book.asks) == tuple(truth)

    @invariant()
    def checksums_counted_as_the_model_compared_them(self):
        if not hasattr(self, "reducer"):
            return
        c = self.reducer.counts(self.state)[SYM]
        assert (c.checksums_verified, c.checksum_mismatches) == (
            self.model.verified, self.model.mismatches,
        )  # fmt: skip


class LegacyOkxBookMachine(OkxBookMachine):
    legacy = True


TestOkxBook = OkxBookMachine.TestCase
TestOkxLegacyBook = LegacyOkxBookMachine.TestCase
