"""BookReducer on the real Binance captures (fixtures/journals, converted from cryptofeed's sample data).

Spot (2021-10-12, 4 symbols) and USD-M futures (2021-07-22, 4 symbols):
every symbol syncs, 0 gaps, 0 drift, no crossed book, and every bookTicker
that becomes comparable (the book reaches exactly its ``u``) agrees with our
top of book: 26 on spot, 50 on futures.  Plus the futures edge (AKROUSDT: the
first diff has ``u == lastUpdateId`` and must be applied),
checkpoint/restore mid-stream giving the same outputs as one fold, and a
moment of the spot capture where a book is primed (snapshot loaded, no
diff chained yet), which every report must call primed, not synced.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from engine.book_reducer import (
    BookReducer,
    BookSynced,
    CrossedBook,
    DriftDetected,
    GapDetected,
    TopOfBookMismatch,
)
from engine.codecs.base import SyncRule
from engine.codecs.registry import get_codec
from engine.events import BookSnapshot, DepthDiff
from engine.journal.reader import JournalReader
from engine.live.dashboard import Dashboard
from engine.live.display import status_line
from engine.live.status import CaptureStatus
from engine.outputs import SnapshotRequest
from engine.replay.export import export_journal, read_table
from engine.replay.replay import book_summary, state_at

JOURNALS = Path(__file__).parent.parent / "fixtures" / "journals"


def events_of(name: str) -> list:
    """Decode a fixture journal exactly as the pipeline does: inbound text/rest frames → codec."""
    reader = JournalReader(JOURNALS / name)
    codec = get_codec(reader.metadata["exchange"])
    out = []
    for f in reader.frames():
        if f.dir == "in" and f.kind in ("text", "rest"):
            out.extend(codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload))
    return out


@pytest.fixture(scope="module", params=["binance-spot", "binance-futures"])
def capture(request):
    name = request.param
    rule = SyncRule.BINANCE_SPOT if name == "binance-spot" else SyncRule.BINANCE_FUTURES
    return name, rule, events_of(name)


def fold(reducer, events, state=None):
    state = reducer.initial() if state is None else state
    outs = []
    for ev in events:
        state, o = reducer.step(state, ev)
        outs.extend(o)
    return state, outs


def test_real_capture_syncs_without_gaps_drift_or_mismatch(capture):
    name, rule, events = capture
    reducer = BookReducer(rule)
    state, outs = fold(reducer, events)
    symbols = {e.symbol for e in events if isinstance(e, DepthDiff)}
    assert len(symbols) == 4
    for s in symbols:
        book = reducer.book(state, s)
        assert book is not None, f"{s} never synced"
        assert not book.crossed()
    bad = [
        o
        for o in outs
        if isinstance(o, GapDetected | DriftDetected | TopOfBookMismatch | CrossedBook)
    ]
    assert bad == []
    assert sum(isinstance(o, BookSynced) for o in outs) == 4
    syncs = [o for o in outs if isinstance(o, SnapshotRequest) and o.purpose == "sync"]
    assert sorted(o.symbol for o in syncs) == sorted(symbols)  # once per need, not per diff
    t = reducer.totals(state)
    assert (t.gaps, t.drift, t.crossed, t.resyncs, t.buffer_dropped) == (0, 0, 0, 0, 0)
    want = 26 if name == "binance-spot" else 50
    assert t.tickers_compared == want
    assert t.tickers_matched == want and t.tickers_mismatched == 0
    assert t.tickers_uncomparable > 0  # most `u`s fall inside a 100 ms batch


def test_futures_first_diff_equal_to_snapshot_id_is_applied():
    events = [e for e in events_of("binance-futures") if e.symbol == "AKROUSDT"]
    snap = next(e for e in events if isinstance(e, BookSnapshot))
    diffs = [e for e in events if isinstance(e, DepthDiff)]
    edge = [d for d in diffs if d.last_id == snap.last_id]
    assert len(edge) == 1, "the capture's AKROUSDT edge case is gone"
    after = diffs[diffs.index(edge[0]) + 1]
    assert after.first_id > snap.last_id and after.prev_id == snap.last_id
    reducer = BookReducer(SyncRule.BINANCE_FUTURES)
    state, outs = fold(reducer, events)
    c = reducer.counts(state)["AKROUSDT"]
    assert c.gaps == 0 and reducer.book(state, "AKROUSDT") is not None
    assert c.diffs_applied == sum(d.last_id >= snap.last_id for d in diffs)
    assert c.stale_diffs == sum(d.last_id < snap.last_id for d in diffs)
    # the same diff under spot's rule is dropped (u <= lastUpdateId) — spot's chain test passes
    # U <= id+1 for the next one, so spot also stays gap-free, but with one stale diff more
    spot = BookReducer(SyncRule.BINANCE_SPOT)
    sstate, _ = fold(spot, events)
    sc = spot.counts(sstate)["AKROUSDT"]
    assert sc.stale_diffs == c.stale_diffs + 1


def test_checkpoint_restore_mid_stream_gives_the_same_outputs(capture):
    _, rule, events = capture
    reducer = BookReducer(rule, verify_interval_s=2.0)  # verify requests in play too
    whole_state, whole = fold(reducer, events)
    state = reducer.initial()
    outs: list = []
    for i, ev in enumerate(events):
        if i % 97 == 0:
            state = reducer.restore(json.loads(json.dumps(reducer.snapshot(state))))
        state, o = reducer.step(state, ev)
        outs.extend(o)
    assert outs == whole
    assert state == whole_state
    assert any(isinstance(o, SnapshotRequest) and o.purpose == "verify" for o in whole)


# ------------------------------------------------------------- the sync state, as reported

#: 2021-10-12T00:28:50Z: RUNEEUR's snapshot (seq 79, 00:28:42.7) is loaded and no diff has
#: chained onto it yet (the first one comes at 00:29:01.99); the other three books are synced
PRIMED_AT = "2021-10-12T00:28:50"
PRIMED_NS = 1_633_998_530_000_000_000


def engine(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_a_primed_book_is_reported_primed_everywhere_not_synced(tmp_path):
    spot = JOURNALS / "binance-spot"
    # the reducer's query and the replay summary (what `engine replay --json` prints)
    p, _, _ = state_at(spot, PRIMED_NS, use_checkpoints=False)
    red, state = p.reducer("book"), p.state("book")
    assert red.sync_state(state, "RUNEEUR") == "primed"
    assert red.book(state, "RUNEEUR") is not None  # published: the snapshot is a valid book
    b = book_summary(p, "RUNEEUR")
    assert (b["state"], b["synced"], b["last_id"]) == ("primed", False, 15602511)
    assert b["diffs_applied"] == 0
    assert book_summary(p, "NKNUSDT")["state"] == "synced" and book_summary(p, "NKNUSDT")["synced"]

    # engine replay (JSON and text)
    r = engine("replay", str(spot), "--to", PRIMED_AT, "--json", "--no-checkpoints")
    assert r.returncode == 0, r.stderr
    books = {s: d["book"] for s, d in json.loads(r.stdout)["symbols"].items()}
    assert {s: (b["state"], b["synced"]) for s, b in books.items()} == {
        "BLZETH": ("synced", True),
        "LRCBTC": ("synced", True),
        "NKNUSDT": ("synced", True),
        "RUNEEUR": ("primed", False),
    }
    r = engine("replay", str(spot), "--to", PRIMED_AT, "--no-checkpoints", "--symbols", "RUNEEUR")
    assert r.returncode == 0, r.stderr
    assert "sync     primed (the snapshot is the book; no diff has chained onto it yet)" in r.stdout
    assert "update id 15602511" in r.stdout

    # engine book (JSON and text): the ladder is shown, under a primed header
    args = ("book", str(spot), "--symbol", "RUNEEUR", "--at", PRIMED_AT, "--no-checkpoints")
    r = engine(*args, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)["book"]
    assert doc["state"] == "primed" and doc["synced"] is False and doc["bids"]
    r = engine(*args)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].startswith("book primed") and "update id 15602511" in r.stdout

    # export: every book_top row carries the book's sync state at its timestamp
    export_journal(spot, tmp_path, symbols=["RUNEEUR", "NKNUSDT"], interval_s=1.0)
    t = read_table(tmp_path, "book_top")
    top = t.append_column("ts_ns", t.column("time").cast("int64")).to_pylist()
    at = {(row["symbol"], row["sync_state"]) for row in top if row["ts_ns"] == PRIMED_NS}
    assert at == {("RUNEEUR", "primed"), ("NKNUSDT", "synced")}
    assert {row["sync_state"] for row in top if row["symbol"] == "RUNEEUR"} == {"primed", "synced"}

    # the dashboard: the panel title and the --no-dashboard status line
    out = Console(record=True, width=140, force_terminal=False)
    out.print(Dashboard().render(p, CaptureStatus(), ["runeeur"]))
    assert "─ RUNEEUR  primed  book levels: 221 bids, 468 asks" in out.export_text()
    assert "books 3/4 synced (1 primed)" in status_line(CaptureStatus(), p)
