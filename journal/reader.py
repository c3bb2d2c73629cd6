"""The journal reader: frames in ``seq`` order across segments, batch by batch, bounded memory.

* Segments are read in index order, one record batch at a time (memory is
  bounded by the largest batch, not the journal).
* A ``.partial`` segment (the writer was killed, or is still writing) may end
  in a torn batch: every whole batch is kept, the torn tail is reported in
  :attr:`JournalReader.tails` and never raises.  A *sealed* segment that does
  not read is corruption: :class:`JournalCorrupt` names the file and offset.
* Empty segments (0 bytes, or a schema and no batch) are fine.
* Files that are not segments (``*.txt``, editor backups ...) are listed in
  :attr:`JournalReader.foreign` and otherwise ignored.
* Filters: receive-time range ``[start_ns, end_ns)``, kinds, dirs, sources.

Read-only: this module never modifies a journal (see :mod:`.recovery`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pyarrow as pa
import pyarrow.compute as pc

from engine.journal.schema import MANIFEST, Frame

__all__ = [
    "JournalError",
    "JournalCorrupt",
    "NotAJournal",
    "Segment",
    "TailReport",
    "JournalReader",
    "list_segments",
    "read_segment",
]

#: Sub-directories a journal directory may hold beside its segments (not frames).
COMPANION_DIRS = frozenset({"outputs", "checkpoints"})

_SEGMENT_RE = re.compile(r"^seg-(\d{6,})\.arrows(\.partial)?$")


class JournalError(Exception):
    """Base of journal reading errors (what to show a user instead of a traceback)."""


class NotAJournal(JournalError):
    """The path is not a journal directory (missing, a file, or holds no manifest nor segments)."""


class JournalCorrupt(JournalError):
    """A sealed segment (or the manifest) does not read: the bytes on disk are damaged or foreign."""


@attrs.frozen
class Segment:
    path: Path
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


def list_segments(path: Path) -> tuple[list[Segment], list[Path]]:
    """Segments of a journal directory in index order, and the files that are not segments.

    If both ``seg-N.arrows`` and ``seg-N.arrows.partial`` exist (a crash between
    sealing steps), the sealed one wins and the partial is listed as foreign.
    """
    segments: dict[int, Segment] = {}
    foreign: list[Path] = []
    for entry in sorted(path.iterdir()):
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


def read_segment(seg: Segment, tails: list[TailReport] | None = None) -> Iterator[pa.RecordBatch]:
    """Record batches of one segment; a torn tail of a partial segment ends it quietly.

    Raises:
        JournalCorrupt: a sealed segment does not read.
    """
    size = seg.path.stat().st_size
    if size == 0:
        return
    kept_batches = kept_frames = 0
    good = 0
    with pa.OSFile(str(seg.path)) as f:
        try:
            reader = pa.ipc.open_stream(f)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError, ValueError) as exc:
            if seg.partial:
                if tails is not None:
                    tails.append(TailReport(seg.name, 0, 0, 0, size, f"torn schema: {exc}"))
                return
            raise JournalCorrupt(f"{seg.path}: not an Arrow IPC stream ({exc})") from None
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowInvalid, pa.ArrowIOError, OSError, ValueError) as exc:
                if seg.partial:
                    if tails is not None:
                        tails.append(
                            TailReport(
                                seg.name, kept_batches, kept_frames, good, size - good, str(exc)
                            )
                        )
                    return
                raise JournalCorrupt(
                    f"{seg.path}: damaged after {kept_frames} frames at byte {good}: {exc}"
                ) from None
            good = f.tell()
            kept_batches += 1
            kept_frames += batch.num_rows
            yield batch
    if seg.partial and good < size and tails is not None:
        # a partial that ended on a message boundary but has trailing bytes (e.g. a lone EOS)
        tail = size - good
        if tail > 8:
            tails.append(
                TailReport(seg.name, kept_batches, kept_frames, good, tail, "trailing bytes")
            )


class JournalReader:
    """Iterate a journal's frames, optionally filtered.

    Args:
        path: the journal directory.
        start_ns, end_ns: keep frames with ``start_ns <= recv_ns < end_ns``.
        kinds, dirs, sources: keep frames whose column value is in the set.

    Raises:
        NotAJournal: ``path`` is not a journal directory.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        start_ns: int | None = None,
        end_ns: int | None = None,
        kinds: Iterable[str] | None = None,
        dirs: Iterable[str] | None = None,
        sources: Iterable[str] | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise NotAJournal(f"{self.path}: no such directory")
        if not self.path.is_dir():
            raise NotAJournal(f"{self.path}: not a directory (a journal is a directory of segments)")
        self.segments, self.foreign = list_segments(self.path)
        manifest = self.path / MANIFEST
        if not self.segments and not manifest.exists():
            raise NotAJournal(f"{self.path}: no {MANIFEST} and no seg-*.arrows files")
        self.metadata: dict[str, Any] = {}
        if manifest.exists():
            try:
                self.metadata = json.loads(manifest.read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise JournalCorrupt(f"{manifest}: not valid JSON ({exc})") from None
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.kinds = frozenset(kinds) if kinds is not None else None
        self.dirs = frozenset(dirs) if dirs is not None else None
        self.sources = frozenset(sources) if sources is not None else None
        #: torn tails dropped so far (filled while iterating)
        self.tails: list[TailReport] = []

    def _filtered(self) -> bool:
        return any(
            x is not None
            for x in (self.start_ns, self.end_ns, self.kinds, self.dirs, self.sources)
        )

    def raw_batches(self) -> Iterator[tuple[Segment, pa.RecordBatch]]:
        """Unfiltered batches with the segment they came from."""
        self.tails = []
        for seg in self.segments:
            for batch in read_segment(seg, self.tails):
                yield seg, batch

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Record batches in seq order, filters applied (empty batches skipped)."""
        filtered = self._filtered()
        for _seg, batch in self.raw_batches():
            if filtered:
                batch = self._filter(batch)
                if not batch.num_rows:
                    continue
            yield batch

    def frames(self) -> Iterator[Frame]:
        """Frames one by one (convenient; use :meth:`batches` for speed)."""
        for batch in self.batches():
            yield from frames_of(batch)

    def _filter(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        mask = None

        def both(m: Any) -> None:
            nonlocal mask
            mask = m if mask is None else pc.and_(mask, m)

        recv = batch.column(1)
        if self.start_ns is not None:
            both(pc.greater_equal(recv, self.start_ns))
        if self.end_ns is not None:
            both(pc.less(recv, self.end_ns))
        for name, wanted in (("dir", self.dirs), ("kind", self.kinds), ("source", self.sources)):
            if wanted is not None:
                col = batch.column(name)
                both(pc.is_in(col.dictionary_decode(), pa.array(sorted(wanted), pa.utf8())))
        return batch.filter(mask) if mask is not None else batch


def frames_of(batch: pa.RecordBatch) -> Iterator[Frame]:
    """The frames of one record batch."""
    cols = [batch.column(i) for i in range(batch.num_columns)]
    seq, recv, conn = (c.to_pylist() for c in cols[:3])
    dirs, kinds, sources = (c.dictionary_decode().to_pylist() for c in cols[3:6])
    codes, payloads = cols[6].to_pylist(), cols[7].to_pylist()
    for row in zip(seq, recv, conn, dirs, kinds, sources, payloads, codes, strict=True):
        yield Frame(*row)
