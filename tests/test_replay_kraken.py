"""The real Kraken v1 capture, replayed: every book message's checksum verified, 0 mismatches.

``fixtures/kraken/journal`` (4 pairs of cryptofeed's 2021 capture, book
depth 1000) replays through the ordinary pipeline: every pair syncs on its
in-stream snapshot, every update carries a checksum, and every one of them is
verified against the book we rebuilt (``engine replay --json`` shows it).  A
capture with one update taken out is caught by the next checksum: a
ChecksumMismatch, after which the book is not published (a
capture holds no resubscription to bring a new snapshot).  The same capture as
a Tardis file imports and verifies alike.  Plus the commands
and the Python API on a Kraken journal: ``engine book --at``, export and
``engine.open``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import engine
from engine.book import Book
from engine.book_reducer import BookReducer, ChecksumMismatch, GapDetected
from engine.codecs.base import SyncRule
from engine.codecs.registry import get_codec
from engine.events import BookSnapshot, DepthDiff
from engine.journal.reader import JournalReader
from engine.replay.export import export_journal, read_table
from engine.replay.importers import import_cryptofeed
from engine.timefmt import format_ns, parse_epoch_s

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "kraken"
JOURNAL = FIX / "journal"
UPDATES = {"SC/EUR": 818, "ETH/CHF": 317, "OCEAN/XBT": 148, "GRT/ETH": 20}


def run_engine(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_replay_verifies_every_checksum_of_the_capture():
    r = run_engine("replay", str(JOURNAL), "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["exchange"] == "kraken-v1" and rep["decode_errors"] == 0
    verified = {}
    for sym, s in rep["symbols"].items():
        book = s["book"]
        assert book["state"] == "synced" and book["gaps"] == 0 and book["resyncs"] == 0, sym
        assert book["syncs"] == 1 and book["crossed"] == 0, sym
        # every update carries a checksum, and an update is applied only if its checksum held
        assert book["checksums_verified"] == book["diffs_applied"], sym  # every update has one
        assert book["checksum_mismatches"] == 0, sym
        verified[sym] = book["checksums_verified"]
    assert verified == UPDATES
    print(
        f"\nKraken capture: {sum(verified.values())} checksums verified, 0 mismatches: {verified}"
    )


def _top_changing_update(lines: list[str]) -> int:
    """Index of the first SC/EUR update (after its snapshot) that changes the top 10 levels."""
    codec = get_codec("kraken-v1")
    book = None
    for i, line in enumerate(lines):
        ts, sep, body = line.partition(": ")
        if not (sep and body.startswith("[")):
            continue
        (ev,) = codec.decode(i, i, "text", "u", body.encode())
        if ev.symbol != "SC/EUR":
            continue
        if isinstance(ev, BookSnapshot):
            book = Book.from_levels(i, ev.bids, ev.asks)
        elif isinstance(ev, DepthDiff) and book is not None:
            before = book.top(10)
            book.apply(ev.bids, ev.asks, i)
            if book.top(10) != before:
                return i
    raise AssertionError("no top-changing update")


def test_a_lost_update_is_a_checksum_mismatch_and_the_book_is_withdrawn(tmp_path):
    lines = (FIX / "KRAKEN.ws.50.0").read_text().splitlines(keepends=True)
    drop = _top_changing_update(lines)
    cut = tmp_path / "KRAKEN.ws.50.0"
    cut.write_text("".join(lines[:drop] + lines[drop + 1 :]))
    import_cryptofeed([cut], tmp_path / "j")
    reader = JournalReader(tmp_path / "j")
    codec = get_codec(reader.metadata["exchange"])
    reducer = BookReducer(SyncRule.KRAKEN)
    state = reducer.initial()
    bad = []
    for f in reader.frames():
        if f.dir == "in" and f.kind == "text":
            for ev in codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload):
                state, outs = reducer.step(state, ev)
                bad += [o for o in outs if isinstance(o, ChecksumMismatch | GapDetected)]
    assert [(type(o), o.symbol) for o in bad] == [(ChecksumMismatch, "SC/EUR")]
    assert reducer.counts(state)["SC/EUR"].checksum_mismatches == 1
    assert reducer.sync_state(state, "SC/EUR") == "resyncing"
    assert reducer.book(state, "SC/EUR") is None  # never published after the break
    for other in ("ETH/CHF", "OCEAN/XBT", "GRT/ETH"):
        assert reducer.sync_state(state, other) == "synced"


def test_book_at_export_and_python_api_on_a_kraken_journal(tmp_path):
    r = run_engine(
        "book", str(JOURNAL), "--symbol", "GRT/ETH", "--at", "2021-04-17T16:49:20Z", "--json"
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    text = json.dumps(got)
    assert "0.0008" in text  # GRT/ETH prices, 9 decimals on the wire

    j = engine.open(JOURNAL)
    assert j.exchange == "kraken-v1" and set(UPDATES) <= set(j.symbols)
    b = j.book_at("OCEAN/XBT", "2021-04-17T16:49:20Z", depth=3)
    assert b.best_bid is not None and b.best_ask is not None and b.best_bid < b.best_ask

    export_journal(JOURNAL, tmp_path / "x")
    diffs = read_table(tmp_path / "x", "book_diffs")
    assert set(diffs.column("symbol").to_pylist()) == set(UPDATES)


def test_a_tardis_file_of_kraken_v1_messages_imports_and_verifies(tmp_path):
    """Tardis records Kraken's v1 messages one per line after an ISO time: the capture
    written that way (ours, from the fixture) imports with ``--exchange kraken-v1`` and
    replays with every checksum verified, as the cryptofeed import does."""
    lines = []
    for line in (FIX / "KRAKEN.ws.50.0").read_text().splitlines():
        ts, sep, body = line.partition(": ")
        if sep and ts.replace(".", "").isdigit():
            lines.append(f"{format_ns(parse_epoch_s(ts), 7)} {body}\n")
    src = tmp_path / "kraken.tardis.txt"
    src.write_text("".join(lines))
    j = tmp_path / "j"
    r = run_engine("import", "tardis", str(src), "--exchange", "kraken-v1", "--out", str(j))
    assert r.returncode == 0, r.stderr
    rep = json.loads(run_engine("replay", str(j), "--json").stdout)
    assert rep["exchange"] == "kraken-v1" and rep["decode_errors"] == 0
    got = {s: v["book"]["checksums_verified"] for s, v in rep["symbols"].items()}
    assert got == UPDATES
    assert all(v["book"]["checksum_mismatches"] == 0 for v in rep["symbols"].values())
