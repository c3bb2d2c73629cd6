"""Hostile servers on 127.0.0.1: the capture keeps running, counts each case under its kind, journals soundly.

Each case is played by a raw trio server (``tests/helpers/hostile.py``): a
handshake answer that is garbage, has a wrong ``Sec-WebSocket-Accept``, 8 MiB
of headers or an HTTP error; a ping flood that goes on past its own close
frame; text frames that are not UTF-8.
What is checked is what a user relies on: no untyped ("internal") error and
no traceback in the log, the error counted under its kind, memory bounded,
the journal verifies.
"""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.assembly import standard_reducers
from engine.codecs.registry import get_codec
from engine.journal.inspect import verify_journal
from engine.journal.reader import JournalReader
from engine.journal.schema import Frame
from engine.journal.writer import JournalWriter
from engine.live.capture import Capture
from engine.live.config import LiveConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import hostile  # noqa: E402
from helpers.hostile import serving  # noqa: E402

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
