"""Journals on Google Cloud Storage, against a real GCS server (gcp-storage-emulator on 127.0.0.1).

pyarrow's ``GcsFileSystem`` (google-cloud-cpp, the JSON API) talks to the
emulator unmocked, found through the standard ``STORAGE_EMULATOR_HOST`` (or
``--gcs-endpoint``): push a journal to ``gs://``, then verify, inspect,
replay, look at a book, export and open it from there — and get exactly what
the local journal gives; capture straight into a bucket with ``engine run
--upload gs://…``; store failures in one line.  Also what seeking passes
unread is still checked against ``journal.json`` (its size, without reading
it): a truncated early segment refuses ``book --at`` late, locally and in
the bucket.
"""

# ruff: noqa: F811 - the GCS fixtures are imported from tests/helpers/gcs.py
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import engine
from engine.journal import location
from engine.journal.cli import journal as journal_cmd
from engine.journal.location import as_path, counting_reads
from engine.journal.reader import JournalCorrupt, JournalReader, NotAJournal
from engine.replay.cli import replay as replay_cmd
from engine.replay.cli_book import book as book_cmd
from engine.replay.replay import state_at

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.gcs import gcs_bucket, gcs_server, get, objects, put  # noqa: E402,F401
from helpers.stores import STORE_AT, assert_readers_equal_local, seekable_journal  # noqa: E402
from helpers.stores import cli as _cli  # noqa: E402
from helpers.stores import cli_json as _json  # noqa: E402

ENGINE = [sys.executable, "-m", "engine.cli"]
AT = STORE_AT  # 90 % of the 150 s journal


@pytest.fixture(scope="module")
def local_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seekable_journal(tmp_path_factory.mktemp("gcs") / "j")


def test_every_reader_from_gs_equals_local(
    local_journal: Path, gcs_bucket: str, tmp_path: Path
) -> None:
    assert_readers_equal_local(local_journal, f"gs://{gcs_bucket}/sim/j", tmp_path)


def test_book_at_90_percent_seeks_in_gs(local_journal: Path, gcs_bucket: str) -> None:
    uri = f"gs://{gcs_bucket}/seek"
    _cli(journal_cmd, "push", str(local_journal), uri)
    at = _json(book_cmd, uri, "--symbol", "BTCUSDT", "--at", AT)
    with counting_reads() as full:
        at_ns = engine.open(uri).resolve_instant(AT, "at")
        pipeline, used, _ = state_at(uri, at_ns, use_checkpoints=False)
    assert used is None and pipeline.counters.last_seq == at["last_seq"]
    assert at["io"]["bytes_read"] * 3 < full.bytes_read, (at["io"], full.bytes_read)


def test_the_endpoint_the_standard_ways(
    local_journal: Path, gcs_server: str, gcs_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"gs://{gcs_bucket}/ways/j"
    _cli(journal_cmd, "push", str(local_journal), uri)  # STORAGE_EMULATOR_HOST (the fixture's)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    assert f"OK {uri}" in _cli(journal_cmd, "verify", uri, "--gcs-endpoint", gcs_server).output
    assert "frames" in _json(replay_cmd, uri, "--gcs-endpoint", gcs_server)
    monkeypatch.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", gcs_server)  # google-cloud-cpp's own
    assert f"OK {uri}" in _cli(journal_cmd, "verify", uri).output
    # a bare HOST:PORT in STORAGE_EMULATOR_HOST is an emulator: plain http, as Google's clients read it
    monkeypatch.delenv("CLOUD_STORAGE_EMULATOR_ENDPOINT")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.removeprefix("http://"))
    assert JournalReader(uri).metadata == JournalReader(local_journal).metadata


def test_store_failures_in_one_line(gcs_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert str(as_path(f"gcs://{gcs_bucket}/j")) == f"gs://{gcs_bucket}/j"
    with pytest.raises(location.LocationError, match="no bucket"):
        as_path("gs:///j")
    with pytest.raises(NotAJournal, match="bucket no-such-bucket does not exist"):
        JournalReader("gs://no-such-bucket/j")
    with pytest.raises(NotAJournal, match="nothing stored under it"):
        JournalReader(f"gs://{gcs_bucket}/nothing")
    for cmd in (["push", str(Path(__file__).parent.parent / "fixtures" / "journals" / "binance-spot"),
                 "gs://no-such-bucket/j"], ["verify", "gs://no-such-bucket/j"]):  # fmt: skip
        res = CliRunner().invoke(journal_cmd, cmd)
        assert res.exit_code == 1 and "bucket no-such-bucket does not exist" in res.output, (
            res.output
        )
        assert len(res.output.strip().splitlines()) == 1
    monkeypatch.setattr(location, "GCS_RETRY_S", 1.0)  # what an unreachable endpoint is retried
    res = CliRunner().invoke(
        journal_cmd, ["verify", f"gs://{gcs_bucket}/j", "--gcs-endpoint", "http://127.0.0.1:1"]
    )
    assert (
        res.exit_code == 1
        and "cannot reach the store" in res.output
        and "127.0.0.1:1" in res.output
    )
    assert len(res.output.strip().splitlines()) == 1


def test_run_upload_to_gs(gcs_server: str, gcs_bucket: str, tmp_path: Path) -> None:
    jdir = tmp_path / "cap"
    uri = f"gs://{gcs_bucket}/live/cap"
    subprocess.run(
        [*ENGINE, "run", "--journal", str(jdir), "--duration", "2", "--no-dashboard",
         "--upload", uri, "--segment-seconds", "0.7"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert not jdir.exists()  # shipped and verified: the local copy is gone
    stored = objects(gcs_server, gcs_bucket, "live/cap/")
    assert "live/cap/journal.json" in stored and "live/cap/outputs/journal.json" in stored
    assert sum(k.startswith("live/cap/seg-") for k in stored) >= 2
    assert f"OK {uri}" in _cli(journal_cmd, "verify", uri).output
    assert "OK: replay reproduced all" in _cli(replay_cmd, uri, "--check").output


# ------------------------------------------------------------------ what seeking passes unread


def _truncate_local(d: Path, name: str) -> None:
    p = d / name
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def test_a_truncated_skipped_segment_refuses_a_late_book(
    local_journal: Path, tmp_path: Path
) -> None:
    d = tmp_path / "j"
    shutil.copytree(local_journal, d)
    sizes = {
        s["index"]: s["size"] for s in json.loads((d / "journal.json").read_text())["segments"]
    }
    assert sizes and all(n > 0 for n in sizes.values())  # journal.json records each sealed size
    _truncate_local(d, "seg-000002.arrows")
    problems = _cli_fail(journal_cmd, "verify", str(d))
    line = next(p for p in problems if "seg-000002.arrows" in p)
    what = line.split("seg-000002.arrows: ", 1)[1]
    assert "journal.json records" in what
    refused = _cli_fail(book_cmd, str(d), "--symbol", "BTCUSDT", "--at", AT)
    assert len(refused) == 1 and what in refused[0]  # the same words verify gives
    with pytest.raises(JournalCorrupt, match="seg-000002.arrows"):
        engine.open(d).book_at("BTCUSDT", AT)


def test_a_journal_without_recorded_sizes_still_seeks(local_journal: Path, tmp_path: Path) -> None:
    """Journals written before sizes were recorded: read and sought as before."""
    d = tmp_path / "old"
    shutil.copytree(local_journal, d)
    md = json.loads((d / "journal.json").read_text())
    for s in md["segments"]:
        del s["size"]
    (d / "journal.json").write_text(json.dumps(md))
    assert (
        _json(book_cmd, str(d), "--symbol", "BTCUSDT", "--at", AT)["book"]
        == _json(book_cmd, str(local_journal), "--symbol", "BTCUSDT", "--at", AT)["book"]
    )
    assert _cli(journal_cmd, "verify", str(d)).output.startswith("OK")


def test_a_truncated_skipped_segment_in_the_bucket(
    local_journal: Path, gcs_server: str, gcs_bucket: str
) -> None:
    uri = f"gs://{gcs_bucket}/cut"
    _cli(journal_cmd, "push", str(local_journal), uri)
    body = get(gcs_server, gcs_bucket, "cut/seg-000002.arrows")
    put(gcs_server, gcs_bucket, "cut/seg-000002.arrows", body[: len(body) // 2])
    assert any(f"{uri}/seg-000002.arrows" in p for p in _cli_fail(journal_cmd, "verify", uri))
    refused = _cli_fail(book_cmd, uri, "--symbol", "BTCUSDT", "--at", AT)
    assert len(refused) == 1 and "seg-000002.arrows" in refused[0]
    assert "journal.json records" in refused[0]


def _cli_fail(cmd: Any, *args: str) -> list[str]:
    """The output lines of a command that must fail with exit code 1."""
    res = CliRunner().invoke(cmd, list(args))
    assert res.exit_code == 1, res.output
    return [line for line in res.output.splitlines() if line.strip()]


def test_worker_processes_get_the_gcs_endpoint_in_force(monkeypatch: Any) -> None:
    """A Dask worker (another process) reads gs:// through the endpoint this command uses."""
    for var in ("STORAGE_EMULATOR_HOST", "CLOUD_STORAGE_EMULATOR_ENDPOINT", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    assert location.worker_settings() == {}
    with location.gcs_endpoint("http://127.0.0.1:4443"):
        assert location.worker_settings() == {
            "CLOUD_STORAGE_EMULATOR_ENDPOINT": "http://127.0.0.1:4443"
        }
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:9023")  # bare: an emulator's http
    assert location.worker_settings() == {
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": "http://127.0.0.1:9023"
    }
