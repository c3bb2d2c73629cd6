"""The Python API for notebooks: ``import engine; j = engine.open(path)``.

Owns :class:`Journal`, a read-only handle on one journal that answers what the
commands answer, as Python objects: frames (Arrow record batches or
:class:`~engine.journal.schema.Frame` objects), typed events, replayed outputs,
the book and every reducer's state at an instant (the value classes are in
:mod:`engine.replay.api_types`), and the export tables as pyarrow Tables.
Must not: write into the journal it reads (no checkpoints, no exports there:
the export tables are built in a temporary directory elsewhere), fold, decode
or export by itself (that is :class:`engine.replay.replay.Replay`,
:func:`~engine.replay.replay.state_at`, the pipeline and
:func:`~engine.replay.export.export_journal`), or hold more than one record
batch of frames at a time in the streaming methods.

Filters, the same on every method (one vocabulary, the CLI's):

``start=`` / ``end=``  (``engine replay --from`` / ``--to``)
    A frame is in the window if it was received at or after ``start``; the
    window ends before the first frame received after ``end`` (the prefix rule
    of "state at T", so ``end`` is inclusive).  State never starts at
    ``start``: outputs and states are those of the fold from the journal's
    beginning (or an exact checkpoint).
a time
    ISO-8601 text as on the command line (``"2021-10-12T00:28:40.5Z"``, UTC
    unless a zone is given), an ``int`` of epoch **nanoseconds**, a ``float`` of
    epoch seconds, or a :class:`datetime.datetime` (naive means UTC).
``symbols=``
    One symbol, a comma-separated string, or an iterable; case-insensitive.
    Items that concern no single symbol (connection events, subscription
    acks, undecodable frames, symbol-less outputs) are kept.

Errors: an unknown symbol raises ValueError listing the journal's symbols; a
time outside the journal (a window that misses it, an instant before its
first or after its last frame) raises ValueError naming the journal's span;
a path that is not a journal raises :class:`engine.journal.reader.NotAJournal`.

Example::

    >>> import engine
    >>> j = engine.open("fixtures/journals/binance-spot")
    >>> j.exchange, j.symbols
    ('binance', ['BLZETH', 'LRCBTC', 'NKNUSDT', 'RUNEEUR'])
    >>> str(j.span)
    '2021-10-12T00:28:31.159679000Z … 2021-10-12T00:29:02.077861800Z'
    >>> j.book_at("NKNUSDT", "2021-10-12T00:29:00Z").best_bid
    (Decimal('0.3527'), Decimal('9602'))
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from datetime import datetime
from numbers import Integral
from pathlib import Path
from typing import Any, TypeAlias

import attrs
import pyarrow as pa

from engine.codecs.registry import get_codec
from engine.journal.location import Where, as_path
from engine.journal.reader import JournalReader, frames_of, read_segment
from engine.journal.schema import Frame
from engine.pipeline import Pipeline
from engine.replay.api_types import BookAt, OutputRecord, Span, StateAt
from engine.replay.export import TABLES, export_journal, read_table
from engine.replay.replay import Replay, chunks, pipeline_for, state_at
from engine.timefmt import float_seconds_ns, format_ns, parse_time

__all__ = ["open", "Journal", "Span", "OutputRecord", "StateAt", "BookAt", "TABLE_NAMES"]

#: A time: ISO-8601 text, epoch ns (int), epoch seconds (float) or a datetime (naive = UTC).
Time: TypeAlias = str | int | float | datetime
#: Symbols: one, comma-separated ("BTCUSDT,ETHUSDT"), or an iterable; None: all.
Symbols: TypeAlias = str | Iterable[str] | None

#: The tables :meth:`Journal.table` builds (those of ``engine export``).
TABLE_NAMES: tuple[str, ...] = tuple(TABLES)


def open(path: Where) -> Journal | Any:  # noqa: A001 - engine.open, like gzip.open
    """Open the journal directory ``path`` for reading (see :class:`Journal`).

    A capture set (``engine run --processes N``) or a folder of journals gives
    a :class:`engine.replay.catalog.JournalSet` of its member journals.

    Raises:
        engine.journal.reader.NotAJournal: ``path`` is not a journal directory.
    """
    from engine.journal.captureset import holds_journals

    if holds_journals(path):
        from engine.replay.catalog import JournalSet

        return JournalSet(path)
    return Journal(path)


# =============================================================== the journal


class Journal:
    """A read-only handle on one journal directory (see the module docstring for the filters).

    Streaming methods (:meth:`batches`, :meth:`frames`, :meth:`events`,
    :meth:`replay`) return generators holding one record batch at a time;
    their arguments are checked when called, before the first item.  Nothing
    is ever written into the journal: :meth:`table` exports into a private
    temporary directory, removed by :meth:`close` (or when the object goes away).

    Example::

        >>> j = Journal("fixtures/journals/binance-futures")
        >>> trades = j.table("trades", symbols="SUSHIUSDT")
        >>> trades.num_rows > 0
        True

    Raises:
        engine.journal.reader.NotAJournal: ``path`` is not a journal directory.
    """

    def __init__(self, path: Where) -> None:
        self.path = as_path(path)
        reader = JournalReader(self.path)
        self._manifest = reader.metadata
        self._span: Span | None | bool = False  # False: not read yet
        self._symbols: list[str] | None = None
        self._exports: dict[tuple[Any, ...], Path] = {}
        self._tmp: Path | None = None
        self._cleanup: weakref.finalize | None = None

    # ------------------------------------------------------------------ what it is

    @property
    def manifest(self) -> dict[str, Any]:
        """The journal's ``journal.json`` (a copy): exchange, symbols, creation time, config."""
        return json.loads(json.dumps(self._manifest))

    @property
    def exchange(self) -> str:
        """The exchange the journal was captured from (its codec): "binance", "sim" ..."""
        return str(self._manifest.get("exchange") or "sim")

    @property
    def symbols(self) -> list[str]:
        """The journal's symbols, sorted (the manifest's; decoded from the frames if it has none)."""
        if self._symbols is None:
            listed = self._manifest.get("symbols")
            if isinstance(listed, list) and listed:
                self._symbols = sorted({str(s).upper() for s in listed})
            else:
                seen = {getattr(ev, "symbol", None) for ev in self._events(_Filter())}
                self._symbols = sorted(s for s in seen if isinstance(s, str) and s)
        return list(self._symbols)

    @property
    def normalized(self) -> dict[str, str]:
        """Each symbol (the venue's spelling) → its cross-venue name: ``BASE-QUOTE`` spot,
        ``BASE-QUOTE-PERP`` perpetual, ``BASE-QUOTE-YYYYMMDD`` dated future (README, Symbols)."""
        codec = get_codec(self.exchange)
        return {s: codec.normalized(s) for s in self.symbols}

    @property
    def span(self) -> Span | None:
        """First and last frame (receive time, seq); None for a journal without frames.

        Read once: of a journal still being captured, open it again to see what came since.
        """
        if self._span is False:
            self._span = _edges(JournalReader(self.path))
        return self._span  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r}, exchange={self.exchange!r}, span={self.span})"

    # ------------------------------------------------------------------ frames and events

    def batches(
        self,
        start: Time | None = None,
        end: Time | None = None,
        *,
        symbols: Symbols = None,
        kinds: Iterable[str] | None = None,
        dirs: Iterable[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """The journal's frames as Arrow record batches (the segment schema), in seq order.

        ``kinds`` ("text", "rest", "open", "close", "error", "marker" ...) and
        ``dirs`` ("in", "out", "local") keep frames whose column is in the set.
        ``pl.from_arrow(j.batches(...))`` or ``pa.Table.from_batches(j.batches(...))``
        make one table of them (whole, in memory).
        """
        return self._batches(self._filter(start, end, symbols), kinds, dirs)

    def frames(
        self,
        start: Time | None = None,
        end: Time | None = None,
        *,
        symbols: Symbols = None,
        kinds: Iterable[str] | None = None,
        dirs: Iterable[str] | None = None,
    ) -> Iterator[Frame]:
        """The same frames as :meth:`batches`, one :class:`~engine.journal.schema.Frame` at a time."""
        # the outermost iterable is evaluated now: arguments are checked at the call, as in batches
        return (
            f
            for b in self.batches(start, end, symbols=symbols, kinds=kinds, dirs=dirs)
            for f in frames_of(b)
        )

    def events(
        self,
        start: Time | None = None,
        end: Time | None = None,
        *,
        symbols: Symbols = None,
        types: type | tuple[type, ...] = (),
    ) -> Iterator[Any]:
        """The typed events of the frames in the window, as the pipeline's reducers see them.

        Decoded by the journal's codec (:mod:`engine.events`: ``Trade``,
        ``DepthDiff``, ``BookSnapshot`` ..., ``DecodeError`` for bad bytes) plus
        the connection events of local and outbound frames.  ``types`` keeps
        only events of those classes, e.g. ``types=engine.events.Trade``.
        """
        return self._events(self._filter(start, end, symbols, types))

    # ------------------------------------------------------------------ the fold

    def replay(
        self,
        start: Time | None = None,
        end: Time | None = None,
        *,
        symbols: Symbols = None,
        types: type | tuple[type, ...] = (),
    ) -> Iterator[OutputRecord]:
        """Replay through the journal's pipeline: ``(seq, output)`` for frames in the window.

        The outputs ``engine replay`` reports (and ``engine run`` computed live):
        ``BookSynced``, ``TradeStats``, ``CandleClosed``, alerts ...  ``types``
        keeps only outputs of those classes.
        """
        return self._replay(self._filter(start, end, symbols, types))

    def state_at(self, t: Time, *, symbols: Symbols = None) -> StateAt:
        """Every reducer's state at instant ``t`` (nearest checkpoint at or before it, then fold).

        ``symbols`` only narrows :attr:`StateAt.symbols` (what ``summary``
        covers and ``book`` accepts); the states are always whole.
        """
        at = self.resolve_instant(t, "t")
        wanted = self.resolve_symbols(symbols)
        pipeline, used, folded = state_at(self.path, at)  # checkpoints=None: nothing written
        syms = tuple(sorted(wanted)) if wanted else tuple(self.symbols)
        return StateAt(at, pipeline, used, folded, syms)

    def book_at(self, symbol: str, t: Time, *, depth: int = 10) -> BookAt:
        """The order book of ``symbol`` at instant ``t``, like ``engine book --symbol S --at T``."""
        sym = self._one_symbol(symbol)
        return self.state_at(t, symbols=sym).book(sym, depth)

    # ------------------------------------------------------------------ export tables

    def table(
        self,
        name: str,
        start: Time | None = None,
        end: Time | None = None,
        *,
        symbols: Symbols = None,
        top: int = 10,
        interval: float = 1.0,
        polars: bool = False,
    ) -> Any:
        """One table of ``engine export`` as a pyarrow Table, or a Polars DataFrame with ``polars=True``.

        ``name`` is one of :data:`TABLE_NAMES`; ``top`` and ``interval``
        (seconds) shape ``book_top`` as ``engine export --top/--interval`` do.
        ``polars=True`` needs the ``polars`` package (not a dependency of the engine).
        The export runs once per distinct set of arguments (all tables at
        once) into a temporary directory outside the journal; the table is read
        whole into memory, so narrow big journals with ``start``/``end``/``symbols``.
        """
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}; tables: {', '.join(TABLE_NAMES)}")
        table = self.tables(start, end, symbols=symbols, top=top, interval=interval)[name]
        if not polars:
            return table
        try:
            import polars as pl
        except ImportError:
            raise ImportError("table(..., polars=True) needs polars: pip install polars") from None
        return pl.from_arrow(table)

    def tables(
        self,
        start: Time | None = None,
        end: Time | None = None,
        *,
        symbols: Symbols = None,
        top: int = 10,
        interval: float = 1.0,
    ) -> dict[str, pa.Table]:
        """Every table of ``engine export`` (name → pyarrow Table); see :meth:`table`."""
        out = self._export(self._filter(start, end, symbols), top, interval)
        files = json.loads((out / "export.json").read_text())["tables"]
        return {name: read_table(out, name) for name in files}

    def close(self) -> None:
        """Remove the temporary export directory (the journal itself is never touched)."""
        self._exports.clear()
        if self._cleanup is not None:
            self._cleanup()
        self._tmp = self._cleanup = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _filter(
        self,
        start: Time | None,
        end: Time | None,
        symbols: Symbols,
        types: type | tuple[type, ...] = (),
    ) -> _Filter:
        """The arguments every method shares, checked (raises before any item is produced)."""
        lo, hi = self.resolve_window(start, end)
        return _Filter(lo, hi, self.resolve_symbols(symbols), _types(types))

    def _batches(
        self, f: _Filter, kinds: Iterable[str] | None, dirs: Iterable[str] | None
    ) -> Iterator[pa.RecordBatch]:
        # the reader keeps recv_ns >= lo and passes sealed segments wholly before it unread
        reader = JournalReader(self.path, start_ns=f.lo, kinds=kinds, dirs=dirs)
        pipeline = pipeline_for(self._manifest) if f.wanted is not None else None
        for batch in chunks(reader, 0, f.hi):
            if pipeline is not None and batch.num_rows:
                keep = [f.concerns(pipeline, frame) for frame in frames_of(batch)]
                batch = batch.filter(pa.array(keep, pa.bool_()))
            if batch.num_rows:
                yield batch

    def _events(self, f: _Filter) -> Iterator[Any]:
        pipeline = pipeline_for(self._manifest)
        for batch in self._batches(_Filter(f.lo, f.hi), None, None):
            for frame in frames_of(batch):
                yield from filter(f.keeps, _events_of(pipeline, frame))

    def _replay(self, f: _Filter) -> Iterator[OutputRecord]:
        r = Replay(self.path, start_ns=f.lo, end_ns=f.hi)  # checkpoints=None: nothing written
        for seq, o in r.outputs():
            if f.keeps(o):
                yield OutputRecord(seq, o)

    def _export(self, f: _Filter, top: int, interval: float) -> Path:
        key = (f.lo, f.hi, f.wanted, top, interval)
        out = self._exports.get(key)
        if out is not None and (out / "export.json").is_file():
            return out
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="wiretape-tables-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._tmp, True)
        out = self._tmp / f"export-{len(self._exports) + 1}"
        export_journal(
            self.path,
            out,
            symbols=sorted(f.wanted) if f.wanted else None,
            top=top,
            interval_s=interval,
            start_ns=f.lo,
            end_ns=f.hi,
        )
        self._exports[key] = out
        return out

    def resolve_window(self, start: Time | None, end: Time | None) -> tuple[int | None, int | None]:
        """Both ends as epoch ns; refuses an empty window or one that misses the journal (the CLI's rule too)."""
        lo = None if start is None else _instant(start, "start")
        hi = None if end is None else _instant(end, "end")
        if lo is not None and hi is not None and hi < lo:
            raise ValueError(f"end {format_ns(hi)} is before start {format_ns(lo)}")
        span = self.span
        if span is not None:
            if lo is not None and lo > span.last_ns:
                raise ValueError(
                    f"start {format_ns(lo)} is after the last frame of {self.path};"
                    f" the journal spans {span}"
                )
            if hi is not None and hi < span.first_ns:
                raise ValueError(
                    f"end {format_ns(hi)} is before the first frame of {self.path};"
                    f" the journal spans {span}"
                )
        return lo, hi

    def resolve_instant(self, t: Time, name: str) -> int:
        """An instant inside the journal's span, as epoch ns (``engine book --at`` uses it too)."""
        at = _instant(t, name)
        span = self.span
        if span is None:
            raise ValueError(f"{self.path} holds no frames: there is no state at any time")
        if at not in span:
            where = "before the first" if at < span.first_ns else "after the last"
            raise ValueError(
                f"{name} {format_ns(at)} is {where} frame of {self.path}; the journal spans {span}"
            )
        return at

    def resolve_symbols(self, symbols: Symbols) -> frozenset[str] | None:
        """The symbols asked for, upper-cased; None: all.  Unknown ones raise, listing the known."""
        if symbols is None:
            return None
        items = symbols.split(",") if isinstance(symbols, str) else list(symbols)
        if not all(isinstance(s, str) for s in items):
            raise TypeError(f"symbols must be strings, not {items!r}")
        wanted = frozenset(s.strip().upper() for s in items if s.strip())
        if not wanted:
            raise ValueError("symbols= names no symbol; leave it out for all symbols")
        known = self.symbols
        unknown = sorted(wanted - set(known))
        if unknown:
            raise ValueError(
                f"unknown symbol{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in"
                f" {self.path}; the journal's symbols: {', '.join(known) or 'none'}"
            )
        return wanted

    def _one_symbol(self, symbol: str) -> str:
        if not isinstance(symbol, str) or "," in symbol:
            raise ValueError(f"one symbol, like {self.symbols[:1] or ['BTCUSDT']}, not {symbol!r}")
        wanted = self.resolve_symbols(symbol)
        assert wanted is not None and len(wanted) == 1
        return next(iter(wanted))


# =============================================================== helpers


def _instant(value: Any, name: str) -> int:
    """A time in any of the accepted forms (module docstring) → epoch ns.

    Text and datetimes go through the command line's parser
    (:func:`engine.timefmt.parse_time`), so both accept the same forms.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name}: a time, not {value!r}")
    if isinstance(value, Integral):
        return int(value)  # epoch ns
    if isinstance(value, float):
        try:
            return float_seconds_ns(value)  # epoch seconds
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    try:
        if isinstance(value, datetime):
            return parse_time(value.isoformat())
        if isinstance(value, str):
            return parse_time(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    raise TypeError(
        f"{name}: a time is ISO-8601 text, epoch ns (int), epoch seconds (float) or a"
        f" datetime, not {type(value).__name__}"
    )


def _types(types: type | tuple[type, ...]) -> tuple[type, ...]:
    t = types if isinstance(types, tuple) else (types,)
    if not all(isinstance(x, type) for x in t):
        raise TypeError(f"types must be classes (e.g. engine.events.Trade), not {types!r}")
    return t


def _events_of(pipeline: Pipeline, f: Frame) -> Any:
    return pipeline.events_of(f.seq, f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)


@attrs.frozen
class _Filter:
    """A method's checked filters: window ends (epoch ns), symbols (None: all), types (): all)."""

    lo: int | None = None
    hi: int | None = None
    wanted: frozenset[str] | None = None
    types: tuple[type, ...] = ()

    def keeps(self, item: Any) -> bool:
        """An event or output: of one of ``types``, and of a wanted symbol or of none."""
        if self.types and not isinstance(item, self.types):
            return False
        sym = getattr(item, "symbol", None)
        return self.wanted is None or not sym or sym in self.wanted

    def concerns(self, pipeline: Pipeline, frame: Frame) -> bool:
        """A frame: one of its events is of a wanted symbol, or none of them has a symbol."""
        syms = {getattr(ev, "symbol", None) for ev in _events_of(pipeline, frame)} - {None, ""}
        return self.wanted is None or not syms or not syms.isdisjoint(self.wanted)


def _edges(reader: JournalReader) -> Span | None:
    """The first and last frame of a journal, reading its first batch and its last segment only."""
    first: pa.RecordBatch | None = None
    for batch in (b for seg in reader.segments for b in read_segment(seg)):
        if batch.num_rows:
            first = batch.slice(0, 1)
            break
    if first is None:
        return None
    for seg in reversed(reader.segments):
        last = None
        for batch in read_segment(seg, last=True):
            if batch.num_rows:
                last = batch.slice(batch.num_rows - 1)
        if last is not None:
            ns, seq = ([b.column(c)[0].as_py() for b in (first, last)] for c in ("recv_ns", "seq"))
            return Span(ns[0], ns[1], seq[0], seq[1])
    return None  # pragma: no cover - a first frame implies a last one
