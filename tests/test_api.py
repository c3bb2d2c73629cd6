"""The Python API (``engine.open``): real fixture journals and a simulator journal, no mocks.

Each method is checked against an independent reading of the same journal
(pyarrow on the segment files, the replay and export functions, ``engine book``
in a subprocess), the filters against the window rule they document, and every
call against the promise that the journal directory stays byte-identical.
"""

from __future__ import annotations

import doctest
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine
import engine.replay.api as api
from engine import num, serde
from engine.book_reducer import BookSynced
from engine.candles import CandleClosed
from engine.events import BookSnapshot, DepthDiff, Trade
from engine.journal.reader import NotAJournal
from engine.journal.writer import JournalWriter
from engine.replay.checkpoints import CheckpointPolicy, list_checkpoints
from engine.replay.export import export_journal, read_table
from engine.replay.replay import CHUNK_ROWS, Replay
from engine.timefmt import format_ns

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.sim_journal import write_sim_journal  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPOT = ROOT / "fixtures" / "journals" / "binance-spot"
FUTURES = ROOT / "fixtures" / "journals" / "binance-futures"
SPOT_SYMBOLS = ["BLZETH", "LRCBTC", "NKNUSDT", "RUNEEUR"]


def raw_table(journal: Path) -> pa.Table:
    """Every frame of a journal, read with pyarrow alone (no engine code)."""
    batches = []
    for seg in sorted(journal.glob("seg-*.arrows")):
        try:
            with pa.OSFile(str(seg)) as f:
                batches.extend(pa.ipc.open_stream(f))
        except pa.ArrowInvalid:  # an Arrow IPC file rather than a stream
            with pa.OSFile(str(seg)) as f:
                r = pa.ipc.open_file(f)
                batches.extend(r.get_batch(i) for i in range(r.num_record_batches))
    return pa.Table.from_batches(batches)


def tree(d: Path) -> dict[str, bytes | None]:
    """Every entry under ``d``: relative path → file bytes (None for a directory)."""
    return {
        str(p.relative_to(d)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(d.rglob("*"))
    }


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulator journal with checkpoints beside it (written here, before any API call)."""
    d = write_sim_journal(tmp_path_factory.mktemp("api") / "sim")
    Replay(d, checkpoints=CheckpointPolicy(every_frames=300)).run()
    assert len(list_checkpoints(d)) >= 3
    return d


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary files of the API go to a folder the test can inspect."""
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


# =============================================================== names and import cost


def test_exported_names() -> None:
    assert api.__all__ == ["open", "Journal", "Span", "OutputRecord", "StateAt", "BookAt",
                           "TABLE_NAMES"]  # fmt: skip
    assert engine.__all__ == ["__version__", "open"]
    assert engine.open is api.open
    assert "open" in dir(engine)
    assert api.TABLE_NAMES == (
        "trades", "book_diffs", "book_top", "book_events", "candles", "alerts", "errors",
        "book_ticker", "ticker", "kline",
    )  # fmt: skip
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        engine.nope  # noqa: B018


def test_import_engine_stays_light_and_the_api_needs_no_io_stack() -> None:
    code = (
        "import sys, json\n"
        "import engine\n"
        "light = sorted(m for m in sys.modules if m.startswith(('engine.', 'pyarrow')))\n"
        f"j = engine.open({str(SPOT)!r})\n"
        "j.book_at('NKNUSDT', j.span.last_ns)\n"
        "io = sorted({m.split('.')[0] for m in sys.modules}"
        " & {'trio', 'trio_websocket', 'httpx', 'rich', 'click'})\n"
        "print(json.dumps([light, io]))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    light, io = json.loads(p.stdout)
    assert light == []
    assert io == []


def test_docstring_examples_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    before = tree(SPOT), tree(FUTURES)
    res = doctest.testmod(api, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 5 and res.failed == 0
    assert (tree(SPOT), tree(FUTURES)) == before


def test_readme_example_runs_verbatim_and_changes_nothing() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    before = tree(ROOT / "fixtures")
    p = subprocess.run(
        [sys.executable, "-c", code.group(1)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert p.returncode == 0, p.stderr
    assert f"binance {SPOT_SYMBOLS}" in p.stdout
    assert "BookSynced" in p.stdout
    assert tree(ROOT / "fixtures") == before


# =============================================================== what the journal is


def test_manifest_exchange_symbols_span() -> None:
    j = engine.open(SPOT)
    raw = raw_table(SPOT)
    assert j.exchange == "binance"
    assert j.symbols == SPOT_SYMBOLS
    assert j.manifest == json.loads((SPOT / "journal.json").read_text())
    j.manifest["exchange"] = "changed"  # a copy
    assert j.exchange == "binance"
    recv, seq = raw.column("recv_ns").to_pylist(), raw.column("seq").to_pylist()
    s = j.span
    assert (s.first_ns, s.last_ns, s.first_seq, s.last_seq) == (recv[0], recv[-1], seq[0], seq[-1])
    assert str(s) == f"{format_ns(recv[0])} … {format_ns(recv[-1])}"
    assert recv[0] in s and recv[-1] + 1 not in s
    assert "binance" in repr(j)


def test_not_a_journal(tmp_path: Path) -> None:
    with pytest.raises(NotAJournal):
        engine.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotAJournal):
        engine.open(tmp_path / "empty")


def test_a_journal_without_frames(tmp_path: Path) -> None:
    JournalWriter.create(tmp_path / "j", {"exchange": "sim", "symbols": ["BTCUSDT"]}).close()
    j = engine.open(tmp_path / "j")
    assert j.span is None and j.symbols == ["BTCUSDT"]
    assert list(j.batches()) == [] and list(j.events(symbols="btcusdt")) == []
    assert list(j.replay(start=0)) == []
    with pytest.raises(ValueError, match="holds no frames"):
        j.book_at("BTCUSDT", 0)
    assert all(t.num_rows == 0 for t in j.tables().values())


def test_symbols_come_from_the_frames_when_the_manifest_has_none(tmp_path: Path) -> None:
    d = tmp_path / "j"
    shutil.copytree(SPOT, d)
    doc = json.loads((d / "journal.json").read_text())
    del doc["symbols"]
    (d / "journal.json").write_text(json.dumps(doc))
    assert engine.open(d).symbols == SPOT_SYMBOLS


# =============================================================== frames and events


def test_batches_and_frames_are_the_journal() -> None:
    j = engine.open(FUTURES)
    raw = raw_table(FUTURES)
    got = pa.Table.from_batches(list(j.batches()))
    for col in ("seq", "recv_ns", "conn", "code", "payload"):
        assert got.column(col).to_pylist() == raw.column(col).to_pylist()
    frames = list(j.frames())
    assert [f.seq for f in frames] == raw.column("seq").to_pylist()
    assert [f.payload for f in frames] == raw.column("payload").to_pylist()
    assert [f.source for f in frames] == raw.column("source").to_pylist()


def test_streams_in_bounded_batches(tmp_path: Path) -> None:
    j = engine.open(write_sim_journal(tmp_path / "big", seconds=200, activity=8.0))
    assert j.span is not None and j.span.last_seq > CHUNK_ROWS
    it = j.batches()
    assert iter(it) is it  # a generator, not a list
    sizes = [b.num_rows for b in it]
    assert len(sizes) > 1 and max(sizes) <= CHUNK_ROWS
    assert sum(sizes) == j.span.last_seq - j.span.first_seq + 1


def test_kind_and_symbol_filters_on_frames() -> None:
    j = engine.open(SPOT)
    rest = list(j.frames(kinds=["rest"]))
    assert rest and all(f.kind == "rest" and f.payload.startswith(b'{"lastUpdateId"') for f in rest)
    mine = list(j.frames(symbols="nknusdt"))
    assert mine
    for f in mine:
        assert b"nknusdt" in f.payload.lower() or "nknusdt" in f.source.lower()
    others = list(j.frames(symbols=["BLZETH", "LRCBTC", "RUNEEUR"]))
    assert not any(b"nknusdt" in f.payload.lower() for f in others)
    # frames of no symbol (the connection's open) are in both; every other frame in one
    shared = [f for f in mine if f.kind not in ("text", "rest")]
    assert shared and shared == [f for f in others if f.kind not in ("text", "rest")]
    assert len(mine) + len(others) == j.span.last_seq + len(shared)


def test_events_are_what_the_reducers_folded() -> None:
    j = engine.open(FUTURES)
    p = Replay(FUTURES).run()
    events = list(j.events())
    assert len(events) == p.counters.events
    assert sum(type(e).__name__ == "DecodeError" for e in events) == p.counters.decode_errors
    trades = list(j.events(types=Trade, symbols="SUSHIUSDT"))
    assert trades and all(type(t) is Trade and t.symbol == "SUSHIUSDT" for t in trades)
    books = list(j.events(types=(DepthDiff, BookSnapshot)))
    assert {type(e) for e in books} == {DepthDiff, BookSnapshot}
    # the export's trades table holds each of these trades once
    table = j.table("trades")
    exported = set(zip(table["symbol"].to_pylist(), table["trade_id"].to_pylist(),
                       table["agg"].to_pylist(), strict=True))  # fmt: skip
    assert exported == {(t.symbol, t.trade_id, t.agg) for t in j.events(types=Trade)}


# =============================================================== the fold


def _dumped(pairs: Any) -> list[tuple[int, Any]]:
    return [(seq, serde.dump(o)) for seq, o in pairs]


def test_replay_gives_the_replays_outputs(sim: Path) -> None:
    j = engine.open(sim)
    full = _dumped(Replay(sim, use_checkpoints=False).outputs())
    assert _dumped(j.replay()) == full
    rec = next(iter(j.replay()))
    assert rec.seq == rec[0] and rec.output is rec[1]
    eth = _dumped(j.replay(symbols="ethusdt"))
    assert eth == [(s, o) for s, o in full if o.get("symbol") in (None, "ETHUSDT")]
    # from a checkpoint: the same outputs for frames received from `start` on
    recv_of = {f.seq: f.recv_ns for f in j.frames()}
    start = j.span.first_ns + (j.span.last_ns - j.span.first_ns) * 3 // 4
    late = [(s, o) for s, o in full if recv_of[s] >= start]
    assert late and late != full
    assert _dumped(j.replay(start)) == late
    assert list(j.replay(types=Trade)) == []  # outputs are never events
    closed = list(j.replay(types=(CandleClosed, BookSynced)))
    assert {type(r.output) for r in closed} == {CandleClosed, BookSynced}
    assert _dumped(closed) == [
        (s, o) for s, o in full if o["type"] in ("CandleClosed", "BookSynced")
    ]


def test_book_at_is_engine_book(tmp_path: Path) -> None:
    copy = tmp_path / "j"
    shutil.copytree(SPOT, copy)
    at = "2021-10-12T00:29:00Z"
    p = subprocess.run(
        [sys.executable, "-m", "engine.cli", "book", str(copy), "--symbol", "NKNUSDT", "--at", at,
         "--depth", "5", "--json", "--no-checkpoints"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    b = engine.open(SPOT).book_at("nknusdt", at, depth=5)
    assert b.summary == doc["book"]
    assert (b.symbol, b.seq, b.at_ns) == ("NKNUSDT", doc["last_seq"], doc["at_ns"])
    assert b.synced and b.book is not None
    assert b.bids == [(Decimal(p), Decimal(q)) for p, q in doc["book"]["bids"]]
    assert b.asks == [(Decimal(p), Decimal(q)) for p, q in doc["book"]["asks"]]
    assert b.best_bid == b.bids[0] and b.best_ask == b.asks[0]
    assert b.spread == b.asks[0][0] - b.bids[0][0]
    assert b.mid == (b.asks[0][0] + b.bids[0][0]) / 2
    t = b.to_table()
    assert t.num_rows == 10
    assert t.filter(pc.equal(t["side"], "bid"))["price"].to_pylist() == [x for x, _ in b.bids]
    assert "NKNUSDT" in str(b) and "spread" in str(b)


def test_book_before_sync_is_empty_not_an_error() -> None:
    j = engine.open(SPOT)
    b = j.book_at("RUNEEUR", j.span.first_ns)
    assert not b.synced and b.bids == [] and b.best_bid is None and b.spread is None
    assert b.to_table().num_rows == 0
    assert "not synced" in str(b)


def test_state_at_uses_checkpoints_and_equals_a_full_fold(sim: Path) -> None:
    j = engine.open(sim)
    t = j.span.first_ns + (j.span.last_ns - j.span.first_ns) * 2 // 3
    s = j.state_at(t)
    assert s.checkpoint is not None and s.frames_folded < s.seq
    full = Replay(sim, end_ns=t, use_checkpoints=False).run()
    assert s.pipeline.snapshot() == full.snapshot()
    assert set(s.states) == {r.name for r in full.reducers}
    assert s.symbols == ("BTCUSDT", "ETHUSDT")
    summary = s.summary(depth=3)
    assert set(summary) == {"BTCUSDT", "ETHUSDT"}
    assert summary["BTCUSDT"]["book"] == s.book("BTCUSDT", 3).summary
    assert summary["BTCUSDT"]["trades"]["count"] > 0
    narrow = j.state_at(t, symbols="ethusdt")
    assert narrow.symbols == ("ETHUSDT",)
    with pytest.raises(ValueError, match="BTCUSDT"):
        narrow.book("BTCUSDT")


# =============================================================== tables


@pytest.mark.parametrize("journal", [SPOT, FUTURES], ids=["spot", "futures"])
def test_tables_are_the_export(journal: Path, tmp_path: Path) -> None:
    j = engine.open(journal)
    sym = j.symbols[-1]
    start = j.span.first_ns + 5_000_000_000
    ref = tmp_path / "ref"
    export_journal(journal, ref, symbols=[sym], start_ns=start, top=3, interval_s=2.0)
    tables = j.tables(start, symbols=sym, top=3, interval=2.0)
    assert list(tables) == list(api.TABLE_NAMES)
    for name, table in tables.items():
        assert table.equals(read_table(ref, name)), name
        assert j.table(name, start, symbols=sym, top=3, interval=2.0).equals(table)
        frame = pl.from_arrow(table)
        assert frame.height == table.num_rows


def test_tables_work_in_polars_and_leave_no_temporary_files(private_tmp: Path) -> None:
    j = engine.open(FUTURES)
    trades = j.table("trades", polars=True)
    assert isinstance(trades, pl.DataFrame) and trades.equals(pl.from_arrow(j.table("trades")))
    assert trades.height > 0 and trades.schema["price"] == pl.Decimal(38, num.SCALE)
    assert list(private_tmp.iterdir())  # the export lives outside the journal...
    j.close()
    assert list(private_tmp.iterdir()) == []  # ...until closed
    with engine.open(FUTURES) as j2:
        assert j2.table("candles", symbols="SUSHIUSDT").num_rows >= 0
    assert list(private_tmp.iterdir()) == []


# =============================================================== filters


def test_window_rule_and_time_forms() -> None:
    j = engine.open(SPOT)
    raw = raw_table(SPOT)
    recv, seq = raw.column("recv_ns").to_pylist(), raw.column("seq").to_pylist()
    lo = 1_633_998_520_123_456_000
    hi = recv[200]  # inclusive: the frame received at exactly `end` is in
    want = [s for s, r in zip(seq, recv, strict=True) if lo <= r <= hi]
    dt = datetime(2021, 10, 12, 0, 28, 40, 123456)
    forms = [
        lo,
        format_ns(lo),
        "2021-10-12T02:28:40.123456+02:00",
        1633998520.123456,
        dt,
        dt.replace(tzinfo=UTC),
        dt.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=-5))),
    ]
    for form in forms:
        assert [f.seq for f in j.frames(form, hi)] == want, form
    assert j.book_at("NKNUSDT", dt).at_ns == lo
    assert j.state_at(1633998520.123456).at_ns == lo


@settings(max_examples=25)
@given(st.floats(0, 1), st.floats(0, 1))
def test_every_method_keeps_the_documented_window(a: float, b: float) -> None:
    j = engine.open(FUTURES)
    s = j.span
    lo = s.first_ns + int((s.last_ns - s.first_ns) * min(a, b))
    hi = s.first_ns + int((s.last_ns - s.first_ns) * max(a, b))
    raw = raw_table(FUTURES)
    recv_of = dict(zip(raw.column("seq").to_pylist(), raw.column("recv_ns").to_pylist(),
                       strict=True))  # fmt: skip
    in_window = [q for q, r in recv_of.items() if lo <= r <= hi]
    assert [f.seq for f in j.frames(lo, hi)] == in_window
    assert sorted({e.seq for e in j.events(lo, hi)}) == in_window
    full = _dumped(Replay(FUTURES).outputs())
    assert _dumped(j.replay(lo, hi)) == [(q, o) for q, o in full if lo <= recv_of[q] <= hi]


CALLS: list[tuple[str, Callable[[api.Journal], Any]]] = [
    ("batches", lambda j: j.batches(symbols="NOPE")),
    ("frames", lambda j: j.frames(symbols=["nope", j.symbols[0]])),
    ("events", lambda j: j.events(symbols="NOPE")),
    ("replay", lambda j: j.replay(symbols="NOPE")),
    ("state_at", lambda j: j.state_at(j.span.last_ns, symbols="NOPE")),
    ("book_at", lambda j: j.book_at("NOPE", j.span.last_ns)),
    ("table", lambda j: j.table("trades", symbols="NOPE")),
]


@pytest.mark.parametrize("call", [c for _, c in CALLS], ids=[n for n, _ in CALLS])
def test_unknown_symbols_are_refused_listing_the_journals(call: Callable[[Any], Any]) -> None:
    j = engine.open(SPOT)
    with pytest.raises(ValueError, match="NOPE") as err:
        call(j)  # at the call, before any item is asked for
    assert ", ".join(SPOT_SYMBOLS) in str(err.value)


def test_times_outside_the_journal_say_so_with_the_span() -> None:
    j = engine.open(SPOT)
    s = j.span
    cases: list[Callable[[], Any]] = [
        lambda: j.frames(start=s.last_ns + 1),
        lambda: j.events(end=s.first_ns - 1),
        lambda: j.replay("2030-01-01T00:00:00Z"),
        lambda: j.table("trades", end=datetime(2020, 1, 1)),
        lambda: j.book_at("NKNUSDT", s.first_ns - 1),
        lambda: j.state_at(s.last_ns + 1),
    ]
    for case in cases:
        with pytest.raises(ValueError) as err:
            case()
        assert str(s) in str(err.value)
    with pytest.raises(ValueError, match="before start"):
        j.frames(s.last_ns, s.first_ns)


def test_bad_arguments_are_clear_errors() -> None:
    j = engine.open(SPOT)
    with pytest.raises(ValueError, match="not a time"):
        j.frames("yesterday")
    with pytest.raises(TypeError, match="ISO-8601"):
        j.frames(start=object())
    with pytest.raises(TypeError, match="classes"):
        j.events(types="Trade")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no symbol"):
        j.replay(symbols=[])
    with pytest.raises(
        ValueError, match="trades, book_diffs, book_top, book_events, candles, alerts"
    ):
        j.table("orders")
    with pytest.raises(ValueError, match="depth"):
        j.book_at("NKNUSDT", s_last(j), depth=0)


def s_last(j: api.Journal) -> int:
    assert j.span is not None
    return j.span.last_ns


# =============================================================== read-only


READS: list[tuple[str, Callable[[api.Journal], Any]]] = [
    ("span", lambda j: (j.span, j.symbols, j.manifest, repr(j))),
    ("batches", lambda j: list(j.batches(j.span.first_ns + 1, symbols=j.symbols[0]))),
    ("frames", lambda j: list(j.frames(kinds=["text"]))),
    ("events", lambda j: list(j.events())),
    ("replay", lambda j: list(j.replay(start=j.span.last_ns - 10**9))),
    ("state_at", lambda j: j.state_at(j.span.last_ns).summary()),
    ("book_at", lambda j: str(j.book_at(j.symbols[0], j.span.last_ns))),
    ("tables", lambda j: j.tables(j.span.first_ns + 2 * 10**9, top=2)),
    ("close", lambda j: (j.table("alerts"), j.close())),
]


@pytest.mark.parametrize("read", [r for _, r in READS], ids=[n for n, _ in READS])
@pytest.mark.parametrize("which", ["spot", "sim"])
def test_no_call_writes_into_the_journal(
    which: str, read: Callable[[api.Journal], Any], sim: Path
) -> None:
    d = SPOT if which == "spot" else sim
    before = tree(d)
    read(engine.open(d))
    assert tree(d) == before
    if which == "sim":
        assert any(k.startswith("checkpoints") for k in before)  # restores did read them
