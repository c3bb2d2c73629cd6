"""Hostile clients of `engine simulate` and `engine replay --serve`: real servers, real sockets, real signals.

What must hold whatever clients do: a connection limit (HTTP 503 before the
upgrade), a bound on the bytes held for all clients together (the clients
holding the most are closed with 1008 and counted), a good client beside
them loses nothing, and SIGINT / SIGTERM stop either server with exit 0 and
no traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import wsproto
import wsproto.events as we
from trio_websocket import ConnectionRejected, open_websocket_url
from wsproto import ConnectionType

from engine.journal.reader import JournalReader
from engine.journal.schema import Dir, Kind
from engine.replay.server import ReplayServer
from engine.sim.cli import open_simulator
from engine.sim.model import DEFAULT_SYMBOLS
from engine.sim.server import SimConfig

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "journals"
FUTURES = FIX / "binance-futures"
MIB = 1024 * 1024


def vm_rss(pid: int) -> int:
    """Resident set size of a process, in bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Mute:
    """A WebSocket client that subscribes and then never reads (with a tiny receive buffer)."""

    def __init__(self, stream: trio.SocketStream, ws: wsproto.WSConnection) -> None:
        self.stream, self.ws = stream, ws

    @classmethod
    async def open(cls, port: int, target: str = "/ws") -> Mute:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", port))
        stream = trio.SocketStream(sock)
        ws = wsproto.WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(we.Request(host=f"127.0.0.1:{port}", target=target)))
        with trio.fail_after(10):
            while True:
                data = await stream.receive_some(4096)
                assert data, "closed during the handshake"
                ws.receive_data(data)
                for ev in ws.events():
                    if isinstance(ev, we.AcceptConnection):
                        return cls(stream, ws)
                    assert not isinstance(ev, we.RejectConnection), ev

    async def subscribe(self, streams: list[str]) -> None:
        msg = json.dumps({"method": "SUBSCRIBE", "params": streams, "id": 1})
        await self.stream.send_all(self.ws.send(we.TextMessage(data=msg)))


async def start_server(*args: str) -> tuple[subprocess.Popen[str], int, str]:
    """A server subprocess (`engine ...`); returns it, its port, and its first stdout line."""
    proc = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once; waits go to a thread
        [sys.executable, "-m", "engine.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = await trio.to_thread.run_sync(proc.stdout.readline)  # type: ignore[union-attr]
    assert "ws://127.0.0.1:" in line, (line, proc.poll())
    port = int(line.split("ws://127.0.0.1:")[1].split()[0].split("/")[0])
    return proc, port, line


async def stop_server(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[str, str]:
    """Send ``sig``; the server must exit 0 within 15 s.  Returns (stdout, stderr)."""
    proc.send_signal(sig)
    try:
        out, err = await trio.to_thread.run_sync(lambda: proc.communicate(timeout=15))
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    return out, err


async def stats(port: int, path: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"http://127.0.0.1:{port}{path}", timeout=10)).json()


async def hostile_crowd(
    port: int, pid: int, streams: list[str], good: Any, bound: int, n: int = 100
) -> list[Mute]:
    """``n`` mute clients subscribe to ``streams`` while ``good(port)`` runs; RSS stays under the bound.

    The baseline is taken with the ``n`` clients connected but not yet
    subscribed: what idle connections cost is not what the bound is about.
    """
    mutes = [await Mute.open(port) for _ in range(n)]
    await trio.sleep(0.2)
    baseline = peak = vm_rss(pid)
    done = trio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, vm_rss(pid))
            await trio.sleep(0.02)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        for m in mutes:
            await m.subscribe(streams)
        await good(port)
        done.set()
    # the budget is of memory: the server queues at most half of it, the rest is what the
    # allocator and the interpreter keep around those bytes
    assert peak < baseline + bound, (
        f"RSS {peak / MIB:.1f} MiB, baseline {baseline / MIB:.1f} MiB"
    )
    print(
        f"RSS peak {(peak - baseline) / MIB:.1f} MiB over the baseline; budget {bound / MIB:.0f} MiB"
    )
    return mutes


# --------------------------------------------------------------------------- the simulator


SIM_STREAMS = [f"{s.lower()}@{k}" for s in DEFAULT_SYMBOLS for k in ("trade", "depth@100ms")]


def crowd_was_closed_as_slow(st: dict[str, Any], at_least: int) -> None:
    """Every mute client (path ``/ws``) that ended was closed as a slow consumer, with 1008."""
    mute = [c for c in st["connections"] if c["path"] == "/ws"]
    assert len(mute) == 100
    ended = [c for c in mute if not c["open"] or c["close_kind"] is not None]
    assert len(ended) >= at_least, len(ended)
    odd = [c for c in ended if (c["close_kind"], c["close_code"]) != ("slow_consumer", 1008)]
    assert not odd, [(c["close_kind"], c["close_code"], c["open"]) for c in odd]
    assert st["limits"]["slow_consumers"] == len(ended)
    (good,) = [c for c in st["connections"] if c["path"] != "/ws"]
    assert good["close_kind"] in (None, "client_close"), good


async def test_simulator_keeps_memory_bounded_under_100_mute_clients_and_a_good_one_loses_nothing():
    bound = 32 * MIB
    proc, port, _ = await start_server(
        "simulate", "--rate", "4000", "--max-buffered-mb", "32", "--epoch", "2024-01-01"
    )
    try:
        got: list[dict[str, Any]] = []

        async def good(p: int) -> None:
            url = f"ws://127.0.0.1:{p}/stream?streams=btcusdt@trade/btcusdt@depth@100ms"
            async with open_websocket_url(url) as ws:
                with trio.move_on_after(5):
                    while True:
                        got.append(json.loads(await ws.get_message()))

        mutes = await hostile_crowd(port, proc.pid, SIM_STREAMS, good, bound)
        st = await stats(port, "/sim/stats")
        for m in mutes:
            await m.stream.aclose()
    finally:
        await stop_server(proc)
    crowd_was_closed_as_slow(st, at_least=50)
    # the good client received every frame of its streams: ids run on without a hole
    trades = [m["data"]["t"] for m in got if m["stream"] == "btcusdt@trade"]
    diffs = [m["data"] for m in got if m["stream"] == "btcusdt@depth@100ms"]
    assert len(trades) > 100 and len(diffs) > 30
    assert trades == list(range(trades[0], trades[0] + len(trades)))
    assert all(b["U"] == a["u"] + 1 for a, b in zip(diffs, diffs[1:], strict=False))


# --------------------------------------------------------------------------- the replay server


def recorded(journal: Path, streams: set[str]) -> list[bytes]:
    out = []
    for f in JournalReader(journal, kinds=[Kind.TEXT], dirs=[Dir.IN]).frames():
        obj = json.loads(f.payload)
        if isinstance(obj, dict) and obj.get("stream") in streams:
            out.append(f.payload)
    return out


async def test_replay_server_keeps_memory_bounded_under_100_mute_clients_and_a_good_one_loses_nothing():
    bound = 32 * MIB
    proc, port, _ = await start_server(
        "replay", str(FUTURES), "--serve", "127.0.0.1:0", "--speed", "max", "--loop",
        "--max-buffered-mb", "32",
    )  # fmt: skip
    try:
        streams = sorted((await stats(port, "/replay/stats"))["recorded_streams"])
        want = recorded(FUTURES, set(streams))
        got: list[bytes] = []

        async def good(p: int) -> None:
            url = f"ws://127.0.0.1:{p}/stream?streams={'/'.join(streams)}&loop=false"
            async with open_websocket_url(url) as ws:
                with trio.fail_after(20):
                    while len(got) < len(want):
                        m = await ws.get_message()
                        got.append(m.encode() if isinstance(m, str) else m)
                await trio.sleep(3)  # the crowd keeps looping meanwhile

        mutes = await hostile_crowd(port, proc.pid, streams, good, bound)
        st = await stats(port, "/replay/stats")
        for m in mutes:
            await m.stream.aclose()
    finally:
        await stop_server(proc, signal.SIGINT)
    assert got == want  # every frame of its streams, byte for byte, in order
    crowd_was_closed_as_slow(st, at_least=50)


# --------------------------------------------------------------------------- the connection limit


async def _limit_of(server: Any, port: int, target: str) -> None:
    url = f"ws://127.0.0.1:{port}{target}"
    async with open_websocket_url(url), open_websocket_url(url):
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(url):
                pass
        assert refused.value.status_code == 503
        assert b"Too many connections" in (refused.value.body or b"")
    assert server.stats()["limits"]["refused_connections"] == 1
    # once one has gone, a new client gets in
    with trio.fail_after(5):
        while len(server.conns) >= 2:  # noqa: ASYNC110 - polling the server's own table
            await trio.sleep(0.01)
    async with open_websocket_url(url):
        pass


async def test_simulator_refuses_connections_past_the_limit_with_503():
    async with open_simulator(max_connections=2, close_timeout=0.5) as sim:
        await _limit_of(sim.server, sim.port, "/ws/btcusdt@trade")


async def test_replay_server_refuses_connections_past_the_limit_with_503(nursery):
    srv = ReplayServer(FUTURES, 1.0, SimConfig(max_connections=2, close_timeout=0.5))
    await srv.start(nursery)
    await _limit_of(srv, srv.port, "/ws/sushiusdt@aggTrade")


# --------------------------------------------------------------------------- one slow client


async def test_a_client_over_its_own_buffer_is_closed_with_1008_and_counted():
    async with open_simulator(rate=4000, max_buffer=256 * 1024, close_timeout=0.5) as sim:
        m = await Mute.open(sim.port, "/stream?streams=" + "/".join(SIM_STREAMS))
        with trio.fail_after(15):
            while sim.stats()["limits"]["slow_consumers"] < 1:  # noqa: ASYNC110 - polling counters
                await trio.sleep(0.05)
        (c,) = sim.stats()["connections"]
        assert (c["close_kind"], c["close_code"]) == ("slow_consumer", 1008)
        assert "262144 bytes unsent" in c["close_reason"]
        await m.stream.aclose()


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize(
    "sig",
    # one signal path in the default suite; both in the slow profile (the same handler)
    [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM],
    ids=["SIGINT", "SIGTERM"],
)
async def test_replay_server_stops_cleanly_on_a_signal(sig: int) -> None:
    proc, port, line = await start_server("replay", str(FUTURES), "--serve", "127.0.0.1:0")
    async with open_websocket_url(f"ws://127.0.0.1:{port}/ws/sushiusdt@aggTrade") as ws:
        await ws.get_message()
        out, _err = await stop_server(proc, sig)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stopped"] is True and summary["frames_sent"] >= 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_simulator_stops_cleanly_on_a_signal(sig: int) -> None:
    proc, port, _ = await start_server("simulate", "--epoch", "2024-01-01")
    async with open_websocket_url(f"ws://127.0.0.1:{port}/ws/btcusdt@depth@100ms") as ws:
        await ws.get_message()
        _out, err = await stop_server(proc, sig)
    assert '"stopped": true' in err
