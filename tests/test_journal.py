"""Journal round trips, torn tails, rotation, filters, corrupt and foreign files (real files)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.journal.inspect import verify_journal
from engine.journal.reader import JournalCorrupt, JournalReader, NotAJournal
from engine.journal.recovery import EOS, seal_partials
from engine.journal.schema import DIRS, KINDS, Frame
from engine.journal.writer import JournalExistsError, JournalWriter, WriterConfig

frames_st = st.lists(
    st.tuples(
        st.integers(0, 2**63 - 1),  # recv_ns
        st.integers(0, 2**32 - 1),  # conn
        st.sampled_from(DIRS),
        st.sampled_from(KINDS),
        st.sampled_from(["", "wss://a/stream?streams=x", "https://r/api?x=1", "ünï"]),
        st.binary(max_size=300),
        st.none() | st.integers(-(2**31), 2**31 - 1),
    ),
    max_size=60,
)


def write(path: Path, rows, config: WriterConfig | None = None) -> list[Frame]:
    out = []
    with JournalWriter.create(path, {"exchange": "test"}, config) as w:
        for recv_ns, conn, d, kind, source, payload, code in rows:
            seq = w.append(recv_ns, conn, d, kind, source, payload, code)
            out.append(Frame(seq, recv_ns, conn, d, kind, source, payload, code))
    return out


@given(
    rows=frames_st,
    batch=st.integers(1, 7),
    seg_bytes=st.sampled_from([1, 700, 1 << 20]),
    compact=st.booleans(),
)
def test_any_frames_round_trip(tmp_path_factory, rows, batch, seg_bytes, compact):
    path = tmp_path_factory.mktemp("j")
    config = WriterConfig(
        batch_frames=batch, segment_bytes=seg_bytes, compact_on_seal=compact, compact_rows=5
    )
    written = write(path, rows, config)
    r = JournalReader(path)
    assert list(r.frames()) == written
    assert r.tails == []
    assert [f.seq for f in written] == list(range(1, len(written) + 1))


def crash_image(src: Path, rows, batch: int) -> tuple[list[Frame], bytes, bytes]:
    """What a kill -9 leaves once every batch of ``rows`` was written: (frames, manifest, partial)."""
    out = []
    w = JournalWriter.create(src, {"exchange": "test"}, WriterConfig(batch_frames=batch))
    for recv_ns, conn, d, kind, source, payload, code in rows:
        seq = w.append(recv_ns, conn, d, kind, source, payload, code)
        out.append(Frame(seq, recv_ns, conn, d, kind, source, payload, code))
    w.flush()
    manifest = (src / "journal.json").read_bytes()
    partials = list(src.glob("seg-*.arrows.partial"))
    data = partials[0].read_bytes() if partials else b""
    w.close()
    return out, manifest, data


def _partial_copy(dst: Path, manifest: bytes, data: bytes) -> None:
    """dst := a crashed journal whose only segment is the open (partial) one holding ``data``."""
    dst.mkdir()
    (dst / "journal.json").write_bytes(manifest)
    (dst / "seg-000001.arrows.partial").write_bytes(data)


@settings(max_examples=25)
@given(rows=frames_st.filter(bool), batch=st.integers(1, 5), data=st.data())
def test_truncation_at_any_offset_yields_a_prefix(tmp_path_factory, rows, batch, data):
    src = tmp_path_factory.mktemp("src")
    written, manifest, image = crash_image(src, rows, batch)
    size = len(image)
    cuts = data.draw(st.lists(st.integers(0, size), min_size=1, max_size=8, unique=True))
    for cut in cuts:
        dst = tmp_path_factory.mktemp("cut")
        shutil.rmtree(dst)
        _partial_copy(dst, manifest, image[:cut])
        r = JournalReader(dst)
        got = list(r.frames())  # never raises
        assert got == written[: len(got)]
        # a cut inside the data drops at most the batch it cut
        assert len(got) >= len(written) - batch or cut < size
        if cut == size:
            assert got == written
        # recovery seals it into a journal that reads the same and continues seq
        state = seal_partials(dst)
        assert list(JournalReader(dst).frames()) == got
        assert state.last_seq == (got[-1].seq if got else 0)


def test_every_byte_offset_of_a_small_segment(tmp_path):
    """Exhaustive version of the property above for one journal: every offset, no exception."""
    rows = [(i, 1, "in", "text", "s", b"x" * (i % 9), None) for i in range(12)]
    written, manifest, image = crash_image(tmp_path / "src", rows, 4)
    lengths = set()
    dst = tmp_path / "cut"
    _partial_copy(dst, manifest, image)
    for cut in range(0, len(image) + 1):
        (dst / "seg-000001.arrows.partial").write_bytes(image[:cut])
        got = list(JournalReader(dst).frames())
        assert got == written[: len(got)]
        lengths.add(len(got))
    assert lengths == {0, 4, 8, 12}  # whole batches only


def test_rotation_seals_segments_and_resume_continues_seq(tmp_path):
    rows = [(i, 2, "in", "text", f"src{i % 3}", bytes([i % 256]) * 100, None) for i in range(500)]
    written = write(tmp_path, rows, WriterConfig(batch_frames=10, segment_bytes=4000))
    segs = sorted(tmp_path.glob("seg-*"))
    assert len(segs) > 5 and all(s.name.endswith(".arrows") for s in segs)
    assert list(JournalReader(tmp_path).frames()) == written
    with JournalWriter.resume(tmp_path) as w:
        assert w.append(1, 1, "in", "text", "s", b"more") == 501
    assert [f.seq for f in JournalReader(tmp_path).frames()][-2:] == [500, 501]


def test_compaction_on_seal_makes_few_large_batches_with_the_same_frames(tmp_path):
    rows = [(i, 1, "in", "text", f"s{i % 5}", b'{"n":%d}' % i, None) for i in range(3000)]
    loose = write(tmp_path / "loose", rows, WriterConfig(batch_frames=2, compact_on_seal=False))
    tight = write(tmp_path / "tight", rows, WriterConfig(batch_frames=2))
    assert loose == tight
    assert list(JournalReader(tmp_path / "tight").frames()) == tight
    (seg,) = (tmp_path / "tight").glob("seg-*")
    assert seg.name.endswith(".arrows") and not list((tmp_path / "tight").glob("*.tmp"))
    assert len(list(JournalReader(tmp_path / "tight").batches())) == 1
    (loose_seg,) = (tmp_path / "loose").glob("seg-*")
    assert seg.stat().st_size * 4 < loose_seg.stat().st_size


def test_recovery_after_a_crash_mid_compaction(tmp_path):
    """Crash between writing seg.tmp and renaming it: the (closed) partial is still the truth."""
    rows = [(i, 1, "in", "text", "s", b"x%d" % i, None) for i in range(20)]
    written, manifest, image = crash_image(tmp_path / "src", rows, 3)
    j = tmp_path / "j"
    _partial_copy(j, manifest, image + EOS)
    (j / "seg-000001.arrows.tmp").write_bytes(b"half a compaction")
    assert list(JournalReader(j).frames()) == written
    state = seal_partials(j)
    assert state.removed == ["seg-000001.arrows.tmp"] and state.last_seq == 20
    assert list(JournalReader(j).frames()) == written
    assert verify_journal(j)[0] == []


def test_create_refuses_an_existing_journal(tmp_path):
    write(tmp_path, [])
    with pytest.raises(JournalExistsError, match="already holds a journal"):
        JournalWriter.create(tmp_path)


def test_filters(tmp_path):
    rows = [
        (100, 1, "local", "open", "wss://a", b"", None),
        (200, 1, "in", "text", "wss://a", b"t1", None),
        (300, 0, "in", "rest", "https://r?s=X", b"{}", 200),
        (400, 1, "in", "text", "wss://a", b"t2", None),
        (500, 1, "local", "close", "wss://a", b"bye", 1000),
    ]
    written = write(tmp_path, rows, WriterConfig(batch_frames=2))
    assert [f.payload for f in JournalReader(tmp_path, kinds={"text"}).frames()] == [b"t1", b"t2"]
    assert [f.seq for f in JournalReader(tmp_path, start_ns=200, end_ns=400).frames()] == [2, 3]
    assert [f.code for f in JournalReader(tmp_path, dirs={"local"}).frames()] == [None, 1000]
    assert list(JournalReader(tmp_path, sources={"https://r?s=X"}).frames()) == [written[2]]


@pytest.mark.parametrize("compact", [True, False])
def test_segments_are_plain_arrow_files_readable_by_pyarrow_and_polars(tmp_path, compact):
    rows = [(i, 1, "in", "text", f"s{i % 4}", b"p%d" % i, None) for i in range(50)]
    # the open segment is a plain IPC stream ...
    _, _, image = crash_image(tmp_path / "open", rows, 7)
    assert pa.ipc.open_stream(image).read_all().num_rows == 50
    assert pl.read_ipc_stream(image)["seq"].to_list() == list(range(1, 51))
    # ... a sealed one a plain IPC file (with its batch index in the footer)
    write(tmp_path / "j", rows, WriterConfig(batch_frames=7, compact_on_seal=compact))
    (seg,) = (tmp_path / "j").glob("seg-*.arrows")
    table = pa.ipc.open_file(seg).read_all()
    assert table.num_rows == 50
    assert table.column("source").to_pylist()[:5] == ["s0", "s1", "s2", "s3", "s0"]
    md = json.loads(table.schema.metadata[b"wiretape"])
    assert md["exchange"] == "test" and md["schema_version"] == 2
    df = pl.read_ipc(seg)
    assert df["payload"].to_list()[49] == b"p49"
    assert df["seq"].to_list() == list(range(1, 51))
    assert pl.scan_ipc(seg).select(pl.len()).collect().item() == 50
    assert ds.dataset(seg, format="ipc").to_table().num_rows == 50


def test_an_empty_open_segment_is_tolerated_and_removed_by_recovery(tmp_path):
    """The writer died right after creating its next segment: nothing was in it."""
    write(tmp_path, [(1, 1, "in", "text", "s", b"a", None)])
    (tmp_path / "seg-000002.arrows.partial").write_bytes(b"")
    assert [f.payload for f in JournalReader(tmp_path).frames()] == [b"a"]
    with JournalWriter.resume(tmp_path) as w:  # removes it, goes on in segment 2
        w.append(2, 1, "in", "text", "s", b"b")
    assert [f.payload for f in JournalReader(tmp_path).frames()] == [b"a", b"b"]
    assert [p.name for p in sorted(tmp_path.glob("seg-*"))] == [
        "seg-000001.arrows",
        "seg-000002.arrows",
    ]
    assert verify_journal(tmp_path)[0] == []


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_corrupt_and_foreign_files_give_clear_errors(tmp_path):
    good = tmp_path / "good"
    write(good, [(i, 1, "in", "text", "s", b"x" * 40, None) for i in range(30)])
    (good / "notes.txt").write_text("hello")
    r = run_cli("journal", "inspect", str(good))
    assert r.returncode == 0 and "ignored   notes.txt" in r.stdout

    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    (seg,) = bad.glob("seg-*.arrows")
    data = bytearray(seg.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = b"\xde\xad\xbe\xef" * 4
    seg.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="seg-000001.arrows"):
        list(JournalReader(bad).frames())
    for cmd in ("inspect", "verify"):
        r = run_cli("journal", cmd, str(bad))
        assert r.returncode != 0
        assert "Traceback" not in r.stderr
        assert "seg-000001.arrows" in r.stderr

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "seg-000001.arrows").write_bytes(b"this is not arrow at all")
    r = run_cli("journal", "verify", str(foreign))
    assert r.returncode == 1 and "not an Arrow IPC stream" in r.stderr
    assert "Traceback" not in r.stderr

    for target in (tmp_path / "missing", good / "notes.txt", tmp_path / "foreign" / ".."):
        r = run_cli("journal", "verify", str(target))
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr

    (good / "journal.json").write_text("{not json")
    with pytest.raises(JournalCorrupt, match="journal.json"):
        JournalReader(good)
    with pytest.raises(NotAJournal):
        JournalReader(tmp_path / "missing")


def test_inspect_json_counts(tmp_path):
    rows = [(i * 10**9, 1, "in", "text", "a" if i % 2 else "b", b"12345", None) for i in range(10)]
    write(tmp_path, rows)
    r = run_cli("journal", "inspect", "--json", str(tmp_path))
    d = json.loads(r.stdout)
    assert d["frames"] == 10 and d["payload_bytes"] == 50
    assert d["kinds"] == {"text": 10} and d["sources"] == {"a": 5, "b": 5}
    assert d["span_s"] == 9.0


def test_inspect_prints_the_exact_utc_span_truncated_to_ms(tmp_path):
    # a float of these ns rounds up to .124 s and 00:00:00.000 of the next day
    first, last = 1_704_067_205_123_999_999, 1_704_153_599_999_999_999
    write(tmp_path, [(t, 1, "in", "text", "a", b"x", None) for t in (first, last)])
    r = run_cli("journal", "inspect", str(tmp_path))
    (span,) = [line for line in r.stdout.splitlines() if line.startswith("span")]
    assert "2024-01-01T00:00:05.123Z → 2024-01-01T23:59:59.999Z" in span
