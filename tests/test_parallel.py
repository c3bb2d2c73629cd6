"""Parallel replay and export on a real Dask LocalCluster of processes, against serial runs.

One cluster of two worker processes serves the whole module.  What is proved:
a journal cut at its checkpoints and folded slice by slice on the workers
gives the serial replay's outputs, output for output, and its final state,
and every checkpoint is reached exactly (a wrong one is caught and named); a
catalog of journals exported on the workers is one hive-partitioned dataset
whose rows are each member's serial export; a capture set made by ``engine
run --processes 2`` verifies, replays and ``--check``s per shard.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner

from engine import serde
from engine.cli import main as engine_cli
from engine.journal.reader import JournalReader
from engine.journal.writer import JournalWriter, WriterConfig
from engine.replay.catalog import Member, export_catalog, replay_catalog, select
from engine.replay.checkpoints import CheckpointPolicy, list_checkpoints, load_checkpoint
from engine.replay.export import TABLES, export_journal
from engine.replay.parallel import dask_client, merge, plan_slices, run_slices
from engine.replay.replay import Replay

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.sim_journal import write_sim_journal  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPOT = ROOT / "fixtures" / "journals" / "binance-spot"
FUTURES = ROOT / "fixtures" / "journals" / "binance-futures"


@pytest.fixture(scope="module")
def client():
    with dask_client(workers=2) as c:
        yield c


def with_checkpoints(src: Path, dst: Path, every_frames: int) -> Path:
    """A copy of ``src`` with checkpoints every ``every_frames`` frames (as --save-checkpoints)."""
    shutil.copytree(src, dst)
    Replay(dst, checkpoints=CheckpointPolicy(every_frames=every_frames)).run()
    return dst


@pytest.fixture(scope="module")
def long_journal(tmp_path_factory) -> Path:
    """A simulated capture of 150 s (candles close, books sync) with 5 checkpoints inside."""
    d = tmp_path_factory.mktemp("par")
    write_sim_journal(d / "raw", seconds=150)
    return with_checkpoints(d / "raw", d / "sim", every_frames=500)


def engine(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in a process of its own (a capture; a command that starts its own cluster)."""
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def cli(*args: str) -> SimpleNamespace:
    """A reading command in this process (no interpreter start-up): its status and both streams."""
    res = CliRunner().invoke(engine_cli, [str(a) for a in args])
    return SimpleNamespace(returncode=res.exit_code, stdout=res.stdout, stderr=res.stderr)


# =============================================================== one journal, by slices


def test_slices_on_workers_give_the_serial_replay(client, long_journal: Path) -> None:
    serial = Replay(long_journal)
    want = list(serial.outputs())
    assert len(list_checkpoints(long_journal)) >= 3 and len(want) > 100
    for tasks in (2, 5):
        plan = plan_slices(long_journal, tasks=tasks)
        assert plan.serial_reason is None and len(plan.slices) == tasks
        m = merge(run_slices(plan.slices, client, collect=True))
        assert m.outputs == want
        assert m.pipeline.snapshot() == serial.pipeline.snapshot()
        assert m.frames == serial.frames
        assert [seq for seq, _ in m.checked] == [c.last_seq for c in list_checkpoints(long_journal)]
        assert m.consistent


def test_a_window_is_the_serial_replay_of_that_window(client, long_journal: Path) -> None:
    span = JournalReader(long_journal)
    recv = pa.concat_arrays([b.column(1) for b in span.batches()])
    lo, hi = recv[len(recv) * 3 // 10].as_py(), recv[len(recv) * 7 // 10].as_py()
    serial = Replay(long_journal, start_ns=lo, end_ns=hi, use_checkpoints=False)
    want = list(serial.outputs())
    plan = plan_slices(long_journal, tasks=4, start_ns=lo, end_ns=hi)
    assert plan.slices[0].start is not None  # the frames before --from were not folded again
    m = merge(run_slices(plan.slices, client, collect=True, start_ns=lo, end_ns=hi))
    assert want and m.outputs == want
    assert m.pipeline.snapshot() == serial.pipeline.snapshot()
    assert m.decode_errors.count == serial.decode_errors.count


def test_a_checkpoint_the_fold_does_not_reach_is_named(client, long_journal, tmp_path) -> None:
    j = tmp_path / "j"
    shutil.copytree(long_journal, j)
    victim = list_checkpoints(j)[1]
    doc = load_checkpoint(victim.path)
    doc["pipeline"]["counters"]["events"] += 1  # restorable, but not the fold's state
    with pa.CompressedOutputStream(str(victim.path), "zstd") as f:
        f.write(serde.dumps_json(doc))
    m = merge(run_slices(plan_slices(j, tasks=5).slices, client))
    bad = [seq for seq, ok in m.checked if not ok]
    # named; the slice restored from it carries its error on to the next checkpoint
    assert bad[0] == victim.last_seq and all(ok for seq, ok in m.checked if seq < bad[0])
    p = cli("replay", j, "--scheduler", client.scheduler.address)
    assert p.returncode == 1
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and f"checkpoint(s) at seq {victim.last_seq}" in err[0], p.stderr


def test_without_checkpoints_it_says_so_and_replays_serially(client, tmp_path: Path) -> None:
    j = tmp_path / "f"
    shutil.copytree(FUTURES, j)
    plan = plan_slices(j, tasks=4)
    assert len(plan.slices) == 1 and "no checkpoints" in (plan.serial_reason or "")
    assert merge(run_slices(plan.slices, client, collect=True)).outputs == list(Replay(j).outputs())
    # asked to, it writes them (serially) so that the next run is cut at them
    p = cli("replay", j, "--workers", "2", "--save-checkpoints", "--checkpoint-frames", "300")
    assert p.returncode == 0 and "no checkpoints: replaying serially" in p.stderr, p.stderr
    assert len(plan_slices(j, tasks=4).slices) == 4


def test_cli_workers_summary_equals_the_serial_one(long_journal: Path) -> None:
    serial = json.loads(cli("replay", long_journal, "--json", "--symbols", "ethusdt").stdout)
    p = engine("replay", long_journal, "--json", "--symbols", "ethusdt", "--workers", "2")
    assert p.returncode == 0, p.stderr
    par = json.loads(p.stdout)
    assert par.pop("parallel")["checkpoints_matched"] == len(list_checkpoints(long_journal))
    for doc in (serial, par):
        doc.pop("elapsed_s")
    assert par == serial and list(par["symbols"]) == ["ETHUSDT"]


def test_a_failing_worker_is_one_error_line(client, tmp_path: Path) -> None:
    # several segments; a byte flipped inside the first (past what opening a journal reads)
    j = tmp_path / "j"
    src = JournalReader(SPOT)
    with JournalWriter.create(j, dict(src.metadata), WriterConfig(batch_frames=8,
                              segment_bytes=12_000, compact_on_seal=False)) as w:  # fmt: skip
        for f in src.frames():
            w.append(f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
    first = j / "seg-000001.arrows"
    raw = bytearray(first.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    first.write_bytes(bytes(raw))
    p = cli("replay", j, "--scheduler", client.scheduler.address)
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1 and "seg-000001.arrows" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


# =============================================================== many journals


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, long_journal: Path) -> Path:
    """venue/date folders: two real Binance captures and a simulated one (checkpointed)."""
    root = tmp_path_factory.mktemp("catalog")
    shutil.copytree(SPOT, root / "binance" / "2021-10-12")
    shutil.copytree(FUTURES, root / "binance-futures" / "2021-07-22")
    shutil.copytree(long_journal, root / "sim" / "day-1")
    return root


def test_a_catalog_replays_on_workers_as_each_journal_alone(client, catalog: Path) -> None:
    members, left = select(catalog)
    assert [m.name for m in members] == ["binance/2021-10-12", "binance-futures/2021-07-22",
                                         "sim/day-1"] and not left  # fmt: skip
    done = replay_catalog(members, client=client, workers=2, collect=True)
    for m, _plan, merged in done:
        alone = Replay(m.path)
        assert merged.outputs == list(alone.outputs()), m.name
        assert merged.pipeline.snapshot() == alone.pipeline.snapshot()


def _rows(out: Path, name: str, tag: str | None = None) -> pa.Table:
    t = ds.dataset(out / f"table={name}", format="parquet", partitioning="hive")
    table = t.to_table(columns=[*TABLES[name].names, "symbol", "__filename"])
    if tag is not None:
        keep = pc.match_substring(table.column("__filename"), f"/part-{tag}-")
        table = table.filter(keep)
    table = table.drop_columns(["__filename"])
    keys = [f.name for f in table.schema if f.name != "date" and not pa.types.is_nested(f.type)]
    return table.sort_by([(c, "ascending") for c in keys])


def test_a_catalog_exports_in_parallel_into_one_dataset(client, catalog, tmp_path) -> None:
    members, _ = select(catalog)
    par = export_catalog(members, tmp_path / "par", client=client)
    ser = export_catalog(members, tmp_path / "ser")  # the same, here, one after the other
    assert ser.rows == par.rows
    for name in TABLES:
        assert _rows(tmp_path / "par", name).equals(_rows(tmp_path / "ser", name)), name
    # each member's rows are its own export's, found by the member in the file name
    for m, listed in zip(members, par.members, strict=True):
        alone = tmp_path / f"alone-{listed['tag']}"
        res = export_journal(m.path, alone)
        assert listed["rows"] == res.rows
        for name in TABLES:
            assert _rows(tmp_path / "par", name, listed["tag"]).equals(_rows(alone, name)), name
    assert par.rows["trades"] == sum(x["rows"]["trades"] for x in par.members) > 0


def test_engine_export_of_a_catalog_reads_in_one_call(client, catalog, tmp_path) -> None:
    out = tmp_path / "out"
    p = cli("export", catalog, "--out", out, "--scheduler", client.scheduler.address)
    assert p.returncode == 0, p.stderr
    assert "from 3 journals into one dataset" in p.stdout
    doc = json.loads((out / "export.json").read_text())
    want = doc["rows"]["book_diffs"]
    assert want == sum(m["rows"]["book_diffs"] for m in doc["members"]) > 0
    n = ds.dataset(out / "table=book_diffs", format="parquet", partitioning="hive").count_rows()
    assert n == want
    duckdb = pytest.importorskip("duckdb")
    q = f"SELECT count(*) FROM read_parquet('{out}/table=book_diffs/**/*.parquet', hive_partitioning=true)"
    assert duckdb.sql(q).fetchall()[0][0] == want
    pl = pytest.importorskip("polars")
    df = pl.scan_parquet(f"{out}/table=book_diffs/**/*.parquet", hive_partitioning=True).collect()
    assert df.height == want and set(df["symbol"].unique()) >= {"SUSHIUSDT", "NKNUSDT", "BTCUSDT"}
    # the README's way to tell the journals apart: the member is in the file name
    q = (f"SELECT count(*) FROM read_parquet('{out}/table=book_diffs/**/*.parquet',"
         " hive_partitioning=true, filename=true) WHERE filename LIKE '%/part-binance_2021-10-12-%'")  # fmt: skip
    spot = next(m for m in doc["members"] if m["name"] == "binance/2021-10-12")
    assert duckdb.sql(q).fetchall()[0][0] == spot["rows"]["book_diffs"] > 0
    files = pl.scan_parquet(f"{out}/table=book_diffs/**/*.parquet", hive_partitioning=True,
                            include_file_paths="file").collect()["file"]  # fmt: skip
    assert files.str.contains("/part-binance_2021-10-12-").sum() == spot["rows"]["book_diffs"]
    # one member alone, asked by symbol: only the journal holding it
    p = cli("export", catalog, "--out", tmp_path / "one", "--symbols", "nknusdt")
    assert p.returncode == 0 and "skipped binance-futures/2021-07-22" in p.stderr, p.stderr


# =============================================================== a sharded capture


def test_a_sharded_capture_verifies_replays_and_checks_per_shard(client, tmp_path) -> None:
    s = tmp_path / "set"
    p = engine("run", "--processes", "2", "--symbols", "btcusdt,ethusdt,shibusdt",
               "--duration", "2.5", "--checkpoint-every", "0.5", "--out", s)  # fmt: skip
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert [sh["symbols"] for sh in summary["shards"]] == [["BTCUSDT", "SHIBUSDT"], ["ETHUSDT"]]
    assert all(sh["exit_status"] == 0 for sh in summary["shards"])
    manifest = json.loads((s / "captureset.json").read_text())
    assert [m["journal"] for m in manifest["members"]] == ["shard-0", "shard-1"]
    v = cli("journal", "verify", s)
    assert v.returncode == 0 and v.stdout.count("OK ") == 2, v.stdout + v.stderr
    c = cli("replay", s, "--check", "--scheduler", client.scheduler.address)
    assert c.returncode == 0 and c.stdout.count("OK: shard-") == 2, c.stdout + c.stderr
    assert c.stdout == cli("replay", s, "--check").stdout  # per shard, with or without workers
    par = json.loads(cli("replay", s, "--json", "--scheduler", client.scheduler.address).stdout)
    for shard, doc in zip(["shard-0", "shard-1"], par["journals"], strict=True):
        alone = json.loads(cli("replay", s / shard, "--json").stdout)
        assert doc.pop("parallel")["checkpoint_mismatches"] == []
        for d in (doc, alone):
            d.pop("elapsed_s")
        assert doc == alone
    assert sum(d["frames"] for d in par["journals"]) == summary["journal_frames"] > 0
    for m in select(s)[0]:
        assert isinstance(m, Member) and m.exchange == "sim"
