"""Capture a recording through the replay server, as a user would: ``engine replay J --serve`` and
``engine run --url`` in two real processes, until the server has delivered the whole recording.

The capture is stopped when the server says every replay it started has finished and nothing is
left in its queues (``/replay/stats``: ``replays.finished >= replays.started``,
``buffered_bytes == 0``), never after a fixed time: on a loaded machine a fixed ``--duration``
ended captures before the last frames came.  Stopping (SIGINT) closes cleanly, and the clean close
reads what the kernel still holds up to the server's close frame, so the capture has every frame.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ENGINE = [sys.executable, "-m", "engine.cli"]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("COLUMNS", None)
    return env


def _stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/replay/stats", timeout=10) as r:
        out: dict[str, Any] = json.load(r)
    return out


def delivered(st: dict[str, Any]) -> bool:
    """Every replay the server started has reached its end, and no byte waits in its queues."""
    rp = st["replays"]
    return (
        rp.get("started", 0) >= 1
        and rp.get("finished", 0) >= rp["started"]
        and (st["buffered_bytes"] == 0)
    )


def capture_served(
    journal: Path, exchange: str, out: Path, *run_args: str, within_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Serve ``journal`` at full speed, capture it with ``engine run --exchange EXCHANGE`` into
    ``out`` until delivered, stop both; the capture's completed process (exit code checked by
    the caller)."""
    server = subprocess.Popen(
        [*ENGINE, "replay", str(journal), "--serve", "127.0.0.1:0", "--speed", "max"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    run: subprocess.Popen[str] | None = None
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        m = re.search(r"ws://127\.0\.0\.1:(\d+)", line)
        assert m, line
        port = int(m.group(1))
        run = subprocess.Popen(
            [*ENGINE, "run", "--exchange", exchange, "--url", m.group(0), "--out", str(out),
             "--duration", str(within_s), "--no-dashboard", *run_args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        )  # fmt: skip
        deadline = time.monotonic() + within_s
        while not delivered(_stats(port)):
            assert run.poll() is None, run.communicate()[1][-2000:]
            assert time.monotonic() < deadline, f"not delivered in {within_s} s: {_stats(port)}"
            time.sleep(0.1)
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=60)
        return subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr)
    finally:
        for p in (run, server):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
