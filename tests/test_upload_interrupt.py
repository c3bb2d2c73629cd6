"""A second Ctrl-C during ``engine run --upload``'s final upload: it stops cleanly, exit 1.

Real processes and real signals: the first SIGINT stops the capture (sealed,
as always); a second one, while what is left is being uploaded, cuts the
upload short: one ``Error:`` line says it was interrupted, what stays local
and the ``engine journal push`` that finishes it; no traceback, the JSON
summary still printed.  The store is a local folder (``file://``) with
something in the way, so the final upload cannot finish by itself and is
still running when the second signal comes; once the obstacle is gone, the
named push finishes the job.  For one journal and for a capture set (where
the parent is retrying the set manifest when the second signal comes).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from engine.journal.cli import journal as journal_cmd

ENGINE = [sys.executable, "-m", "engine.cli"]


def _wait_for(pred: Any, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None, f"exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
            for c in (t / "children").read_text().split()]  # fmt: skip


@contextmanager
def _engine(args: list[str], err: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``engine ARGS`` running (stdout piped, stderr into ``err``); killed if still there after."""
    with err.open("w") as e:
        proc = subprocess.Popen([*ENGINE, *args], stdout=subprocess.PIPE, stderr=e)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _finish(proc: subprocess.Popen[bytes], err: Path) -> tuple[dict[str, Any], str]:
    out, _ = proc.communicate(timeout=60)
    stderr = err.read_text()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    return json.loads(out), stderr.strip().splitlines()[-1]


def test_second_sigint_during_the_final_upload_keeps_the_rest_local(tmp_path: Path) -> None:
    jdir, store, err = tmp_path / "cap", tmp_path / "store", tmp_path / "stderr"
    uri = f"file://{store}/cap"
    store.mkdir()
    (store / "cap").write_text("in the way")  # the target cannot be created: nothing ships
    args = ["run", "--journal", str(jdir), "--no-dashboard", "--upload", uri,
            "--segment-seconds", "0.3"]  # fmt: skip
    with _engine(args, err) as proc:
        # the uploader has tried (and failed): the capture runs, its signal handling too
        _wait_for(lambda: f"upload to {uri} failed" in err.read_text(), proc, "an upload pass")
        proc.send_signal(signal.SIGINT)
        _wait_for(lambda: "SIGINT: stopping" in err.read_text(), proc, "the stop")
        proc.send_signal(signal.SIGINT)  # the final upload retries the store with backoff
        summary, last = _finish(proc, err)
    up = summary["upload"]
    assert up["interrupted"] is True and up["complete"] is False
    left = up["not_uploaded"]
    assert left["files"] > 0
    assert last == (
        f"Error: upload to {uri} interrupted: {left['files']} files ({left['bytes']} bytes) not"
        f" uploaded, kept in {jdir}; finish it with engine journal push {jdir} {uri}"
    )
    assert "OK" in CliRunner().invoke(journal_cmd, ["verify", str(jdir)]).output  # sealed
    (store / "cap").unlink()  # the store is back: the named push finishes the job
    pushed = CliRunner().invoke(journal_cmd, ["push", str(jdir), uri, "--json"])
    assert pushed.exit_code == 0, pushed.output
    assert not json.loads(pushed.output)["pending"]
    assert "OK" in CliRunner().invoke(journal_cmd, ["verify", uri]).output


def test_second_sigint_while_the_parent_ships_the_set_manifest(tmp_path: Path) -> None:
    out, store, err = tmp_path / "set", tmp_path / "store", tmp_path / "stderr"
    uri = f"file://{store}/set"
    (store / "set" / "captureset.json").mkdir(parents=True)  # the set manifest cannot go there
    args = ["run", "--processes", "2", "--sim", "--symbols", "btcusdt,ethusdt", "--out", str(out),
            "--upload", uri, "--segment-seconds", "0.3"]  # fmt: skip
    with _engine(args, err) as proc:
        shards = [store / "set" / s for s in ("shard-0", "shard-1")]
        _wait_for(lambda: all(any(d.glob("seg-*.arrows")) for d in shards), proc,
                  "both shards to ship")  # fmt: skip
        proc.send_signal(signal.SIGINT)  # the shards stop, seal and ship the rest of themselves
        # no child left: the parent is trying (and retrying) the set manifest
        _wait_for(lambda: not _children(proc.pid), proc, "the shards to finish")
        proc.send_signal(signal.SIGINT)
        summary, last = _finish(proc, err)
    up = summary["upload"]
    assert up["interrupted"] is True and up["complete"] is False and up["incomplete"] == []
    assert [s["exit_status"] for s in summary["shards"]] == [0, 0]  # each shipped itself
    assert last == (
        f"Error: upload to {uri} interrupted: captureset.json not uploaded, kept in {out};"
        f" finish it with engine journal push {out} {uri}"
    )
    (store / "set" / "captureset.json").rmdir()
    pushed = CliRunner().invoke(journal_cmd, ["push", str(out), uri, "--json"])
    assert pushed.exit_code == 0, pushed.output
    assert json.loads(pushed.output)["captureset"] == "copied"
    assert (store / "set" / "captureset.json").is_file()
