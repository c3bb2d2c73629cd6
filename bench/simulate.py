"""Simulator benchmark: how many frames/s ``engine simulate --rate R`` pushes to a client.

    python bench/simulate.py [--rates 20000,50000,100000,200000] [--seconds 3] [--runs 3]

Starts ``engine simulate --port 0 --rate R`` in its own process (one core), connects one
client to every stream of every symbol (combined path) that reads the socket and
discards the bytes (the cheapest possible consumer, so the simulator is what is
measured), and reads the simulator's own counters (``/sim/stats``) before and after.

Prints, per rate: the median over runs of frames/s the simulator handed to the socket,
MB/s on the wire, and the simulated-time lag at the end (0 = it kept up with ``--rate``).
Target (issue 3): ≥ 50k frames/s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx
import trio
import wsproto
import wsproto.events as we
from wsproto import ConnectionType


def start_simulator(*args: str) -> tuple[subprocess.Popen[str], str, str]:
    """``engine simulate --port 0 ...`` as a subprocess; returns (process, ws base, rest base)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "simulate", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening "):
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    ws, rest = line.split()[1], line.split("rest=")[1].strip()
    return proc, ws, rest


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


async def drain(port: int, target: str, seconds: float) -> int:
    """Handshake with wsproto, then read and discard bytes for ``seconds``; returns bytes read."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    ws = wsproto.WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(we.Request(host=f"127.0.0.1:{port}", target=target)))
    ws.receive_data(await stream.receive_some(65536))
    assert any(isinstance(e, we.AcceptConnection) for e in ws.events())
    n = 0
    with trio.move_on_after(seconds):
        while True:
            n += len(await stream.receive_some(1 << 20))
    await stream.aclose()
    return n


def sim_frames(rest: str) -> tuple[int, int, int]:
    st = httpx.get(f"{rest}/sim/stats", timeout=10).json()
    frames = sum(c["frames"] for c in st["connections"])
    wire = sum(c["wire_bytes"] for c in st["connections"])
    return frames, wire, st["lag_ms"]


def one_run(rate: float, seconds: float) -> dict[str, Any]:
    proc, ws, rest = start_simulator("--rate", str(rate))
    try:
        port = int(ws.rsplit(":", 1)[1])
        symbols = httpx.get(f"{rest}/sim/stats", timeout=10).json()["symbols"]
        channels = ["trade", "aggTrade", "depth@100ms", "depth", "bookTicker", "ticker", "kline_1m"]
        target = "/stream?streams=" + "/".join(
            f"{s.lower()}@{c}" for s in symbols for c in channels
        )
        result: dict[str, Any] = {}

        async def main() -> None:
            async with trio.open_nursery() as n:
                n.start_soon(drain, port, target, seconds + 1.5)
                await trio.sleep(1.0)  # warm-up: connection up, pump steady
                f0, w0, _ = await trio.to_thread.run_sync(sim_frames, rest)
                t0 = time.perf_counter()
                await trio.sleep(seconds)
                f1, w1, lag = await trio.to_thread.run_sync(sim_frames, rest)
                dt = time.perf_counter() - t0
                result.update(fps=(f1 - f0) / dt, mbps=(w1 - w0) / dt / 1e6, lag_ms=lag)

        trio.run(main)
        return result
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rates", default="20000,50000,100000,200000")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    print(
        f"{'--rate':>8}  {'pushed frames/s':>15}  {'MB/s':>6}  {'lag ms':>7}   (median of {a.runs})"
    )
    for rate in (float(r) for r in a.rates.split(",")):
        runs = [one_run(rate, a.seconds) for _ in range(a.runs)]
        med = {k: statistics.median(r[k] for r in runs) for k in ("fps", "mbps", "lag_ms")}
        print(
            f"{rate:8.0f}  {med['fps']:15,.0f}  {med['mbps']:6.1f}  {med['lag_ms']:7.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
