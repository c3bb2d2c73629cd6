"""``engine replay --check`` after a capture that did not stop cleanly.

A kill -9 (or a crash, or a power loss) loses the unflushed tail of the frames
journal and of the outputs journal independently, so after it one side may
end before the other.  Then the check compares the common prefix and says
where each side ends; after a clean stop a missing or extra output is still a
difference (tests/test_determinism.py).  Everything here runs the real
``engine run`` against the embedded simulator in a subprocess, and real files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.journal.reader import JournalReader
from engine.journal.recorder import OUTPUTS_DIR, read_outputs
from engine.journal.schema import Dir, Kind
from engine.journal.writer import JournalWriter
from engine.replay.check import check, check_report, stopped_cleanly

ENGINE = [sys.executable, "-m", "engine.cli"]


def _engine(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENGINE, *args], capture_output=True, text=True, timeout=timeout)


def _outputs_recorded(journal: Path) -> int:
    try:
        return sum(1 for _ in read_outputs(journal))
    except Exception:  # noqa: BLE001 - still being written: try again
        return 0


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("crash") / "clean"
    p = _engine("run", "--duration", "2", "--no-dashboard", "--journal", str(d))
    assert p.returncode == 0, p.stderr
    return d


def _copy_frames(src: Path, dst: Path, keep: int | None) -> None:
    """Rewrite ``src``'s frames journal into ``dst`` with only its first ``keep`` frames."""
    r = JournalReader(src)
    w = JournalWriter.create(dst, r.metadata)
    frames = list(r.frames())
    for f in frames[: len(frames) if keep is None else keep]:
        w.append(f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
    w.close()


def _copy_outputs(src: Path, dst: Path, keep: int | None) -> None:
    r = JournalReader(src / OUTPUTS_DIR)
    w = JournalWriter.create(dst / OUTPUTS_DIR, r.metadata)
    frames = list(r.frames())
    for f in frames[: len(frames) if keep is None else keep]:
        w.append(f.recv_ns, 0, Dir.LOCAL, Kind.MARKER, f.source, f.payload)
    w.close()


def test_a_clean_capture_ends_with_its_stop_marker(clean: Path) -> None:
    assert stopped_cleanly(clean)
    rep = check_report(clean)
    assert rep.clean and rep.mismatch is None and rep.unmatched_side is None and rep.compared > 5


def test_lagging_outputs_after_a_crash_compare_the_common_prefix(clean: Path, tmp_path: Path) -> None:
    n_frames = sum(1 for _ in JournalReader(clean).frames())
    recorded = list(read_outputs(clean))
    crashed = tmp_path / "crashed"
    _copy_frames(clean, crashed, n_frames - 1)  # the stop marker is gone: not a clean stop
    _copy_outputs(clean, crashed, len(recorded) - 3)  # and the recorder lost its last outputs
    assert not stopped_cleanly(crashed)
    rep = check_report(crashed)
    assert rep.mismatch is None and rep.compared == len(recorded) - 3
    assert rep.unmatched_side == "replayed" and rep.unmatched == 3
    assert rep.recorded_end == recorded[-4][0]
    p = _engine("replay", str(crashed), "--check")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("OK") and "did not stop cleanly" in p.stdout
    assert f"recorded outputs end after frame seq {recorded[-4][0]}" in p.stdout


def test_a_journal_tail_lost_in_a_crash_is_said_not_a_difference(clean: Path, tmp_path: Path) -> None:
    recorded = list(read_outputs(clean))
    last_seq = recorded[-1][0]
    crashed = tmp_path / "short-journal"
    _copy_frames(clean, crashed, last_seq - 1)  # the frame of the last output(s) is lost
    _copy_outputs(clean, crashed, None)
    rep = check_report(crashed)
    lost = sum(1 for s, _ in recorded if s >= last_seq)
    assert rep.mismatch is None and rep.unmatched_side == "recorded" and rep.unmatched == lost
    assert rep.replayed_end == last_seq - 1 and rep.recorded_end == last_seq
    p = _engine("replay", str(crashed), "--check")
    assert p.returncode == 0 and "the journal ends at frame seq" in p.stdout, p.stdout


def test_a_real_difference_after_a_crash_is_still_one(clean: Path, tmp_path: Path) -> None:
    from engine import serde

    n_frames = sum(1 for _ in JournalReader(clean).frames())
    crashed = tmp_path / "tampered"
    _copy_frames(clean, crashed, n_frames - 1)
    r = JournalReader(clean / OUTPUTS_DIR)
    w = JournalWriter.create(crashed / OUTPUTS_DIR, r.metadata)
    for i, f in enumerate(r.frames()):
        payload = f.payload
        if i == 2:
            d = serde.loads_json(payload)
            d["frame_seq"] += 1
            payload = serde.dumps_json(d)
        w.append(f.recv_ns, 0, Dir.LOCAL, Kind.MARKER, f.source, payload)
    w.close()
    mismatch, n = check(crashed)
    assert mismatch is not None and n == 2
    assert _engine("replay", str(crashed), "--check").returncode == 1


# 60 outputs takes ~30 s (a capture run until then): the slow profile; 20 runs by default
@pytest.mark.parametrize("after_outputs", [20, pytest.param(60, marks=pytest.mark.slow)])
def test_kill_9_then_check_passes(tmp_path: Path, after_outputs: int) -> None:
    journal = tmp_path / "killed"
    proc = subprocess.Popen(
        [*ENGINE, "run", "--duration", "60", "--no-dashboard", "--journal", str(journal)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while _outputs_recorded(journal) < after_outputs:
            assert proc.poll() is None, "engine run ended early"
            assert time.monotonic() < deadline, "no outputs recorded within 60 s"
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not stopped_cleanly(journal)
    p = _engine("replay", str(journal), "--check")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("OK") and "Traceback" not in p.stderr
