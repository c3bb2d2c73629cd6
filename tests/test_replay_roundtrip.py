"""The replay server round trip, end to end with the real commands.

`engine replay FIXTURE --serve 127.0.0.1:0 --speed max` serves a real Binance
capture; `engine run --exchange binance --url ws://127.0.0.1:PORT` captures it
like the exchange.  The new journal's payloads must equal the original's,
stream by stream, byte for byte (WebSocket frames and the REST snapshots the
book asked for), and the new journal must replay to synced books with its own
live outputs reproduced.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from engine.journal.reader import JournalReader
from engine.journal.schema import Dir, Kind
from engine.replay.check import check

ENGINE = [sys.executable, "-m", "engine.cli"]
SPOT = Path(__file__).resolve().parent.parent / "fixtures" / "journals" / "binance-spot"
SYMBOLS = ("nknusdt", "lrcbtc", "blzeth", "runeeur")
STREAMS = {f"{s}@{c}" for s in SYMBOLS for c in ("depth@100ms", "bookTicker")}


def by_stream(journal: Path) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = defaultdict(list)
    for f in JournalReader(journal, kinds=[Kind.TEXT], dirs=[Dir.IN]).frames():
        stream = json.loads(f.payload).get("stream")
        if stream in STREAMS:
            out[stream].append(f.payload)
    return dict(out)


def rest_bodies(journal: Path) -> dict[str, bytes]:
    """Symbol → REST depth body (the last one recorded)."""
    return {
        f.source.split("symbol=")[1].split("&")[0]: f.payload
        for f in JournalReader(journal, kinds=[Kind.REST]).frames()
    }


def test_engine_run_against_the_replay_server_captures_the_original_bytes(tmp_path: Path) -> None:
    fixture = (
        tmp_path / "spot"
    )  # a copy: serving writes nothing, but be sure the fixture stays clean
    subprocess.run(["cp", "-r", str(SPOT), str(fixture)], check=True)
    server = subprocess.Popen(
        [*ENGINE, "replay", str(fixture), "--serve", "127.0.0.1:0", "--speed", "max"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        port = int(first.split("ws://127.0.0.1:")[1].split()[0])
        out = tmp_path / "capture"
        run = subprocess.run(
            [*ENGINE, "run", "--exchange", "binance", "--url", f"ws://127.0.0.1:{port}",
             "--symbols", ",".join(SYMBOLS), "--channels", "depth,bookTicker",
             "--journal", str(out), "--duration", "5", "--no-dashboard"],
            capture_output=True,
            text=True,
            timeout=90,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=20)

    want, got = by_stream(fixture), by_stream(out)
    assert set(want) == STREAMS - {"runeeur@bookTicker"}  # the capture has no RUNEEUR quotes
    assert got == want  # every subscribed stream: same frames, same bytes, same order
    original = rest_bodies(fixture)
    captured = rest_bodies(out)
    assert captured and all(captured[s] == original[s] for s in captured)

    summary = json.loads(run.stdout[run.stdout.index("{") :])
    assert summary["errors"] == {} and summary["decode_errors"] == 0
    mismatch, compared = check(out)
    assert mismatch is None and compared > 0
    manifest = json.loads((out / "journal.json").read_text())
    assert manifest["exchange"] == "binance" and manifest["ws_url"] == f"ws://127.0.0.1:{port}"
