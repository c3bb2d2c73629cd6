"""Journals on object storage, against a real S3 server (moto's, on 127.0.0.1) through pyarrow's S3 client.

What a user does: push a journal to a bucket (or capture straight into one
with ``engine run --upload``), then verify, replay, look at a book and export
from ``s3://`` — and get exactly what the local journal gives.  Seeking is
measured: ``book --at`` near the end reads a fraction of the bytes a fold
from the start reads.  Nothing is mocked: the uploads, the ranged reads and
the kill -9 are real.
"""

# ruff: noqa: F811 - the S3 fixtures are imported from tests/helpers/s3.py
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import engine
from engine.journal.cli import journal as journal_cmd
from engine.journal.location import LocationError, as_path, counting_reads
from engine.journal.reader import JournalReader, NotAJournal
from engine.journal.recorder import OUTPUTS_DIR, outputs_scale
from engine.journal.schema import Dir, Kind
from engine.journal.writer import JournalWriter, WriterConfig
from engine.replay.cli import replay as replay_cmd
from engine.replay.cli_book import book as book_cmd
from engine.replay.replay import state_at

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.s3 import bucket, client, keys, s3_server  # noqa: E402,F401
from helpers.sim_journal import write_sim_journal  # noqa: E402
from helpers.stores import assert_readers_equal_local, seekable_journal  # noqa: E402
from helpers.stores import cli as _cli  # noqa: E402
from helpers.stores import cli_json as _json  # noqa: E402
from helpers.stores import without as _without  # noqa: E402

ENGINE = [sys.executable, "-m", "engine.cli"]
SPOT = Path(__file__).resolve().parent.parent / "fixtures" / "journals" / "binance-spot"
AT = "2024-01-01T00:02:15Z"  # 90 % of the 150 s journal


@pytest.fixture(scope="module")
def local_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seekable_journal(tmp_path_factory.mktemp("store") / "j")


def test_locations_in_one_line(tmp_path: Path, bucket: str) -> None:
    assert as_path(f"file://{tmp_path}") == tmp_path
    for bad, words in (
        ("ftp://host/j", "unsupported scheme"),
        ("s3:///j", "no bucket"),
        ("file://host/j", "names no host"),
    ):
        with pytest.raises(LocationError, match=words):
            as_path(bad)
    with pytest.raises(NotAJournal, match="bucket no-such-bucket does not exist"):
        JournalReader("s3://no-such-bucket/j")
    with pytest.raises(NotAJournal, match="nothing stored under it"):
        JournalReader(f"s3://{bucket}/nothing")
    res = CliRunner().invoke(
        journal_cmd, ["verify", f"s3://{bucket}/j", "--s3-endpoint", "http://127.0.0.1:1"]
    )
    assert res.exit_code == 1 and "cannot reach the store" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_every_reader_from_s3_equals_local(
    local_journal: Path, bucket: str, tmp_path: Path
) -> None:
    assert_readers_equal_local(local_journal, f"s3://{bucket}/sim/j", tmp_path)


def test_book_at_90_percent_seeks(local_journal: Path, bucket: str) -> None:
    uri = f"s3://{bucket}/seek"
    _cli(journal_cmd, "push", str(local_journal), uri)
    at = _json(book_cmd, uri, "--symbol", "BTCUSDT", "--at", AT)
    seeking = at["io"]["bytes_read"]
    with counting_reads() as full:
        at_ns = engine.open(uri).resolve_instant(AT, "at")
        pipeline, used, _ = state_at(uri, at_ns, use_checkpoints=False)
    assert used is None and pipeline.counters.last_seq == at["last_seq"]
    assert at["io"]["segments_skipped"] >= 5
    assert seeking * 3 < full.bytes_read, (seeking, full.bytes_read)

    # a time window passes sealed segments outside it unread (journal.json has their time range)
    j = engine.open(uri)
    assert j.span is not None  # read once, up front (its first and last batch)
    with counting_reads() as win:
        late = sum(b.num_rows for b in j.batches(AT))
    with counting_reads() as every:
        total = sum(b.num_rows for b in j.batches())
    assert 0 < late < total and win.bytes_read * 3 < every.bytes_read


def _wait_for(pred: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_run_upload_ships_and_removes_local(s3_server: str, bucket: str, tmp_path: Path) -> None:
    jdir = tmp_path / "cap"
    uri = f"s3://{bucket}/live/cap"
    subprocess.run(
        [*ENGINE, "run", "--journal", str(jdir), "--duration", "3", "--no-dashboard",
         "--upload", uri, "--segment-seconds", "1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert not jdir.exists()  # shipped and verified: the local copy is gone
    stored = keys(s3_server, bucket, "live/cap/")
    assert "live/cap/journal.json" in stored and "live/cap/outputs/journal.json" in stored
    assert not any(k.endswith((".partial", ".tmp")) for k in stored)
    assert "OK s3://" in _cli(journal_cmd, "verify", uri).output
    assert "OK: replay reproduced all" in _cli(replay_cmd, uri, "--check").output
    res = CliRunner().invoke(replay_cmd, [uri, "--save-checkpoints"])
    assert res.exit_code == 1 and "beside a local journal only" in res.output


def test_check_of_old_scale_outputs_in_a_bucket_in_one_line(bucket: str, tmp_path: Path) -> None:
    """A bucket's journal whose outputs were recorded at the old number scale: refused in one
    line naming where, as for a local one (not an internal error on the URI)."""
    journal = tmp_path / "j"
    shutil.copytree(SPOT, journal)
    w = JournalWriter.create(journal / OUTPUTS_DIR, {"content": "pipeline outputs"})
    w.append(1, 0, Dir.LOCAL, Kind.MARKER, "X", b'{"frame_seq":1,"output":{}}')
    w.close()  # no number_scale: written before the scale was raised
    uri = f"s3://{bucket}/old-scale"
    _cli(journal_cmd, "push", str(journal), uri)
    assert outputs_scale(uri) == 8
    res = CliRunner().invoke(replay_cmd, [uri, "--check"])
    assert res.exit_code == 1, res.output
    assert f"{uri}/{OUTPUTS_DIR} was recorded at number scale 8" in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


def test_upload_failure_never_stops_the_capture(tmp_path: Path, bucket: str) -> None:
    jdir = tmp_path / "cap"
    res = subprocess.run(
        [*ENGINE, "run", "--journal", str(jdir), "--duration", "1.5", "--no-dashboard",
         "--upload", "s3://no-such-bucket-here/x", "--segment-seconds", "0.5"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # the capture went on to the end; what did not ship is a data failure: one line, exit 1
    assert res.returncode == 1, res.stderr
    summary = json.loads(res.stdout)  # the summary is still printed
    up = summary["upload"]
    assert summary["frames_in"] > 0 and up["complete"] is False and not up["interrupted"]
    assert "bucket no-such-bucket-here does not exist" in up["last_error"]
    assert up["not_uploaded"]["files"] > 0 and up["not_uploaded"]["bytes"] > 0
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: upload to s3://no-such-bucket-here/x incomplete (")
    assert last.endswith(
        f"{up['not_uploaded']['files']} files ({up['not_uploaded']['bytes']} bytes) not uploaded,"
        f" kept in {jdir}; finish it with engine journal push {jdir} s3://no-such-bucket-here/x"
    )
    assert "Traceback" not in res.stderr
    errors = [f for f in JournalReader(jdir, kinds={"error"}).frames() if f.source == "upload"]
    assert errors and b"does not exist" in errors[0].payload  # journaled as a local event


def test_kill_mid_upload_then_push(s3_server: str, bucket: str, tmp_path: Path) -> None:
    jdir = tmp_path / "cap"
    uri = f"s3://{bucket}/crash/cap"
    proc = subprocess.Popen(
        [*ENGINE, "run", "--journal", str(jdir), "--duration", "60", "--no-dashboard",
         "--upload", uri, "--keep-local", "--segment-seconds", "0.3"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(lambda: len([k for k in keys(s3_server, bucket, "crash/cap/seg-")]) >= 2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    early = CliRunner().invoke(journal_cmd, ["push", str(jdir), uri])
    assert early.exit_code == 1 and "engine journal recover" in early.output  # partials stay
    assert not any(k.endswith(".partial") for k in keys(s3_server, bucket, "crash/"))
    rec = subprocess.run([*ENGINE, "journal", "recover", str(jdir)], check=True,
                         capture_output=True, text=True)  # fmt: skip
    assert "outputs: sealed" in rec.stdout  # the outputs journal is sealed with its journal
    assert not list(jdir.rglob("*.partial"))
    pushed = _json(journal_cmd, "push", str(jdir), uri)
    assert pushed["uploaded"] and not pushed["pending"]
    assert "OK s3://" in _cli(journal_cmd, "verify", uri).output
    remote, local = (_json(replay_cmd, d) for d in (uri, str(jdir)))
    assert remote["frames"] == local["frames"] > 0
    assert _without(remote, "journal", "elapsed_s") == _without(local, "journal", "elapsed_s")


def test_file_uri_push_pull_without_network(local_journal: Path, tmp_path: Path) -> None:
    target = f"file://{tmp_path}/archive/j"
    _cli(journal_cmd, "push", str(local_journal), target)
    assert "OK" in _cli(journal_cmd, "verify", target).output
    _cli(journal_cmd, "pull", target, str(tmp_path / "back"))
    a, b = (_json(replay_cmd, d) for d in (str(local_journal), str(tmp_path / "back")))
    assert _without(a, "journal", "elapsed_s") == _without(b, "journal", "elapsed_s")


async def test_replay_server_serves_a_journal_from_s3(bucket: str, nursery: Any) -> None:
    import trio
    from trio_websocket import open_websocket_url

    from engine.replay.server import serve_journal

    spot = SPOT
    uri = f"s3://{bucket}/spot"
    await trio.to_thread.run_sync(lambda: _cli(journal_cmd, "push", str(spot), uri))
    streams = "lrcbtc@bookTicker/nknusdt@depth@100ms"
    want = [
        f.payload
        for f in JournalReader(spot, kinds={"text"}, dirs={"in"}).frames()
        if json.loads(f.payload).get("stream") in streams.split("/")
    ]
    srv = await nursery.start(serve_journal, uri, "127.0.0.1", 0, "max")
    async with open_websocket_url(f"ws://127.0.0.1:{srv.port}/stream?streams={streams}") as ws:
        with trio.fail_after(20):
            got = [(await ws.get_message()) for _ in want]
    assert [g.encode() if isinstance(g, str) else g for g in got] == want


def test_seeking_inside_one_segment_reads_a_few_batches(tmp_path: Path) -> None:
    """One sealed segment of many batches: the footer's batch index is searched, not read through."""
    from engine.replay.checkpoints import CheckpointPolicy
    from engine.replay.replay import Replay

    d = write_sim_journal(
        tmp_path / "one", seconds=300, config=WriterConfig(batch_frames=128, compact_rows=256)
    )
    Replay(d, checkpoints=CheckpointPolicy(every_frames=1000, every_s=1e9)).run()
    assert len(JournalReader(d).segments) == 1
    span = engine.open(d).span
    assert span is not None
    for tenth in (3, 5, 9):
        at = span.first_ns + (span.last_ns - span.first_ns) * tenth // 10
        with counting_reads() as seek:
            p1, used, _ = state_at(d, at)
        with counting_reads() as full:
            p2, _, _ = state_at(d, at, use_checkpoints=False)
        assert used is not None and p1.snapshot() == p2.snapshot()
        if tenth == 9:
            assert seek.bytes_read * 4 < full.bytes_read, (seek, full)


def test_damage_in_the_bucket_is_named_as_on_disk(
    local_journal: Path, s3_server: str, bucket: str
) -> None:
    uri = f"s3://{bucket}/damaged"
    _cli(journal_cmd, "push", str(local_journal), uri)
    key = "damaged/seg-000003.arrows"
    s3 = client(s3_server)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=body[: len(body) // 2])  # truncated in the store
    res = CliRunner().invoke(journal_cmd, ["verify", uri])
    assert res.exit_code == 1 and f"FAIL {uri}/seg-000003.arrows" in res.output
    res = CliRunner().invoke(replay_cmd, [uri])
    assert res.exit_code == 1 and "seg-000003.arrows" in res.output
