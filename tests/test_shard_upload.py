"""A sharded capture shipped to object storage: ``engine run --processes N --upload URI``.

Against a real S3 server (moto's, on 127.0.0.1, through pyarrow's S3 client)
and real process trees: each shard uploads its own journal to
``URI/shard-k`` as one ``engine run --upload`` would, the parent uploads the
set manifest last, once every shard is complete; a reader pulls the set back
and it verifies and replays exactly.  A kill -9 of the parent stops the shards
(each seals and ships what it has) and leaves the set manifest for
``engine journal push SET URI``; a shard whose store fails is named while the
other ships, and ``push`` finishes the set once the store is back.
"""

# ruff: noqa: F811 - the S3 fixtures are imported from tests/helpers/s3.py
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.journal.cli import journal as journal_cmd
from engine.journal.reader import JournalReader
from engine.replay.cli import replay as replay_cmd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.s3 import bucket, keys, s3_server  # noqa: E402,F401

ENGINE = [sys.executable, "-m", "engine.cli"]
SHARDS = ("shard-0", "shard-1")


def _cli(cmd: Any, *args: str, code: int = 0) -> Any:
    res = CliRunner().invoke(cmd, list(args), catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res


def _json(cmd: Any, *args: str) -> dict[str, Any]:
    return json.loads(_cli(cmd, *args, "--json").output)


def _replays(root: str) -> list[dict[str, Any]]:
    """``engine replay --json`` of each shard of the set at ``root`` (a directory or a URI)."""
    docs = [_json(replay_cmd, f"{root}/{shard}") for shard in SHARDS]
    for d in docs:
        d.pop("journal"), d.pop("elapsed_s")
    return docs


def _pulled_set_is_whole(uri: str, into: Path) -> None:
    """Pull the set at ``uri``: both shards and the manifest; it verifies and replays as stored."""
    pulled = _json(journal_cmd, "pull", uri, str(into))
    assert pulled["captureset"] == "copied" and not pulled["failed"]
    assert (into / "captureset.json").is_file()
    v = _cli(journal_cmd, "verify", str(into)).output
    assert v.count("OK ") == 2, v
    check = _cli(replay_cmd, str(into), "--check").output
    assert all(f"OK: {s}: replay reproduced" in check for s in SHARDS), check
    assert _replays(str(into)) == _replays(uri)  # the pulled set is what the store holds


def _children(pid: int) -> list[int]:
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
            for c in (t / "children").read_text().split()]  # fmt: skip


def _sharded(out: Path, uri: str, *extra: str) -> list[str]:
    return [*ENGINE, "run", "--processes", "2", "--sim", "--symbols", "btcusdt,ethusdt",
            "--out", str(out), "--upload", uri, "--segment-seconds", "0.5",
            "--checkpoint-every", "0.5", *extra]  # fmt: skip


def test_each_shard_ships_itself_and_the_set_manifest_goes_last(
    s3_server: str, bucket: str, tmp_path: Path
) -> None:
    out, uri = tmp_path / "set", f"s3://{bucket}/sim/set"
    p = subprocess.run(_sharded(out, uri, "--duration", "2"), capture_output=True, text=True,
                       timeout=90)  # fmt: skip
    assert p.returncode == 0, p.stderr
    up = json.loads(p.stdout)["upload"]
    assert up == {"target": uri, "complete": True, "interrupted": False, "incomplete": [],
                  "not_uploaded": {"files": 0, "bytes": 0}, "last_error": None,
                  "local_copy_removed": True}  # fmt: skip
    assert not out.exists()  # every shard verified in the store: nothing is left locally
    stored = keys(s3_server, bucket, "sim/set/")
    for shard in SHARDS:
        assert {f"sim/set/{shard}/journal.json", f"sim/set/{shard}/outputs/journal.json"} <= set(
            stored
        )
        assert any(k.startswith(f"sim/set/{shard}/checkpoints/ckpt-") for k in stored)
    assert "sim/set/captureset.json" in stored
    assert not any(k.endswith((".partial", ".tmp")) for k in stored)
    _pulled_set_is_whole(uri, tmp_path / "pulled")


def test_kill_9_of_the_parent_then_push_finishes_the_set(
    s3_server: str, bucket: str, tmp_path: Path
) -> None:
    out, uri = tmp_path / "set", f"s3://{bucket}/crash/set"
    proc = subprocess.Popen(_sharded(out, uri, "--duration", "60"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not all(keys(s3_server, bucket, f"crash/set/{s}/seg-") for s in SHARDS):
            assert proc.poll() is None and time.monotonic() < deadline, "no shard uploaded"
            time.sleep(0.2)
        children = _children(proc.pid)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    deadline = time.monotonic() + 60
    while any(Path(f"/proc/{c}").exists() for c in children):  # the shards stop with their parent
        assert time.monotonic() < deadline, "a shard outlived its parent"
        time.sleep(0.1)
    assert "crash/set/captureset.json" not in keys(s3_server, bucket, "crash/")  # never half a set
    assert (out / "captureset.json").is_file()
    pushed = _json(journal_cmd, "push", str(out), uri)
    assert pushed["captureset"] == "copied" and not pushed["failed"]
    assert "crash/set/captureset.json" in keys(s3_server, bucket, "crash/")
    assert _json(journal_cmd, "push", str(out), uri)["captureset"] == "skipped"  # idempotent
    _pulled_set_is_whole(uri, tmp_path / "pulled")


@pytest.mark.slow  # the single-journal kill -9, recover and push runs by default (test_storage)
def test_kill_9_of_the_whole_set_then_recover_and_push(
    s3_server: str, bucket: str, tmp_path: Path
) -> None:
    out, uri = tmp_path / "set", f"s3://{bucket}/lost/set"
    proc = subprocess.Popen(_sharded(out, uri, "--duration", "60", "--keep-local"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not all(keys(s3_server, bucket, f"lost/set/{s}/seg-") for s in SHARDS):
            assert proc.poll() is None and time.monotonic() < deadline, "no shard uploaded"
            time.sleep(0.2)
        for pid in _children(proc.pid):  # the machine goes down: shards, simulator, parent
            os.kill(pid, signal.SIGKILL)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    early = CliRunner().invoke(journal_cmd, ["push", str(out), uri])
    assert early.exit_code == 1, early.output
    assert "the set manifest was not uploaded: shards incomplete: shard-0, shard-1" in early.output
    assert "lost/set/captureset.json" not in keys(s3_server, bucket, "lost/")
    for shard in SHARDS:  # the exact directories to seal are named
        assert f"{shard}: not uploaded: " in early.output and f"{out / shard}" in early.output
    # one recover of the set seals every shard and its outputs journal
    subprocess.run([*ENGINE, "journal", "recover", str(out)], check=True, capture_output=True)
    assert not list(out.rglob("*.partial"))
    pushed = _json(journal_cmd, "push", str(out), uri)
    assert pushed["captureset"] == "copied" and not pushed["failed"]
    _pulled_set_is_whole(uri, tmp_path / "pulled")
    assert _replays(str(out)) == _replays(uri)  # the store holds all the local set holds


def test_a_shard_whose_store_fails_is_named_and_the_other_ships(tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "set"
    uri = f"file://{store}/set"
    (store / "set").mkdir(parents=True)
    (store / "set" / "shard-1").write_text("in the way")  # shard-1's target cannot be created
    p = subprocess.run(_sharded(out, uri, "--duration", "2"), capture_output=True, text=True,
                       timeout=90)  # fmt: skip
    # an upload failure never stops the capture (both shards ran to the end), but what did not
    # ship is a data failure: one line naming it and the push that finishes it, exit 1
    assert p.returncode == 1, p.stderr
    summary = json.loads(p.stdout)
    assert [s["exit_status"] for s in summary["shards"]] == [0, 1]
    assert all(s["summary"]["frames_in"] > 0 and not s["summary"]["stopped_by"]
               for s in summary["shards"])  # fmt: skip
    up = summary["upload"]
    assert up["complete"] is False and up["incomplete"] == ["shard-1"]
    assert f"shard-1 (ethusdt): upload to {uri}/shard-1 incomplete" in p.stderr
    assert "exited with status" not in p.stderr  # the shard is named for its upload, not as dead
    left = up["not_uploaded"]
    assert left["files"] > 0
    assert p.stderr.strip().splitlines()[-1] == (
        f"Error: upload to {uri} incomplete (shards incomplete: shard-1): {left['files']} files"
        f" ({left['bytes']} bytes) and captureset.json not uploaded, kept in {out}; finish it"
        f" with engine journal push {out} {uri}"
    )
    assert (store / "set" / "shard-0" / "journal.json").is_file() and not (out / "shard-0").exists()
    assert not (store / "set" / "captureset.json").exists()
    errors = [f for f in JournalReader(out / "shard-1", kinds={"error"}).frames()
              if f.source == "upload"]  # fmt: skip
    assert errors and b"shard-1" in errors[0].payload  # journaled in the shard, as a local event

    failed = CliRunner().invoke(journal_cmd, ["push", str(out), uri])
    assert failed.exit_code == 1 and "shard-1: not uploaded to" in failed.output
    assert "the set manifest was not uploaded: shards incomplete: shard-1" in failed.output
    (store / "set" / "shard-1").unlink()  # the store is back
    pushed = _json(journal_cmd, "push", str(out), uri)
    assert pushed["stored_earlier"] == ["shard-0"] and pushed["members"]["shard-1"]["uploaded"]
    assert pushed["captureset"] == "copied"
    _pulled_set_is_whole(uri, tmp_path / "pulled")
