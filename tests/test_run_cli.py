"""`engine run` as a user runs it: a real subprocess, the embedded simulator on 127.0.0.1, real files.

The README's main command is `engine run` with no arguments, stopped with
Ctrl-C: these tests run exactly that (SIGINT) and the `--duration` form, and
then check what a user relies on: exit 0, a sealed journal that verifies,
every frame the simulator sent is in it, and replay reproduces the outputs
recorded live.
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

from engine.journal.inspect import verify_journal
from engine.journal.reader import JournalReader
from engine.replay.check import check
from engine.replay.checkpoints import list_checkpoints

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.recovery import assert_every_break_recovered  # noqa: E402

ENGINE = [sys.executable, "-m", "engine.cli"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    return env


def _summary(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{") :])


def _assert_sound(jdir: Path, summary: dict, faults: bool = False) -> None:
    assert not list(jdir.glob("*.partial")), "journal left unsealed"
    verify = subprocess.run(
        [*ENGINE, "journal", "verify", str(jdir)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    frames = list(JournalReader(jdir).frames())
    inbound = [f for f in frames if f.dir == "in" and f.kind in ("text", "binary")]
    assert summary["frames_in"] == len(inbound) > 0
    if faults:  # an abrupt TCP drop loses what was in flight: not ours to journal
        assert 0 <= summary["simulator_frames_sent"] - summary["frames_in"] <= 10
    else:  # zero loss: every frame the simulator sent us is journaled
        assert summary["simulator_frames_sent"] == summary["frames_in"]
    assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
    mismatch, compared = check(jdir)
    assert mismatch is None, mismatch
    assert compared == sum(summary["outputs"].values()) > 0
    assert list_checkpoints(jdir), "the final checkpoint is missing"


def test_run_with_no_arguments_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*ENGINE, "run"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(tmp_path.glob("journals/*/seg-*")):
            time.sleep(0.1)
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    (jdir,) = list((tmp_path / "journals").iterdir())
    assert jdir.name.startswith("sim-")
    summary = _summary(out)
    assert Path(summary["journal"]).resolve() == jdir.resolve()
    assert "journal sealed" in err and "Traceback" not in err
    manifest = json.loads((jdir / "journal.json").read_text())
    assert manifest["exchange"] == "sim" and manifest["symbols"] == ["BTCUSDT", "ETHUSDT"]
    _assert_sound(jdir, summary)


@pytest.mark.parametrize(
    "faults",
    # the faulted run checks all the quiet one does, and more: the quiet one runs in the slow profile
    [pytest.param("", marks=pytest.mark.slow), "drop,gap,garbage,close,shutdown,drift"],
)
def test_run_for_a_duration_with_faults_is_complete_and_replays_identically(
    tmp_path: Path, faults: str
) -> None:
    jdir = tmp_path / "j"
    args = [*ENGINE, "run", "--journal", str(jdir), "--duration", "6", "--no-dashboard"]
    if faults:
        args += ["--sim-faults", faults, "--sim-fault-every", "0.8", "--verify-every", "1"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=90, env=_env())
    assert done.returncode == 0, done.stderr
    summary = _summary(done.stdout)
    _assert_sound(jdir, summary, faults=bool(faults))
    if faults:
        assert summary["reconnects"] >= 1
        assert summary["decode_errors"] >= 1  # the garbage frames: journaled, decoded as errors
        assert summary["outputs"].get("GapDetected", 0) >= 1
        assert_every_break_recovered(jdir, ["BTCUSDT", "ETHUSDT"])
        manifest = json.loads((jdir / "journal.json").read_text())
        assert manifest["pipeline"] == {"verify_interval_s": 1.0}


def test_run_refuses_an_existing_journal_and_bad_flags(tmp_path: Path) -> None:
    jdir = tmp_path / "j"
    jdir.mkdir()
    (jdir / "journal.json").write_text("{}")
    done = subprocess.run(
        [*ENGINE, "run", "--journal", str(jdir), "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "already holds a journal" in done.stderr
    assert "Traceback" not in done.stderr
    done = subprocess.run(
        [*ENGINE, "run", "--sim-faults", "meteor", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "meteor" in done.stderr


def test_run_with_a_checkpoint_due_on_every_frame_exits_cleanly(tmp_path: Path) -> None:
    """Regression: a checkpoint falling due on the final marker raised BrokenResourceError."""
    jdir = tmp_path / "j"
    args = [*ENGINE, "run", "--journal", str(jdir), "--duration", "3", "--no-dashboard"]
    done = subprocess.run(
        [*args, "--checkpoint-every", "0.001"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    summary = _summary(done.stdout)
    _assert_sound(jdir, summary)
    last = list(JournalReader(jdir).frames())[-1]
    assert last.payload.startswith(b"capture stop")
    assert list_checkpoints(jdir)[-1].last_seq == last.seq  # the final state is checkpointed


def test_run_out_is_where_the_journal_goes(tmp_path: Path) -> None:
    # one vocabulary on every command: --out is where output goes (--journal is the same option)
    jdir = tmp_path / "captured"
    done = subprocess.run(
        [*ENGINE, "run", "--out", str(jdir), "--duration", "1", "--no-dashboard"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (jdir / "journal.json").is_file() and not (tmp_path / "journals").exists()
    assert verify_journal(jdir)[0] == []
