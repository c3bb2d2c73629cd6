"""Coinbase end to end: ``engine run --exchange coinbase[-advanced] --sim`` with faults, as a user runs it.

Real subprocesses, the embedded simulator on 127.0.0.1 speaking each Coinbase
dialect, real journals.  Each capture's journal verifies, ``replay --check``
reproduces every live output, and every injected fault is detected and
recovered by Coinbase's own rules:

* Exchange feed: ``garbage`` is decode errors (journaled, counted, the stream
  goes on); ``drop`` is a reconnect whose resubscribe brings fresh in-stream
  snapshots (each book synced again).  A withheld book update (``gap``)
  cannot be seen on this feed (level2 has no sequence or checksum): not
  injected here, said in the README.
* Advanced Trade: ``gap`` (a withheld ``l2_data`` frame) is a
  ``sequence_num`` gap: every book of the connection is lost (GapDetected,
  unpublished) and asked for (a sync SnapshotRequest), answered by
  resubscribing (journaled); a fresh snapshot brings each book back.  A
  ``drop`` reconnects: the new connection's numbering starts afresh.

Plus one smoke test each of ``engine book --at``, ``engine export`` and
``engine.open`` on the real Coinbase capture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import engine
from engine.journal.reader import JournalReader
from engine.replay.check import check

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.recovery import assert_every_break_recovered  # noqa: E402
from helpers.served import capture_served  # noqa: E402

ENGINE = [sys.executable, "-m", "engine.cli"]
JOURNAL = Path(__file__).parent.parent / "fixtures" / "journals" / "coinbase"
SYMBOLS = "BTC-USD,ETH-USD"


def _run(exchange: str, jdir: Path, faults: str, every: str) -> dict:
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    args = [
        *ENGINE, "run", "--exchange", exchange, "--sim", "--symbols", SYMBOLS, "--out", str(jdir),
        "--duration", "5", "--no-dashboard", "--sim-faults", faults, "--sim-fault-every", every,
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    verify = subprocess.run(
        [*ENGINE, "journal", "verify", str(jdir)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert JournalReader(jdir).metadata["exchange"] == exchange
    mismatch, compared = check(jdir)
    assert mismatch is None, mismatch
    assert compared == sum(summary["outputs"].values()) > 0
    return summary


def _books(jdir: Path) -> dict:
    done = subprocess.run(
        [*ENGINE, "replay", str(jdir), "--json"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_exchange_feed_garbage_and_drops_are_detected_and_recovered(tmp_path: Path) -> None:
    jdir = tmp_path / "j"
    s = _run("coinbase", jdir, "garbage,drop", "1.5")
    assert s["decode_errors"] >= 4  # the four garbage frames: journaled, decoded as errors
    assert s["reconnects"] >= 1
    syncs = s["outputs"]["BookSynced"]
    assert syncs >= 2 * (1 + s["reconnects"])  # every (re)subscribe: a fresh snapshot a book
    d = _books(jdir)
    assert d["decode_errors"] == s["decode_errors"]
    for sym in SYMBOLS.split(","):
        v = d["symbols"][sym]
        assert v["book"]["crossed"] == 0
        assert v["trade_ids"]["trades_checked"] > 0
    assert_every_break_recovered(jdir, SYMBOLS.split(","))  # each drop: fresh snapshots
    # every control message journaled: a subscribe per connection, none invented
    out = [f for f in JournalReader(jdir).frames() if f.dir == "out"]
    assert len(out) == 1 + s["reconnects"]
    assert all(json.loads(f.payload)["type"] == "subscribe" for f in out)


def test_advanced_trade_gap_is_a_sequence_gap_resynced_by_resubscribing_drop_reconnects(
    tmp_path: Path,
) -> None:
    jdir = tmp_path / "j"
    s = _run("coinbase-advanced", jdir, "gap,drop,gap", "1.2")
    gaps = s["outputs"].get("GapDetected", 0)
    assert gaps >= 1  # each break loses every published book of the connection
    assert s["reconnects"] >= 1  # the drop: a new connection counts afresh (no false gap)
    assert s["outputs"]["SnapshotRequest"] == gaps
    assert s["resubscribes"] >= gaps
    assert s["outputs"]["BookSynced"] >= 2 + gaps
    out = [json.loads(f.payload) for f in JournalReader(jdir).frames() if f.dir == "out"]
    assert sum(m["type"] == "unsubscribe" for m in out) >= gaps
    d = _books(jdir)
    assert sum(d["symbols"][sym]["book"]["sequence_gaps"] for sym in SYMBOLS.split(",")) == gaps
    # each break recovered by a fresh snapshot, or, when the run ended, being recovered
    assert_every_break_recovered(jdir, SYMBOLS.split(","))


# --------------------------------------------------------------------------- the real capture


def test_a_capture_of_the_served_recording_has_the_recordings_frames_and_books(
    tmp_path: Path,
) -> None:
    """``engine replay --serve`` serves the Coinbase journal by recorded connection; ``engine run
    --exchange coinbase --url`` subscribes and captures exactly the recorded inbound frames, and
    its books are the capture's: all 10 synced, none crossed, no trade-id gap."""
    out = tmp_path / "capture"
    run = capture_served(JOURNAL, "coinbase", out, "--symbols", "SKL-USD")
    assert run.returncode == 0, run.stderr[-2000:]

    def inbound(j: Path) -> list[bytes]:
        return [f.payload for f in JournalReader(j).frames() if f.dir == "in" and f.kind == "text"]

    assert inbound(out) == inbound(JOURNAL)
    mismatch, compared = check(out)
    assert mismatch is None and compared > 0
    d = _books(out)
    books = [v["book"] for v in d["symbols"].values()]
    assert len(books) == 10 and all(b["state"] == "synced" and b["crossed"] == 0 for b in books)
    assert sum(v["trade_ids"]["trade_id_gaps"] for v in d["symbols"].values()) == 0


def test_engine_book_at_a_moment_of_the_real_capture() -> None:
    done = subprocess.run(
        [*ENGINE, "book", str(JOURNAL), "--symbol", "SKL-USD", "--at", "2021-04-17T16:43:50Z",
         "--depth", "3", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    b = json.loads(done.stdout)
    text = json.dumps(b)
    assert "SKL-USD" in text and "synced" in text


def test_export_of_the_real_capture(tmp_path: Path) -> None:
    import pyarrow.dataset as ds

    out = tmp_path / "x"
    done = subprocess.run(
        [*ENGINE, "export", str(JOURNAL), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    trades = ds.dataset(out / "table=trades", format="parquet", partitioning="hive").to_table()
    diffs = ds.dataset(out / "table=book_diffs", format="parquet", partitioning="hive")
    assert trades.num_rows == 107 and diffs.count_rows() >= 9719
    assert set(trades.column("side").to_pylist()) == {"buy", "sell"}


def test_python_api_opens_the_real_capture() -> None:
    j = engine.open(JOURNAL)
    assert j.exchange == "coinbase"
    assert "SKL-USD" in j.symbols
