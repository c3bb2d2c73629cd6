"""The real OKX capture, imported and replayed: every book synced, every checksum verified.

fixtures/journals/okx is fixtures/raw/OKX.ws.1.0 (cryptofeed's 2022 OKX v5
recording: no sequence numbers, a non-zero checksum on every ``books``
message) imported by ``engine import cryptofeed``.  ``engine replay --json``
must report, per symbol, the checksums verified and 0 mismatches; a capture
with one update taken out must instead show the checksum catching it (a
ChecksumMismatch, the book withdrawn, a snapshot asked for), and one with a damaged snapshot
must never publish that book.  The replay server serves the capture in OKX's
dialect (by recorded connection) to a client that subscribes as OKX's do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import trio
from trio_websocket import open_websocket_url

from engine.book_reducer import BookReducer
from engine.codecs.okx import Okx
from engine.journal.reader import JournalReader
from engine.replay.importers import import_cryptofeed
from engine.replay.replay import Replay
from engine.replay.server import serve_journal

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT / "fixtures" / "raw" / "OKX.ws.1.0"
JOURNAL = ROOT / "fixtures" / "journals" / "okx"
SYMBOLS = ["BTC-USD-220527", "BTC-USDT", "UNI-USD-SWAP"]


def replay_json(journal: Path) -> dict:
    p = subprocess.run(
        [sys.executable, "-m", "engine.cli", "replay", str(journal), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def frames(path: Path) -> list[tuple]:
    return [(f.seq, f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
            for f in JournalReader(path).frames()]  # fmt: skip


def test_committed_journal_is_what_the_importer_makes(tmp_path):
    rep = import_cryptofeed([RAW], tmp_path / "j")
    assert rep.bad == 0 and rep.frames == 414
    assert frames(tmp_path / "j") == frames(JOURNAL)
    assert JournalReader(tmp_path / "j").metadata["exchange"] == "okx"  # from the OKX prefix


def test_capture_replays_with_every_checksum_verified(capsys):
    s = replay_json(JOURNAL)
    assert s["exchange"] == "okx" and sorted(s["symbols"]) == SYMBOLS
    verified = {}
    for sym in SYMBOLS:
        b = s["symbols"][sym]["book"]
        assert b["state"] == "synced" and b["gaps"] == 0 and b["checksum_mismatches"] == 0, b
        assert b["syncs"] == 1 and b["crossed"] == 0
        # the snapshot and every update carry a checksum: all of them verified
        assert b["checksums_verified"] == b["diffs_applied"] + 1
        verified[sym] = b["checksums_verified"]
    assert sum(verified.values()) == 290  # = the books messages of the capture
    # every frame decodes: its 28 tickers too (Ticker24h, see codecs/okx.py)
    assert s["decode_errors"] == 0
    with capsys.disabled():
        print(f"\nOKX capture replay: checksums verified per symbol {verified}, 0 mismatches")


def _capture_without(tmp_path: Path, pick) -> Path:
    """The capture with one books line changed by ``pick(lines, index of that line)``."""
    lines = RAW.read_text().splitlines(keepends=True)
    books = [
        i for i, ln in enumerate(lines) if '"channel":"books","instId":"BTC-USDT"},"action"' in ln
    ]
    pick(lines, books)
    raw = tmp_path / "OKX.ws.1.0"
    raw.write_text("".join(lines))
    import_cryptofeed([raw], tmp_path / "j")
    return tmp_path / "j"


def test_a_lost_update_is_caught_by_the_next_checksum_and_the_book_withdrawn(tmp_path):
    def drop_one(lines, books):
        del lines[books[40]]

    j = _capture_without(tmp_path, drop_one)
    r = Replay(j, use_checkpoints=False)
    names = [type(o).__name__ for _, o in r.outputs()]
    assert "ChecksumMismatch" in names and "SnapshotRequest" in names and "GapDetected" not in names
    book = r.pipeline.reducer("book")
    st = r.pipeline.state("book")
    assert book.book(st, "BTC-USDT") is None  # never published again without a new snapshot
    assert book.sync_state(st, "BTC-USDT") == "resyncing"
    c = book.counts(st)["BTC-USDT"]
    assert c.checksum_mismatches == 1 and c.gaps == 0  # no sequence numbers in 2022: no gap
    # the other books are untouched
    s = replay_json(j)["symbols"]
    assert s["BTC-USDT"]["book"]["checksum_mismatches"] == 1
    assert all(s[x]["book"]["state"] == "synced" for x in SYMBOLS if x != "BTC-USDT")


def test_a_snapshot_failing_its_own_checksum_is_never_published(tmp_path):
    def damage_snapshot(lines, books):
        i = books[0]
        assert '"action":"snapshot"' in lines[i]
        # one size of the top 25 changed: OKX's checksum no longer matches what we read
        lines[i] = lines[i].replace('"bids":[["', '"bids":[["1', 1)

    j = _capture_without(tmp_path, damage_snapshot)
    s = replay_json(j)["symbols"]["BTC-USDT"]["book"]
    assert s["state"] == "resyncing" and s["syncs"] == 0 and "best_bid" not in s
    assert s["checksum_mismatches"] == 1 and s["checksums_verified"] == 0


async def test_replay_server_serves_the_okx_capture_in_okx_dialect(nursery):
    """``engine replay --serve``: a client subscribing as OKX gets the recorded connection's frames,
    byte for byte, and folding them verifies every checksum again."""
    want = [
        f.payload for f in JournalReader(JOURNAL).frames() if f.dir == "in" and f.kind == "text"
    ]
    srv = await nursery.start(serve_journal, JOURNAL, "127.0.0.1", 0, "max")
    codec, reducer = Okx(), BookReducer("okx", verify_interval_s=None)
    state = reducer.initial()
    async with open_websocket_url(f"ws://127.0.0.1:{srv.port}/ws/v5/public") as ws:
        (sub,) = codec.subscribe(codec.streams(SYMBOLS, ["books", "trades"]), 1)
        await ws.send_message(sub.decode())
        got = []
        with trio.fail_after(20):
            while len(got) < len(want):
                m = await ws.get_message()
                got.append(m.encode() if isinstance(m, str) else m)
    assert got == want
    for i, payload in enumerate(got):
        for ev in codec.decode(i, i, "text", "ws", payload):
            state, _ = reducer.step(state, ev)
    counts = reducer.counts(state)
    assert sum(c.checksums_verified for c in counts.values()) == 290
    assert all(c.checksum_mismatches == 0 for c in counts.values())
