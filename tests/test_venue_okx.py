"""OKX end to end: ``engine run --exchange okx --sim`` with faults, then the journal's tools.

The capture runs as a real subprocess against the embedded simulator speaking
OKX's dialect (real sockets on 127.0.0.1): subscribe by message, in-stream
snapshots with checksums, ``books`` updates chained by ``seqId``/``prevSeqId``.
Faults (one a second): ``gap`` withholds a books update (the next
``prevSeqId`` does not chain: GapDetected), ``drift`` edits the next served
snapshot (its levels no longer match OKX's checksum: ChecksumMismatch),
``garbage`` sends four invalid frames (DecodeErrors), ``close`` closes the
connection (a reconnect subscribes afresh).  Every one must be detected and
recovered from (each book synced again by resubscribing; the one a capture
stops in, resynced as it stops: see tests/helpers/recovery.py), the journal must
verify and replay to the very outputs the capture recorded.  Then ``engine
book --at``, ``engine export`` and ``engine.open`` on the OKX journals.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import engine
from engine.codecs.okx_checksum import checksum
from engine.events import DepthDiff
from engine.journal.recorder import read_outputs
from engine.sim.okx import OkxDialect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.recovery import assert_every_break_recovered, cut_journal  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "journals" / "okx"
SYMBOLS = ["BTC-USDT", "ETH-USDT"]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("okx") / "j"
    p = cli("run", "--exchange", "okx", "--sim", "--symbols", ",".join(SYMBOLS),
            "--sim-faults", "gap,drift,garbage,close", "--sim-fault-every", "1",
            "--duration", "7", "--no-dashboard", "--out", str(out), timeout=90)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    return out, json.loads(p.stdout[p.stdout.index("{") : p.stdout.rindex("}") + 1])


def test_capture_detects_and_recovers_from_every_fault(captured):
    out, summary = captured
    assert json.loads((out / "journal.json").read_text())["exchange"] == "okx"
    assert summary["reconnects"] >= 1 and summary["errors"].get("server_close", 0) >= 1  # close
    assert summary["decode_errors"] >= 4  # garbage: four invalid frames a time
    o = summary["outputs"]
    assert o.get("GapDetected", 0) >= 1  # gap: the sequence broke
    assert o.get("ChecksumMismatch", 0) >= 1  # drift: the snapshot fails OKX's checksum
    assert summary["resubscribes"] >= o["GapDetected"]  # every break resynced by resubscribing
    # each break resynced, or (the capture stops whenever it does) still being resynced
    breaks = assert_every_break_recovered(out, SYMBOLS)
    assert sum(b.count for b in breaks.values()) >= o["GapDetected"] + o["ChecksumMismatch"]
    s = json.loads(cli("replay", str(out), "--json").stdout)
    for sym in SYMBOLS:
        b = s["symbols"][sym]["book"]
        assert b["checksums_verified"] > 10 and b["syncs"] >= 2, (sym, b)


def test_a_capture_stopped_mid_resync_passes_the_check_and_a_lost_recovery_fails_it(
    captured, tmp_path
):
    """The check above on the capture cut as if it had stopped at other moments: right after
    the first gap's resubscribe went out (its snapshot not in yet), it holds; with that resync
    never asked for, or with outputs that never recorded the recovery the frames show, it fails."""
    out, _ = captured
    outputs = list(read_outputs(out))
    gap, sym = next((seq, o["symbol"]) for seq, o in outputs if o["type"] == "GapDetected")
    synced = next(
        seq for seq, o in outputs if o["type"] == "BookSynced" and o["symbol"] == sym and seq > gap
    )
    sent = next(f.seq for f in engine.open(out).frames(dirs=["out"]) if f.seq > gap)
    assert gap < sent < synced  # the resubscribe, then its snapshot
    flight = cut_journal(out, tmp_path / "in-flight", sent)
    assert assert_every_break_recovered(flight, SYMBOLS)[sym].in_flight
    unasked = cut_journal(out, tmp_path / "unasked", sent, without="SnapshotRequest")
    with pytest.raises(AssertionError, match="never recovered nor resynced"):
        assert_every_break_recovered(unasked, [sym])
    lost = cut_journal(out, tmp_path / "lost", synced, outputs_to=gap)
    with pytest.raises(AssertionError, match="published at the end .* no fresh snapshot"):
        assert_every_break_recovered(lost, [sym])


def test_journal_verifies_and_replays_identically(captured):
    out, _ = captured
    v = cli("journal", "verify", str(out))
    assert v.returncode == 0, v.stdout + v.stderr
    c = cli("replay", str(out), "--check")
    assert c.returncode == 0 and c.stdout.startswith("OK: replay reproduced all"), c.stdout


def test_every_control_message_is_journaled(captured):
    out, _ = captured
    j = engine.open(out)
    sent = [json.loads(f.payload) for f in j.frames(dirs=["out"])]
    ops = [m["op"] for m in sent]
    assert ops.count("subscribe") >= 2 and "unsubscribe" in ops  # reconnect + resubscribes
    replies = [f.payload for f in j.frames(dirs=["in"]) if f.payload.startswith(b'{"event"')]
    assert len(replies) >= len([a for m in sent for a in m["args"]])  # an event per arg


def test_sim_dialect_answers_ping_and_refuses_an_unknown_instrument():
    class Conn:
        subs: dict[str, None] = {}

        def subscribe(self, s):
            self.subs[s] = None

    class Host:
        valid_streams = {"books:BTC-USDT"}
        max_streams = 10

    d = OkxDialect()
    assert d.control_reply(Conn(), "ping", Host()) == [b"pong"]
    (err,) = d.control_reply(
        Conn(), '{"op":"subscribe","args":[{"channel":"books","instId":"NOPE"}]}', Host()
    )
    assert json.loads(err)["event"] == "error" and json.loads(err)["code"] == "60018"


def test_book_at_on_the_real_capture():
    p = cli("book", str(FIXTURE), "--symbol", "BTC-USDT", "--at", "2022-05-13T16:27:10Z",
            "--depth", "3", "--json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    b = json.loads(p.stdout)["book"]
    assert b["state"] == "synced" and b["best_bid"][0] == "30251.7" and len(b["bids"]) == 3


def test_export_of_the_real_capture(tmp_path):
    p = cli("export", str(FIXTURE), "--out", str(tmp_path / "x"))
    assert p.returncode == 0, p.stderr
    import pyarrow.dataset as ds

    t = ds.dataset(tmp_path / "x" / "table=trades", format="parquet", partitioning="hive")
    trades = t.to_table()
    assert trades.num_rows == 74
    assert set(trades.column("symbol").to_pylist()) == {
        "BTC-USD-220527",
        "BTC-USDT",
        "UNI-USD-SWAP",
    }


def test_python_api_on_the_real_capture():
    with engine.open(FIXTURE) as j:
        assert j.exchange == "okx" and j.symbols == ["BTC-USD-220527", "BTC-USDT", "UNI-USD-SWAP"]
        b = j.book_at("UNI-USD-SWAP", "2022-05-13T16:27:12Z", depth=25)
        # the book the API gives is the one OKX vouched for: its checksum is OKX's last one
        last = list(j.events(end="2022-05-13T16:27:12Z", symbols="UNI-USD-SWAP", types=DepthDiff))
        assert checksum(b.book) == last[-1].checksum
        assert b.summary["checksums_verified"] == len(last) + 1  # and the snapshot's
        assert b.summary["checksum_mismatches"] == 0
