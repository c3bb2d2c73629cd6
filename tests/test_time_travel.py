"""Time travel: the state at T from the nearest checkpoint equals a full replay to T.

The journal is the simulator's market model over 150 s of simulated time
(tests/helpers/sim_journal.py, ~3000 frames); checkpoints are written by a
real ``engine replay --save-checkpoints --checkpoint-frames`` subprocess.  The
reference state at T is computed independently: one pass over the journal's frames fed one by
one (``Pipeline.feed``, not the batch path) with a pipeline snapshot taken
just before the first frame received after each T.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.journal.reader import JournalReader
from engine.replay.checkpoints import CheckpointPolicy, CheckpointWriter, list_checkpoints
from engine.replay.cli import replay as replay_cmd
from engine.replay.cli_book import book as book_cmd
from engine.replay.replay import book_summary, pipeline_for, state_at
from engine.timefmt import format_ns

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.sim_journal import write_sim_journal  # noqa: E402

EVERY = 200


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = write_sim_journal(tmp_path_factory.mktemp("tt") / "j")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "replay",
            str(d),
            "--save-checkpoints",
            "--checkpoint-frames",
            str(EVERY),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    return d


@pytest.fixture(scope="module")
def times(journal: Path) -> list[int]:
    return [f.recv_ns for f in JournalReader(journal).frames()]


def reference_states(journal: Path, ts: list[int]) -> dict[int, dict]:
    """Pipeline snapshots at each T (frame by frame: the prefix rule written out plainly)."""
    reader = JournalReader(journal)
    p = pipeline_for(reader.metadata)
    want = sorted(ts)
    out: dict[int, dict] = {}
    i = 0
    for f in reader.frames():
        while i < len(want) and f.recv_ns > want[i]:
            out[want[i]] = p.snapshot()
            i += 1
        p.feed(f.seq, f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
    for t in want[i:]:
        out[t] = p.snapshot()
    return out


def test_replay_wrote_checkpoints_on_the_frame_cadence(journal: Path, times: list[int]) -> None:
    infos = list_checkpoints(journal)
    assert len(infos) == -(-len(times) // EVERY)  # the cadence, then the final state
    assert infos[-1].last_seq == len(times)
    assert [i.last_seq for i in infos[:-1]] == [EVERY * (k + 1) for k in range(len(infos) - 1)]


def test_state_at_from_checkpoints_equals_full_replay(journal: Path, times: list[int]) -> None:
    first, last = times[0], times[-1]
    ts = [
        first - 1,  # before anything
        first,
        times[EVERY - 1],  # exactly the last frame of the first checkpoint
        times[EVERY],  # one frame after it
        times[EVERY] - 1,
        times[len(times) // 2],
        times[-EVERY // 2],  # deep: folds from the last-but-one checkpoint
        last - 1,
        last,
        last + 10**12,
    ]
    ref = reference_states(journal, ts)
    for t in ts:
        p, used, folded = state_at(journal, t)
        assert p.snapshot() == ref[t], format_ns(t)
        if t >= times[EVERY - 1]:
            assert used is not None and used.max_recv_ns <= t
            assert folded < EVERY  # folded forward from the nearest checkpoint only
        else:
            assert used is None


@settings(max_examples=25)
@given(data=st.data())
def test_state_at_any_time_equals_replay_without_checkpoints(journal: Path, times, data) -> None:
    t = data.draw(st.integers(times[0] - 10**9, times[-1] + 10**9))
    fast, _, _ = state_at(journal, t)
    slow, used, _ = state_at(journal, t, use_checkpoints=False)
    assert used is None
    assert fast.snapshot() == slow.snapshot()


def test_engine_book_subprocess_json_equals_the_reference(journal: Path, times: list[int]) -> None:
    t = times[len(times) * 3 // 4]
    ref = reference_states(journal, [t])[t]
    p = pipeline_for(JournalReader(journal).metadata)
    p.restore(ref)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "book",
            str(journal),
            "--symbol",
            "ethusdt",
            "--at",
            str(t),
            "--depth",
            "7",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["at_ns"] == t and doc["symbol"] == "ETHUSDT"
    assert doc["book"] == book_summary(p, "ETHUSDT", 7)
    assert doc["book"]["synced"] and len(doc["book"]["bids"]) == 7
    assert doc["checkpoint"] is not None and doc["frames_folded"] < EVERY
    assert doc["last_seq"] == ref["counters"]["last_seq"]


def test_engine_book_text_and_iso_time(journal: Path, times: list[int]) -> None:
    t = times[-3]
    iso = format_ns(t)
    res = CliRunner().invoke(book_cmd, [str(journal), "--symbol", "BTCUSDT", "--at", iso[:-4]])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("BTCUSDT at " + iso[:-4])
    rows = [line for line in lines if line.startswith(("  ask  ", "  bid  "))]
    assert [r[2:5] for r in rows] == ["ask"] * 10 + ["bid"] * 10  # --depth 10, stated:
    assert "top 10 of" in lines[1] and "imbalance (top 10 levels)" in res.output
    assert len({r.index("×") for r in rows}) == 1 and len({len(r) for r in rows}) == 1  # aligned
    assert len({r.index(".") for r in rows}) == 1  # prices on one decimal point column
    asks = [Decimal(r.split()[1]) for r in rows[:10]]
    bids = [Decimal(r.split()[1]) for r in rows[10:]]
    assert asks == sorted(asks, reverse=True) and bids == sorted(bids, reverse=True)
    assert bids[0] < asks[-1]
    assert any(line.startswith("trades   last ") for line in lines)


def test_book_errors_are_one_line(journal: Path, tmp_path: Path) -> None:
    r = CliRunner()
    res = r.invoke(book_cmd, [str(journal), "--symbol", "NOPE", "--at", "2024-01-01T00:01:00"])
    assert res.exit_code == 2 and "unknown symbol NOPE" in res.output and "BTCUSDT" in res.output
    res = r.invoke(book_cmd, [str(journal), "--symbol", "BTCUSDT", "--at", "yesterday"])
    assert res.exit_code == 2 and "not a time: 'yesterday'" in res.output
    res = r.invoke(book_cmd, [str(tmp_path / "nope"), "--symbol", "X", "--at", "0"])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_bad_checkpoints_are_skipped_never_trusted(journal: Path, tmp_path: Path) -> None:
    d = tmp_path / "j"
    shutil.copytree(journal, d)
    infos = list_checkpoints(d)
    # damage the newest, and plant another journal's state under a usable name
    infos[-1].path.write_bytes(infos[-1].path.read_bytes()[:50])
    other = write_sim_journal(tmp_path / "other", seed=2)
    p = pipeline_for(JournalReader(other).metadata)
    for f in JournalReader(other).frames():
        p.feed(f.seq, f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
    w = CheckpointWriter(d, JournalReader(other).metadata, CheckpointPolicy())
    w.write(p)  # same seqs, same reducers, other journal id
    t = infos[-1].max_recv_ns + 1
    ref = reference_states(d, [t])[t]
    got, used, _ = state_at(d, t)
    assert got.snapshot() == ref
    assert used is not None and used.path == infos[-2].path


def test_replay_from_uses_a_checkpoint_and_reports_the_same(journal: Path, times) -> None:
    t = times[len(times) // 2]
    r = CliRunner()
    args = [str(journal), "--from", str(t), "--json"]
    fast = json.loads(r.invoke(replay_cmd, args).output)
    shutil.rmtree(journal / "checkpoints.off", ignore_errors=True)
    (journal / "checkpoints").rename(journal / "checkpoints.off")
    try:
        slow = json.loads(r.invoke(replay_cmd, args).output)
    finally:
        (journal / "checkpoints.off").rename(journal / "checkpoints")
    assert fast["checkpoint"] is not None and slow["checkpoint"] is None
    assert fast["frames_folded"] < slow["frames_folded"]
    for key in ("symbols", "frames", "events", "outputs", "last_seq"):
        assert fast[key] == slow[key]


def test_book_queries_checkpoint_on_the_cadence_only(journal: Path, times, tmp_path: Path) -> None:
    d = tmp_path / "j"
    shutil.copytree(journal, d, ignore=shutil.ignore_patterns("checkpoints"))
    t = times[1234]
    args = [
        str(d),
        "--symbol",
        "BTCUSDT",
        "--at",
        str(t),
        "--save-checkpoints",
        "--checkpoint-frames",
        "500",
        "--json",
    ]
    first = json.loads(CliRunner().invoke(book_cmd, args).output)
    assert first["checkpoint"] is None and first["frames_folded"] == 1235
    assert [c.last_seq for c in list_checkpoints(d)] == [500, 1000]  # none at the queried T
    again = json.loads(CliRunner().invoke(book_cmd, args).output)
    assert again["checkpoint"]["last_seq"] == 1000 and again["frames_folded"] == 235
    assert again["book"] == first["book"] and again["trades"] == first["trades"]


def test_finish_writes_the_final_state_unless_a_stored_checkpoint_holds_it(
    journal: Path, tmp_path: Path
) -> None:
    """A checkpoint prepared but never stored (live: skipped while one was writing) does not count."""
    jdir = tmp_path / "j"
    shutil.copytree(journal, jdir, ignore=shutil.ignore_patterns("checkpoints"))
    reader = JournalReader(jdir)
    p = pipeline_for(reader.metadata)
    w = CheckpointWriter(jdir, reader.metadata, CheckpointPolicy(every_frames=10**9))
    for batch in reader.batches():
        p.feed_batch(batch)
    w.prepare(p)  # taken, never stored
    final = w.finish(p)
    assert final is not None and list_checkpoints(jdir)[-1].path == final
    assert w.finish(p) is None  # now a stored checkpoint holds it
