"""Live outputs == replay outputs: captures from the embedded simulator, clean and with every fault.

Each capture runs :class:`engine.live.capture.Capture` in-process against a real
:class:`engine.sim.server.SimServer` on 127.0.0.1 (port 0) until the books
synced and verified and the injected fault was seen and answered (waiting on
the capture's counters, never for a fixed time: the machine may be loaded),
with the :class:`engine.journal.recorder.OutputRecorder` recording what the pipeline
produced live and a :class:`CheckpointWriter` checkpointing live state.  Then
``engine replay --check`` (library and CLI) must find every recorded output
reproduced, in order, frame seq for frame seq.  A tampered outputs stream
must fail the check naming the first differing frame seq.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from engine import serde
from engine.assembly import standard_reducers
from engine.codecs.registry import get_codec
from engine.journal.reader import JournalReader
from engine.journal.recorder import OUTPUTS_DIR, OutputRecorder, read_outputs
from engine.journal.schema import Dir, Kind
from engine.journal.writer import JournalWriter
from engine.live.capture import Capture
from engine.live.config import LiveConfig
from engine.replay.check import check
from engine.replay.checkpoints import CheckpointPolicy, CheckpointWriter, list_checkpoints
from engine.replay.cli import replay as replay_cmd
from engine.replay.replay import state_at
from engine.sim.cli import open_simulator
from engine.sim.server import FAULTS
from tests.test_live import books_synced, fault_seen, until, verifications

#: verification snapshots every 0.4 s of journal time, so drift is found within a short capture
OPTIONS = {"verify_interval_s": 0.4}


async def _capture(journal: Path, fault: str | None, seed: int) -> dict:
    async with open_simulator(
        seed=seed, rate=400, tick=0.005, close_timeout=0.5, stall_duration=2.0, shutdown_grace=0.2
    ) as sim:
        cfg = LiveConfig(
            exchange="sim",
            ws_url=sim.ws_url,
            rest_url=sim.rest_url,
            ping_interval_s=0.2,
            ping_timeout_s=0.3,
            # well above ping interval + timeout: a stall is found by the pinger, not as stale
            stale_after_s=1.5,
            backoff_base_s=0.05,
            backoff_cap_s=0.1,
            connect_timeout_s=2,
            disconnect_timeout_s=5.0,  # takes ms; the bound only matters on a starved machine
            snapshot_limit=100,
        )
        codec = get_codec("sim")
        writer = JournalWriter.create(
            journal, {"exchange": "sim", "symbols": list(cfg.symbols), "pipeline": OPTIONS}
        )
        ckpt = CheckpointWriter(journal, writer.metadata, CheckpointPolicy(every_frames=40))
        cap = Capture(
            cfg,
            writer,
            codec,
            standard_reducers(codec, OPTIONS),
            recorder=OutputRecorder(journal),
            checkpointer=ckpt,
        )
        async with trio.open_nursery() as n:
            await n.start(cap.run)
            # wait for what must have happened, never for a fixed time: a loaded machine is slow
            await until(lambda: _synced_and_verified(cap) and books_synced(cap))
            if fault is not None:
                verified = verifications(cap)
                sim.inject(fault)
                await until(lambda: fault_seen(fault, cap, verified))
            await trio.sleep(0.3)
            cap.stop()
        return {"status": cap.status, "sim": sim.stats()}


def _synced_and_verified(cap: Capture) -> bool:
    outs = cap.status.outputs
    return outs["BookSynced"] >= 2 and outs["BookVerified"] >= 1 and outs["TradeStats"] >= 1


def capture(journal: Path, fault: str | None = None, seed: int = 3) -> dict:
    return trio.run(_capture, journal, fault, seed)


def local_kinds(journal: Path) -> Counter:
    return Counter(f.kind for f in JournalReader(journal, dirs=[Dir.LOCAL]).frames())


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("det") / "clean"
    capture(d)
    return d


# --------------------------------------------------------------------------- identical


def test_clean_capture_replays_identically(clean: Path) -> None:
    mismatch, n = check(clean)
    assert mismatch is None
    recorded = list(read_outputs(clean))
    assert n == len(recorded) > 5
    kinds = Counter(o["type"] for _, o in recorded)
    assert kinds["BookSynced"] == 2 and kinds["BookVerified"] >= 1 and kinds["TradeStats"] >= 1


def test_check_cli_subprocess_exits_0_on_identical(clean: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "engine.cli", "replay", str(clean), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    n = len(list(read_outputs(clean)))
    assert p.stdout.strip() == f"OK: replay reproduced all {n} recorded outputs of {clean}"


# what each fault must have left in the journal/outputs, so the test proves it happened
def _evidence(fault: str, journal: Path, status, outputs: Counter) -> None:
    local = local_kinds(journal)
    if fault in ("drop", "close"):
        assert local[Kind.CLOSE] + local[Kind.ERROR] >= 1 and status.reconnects >= 1
    elif fault == "stall":
        assert status.errors["stalled"] >= 1
    elif fault == "garbage":
        assert status.decode_errors == 4
    elif fault == "gap":
        assert outputs["GapDetected"] >= 1
    elif fault == "shutdown":
        assert status.rotations >= 1 and outputs["RotateRequest"] >= 1
    elif fault == "drift":
        # >= 1: the drifted snapshot is adopted, so the next honest one may report drift back
        assert outputs["DriftDetected"] >= 1


@pytest.mark.parametrize("fault", FAULTS)
def test_every_fault_kind_replays_identically(tmp_path: Path, fault: str) -> None:
    d = tmp_path / fault
    got = capture(d, fault)
    outputs = Counter(o["type"] for _, o in read_outputs(d))
    _evidence(fault, d, got["status"], outputs)
    mismatch, n = check(d)
    assert mismatch is None, mismatch
    assert n == sum(outputs.values()) > 0
    res = CliRunner().invoke(replay_cmd, [str(d), "--check"])
    assert res.exit_code == 0 and res.output.startswith("OK:")


def test_live_checkpoints_restore_the_replayed_state(clean: Path) -> None:
    infos = list_checkpoints(clean)
    assert len(infos) >= 3
    deep = infos[-1]
    for at in (infos[0].max_recv_ns, deep.max_recv_ns, deep.max_recv_ns + 50_000_000):
        fast, used, _ = state_at(clean, at)
        slow, none, _ = state_at(clean, at, use_checkpoints=False)
        assert used is not None and none is None
        assert fast.snapshot() == slow.snapshot()


# --------------------------------------------------------------------------- tampered


def _rewrite_outputs(src: Path, dst: Path, edit) -> None:
    """Copy journal ``src`` to ``dst`` with its outputs stream passed through ``edit(list)``."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(OUTPUTS_DIR, "checkpoints"))
    rows = []
    for batch in JournalReader(src / OUTPUTS_DIR).batches():
        rows += zip(
            batch.column("recv_ns").to_pylist(),
            batch.column("source").dictionary_decode().to_pylist(),
            batch.column("payload").to_pylist(),
            strict=True,
        )
    rows = edit(rows)
    w = JournalWriter.create(dst / OUTPUTS_DIR, JournalReader(src / OUTPUTS_DIR).metadata)
    for recv_ns, source, payload in rows:
        w.append(recv_ns, 0, Dir.LOCAL, Kind.MARKER, source, payload)
    w.close()


def test_tampered_output_fails_the_check_naming_the_frame(clean: Path, tmp_path: Path) -> None:
    recorded = list(read_outputs(clean))
    k = next(i for i, (_, o) in enumerate(recorded) if o["type"] == "TradeStats")
    seq = recorded[k][0]

    def bump_count(rows):
        recv, src, payload = rows[k]
        d = serde.loads_json(payload)
        d["output"]["count"] += 1
        rows[k] = (recv, src, serde.dumps_json(d))
        return rows

    bad = tmp_path / "tampered"
    _rewrite_outputs(clean, bad, bump_count)
    mismatch, n = check(bad)
    assert mismatch is not None and n == k and mismatch.seq == seq
    assert mismatch.recorded["count"] == mismatch.replayed["count"] + 1

    p = subprocess.run(
        [sys.executable, "-m", "engine.cli", "replay", str(bad), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1, p.stdout + p.stderr
    first = p.stdout.splitlines()[0]
    assert first.startswith(f"DIFFERENT: first difference at frame seq {seq} (output #{k}")
    assert '"count": ' in p.stdout.splitlines()[1] and "recorded" in p.stdout.splitlines()[1]
    assert "replayed" in p.stdout.splitlines()[2]
    assert "Traceback" not in p.stderr


def test_missing_and_extra_outputs_fail_the_check(clean: Path, tmp_path: Path) -> None:
    recorded = list(read_outputs(clean))
    short = tmp_path / "short"
    _rewrite_outputs(clean, short, lambda rows: rows[:-1])
    mismatch, n = check(short)
    assert mismatch is not None and mismatch.recorded is None and n == len(recorded) - 1
    assert mismatch.replayed_seq == recorded[-1][0]

    extra = tmp_path / "extra"
    _rewrite_outputs(clean, extra, lambda rows: rows + rows[-1:])
    mismatch, n = check(extra)
    assert mismatch is not None and mismatch.replayed is None and n == len(recorded)
    res = CliRunner().invoke(replay_cmd, [str(extra), "--check"])
    assert res.exit_code == 1 and "(none: that side ended)" in res.output


def test_check_without_recorded_outputs_cannot_compare(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parent.parent / "fixtures" / "journals" / "binance-spot"
    res = CliRunner().invoke(replay_cmd, [str(src), "--check"])
    assert res.exit_code == 1  # a data failure, by the one exit-code rule (engine.cli)
    assert "no recorded outputs" in res.output and "Traceback" not in res.output
