"""Data quality you can see: decode errors, connection errors and book health in ``replay --json`` and the export.

The journal is the real Binance capture of fixtures/ rewritten with three
faults a capture meets: a frame that is not JSON, a depth diff with a bad
number, a local ``error`` frame (a failed REST request), and one depth diff
of NKNUSDT left out (a gap).  Also here: what ``export_journal`` refuses
(mixing into an old export, writing into the journal) and the README's
one-liner that reads a journal's raw segments with pyarrow and Polars.
"""

from __future__ import annotations

import glob
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from engine.codecs.registry import get_codec
from engine.events import DepthDiff
from engine.journal.reader import JournalReader
from engine.journal.schema import Dir, Kind
from engine.journal.writer import JournalWriter, WriterConfig
from engine.replay.export import export_journal, read_table

SPOT = Path(__file__).resolve().parent.parent / "fixtures" / "journals" / "binance-spot"
BAD_NUMBER = b'{"stream":"nknusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"NKNUSDT",'
BAD_NUMBER += b'"U":1,"u":2,"b":[["1.0.0","3"]],"a":[]}}'


def _faulty(path: Path) -> dict[str, object]:
    """Write the faulty journal; returns what went in (seqs of the faults, the dropped diff)."""
    reader = JournalReader(SPOT)
    codec = get_codec(reader.metadata["exchange"])
    w = JournalWriter.create(path, reader.metadata, WriterConfig(batch_frames=64))
    diffs = 0
    facts: dict[str, object] = {}
    for f in reader.frames():
        evs = codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload) if f.dir == "in" else []
        if any(type(e) is DepthDiff and e.symbol == "NKNUSDT" for e in evs):
            diffs += 1
            if diffs == 5:  # well after NKNUSDT's book synced: the next diff reveals a gap
                continue
        seq = w.append(f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
        if seq == 40:
            facts["garbage"] = w.append(f.recv_ns, f.conn, Dir.IN, Kind.TEXT, f.source, b"<html>")
            facts["bad_number"] = w.append(
                f.recv_ns, f.conn, Dir.IN, Kind.TEXT, f.source, BAD_NUMBER
            )
            facts["source"] = f.source
            facts["error"] = w.append(
                f.recv_ns, 0, Dir.LOCAL, Kind.ERROR, "https://api.binance.com/api/v3/depth",
                b"timeout after 10 s",
            )  # fmt: skip
    w.close()
    return facts


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    path = tmp_path_factory.mktemp("dq") / "j"
    return path, _faulty(path)


def test_replay_json_lists_decode_errors_with_seq_source_and_reason(faulty) -> None:  # type: ignore[no-untyped-def]
    path, facts = faulty
    p = subprocess.run(
        [sys.executable, "-m", "engine.cli", "replay", str(path), "--json", "--no-checkpoints"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["decode_errors"] == 2
    listed = s["decode_error_list"]
    assert listed["count"] == 2 and listed["listed"] == 2
    assert [e["seq"] for e in listed["first"]] == [facts["garbage"], facts["bad_number"]]
    assert {e["source"] for e in listed["first"]} == {facts["source"]}
    assert all(e["reason"] and e["time"].endswith("Z") for e in listed["first"])
    assert "1.0.0" in listed["first"][1]["reason"]  # the reason says what was wrong
    assert s["symbols"]["NKNUSDT"]["book"]["gaps"] == 1
    assert not (path / "checkpoints").exists()


def test_export_shows_errors_and_book_health(faulty, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, facts = faulty
    res = export_journal(path, tmp_path / "x")
    errors = pl.from_arrow(read_table(tmp_path / "x", "errors"))
    assert res.rows["errors"] == errors.height == 3
    assert errors["seq"].to_list() == [facts["garbage"], facts["bad_number"], facts["error"]]
    assert errors["kind"].to_list() == ["decode", "decode", "connection"]
    assert errors["reason"][2] == "timeout after 10 s" and errors["excerpt"][0] == b"<html>"
    assert errors["source"][0] == facts["source"]
    events = pl.from_arrow(read_table(tmp_path / "x", "book_events"))
    nkn = events.filter(pl.col("symbol") == "NKNUSDT")
    assert "GapDetected" in nkn["type"].to_list()
    gap = nkn.filter(pl.col("type") == "GapDetected").row(0, named=True)
    assert gap["detail"] and gap["update_id"] is not None and json.loads(gap["output"])["reason"]
    # gaps are book events, not alerts: alerts hold the anomaly detector's alerts only
    alerts = pl.from_arrow(read_table(tmp_path / "x", "alerts"))
    assert "GapDetected" not in alerts["type"].to_list()


def test_export_refuses_to_mix_into_an_old_export_or_write_into_the_journal(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "j"
    JournalWriter.create(journal, JournalReader(SPOT).metadata).close()
    before = sorted((p.relative_to(SPOT), p.stat().st_mtime_ns) for p in SPOT.rglob("*"))
    first = export_journal(SPOT, tmp_path / "out", symbols=["NKNUSDT"])
    with pytest.raises(FileExistsError, match="not empty"):
        export_journal(SPOT, tmp_path / "out")
    kept = read_table(tmp_path / "out", "book_diffs")
    assert kept.num_rows == first.rows["book_diffs"]  # the first export is untouched
    second = export_journal(SPOT, tmp_path / "out", replace=True)
    assert read_table(tmp_path / "out", "book_diffs").num_rows == second.rows["book_diffs"]
    assert second.rows["book_diffs"] > first.rows["book_diffs"]
    assert set(read_table(tmp_path / "out", "book_diffs").column("symbol").to_pylist()) == {
        "BLZETH", "LRCBTC", "NKNUSDT", "RUNEEUR",
    }  # fmt: skip
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an earlier export"):
        export_journal(SPOT, other, replace=True)
    assert (other / "mine.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="journal"):
        export_journal(SPOT, SPOT / "tables")
    with pytest.raises(ValueError, match="journal"):
        export_journal(SPOT, tmp_path / "j", replace=True)
    assert sorted((p.relative_to(SPOT), p.stat().st_mtime_ns) for p in SPOT.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j", "notes", "out"]  # no leftovers


def test_an_interrupted_export_leaves_nothing(tmp_path: Path) -> None:
    def stop(frames: int, pipeline: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_journal(SPOT, tmp_path / "out", on_chunk=stop)
    assert list(tmp_path.iterdir()) == []


def test_the_readme_one_liner_reads_every_raw_segment(tmp_path: Path) -> None:
    """Sealed segments are Arrow IPC files, the open one an IPC stream: one line reads them all."""
    reader = JournalReader(SPOT)
    frames = list(reader.frames())
    j = tmp_path / "j"
    w = JournalWriter.create(j, reader.metadata, WriterConfig(segment_bytes=30_000, batch_frames=8))
    for f in frames[:200]:
        w.append(f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
    w.close()
    w = JournalWriter.resume(j, WriterConfig(batch_frames=8))  # still being written
    for f in frames[200:]:
        w.append(f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
    w.flush()
    names = sorted(Path(p).name for p in glob.glob(f"{j}/seg-*"))
    assert len(names) >= 3 and names[-1].endswith(".arrows.partial")
    readme = (SPOT.parent.parent.parent / "README.md").read_text().splitlines()
    lines = [ln for ln in readme if ln.startswith(("t = pa.concat_tables(", "df = pl.concat("))]
    assert len(lines) == 2
    scope: dict[str, object] = {"pa": pa, "pl": pl, "glob": glob, "J": str(j)}
    exec("\n".join(lines), scope)  # the README's one-liners, verbatim
    t, df = scope["t"], scope["df"]
    assert isinstance(t, pa.Table) and isinstance(df, pl.DataFrame)
    w.close()
    assert t.column("seq").to_pylist() == list(range(1, len(frames) + 1))
    assert t.column("payload").to_pylist() == [f.payload for f in frames]
    assert df["seq"].to_list() == list(range(1, len(frames) + 1)) and df.height == len(frames)
