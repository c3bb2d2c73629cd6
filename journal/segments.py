"""One segment file: listing a journal's segments and reading one segment's sound batches.

Owns the reading of a single segment (:func:`read_segment`, :class:`_SegmentRead`):
the IPC file footer and summary checks, per-batch validation and checksum
(:mod:`.integrity`), torn tails of partial segments, salvage past damage, and
the footer-indexed random access (the last batch only; the batch holding a
seq), and :func:`size_problem`, the one check of a sealed segment's size
against ``journal.json`` (what a seek does of the segments it passes).  Also the reading errors and :func:`skipping_damaged`.  Must not: check
seq continuity *across* segments or the manifest (that is :mod:`.reader`'s
:class:`~engine.journal.reader.JournalReader`), or write anything.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pyarrow as pa

from engine.journal.inputs import open_input
from engine.journal.integrity import (
    FILE_MAGIC,
    FOOTER_KEY,
    SegmentSummary,
    check_batch,
    schema_problem,
)
from engine.journal.location import LocationError, RemotePath
from engine.journal.schema import MANIFEST

__all__ = [
    "JournalError",
    "JournalCorrupt",
    "NotAJournal",
    "Damage",
    "Segment",
    "TailReport",
    "list_segments",
    "read_segment",
    "size_problem",
    "skipping_damaged",
]

#: Sub-directories a journal directory may hold beside its segments (not frames).
COMPANION_DIRS = frozenset({"outputs", "checkpoints"})

_SEGMENT_RE = re.compile(r"^seg-(\d{6,})\.arrows(\.partial)?$")
_HINT = " (engine journal verify lists every problem; --skip-damaged reads past them)"
_READ_ERRORS = (pa.ArrowException, OSError, ValueError, EOFError)


class JournalError(Exception):
    """Base of journal reading errors (what to show a user instead of a traceback)."""


class NotAJournal(JournalError):
    """The path is not a journal directory (missing, a file, or holds no manifest nor segments)."""


class JournalCorrupt(JournalError):
    """A segment (or the manifest) is damaged, missing or foreign; the message names where."""


@attrs.frozen
class Damage:
    """One problem found while reading: where (segment, batch) and what."""

    segment: str  #: file name (``seg-000002.arrows``, ``journal.json``)
    batch: int | None  #: batch index inside the segment; None: the whole segment
    what: str

    def __str__(self) -> str:
        where = self.segment if self.batch is None else f"{self.segment} batch {self.batch}"
        return f"{where}: {self.what}"


@attrs.frozen
class Segment:
    path: Path | RemotePath
    index: int
    partial: bool

    @property
    def name(self) -> str:
        return self.path.name


@attrs.frozen
class TailReport:
    """What torn-tail recovery dropped from a partial segment."""

    segment: str
    kept_batches: int
    kept_frames: int
    good_bytes: int
    dropped_bytes: int
    error: str


_SKIP_SINK: contextvars.ContextVar[list[Damage] | None] = contextvars.ContextVar(
    "wiretape_skip_damaged", default=None
)


@contextmanager
def skipping_damaged(on: bool = True) -> Iterator[list[Damage]]:
    """Readers opened inside this block (``skip_damaged`` unset) skip damage instead of raising.

    Yields the list every such reader appends what it skipped to (a command may
    open one journal several times: de-duplicate before printing).
    """
    sink: list[Damage] = []
    token = _SKIP_SINK.set(sink if on else None)
    try:
        yield sink
    finally:
        _SKIP_SINK.reset(token)


def list_segments(path: Path | RemotePath) -> tuple[list[Segment], list[Any]]:
    """Segments of a journal directory in index order, and the files that are not segments.

    If both ``seg-N.arrows`` and ``seg-N.arrows.partial`` exist (a crash between
    sealing steps), the sealed one wins and the partial is listed as foreign.
    """
    segments: dict[int, Segment] = {}
    foreign: list[Any] = []
    entries: list[Any] = sorted(path.iterdir(), key=str)
    for entry in entries:
        if entry.name in (MANIFEST,) or entry.name.endswith(".tmp"):
            continue
        if entry.name in COMPANION_DIRS and entry.is_dir():
            continue
        m = _SEGMENT_RE.match(entry.name)
        if not m or not entry.is_file():
            foreign.append(entry)
            continue
        index, partial = int(m.group(1)), m.group(2) is not None
        seen = segments.get(index)
        if seen is not None:
            # sealed beats partial
            if seen.partial and not partial:
                foreign.append(seen.path)
            else:
                foreign.append(entry)
                continue
        segments[index] = Segment(entry, index, partial)
    return [segments[i] for i in sorted(segments)], foreign


def size_problem(seg: Segment, expect: SegmentSummary | None) -> str | None:
    """How a sealed segment's size differs from ``journal.json``'s record of it (None: it does not).

    One stat (a remote segment's size comes with the listing): what a seek
    checks of a segment it passes unread, and what a reading reports first.
    None too when the manifest records no size (written before sizes).
    """
    if expect is None or expect.size is None or seg.partial:
        return None
    size = seg.path.stat().st_size
    if size == expect.size:
        return None
    return f"{size} bytes, {MANIFEST} records {expect.size} (truncated, extended or replaced)"


def _not_store(exc: BaseException) -> None:
    """Re-raise a store failure (network, permissions): it is not damage of the journal."""
    if isinstance(exc, LocationError):
        raise exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


class _SegmentRead:
    """Reading one segment: yields ``(batch_index, batch)`` of sound batches, reports the rest."""

    def __init__(
        self,
        seg: Segment,
        *,
        required: bool,
        tails: list[TailReport] | None,
        damage: list[Damage] | None,
        expect: SegmentSummary | None = None,
        last: bool = False,
        from_seq: int | None = None,
    ) -> None:
        self.seg = seg
        self.last = last  # a sealed segment: its last batch only (random access by the footer)
        #: a sealed segment: start at the batch holding this seq (found through the footer)
        self.from_seq = from_seq
        self.sought = False  # batches before from_seq were passed unread
        self.required = required  # checksums required (not a legacy journal)
        self.tails = tails
        self.damage = damage  # None: raise on the first problem
        self.expect = expect  # journal.json's record of this segment
        self.summary: SegmentSummary | None = None
        self.frames = 0
        self.damaged = False

    def problem(self, batch: int | None, what: str) -> None:
        self.damaged = True
        d = Damage(self.seg.name, batch, what)
        if self.damage is None:
            raise JournalCorrupt(f"{self.seg.path.parent / str(d)}{_HINT}")
        self.damage.append(d)

    def __iter__(self) -> Iterator[tuple[int, pa.RecordBatch]]:
        seg = self.seg
        size = seg.path.stat().st_size
        if size == 0:
            if not seg.partial:
                self.problem(None, "0 bytes (emptied or truncated)")
            return
        bad = size_problem(seg, self.expect)
        if bad:  # skipping: still read what is sound in it (the reading names the damage)
            self.problem(None, bad)
        with open_input(seg.path) as f:
            magic = f.read(len(FILE_MAGIC))
            f.seek(0)
            if magic == FILE_MAGIC:
                yield from self._file(f, size)
            else:
                if not seg.partial and self.required:
                    self.problem(None, "sealed segment is not an Arrow IPC file (foreign or damaged)")
                    return
                yield from self._stream(f, size, 0)
        self._check_end()

    def _check_end(self) -> None:
        want = self.expect or self.summary
        if want is None or self.damaged or self.last or self.sought:
            return
        if self.frames != want.frames:
            source = "journal.json" if self.expect else "its footer"
            self.problem(None, f"holds {self.frames} frames, {source} says {want.frames}")

    def _file(self, f: pa.NativeFile, size: int) -> Iterator[tuple[int, pa.RecordBatch]]:
        seg = self.seg
        try:
            reader = pa.ipc.open_file(f)
        except _READ_ERRORS as exc:
            _not_store(exc)
            self.problem(None, f"truncated or damaged: no valid file footer ({_first_line(exc)})")
            # skipping: whatever whole batches precede the damage are still sound
            f.seek(8)
            yield from self._stream(f, size, 8, salvage=True)
            return
        bad = schema_problem(reader.schema)
        if bad:
            self.problem(None, bad)
            return
        raw = (reader.metadata or {}).get(FOOTER_KEY)
        try:
            if raw is None:
                raise ValueError("no wiretape footer summary")
            summary = SegmentSummary.decode(raw)
        except ValueError as exc:
            self.problem(None, f"foreign or damaged footer ({exc})")
            return
        if summary.index != seg.index:
            self.problem(
                None,
                f"its footer says it is segment {summary.index}: a copy or a renamed segment",
            )
            return
        if self.expect is not None and self.expect != summary:
            self.problem(None, f"footer {summary.to_json()} differs from journal.json's record")
            return
        self.summary = summary
        n = reader.num_record_batches
        start = n - 1 if self.last and n else 0
        found = self._seek(reader, n, summary) if self.from_seq is not None else None
        if found is not None:
            start, batch = found
            self.sought = start > 0
            self.frames += batch.num_rows
            yield start, batch
            start += 1
        for i in range(start, n):
            try:
                batch, md = reader.get_batch_with_custom_metadata(i)
            except _READ_ERRORS as exc:
                _not_store(exc)
                self.problem(i, f"unreadable ({_first_line(exc)})")
                continue
            bad = check_batch(batch, md, True)
            if bad:
                self.problem(i, bad)
                continue
            self.frames += batch.num_rows
            yield i, batch

    def _seek(
        self, reader: pa.ipc.RecordBatchFileReader, n: int, summary: SegmentSummary
    ) -> tuple[int, pa.RecordBatch] | None:
        """The batch holding ``from_seq`` (index, batch), by interpolation over the footer's batches.

        Batches hold contiguous seq ranges (the summary's ``first_seq..last_seq``)
        of about equal size, so a guess from the seq lands on or next to it: a
        few batches are read, not the ones before.  None (read from the start)
        when the segment does not hold it or a probed batch is not sound.
        """
        target = self.from_seq
        lo, hi = 0, n - 1
        seq_lo, seq_hi = summary.first_seq, summary.last_seq
        if target is None or seq_lo is None or seq_hi is None or not seq_lo < target <= seq_hi:
            return None
        while lo <= hi:
            i = lo + (target - seq_lo) * (hi - lo + 1) // (seq_hi - seq_lo + 1)
            i = min(max(i, lo), hi)
            try:
                batch, md = reader.get_batch_with_custom_metadata(i)
            except _READ_ERRORS as exc:
                _not_store(exc)
                return None
            if batch.num_rows == 0 or check_batch(batch, md, True):
                return None  # the plain read reports it
            seqs = batch.column(0)
            first, last = seqs[0].as_py(), seqs[batch.num_rows - 1].as_py()
            if target < first:
                hi, seq_hi = i - 1, first - 1
            elif target > last:
                lo, seq_lo = i + 1, last + 1
            else:
                return i, batch
            if seq_lo > seq_hi:
                return None
        return None

    def _stream(
        self, f: pa.NativeFile, size: int, start: int, salvage: bool = False
    ) -> Iterator[tuple[int, pa.RecordBatch]]:
        seg = self.seg
        tolerant = seg.partial or salvage  # a torn end is expected, not a problem
        kept_batches = kept_frames = 0
        good = start
        try:
            reader = pa.ipc.open_stream(f)
        except _READ_ERRORS as exc:
            _not_store(exc)
            if tolerant:
                self._tail(0, 0, start, size, f"torn schema: {_first_line(exc)}")
                return
            self.problem(None, f"not an Arrow IPC stream or file ({_first_line(exc)})")
            return
        bad = schema_problem(reader.schema)
        if bad:
            self.problem(None, bad)
            return
        i = 0
        while True:
            try:
                batch, md = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                break
            except _READ_ERRORS as exc:
                _not_store(exc)
                if tolerant:
                    self._tail(kept_batches, kept_frames, good, size - good, _first_line(exc))
                    return
                self.problem(i, f"unreadable at byte {good} ({_first_line(exc)})")
                return  # framing lost: nothing after it can be found
            bad = check_batch(batch, md, self.required)
            if bad:
                if tolerant:  # a torn or damaged write at the end of the log
                    self._tail(kept_batches, kept_frames, good, size - good, bad)
                    return
                self.problem(i, bad)
                good = f.tell()
                i += 1
                continue
            good = f.tell()
            kept_batches += 1
            kept_frames += batch.num_rows
            self.frames += batch.num_rows
            yield i, batch
            i += 1
        if seg.partial and good < size and size - good > 8:
            # a partial that ended on a message boundary but has trailing bytes
            self._tail(kept_batches, kept_frames, good, size - good, "trailing bytes")

    def _tail(self, batches: int, frames: int, good: int, dropped: int, error: str) -> None:
        if self.seg.partial:
            if self.tails is not None:
                self.tails.append(
                    TailReport(self.seg.name, batches, frames, good, dropped, error)
                )
        else:  # salvaging a sealed segment: the lost rest was already reported
            self.problem(batches, f"{dropped} bytes after {frames} sound frames skipped ({error})")


def read_segment(
    seg: Segment,
    tails: list[TailReport] | None = None,
    *,
    required: bool = False,
    damage: list[Damage] | None = None,
    last: bool = False,
) -> Iterator[pa.RecordBatch]:
    """Sound record batches of one segment (validated, checksums verified).

    ``last``: of a sealed segment (an IPC file), read its last batch only
    (found through the footer: the end of a journal without reading it all);
    other segments are read whole.

    A torn tail of a partial segment ends it quietly (reported in ``tails``).
    ``required``: batches without a checksum are damage.  ``damage``: collect
    problems there and skip the damaged parts instead of raising.

    Raises:
        JournalCorrupt: a damaged segment, when ``damage`` is None.
    """
    if damage is None and _SKIP_SINK.get() is not None:
        damage = []  # skipping: the JournalReader this serves lists what was skipped
    read = _SegmentRead(seg, required=required, tails=tails, damage=damage, last=last)
    for _i, batch in read:
        yield batch

