"""Capture benchmark: sustained frames/s captured and journaled, next to a bare WebSocket loop.

    python bench/capture.py [--rate 20000] [--seconds 3] [--runs 3]

Starts ``engine simulate --port 0 --rate R`` in another process, then in this
process, one after the other on fresh connections to that same simulator:

* **bare**: a trio-websocket ``get_message()`` loop that only counts (the ceiling);
* **capture**: :class:`engine.live.capture.Capture` journal-only (receive → ``recv_ns`` →
  journal append, batching, zstd, writes; no codec or reducers);
* **capture+pipeline**: the same with the standard pipeline (decode, book,
  trades, tape, candles, anomaly detector, send audit), the outputs recorder and
  the checkpoint writer, as ``engine run`` does.

On a shared 2-core machine, driving every mode into saturation measures the
neighbours (and the simulator, which needs a core of its own): so the offered
``--rate`` is one every mode sustains, and the ceiling of each mode is derived
from its CPU cost (``time.process_time()`` of this process over the window,
threads included: fsync and compaction count).  Prints per mode the medians over
runs of the achieved frames/s, CPU µs per frame, the ceiling (frames per CPU
second), its ratio to bare (target for capture: ≥ 0.75), and the p50/p99
latency from receive (``recv_ns``) to the ``write()`` of the batch holding the
frame (bounded by the writer's batching: 1024 frames or 50 ms).

    python bench/capture.py --processes 1,2 [--rate 60000] [--seconds 5] [--runs 3]

Sharded capture instead: for each N, ``engine run --processes N`` (the whole
command: journal, pipeline, outputs, checkpoints per shard) against one
``engine simulate`` process offering ``--rate`` over four symbols (more than
one capture process takes, so each shard runs saturated); prints the median
frames/s journaled by all shards together (each shard's journaled frames over
its steady state: after its first ``--warmup`` seconds of data, read back
from its journal), and the ratio to one process.  The simulator needs a
core too: on a 2-core machine three busy processes share two cores.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import trio_websocket

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simulate import start_simulator, stop  # noqa: E402 - bench scripts are run as files

from engine.assembly import standard_reducers  # noqa: E402
from engine.codecs.registry import get_codec  # noqa: E402
from engine.journal.writer import JournalWriter  # noqa: E402
from engine.live.capture import Capture  # noqa: E402
from engine.live.config import LiveConfig  # noqa: E402

CHANNELS = ("trade", "aggTrade", "depth", "bookTicker", "ticker", "kline_1m")
SYMBOLS = ("btcusdt", "ethusdt", "shibusdt")


class TimedWriter(JournalWriter):
    """A journal writer that samples receive→write latency of every frame it writes."""

    lat_ns: list[int]

    def flush(self) -> None:
        recvs = list(self._recv)
        super().flush()
        if recvs:
            now = time.time_ns()
            self.lat_ns.extend(now - r for r in recvs)


async def bare(ws_url: str, warm: float, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        await _bare(ws_url, warm, seconds, out)
    except trio_websocket.DisconnectionTimeout:
        pass  # the simulator still had a backlog to flush: irrelevant to the count
    return out


async def _bare(ws_url: str, warm: float, seconds: float, out: dict[str, Any]) -> None:
    url = get_codec("sim").ws_url(ws_url, get_codec("sim").streams(SYMBOLS, CHANNELS))
    async with trio_websocket.open_websocket_url(
        url,
        max_message_size=4 << 20,
        message_queue_size=64,
        receive_buffer_size=65536,  # as the capture (trio-websocket defaults to 4 KiB)
        disconnect_timeout=1,
    ) as ws:
        get = ws.get_message
        n = 0
        t_end = trio.current_time() + warm
        while trio.current_time() < t_end:
            await get()
        t0, c0 = trio.current_time(), time.process_time()
        t_end = t0 + seconds
        while True:
            await get()
            n += 1
            if not n & 255 and trio.current_time() >= t_end:
                break
        out.update(_rates(n, trio.current_time() - t0, time.process_time() - c0))


async def capture(
    ws_url: str, warm: float, seconds: float, pipeline: bool, tmp: Path
) -> dict[str, Any]:
    codec = get_codec("sim")
    cfg = LiveConfig(ws_url=ws_url, rest_url="", symbols=SYMBOLS, channels=CHANNELS)
    writer = TimedWriter.create(tmp / f"j-{time.time_ns()}", {"exchange": "sim"})
    writer.lat_ns = []
    extra: dict[str, Any] = {}
    if pipeline:  # what engine run adds around the pipeline (engine.live.runner.capture_main)
        from engine.journal.recorder import OutputRecorder
        from engine.replay.checkpoints import CheckpointWriter

        extra = {
            "recorder": OutputRecorder(writer.path),
            "checkpointer": CheckpointWriter(writer.path, writer.metadata),
        }
    cap = Capture(
        cfg,
        writer,
        codec,
        standard_reducers(codec) if pipeline else None,
        rng=random.Random(1),
        **extra,
    )
    async with trio.open_nursery() as n:
        await n.start(cap.run)
        await trio.sleep(warm)
        f0, t0, l0 = cap.status.frames_in, trio.current_time(), len(writer.lat_ns)
        c0 = time.process_time()
        await trio.sleep(seconds)
        f1, t1, c1 = cap.status.frames_in, trio.current_time(), time.process_time()
        lat = sorted(writer.lat_ns[l0:])
        cap.stop()
    return {
        **_rates(f1 - f0, t1 - t0, c1 - c0),
        "p50_ms": lat[len(lat) // 2] / 1e6 if lat else float("nan"),
        "p99_ms": lat[int(len(lat) * 0.99)] / 1e6 if lat else float("nan"),
    }


def _rates(frames: int, wall: float, cpu: float) -> dict[str, float]:
    """Achieved frames/s, CPU per frame, and the ceiling it implies (frames per CPU second)."""
    return {"fps": frames / wall, "us": cpu / frames * 1e6, "ceiling": frames / cpu}


SHARD_SYMBOLS = ("btcusdt", "ethusdt", "bnbusdt", "solusdt")


def sharded(processes: int, ws: str, rest: str, warm: float, seconds: float, tmp: Path) -> float:
    """Frames/s journaled by ``engine run --processes N`` (all shards), in their steady state.

    Each shard's rate is read from its journal: the frames received after its
    first ``warm`` seconds of data (start-up, connects and snapshots left out)
    to its last, over that span; the set's rate is their sum.
    """
    import subprocess

    import pyarrow.compute as pc

    from engine.journal.captureset import journals_in
    from engine.journal.reader import JournalReader

    out = tmp / f"set-{processes}-{time.time_ns()}"
    subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "--processes", str(processes), "--no-dashboard",
         "--symbols", ",".join(SHARD_SYMBOLS), "--channels", ",".join(CHANNELS), "--url", ws,
         "--rest-url", rest, "--duration", str(warm + seconds + 2), "--out", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    total = 0.0
    for j in journals_in(out):
        recv = [b.column(1) for b in JournalReader(j, kinds=["text", "binary"]).batches()]
        ns = sorted(x for a in recv for x in a.to_pylist())
        lo, hi = ns[0] + int(warm * 1e9), ns[-1]
        n = sum(pc.sum(pc.greater_equal(a, lo)).as_py() or 0 for a in recv)
        total += n / ((hi - lo) / 1e9)
    return total


def main_sharded(a: argparse.Namespace) -> None:
    counts = [int(x) for x in a.processes.split(",")]
    fps: dict[int, list[float]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory() as d:
        for _ in range(a.runs):
            proc, ws, rest = start_simulator(
                "--rate", str(a.rate), "--symbols", ",".join(SHARD_SYMBOLS)
            )
            try:
                for n in counts:
                    fps[n].append(sharded(n, ws, rest, a.warmup, a.seconds, Path(d)))
            finally:
                stop(proc)
    print(f"simulator process --rate {a.rate:.0f} over {len(SHARD_SYMBOLS)} symbols; engine run"
          f" --processes N, {a.seconds:g} s after {a.warmup:g} s of warm-up; median of {a.runs}"
          f" runs; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    base = statistics.median(fps[counts[0]])
    for n in counts:
        f = statistics.median(fps[n])
        print(f"processes {n}: {f:10,.0f} frames/s journaled  ({f / base:.2f}x of {counts[0]})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=None, help="[20000; 60000 with --processes]")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--processes", default=None, help="e.g. 1,2: benchmark sharded capture")
    a = ap.parse_args()
    if a.processes:
        a.rate = a.rate or 60_000
        main_sharded(a)
        return
    a.rate = a.rate or 20_000
    modes = ("bare", "capture", "capture+pipeline")
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as d:
        for _ in range(a.runs):
            proc, ws, _rest = start_simulator("--rate", str(a.rate), "--symbols", ",".join(SYMBOLS))
            try:
                results["bare"].append(trio.run(bare, ws, a.warmup, a.seconds))
                results["capture"].append(
                    trio.run(capture, ws, a.warmup, a.seconds, False, Path(d))
                )
                results["capture+pipeline"].append(
                    trio.run(capture, ws, a.warmup, a.seconds, True, Path(d))
                )
            finally:
                stop(proc)

    def med(m: str, k: str) -> float:
        return statistics.median(r.get(k, float("nan")) for r in results[m])

    base = med("bare", "ceiling")
    print(f"simulator --rate {a.rate:.0f}; {a.seconds:g} s per mode; median of {a.runs} runs")
    print(
        f"{'mode':<18} {'frames/s':>9} {'cpu us/frame':>12} {'ceiling/s':>10} {'vs bare':>8}"
        f" {'p50 ms':>7} {'p99 ms':>7}"
    )
    for m in modes:
        print(
            f"{m:<18} {med(m, 'fps'):9,.0f} {med(m, 'us'):12.1f} {med(m, 'ceiling'):10,.0f}"
            f" {med(m, 'ceiling') / base:8.2f} {med(m, 'p50_ms'):7.1f} {med(m, 'p99_ms'):7.1f}"
        )


if __name__ == "__main__":
    main()
