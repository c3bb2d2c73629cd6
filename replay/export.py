"""Export a journal as hive-partitioned Parquet tables, streaming: ``engine export DIR --to OUTDIR``.

Owns which rows each table gets: one replay of the journal (the pipeline of
:mod:`engine.replay.replay`, which this module only *watches*: events through
the pipeline's listener hook, outputs as the fold returns them), the export
directory's life (built beside its final place, moved there complete) and
``export.json``.  The columns, the partitioned files and reading them back
are :mod:`engine.replay.export_tables`'.  Must not: change the fold, write
into the journal (no checkpoints, no tables), or mix a new export into an
old one.

Tables (``OUT/table=<name>/symbol=<S>/date=<YYYY-MM-DD>/part-<k>.parquet``)::

    trades       every trade the trade-selection rule of engine.trades counts,
                 applied per trade kind (both kinds are exported, each once:
                 duplicate ids and untimed trades are left out and counted)
    book_diffs   one row per level of each depth diff (duplicates from overlapping
                 connections dropped: a diff whose last_id is not above the
                 symbol's highest seen is skipped); qty 0 = level removed
    book_top     the top ``top`` levels per side of every *published* book (primed
                 or synced) at every multiple of ``interval`` (UTC-aligned receive
                 time), long form, with the book's sync_state ("primed": a snapshot
                 no diff has chained onto yet, or "synced")
    book_events  every output of the book reducer about the book's health: synced
                 (a snapshot published: primed until a diff chains), gaps, buffer
                 overflows, drift, verified, verification abandoned, crossed books,
                 bookTicker mismatches; type, update id, a readable detail, JSON
    candles      every closed candle (CandleClosed outputs) with its SMA/EMA
    alerts       the anomaly detector's alerts (:func:`engine.replay.replay.is_alert`)
                 and KlineMismatch (our candle vs the exchange's kline)
    errors       every decode error (seq, source, reason, excerpt of the payload)
                 and every local ``error`` frame of the journal (connection, REST)
    book_ticker, ticker, kline
                 the exchange's own streams (bookTicker, 24 h ticker, kline) as decoded,
                 duplicates from overlapping connections dropped (a row whose update
                 id, or event time, is not beyond its series' highest seen); a ticker
                 column a venue does not send is null, and a ticker delta's row is
                 the full ticker merged from it (:mod:`engine.tickers`)

``book_top`` at time T is the state "at T" of :mod:`engine.replay.replay`
(every frame with ``recv_ns <= T`` folded), for every boundary T from the
first frame (or ``--from``) to the last frame (or ``--until`` if the journal
goes on): quiet stretches repeat the unchanged book at every boundary.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pyarrow as pa
import pyarrow.compute as pc

from engine import __version__, book_outputs, num
from engine.events import (
    BookTicker,
    ConnectionFailed,
    DecodeError,
    DepthDiff,
    Kline,
    Ticker24h,
    Trade,
)
from engine.journal.location import RemotePath, Where, as_path
from engine.num import render
from engine.pipeline import Pipeline
from engine.replay.export_tables import (
    DECIMAL,
    ROW_GROUP_ROWS,
    TABLES,
    OutputsWriter,
    PartitionedWriter,
    TableWriter,
    decimals,
    json_text,
    read_table,
    row_maker,
    table_dir,
)
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
    "read_table",
    "table_dir",
]


def _alert_number(v: Any, unit: Any) -> int | None:
    """An alert's value as engine units: units as they are, counts (bps, ms) scaled up."""
    if not isinstance(v, int) or isinstance(v, bool):
        return None
    return v if unit in (None, num.UNIT) else v * num.ONE


def _alert_row(frame_seq: int, o: Any) -> tuple[Any, ...]:
    unit = getattr(o, "unit", None)
    kind = getattr(o, "kind", None)
    detail = getattr(o, "detail", None)
    exch = getattr(o, "exch_ms", None)
    if detail is None and type(o).__name__ == "KlineMismatch":
        detail = ", ".join(f"{f}: ours {a} exchange {b}" for f, a, b in o.fields)
    return (
        frame_seq,
        getattr(o, "recv_ns", None),
        type(o).__name__,
        kind if isinstance(kind, str) else None,
        None if exch is None else exch * 1_000_000,
        _alert_number(getattr(o, "value", None), unit),
        _alert_number(getattr(o, "threshold", None), unit),
        unit if isinstance(unit, str) else None,
        detail if isinstance(detail, str) else None,
        json_text(o),
    )


#: book_events: per book output type, (the update id it is about, a readable detail).
_BOOK_EVENT: dict[str, Callable[[Any], tuple[int | None, str]]] = {
    "BookSynced": lambda o: (
        o.last_id,
        f"{'resync' if o.resync else 'sync'}: snapshot {o.snapshot_id}, book at {o.last_id},"
        f" {o.bid_levels} bid / {o.ask_levels} ask levels, {o.replayed} buffered diffs replayed"
        " (primed until a diff chains on)",
    ),
    "GapDetected": lambda o: (
        o.book_id,
        f"{o.reason}: book at {o.book_id}, diff {o.first_id}..{o.last_id}"
        + ("" if o.prev_id is None else f" (prev {o.prev_id})"),
    ),
    "ChecksumMismatch": lambda o: (
        o.last_id,
        f"checksum mismatch: book at {o.book_id}, diff to {o.last_id}, exchange {o.checksum}",
    ),
    "BufferOverflow": lambda o: (None, f"diff buffer full at {o.limit}: oldest diffs dropped"),
    "DriftDetected": lambda o: (
        o.last_id,
        f"{len(o.bids)} bid / {len(o.asks)} ask levels differ from {o.source} {o.snapshot_id}",
    ),
    "BookVerified": lambda o: (o.last_id, f"{o.levels} levels agree with snapshot {o.snapshot_id}"),
    "VerificationAbandoned": lambda o: (None, o.reason),
    "BookWithdrawn": lambda o: (
        o.book_id,
        f"{o.reason}: not published"
        + (
            " (kept: the next connection's first diff must chain)"
            if o.kept
            else " until a snapshot"
        ),
    ),
    "BookResumed": lambda o: (o.last_id, f"diff {o.first_id}..{o.last_id} chains on {o.book_id}"),
    "CrossedBook": lambda o: (o.last_id, f"bid {render(o.bid)} >= ask {render(o.ask)}"),
    "TopOfBookMismatch": lambda o: (
        o.update_id,
        f"bookTicker of seq {o.ticker_seq}: ours {'/'.join(render(v) for v in o.ours)},"
        f" theirs {'/'.join(render(v) for v in o.theirs)}",
    ),
}


def _book_event_row(frame_seq: int, o: Any) -> tuple[Any, ...]:
    name = type(o).__name__
    update_id, detail = _BOOK_EVENT.get(name, lambda o: (None, ""))(o)
    return (frame_seq, o.recv_ns, name, update_id, detail or None, json_text(o))


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
    #: book_ticker / ticker / kline rows dropped as duplicates of overlapping connections
    duplicate_streams: int = 0

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


#: Events the exporter keeps (pipeline listener) → the table their rows go to.
_EVENT_TABLE: dict[type, str] = {
    Trade: "trades",
    DepthDiff: "book_diffs",
    BookTicker: "book_ticker",
    Ticker24h: "ticker",
    Kline: "kline",
    DecodeError: "errors",
    ConnectionFailed: "errors",
}
#: The exchange's streams: where each row sits in its series (symbol, and interval for
#: klines) and the key that runs forward in it (a row not beyond the series' highest
#: key is a duplicate from an overlapping connection).  A ticker's key is its time and
#: then its last trade id: Coinbase sends a ticker per trade, several in one millisecond.
_STREAM_KEY: dict[type, Callable[[Any], tuple[tuple[Any, ...], Any]]] = {
    BookTicker: lambda e: ((BookTicker, e.symbol), e.update_id),
    Ticker24h: lambda e: (
        (Ticker24h, e.symbol),
        None if e.exch_ms is None else (e.exch_ms, -1 if e.last_id is None else e.last_id),
    ),
    Kline: lambda e: ((Kline, e.symbol, e.interval), e.exch_ms),
}
_BOOK_OUTPUTS = frozenset(getattr(book_outputs, n) for n in book_outputs.__all__)


class _Exporter:
    def __init__(
        self,
        replay: Replay,
        writers: dict[str, PartitionedWriter],
        symbols: frozenset[str] | None,
        top: int,
        interval_ns: int | None,
    ) -> None:
        self.r = replay
        self.p: Pipeline = replay.pipeline
        #: the events of the frames folded since the last feed (pipeline listener)
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
        self.stream_hi: dict[tuple[Any, ...], Any] = {}
        self.dup_streams = 0
        self.next_t: int | None = None
        self.last_recv: int | None = None
        self.first_recv: int | None = None
        self.rows = {name: row_maker(name) for name in ("trades", "book_ticker", "ticker", "kline")}
        self.candle_row = row_maker("candles")

    def _keep(self, seq: int, events: Sequence[Any]) -> None:
        keep = self.events.append
        for ev in events:
            if type(ev) in _EVENT_TABLE:
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
            last = self.last_recv
            if end is not None:
                last = end if beyond else min(last, end)
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
        if self.first_recv is None:
            self.first_recv = max(batch.column(1)[0].as_py(), self.start or 0)
        start = self.start
        events, self.events = self.events, []
        w = self.w
        for ev in events:
            sym = getattr(ev, "symbol", None)
            if (start is not None and ev.recv_ns < start) or not self.wanted(sym):
                continue
            tp = type(ev)
            if tp is DepthDiff:
                self.diff(ev)
            elif tp is DecodeError:
                w["errors"].add(
                    None,
                    ev.recv_ns,
                    (ev.seq, ev.recv_ns, "decode", None, ev.source, ev.reason, ev.excerpt),
                )
            elif tp is ConnectionFailed:
                w["errors"].add(
                    None,
                    ev.recv_ns,
                    (ev.seq, ev.recv_ns, "connection", ev.conn, ev.source, ev.reason, None),
                )
            elif tp is Trade:
                if self.select[ev.agg].select(self.selections[ev.agg], ev) is not None:
                    w["trades"].add(sym, ev.recv_ns, self.rows["trades"](ev))
                # else: counted in the kind's selection state (duplicates, untimed)
            elif tp is Ticker24h and ev.partial:
                pass  # a delta: its row is the merged ticker, an output (engine.tickers)
            elif self.fresh(ev):
                name = _EVENT_TABLE[tp]
                w[name].add(sym, ev.recv_ns, self.rows[name](ev))
        for seq, o in outs:
            sym = getattr(o, "symbol", None)
            recv = getattr(o, "recv_ns", None)
            if (start is not None and recv is not None and recv < start) or not self.wanted(sym):
                continue
            tp = type(o)
            if tp in _BOOK_OUTPUTS:
                w["book_events"].add(sym, o.recv_ns, _book_event_row(seq, o))
            elif tp.__name__ == "CandleClosed":
                w["candles"].add(sym, o.recv_ns, self.candle_row(o))
            elif tp is Ticker24h:  # a full ticker merged from a delta
                if self.fresh(o):
                    w["ticker"].add(sym, o.recv_ns, self.rows["ticker"](o))
            elif is_alert(o) or tp.__name__ == "KlineMismatch":
                w["alerts"].add(sym, o.recv_ns, _alert_row(seq, o))

    def fresh(self, ev: Any) -> bool:
        """Is this exchange-stream event beyond its series' highest key (not a duplicate)?"""
        series, key = _STREAM_KEY[type(ev)](ev)
        if key is None:
            return True
        hi = self.stream_hi.get(series)
        if hi is not None and key <= hi:
            self.dup_streams += 1
            return False
        self.stream_hi[series] = key
        return True

    def diff(self, d: DepthDiff) -> None:
        hi = self.diff_hi.get(d.symbol)
        if hi is not None and d.last_id <= hi:
            self.dup_diffs += 1
            return
        self.diff_hi[d.symbol] = d.last_id
        add = self.w["book_diffs"].add
        exch = None if d.exch_ms is None else d.exch_ms * 1_000_000
        head = (d.seq, d.recv_ns, exch, d.first_id, d.last_id, d.prev_id)
        sym, recv = d.symbol, d.recv_ns
        for side, levels in (("bid", d.bids), ("ask", d.asks)):
            for price, qty in levels:
                add(sym, recv, (*head, side, price, qty))

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
                    add(sym, ts_ns, (ts_ns, seq, book.last_id, sync, side, i, price, qty))


def _place(journal: Path | RemotePath, out: Path, replace: bool) -> None:
    """Refuse an ``out`` that would write into the journal or mix into an existing directory."""
    j, o = journal.resolve() if isinstance(journal, Path) else None, out.resolve()
    if j is not None and (o == j or j in o.parents or o in j.parents):
        raise ValueError(
            f"{out}: an export must not be written into (or over) the journal {journal}"
        )
    if (o / "journal.json").exists():
        raise ValueError(f"{out} holds a journal: choose another directory for the export")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not replace:
            raise FileExistsError(
                f"{out} is not empty: export into a new directory (or replace an earlier export)"
            )
        if not (out / "export.json").is_file():
            raise FileExistsError(
                f"{out} is not an earlier export (no export.json): not replacing it"
            )


def export_journal(
    journal_dir: Where,
    out_dir: str | os.PathLike[str],
    *,
    symbols: Iterable[str] | None = None,
    top: int = 10,
    interval_s: float | None = 1.0,
    start_ns: int | None = None,
    end_ns: int | None = None,
    row_group_rows: int = ROW_GROUP_ROWS,
    on_chunk: Callable[[int, Pipeline], None] | None = None,
    replace: bool = False,
) -> ExportResult:
    """Replay ``journal_dir`` once and write the tables of the module docstring to ``out_dir``.

    The export is built in a sibling directory and moved to ``out_dir`` when
    complete: an interrupted export leaves nothing under ``out_dir``.

    Args:
        out_dir: a new or empty directory; never inside the journal.
        symbols: only these symbols (upper-cased); None: all.
        top: levels per side in ``book_top``.
        interval_s: ``book_top`` boundary spacing (receive time); None: no book_top rows.
        start_ns, end_ns: report window (the fold starts at the beginning or at a
            checkpoint before ``start_ns``, and stops at ``end_ns``; see replay.py).
        row_group_rows: rows per Parquet row group (memory bound per open file).
        on_chunk: progress callback ``(frames, pipeline)``.
        replace: replace an earlier export in ``out_dir`` (one with ``export.json``);
            otherwise a non-empty ``out_dir`` is refused.

    Raises:
        engine.journal.reader.JournalError: not a journal, or a damaged one.
        FileExistsError: ``out_dir`` is not empty (see ``replace``).
        ValueError: bad arguments, or ``out_dir`` inside the journal.
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, not {top}")
    interval_ns = None if interval_s is None else int(round(interval_s * 1e9))
    if interval_ns is not None and interval_ns <= 0:
        raise ValueError(f"interval must be > 0 seconds, not {interval_s}")
    out = Path(out_dir)
    replay = Replay(journal_dir, start_ns=start_ns, end_ns=end_ns, on_chunk=on_chunk)
    _place(as_path(journal_dir), out, replace)
    wanted = frozenset(s.upper() for s in symbols) if symbols else None
    with staged(out) as stage:
        name_of = replay.pipeline.codec.normalized
        writers = {name: PartitionedWriter(stage, name, row_group_rows, name_of) for name in TABLES}
        ex = _Exporter(replay, writers, wanted, top, interval_ns)
        try:
            ex.run()
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        day = ex.first_recv if ex.first_recv is not None else (start_ns or 0)
        rows = {name: w.close(day) for name, w in writers.items()}
        c = replay.pipeline.counters
        result = ExportResult(
            out_dir=str(out),
            rows=rows,
            frames=replay.frames,
            decode_errors=c.decode_errors,
            duplicate_trades=sum(st.counts.duplicates for st in ex.selections.values()),
            untimed_trades=sum(st.counts.untimed for st in ex.selections.values()),
            duplicate_diffs=ex.dup_diffs,
            duplicate_streams=ex.dup_streams,
            checkpoint_seq=None if replay.restored is None else replay.restored.last_seq,
        )
        manifest = {
            "engine_version": __version__,
            "journal": str(as_path(journal_dir)),
            "exchange": replay.metadata.get("exchange"),
            "symbols": sorted(wanted) if wanted else replay.metadata.get("symbols"),
            "from_ns": start_ns,
            "until_ns": end_ns,
            "book_top": {"levels": top, "interval_ns": interval_ns},
            "layout": "hive: table=<name>/symbol=<symbol>/date=<UTC day>/part-<k>.parquet",
            "tables": {name: table_dir(".", name).name for name in TABLES},
            **result.to_json(),
        }
        (stage / "export.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return result


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A hidden sibling of ``out`` to build an export in: ``out`` when the block ends, else removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
        _move_into_place(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _move_into_place(stage: Path, out: Path) -> None:
    """``stage`` becomes ``out``: over an empty directory, or over an earlier export (replace)."""
    old = None
    if out.is_dir() and any(out.iterdir()):
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    elif out.is_dir():
        out.rmdir()
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
