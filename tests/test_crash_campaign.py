"""The crash campaign: ``engine run`` killed at random moments leaves journals that verify, replay and check.

Slow (``-m slow``): every trial is a real ``engine run`` subprocess capturing
from its embedded simulator into a real journal, killed with SIGKILL after a
random ≈0.3–1.5 s of capture (the same trial ``bench/crash.py`` measures), at
the simulator's default rate and at a high one.  Each journal must then, as it
stands, pass ``engine journal verify``; ``engine replay J --check`` must replay
it and find what was computed live over the common prefix; and ``engine journal
recover`` must seal what the kill left open into a journal that verifies again,
seq running on by one from 1.  A second set sends SIGTERM (the capture starts
sealing) and SIGKILL a few moments later, to land the kill inside the seal:
end-of-stream, the rewrite into an IPC file, the rename, the manifest.
"""

from __future__ import annotations

import importlib.util
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.journal.reader import JournalReader

ENGINE = [sys.executable, "-m", "engine.cli"]
HIGH_RATE = 20000.0

_spec = importlib.util.spec_from_file_location(
    "bench_crash", Path(__file__).parents[1] / "bench" / "crash.py"
)
assert _spec is not None and _spec.loader is not None
bench_crash = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_crash)

pytestmark = pytest.mark.slow


def engine(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENGINE, *args], capture_output=True, text=True, timeout=180)


def assert_sound_after_a_kill(jdir: Path) -> None:
    """Verify as it stands, replay with --check, recover, verify again; never a traceback."""
    runs = [engine("journal", "verify", str(jdir)), engine("replay", str(jdir), "--check")]
    for p in runs:
        assert p.returncode == 0, f"{p.args}: {p.stdout}{p.stderr}"
    rec = engine("journal", "recover", str(jdir))
    again = engine("journal", "verify", str(jdir))
    for p in (*runs, rec, again):
        assert p.returncode == 0, f"{p.args}: {p.stdout}{p.stderr}"
        assert "Traceback" not in p.stdout + p.stderr
    assert not list(jdir.glob("seg-*.partial")) and not list(jdir.glob("seg-*.tmp"))
    seqs = [f.seq for f in JournalReader(jdir).frames()]
    assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.parametrize("rate", [None, HIGH_RATE], ids=["default-rate", "high-rate"])
@pytest.mark.parametrize("trial", range(50))
def test_sigkill_at_a_random_moment_leaves_a_sound_journal(
    tmp_path: Path, rate: float | None, trial: int
) -> None:
    after = random.Random(trial).uniform(0.3, 1.5)
    jdir = tmp_path / "j"
    bench_crash.kill_trial(jdir, after, rate)
    assert_sound_after_a_kill(jdir)


@pytest.mark.parametrize("gap_s", [0.0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4])
def test_sigkill_while_sealing_after_sigterm_leaves_a_sound_journal(
    tmp_path: Path, gap_s: float
) -> None:
    jdir = tmp_path / "j"
    bench_crash.kill_trial(jdir, 1.0, HIGH_RATE, signal.SIGTERM, gap_s)
    assert_sound_after_a_kill(jdir)
