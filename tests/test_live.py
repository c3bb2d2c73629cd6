"""The live capture runtime against the simulator, over real sockets on 127.0.0.1.

Each test runs :func:`engine.sim.cli.open_simulator` and a :class:`engine.live.capture.Capture`
in one trio nursery for a second or two, then reads the journal back and holds
it against the simulator's own counters: every frame the simulator sent on a
connection is journaled on that connection (zero loss), every fault is
journaled and followed by a reconnect or a resync, a rotation leaves no hole
in the depth update ids, subscribing 1000 streams never trips the 5 messages/s
disconnect, and the journal verifies.  The last test stops ``engine run`` with
SIGTERM in a real subprocess.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import attrs
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
from engine.live.liveness import Backoff
from engine.live.status import CaptureStatus
from engine.live.throttle import ControlLimiter, WeightBudget
from engine.pipeline import Pipeline
from engine.replay.checkpoints import (
    CheckpointPolicy,
    CheckpointWriter,
    PendingCheckpoint,
    list_checkpoints,
    load_checkpoint,
)
from engine.sim.cli import Simulator, open_simulator

SIM = dict(tick=0.005, close_timeout=0.5, shutdown_grace=0.3, stall_duration=1.5)
LIVE = dict(
    ping_interval_s=0.3,
    ping_timeout_s=0.3,
    stale_after_s=2.0,
    connect_timeout_s=2.0,
    disconnect_timeout_s=5.0,  # the close handshake takes ms; the bound only matters on a starved machine
    backoff_base_s=0.05,
    backoff_cap_s=0.2,
    handoff_timeout_s=1.0,
    rest_timeout_s=2.0,
)
OPTIONS = {"verify_interval_s": 0.5}
#: for tests that are not about stalls or hand-over timeouts: the simulator runs in the
#: capture's process, and on a loaded machine (load average 10-20) it may answer a ping later
#: than LIVE's 0.3 s (the pinger then aborts a healthy connection as stalled, and what the
#: simulator had written to it is lost), and a rotation's successor may take longer than 1 s to
#: deliver (the old connection is then closed without waiting: a hole the test would report)
CALM = {"ping_timeout_s": 3.0, "handoff_timeout_s": 10.0}


@attrs.frozen
class Run:
    """What one capture left behind: its journal, the simulator's counters, the final status."""

    jdir: Path
    frames: list[Frame]
    sim: dict[str, Any]
    status: CaptureStatus
    #: monotonic-to-wall offsets of the script's marks (``time.time_ns()`` when they happened)
    marks: dict[str, int]
    exchange: str = "sim"

    def inbound(self) -> list[Frame]:
        return [f for f in self.frames if f.dir == "in" and f.kind in ("text", "binary")]

    def of_kind(self, kind: str, conn: int | None = None) -> list[Frame]:
        return [f for f in self.frames if f.kind == kind and (conn is None or f.conn == conn)]

    def outputs(self) -> list[tuple[int, Any]]:
        """The capture's outputs, rebuilt by folding the journal (the one pipeline)."""
        codec = get_codec(self.exchange)
        p = Pipeline(codec, standard_reducers(codec, OPTIONS))
        out: list[tuple[int, Any]] = []
        for batch in JournalReader(self.jdir).batches():
            out.extend(p.feed_batch(batch))
        return out


async def capture(
    tmp_path: Path,
    script: Any,
    *,
    sim: dict[str, Any] | None = None,
    live: dict[str, Any] | None = None,
    reducers: bool = True,
    checkpointer: Any = None,
    exchange: str = "sim",
) -> Run:
    """Capture from a fresh simulator while ``script(sim, capture, marks)`` runs; then stop cleanly.

    ``exchange``: the codec, and the dialect the simulator speaks ("sim": Binance spot).
    """
    codec = get_codec(exchange)
    jdir = tmp_path / "journal"
    marks: dict[str, int] = {}
    venue = {} if exchange == "sim" else {"venue": exchange}
    async with open_simulator(**{"seed": 1, "rate": 2000, **SIM, **venue, **(sim or {})}) as s:
        if exchange != "sim":
            live = {"exchange": exchange, "channels": tuple(codec.default_channels), **(live or {})}
        cfg = LiveConfig(ws_url=s.ws_url, rest_url=s.rest_url, **{**LIVE, **(live or {})})
        writer = JournalWriter.create(jdir, {"exchange": exchange})
        cap = Capture(
            cfg,
            writer,
            codec,
            standard_reducers(codec, OPTIONS) if reducers else None,
            rng=random.Random(7),
            checkpointer=checkpointer(jdir, writer.metadata) if checkpointer else None,
        )
        async with trio.open_nursery() as n:
            await n.start(cap.run)
            await script(s, cap, marks)
            cap.stop()
        stats = s.stats()
    return Run(jdir, list(JournalReader(jdir).frames()), stats, cap.status, marks, exchange)


def assert_zero_loss_and_sound(run: Run) -> None:
    """Every frame the simulator sent on a connection is journaled on it; the journal verifies."""
    opened = {
        json.loads(f.payload)["local"]: f.conn for f in run.frames if f.kind == "open"
    }  # our local address is the simulator's peer address
    conns = {opened[c["peer"]]: c for c in run.sim["connections"]}
    sent = {k: c["frames"] for k, c in conns.items()}
    # a write the connection's end cut off may have reached us in part (ConnStats.frames_cut)
    cut = {k: c["frames_cut"] for k, c in conns.items()}
    got = Counter(f.conn for f in run.inbound())
    assert sent and set(got) <= set(sent), (sent, got)
    assert all(sent[k] <= got[k] <= sent[k] + cut[k] for k in sent), (sent, cut, got)
    problems, stats = verify_journal(run.jdir)
    assert problems == [] and stats is not None
    assert not list(run.jdir.glob("*.partial"))
    assert [f.seq for f in run.frames] == list(range(1, len(run.frames) + 1))
    assert run.status.frames_in == len(run.inbound())


def depth_ids(run: Run) -> dict[str, list[tuple[int, int]]]:
    """(U, u) of every journaled diff-depth update, per symbol, over all connections."""
    out: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for f in run.inbound():
        if b"depthUpdate" in f.payload and b"@depth@100ms" in f.payload:
            d = json.loads(f.payload)["data"]
            out[d["s"]].append((d["U"], d["u"]))
    return out


def holes(ids: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Update ids missing between the first and the last journaled update (union of [U, u])."""
    missing = []
    covered = None
    for lo, hi in sorted(set(ids)):
        if covered is not None and lo > covered + 1:
            missing.append((covered + 1, lo - 1))
        covered = hi if covered is None else max(covered, hi)
    return missing


async def until(condition: Any) -> None:
    """Wait for what must happen, never for a fixed time (a loaded machine is slow, not wrong)."""
    with trio.fail_after(30):
        while not condition():  # noqa: ASYNC110 - polling the capture's counters
            await trio.sleep(0.02)


def verifications(cap: Capture) -> int:
    """Verifications concluded so far (agreeing or finding a drift), both symbols."""
    return cap.status.outputs["BookVerified"] + cap.status.outputs["DriftDetected"]


def fault_seen(fault: str, cap: Capture, verified_at_inject: int | None = None) -> bool:
    """The capture's counters show that ``fault`` happened and was answered.

    ``verified_at_inject``: :func:`verifications` when the fault was injected.  The
    drifted snapshot is the first one served after it; four more conclusions (at
    most two were already in flight, one per symbol) include its verification.
    That one need not find the drift: the sim drifts the deepest bid, which the
    market can overwrite before the comparison.  Without it, a detected drift.
    """
    st, outs = cap.status, cap.status.outputs

    def replaced() -> bool:  # a later connection than the first delivers data
        return st.reconnects >= 1 and any(c.id > 1 and c.frames for c in cap.conns.values())

    return {
        "drop": replaced,
        "close": replaced,
        "stall": lambda: st.errors["stalled"] >= 1 and replaced(),
        "garbage": lambda: cap.pipeline.counters.decode_errors >= 4,
        "gap": lambda: outs["GapDetected"] >= 1 and outs["BookSynced"] > len(cap.config.symbols),
        "shutdown": lambda: st.rotations >= 1 and 1 not in cap.conns,
        # the drifted snapshot is adopted; the next verification of that symbol answers it
        "drift": lambda: (
            outs["DriftDetected"] >= 1
            if verified_at_inject is None
            else verifications(cap) >= verified_at_inject + 4
        ),
    }[fault]()


def books_synced(cap: Capture) -> bool:
    """Every symbol's book is *synced*: live diffs chain onto its snapshot (not merely primed)."""
    red, state = cap.pipeline.reducer("book"), cap.pipeline.state("book")
    return all(red.sync_state(state, sym.upper()) == "synced" for sym in cap.config.symbols)


async def settle(s: Simulator, cap: Capture, marks: dict[str, int]) -> None:
    """Wait until every symbol's book is synced (where faults start).

    Not merely primed: a gap right after the snapshot, before any diff chained on it, is a
    refetch, not a gap, and the refetch's snapshot would take a drift meant for a verification
    (the drift fault changes the next snapshot served, whatever asked for it).
    """
    await until(lambda: books_synced(cap))


# --------------------------------------------------------------------------- zero loss


async def test_capture_journals_every_frame_the_simulator_sent(tmp_path: Path) -> None:
    async def script(s: Simulator, cap: Capture, marks: dict[str, int]) -> None:
        await settle(s, cap, marks)
        await trio.sleep(0.8)
        await until(lambda: cap.status.frames_in > 1000)  # volume, not time, on a slow machine

    run = await capture(tmp_path, script)
    assert_zero_loss_and_sound(run)
    assert len(run.inbound()) > 1000 and run.status.errors == Counter()
    assert [(f.kind, f.code) for f in run.of_kind("close")] == [("close", 1000)]
    assert run.of_kind("close")[0].payload == b"capture stopped"
    # every REST response is journaled, with its status
    rest = run.of_kind("rest")
    assert len(rest) == run.sim["rest"]["snapshots"] and {f.code for f in rest} == {200}
    outs = Counter(type(o).__name__ for _, o in run.outputs())
    assert outs["BookSynced"] == 2 and outs["BookVerified"] >= 1 and not outs["GapDetected"]
    assert dict(outs) == dict(run.status.outputs)  # live and replay folded the same outputs
    assert all(not h for h in map(holes, depth_ids(run).values()))


class ThreadNotingWriter(CheckpointWriter):
    """The real checkpoint writer, noting which thread each store ran on."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.threads: list[bool] = []  # True: the trio (main) thread

    def store(self, pending: PendingCheckpoint) -> Path:
        self.threads.append(threading.current_thread() is threading.main_thread())
        return super().store(pending)


async def test_checkpoints_are_written_off_the_read_loop_and_restore_exactly(
    tmp_path: Path,
) -> None:
    writers: list[ThreadNotingWriter] = []

    def make(jdir: Path, metadata: dict[str, Any]) -> ThreadNotingWriter:
        writers.append(ThreadNotingWriter(jdir, metadata, CheckpointPolicy(every_frames=400)))
        return writers[-1]

    async def script(s: Simulator, cap: Capture, marks: dict[str, int]) -> None:
        await settle(s, cap, marks)
        await trio.sleep(0.8)

    run = await capture(tmp_path, script, checkpointer=make)
    assert_zero_loss_and_sound(run)
    (w,) = writers
    assert len(w.written) >= 2 and run.status.errors == Counter()
    assert w.threads and not any(w.threads), "a checkpoint was written on the trio thread"
    assert len(w.written) == len(w.threads)  # every store wrote its file (no failures)
    assert [i.path for i in list_checkpoints(run.jdir)] == w.written  # retention keeps all here
    # each checkpoint is the state of folding the journal up to its seq, exactly
    codec = get_codec("sim")
    for info in list_checkpoints(run.jdir):
        doc = load_checkpoint(info.path)
        fold = Pipeline(codec, standard_reducers(codec, OPTIONS))
        for f in run.frames:
            if f.seq > info.last_seq:
                break
            fold.feed(f.seq, f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
        restored = Pipeline(codec, standard_reducers(codec, OPTIONS))
        restored.restore(doc["pipeline"])
        assert restored.snapshot() == fold.snapshot(), info


def assert_final_checkpoint_is_the_whole_fold(run: Run) -> None:
    """The newest checkpoint holds the state after the journal's last frame, exactly."""
    infos = list_checkpoints(run.jdir)
    assert infos, "no final checkpoint"
    assert infos[-1].last_seq == run.frames[-1].seq
    codec = get_codec("sim")
    fold = Pipeline(codec, standard_reducers(codec, OPTIONS))
    for f in run.frames:
        fold.feed(f.seq, f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
    restored = Pipeline(codec, standard_reducers(codec, OPTIONS))
    restored.restore(load_checkpoint(infos[-1].path)["pipeline"])
    assert restored.snapshot() == fold.snapshot()


@pytest.mark.parametrize("seed", range(6))
async def test_stopping_at_any_moment_with_a_checkpoint_due_on_every_frame(
    tmp_path: Path, seed: int
) -> None:
    """Regression: a checkpoint due on the final "capture stop" marker crashed the shutdown.

    Every frame makes a checkpoint due (most are skipped: one write at a time);
    the capture is stopped at a random moment, cleanly (``stop``) or at once
    (its cancel scope), and must still end with a sealed journal and a final
    checkpoint of the whole fold.
    """
    rng = random.Random(seed)
    stop_at = rng.uniform(0.0, 0.8)
    hard = rng.random() < 0.5

    def every_frame(jdir: Path, metadata: dict[str, Any]) -> CheckpointWriter:
        return CheckpointWriter(jdir, metadata, CheckpointPolicy(every_frames=1, keep_old=2))

    async def script(s: Simulator, cap: Capture, marks: dict[str, int]) -> None:
        await trio.sleep(stop_at)
        if hard:
            cap.cancel_scope.cancel()

    run = await capture(tmp_path, script, sim={"rate": 500}, checkpointer=every_frame)
    assert not list(run.jdir.glob("*.partial")), (seed, stop_at, hard)
    problems, _ = verify_journal(run.jdir)
    assert problems == []
    assert run.frames[-1].kind == "marker" and run.frames[-1].payload.startswith(b"capture stop")
    assert run.status.errors["checkpoint"] == 0
    assert_final_checkpoint_is_the_whole_fold(run)


# --------------------------------------------------------------------------- faults


def _reconnected_after(run: Run, seq: int) -> None:
    """A new connection opened after ``seq`` and carried data."""
    later = [f for f in run.of_kind("open") if f.seq > seq]
    assert later, "no reconnect after the fault"
    assert any(f.conn == later[0].conn for f in run.inbound())


@pytest.mark.parametrize("fault", ["drop", "stall", "garbage", "gap", "close", "shutdown", "drift"])
async def test_each_fault_is_survived_and_journaled(tmp_path: Path, fault: str) -> None:
    async def script(s: Simulator, cap: Capture, marks: dict[str, int]) -> None:
        await settle(s, cap, marks)
        marks["inject"] = time.time_ns()
        base = verifications(cap)
        s.inject(fault)
        await until(lambda: fault_seen(fault, cap, base))
        await trio.sleep(0.3)

    calm = fault in ("shutdown", "close")
    # the successor must deliver within the simulator's grace after the notice, or the old
    # connection's stream ends first (a hole); on a loaded machine 0.3 s is not enough
    sim = {"shutdown_grace": 10.0} if fault == "shutdown" else None
    run = await capture(tmp_path, script, live=CALM if calm else None, sim=sim)
    assert_zero_loss_and_sound(run)
    t0 = run.marks["inject"]
    first = run.of_kind("open")[0].conn
    after = [f for f in run.frames if f.recv_ns >= t0]
    outs = run.outputs()
    names = [(seq, type(o).__name__) for seq, o in outs]

    if fault == "drop":
        (close,) = [f for f in run.of_kind("close", first)]
        assert close.code == 1006 and close.recv_ns >= t0
        _reconnected_after(run, close.seq)
        assert run.status.reconnects == 1 and run.status.errors["server_close"] == 1
    elif fault == "stall":
        (err,) = run.of_kind("error", first)
        assert b"stalled" in err.payload
        # detected by the pinger (one interval + the timeout), well before the stale watchdog
        # would have called it stale (a margin that holds on a loaded machine)
        assert (err.recv_ns - t0) / 1e9 < LIVE["ping_interval_s"] + LIVE["ping_timeout_s"] + 1.0
        assert LIVE["ping_interval_s"] + LIVE["ping_timeout_s"] + 1.0 < LIVE["stale_after_s"]
        (close,) = run.of_kind("close", first)
        assert close.code == 1006  # aborted: a stalled peer gets no close handshake
        _reconnected_after(run, close.seq)
    elif fault == "garbage":
        bad = [f for f in after if f.kind == "binary" or b'"U":"x"' in f.payload]
        assert len(bad) == 2 and run.status.decode_errors == 4
        assert len(run.of_kind("open")) == 1  # the connection survives bad content
        assert [f for f in after if f.dir == "in" and f.seq > bad[-1].seq]
    elif fault == "gap":
        gaps = [seq for seq, n in names if n == "GapDetected"]
        assert len(gaps) == 1
        resynced = [
            o for seq, o in outs if type(o).__name__ == "BookSynced" and seq > gaps[0] and o.resync
        ]
        assert resynced, "no resync after the gap"
        assert len(run.of_kind("open")) == 1
    elif fault == "close":
        (close,) = run.of_kind("close", first)
        assert (close.code, close.payload) == (1011, b"Simulated close")
        _reconnected_after(run, close.seq)
    elif fault == "shutdown":
        notice = [f for f in after if f.dir == "in" and b"serverShutdown" in f.payload]
        assert len(notice) == 1
        (close,) = run.of_kind("close", first)
        (successor,) = [f for f in run.of_kind("open") if f.conn != first]
        # the successor opened (and got data) before the old connection closed: no gap
        assert notice[0].seq < successor.seq < close.seq and close.payload == b"rotated"
        # the fold asked for it: a RotateRequest for the notice's frame (the runtime knew its conn)
        assert [seq for seq, n in names if n == "RotateRequest"] == [notice[0].seq]
        assert notice[0].conn == first
        assert any(f.conn == successor.conn and f.seq < close.seq for f in run.inbound())
        assert run.status.rotations == 1 and run.status.reconnects == 0
        assert all(not h for h in map(holes, depth_ids(run).values()))
        gaps = [o for _, o in outs if type(o).__name__ == "GapDetected"]
        assert not gaps, gaps
    elif fault == "drift":
        drifts = [o for _, o in outs if type(o).__name__ == "DriftDetected"]
        assert all(len(d.bids) + len(d.asks) == 1 for d in drifts)
        # usually detected (if the market overwrote the deepest bid first, the verification
        # agrees: not the runtime's concern, the reducer's tests cover both); if so, the
        # book took the (lying) snapshot, and a later verification moves it back to the stream
        assert run.status.outputs["BookVerified"] + len(drifts) >= 4
        for later in drifts[1:]:
            assert [(p, b, a) for p, a, b in later.bids] == drifts[0].bids
        assert run.sim["rest"]["drifted_snapshots"] == 1
        assert len(run.of_kind("open")) == 1


async def test_lifetime_rotation_leaves_no_gap(tmp_path: Path) -> None:
    async def script(s: Simulator, cap: Capture, marks: dict[str, int]) -> None:
        await trio.sleep(2.2)

    run = await capture(tmp_path, script, live={"lifetime_s": 0.6, **CALM})
    assert_zero_loss_and_sound(run)
    assert run.status.rotations >= 2 and run.status.reconnects == 0
    closes = run.of_kind("close")
    # every close is ours and clean: rotations, and the stop's (on a loaded machine the stop
    # may find several connections open: an old one still reading its backlog to the peer's
    # close, its successor, and that one's successor)
    assert all(f.code == 1000 for f in closes)
    assert {f.payload for f in closes} <= {b"rotated", b"capture stopped"}
    assert [f.payload for f in closes].count(b"rotated") >= 2
    ids = depth_ids(run)
    assert set(ids) == {"BTCUSDT", "ETHUSDT"}
    assert all(not holes(v) for v in ids.values()), {k: holes(v) for k, v in ids.items()}
    assert "GapDetected" not in {type(o).__name__ for _, o in run.outputs()}


@pytest.mark.parametrize("exchange", ["sim", "kraken"])
async def test_a_closed_connection_takes_its_books_off_the_air_until_proven_current(
    tmp_path: Path, exchange: str
) -> None:
    """Issue 14: between a close and the proof that a book is current again (Binance: the next
    connection's first diff chains onto the kept book, else a resync's snapshot; Kraken, a
    resubscribing venue: the new subscription's snapshot) the book is never published."""

    async def script(s: Simulator, cap: Capture, marks: dict[str, int]) -> None:
        await settle(s, cap, marks)
        s.inject("close")
        await until(lambda: cap.status.reconnects >= 1)
        await until(lambda: books_synced(cap))
        await trio.sleep(0.2)

    run = await capture(tmp_path, script, exchange=exchange, live=CALM)
    assert_zero_loss_and_sound(run)
    (close,) = run.of_kind("close", run.of_kind("open")[0].conn)
    assert close.code == 1011
    codec = get_codec(exchange)
    p = Pipeline(codec, standard_reducers(codec, OPTIONS))
    red = p.reducer("book")
    symbols = {"BTCUSDT", "ETHUSDT"}
    off: dict[str, Any] = {}  # symbol → its BookWithdrawn, while off the air
    back: dict[str, str] = {}  # symbol → what put it back on the air
    for f in run.frames[: run.frames.index(run.of_kind("close")[-1])]:  # until the stop
        outs = [o for _, o in p.feed(f.seq, f.recv_ns, f.conn, f.dir, f.kind, f.source,
                                     f.payload, f.code)]  # fmt: skip
        for o in outs:
            name = type(o).__name__
            if name == "BookWithdrawn":
                assert f.seq == close.seq and o.conn == close.conn
                off[o.symbol] = o
            elif o.symbol in off and name in ("BookSynced", "BookResumed"):
                back[o.symbol] = name
                del off[o.symbol]
        for sym in off:
            assert red.book(p.state("book"), sym) is None, (sym, f.seq)
    assert not off and set(back) == symbols, back  # each went off at the close and came back
    withdrawn = [o for _, o in run.outputs() if type(o).__name__ == "BookWithdrawn"]
    assert {o.symbol for o in withdrawn} == symbols
    # Binance keeps the book (the chain can prove it current); Kraken's resubscription
    # brings a snapshot, which is a resync
    assert all(o.kept == (exchange == "sim") for o in withdrawn)
    if exchange == "kraken":
        assert set(back.values()) == {"BookSynced"}


async def test_stale_connection_is_detected_and_replaced(tmp_path: Path) -> None:
    # kline_1m is pushed every 2 s: more than stale_after_s of silence, pings answered
    async def script(s: Simulator, cap: Capture, marks: dict[str, int]) -> None:
        await until(lambda: cap.status.errors["stale"] >= 1)
        await trio.sleep(0.3)

    live = {"stale_after_s": 0.8, "ping_interval_s": 0.2, "channels": ("kline_1m",)}
    run = await capture(tmp_path, script, live=live, reducers=False)
    assert_zero_loss_and_sound(run)
    first = run.of_kind("open")[0].conn
    (err,) = run.of_kind("error", first)
    assert err.payload.startswith(b"stale")
    last_data = max([f.recv_ns for f in run.inbound() if f.conn == first] + [run.frames[1].recv_ns])
    # not before the limit; after it within the watchdog's step (0.2 s) plus a margin for a
    # loaded machine, and before the next kline (2 s) would have made the stream live again
    assert 0.8 <= (err.recv_ns - last_data) / 1e9 < 0.8 + 0.2 + 0.8
    assert len(run.of_kind("open")) >= 2


async def test_1000_streams_by_subscribe_never_trip_the_control_rate_limit(tmp_path: Path) -> None:
    symbols = [f"S{i:03d}USDT" for i in range(200)]  # × 5 channels = 1000 streams

    async def script(s: Simulator, cap: Capture, marks: dict[str, int]) -> None:
        await until(lambda: cap.status.frames_out >= 10)
        await trio.sleep(0.5)  # the last replies

    live = {
        "symbols": tuple(s.lower() for s in symbols),
        "max_url_len": 300,  # a few streams in the URL, the rest by SUBSCRIBE
        "subscribe_chunk": 100,
        "ping_interval_s": 0.1,  # our pings compete for the same 5/s
        "ping_timeout_s": 1.0,
    }
    sim = {"symbols": symbols, "rate": None, "activity": 0.5}
    run = await capture(tmp_path, script, sim=sim, live=live, reducers=False)
    assert_zero_loss_and_sound(run)
    (conn,) = run.sim["connections"]
    assert conn["close_kind"] == "client_close" and len(conn["subscriptions"]) == 1000
    assert run.status.errors == Counter() and len(run.of_kind("open")) == 1
    subs = [json.loads(f.payload) for f in run.frames if f.dir == "out"]
    assert len(subs) == 10 and sum(len(m["params"]) for m in subs) <= 1000
    replies = [json.loads(f.payload) for f in run.inbound() if b'"result"' in f.payload]
    assert sorted(r["id"] for r in replies) == sorted(m["id"] for m in subs)
    assert all(r["result"] is None for r in replies)
    # our pings took turns with the SUBSCRIBEs in the limiter (at most 4 a second in all)
    assert conn["control_received"] > len(subs)


# --------------------------------------------------------------------------- policies


def test_backoff_is_capped_full_jitter_and_resets() -> None:
    b = Backoff(0.5, 4.0, random.Random(3))
    delays = [b.next_delay() for _ in range(8)]
    ceilings = [min(4.0, 0.5 * 2**i) for i in range(8)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[4:]) > 2.0  # full jitter over [0, cap], not stuck low
    b.reset()
    assert b.next_delay() <= 0.5


async def test_control_limiter_never_exceeds_the_rate_in_any_window(autojump_clock: Any) -> None:
    lim = ControlLimiter(4)
    times: list[float] = []

    async def sender() -> None:
        for _ in range(5):
            await lim.acquire()
            times.append(trio.current_time())

    async with trio.open_nursery() as n:
        for _ in range(4):
            n.start_soon(sender)
    assert len(times) == 20
    for i, t in enumerate(times):  # 4 in any window widened by the margin (1.25 s)
        assert sum(1 for u in times[i:] if u - t < 1.25) <= 4
    assert times[-1] - times[0] <= 5.0 + 1e-6  # and it does not dawdle: 4 windows


async def test_weight_budget_waits_for_weight_to_leave_the_minute(autojump_clock: Any) -> None:
    budget = WeightBudget(10)
    times: list[float] = []
    for w in (4, 4, 4, 50, 1):
        await budget.acquire(w)
        times.append(trio.current_time())
    t0 = times[0]
    # 4+4 fit; the 3rd waits for the 1st to leave; the heavy one takes a whole (empty) minute
    assert [round(t - t0, 6) for t in times] == [0.0, 0.0, 60.0, 120.0, 180.0]


async def test_unreachable_exchange_is_retried_with_backoff(tmp_path: Path) -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = LiveConfig(ws_url=f"ws://127.0.0.1:{port}", **LIVE)
    cap = Capture(cfg, JournalWriter.create(tmp_path / "j", {"exchange": "sim"}), get_codec("sim"))
    async with trio.open_nursery() as n:
        await n.start(cap.run)
        await trio.sleep(1.0)
        cap.stop()
    errors = [f for f in JournalReader(tmp_path / "j").frames() if f.kind == "error"]
    assert len(errors) >= 3 and all(b"connect_failed" in f.payload for f in errors)
    assert cap.status.errors["connect_failed"] == len(errors) and cap.status.connects == 0
    assert verify_journal(tmp_path / "j")[0] == []


# --------------------------------------------------------------------------- SIGTERM


def test_engine_run_sigterm_leaves_a_sealed_verifiable_journal(tmp_path: Path) -> None:
    jdir = tmp_path / "j"
    engine = [sys.executable, "-m", "engine.cli"]
    proc = subprocess.Popen(
        [*engine, "run", "--duration", "30", "--journal", str(jdir), "--no-dashboard"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(jdir.glob("seg-*")):
            time.sleep(0.1)
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        t = time.monotonic()
        out, err = proc.communicate(timeout=20)
        stopped_in = time.monotonic() - t
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert stopped_in < 10.0, stopped_in  # the close handshake is bounded (2 s), not 60 s
    assert "Traceback" not in err
    assert not list(jdir.glob("*.partial")) and list(jdir.glob("seg-*.arrows"))
    summary = json.loads(out[out.index("{") :])
    assert summary["frames_in"] > 0 and summary["simulator_frames_sent"] == summary["frames_in"]
    verify = subprocess.run(
        [*engine, "journal", "verify", str(jdir)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def test_the_watchdog_judges_staleness_only_at_a_wake_up_that_came_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A process that did not run for a while (a loaded machine) may have data waiting unread:
    a late wake-up gives the reader one more step instead of closing the connection on it;
    a connection that stays silent is still stale, one step later."""
    from engine.live.conn import Conn
    from engine.live.errors import StaleConnection
    from engine.live.liveness import watchdog

    c = Conn(id=1, shard=0, url="ws://x", streams=[], url_streams=0)

    async def stall_then_data() -> None:
        await trio.sleep(0.05)
        autojump_clock.jump(5.0)  # the process stalls for 5 s: the deadline passes unseen
        await trio.sleep(0.1)  # the reader's turn: the data waiting in the socket is journaled
        c.frames += 1

    t0 = trio.current_time()
    stale_at = None
    async with trio.open_nursery() as n:
        n.start_soon(stall_then_data)
        try:
            await watchdog(c, 0.8)
        except StaleConnection:
            stale_at = trio.current_time()
    # not at the late wake-up (t0 + 5.05): the frame counted; stale 0.8 s after it, on time
    assert stale_at is not None and stale_at - t0 >= 5.0 + 0.8, stale_at
