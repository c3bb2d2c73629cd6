"""Crash benchmark: what a ``kill -9`` of ``engine run`` costs, measured.

    python bench/crash.py [--trials 100] [--rate R] [--min-s 0.5] [--max-s 1.5]

Each trial starts a real ``engine run`` subprocess (the embedded simulator, no
dashboard) into a fresh journal, waits until the journal exists, lets it capture
for a random moment in ``[--min-s, --max-s]`` seconds, sends SIGKILL and notes
the wall-clock time of the kill.  It then reads the journal as every reader does
(torn tails dropped, whole batches kept) and records the **loss window**: the
time between the last journaled frame's ``recv_ns`` (wall clock, taken at
receive) and the kill.  The embedded simulator dies with the process, so its
send counters are not reachable: the time figure is the measure.

Prints p50/p99/max of the loss window over the trials next to the documented
window: the writer's batching (≤ 50 ms or ≤ 1024 frames) plus up to one tick of
the runtime (``LiveConfig.tick_s``), which is what ages a buffered batch out.
A trial whose journal fails to read is reported (and makes the exit status 1).

Owns: the measurement.  Must not: assert anything about speed (it prints).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.journal.reader import list_segments, read_segment
from engine.journal.writer import WriterConfig
from engine.live.config import LiveConfig

ENGINE = str(Path(sys.executable).with_name("engine"))


def last_recv_ns(journal: Path) -> int | None:
    """The ``recv_ns`` of the last frame a reader gets from ``journal`` (None: no frame)."""
    segments, _ = list_segments(journal)
    last = None
    for seg in segments:
        for batch in read_segment(seg):
            if batch.num_rows:
                last = batch.column(1)[-1].as_py()
    return last


def kill_trial(
    journal: Path,
    after_s: float,
    rate: float | None,
    sig_first: int | None = None,
    gap_s: float = 0.0,
) -> int:
    """Run ``engine run`` into ``journal``, SIGKILL it ``after_s`` seconds after the journal
    appears (optionally ``sig_first`` ``gap_s`` seconds before the kill); return the kill's
    wall-clock ns."""
    cmd = [ENGINE, "run", "--journal", str(journal), "--no-dashboard", "--duration", "60"]
    if rate is not None:
        cmd += ["--sim-rate", str(rate)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not any(journal.glob("seg-*")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"engine run did not start a journal (exit {proc.returncode})")
            time.sleep(0.01)
        time.sleep(after_s)
        if sig_first is not None:
            proc.send_signal(sig_first)
            time.sleep(gap_s)
        killed_ns = time.time_ns()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return killed_ns
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 100 values is the 99th, not the max)."""
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument(
        "--rate", type=float, default=None, help="--sim-rate (default: the simulator's)"
    )
    ap.add_argument("--min-s", type=float, default=0.5)
    ap.add_argument("--max-s", type=float, default=1.5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    losses_ms: list[float] = []
    failures = 0
    root = Path(tempfile.mkdtemp(prefix="crash-bench-"))
    try:
        for i in range(args.trials):
            j = root / f"j{i}"
            killed = kill_trial(j, rnd.uniform(args.min_s, args.max_s), args.rate)
            try:
                last = last_recv_ns(j)
            except Exception as exc:  # a journal that does not read is the finding
                print(f"trial {i}: journal unreadable: {exc}", file=sys.stderr)
                failures += 1
                continue
            if last is not None:
                losses_ms.append((killed - last) / 1e6)
            shutil.rmtree(j, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    w = WriterConfig()
    tick_ms = LiveConfig().tick_s * 1000
    rate = "default" if args.rate is None else f"{args.rate:g} frames/s"
    print(
        f"kill -9 trials: {args.trials} at rate {rate} on {os.cpu_count()} cores "
        f"({failures} unreadable, {args.trials - failures - len(losses_ms)} empty)"
    )
    if losses_ms:
        print(
            f"loss window (kill - last journaled recv_ns): p50 {statistics.median(losses_ms):.1f} ms"
            f"  p90 {pct(losses_ms, 0.9):.1f} ms  p99 {pct(losses_ms, 0.99):.1f} ms"
            f"  max {max(losses_ms):.1f} ms"
        )
        over = sorted(x for x in losses_ms if x > w.batch_age_ms + tick_ms)
        print(
            f"over the documented window: {len(over)} of {len(losses_ms)}"
            + (f" ({', '.join(f'{x:.0f}' for x in over)} ms)" if over else "")
        )
    print(
        f"documented window: batch ≤ {w.batch_age_ms:g} ms "
        f"/ ≤ {w.batch_frames} frames + one tick ({tick_ms:g} ms)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
