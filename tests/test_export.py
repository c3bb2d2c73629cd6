"""``engine export``: the hive-partitioned tables, read back with pyarrow, Polars and DuckDB, equal the replayed events exactly.

Expected rows are computed independently of the exporter: the journal's
frames decoded with the codec (trades, depth diffs), the outputs of a plain
:class:`Replay` (candles), and :func:`state_at` (book_top at its timestamps).
The journal is the simulator's market model over 150 s (closes 1m candles),
plus the real Binance capture in fixtures/.
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import attrs
import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import num
from engine.codecs.registry import get_codec
from engine.events import DepthDiff, Trade
from engine.journal.reader import JournalReader
from engine.replay.export import (
    DECIMAL,
    TABLES,
    OutputsWriter,
    TableWriter,
    _alert_row,
    decimals,
    export_journal,
    read_table,
)
from engine.replay.export_tables import TIME
from engine.replay.replay import Replay, state_at

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.sim_journal import write_sim_journal  # noqa: E402

SPOT = Path(__file__).resolve().parent.parent / "fixtures" / "journals" / "binance-spot"


def dec(units: int) -> Decimal:
    return Decimal(f"{units}e-{num.SCALE}")  # exact (Decimal arithmetic would round past 28 digits)


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sim_journal(tmp_path_factory.mktemp("ex") / "j")


@pytest.fixture(scope="module")
def exported(journal: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ex") / "out"
    p = subprocess.run(
        [sys.executable, "-m", "engine.cli", "export", str(journal), "--to", str(out),
         "--top", "5", "--interval", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["rows"]["trades"] > 100
    return out


def table(out: Path, name: str) -> pl.DataFrame:
    """One exported table as Polars reads it: the README's one-liner, in write order."""
    return pl.from_arrow(read_table(out, name)).drop("date")


def decoded(journal: Path) -> list:
    reader = JournalReader(journal)
    codec = get_codec(reader.metadata["exchange"])
    return [
        ev
        for f in reader.frames()
        if f.dir == "in"
        for ev in codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload)
    ]


def epoch_ns(t: pa.Table) -> list[dict]:
    """The table's rows with every timestamp[ns, UTC] column as epoch ns ints (Python's datetime has µs)."""
    cols = {f.name: (t.column(f.name).cast(pa.int64()) if f.type == TIME else t.column(f.name))
            for f in t.schema}  # fmt: skip
    return pa.table(cols).to_pylist()


def test_the_export_is_a_hive_dataset_of_every_table(exported: Path) -> None:
    assert sorted(p.name for p in exported.iterdir()) == sorted(
        [f"table={n}" for n in TABLES] + ["export.json"]
    )
    meta = json.loads((exported / "export.json").read_text())
    assert meta["exchange"] == "sim" and meta["book_top"] == {"levels": 5, "interval_ns": 2 * 10**9}
    for name, schema in TABLES.items():
        files = sorted((exported / f"table={name}").rglob("*"))
        parts = [f for f in files if f.is_file()]
        assert parts and all(f.suffix == ".parquet" for f in parts), name  # no .partial left
        for f in parts:
            sym, day, part = f.relative_to(exported / f"table={name}").parts
            assert (
                sym.startswith("symbol=") and day.startswith("date=") and part.startswith("part-")
            )
            assert pq.read_schema(f).remove_metadata() == schema.remove_metadata()
        dataset = ds.dataset(exported / f"table={name}", format="parquet", partitioning="hive")
        assert dataset.count_rows() == meta["rows"][name], name
    assert meta["rows"]["trades"] > 100 and meta["rows"]["ticker"] > 0
    assert meta["rows"]["book_ticker"] > 0 and meta["rows"]["kline"] > 0
    assert not [p for p in exported.parent.iterdir() if "partial" in p.name]


def test_polars_duckdb_and_pyarrow_open_it_in_one_call(exported: Path) -> None:
    """The README's one-liners: counts per table agree, times are UTC ns, decimals exact."""
    rows = json.loads((exported / "export.json").read_text())["rows"]
    glob = str(exported / "table=trades" / "**" / "*.parquet")
    trades = pl.scan_parquet(glob, hive_partitioning=True).collect()
    assert trades.height == rows["trades"]
    assert trades.schema["recv_time"] == pl.Datetime("ns", "UTC")
    assert trades.schema["price"] == pl.Decimal(38, num.SCALE) and trades.schema["date"] == pl.Date
    assert set(trades["symbol"]) == {"BTCUSDT", "ETHUSDT"}
    con = duckdb.connect()
    every = str(exported / "**" / "*.parquet").replace("'", "''")
    counts = dict(
        con.execute(
            f"SELECT \"table\", count(*) FROM read_parquet('{every}', hive_partitioning=true,"
            " union_by_name=true) GROUP BY ALL"
        ).fetchall()
    )
    assert counts == {n: k for n, k in rows.items() if k}
    types = dict(
        r[:2]
        for r in con.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning=true)"
        ).fetchall()
    )
    assert types["price"] == f"DECIMAL(38,{num.SCALE})" and types["date"] == "DATE"
    assert "TZ" in types["recv_time"] or "TIME ZONE" in types["recv_time"]
    exact = con.execute(
        f"SELECT seq, symbol, price, epoch_ns(recv_time) FROM read_parquet('{glob}',"
        " hive_partitioning=true) ORDER BY seq, agg"
    ).fetchall()
    mine = sorted(epoch_ns(read_table(exported, "trades")), key=lambda r: (r["seq"], r["agg"]))
    assert exact == [(r["seq"], r["symbol"], r["price"], r["recv_time"]) for r in mine]
    t = ds.dataset(exported / "table=book_top", format="parquet", partitioning="hive").to_table()
    assert t.schema.field("time").type == TIME and t.num_rows == rows["book_top"]


def test_trades_equal_the_decoded_trades_exactly(journal: Path, exported: Path) -> None:
    seen: set[tuple[str, bool, int]] = set()
    want = []
    for t in decoded(journal):
        if type(t) is Trade and (t.symbol, t.agg, t.first_id) not in seen:
            seen.add((t.symbol, t.agg, t.first_id))
            want.append(
                {
                    "seq": t.seq, "recv_time": t.recv_ns, "exch_time": t.exch_ms * 10**6,
                    "txn_time": None if t.txn_ms is None else t.txn_ms * 10**6,
                    "trade_id": t.trade_id, "first_id": t.first_id, "last_id": t.last_id,
                    "agg": t.agg, "side": t.side, "price": dec(t.price), "qty": dec(t.qty),
                    "normalized": "BTC-USDT" if t.symbol == "BTCUSDT" else "ETH-USDT",
                    "symbol": t.symbol,
                }
            )  # fmt: skip
    assert {w["agg"] for w in want} == {True, False}  # both trade kinds, each kept
    assert epoch_ns(read_table(exported, "trades").drop_columns(["date"])) == want


def test_exchange_streams_are_their_decoded_events(journal: Path, exported: Path) -> None:
    evs = decoded(journal)
    for name, tp in (("book_ticker", "BookTicker"), ("ticker", "Ticker24h"), ("kline", "Kline")):
        want = [e for e in evs if type(e).__name__ == tp]
        df = table(exported, name)
        assert df.height == len(want) > 0, name
        assert df["seq"].to_list() == [e.seq for e in want]
        assert df["symbol"].to_list() == [e.symbol for e in want]
    tick = [e for e in evs if type(e).__name__ == "BookTicker"]
    bt = table(exported, "book_ticker")
    assert bt["bid_price"].to_list() == [dec(e.bid_price) for e in tick]
    kl = [e for e in evs if type(e).__name__ == "Kline"]
    starts = [r["start_time"] for r in epoch_ns(read_table(exported, "kline"))]
    assert starts == [e.start_ms * 10**6 for e in kl]


def test_book_diffs_are_every_level_of_every_diff(journal: Path, exported: Path) -> None:
    want = []
    for d in decoded(journal):
        if type(d) is DepthDiff:
            for side, levels in (("bid", d.bids), ("ask", d.asks)):
                for p, q in levels:
                    want.append((d.seq, d.symbol, d.first_id, d.last_id, side, dec(p), dec(q)))
    df = table(exported, "book_diffs")
    got = df.select("seq", "symbol", "first_id", "last_id", "side", "price", "qty").rows()
    assert got == want
    assert df.filter(pl.col("qty") == 0).height > 0  # removals are rows with qty 0


def test_candles_equal_the_replayed_outputs(journal: Path, exported: Path) -> None:
    want = [o for _, o in Replay(journal, use_checkpoints=False).outputs()]
    want = [o for o in want if type(o).__name__ == "CandleClosed"]
    assert len(want) >= 2
    got = epoch_ns(read_table(exported, "candles"))
    assert len(got) == len(want)
    for row, c in zip(got, want, strict=True):
        fields = attrs.asdict(c, recurse=False)
        for k in ("open", "high", "low", "close", "volume", "taker_buy_volume"):
            assert row[k] == dec(fields[k])
        for k in ("seq", "symbol", "interval", "trades", "complete"):
            assert row[k] == fields[k]
        assert row["recv_time"] == c.recv_ns and row["start_time"] == c.start_ms * 10**6
        assert row["sma"] == [{"period": p, "value": dec(v)} for p, v in c.sma]
        assert row["ema"] == [{"period": p, "value": dec(v)} for p, v in c.ema]


def test_book_top_is_the_book_at_each_timestamp(journal: Path, exported: Path) -> None:
    df = table(exported, "book_top").with_columns(ts=pl.col("time").dt.epoch("ns"))
    stamps = df["ts"].unique().sort().to_list()
    assert all(t % (2 * 10**9) == 0 for t in stamps) and len(stamps) >= 70
    assert stamps == list(range(stamps[0], stamps[-1] + 1, 2 * 10**9))  # a regular grid
    for t in (stamps[0], stamps[len(stamps) // 2], stamps[-1]):
        p, _, _ = state_at(journal, t, use_checkpoints=False)
        red, state = p.reducer("book"), p.state("book")
        for sym in ("BTCUSDT", "ETHUSDT"):
            book = red.book(state, sym)
            bids, asks = book.top(5)
            want = [("ask", i, dec(px), dec(q)) for i, (px, q) in enumerate(asks)]
            want += [("bid", i, dec(px), dec(q)) for i, (px, q) in enumerate(bids)]
            rows = df.filter((pl.col("ts") == t) & (pl.col("symbol") == sym))
            assert rows.select("side", "level", "price", "qty").rows() == want
            assert set(rows["update_id"]) == {book.last_id}
            assert set(rows["seq"]) == {p.counters.last_seq}


def test_symbols_and_window_filter(journal: Path, tmp_path: Path) -> None:
    t0 = next(JournalReader(journal).frames()).recv_ns // 10**9 * 10**9
    res = export_journal(
        journal, tmp_path, symbols=["ethusdt"], interval_s=5.0, start_ns=t0 + 30 * 10**9,
        end_ns=t0 + 60 * 10**9,
    )  # fmt: skip
    for name in ("trades", "book_diffs", "book_top", "book_ticker"):
        df = table(tmp_path, name)
        assert df.height == res.rows[name] > 0
        assert set(df["symbol"]) == {"ETHUSDT"}
        col = pl.col("time" if name == "book_top" else "recv_time").dt.epoch("ns")
        assert df.select(col.min()).item() >= t0 + 30 * 10**9
        assert df.select(col.max()).item() <= t0 + 60 * 10**9
    top = table(tmp_path, "book_top")
    got = top.select(pl.col("time").dt.epoch("ns").unique().sort())["time"].to_list()
    first = -(-(t0 + 30 * 10**9) // (5 * 10**9)) * 5 * 10**9
    assert got == list(range(first, t0 + 60 * 10**9 + 1, 5 * 10**9))


def test_real_binance_capture_exports(tmp_path: Path) -> None:
    res = export_journal(SPOT, tmp_path / "x")
    assert res.frames == 270 and res.decode_errors == 0 and res.rows["errors"] == 0
    df = table(tmp_path / "x", "book_diffs")
    assert set(df["symbol"]) == {"BLZETH", "LRCBTC", "NKNUSDT", "RUNEEUR"}
    # an exact 8-decimal price survives: 0.00006547 BLZETH
    assert Decimal("0.00006547") in set(table(tmp_path / "x", "book_top")["price"])
    synced = table(tmp_path / "x", "book_events")
    assert sorted(synced["symbol"]) == ["BLZETH", "LRCBTC", "NKNUSDT", "RUNEEUR"]
    assert set(synced["type"]) == {"BookSynced"}
    # an empty table is still a readable dataset, by every reader
    assert pl.scan_parquet(str(tmp_path / "x" / "table=errors" / "**" / "*.parquet"),
                           hive_partitioning=True).collect().height == 0  # fmt: skip


# --------------------------------------------------------------------------- building blocks


@given(st.lists(st.one_of(st.none(), st.integers(-num.MAX, num.MAX)), max_size=40))
def test_decimals_are_exact_for_any_int(values: list) -> None:
    arr = decimals(values)
    assert arr.type == DECIMAL
    assert arr.to_pylist() == [None if v is None else dec(v) for v in values]


@pytest.mark.parametrize("v", [num.MAX + 1, -num.MAX - 1, 2**127, 2**200])
def test_a_value_beyond_decimal128_is_an_error_never_a_wrong_number(v: int) -> None:
    with pytest.raises(ValueError, match="do not fit decimal128"):
        decimals([1, v, None])


@attrs.frozen
class SpikeAlert:
    seq: int
    recv_ns: int
    kind: str
    symbol: str
    exch_ms: int | None
    value: int
    threshold: int
    unit: str
    detail: str
    notional: int = 2**70  # >64-bit ints stay exact in the JSON column


def test_alert_rows_are_generic_and_exact(tmp_path: Path) -> None:
    a = SpikeAlert(7, 123, "large_trade", "BTCUSDT", 99, num.parse("2.5"), num.ONE, num.UNIT, "x")
    b = SpikeAlert(8, 124, "spread", "BTCUSDT", None, 35, 20, "bps", "y")
    w = TableWriter(tmp_path / "alerts.parquet", TABLES["alerts"], row_group_rows=1)
    w.add((*_alert_row(7, a), "BTC-USDT"))  # the last column: the normalized name
    w.add((*_alert_row(8, b), "BTC-USDT"))
    assert w.close() == 2
    rows = pl.read_parquet(tmp_path / "alerts.parquet").to_dicts()
    assert [r["value"] for r in rows] == [Decimal("2.5"), Decimal(35)]
    assert [r["threshold"] for r in rows] == [Decimal(1), Decimal(20)]
    assert rows[0]["type"] == "SpikeAlert" and rows[0]["kind"] == "large_trade"
    assert json.loads(rows[0]["output"])["notional"] == 2**70


def test_outputs_writer_parquet_and_arrow(tmp_path: Path) -> None:
    outs = list(Replay(SPOT, use_checkpoints=False).outputs())
    for name in ("o.parquet", "o.arrow"):
        w = OutputsWriter(tmp_path / name, row_group_rows=3)
        for seq, o in outs:
            w.write(seq, o)
        assert w.close() == len(outs)
        if name.endswith(".arrow"):
            with pa.ipc.open_file(tmp_path / name) as f:
                t = f.read_all()
        else:
            t = pq.read_table(tmp_path / name)
        assert t.column("frame_seq").to_pylist() == [s for s, _ in outs]
        assert t.column("type").to_pylist() == [type(o).__name__ for _, o in outs]
    assert not list(tmp_path.glob("*.partial"))


def test_an_aborted_table_leaves_nothing(tmp_path: Path) -> None:
    w = TableWriter(tmp_path / "t.parquet", TABLES["trades"])
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_overlapping_connections_export_each_trade_and_diff_once(tmp_path: Path) -> None:
    """A gap-free rotation journals the overlap from both connections: the export dedups it."""
    from engine.journal.writer import JournalWriter

    reader = JournalReader(SPOT)
    w = JournalWriter.create(tmp_path / "dup", reader.metadata)
    doubled = 0
    for f in reader.frames():
        w.append(f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
        if f.kind == "text":
            w.append(f.recv_ns, f.conn + 1, f.dir, f.kind, f.source, f.payload, f.code)
            doubled += 1
    w.close()
    once = export_journal(SPOT, tmp_path / "once")
    twice = export_journal(tmp_path / "dup", tmp_path / "twice")
    assert twice.rows == once.rows
    evs = decoded(SPOT)
    assert twice.duplicate_trades == sum(type(e) is Trade for e in evs) > 0
    assert twice.duplicate_diffs == sum(type(e) is DepthDiff for e in evs) > 100
    assert once.duplicate_trades == once.duplicate_diffs == 0 and doubled > 200
    for name in ("trades", "book_diffs"):
        a = table(tmp_path / "once", name).drop("seq")
        b = table(tmp_path / "twice", name).drop("seq")
        assert a.equals(b)
