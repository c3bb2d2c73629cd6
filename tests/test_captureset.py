"""Capture sets: the set manifest, finding the journals of a set or a catalog, and the shard processes.

The shard tests run ``engine run --processes 2`` as a real process tree
(parent, one simulator, two capture children) and signal it as a user or a
supervisor would: SIGTERM to the parent stops every shard cleanly; a shard
killed with SIGKILL is reported by name and exit status while the other goes
on, and the set's exit status says so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.journal.captureset import (
    NotACaptureSet,
    journals_in,
    read_set,
    write_set,
)
from engine.journal.inspect import verify_journal
from engine.live.shards import split
from engine.replay.check import stopped_cleanly

ROOT = Path(__file__).resolve().parent.parent
SPOT = ROOT / "fixtures" / "journals" / "binance-spot"


def test_symbols_are_dealt_round_robin_and_every_shard_gets_one() -> None:
    assert split(["a", "b", "c", "d", "e"], 2) == [("a", "c", "e"), ("b", "d")]
    assert split(["a"], 1) == [("a",)]
    with pytest.raises(ValueError, match="--processes 3 needs at least 3 symbols"):
        split(["a", "b"], 3)


def test_the_set_manifest_round_trips_and_damage_is_refused(tmp_path: Path) -> None:
    cs = write_set(tmp_path / "s", "sim", [("btcusdt",), ("ethusdt", "shibusdt")], 7)
    back = read_set(tmp_path / "s")
    assert back == cs and back.member_for("shibusdt").name == "shard-1"
    with pytest.raises(KeyError, match="unknown symbol NOPE"):
        back.member_for("nope")
    f = tmp_path / "s" / "captureset.json"
    for text in ("{", "[]", '{"kind": "wiretape capture set", "format": 9, "members": []}'):
        f.write_text(text)
        with pytest.raises(NotACaptureSet):
            read_set(tmp_path / "s")
    doc = cs.to_json()
    doc["members"][0]["journal"] = "../elsewhere"
    f.write_text(json.dumps(doc))
    with pytest.raises(NotACaptureSet, match="outside the set"):
        read_set(tmp_path / "s")


def test_a_catalog_lists_its_journals_not_their_outputs(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(SPOT, tmp_path / "cat" / "binance" / "2021-10-12")
    cs = write_set(tmp_path / "cat" / "sim" / "set", "sim", [("btcusdt",), ("ethusdt",)])
    for m in cs.members:
        shutil.copytree(SPOT, cs.journal_dir(m))
        shutil.copytree(SPOT, cs.journal_dir(m) / "outputs")  # a journal inside a journal
    (tmp_path / "cat" / ".staging" / "x").mkdir(parents=True)
    shutil.copytree(SPOT, tmp_path / "cat" / ".staging" / "x" / "j")
    found = [p.relative_to(tmp_path / "cat").as_posix() for p in journals_in(tmp_path / "cat")]
    assert found == ["binance/2021-10-12", "sim/set/shard-0", "sim/set/shard-1"]
    assert journals_in(SPOT) == [SPOT]
    assert journals_in(tmp_path / "nothing") == []


# =============================================================== the process tree


def start_set(path: Path) -> tuple[subprocess.Popen[str], Path]:
    err = path.parent / f"{path.name}.stderr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", "--processes", "2",
         "--symbols", "btcusdt,ethusdt", "--out", str(path)],
        stdout=subprocess.PIPE, stderr=err.open("w"), text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    shards = [path / "shard-0", path / "shard-1"]
    while not all(_frames_written(s) for s in shards):
        assert proc.poll() is None, err.read_text()
        assert time.monotonic() < deadline, "the shards did not start capturing"
        time.sleep(0.1)
    return proc, err


def _frames_written(journal: Path) -> bool:
    return any(p.stat().st_size > 2000 for p in journal.glob("seg-*"))


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(x) for x in (task / "children").read_text().split()]
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_parent_stops_every_shard_cleanly(tmp_path: Path, sig: int) -> None:
    s = tmp_path / "set"
    proc, err = start_set(s)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.read_text()
    summary = json.loads(out)
    assert [sh["exit_status"] for sh in summary["shards"]] == [0, 0]
    for shard in ("shard-0", "shard-1"):
        assert stopped_cleanly(s / shard)  # its own "capture stop" marker: sealed, not killed
        assert verify_journal(s / shard)[0] == []
    assert summary["journal_frames"] == sum(
        sh["summary"]["journal_frames"] for sh in summary["shards"]
    ) > 0  # fmt: skip


def test_a_shard_that_dies_is_reported_and_the_other_goes_on(tmp_path: Path) -> None:
    s = tmp_path / "set"
    proc, err = start_set(s)
    victim = next(
        pid for pid in _children(proc.pid)
        if str(s / "shard-1") in Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    )  # fmt: skip
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while "shard-1 (ethusdt) killed by SIGKILL" not in err.read_text():
        assert time.monotonic() < deadline, err.read_text()
        time.sleep(0.1)
    assert proc.poll() is None  # shard-0 still captures
    size = sum(p.stat().st_size for p in (s / "shard-0").glob("seg-*"))
    deadline = time.monotonic() + 30
    while sum(p.stat().st_size for p in (s / "shard-0").glob("seg-*")) == size:
        assert time.monotonic() < deadline, "shard-0 stopped writing"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    summary = json.loads(out)
    assert [sh["exit_status"] for sh in summary["shards"]] == [0, -signal.SIGKILL]
    assert stopped_cleanly(s / "shard-0") and not stopped_cleanly(s / "shard-1")
    assert verify_journal(s / "shard-1")[0] == []  # a kill -9 leaves a journal that opens
