"""Catalogs and capture sets in a bucket prefix, against a real S3 server (moto's, on 127.0.0.1).

What a desk does: push a few days of journals to ``s3://BUCKET/venue/date/``
(or let ``engine run --processes N --upload`` put a capture set there), then
replay, ``--check``, export and open the *prefix* — and get exactly what the
same catalog on disk gives.  The journals are found by one listing of the
prefix (no object read but a set's ``captureset.json``); workers of a real
``LocalCluster`` that were started without the endpoint get it from the
command.  Nothing is mocked: the uploads, the listing and the ranged reads
go through pyarrow's S3 client to the server.
"""

# ruff: noqa: F811 - the S3 fixtures are imported from tests/helpers/s3.py
from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import engine
from engine.cli import main as engine_cli
from engine.journal.captureset import SET_MANIFEST, holds_journals, journals_in, write_set
from engine.journal.location import RemotePath, counting_reads, s3_endpoint
from engine.journal.writer import WriterConfig
from engine.replay.catalog import JournalSet, member_name, replay_catalog, select
from engine.replay.checkpoints import CheckpointPolicy
from engine.replay.export import TABLES
from engine.replay.replay import Replay

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.s3 import KEYS, client, moto_server, s3_server  # noqa: E402,F401
from helpers.sim_journal import write_sim_journal  # noqa: E402

SPOT = Path(__file__).resolve().parent.parent / "fixtures" / "journals" / "binance-spot"
AT = "2024-01-01T00:00:50Z"  # inside every simulated day (60 s each)


def cli(*args: Any) -> SimpleNamespace:
    res = CliRunner().invoke(engine_cli, [str(a) for a in args])
    return SimpleNamespace(code=res.exit_code, out=res.stdout, err=res.stderr)


def ok(*args: Any) -> str:
    r = cli(*args)
    assert r.code == 0, r.out + r.err
    return r.out


def summaries(*args: Any) -> list[dict[str, Any]]:
    """``engine replay … --json`` of a catalog: each member's summary, without where and how fast."""
    doc = json.loads(ok("replay", *args, "--json"))
    return [{k: v for k, v in s.items() if k not in ("journal", "elapsed_s")}
            for s in doc["journals"]]  # fmt: skip


def sim_day(path: Path, seed: int, symbols: tuple[str, ...] = ("btcusdt", "ethusdt")) -> Path:
    """60 s of the simulator's market in a few sealed segments, checkpointed every 400 frames."""
    write_sim_journal(path, seed=seed, seconds=60, symbols=symbols,
                      config=WriterConfig(batch_frames=128, segment_bytes=16 << 10))  # fmt: skip
    Replay(path, checkpoints=CheckpointPolicy(every_frames=400, every_s=1e9)).run()
    return path


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog on disk: venue/date folders, one real Binance capture and two simulated days."""
    root = tmp_path_factory.mktemp("catalog") / "cat"
    shutil.copytree(SPOT, root / "binance" / "2021-10-12")
    sim_day(root / "sim" / "2024-01-01", seed=1)
    sim_day(root / "sim" / "2024-01-02", seed=2)
    return root


@pytest.fixture(scope="module")
def store(s3_server: str, local: Path) -> Iterator[SimpleNamespace]:
    """One bucket for the module, the catalog pushed to ``s3://B/cat/venue/date``, the env set."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in KEYS.items():
            mp.setenv(k, v)
        mp.setenv("AWS_ENDPOINT_URL", s3_server)
        name = f"cat-{uuid.uuid4().hex[:10]}"
        client(s3_server).create_bucket(Bucket=name)
        for j in journals_in(local):
            ok("journal", "push", j, f"s3://{name}/cat/{j.relative_to(local)}")
        yield SimpleNamespace(endpoint=s3_server, bucket=name, uri=f"s3://{name}/cat/")


def test_a_prefix_is_listed_once_into_the_folders_journals(local: Path, store) -> None:
    with counting_reads() as io:
        found = journals_in(store.uri)
    assert io.bytes_read == 0  # listed, not read: no object was opened to find them
    names = [member_name(p, engine.journal.location.as_path(store.uri)) for p in found]
    assert names == ["binance/2021-10-12", "sim/2024-01-01", "sim/2024-01-02"]
    assert names == [str(p.relative_to(local)) for p in journals_in(local)]
    assert holds_journals(store.uri) and holds_journals(store.uri + "sim")
    assert not holds_journals(store.uri + "sim/2024-01-01")  # one journal (its outputs/ is not one)
    assert [m.name for m in select(store.uri + "sim", symbols=["ethusdt"])[0]] == [
        "2024-01-01", "2024-01-02"]  # fmt: skip


NAMES = st.sampled_from(["a", "b", "2024-01-01", "venue=x", ".hidden", "outputs", "seg-dir"])
TREES = st.recursive(
    st.one_of(
        st.tuples(st.just("journal"), st.booleans()),  # with an outputs/ journal inside, or not
        st.tuples(st.just("segments"), st.just(None)),  # a journal before its first seal
        st.tuples(st.just("set"), st.integers(1, 3)),
        st.tuples(st.just("file"), st.just(None)),
    ),
    lambda kids: st.tuples(st.just("dir"), st.dictionaries(NAMES, kids, max_size=3)),
    max_leaves=8,
)


def _lay_out(d: Path, node: tuple[str, Any]) -> None:
    kind, arg = node
    if kind == "file":
        d.parent.mkdir(parents=True, exist_ok=True)
        d.write_text("not a journal")
        return
    d.mkdir(parents=True, exist_ok=True)
    if kind == "journal":
        (d / "journal.json").write_text("{}")
        if arg:
            (d / "outputs").mkdir()
            (d / "outputs" / "journal.json").write_text("{}")
    elif kind == "segments":
        (d / "seg-000001.arrows.partial").write_bytes(b"")
    elif kind == "set":
        write_set(d, "sim", [[f"S{i}"] for i in range(arg)])
        for i in range(arg - 1):  # the last member not (yet) there: a set names it all the same
            _lay_out(d / f"shard-{i}", ("journal", True))
    else:
        for name, kid in arg.items():
            _lay_out(d / name, kid)


def _model(node: tuple[str, Any], at: str) -> list[str]:
    """The journals of a tree as the guide defines them, naively."""
    kind, arg = node
    if kind in ("journal", "segments"):
        return [at]
    if kind == "set":
        return [f"{at}/shard-{i}".lstrip("/") for i in range(arg)]
    if kind == "file":
        return []
    kids = sorted((n, k) for n, k in arg.items() if not n.startswith("."))
    return [j for n, k in kids for j in _model(k, f"{at}/{n}".lstrip("/"))]


@given(tree=TREES)
def test_one_listing_finds_the_journals_the_folder_walk_finds(tree: tuple[str, Any]) -> None:
    """Any tree of journals, sets, folders and stray files: the listing's walk, the disk's, the rule."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        _lay_out(root, tree)
        on_disk = [str(p.relative_to(root)) for p in journals_in(root)]
        listed = journals_in(RemotePath(pafs.LocalFileSystem(), str(root), "file"))
        assert [p.key[len(str(root)) + 1 :] or "." for p in listed] == on_disk
        assert on_disk == [j or "." for j in _model(tree, "")]


def test_replay_check_and_verify_of_the_prefix_equal_the_local_catalog(local: Path, store) -> None:
    assert summaries(store.uri) == summaries(local)
    assert summaries(store.uri, "--symbols", "ethusdt", "--to", AT) == summaries(
        local, "--symbols", "ethusdt", "--to", AT)  # fmt: skip
    check = ok("replay", store.uri, "--check")
    assert check.count("OK: ") == 3 and check == ok("replay", local, "--check")
    verify = ok("journal", "verify", store.uri)
    assert verify.count(f"OK s3://{store.bucket}/cat/") == 3
    inspect = ok("journal", "inspect", store.uri)
    assert inspect.count("journal   s3://") == 3


def _table(out: Path, name: str) -> pa.Table:
    t = ds.dataset(out / f"table={name}", format="parquet", partitioning="hive")
    table = t.to_table(columns=[*TABLES[name].names, "symbol", "__filename"])
    files = pc.replace_substring(table.column("__filename"), f"{out}/", "")  # the member's file
    table = table.set_column(table.schema.get_field_index("__filename"), "file", files)
    keys = [
        f.name for f in table.schema if f.name not in ("date",) and not pa.types.is_nested(f.type)
    ]
    return table.sort_by([(c, "ascending") for c in keys])


def test_export_of_the_prefix_is_the_local_catalogs_one_dataset(
    local: Path, store, tmp_path
) -> None:
    a, b = tmp_path / "from-s3", tmp_path / "from-disk"
    assert "from 3 journals into one dataset" in ok("export", store.uri, "--out", a)
    ok("export", local, "--out", b)
    doc_a, doc_b = (json.loads((d / "export.json").read_text()) for d in (a, b))
    assert doc_a["rows"] == doc_b["rows"] and doc_a["rows"]["trades"] > 0
    assert [m["tag"] for m in doc_a["members"]] == [m["tag"] for m in doc_b["members"]]
    for name in TABLES:  # file names carry the member: the same in both
        assert _table(a, name).equals(_table(b, name)), name


def test_engine_open_of_the_prefix_is_a_journal_set(local: Path, store) -> None:
    remote, disk = engine.open(store.uri), engine.open(local)
    assert isinstance(remote, JournalSet) and list(remote.members) == list(disk.members)
    assert remote.symbols == disk.symbols
    assert (
        remote.book_at("ETHUSDT", AT, depth=3).summary
        == disk.book_at("ETHUSDT", AT, depth=3).summary
    )
    assert list(remote.replay()) == list(disk.replay())  # output for output, member after member
    assert list(remote.replay(symbols="NKNUSDT")) == list(disk.replay(symbols="NKNUSDT"))


def test_a_capture_set_at_a_uri_reads_as_on_disk(store, tmp_path: Path) -> None:
    """The layout ``engine run --processes 2 --upload URI`` ships: URI/shard-k/ and URI/captureset.json."""
    s = tmp_path / "set"
    write_set(s, "sim", [["BTCUSDT"], ["ETHUSDT"]], created_ns=1)
    sim_day(s / "shard-0", seed=3, symbols=("btcusdt",))
    sim_day(s / "shard-1", seed=3, symbols=("ethusdt",))
    uri = f"s3://{store.bucket}/sets/sim-2024-01-01"
    for shard in ("shard-0", "shard-1"):
        ok("journal", "push", s / shard, f"{uri}/{shard}")
    key = f"sets/sim-2024-01-01/{SET_MANIFEST}"
    client(store.endpoint).put_object(
        Bucket=store.bucket, Key=key, Body=(s / SET_MANIFEST).read_bytes()
    )

    with counting_reads() as io:
        found = journals_in(uri)
    assert [str(p) for p in found] == [f"{uri}/shard-0", f"{uri}/shard-1"]
    assert io.bytes_read == (s / SET_MANIFEST).stat().st_size  # the set manifest, nothing else
    j = engine.open(uri)
    assert isinstance(j, JournalSet) and list(j.members) == ["shard-0", "shard-1"]
    assert j.journal("ethusdt") is j.members["shard-1"]
    assert summaries(uri) == summaries(s)
    book = json.loads(ok("book", uri, "--symbol", "ETHUSDT", "--at", AT, "--json"))
    alone = json.loads(ok("book", s / "shard-1", "--symbol", "ETHUSDT", "--at", AT, "--json"))
    assert book["book"] == alone["book"] and book["last_seq"] == alone["last_seq"]
    assert ok("replay", uri, "--check").count("OK: shard-") == 2


def test_workers_started_without_the_endpoint_get_the_commands(
    local: Path, store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real LocalCluster whose workers' environment names no endpoint: ``--s3-endpoint`` reaches them."""
    import os

    from engine.replay.parallel import dask_client

    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    with dask_client(workers=2) as c:
        assert set(c.run(lambda: os.environ.get("AWS_ENDPOINT_URL")).values()) == {None}
        on = ("--scheduler", c.scheduler.address, "--s3-endpoint", store.endpoint)
        par = summaries(store.uri, *on)
        for s in par:
            assert s.pop("parallel")["checkpoint_mismatches"] == []
        ser = summaries(local)
        for s in ser:
            s.pop("parallel")
        assert par == ser
        assert any(s["frames_folded"] > 0 for s in par)
        with s3_endpoint(store.endpoint):  # the Python API: outputs, one by one, as each alone
            done = replay_catalog(select(store.uri)[0], client=c, workers=2, collect=True)
        for m, _plan, merged in done:
            alone = Replay(local / m.name)
            assert merged.outputs == list(alone.outputs()), m.name
            assert merged.pipeline.snapshot() == alone.pipeline.snapshot()
        out = tmp_path / "par"
        assert "from 3 journals" in ok("export", store.uri, "--out", out, *on)
        ok("export", local, "--out", tmp_path / "ser")
        for name in TABLES:
            assert _table(out, name).equals(_table(tmp_path / "ser", name)), name


def test_what_the_store_refuses_is_one_line(store, tmp_path: Path, monkeypatch) -> None:
    s3 = client(store.endpoint)
    s3.put_object(Bucket=store.bucket, Key="junk/notes.txt", Body=b"no journal here")
    s3.put_object(Bucket=store.bucket, Key="junk/deeper/data.csv", Body=b"a,b\n")
    for uri, words in (
        (f"s3://{store.bucket}/nothing-here/", "no such prefix (nothing stored under it)"),
        (f"s3://{store.bucket}/junk/", "no journal"),  # there, nor in its folders
        ("s3://no-such-bucket-at-all/cat/", "bucket no-such-bucket-at-all does not exist"),
    ):
        out = tmp_path / "x"
        for cmd in (["replay", "U"], ["replay", "U", "--check"], ["export", "U", "--out", out],
                    ["journal", "verify", "U"], ["engine-open"]):  # fmt: skip
            if cmd == ["engine-open"]:
                with pytest.raises(Exception, match=re.escape(words)):
                    engine.open(uri)
                continue
            r = cli(*[uri if a == "U" else a for a in cmd])
            assert r.code == 1, (cmd, r.out, r.err)
            assert words in r.err + r.out and len((r.err + r.out).strip().splitlines()) == 1, cmd
        assert not out.exists()
    # a store that checks credentials (moto's, with authentication on) refuses unknown keys
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")
    with moto_server() as strict:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
        r = cli("replay", f"s3://{store.bucket}/cat/", "--s3-endpoint", strict)
        assert r.code == 1 and len((r.err + r.out).strip().splitlines()) == 1, r.out + r.err
        assert "credentials" in r.err + r.out  # S3 answers a HEAD with a bare 403
