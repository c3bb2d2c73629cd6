"""Hostile servers on 127.0.0.1: the capture keeps running, counts each case under its kind, journals soundly.

Each case is played by a raw trio server (``tests/helpers/hostile.py``): a
handshake answer that is garbage, has a wrong ``Sec-WebSocket-Accept``, 8 MiB
of headers or an HTTP error; a ping flood that goes on past its own close
frame; text frames that are not UTF-8; REST answers with 429 and every form
of ``Retry-After`` (and garbage); REST bodies without end or announcing 2 GiB.
What is checked is what a user relies on: no untyped ("internal") error and
no traceback in the log, the error counted under its kind, memory bounded,
the journal verifies.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from engine.assembly import standard_reducers
from engine.codecs.registry import get_codec
from engine.journal.inspect import verify_journal
from engine.journal.reader import JournalReader
from engine.journal.schema import Frame
from engine.journal.writer import JournalWriter
from engine.live.capture import Capture
from engine.live.config import LiveConfig
from engine.live.rest import retry_after_s
from engine.sim.cli import open_simulator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import hostile  # noqa: E402
from helpers.hostile import Served, serving  # noqa: E402

#: long pings: the hostile servers never answer ours, and a stall is not what is tested here
LIVE = dict(
    ping_interval_s=30.0,
    stale_after_s=30.0,
    connect_timeout_s=2.0,
    disconnect_timeout_s=0.5,
    backoff_base_s=0.02,
    backoff_cap_s=0.1,
    rest_timeout_s=5.0,
)
UNTYPED = ("internal", "Traceback", "LocalProtocolError")


async def until(condition: Callable[[], bool]) -> None:
    """Wait for what must happen, never for a fixed time."""
    with trio.fail_after(30):
        while not condition():  # noqa: ASYNC110 - polling counters
            await trio.sleep(0.02)


async def run_capture(
    tmp_path: Path,
    ws_url: str,
    done: Callable[[Capture], bool],
    *,
    rest_url: str = "",
    reducers: bool = False,
    **live: Any,
) -> tuple[Capture, list[Frame]]:
    """Capture from ``ws_url`` until ``done(capture)``; stop cleanly; the journal must verify."""
    codec = get_codec("sim")
    jdir = tmp_path / "j"
    cfg = LiveConfig(ws_url=ws_url, rest_url=rest_url, **{**LIVE, **live})
    cap = Capture(
        cfg,
        JournalWriter.create(jdir, {"exchange": "sim"}),
        codec,
        standard_reducers(codec, {}) if reducers else None,
        rng=random.Random(5),
    )
    async with trio.open_nursery() as n:
        await n.start(cap.run)
        await until(lambda: done(cap))
        cap.stop()
    problems, _ = verify_journal(jdir)
    assert problems == []
    return cap, list(JournalReader(jdir).frames())


def assert_typed(cap: Capture, frames: list[Frame], caplog: Any) -> None:
    """Nothing untyped anywhere: not in the counters, the journal or the log."""
    assert "error" not in cap.status.errors, cap.status.errors
    for f in frames:
        if f.kind == "error":
            assert not any(u.encode() in f.payload for u in UNTYPED), f.payload
    for r in caplog.records:
        assert r.exc_info is None, r.getMessage()
        assert not any(u in r.getMessage() for u in UNTYPED), r.getMessage()


# --------------------------------------------------------------------------- handshakes


@pytest.mark.parametrize(
    "play, says",
    [
        (hostile.play_garbage_handshake, b"illegal status line"),
        (hostile.play_wrong_accept, b"Bad accept token"),
        (hostile.play_huge_headers, b"Receive buffer too long"),
        (hostile.play_http_error, b"503"),
    ],
    ids=["garbage", "wrong-accept", "8MiB-headers", "http-503"],
)
async def test_a_broken_handshake_is_a_connect_failure_and_retried(
    tmp_path: Path, caplog: Any, play: Any, says: bytes
) -> None:
    caplog.set_level(logging.WARNING)
    async with serving(play) as srv:
        cap, frames = await run_capture(
            tmp_path, srv.ws_url, lambda c: c.status.errors["connect_failed"] >= 3
        )
    errors = [f for f in frames if f.kind == "error"]
    assert len(errors) == cap.status.errors["connect_failed"] >= 3
    assert all(f.payload.startswith(b"connect_failed in connect: handshake") for f in errors)
    assert all(says in f.payload for f in errors), errors[0].payload
    assert cap.status.connects == 0 and not [f for f in frames if f.kind == "open"]
    assert srv.connections >= 3  # retried, with backoff, and still retrying
    assert_typed(cap, frames, caplog)


async def test_a_ping_flood_past_its_own_close_is_answered_and_survived(
    tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING)
    async with serving(hostile.play_ping_flood) as srv:
        cap, frames = await run_capture(
            tmp_path, srv.ws_url, lambda c: c.status.connects >= 3 and c.status.frames_in >= 100
        )
    data = [f for f in frames if f.kind == "text" and f.dir == "in"]
    assert len(data) == cap.status.frames_in >= 100  # the data between the pings is all there
    assert set(cap.status.errors) <= {"server_close", "invalid_data"}, cap.status.errors
    assert cap.status.reconnects >= 2
    assert_typed(cap, frames, caplog)


async def test_frames_arriving_keep_a_connection_whose_pong_is_late_then_silence_is_a_stall(
    tmp_path: Path, caplog: Any
) -> None:
    """A pong is read in order behind the frames before it: while frames arrive, the peer is
    alive and dropping it would lose what the kernel holds; once nothing arrives, it stalled."""
    caplog.set_level(logging.WARNING)
    async with serving(hostile.play_deaf_talker) as srv:
        cap, frames = await run_capture(
            tmp_path,
            srv.ws_url,
            lambda c: c.status.errors["stalled"] >= 1,
            ping_interval_s=0.05,
            ping_timeout_s=0.2,
        )
    first = [f for f in frames if f.conn == 1]
    data = [f for f in first if f.kind == "text" and f.dir == "in"]
    (err,) = [f for f in first if f.kind == "error"]
    assert len(data) == hostile.DEAF_TALKER_FRAMES  # the talking 1.5 s never counted as a stall
    assert b"stalled" in err.payload and err.seq > data[-1].seq
    assert_typed(cap, frames, caplog)


async def test_text_frames_that_are_not_utf8_are_journaled_exactly_as_flagged_binary(
    tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING)
    async with serving(hostile.play_invalid_utf8) as srv:
        cap, frames = await run_capture(
            tmp_path, srv.ws_url, lambda c: c.status.frames_in >= 10, reducers=True
        )
    inbound = [f for f in frames if f.dir == "in"]
    flagged = [f for f in inbound if f.kind == "binary"]
    # the exact bytes, in order, on the one connection (not closed with 1007: it goes on)
    assert [f.payload for f in flagged] == hostile.INVALID_PAYLOADS
    assert all(f.code == 1007 for f in flagged)
    assert inbound[0].kind == "binary"  # the one in the handshake's own read, too
    assert [f.kind for f in inbound[1:6]] == ["text", "text", "binary", "text", "text"]
    assert cap.status.errors["invalid_utf8"] == 2 and cap.status.reconnects == 0
    assert {f.conn for f in inbound} == {1}
    assert not [f for f in frames if f.kind == "close" and f.code == 1007]
    assert cap.pipeline.counters.decode_errors >= 2  # the codec sees them, as bad input
    assert_typed(cap, frames, caplog)


# --------------------------------------------------------------------------- Retry-After


def test_retry_after_in_every_rfc_form_and_garbage() -> None:
    now = 1_700_000_000.0
    at = datetime.fromtimestamp(now + 42, UTC)
    assert retry_after_s("120", now=now) == 120.0
    assert retry_after_s(" 7 ", now=now) == 7.0
    assert retry_after_s("0", now=now) == 0.0
    assert retry_after_s(format_datetime(at, usegmt=True), now=now) == 42.0  # IMF-fixdate
    assert retry_after_s(at.strftime("%A, %d-%b-%y %H:%M:%S GMT"), now=now) == 42.0  # RFC 850
    assert retry_after_s(at.strftime("%a %b %d %H:%M:%S %Y"), now=now) == 42.0  # asctime
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0.0  # in the past
    for garbage in (None, "", "-5", "nan", "NaN", "inf", "1e3", "soon", "12 s", "0x10", "٣"):
        assert retry_after_s(garbage, now=now, default=9.0) == 9.0, garbage
    assert retry_after_s("9" * 400, now=now, cap=300.0) == 300.0
    assert retry_after_s("Fri, 31 Dec 9999 23:59:59 GMT", now=now, cap=300.0) == 300.0


@given(st.text(max_size=60))
def test_retry_after_never_raises_and_stays_within_the_cap(value: str) -> None:
    assert 0.0 <= retry_after_s(value, default=5.0, cap=30.0) <= 30.0


def rest_times(frames: list[Frame]) -> list[tuple[int, int | None]]:
    return [(f.recv_ns, f.code) for f in frames if f.kind == "rest"]


@pytest.mark.parametrize(
    "header, waits_at_least",
    [("1", 1.0), ("-5", 0.6), ("nan", 0.6), ("soon", 0.6), ("DATE+2", 1.0), ("DATE-3600", 0.0)],
)
async def test_a_429_pauses_every_rest_request_for_its_retry_after(
    tmp_path: Path, caplog: Any, header: str, waits_at_least: float
) -> None:
    """The simulator's stream, a REST server that says 429 (once per symbol), then the simulator's answers."""
    caplog.set_level(logging.WARNING)
    async with open_simulator(seed=1, rate=500, tick=0.005) as sim:
        first = {"n": 0}

        async def play(stream: Any, served: Served) -> None:
            while True:
                req = await hostile.read_request(stream, served)
                first["n"] += 1
                if first["n"] <= 2:  # one 429 per symbol's first request
                    value = header
                    if header.startswith("DATE"):
                        delta = float(header[4:])
                        value = format_datetime(
                            datetime.fromtimestamp(time.time() + delta, UTC), usegmt=True
                        )
                    answer = hostile.rest_answer(429, {"Retry-After": value}, b'{"code":-1003}')
                else:  # pass the request on to the simulator's REST
                    answer = await proxy(sim.rest_url, req)
                await hostile.send(stream, served, answer)

        async with serving(play) as rest:
            cap, frames = await run_capture(
                tmp_path,
                sim.ws_url,
                lambda c: c.status.outputs["BookSynced"] >= 2,
                rest_url=rest.http_url,
                reducers=True,
                rest_backoff_s=0.6,
                rest_backoff_cap_s=5.0,
            )
    times = rest_times(frames)
    assert [code for _, code in times[:2]] == [429, 429]
    assert all(code == 200 for _, code in times[2:]) and len(times) >= 4
    # no request (of either symbol) went out before the pause was over
    gap = (times[2][0] - times[1][0]) / 1e9
    assert gap >= waits_at_least - 0.05, gap
    assert "error" not in cap.status.errors and cap.status.rest_responses == len(times)
    assert_typed(cap, frames, caplog)


async def proxy(base: str, request_head: bytes) -> bytes:
    """Forward one GET to ``base`` (the simulator's REST) and return its whole raw answer."""
    path = request_head.split(b" ")[1]
    host, _, port = base.removeprefix("http://").partition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


# --------------------------------------------------------------------------- REST body cap


@pytest.mark.parametrize(
    "play", [hostile.play_endless_body, hostile.play_huge_content_length], ids=["endless", "2GiB"]
)
async def test_a_rest_body_over_the_cap_is_abandoned_and_journaled_as_a_typed_error(
    tmp_path: Path, caplog: Any, play: Any
) -> None:
    caplog.set_level(logging.WARNING)
    cap_bytes = 1 << 20
    async with open_simulator(seed=1, rate=500, tick=0.005) as sim:
        async with serving(play) as rest:
            cap, frames = await run_capture(
                tmp_path,
                sim.ws_url,
                lambda c: c.status.errors["rest_too_large"] >= 4 and c.status.frames_in > 100,
                rest_url=rest.http_url,
                reducers=True,
                max_rest_bytes=cap_bytes,
            )
    errors = [f for f in frames if f.kind == "error"]
    assert len(errors) == cap.status.errors["rest_too_large"] >= 4
    assert all(f.payload.startswith(b"rest_too_large in snapshot") for f in errors)
    assert all(len(f.payload) < 500 for f in errors)  # the error, not the body
    assert not [f for f in frames if f.kind == "rest"]
    assert max(len(f.payload) for f in frames) < cap_bytes
    assert cap.status.rest_requests >= 4 and cap.status.rest_responses == 0
    assert_typed(cap, frames, caplog)


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_engine_run_memory_stays_bounded_against_an_endless_rest_body(tmp_path: Path) -> None:
    """``engine run`` (default 64 MiB cap) against a REST server that never ends its body."""
    jdir = tmp_path / "j"
    async with open_simulator(seed=1, rate=500, tick=0.005) as sim:
        async with serving(hostile.play_endless_body) as rest:
            proc = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "engine.cli",
                    "run",
                    "--exchange",
                    "sim",
                    "--url",
                    sim.ws_url,
                    "--rest-url",
                    rest.http_url,
                    "--journal",
                    str(jdir),
                    "--no-dashboard",
                    "--duration",
                    "120",
                ],  # fmt: skip
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            peak = 0.0
            try:
                # two symbols, three attempts each, 64 MiB each: hundreds of MiB offered
                with trio.fail_after(90):
                    while rest.bytes_sent < 6 * (64 << 20) and proc.poll() is None:
                        peak = max(peak, peak_rss_mb(proc.pid))
                        await trio.sleep(0.1)
                peak = max(peak, peak_rss_mb(proc.pid))
                proc.send_signal(signal.SIGINT)
                out, err = b"", b""
                async with trio.open_nursery() as n:

                    async def read(s: Any, into: list[bytes]) -> None:
                        async for chunk in s:
                            into.append(chunk)

                    o: list[bytes] = []
                    e: list[bytes] = []
                    n.start_soon(read, proc.stdout, o)
                    n.start_soon(read, proc.stderr, e)
                    with trio.fail_after(30):
                        await proc.wait()
                out, err = b"".join(o), b"".join(e)
            finally:
                if proc.poll() is None:
                    proc.kill()
    text = out.decode()
    assert proc.returncode == 0, err.decode()[-3000:]
    summary = json.loads(text[text.index("{") :])
    assert summary["errors"].get("rest_too_large", 0) >= 3
    assert "Traceback" not in err.decode()
    # bounded: ~100 MiB of engine plus the two symbols' fetches at once, each abandoned at
    # the 64 MiB cap, although the server offered several times that (unbounded, the
    # capture read 645 MB in the 10 s REST timeout)
    print(f"engine run peak RSS {peak:.0f} MiB, {rest.bytes_sent / 2**20:.0f} MiB offered")
    assert peak < 300, peak
    assert rest.bytes_sent >= 6 * (64 << 20) or summary["errors"]["rest_too_large"] >= 6
    problems, _ = verify_journal(jdir)
    assert problems == []
