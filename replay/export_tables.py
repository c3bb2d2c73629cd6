"""The export's tables: their columns, their rows, and the streaming writers that store them.

Owns: the table layouts of ``engine export`` (:data:`TABLES`), exact-decimal
and UTC-timestamp columns, the row builders shared by every table built from
one value object, the single-file :class:`TableWriter` (also behind
``engine replay --out``), the hive-partitioned :class:`PartitionedWriter`,
and :func:`read_table`, which reads one exported table back.  Must not:
replay, fold or decide which rows exist (that is :mod:`engine.replay.export`),
hold more than one row group per open file in memory, or leave a file under
its final name before it is complete.

Layout on disk (hive partitioning, read in one call by pyarrow.dataset,
Polars, DuckDB and Spark)::

    OUT/table=<name>/symbol=<SYMBOL>/date=<YYYY-MM-DD>/part-<k>.parquet

``symbol`` and ``date`` (the UTC day of the row's receive time; ``time``
for ``book_top``) live in the path only, as hive partitioning has it.  Rows
of no symbol (decode and connection errors) are under ``symbol=_``: not
hive's null partition, which pyarrow cannot type when a table holds no
other value.  A table with no rows still gets one empty file (``symbol=_``,
the export's first day) so reading it never fails.  Parts are numbered per
partition; a new part opens only when a clock stepped back into a day
already closed.

Columns: times are ``timestamp[ns, tz=UTC]`` (``recv_time`` is the
journal's receive time, exactly its ``recv_ns``; exchange times, given in
ms, are scaled to ns exactly); prices, quantities and volumes are
``decimal128(38, 18)`` built from the engine's integer 1e-18 units (the ints
*are* the unscaled values: no float, no rounding; 20 integer digits, and
codecs refuse values beyond ``num.MAX``, so every value fits: one that does
not is an error, never a wrong number).  No raw integer time is
kept: a timestamp[ns] column holds the same 64-bit value, and
``recv_time.cast(int64)`` gives the journal's ``recv_ns`` back for a join.
``seq`` is the journal frame.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable, Sequence
from decimal import Context, Decimal
from operator import attrgetter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from engine import num, serde

__all__ = [
    "DECIMAL",
    "TIME",
    "decimals",
    "TableWriter",
    "OutputsWriter",
    "OUTPUTS_SCHEMA",
    "TABLES",
    "ROWS",
    "PartitionedWriter",
    "NO_SYMBOL",
    "read_table",
    "table_dir",
]

#: Exact decimal type of engine units (:data:`engine.num.SCALE` decimals, 38 digits).
DECIMAL = pa.decimal128(38, num.SCALE)
#: Every time column: epoch ns, UTC.
TIME = pa.timestamp("ns", tz="UTC")
_UNSCALED = pa.decimal128(38, 0)
ROW_GROUP_ROWS = 65_536
_IPC_SUFFIXES = (".arrow", ".arrows", ".ipc", ".feather")
#: enough digits for any decimal128 value: no rounding when scaling units to a Decimal
_EXACT = Context(prec=40)
#: the ``symbol`` partition of rows that concern no one symbol
NO_SYMBOL = "_"
_MS = 1_000_000
_DAY_NS = 86_400 * 10**9
_EPOCH = dt.date(1970, 1, 1)


def decimals(values: Sequence[int | None]) -> pa.Array:
    """Engine unit ints (or None) → ``decimal128(38, 18)``, exactly.

    The ints are the unscaled decimal values: ``123`` → ``0.000000000000000123``.

    Raises:
        ValueError: a value beyond 38 digits (``num.MAX``): it would not be exact.
    """
    try:
        ints = pa.array(values, pa.int64())
    except OverflowError:  # beyond 64 bits (most prices at 1e-18): assemble the 128-bit values
        big = next((v for v in values if v is not None and not -num.MAX <= v <= num.MAX), None)
        if big is not None:
            raise ValueError(f"{big} units do not fit decimal128(38, {num.SCALE})") from None
        raw = b"".join((v or 0).to_bytes(16, "little", signed=True) for v in values)
        valid = pa.array([v is not None for v in values], pa.bool_())
        mask = valid.buffers()[1] if None in values else None
        return pa.Array.from_buffers(DECIMAL, len(values), [mask, pa.py_buffer(raw)])
    return ints.cast(_UNSCALED).view(DECIMAL)


def json_text(output: Any) -> str:
    """The output as plain JSON text, exact for >64-bit ints (:func:`engine.serde.dumps_json`)."""
    return serde.dumps_json(serde.dump(output)).decode()


# =============================================================== the single-file writer


class TableWriter:
    """Rows in, one Parquet (or Arrow IPC file) table out, a row group at a time.

    The table is written to ``<path>.partial`` and renamed on :meth:`close`, so
    a crashed or interrupted export never leaves a complete-looking table.

    Args:
        path: the final file; ``.arrow``/``.arrows``/``.ipc``/``.feather`` write the
            Arrow IPC file format, anything else Parquet (zstd).
        schema: the columns; ``DECIMAL`` columns take engine ints, ``TIME`` epoch ns.
        row_group_rows: rows buffered before a row group is written (bounded memory).
    """

    def __init__(
        self, path: str | os.PathLike[str], schema: pa.Schema, row_group_rows: int = ROW_GROUP_ROWS
    ) -> None:
        self.path = Path(path)
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.tmp = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.suffix.lower() in _IPC_SUFFIXES:
            self._sink: Any = pa.OSFile(str(self.tmp), "wb")
            self._w: Any = pa.ipc.new_file(self._sink, schema)
        else:
            self._sink = None
            self._w = pq.ParquetWriter(str(self.tmp), schema, compression="zstd")
        self.rows: list[tuple[Any, ...]] = []
        self.total = 0

    def add(self, row: tuple[Any, ...]) -> None:
        """Append one row (values in schema order)."""
        self.rows.append(row)
        if len(self.rows) >= self.row_group_rows:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        columns = list(zip(*self.rows, strict=True))
        arrays = [
            decimals(col) if f.type == DECIMAL else pa.array(col, f.type)
            for f, col in zip(self.schema, columns, strict=True)
        ]
        self._w.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.total += len(self.rows)
        self.rows = []

    def close(self) -> int:
        """Write what is buffered, finish the file, move it to its name; returns the row count."""
        self.flush()
        self._w.close()
        if self._sink is not None:
            self._sink.close()
        os.replace(self.tmp, self.path)
        return self.total

    def abort(self) -> None:
        """Give up: close and delete the partial file."""
        try:
            self._w.close()
            if self._sink is not None:
                self._sink.close()
        finally:
            self.tmp.unlink(missing_ok=True)


# =============================================================== engine replay --out

OUTPUTS_SCHEMA = pa.schema(
    [
        ("frame_seq", pa.int64()),
        ("recv_ns", pa.int64()),
        ("type", pa.string()),
        ("symbol", pa.string()),
        ("output", pa.string()),
    ],
    metadata={
        "wiretape.content": "pipeline outputs",
        "wiretape.output": "JSON of engine.serde.dump(output); load with engine.serde.load",
    },
)


class OutputsWriter(TableWriter):
    """Every output of a replay, one row each: frame seq, receive time, type, symbol, JSON."""

    def __init__(self, path: str | os.PathLike[str], row_group_rows: int = ROW_GROUP_ROWS) -> None:
        super().__init__(path, OUTPUTS_SCHEMA, row_group_rows)

    def write(self, frame_seq: int, output: Any) -> None:
        self.add(
            (
                frame_seq,
                getattr(output, "recv_ns", None),
                type(output).__name__,
                getattr(output, "symbol", None),
                json_text(output),
            )
        )


# =============================================================== table layouts


def _ms(v: int | None) -> int | None:
    return None if v is None else v * _MS


def _ma(pairs: Iterable[tuple[int, int]]) -> list[dict[str, Any]]:
    return [{"period": p, "value": Decimal(v).scaleb(-8, _EXACT)} for p, v in pairs]


_I32 = pa.int32()
_I64 = pa.int64()
_STR = pa.string()
_BOOL = pa.bool_()
_MA = pa.list_(pa.struct([("period", _I32), ("value", DECIMAL)]))

#: A column: (name, type, attribute of the value object or None, converter or None).
Column = tuple[str, pa.DataType, str | None, Callable[[Any], Any] | None]


def _c(name: str, tp: pa.DataType, attr: str | None = None) -> Column:
    """A column read from ``attr`` (default: the same name); ``*_ms`` attributes become ns."""
    attr = name if attr is None else attr
    return (name, tp, attr, _ms if attr.endswith("_ms") and tp == TIME else None)


_SEQ = _c("seq", _I64)
_RECV = _c("recv_time", TIME, "recv_ns")
_EXCH = _c("exch_time", TIME, "exch_ms")
_TXN = _c("txn_time", TIME, "txn_ms")

#: Tables built from one value object per row, column by column (events and outputs).
ROWS: dict[str, list[Column]] = {
    "trades": [
        _SEQ, _RECV, _EXCH, _TXN, _c("trade_id", _I64), _c("first_id", _I64),
        _c("last_id", _I64), _c("agg", _BOOL), _c("side", _STR), _c("price", DECIMAL),
        _c("qty", DECIMAL),
    ],
    "candles": [
        _SEQ, _RECV, _c("interval", _STR), _c("start_time", TIME, "start_ms"),
        _c("end_time", TIME, "end_ms"), _c("open", DECIMAL), _c("high", DECIMAL),
        _c("low", DECIMAL), _c("close", DECIMAL), _c("volume", DECIMAL),
        _c("taker_buy_volume", DECIMAL), _c("trades", _I64), _c("first_id", _I64),
        _c("last_id", _I64), _c("complete", _BOOL), _c("filled", _BOOL),
        ("sma", _MA, "sma", _ma), ("ema", _MA, "ema", _ma),
    ],
    "book_ticker": [
        _SEQ, _RECV, _EXCH, _TXN, _c("update_id", _I64), _c("bid_price", DECIMAL),
        _c("bid_qty", DECIMAL), _c("ask_price", DECIMAL), _c("ask_qty", DECIMAL),
    ],
    "ticker": [
        _SEQ, _RECV, _EXCH, _c("last_price", DECIMAL), _c("last_qty", DECIMAL),
        _c("open_price", DECIMAL), _c("high_price", DECIMAL), _c("low_price", DECIMAL),
        _c("vwap", DECIMAL), _c("volume", DECIMAL), _c("quote_volume", DECIMAL),
        _c("price_change", DECIMAL), _c("bid_price", DECIMAL), _c("ask_price", DECIMAL),
        _c("open_time", TIME, "open_ms"), _c("close_time", TIME, "close_ms"),
        _c("first_id", _I64), _c("last_id", _I64), _c("count", _I64),
        _c("bid_qty", DECIMAL), _c("ask_qty", DECIMAL),
    ],
    "kline": [
        _SEQ, _RECV, _EXCH, _c("interval", _STR), _c("start_time", TIME, "start_ms"),
        _c("end_time", TIME, "end_ms"), _c("open", DECIMAL), _c("high", DECIMAL),
        _c("low", DECIMAL), _c("close", DECIMAL), _c("volume", DECIMAL),
        _c("quote_volume", DECIMAL), _c("trades", _I64), _c("closed", _BOOL),
        _c("first_id", _I64), _c("last_id", _I64), _c("taker_buy_volume", DECIMAL),
        _c("taker_buy_quote_volume", DECIMAL),
    ],
}  # fmt: skip

#: Tables whose rows the exporter assembles itself (per level, per alert, per error).
_OTHER: dict[str, list[tuple[str, pa.DataType]]] = {
    "book_diffs": [
        ("seq", _I64), ("recv_time", TIME), ("exch_time", TIME), ("first_id", _I64),
        ("last_id", _I64), ("prev_id", _I64), ("side", _STR), ("price", DECIMAL),
        ("qty", DECIMAL),
    ],
    "book_top": [
        ("time", TIME), ("seq", _I64), ("update_id", _I64), ("sync_state", _STR),
        ("side", _STR), ("level", _I32), ("price", DECIMAL), ("qty", DECIMAL),
    ],
    "book_events": [
        ("seq", _I64), ("recv_time", TIME), ("type", _STR), ("update_id", _I64),
        ("detail", _STR), ("output", _STR),
    ],
    "alerts": [
        ("seq", _I64), ("recv_time", TIME), ("type", _STR), ("kind", _STR),
        ("exch_time", TIME), ("value", DECIMAL), ("threshold", DECIMAL), ("unit", _STR),
        ("detail", _STR), ("output", _STR),
    ],
    "errors": [
        ("seq", _I64), ("recv_time", TIME), ("kind", _STR), ("conn", _I64),
        ("source", _STR), ("reason", _STR), ("excerpt", pa.binary()),
    ],
}  # fmt: skip

_ORDER = (
    "trades", "book_diffs", "book_top", "book_events", "candles", "alerts", "errors",
    "book_ticker", "ticker", "kline",
)  # fmt: skip


def _schema(name: str, fields: Iterable[tuple[str, pa.DataType]]) -> pa.Schema:
    return pa.schema(
        list(fields),
        metadata={
            "wiretape.table": name,
            "wiretape.units": (
                f"decimal columns exact (engine {num.UNIT} units); times timestamp[ns, UTC]"
            ),
            "wiretape.partitioning": "hive: table / symbol / date (UTC day of the receive time)",
        },
    )


#: The last column of every table: the symbol's cross-venue name (``BTCUSDT`` on binance-futures
#: → ``BTC-USDT-PERP``: engine.codecs.base.instrument_name), so a join across venues is one join;
#: the venue's spelling is the ``symbol`` partition column
NORMALIZED = ("normalized", _STR)

#: Every table's file schema (the hive partition columns ``symbol`` and ``date`` are in the path).
TABLES: dict[str, pa.Schema] = {
    name: _schema(
        name, [*([c[:2] for c in ROWS[name]] if name in ROWS else _OTHER[name]), NORMALIZED]
    )
    for name in _ORDER
}


def row_maker(name: str) -> Callable[[Any], tuple[Any, ...]]:
    """The row of table ``name`` for one value object (the columns of :data:`ROWS`)."""
    cols = ROWS[name]
    get = attrgetter(*(c[2] for c in cols if c[2] is not None))
    convs = [(i, c[3]) for i, c in enumerate(cols) if c[3] is not None]

    def make(obj: Any) -> tuple[Any, ...]:
        row = list(get(obj))
        for i, conv in convs:
            row[i] = conv(row[i])
        return tuple(row)

    return make


# =============================================================== the partitioned writer


def table_dir(out: str | os.PathLike[str], name: str) -> Path:
    """Where table ``name`` of an export lives (the path to give a dataset reader)."""
    return Path(out) / f"table={name}"


def _day(ns: int) -> str:
    return (_EPOCH + dt.timedelta(days=ns // _DAY_NS)).isoformat()


class PartitionedWriter:
    """Rows in, a hive-partitioned table out: one streaming :class:`TableWriter` per symbol.

    Each symbol's rows go to the file of their UTC day; when a later day
    starts, the earlier day's file is finished (receive times run forward, so
    at most one file per symbol is open).
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        name: str,
        row_group_rows: int = ROW_GROUP_ROWS,
        normalized: Callable[[str], str] = str,
    ) -> None:
        #: a symbol's :data:`NORMALIZED` name (the venue codec's ``normalized``)
        self.name_of = normalized
        self.names: dict[str | None, tuple[str | None]] = {None: (None,)}
        self.root = table_dir(out, name)
        self.schema = TABLES[name]
        self.row_group_rows = row_group_rows
        self.open: dict[str | None, tuple[int, TableWriter]] = {}
        self.parts: dict[tuple[str, str], int] = {}
        self.total = 0

    def add(self, symbol: str | None, ns: int, row: tuple[Any, ...]) -> None:
        """Append ``row`` (the schema's columns but :data:`NORMALIZED`, added here) to ``symbol``'s
        partition of the day of ``ns``."""
        day = ns // _DAY_NS
        cur = self.open.get(symbol)
        if cur is None or cur[0] != day:
            if cur is not None:
                self.total += cur[1].close()
            cur = self.open[symbol] = (day, self._writer(symbol, _day(ns)))
        name = self.names.get(symbol)
        if name is None:
            name = self.names[symbol] = (self.name_of(symbol),)  # type: ignore[arg-type]
        cur[1].add(row + name)

    def _writer(self, symbol: str | None, date: str) -> TableWriter:
        sym = NO_SYMBOL if symbol is None else symbol
        k = self.parts.get((sym, date), 0)
        self.parts[(sym, date)] = k + 1
        # URI-encoded like every hive writer does ("SC/EUR" → "SC%2FEUR"; readers decode it)
        path = self.root / f"symbol={quote(sym, safe='')}" / f"date={date}" / f"part-{k}.parquet"
        return TableWriter(path, self.schema, self.row_group_rows)

    def close(self, empty_ns: int = 0) -> int:
        """Finish every open file; returns the table's row count.

        A table without rows gets one empty file on the day of ``empty_ns``.
        """
        if not self.parts:  # no rows: one empty file keeps the table readable
            self._writer(None, _day(empty_ns)).close()
        for _, w in self.open.values():
            self.total += w.close()
        self.open.clear()
        return self.total

    def abort(self) -> None:
        for _, w in self.open.values():
            w.abort()
        self.open.clear()


_PARTITIONS = ds.partitioning(pa.schema([("symbol", _STR), ("date", pa.date32())]), flavor="hive")
#: the order rows were written in, restored on reading (dataset fragments come in path order)
_SORT = {"book_top": ["time", "symbol", "side", "level"]}


def read_table(out: str | os.PathLike[str], name: str) -> pa.Table:
    """Table ``name`` of the export in ``out``, with its ``symbol`` and ``date`` columns.

    Sorted by ``seq`` (``book_top``: time, symbol, side, level); rows of one
    frame keep their written order.
    """
    t = ds.dataset(table_dir(out, name), format="parquet", partitioning=_PARTITIONS).to_table()
    keys = _SORT.get(name, ["seq"])
    return t.take(pc.sort_indices(t, [(k, "ascending") for k in keys]))
