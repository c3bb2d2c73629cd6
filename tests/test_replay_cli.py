"""``engine replay``: summary, --json, --symbols/--from/--to, --out, --serve, and its error messages.

Runs on a copy of the real Binance spot capture in fixtures/journals (a
replay writes checkpoints beside the journal only with --save-checkpoints).
Expected numbers are computed from the journal with the reader and ``json``
where they can be (frame counts, the trades in the window), not with the
summary code under test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import trio
from click.testing import CliRunner
from trio_websocket import open_websocket_url

from engine import serde
from engine.journal.reader import JournalReader
from engine.replay.checkpoints import list_checkpoints
from engine.replay.cli import replay as replay_cmd
from engine.replay.replay import Replay
from engine.timefmt import format_ns

SPOT = Path(__file__).resolve().parent.parent / "fixtures" / "journals" / "binance-spot"
SYMBOLS = ["BLZETH", "LRCBTC", "NKNUSDT", "RUNEEUR"]


@pytest.fixture
def spot(tmp_path: Path) -> Path:
    return Path(shutil.copytree(SPOT, tmp_path / "binance-spot"))


def engine(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def trade_frames(journal: Path, until_ns: int | None = None) -> dict[str, int]:
    """Trade messages per symbol, straight from the journal's JSON."""
    out: dict[str, int] = {}
    for f in JournalReader(journal, kinds=["text"]).frames():
        if until_ns is not None and f.recv_ns > until_ns:
            break
        data = json.loads(f.payload).get("data", {})
        if data.get("e") in ("trade", "aggTrade"):
            out[data["s"]] = out.get(data["s"], 0) + 1
    return out


def test_summary_subprocess_prints_every_symbol(spot: Path) -> None:
    p = engine("replay", str(spot))
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""  # no progress bar when stderr is not a terminal
    lines = p.stdout.splitlines()
    assert lines[0] == f"journal   {spot}  exchange=binance"
    assert lines[1].startswith("frames    270  events 270  decode errors 0  outputs 8")
    for sym in SYMBOLS:
        assert sym in lines
        block = lines[lines.index(sym) + 1 :]
        assert block[0].startswith("  trades   ")
        assert any(x.startswith("  book     bid ") for x in block)
        assert any(x.startswith("  health   gaps 0  resyncs 0  drift 0  syncs 1") for x in block)
    assert "  trades   last 0.3528  vwap 0.3528  volume 58 (buy 58 / sell 0)  count 1" in lines


def test_json_summary_is_consistent_with_the_journal(spot: Path) -> None:
    res = CliRunner().invoke(replay_cmd, [str(spot), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert (s["frames"], s["decode_errors"], s["exchange"]) == (270, 0, "binance")
    assert sorted(s["symbols"]) == SYMBOLS
    trades = trade_frames(spot)
    for sym, d in s["symbols"].items():
        assert d["outputs"] == {"BookSynced": 1, "SnapshotRequest": 1}
        b = d["book"]
        assert b["synced"] and b["gaps"] == b["resyncs"] == b["drift"] == 0
        bid, ask = (Decimal(b[k][0]) for k in ("best_bid", "best_ask"))
        assert Decimal(b["spread"]) == ask - bid > 0
        assert Decimal(b["mid"]) == (ask + bid) / 2
        assert (d["trades"] or {}).get("count", 0) == trades.get(sym, 0)


def test_symbols_and_time_window(spot: Path) -> None:
    frames = list(JournalReader(spot).frames())
    to = frames[150].recv_ns
    res = CliRunner().invoke(
        replay_cmd, [str(spot), "--json", "--symbols", "nknusdt,lrcbtc", "--to", format_ns(to)]
    )
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert sorted(s["symbols"]) == ["LRCBTC", "NKNUSDT"]
    assert s["frames"] == sum(f.recv_ns <= to for f in frames)
    assert s["last_recv_ns"] <= to
    for sym, d in s["symbols"].items():
        assert (d["trades"] or {}).get("count", 0) == trade_frames(spot, to).get(sym, 0)
    # --from after every output: nothing reported, state still the whole fold's
    late = CliRunner().invoke(replay_cmd, [str(spot), "--json", "--from", str(frames[-1].recv_ns)])
    s = json.loads(late.output)
    assert s["frames"] == 270 and all(d["outputs"] == {} for d in s["symbols"].values())
    assert all(d["book"]["synced"] for d in s["symbols"].values())


def test_out_writes_every_output_as_parquet(spot: Path, tmp_path: Path) -> None:
    out = tmp_path / "outs.parquet"
    p = engine("replay", str(spot), "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert f"wrote     8 outputs to {out}" in p.stdout
    t = pq.read_table(out)
    want = list(Replay(SPOT, use_checkpoints=False).outputs())
    assert t.column("frame_seq").to_pylist() == [s for s, _ in want]
    assert [serde.load(json.loads(x)) for x in t.column("output").to_pylist()] == [
        o for _, o in want
    ]
    assert set(t.column("symbol").to_pylist()) == set(SYMBOLS)


def test_checkpoint_flags(spot: Path) -> None:
    r = CliRunner()
    res = r.invoke(replay_cmd, [str(spot), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["checkpoints_written"] == 0
    assert list_checkpoints(spot) == [] and not (spot / "checkpoints").exists()
    res = r.invoke(replay_cmd, [str(spot), "--checkpoint-frames", "100"])
    assert res.exit_code == 2 and "need --save-checkpoints" in res.output
    assert not (spot / "checkpoints").exists()
    res = r.invoke(
        replay_cmd, [str(spot), "--save-checkpoints", "--checkpoint-frames", "100", "--json"]
    )
    assert json.loads(res.output)["checkpoints_written"] == 3
    assert [c.last_seq for c in list_checkpoints(spot)] == [100, 200, 270]


def test_old_checkpoint_spellings_still_work_with_a_note(spot: Path) -> None:
    p = engine("replay", str(spot), "--no-checkpoints")
    assert p.returncode == 0 and "note: --no-checkpoints is deprecated" in p.stderr
    assert not (spot / "checkpoints").exists()
    p = engine("replay", str(spot), "--checkpoints", "--checkpoint-frames", "100")
    assert (
        p.returncode == 0
        and "note: --checkpoints is deprecated; use --save-checkpoints" in p.stderr
    )
    assert [c.last_seq for c in list_checkpoints(spot)] == [100, 200, 270]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}"], "does not exist"),
        (["{file}"], "is a file"),
        (["{empty}"], "no journal.json and no seg-*.arrows files"),
        (["{spot}", "--from", "noon"], "Invalid value for '--from': not a time: 'noon'"),
        (["{spot}", "--serve", "nowhere"], "expected HOST:PORT"),
        (["{spot}", "--check", "--out", "o.parquet"], "--check and --out cannot be combined"),
        (["{spot}", "--serve", "127.0.0.1:0", "--speed", "fast"], "--speed must be"),
    ],
)
def test_errors_are_one_line_messages(spot: Path, tmp_path: Path, args, message) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    names = {
        "missing": tmp_path / "missing",
        "file": tmp_path / "file",
        "empty": tmp_path / "empty",
        "spot": spot,
    }
    p = engine("replay", *[a.format(**names) for a in args])
    assert p.returncode != 0
    assert "Traceback" not in p.stderr and p.stdout == ""
    errors = [x for x in p.stderr.splitlines() if x.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0], p.stderr


def test_foreign_manifest_exchange_is_a_message(spot: Path) -> None:
    manifest = json.loads((spot / "journal.json").read_text())
    (spot / "journal.json").write_text(json.dumps({**manifest, "exchange": "mtgox"}))
    res = CliRunner().invoke(replay_cmd, [str(spot)])
    assert res.exit_code == 1 and "unknown exchange 'mtgox'" in res.output


async def test_serve_subprocess_replays_the_journal_over_websocket(spot: Path) -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "engine.cli", "replay", str(spot), "--serve", "127.0.0.1:0",
         "--speed", "max"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        buf = b""
        with trio.fail_after(30):
            while b"\n" not in buf:
                buf += await proc.stdout.receive_some(4096)
        first = buf.decode().splitlines()[0]
        assert first.startswith(f"replaying {spot} on ws://127.0.0.1:")
        port = int(first.split("ws://127.0.0.1:")[1].split()[0])
        url = f"ws://127.0.0.1:{port}/stream?streams=nknusdt@depth@100ms"
        async with open_websocket_url(url) as ws:
            with trio.fail_after(10):
                got = [json.loads(await ws.get_message()) for _ in range(150)]
        assert {m["stream"] for m in got} == {"nknusdt@depth@100ms"}
    finally:
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            await proc.wait()
