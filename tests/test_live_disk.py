"""A full disk, a failing disk and a disk running low: the capture stops typed, summarised and recoverable.

Real failures only: the journal writer's file descriptor replaced (``os.dup2``)
in a running capture by one on ``/dev/full`` (every write fails with ENOSPC) or
by a pseudo-terminal whose other end has hung up (every write fails with EIO,
what a dying disk or a lost network block device returns), and ``engine run`` in a
subprocess writing into a tmpfs of a few MiB that this test mounts (as root;
skipped otherwise) and fills.  What a user relies on is checked the way a
user would: the exit status, the JSON summary, no traceback, and
``engine journal verify`` / ``engine journal recover`` on what was left.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from engine.assembly import standard_reducers
from engine.codecs.registry import get_codec
from engine.journal.reader import JournalReader
from engine.journal.writer import JournalWriter
from engine.live.capture import Capture
from engine.live.cli import EXIT_CODES
from engine.live.config import LiveConfig
from engine.replay.check import check
from engine.sim.cli import open_simulator

ENGINE = [sys.executable, "-m", "engine.cli"]
LIVE = dict(
    ping_interval_s=0.3, ping_timeout_s=0.3, connect_timeout_s=2.0, disconnect_timeout_s=0.5
)


def engine(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENGINE, *args], capture_output=True, text=True, timeout=timeout)


def assert_recovers(jdir: Path) -> list[int]:
    """``engine journal recover`` seals what a failed write left; the result verifies; returns the seqs."""
    rec = engine("journal", "recover", str(jdir))
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert not list(jdir.glob("*.partial"))
    verify = engine("journal", "verify", str(jdir))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    seqs = [f.seq for f in JournalReader(jdir).frames()]
    assert seqs == list(range(1, len(seqs) + 1)) and seqs
    return seqs


def _dev_full() -> int:
    return os.open("/dev/full", os.O_WRONLY)


def _hung_up_pty() -> int:
    master, slave = os.openpty()
    os.close(master)  # writes to the slave now fail with EIO
    return slave


#: how to get a descriptor whose writes fail, and the errno those writes fail with
#: (fsync on either fails with EINVAL: whichever came first is the one reported)
FAILING = {"enospc": (_dev_full, errno.ENOSPC), "eio": (_hung_up_pty, errno.EIO)}


@pytest.mark.parametrize("failure", sorted(FAILING))
async def test_a_write_failure_stops_the_capture_typed_and_leaves_a_recoverable_journal(
    tmp_path: Path, failure: str
) -> None:
    open_failing, expected = FAILING[failure]
    codec = get_codec("sim")
    jdir = tmp_path / "j"
    async with open_simulator(seed=3, rate=2000, tick=0.005) as sim:
        cfg = LiveConfig(ws_url=sim.ws_url, rest_url=sim.rest_url, **LIVE)
        writer = JournalWriter.create(jdir, {"exchange": "sim"})
        cap = Capture(cfg, writer, codec, standard_reducers(codec, {}), rng=random.Random(1))
        with trio.fail_after(30):
            async with trio.open_nursery() as n:
                await n.start(cap.run)
                while writer.frames_written < 500:  # noqa: ASYNC110 - waiting on the capture
                    await trio.sleep(0.02)
                bad = open_failing()
                try:
                    os.dup2(bad, writer._fd)  # every later write fails (fsync too)
                finally:
                    os.close(bad)
                # no stop(): the capture must end by itself, without raising
    st = cap.status
    assert st.stopped_by == "journal_write_failed"
    assert st.errors["journal_write"] == 1
    assert writer.failed is not None
    assert writer.failed.errno in (expected, errno.EINVAL)
    assert "journal write failed" in st.stop_detail
    # never taken for a network error (a loaded machine may stall a ping: not this)
    assert not {"error", "connect_failed", "invalid_data"} & set(st.errors)
    # every frame written was folded; the one whose append met the failure (if one did) and
    # everything after it was not
    assert writer.next_seq - 2 <= cap.pipeline.counters.last_seq <= writer.next_seq - 1
    # the open segment is left for recovery, and recovers to a sound prefix
    assert list(jdir.glob("*.partial"))
    seqs = assert_recovers(jdir)
    assert len(seqs) >= 500


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` for the block (needs root: skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def run_until_exit(jdir: Path, *flags: str) -> tuple[int, dict, str]:
    proc = subprocess.run(
        [
            *ENGINE,
            "run",
            "--journal",
            str(jdir),
            "--no-dashboard",
            "--duration",
            "120",
            "--sim-rate",
            "5000",
            *flags,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=150,
    )
    out = proc.stdout
    summary = json.loads(out[out.index("{") :]) if "{" in out else {}
    return proc.returncode, summary, proc.stderr


def test_engine_run_on_a_full_filesystem_exits_3_with_its_summary(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "1m") as mnt:
        jdir = mnt / "j"
        code, summary, err = run_until_exit(jdir, "--min-free-mb", "0")
        assert code == EXIT_CODES["journal_write_failed"] == 3, err
        assert "Traceback" not in err and "ExceptionGroup" not in err
        assert summary["stopped_by"] == "journal_write_failed"
        assert "No space left on device" in summary["stop_detail"]
        assert summary["errors"].get("journal_write") == 1
        # never taken for a network error (a loaded machine may stall a ping: not this)
        assert not {"error", "connect_failed", "invalid_data"} & set(summary["errors"])
        assert f"engine journal recover {jdir}" in err
        # what was written is sound as it stands (a crashed journal verifies) ...
        verify = engine("journal", "verify", str(jdir))
        assert verify.returncode == 0, verify.stdout + verify.stderr
        # recovering while the disk is still full says so in one line and changes nothing
        full = engine("journal", "recover", str(jdir))
        assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
        assert full.stderr.startswith("free space first") and full.stderr.count("\n") == 1
        assert engine("journal", "verify", str(jdir)).returncode == 0
        # ... and once there is room again (sealing rewrites the segment), it recovers
        subprocess.run(["mount", "-o", "remount,size=8m", str(mnt)], check=True)
        assert_recovers(jdir)


def test_engine_run_stops_cleanly_before_the_disk_is_full(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "4m") as mnt:
        jdir = mnt / "j"
        code, summary, err = run_until_exit(jdir, "--min-free-mb", "3")
        assert code == EXIT_CODES["low_disk"] == 4, err
        assert "Traceback" not in err
        assert summary["stopped_by"] == "low_disk" and "below the 3 MiB minimum" in err
        assert "journal_write" not in summary["errors"]
        # stopped in time: sealed, sound, and replay reproduces what was computed live
        assert not list(jdir.glob("*.partial")) and not list(jdir.glob("**/*.partial"))
        verify = engine("journal", "verify", str(jdir))
        assert verify.returncode == 0, verify.stdout + verify.stderr
        frames = list(JournalReader(jdir).frames())
        assert (
            frames[-1].payload.startswith(b"capture stop") and b"(low_disk)" in frames[-1].payload
        )
        # every frame the simulator counted was received (its shutdown may cut off a chunk
        # the capture was still reading: those frames arrive but are not counted)
        assert summary["frames_in"] >= summary["simulator_frames_sent"] > 0
        mismatch, compared = check(jdir)
        assert mismatch is None and compared > 0


def test_min_free_mb_refuses_to_start_on_a_disk_already_too_full(tmp_path: Path) -> None:
    # a minimum above what any disk here has free: the capture stops at its first check
    code, summary, err = run_until_exit(tmp_path / "j", "--min-free-mb", str(2**40))
    assert code == 4, err
    assert summary["stopped_by"] == "low_disk" and "Traceback" not in err
    verify = engine("journal", "verify", str(tmp_path / "j"))
    assert verify.returncode == 0, verify.stdout + verify.stderr
