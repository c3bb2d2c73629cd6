"""Bybit end to end: `engine run` capturing from the simulator speaking Bybit v5, real subprocesses
and sockets on 127.0.0.1, then the journal as a user uses it (verify, replay --check, book --at,
export, the Python API).

The exact test runs `engine run --exchange bybit --sim` and injects faults one at a time through
the embedded simulator's `/sim/inject` (on the REST URL the journal's manifest names): every delta the simulator
withheld (its own log says which) is one GapDetected for that symbol and one resubscribe whose
fresh snapshot resyncs the book; the garbage frames are decode errors; a closed connection is
reconnected and resubscribed.  (A drifted in-stream snapshot is not tested as detected: a
client takes Bybit's snapshot as the book; only a later snapshot at a synced book's own ``u``
could reveal it, which tests/test_sync_bybit.py covers.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import engine
from engine import num
from engine.journal.reader import JournalReader
from engine.replay.check import check

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.recovery import assert_every_break_recovered  # noqa: E402
from helpers.served import capture_served  # noqa: E402

ENGINE = [sys.executable, "-m", "engine.cli"]
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    return env


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _until(what, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what.__doc__}")


def _replay_json(jdir: Path, *args: str) -> dict:
    done = subprocess.run(
        [*ENGINE, "replay", str(jdir), "--json", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def faulted(tmp_path_factory) -> tuple[Path, dict, dict]:
    """(journal, the run's summary, the simulator's stats) of a capture with injected faults."""
    jdir = tmp_path_factory.mktemp("bybit") / "j"
    run = subprocess.Popen(
        [*ENGINE, "run", "--exchange", "bybit", "--sim", "--sim-seed", "7",
         "--symbols", ",".join(SYMBOLS), "--no-dashboard", "--out", str(jdir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    try:
        # the embedded simulator's control endpoints are on the REST URL the journal names
        manifest = jdir / "journal.json"
        rest = _until(lambda: manifest.is_file() and json.loads(manifest.read_text())["rest_url"])

        def open_conns():
            """one connection subscribed to all four topics"""
            conns = [c for c in _get(f"{rest}/sim/stats")["connections"] if c["closed"] is None]
            return [c for c in conns if len(c["subscriptions"]) == 4]

        def delivered(topic: str, after: int):
            """a frame of the topic after the last one counted"""
            (c,) = open_conns() or [None]
            return c is not None and c["frames_by_stream"].get(topic, 0) > after

        def frames_of(topic: str) -> int:
            (c,) = _until(open_conns)
            return c["frames_by_stream"].get(topic, 0)

        def inject(fault: str, **kw: str) -> None:
            q = "&".join(f"{k}={v}" for k, v in {"fault": fault, **kw}.items())
            _get(f"{rest}/sim/inject?{q}")

        def gap(symbol: str) -> None:
            topic = f"orderbook.50.{symbol}"
            inject("gap", symbol=symbol)
            n = frames_of(topic)
            _until(lambda: delivered(topic, n + 1))  # the next delta shows the gap

        _until(open_conns)
        gap("BTCUSDT")
        gap("ETHUSDT")
        inject("garbage")
        gap("BTCUSDT")
        first = _until(open_conns)[0]["id"]  # (a resubscribe may be under way)
        inject("close")
        _until(lambda: any(c["id"] != first for c in open_conns()))
        gap("BTCUSDT")
        n = frames_of("orderbook.50.BTCUSDT")
        _until(lambda: delivered("orderbook.50.BTCUSDT", n + 2))  # the resync has come
        stats = _get(f"{rest}/sim/stats")
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=30)
        assert run.returncode == 0, err
        assert "Traceback" not in err
        return jdir, json.loads(out[out.index("{") :]), stats
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(timeout=10)


def test_every_injected_fault_is_detected_and_recovered(faulted):
    jdir, summary, stats = faulted
    withheld = [f for c in stats["connections"] for f in c["faults"] if f.startswith("gap:")]
    assert len(withheld) == 4
    verify = subprocess.run(
        [*ENGINE, "journal", "verify", str(jdir)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    mismatch, compared = check(jdir)  # replay --check: the live outputs, reproduced
    assert mismatch is None and compared == sum(summary["outputs"].values())

    s = _replay_json(jdir)
    assert s["exchange"] == "bybit"
    for sym in SYMBOLS:
        b = s["symbols"][sym]["book"]
        lost = withheld.count(f"gap:orderbook.50.{sym}")
        # each gap resynced, and the book the close took off the air (BookWithdrawn: lost,
        # a resubscribing venue) rebuilt by the reconnect's snapshot, a resync too
        assert b["gaps"] == lost and b["withdrawn"] <= 1, (sym, b)
        assert b["resyncs"] == lost + b["withdrawn"], (sym, b)
        assert b["state"] == "synced" and b["crossed"] == 0 and b["drift"] == 0, (sym, b)
    assert_every_break_recovered(jdir, SYMBOLS)  # the capture stopped once the last resync came
    assert summary["resubscribes"] == 4  # every resync by resubscribing the book topic
    assert summary["reconnects"] == 1 and summary["decode_errors"] == 4  # close; garbage
    # every resubscribe is journaled, unsubscribe then subscribe of the book topic only
    sent = [json.loads(f.payload) for f in JournalReader(jdir).frames() if f.dir == "out"]
    ops = [(m["op"], m.get("args")) for m in sent if m.get("op") != "ping"]
    assert ops.count(("unsubscribe", ["orderbook.50.BTCUSDT"])) == 3
    assert ops.count(("subscribe", ["orderbook.50.ETHUSDT"])) == 1


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> tuple[Path, dict]:
    """(journal, summary) of `engine run --exchange bybit --sim` with scheduled faults."""
    jdir = tmp_path_factory.mktemp("bybit-sim") / "j"
    done = subprocess.run(
        [*ENGINE, "run", "--exchange", "bybit", "--sim", "--sim-faults", "gap,garbage",
         "--sim-fault-every", "0.5", "--duration", "3", "--no-dashboard", "--out", str(jdir)],
        capture_output=True, text=True, timeout=90, env=_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return jdir, json.loads(done.stdout[done.stdout.index("{") :])


def test_the_embedded_simulator_speaks_bybit(embedded):
    jdir, summary = embedded
    assert json.loads((jdir / "journal.json").read_text())["exchange"] == "bybit"
    assert summary["outputs"].get("GapDetected", 0) >= 1 and summary["decode_errors"] >= 4
    assert summary["resubscribes"] == summary["outputs"]["GapDetected"]
    assert_every_break_recovered(jdir, SYMBOLS)  # the faults run to the end: the last may not be
    mismatch, _ = check(jdir)
    assert mismatch is None, mismatch


def test_the_replay_server_serves_a_bybit_journal_to_a_bybit_capture(embedded, tmp_path):
    jdir, _ = embedded
    again = tmp_path / "again"
    done = capture_served(jdir, "bybit", again)
    assert done.returncode == 0, done.stderr

    def texts(j: Path, conn: int | None = None) -> list[bytes]:
        return [f.payload for f in JournalReader(j).frames()
                if f.dir == "in" and f.kind == "text" and conn in (None, f.conn)]  # fmt: skip

    recorded = texts(jdir)
    first_conn = next(f.conn for f in JournalReader(again).frames() if f.kind == "open")
    assert texts(again, first_conn)[: len(recorded)] == recorded  # the bytes, in order
    # until its first connection closes (the served recording ended), the capture rebuilds the
    # same books, gaps and resyncs
    end = next(f.recv_ns for f in JournalReader(again).frames() if f.kind == "close")
    ours, theirs = _replay_json(again, "--to", str(end)), _replay_json(jdir)
    for sym in SYMBOLS:
        a, b = ours["symbols"][sym]["book"], theirs["symbols"][sym]["book"]
        keys = ("gaps", "syncs", "resyncs")
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}, sym


def test_book_at_export_and_python_api_on_a_bybit_journal(faulted, tmp_path):
    jdir, _, _ = faulted
    frames = [f for f in JournalReader(jdir).frames() if f.dir == "in" and f.kind == "text"]
    at = str(frames[-1].recv_ns)  # the end of the capture: every book resynced (test above)
    done = subprocess.run(
        [*ENGINE, "book", str(jdir), "--symbol", "BTCUSDT", "--at", at, "--depth", "3", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    book = json.loads(done.stdout)["book"]
    assert book["state"] == "synced" and len(book["bids"]) == len(book["asks"]) == 3
    assert num.parse(book["best_bid"][0]) < num.parse(book["best_ask"][0])

    out = tmp_path / "tables"
    done = subprocess.run(
        [*ENGINE, "export", str(jdir), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert list(out.glob("table=trades/symbol=BTCUSDT/*/*.parquet"))
    assert list(out.glob("table=book_events/symbol=BTCUSDT/*/*.parquet"))

    j = engine.open(jdir)
    assert j.exchange == "bybit" and j.symbols == list(SYMBOLS)
    assert j.table("trades").num_rows > 0
