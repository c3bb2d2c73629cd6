"""Export a journal as normalized Parquet tables, streaming: ``engine export DIR --to OUTDIR``.

Owns the table layouts, exact-decimal columns, and the streaming table
writer that ``engine replay --out`` uses too.  Must not: hold more than one
row group per table in memory, change the fold (the pipeline is the one of
:mod:`engine.replay.replay`; this module only *watches* it), or write a
table under its final name before it is complete.

Tables (one ``<name>.parquet`` each, plus ``export.json`` describing the run)::

    trades      one row per trade that the trade-selection rule of engine.trades
                counts, applied per trade kind (both kinds are exported, each
                once: duplicate ids and untimed trades are left out and counted):
                seq, recv_ns, exch_ms, txn_ms, symbol,
                trade_id, first_id, last_id, agg, side, price, qty
    book_diffs  one row per level of each depth diff (duplicates from overlapping
                connections dropped: a diff whose last_id is not above the
                symbol's highest seen is skipped): seq, recv_ns, exch_ms, symbol,
                first_id, last_id, prev_id, side, price, qty (0 = level removed)
    book_top    the top ``top`` levels per side of every *published* book (primed or
                synced) at every multiple of ``interval`` (UTC-aligned receive time),
                long form: ts_ns, seq (last frame folded), symbol, update_id,
                sync_state ("primed": a snapshot no diff has chained onto yet, or
                "synced"), side, level, price, qty
    candles     every closed candle (CandleClosed outputs) with its SMA/EMA
    alerts      every alert output (:func:`engine.replay.replay.is_alert`):
                seq, recv_ns, type, kind, symbol, exch_ms, value, threshold, unit,
                detail, output (the full output as JSON)

Exactness: prices, quantities, volumes are ``decimal128(38, 8)`` built from
the engine's integer 1e-8 units (the ints *are* the unscaled values: no
float, no rounding); times are ``int64`` (``*_ns`` epoch nanoseconds,
``*_ms`` the exchange's epoch milliseconds).  ``seq`` is the journal frame.

``book_top`` at time T is the state "at T" of :mod:`engine.replay.replay`
(every frame with ``recv_ns <= T`` folded), for every boundary T from the
first frame (or ``--from``) to the last frame (or ``--until`` if the journal
goes on): quiet stretches repeat the unchanged book at every boundary.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import attrs
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import __version__, serde
from engine.events import DepthDiff, Trade
from engine.pipeline import Pipeline
from engine.replay.replay import Replay, chunks, is_alert
from engine.trades import TradeSelector

__all__ = [
    "DECIMAL",
    "decimals",
    "TableWriter",
    "OutputsWriter",
    "TABLES",
    "ExportResult",
    "export_journal",
]

#: Exact decimal type of engine 1e-8 units.
DECIMAL = pa.decimal128(38, 8)
_UNSCALED = pa.decimal128(38, 0)
ROW_GROUP_ROWS = 65_536
_IPC_SUFFIXES = (".arrow", ".arrows", ".ipc", ".feather")
#: enough digits for any decimal128 value: no rounding when scaling units to a Decimal
_EXACT = Context(prec=40)


def decimals(values: Sequence[int | None]) -> pa.Array:
    """Engine 1e-8 unit ints (or None) → ``decimal128(38, 8)``, exactly.

    The ints are the unscaled decimal values: ``123`` → ``0.00000123``.
    """
    try:
        ints = pa.array(values, pa.int64())
    except OverflowError:  # beyond 64 bits (a huge volume): assemble the 128-bit values
        raw = b"".join((v or 0).to_bytes(16, "little", signed=True) for v in values)
        valid = pa.array([v is not None for v in values], pa.bool_())
        mask = valid.buffers()[1] if None in values else None
        return pa.Array.from_buffers(DECIMAL, len(values), [mask, pa.py_buffer(raw)])
    return ints.cast(_UNSCALED).view(DECIMAL)


def _json_text(output: Any) -> str:
    """The output as plain JSON text: the stdlib encoder keeps >64-bit ints (notionals) exact."""
    return json.dumps(serde.dump(output), separators=(",", ":"))


# =============================================================== the streaming writer


class TableWriter:
    """Rows in, one Parquet (or Arrow IPC file) table out, a row group at a time.

    The table is written to ``<path>.partial`` and renamed on :meth:`close`, so
    a crashed or interrupted export never leaves a complete-looking table.

    Args:
        path: the final file; ``.arrow``/``.arrows``/``.ipc``/``.feather`` write the
            Arrow IPC file format, anything else Parquet (zstd).
        schema: the columns; ``DECIMAL`` columns take engine ints.
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
                _json_text(output),
            )
        )


# =============================================================== table layouts


def _schema(name: str, fields: list[tuple[str, pa.DataType]]) -> pa.Schema:
    return pa.schema(
        fields,
        metadata={
            "wiretape.table": name,
            "wiretape.units": "decimal columns exact (engine 1e-8 units); *_ns epoch ns, *_ms epoch ms",
        },
    )


_I64 = pa.int64()
_STR = pa.string()
_MA = pa.list_(pa.struct([("period", pa.int32()), ("value", DECIMAL)]))

TABLES: dict[str, pa.Schema] = {
    "trades": _schema(
        "trades",
        [
            ("seq", _I64),
            ("recv_ns", _I64),
            ("exch_ms", _I64),
            ("txn_ms", _I64),
            ("symbol", _STR),
            ("trade_id", _I64),
            ("first_id", _I64),
            ("last_id", _I64),
            ("agg", pa.bool_()),
            ("side", _STR),
            ("price", DECIMAL),
            ("qty", DECIMAL),
        ],
    ),
    "book_diffs": _schema(
        "book_diffs",
        [
            ("seq", _I64),
            ("recv_ns", _I64),
            ("exch_ms", _I64),
            ("symbol", _STR),
            ("first_id", _I64),
            ("last_id", _I64),
            ("prev_id", _I64),
            ("side", _STR),
            ("price", DECIMAL),
            ("qty", DECIMAL),
        ],
    ),
    "book_top": _schema(
        "book_top",
        [
            ("ts_ns", _I64),
            ("seq", _I64),
            ("symbol", _STR),
            ("update_id", _I64),
            ("sync_state", _STR),
            ("side", _STR),
            ("level", pa.int32()),
            ("price", DECIMAL),
            ("qty", DECIMAL),
        ],
    ),
    "candles": _schema(
        "candles",
        [
            ("seq", _I64),
            ("recv_ns", _I64),
            ("symbol", _STR),
            ("interval", _STR),
            ("start_ms", _I64),
            ("end_ms", _I64),
            ("open", DECIMAL),
            ("high", DECIMAL),
            ("low", DECIMAL),
            ("close", DECIMAL),
            ("volume", DECIMAL),
            ("taker_buy_volume", DECIMAL),
            ("trades", _I64),
            ("first_id", _I64),
            ("last_id", _I64),
            ("complete", pa.bool_()),
            ("filled", pa.bool_()),
            ("sma", _MA),
            ("ema", _MA),
        ],
    ),
    "alerts": _schema(
        "alerts",
        [
            ("seq", _I64),
            ("recv_ns", _I64),
            ("type", _STR),
            ("kind", _STR),
            ("symbol", _STR),
            ("exch_ms", _I64),
            ("value", DECIMAL),
            ("threshold", DECIMAL),
            ("unit", _STR),
            ("detail", _STR),
            ("output", _STR),
        ],
    ),
}


def _ma(pairs: Iterable[tuple[int, int]]) -> list[dict[str, Any]]:
    return [{"period": p, "value": Decimal(v).scaleb(-8, _EXACT)} for p, v in pairs]


def _alert_number(v: Any, unit: Any) -> int | None:
    """An alert's value as 1e-8 units: engine units as they are, counts (bps, ms) scaled up."""
    if not isinstance(v, int) or isinstance(v, bool):
        return None
    return v if unit in (None, "1e-8") else v * 100_000_000


def _alert_row(frame_seq: int, o: Any) -> tuple[Any, ...]:
    unit = getattr(o, "unit", None)
    kind = getattr(o, "kind", None)
    detail = getattr(o, "detail", None)
    return (
        frame_seq,
        getattr(o, "recv_ns", None),
        type(o).__name__,
        kind if isinstance(kind, str) else None,
        getattr(o, "symbol", None),
        getattr(o, "exch_ms", None),
        _alert_number(getattr(o, "value", None), unit),
        _alert_number(getattr(o, "threshold", None), unit),
        unit if isinstance(unit, str) else None,
        detail if isinstance(detail, str) else None,
        _json_text(o),
    )


# =============================================================== the export


@attrs.define
class ExportResult:
    """What an export wrote (also saved as ``export.json`` beside the tables)."""

    out_dir: str
    rows: dict[str, int]
    frames: int
    decode_errors: int
    duplicate_trades: int
    duplicate_diffs: int
    checkpoint_seq: int | None
    #: trades with no exchange time (the selection rule sets them aside)
    untimed_trades: int = 0

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


class _Exporter:
    def __init__(
        self,
        replay: Replay,
        writers: dict[str, TableWriter],
        symbols: frozenset[str] | None,
        top: int,
        interval_ns: int | None,
    ) -> None:
        self.r = replay
        self.p: Pipeline = replay.pipeline
        #: the market events of the frames folded since the last feed (pipeline listener)
        self.events: list[Any] = []
        self.p.listeners.append(self._keep)
        self.w = writers
        self.symbols = symbols
        self.top = top
        self.interval_ns = interval_ns
        self.start = replay.start_ns
        #: the trade-selection rule per trade kind (agg: False / True): the table holds
        #: both kinds, so a kind never sets the other aside, but each is deduplicated
        self.select = {False: TradeSelector("trade"), True: TradeSelector("aggTrade")}
        self.selections = {agg: sel.initial() for agg, sel in self.select.items()}
        self.diff_hi: dict[str, int] = {}
        self.dup_diffs = 0
        self.next_t: int | None = None
        self.last_recv: int | None = None

    def _keep(self, seq: int, events: Sequence[Any]) -> None:
        keep = self.events.append
        for ev in events:
            if type(ev) is Trade or type(ev) is DepthDiff:
                keep(ev)

    def wanted(self, symbol: str | None) -> bool:
        return self.symbols is None or symbol is None or symbol in self.symbols

    def run(self) -> None:
        p = self.p
        end = self.r.end_ns
        beyond = False  # a frame after --until exists: boundaries up to --until are final
        for batch in chunks(self.r.reader, p.counters.last_seq):
            if end is not None:
                late = pc.index(pc.greater(batch.column(1), end), True).as_py()
                if late >= 0:
                    batch, beyond = batch.slice(0, late), True
            if batch.num_rows:
                if self.interval_ns is None:
                    self.feed(batch)
                else:
                    self.feed_with_boundaries(batch)
                self.r.frames += batch.num_rows
                if self.r.on_chunk is not None:
                    self.r.on_chunk(batch.num_rows, p)
            if beyond:
                break
        if self.interval_ns is not None and self.last_recv is not None:
            # boundaries the journal has passed are final now
            last = end if beyond else self.last_recv
            if end is not None:
                last = min(last, end)  # type: ignore[type-var]
            while self.next_t is not None and self.next_t <= last:
                self.book_top(self.next_t)
                self.next_t += self.interval_ns

    def feed_with_boundaries(self, batch: pa.RecordBatch) -> None:
        """Feed ``batch`` in slices cut where receive time passes a snapshot boundary."""
        iv = self.interval_ns
        assert iv is not None
        recv = batch.column(1)
        n = batch.num_rows
        pos = 0
        while pos < n:
            rest = batch.slice(pos)
            if self.next_t is None:
                first = recv[pos].as_py()
                lo = first if self.start is None else max(first, self.start)
                self.next_t = -(-lo // iv) * iv
            idx = pc.index(pc.greater(rest.column(1), self.next_t), True).as_py()
            if idx < 0:
                self.feed(rest)
                return
            if idx:
                self.feed(rest.slice(0, idx))
            crossing = recv[pos + idx].as_py()
            while self.next_t < crossing:
                self.book_top(self.next_t)
                self.next_t += iv
            pos += idx

    def feed(self, batch: pa.RecordBatch) -> None:
        outs = self.p.feed_batch(batch)
        self.last_recv = self.p.counters.last_recv_ns
        start = self.start
        events, self.events = self.events, []
        for ev in events:
            if (start is not None and ev.recv_ns < start) or not self.wanted(ev.symbol):
                continue
            if type(ev) is Trade:
                self.trade(ev)
            else:
                self.diff(ev)
        for seq, o in outs:
            if (start is not None and getattr(o, "recv_ns", start) < start) or not self.wanted(
                getattr(o, "symbol", None)
            ):
                continue
            if type(o).__name__ == "CandleClosed":
                self.candle(o)
            elif is_alert(o):
                self.w["alerts"].add(_alert_row(seq, o))

    def trade(self, t: Trade) -> None:
        if self.select[t.agg].select(self.selections[t.agg], t) is None:
            return  # counted in the kind's selection state (duplicates, untimed)
        self.w["trades"].add(
            (
                t.seq,
                t.recv_ns,
                t.exch_ms,
                t.txn_ms,
                t.symbol,
                t.trade_id,
                t.first_id,
                t.last_id,
                t.agg,
                t.side,
                t.price,
                t.qty,
            )
        )

    def diff(self, d: DepthDiff) -> None:
        hi = self.diff_hi.get(d.symbol)
        if hi is not None and d.last_id <= hi:
            self.dup_diffs += 1
            return
        self.diff_hi[d.symbol] = d.last_id
        add = self.w["book_diffs"].add
        head = (d.seq, d.recv_ns, d.exch_ms, d.symbol, d.first_id, d.last_id, d.prev_id)
        for side, levels in (("bid", d.bids), ("ask", d.asks)):
            for price, qty in levels:
                add((*head, side, price, qty))

    def candle(self, c: Any) -> None:
        self.w["candles"].add(
            (
                c.seq,
                c.recv_ns,
                c.symbol,
                c.interval,
                c.start_ms,
                c.end_ms,
                c.open,
                c.high,
                c.low,
                c.close,
                c.volume,
                c.taker_buy_volume,
                c.trades,
                c.first_id,
                c.last_id,
                c.complete,
                c.filled,
                _ma(c.sma),
                _ma(c.ema),
            )
        )

    def book_top(self, ts_ns: int) -> None:
        try:
            red: Any = self.p.reducer("book")  # a BookReducer
        except KeyError:
            return
        state = self.p.state("book")
        add = self.w["book_top"].add
        seq = self.p.counters.last_seq
        for sym in sorted(state.symbols):
            if not self.wanted(sym):
                continue
            book = red.book(state, sym)
            if book is None:
                continue
            sync = red.sync_state(state, sym)
            bids, asks = book.top(self.top)
            for side, levels in (("bid", bids), ("ask", asks)):
                for i, (price, qty) in enumerate(levels):
                    add((ts_ns, seq, sym, book.last_id, sync, side, i, price, qty))


def export_journal(
    journal_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    symbols: Iterable[str] | None = None,
    top: int = 10,
    interval_s: float | None = 1.0,
    start_ns: int | None = None,
    end_ns: int | None = None,
    row_group_rows: int = ROW_GROUP_ROWS,
    on_chunk: Callable[[int, Pipeline], None] | None = None,
) -> ExportResult:
    """Replay ``journal_dir`` once and write the tables of the module docstring to ``out_dir``.

    Args:
        symbols: only these symbols (upper-cased); None: all.
        top: levels per side in ``book_top``.
        interval_s: ``book_top`` boundary spacing (receive time); None: no book_top rows.
        start_ns, end_ns: report window (the fold starts at the beginning or at a
            checkpoint before ``start_ns``, and stops at ``end_ns``; see replay.py).
        row_group_rows: rows per Parquet row group (memory bound per table).
        on_chunk: progress callback ``(frames, pipeline)``.

    Raises:
        engine.journal.reader.JournalError: not a journal, or a damaged one.
        ValueError: bad arguments.
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, not {top}")
    interval_ns = None if interval_s is None else int(round(interval_s * 1e9))
    if interval_ns is not None and interval_ns <= 0:
        raise ValueError(f"interval must be > 0 seconds, not {interval_s}")
    out = Path(out_dir)
    replay = Replay(journal_dir, start_ns=start_ns, end_ns=end_ns, on_chunk=on_chunk)
    wanted = frozenset(s.upper() for s in symbols) if symbols else None
    out.mkdir(parents=True, exist_ok=True)
    writers: dict[str, TableWriter] = {}
    try:
        for name, schema in TABLES.items():
            writers[name] = TableWriter(out / f"{name}.parquet", schema, row_group_rows)
        ex = _Exporter(replay, writers, wanted, top, interval_ns)
        ex.run()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    rows = {name: w.close() for name, w in writers.items()}
    c = replay.pipeline.counters
    result = ExportResult(
        out_dir=str(out),
        rows=rows,
        frames=replay.frames,
        decode_errors=c.decode_errors,
        duplicate_trades=sum(st.counts.duplicates for st in ex.selections.values()),
        untimed_trades=sum(st.counts.untimed for st in ex.selections.values()),
        duplicate_diffs=ex.dup_diffs,
        checkpoint_seq=None if replay.restored is None else replay.restored.last_seq,
    )
    manifest = {
        "engine_version": __version__,
        "journal": str(Path(journal_dir)),
        "exchange": replay.metadata.get("exchange"),
        "symbols": sorted(wanted) if wanted else replay.metadata.get("symbols"),
        "from_ns": start_ns,
        "until_ns": end_ns,
        "book_top": {"levels": top, "interval_ns": interval_ns},
        "tables": {name: f"{name}.parquet" for name in TABLES},
        **result.to_json(),
    }
    tmp = out / "export.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / "export.json")
    return result
