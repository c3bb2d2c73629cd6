"""Kraken (v2) end to end: the simulator speaks it, the engine captures, verifies and recovers.

First the simulator's Kraken encoder against the codec and the book reducer,
in process and deterministic: a minute of the market model's frames decodes
into books whose checksum holds after every update (the encoder's served top
10 — levels pushed out of it are not removed, levels entering it are sent —
is what the truncating rule rebuilds), and one withheld update is a
ChecksumMismatch.  Then the real thing: ``engine run --exchange kraken --sim``
(and ``kraken-v1``) with gap, garbage, drift and close faults over real sockets; the journal
verifies, ``replay --check`` reproduces every output, each lost update is a
checksum mismatch answered by a resubscription whose snapshot resyncs the
book, the garbage is counted as decode errors, the close is a reconnect, and
every book ends synced.  Last, the replay server serves the real v1 recording
and a capture of it verifies every checksum again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.book_reducer import BookReducer, ChecksumMismatch
from engine.codecs.registry import get_codec
from engine.events import DepthDiff
from engine.sim.kraken_frames import KrakenFrames, KrakenV1Frames
from engine.sim.model import Market

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.recovery import assert_every_break_recovered  # noqa: E402
from helpers.served import capture_served  # noqa: E402

SYMBOLS = ("BTCUSDT", "SHIBUSDT")


def fold_market(seed: int, seconds: int, withhold: int | None = None, frames=KrakenFrames):
    """Run the model with a Kraken encoder; feed its snapshots and book frames to the engine."""
    market = Market(seed=seed, symbols=SYMBOLS, activity=40.0, encoder=frames())
    codec = get_codec("kraken" if frames is KrakenFrames else "kraken-v1")
    reducer = BookReducer(codec.sync_rule, verify_interval_s=None)
    state = reducer.initial()
    outs: list = []
    seq = 0

    def feed(payload: bytes) -> list:
        nonlocal seq, state
        seq += 1
        evs = codec.decode(seq, seq, "text", "ws://sim", payload)
        for ev in evs:
            state, o = reducer.step(state, ev)
            outs.extend(o)
        return evs

    market.advance(market.now_ms + 150)  # the encoder has served a first top of book
    for s in SYMBOLS:
        feed(market.snapshot(s, frames.depth))
    updates = 0
    for stream, payload in market.advance(market.now_ms + seconds * 1000):
        if not stream.startswith("book:"):
            continue
        updates += 1
        if updates == withhold:
            continue
        (ev,) = feed(payload)
        assert isinstance(ev, DepthDiff) and ev.checksum is not None
    return market, reducer, state, outs, updates


def test_the_simulated_kraken_book_verifies_after_every_update():
    market, reducer, state, outs, updates = fold_market(seed=5, seconds=60)
    counts = reducer.counts(state)
    assert updates > 500
    # every update's checksum, and each snapshot's own (v2 snapshots carry one)
    assert sum(c.checksums_verified for c in counts.values()) == updates + len(SYMBOLS)
    assert not [o for o in outs if isinstance(o, ChecksumMismatch)]
    for s in SYMBOLS:
        assert reducer.sync_state(state, s) == "synced"
        book = reducer.book(state, s)
        assert book is not None
        # the engine holds exactly Kraken's view: the market's top 10 a side as last served
        served_bids, served_asks = market.encoder.served(s)  # type: ignore[attr-defined]
        assert (book.levels()) == (served_bids, served_asks)
        assert len(served_bids) == len(served_asks) == 10
        _, bids, asks = market.book(s)
        assert len(bids) > 10 and len(asks) > 10  # the model's book is deeper: truncation ran


def test_the_v1_spelling_of_the_simulated_book_verifies_too():
    market, reducer, state, outs, updates = fold_market(7, 30, frames=KrakenV1Frames)
    assert updates > 200 and not [o for o in outs if isinstance(o, ChecksumMismatch)]
    counts = reducer.counts(state)
    assert sum(c.checksums_verified for c in counts.values()) == updates  # v1 snapshots: none
    for s in SYMBOLS:
        book = reducer.book(state, s)
        assert book is not None and book.levels() == market.encoder.served(s)  # type: ignore[attr-defined]


def test_a_withheld_update_is_a_checksum_mismatch():
    _, reducer, state, outs, _ = fold_market(seed=5, seconds=5, withhold=3)
    bad = [o for o in outs if isinstance(o, ChecksumMismatch)]
    assert len(bad) == 1
    assert reducer.sync_state(state, bad[0].symbol) == "resyncing"
    assert reducer.book(state, bad[0].symbol) is None  # not published until a new snapshot


def engine(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("venue", ["kraken", "kraken-v1"])
def test_engine_run_kraken_sim_with_faults_detects_and_recovers(tmp_path, venue):
    j = tmp_path / venue
    r = engine(
        "run", "--exchange", venue, "--sim", "--sim-faults", "gap,garbage,drift,close",
        "--sim-fault-every", "0.8", "--duration", "5.5", "--no-dashboard",
        "--symbols", "btcusdt,ethusdt", "--out", str(j), timeout=90,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout[r.stdout.index("{") : r.stdout.rindex("}") + 1])
    manifest = json.loads((j / "journal.json").read_text())
    assert manifest["exchange"] == venue and manifest["simulator"]["venue"] == venue

    v = engine("journal", "verify", str(j))
    assert v.returncode == 0 and v.stdout.startswith("OK"), v.stdout + v.stderr
    check = engine("replay", str(j), "--check")
    assert check.returncode == 0 and check.stdout.startswith("OK"), check.stdout + check.stderr

    rep = json.loads(engine("replay", str(j), "--json").stdout)
    books = {s: v["book"] for s, v in rep["symbols"].items()}
    assert set(books) == {"BTCUSDT", "ETHUSDT"}
    mismatches = sum(b["checksum_mismatches"] for b in books.values())
    assert mismatches == summary["outputs"].get("ChecksumMismatch", 0)
    if venue == "kraken":
        # the gap fault (at 0.8 s and 4.0 s) withholds a BTCUSDT update; at depth 10 every
        # update is within the checksum's 10 levels, so the next checksum fails (at v1's
        # depth 1000 an update deeper than the top 10 is lost unseen: Kraken's own limit)
        assert books["BTCUSDT"]["checksum_mismatches"] >= 1
        assert summary["resubscribes"] >= 1  # mismatches are answered by resubscribing
    # every break recovered by the resubscription's snapshot (or, at the end, being recovered)
    breaks = assert_every_break_recovered(j, sorted(books))
    for sym, b in books.items():
        assert b["checksums_verified"] > 20, sym
        # a resync is counted when its snapshot comes: the last may be under way
        assert b["resyncs"] >= b["checksum_mismatches"] - breaks[sym].in_flight, sym
        assert b["sequence_gaps"] == 0 and b["drift"] == 0, sym
    assert rep["decode_errors"] >= 4  # the garbage fault's four frames (at 1.6 s)
    assert summary["reconnects"] >= 1  # the close fault (at 3.2 s)


def test_the_replay_server_serves_the_kraken_recording_and_a_capture_of_it_verifies(tmp_path):
    """``engine replay --serve`` of the real v1 capture, captured again by ``engine run``:
    the recorded frames come back as Kraken sent them, and every checksum holds again."""
    fixture = Path(__file__).resolve().parent.parent / "fixtures" / "kraken" / "journal"
    j = tmp_path / "again"
    r = capture_served(fixture, "kraken-v1", j, "--symbols", "SC/EUR,ETH/CHF,OCEAN/XBT,GRT/ETH")
    assert r.returncode == 0, r.stderr
    rep = json.loads(engine("replay", str(j), "--json").stdout)
    assert rep["decode_errors"] == 0
    got = {s: v["book"]["checksums_verified"] for s, v in rep["symbols"].items()}
    assert got == {"SC/EUR": 818, "ETH/CHF": 317, "OCEAN/XBT": 148, "GRT/ETH": 20}
    assert all(v["book"]["checksum_mismatches"] == 0 for v in rep["symbols"].values())
