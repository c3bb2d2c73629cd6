"""Crash benchmark: what a ``kill -9`` of ``engine run`` costs, measured in frames and in time.

    python bench/crash.py [--trials 100] [--rate R] [--min-s 0.5] [--max-s 1.5]

One ``engine simulate`` process serves every trial, so it outlives the kills
and its send counters can be read.  Each trial starts a real ``engine run
--url …`` subprocess (no dashboard) against it into a fresh journal, waits
until the journal exists, lets it capture for a random moment in
``[--min-s, --max-s]`` seconds, sends SIGKILL and notes the wall-clock time of
the kill.  It then reads the journal as every reader does (torn tails dropped,
whole batches kept) and records, per trial:

* **frames lost**: what the simulator sent on the trial's WebSocket
  connection (``/sim/stats``: a frame counts once its ``send_all`` returned)
  minus the inbound text frames the journal kept from it.  This counts what
  was in the kernel's socket buffers at the kill as well as what the engine
  had received but not yet written: everything the capture did not keep.
* **loss window**: the time between the last journaled frame's ``recv_ns``
  (wall clock, taken at receive) and the kill.

Prints p50/p99/max of both over the trials next to the documented window:
the writer's batching (≤ 50 ms or ≤ 1024 frames) plus up to one tick of the
runtime (``LiveConfig.tick_s``), which is what ages a buffered batch out.
A trial whose journal fails to read is reported (and makes the exit status 1).

Owns: the measurement.  Must not: assert anything about speed (it prints).
"""

from __future__ import annotations

import argparse
import json
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
import urllib.request
from pathlib import Path
from typing import Any

from engine.journal.reader import list_segments, read_segment
from engine.journal.schema import Dir, Kind
from engine.journal.writer import WriterConfig
from engine.live.config import LiveConfig

ENGINE = str(Path(sys.executable).with_name("engine"))


def journaled(journal: Path) -> tuple[int | None, int]:
    """``(recv_ns of the last frame, inbound text frames)`` a reader gets from ``journal``."""
    segments, _ = list_segments(journal)
    last, inbound = None, 0
    for seg in segments:
        for batch in read_segment(seg):
            if batch.num_rows:
                last = batch.column(1)[-1].as_py()
                dirs, kinds = batch.column(3).to_pylist(), batch.column(4).to_pylist()
                inbound += sum(
                    d == Dir.IN and k == Kind.TEXT for d, k in zip(dirs, kinds, strict=True)
                )
    return last, inbound


def start_simulator(rate: float | None) -> tuple[subprocess.Popen[str], int]:
    cmd = [ENGINE, "simulate", "--port", "0"] + ([] if rate is None else ["--rate", str(rate)])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if "ws://127.0.0.1:" not in line:
        proc.kill()
        raise RuntimeError(f"engine simulate did not start: {line!r}")
    return proc, int(line.split("ws://127.0.0.1:")[1].split()[0].split("/")[0])


def sim_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/sim/stats", timeout=10) as r:
        return json.loads(r.read())


def sent_to_new_connections(port: int, seen: set[int]) -> int:
    """Frames the simulator sent on connections not in ``seen`` (which it then joins);
    waits until those have ended (the kill closes them)."""
    deadline = time.monotonic() + 10
    while True:
        conns = [c for c in sim_stats(port)["connections"] if c["id"] not in seen]
        if all(not c.get("open", c["closed"] is None) or c["closed"] for c in conns):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    seen.update(c["id"] for c in conns)
    return sum(c["frames"] for c in conns)


def kill_trial(
    journal: Path,
    after_s: float,
    rate: float | None,
    sig_first: int | None = None,
    gap_s: float = 0.0,
    port: int | None = None,
) -> int:
    """Run ``engine run`` into ``journal``, SIGKILL it ``after_s`` seconds after the journal
    appears (optionally ``sig_first`` ``gap_s`` seconds before the kill); return the kill's
    wall-clock ns.  With ``port``, capture from the simulator there (else the embedded one)."""
    cmd = [ENGINE, "run", "--journal", str(journal), "--no-dashboard", "--duration", "60"]
    if port is not None:
        cmd += ["--url", f"ws://127.0.0.1:{port}", "--rest-url", f"http://127.0.0.1:{port}"]
    elif rate is not None:
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
    lost_frames: list[int] = []
    failures = 0
    root = Path(tempfile.mkdtemp(prefix="crash-bench-"))
    sim, port = start_simulator(args.rate)
    seen: set[int] = set()
    try:
        for i in range(args.trials):
            j = root / f"j{i}"
            killed = kill_trial(j, rnd.uniform(args.min_s, args.max_s), args.rate, port=port)
            sent = sent_to_new_connections(port, seen)
            try:
                last, inbound = journaled(j)
            except Exception as exc:  # a journal that does not read is the finding
                print(f"trial {i}: journal unreadable: {exc}", file=sys.stderr)
                failures += 1
                continue
            if last is not None:
                losses_ms.append((killed - last) / 1e6)
                lost_frames.append(sent - inbound)
            shutil.rmtree(j, ignore_errors=True)
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(15)
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
        print(
            "frames lost (sent by the simulator - journaled):"
            f" p50 {statistics.median(lost_frames):.0f}  p90 {pct(lost_frames, 0.9):.0f}"
            f"  p99 {pct(lost_frames, 0.99):.0f}  max {max(lost_frames)}"
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
