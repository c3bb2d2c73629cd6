"""Simulator benchmark: how many frames/s ``engine simulate --rate R`` pushes to a client.

    python bench/simulate.py [--rates 20000,50000,100000,200000] [--seconds 3] [--runs 3]

Starts ``engine simulate --port 0 --rate R`` in its own process (one core), connects one
client to every stream of every symbol (combined path) that reads the socket and
discards the bytes (the cheapest possible consumer, so the simulator is what is
measured), and reads the simulator's own counters (``/sim/stats``) before and after.

Prints, per rate: the median over runs of frames/s the simulator handed to the socket,
MB/s on the wire, and the simulated-time lag at the end (0 = it kept up with ``--rate``).
Target (issue 3): ≥ 50k frames/s.

``--mute N`` (N > 0) adds N clients that subscribe to every stream and never read
(a 4 KiB receive buffer each) beside the reading one, with ``--max-buffered-mb``
as the simulator's budget: it also prints the simulator's peak RSS over its
baseline (taken with the N clients connected but not yet subscribed) and how many
of them it closed as slow consumers.
"""

from __future__ import annotations

import argparse
import json
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


def sim_stats(rest: str) -> dict[str, Any]:
    return httpx.get(f"{rest}/sim/stats", timeout=10).json()


def sim_frames(rest: str) -> tuple[int, int, int]:
    st = sim_stats(rest)
    frames = sum(c["frames"] for c in st["connections"])
    wire = sum(c["wire_bytes"] for c in st["connections"])
    return frames, wire, st["lag_ms"]


def vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


async def mute_client(port: int) -> tuple[trio.SocketStream, wsproto.WSConnection]:
    """Connected on ``/ws`` with a tiny receive buffer; never reads after the handshake."""
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    ws = wsproto.WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(we.Request(host=f"127.0.0.1:{port}", target="/ws")))
    ws.receive_data(await stream.receive_some(65536))
    assert any(isinstance(e, we.AcceptConnection) for e in ws.events())
    return stream, ws


def one_run(rate: float, seconds: float, mute: int = 0, budget_mb: float = 256) -> dict[str, Any]:
    extra = ("--max-buffered-mb", str(budget_mb)) if mute else ()
    proc, ws, rest = start_simulator("--rate", str(rate), *extra)
    try:
        port = int(ws.rsplit(":", 1)[1])
        symbols = httpx.get(f"{rest}/sim/stats", timeout=10).json()["symbols"]
        channels = ["trade", "aggTrade", "depth@100ms", "depth", "bookTicker", "ticker", "kline_1m"]
        target = "/stream?streams=" + "/".join(
            f"{s.lower()}@{c}" for s in symbols for c in channels
        )
        result: dict[str, Any] = {}

        async def main() -> None:
            mutes = [await mute_client(port) for _ in range(mute)]
            await trio.sleep(0.2)
            base = peak = vm_rss(proc.pid)
            streams = target.split("=", 1)[1].split("/")
            sub = json.dumps({"method": "SUBSCRIBE", "params": streams, "id": 1})
            for stream, w in mutes:
                await stream.send_all(w.send(we.TextMessage(data=sub)))
            async with trio.open_nursery() as n:
                n.start_soon(drain, port, target, seconds + 1.5)
                await trio.sleep(1.0)  # warm-up: connection up, pump steady
                f0, w0, _ = await trio.to_thread.run_sync(sim_frames, rest)
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    peak = max(peak, vm_rss(proc.pid))
                    await trio.sleep(0.02)
                f1, w1, lag = await trio.to_thread.run_sync(sim_frames, rest)
                dt = time.perf_counter() - t0
                result.update(fps=(f1 - f0) / dt, mbps=(w1 - w0) / dt / 1e6, lag_ms=lag)
                st = await trio.to_thread.run_sync(sim_stats, rest)
                result.update(rss_mb=(peak - base) / 2**20, slow=st["limits"]["slow_consumers"])
            for stream, _ in mutes:
                await stream.aclose()

        trio.run(main)
        return result
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rates", default="20000,50000,100000,200000")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mute", type=int, default=0, help="clients that subscribe and never read")
    ap.add_argument("--max-buffered-mb", type=float, default=256.0)
    a = ap.parse_args()
    keys = ("fps", "mbps", "lag_ms") + (("rss_mb", "slow") if a.mute else ())
    mute_head = f"  {'RSS+ MiB':>8}  {'closed':>6}" if a.mute else ""
    print(
        f"{'--rate':>8}  {'pushed frames/s':>15}  {'MB/s':>6}  {'lag ms':>7}{mute_head}"
        f"   (median of {a.runs})"
    )
    for rate in (float(r) for r in a.rates.split(",")):
        runs = [one_run(rate, a.seconds, a.mute, a.max_buffered_mb) for _ in range(a.runs)]
        med = {k: statistics.median(r[k] for r in runs) for k in keys}
        tail = f"  {med['rss_mb']:8.1f}  {med['slow']:6.0f}" if a.mute else ""
        print(
            f"{rate:8.0f}  {med['fps']:15,.0f}  {med['mbps']:6.1f}  {med['lag_ms']:7.0f}{tail}",
            flush=True,
        )


if __name__ == "__main__":
    main()
