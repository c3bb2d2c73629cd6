"""The journal reader: frames in ``seq`` order across segments, batch by batch, bounded memory, verified.

* Segments are read in index order, one record batch at a time (memory is
  bounded by the largest batch, not the journal).
* Every batch is structurally validated, then its checksum verified, before
  anything converts it (:mod:`.integrity`): no file, however damaged, can
  crash the process.  Sealed segments (IPC files) must carry their footer
  summary, match it and match ``journal.json``'s list of sealed segments; seq
  must run on by exactly one per frame across the whole journal, from 1.  So a
  truncated, emptied, deleted, duplicated, reordered, foreign or altered
  segment, a missing manifest and an unknown ``schema_version`` are all
  :class:`JournalCorrupt`, whose message names the segment and the batch.
* Legacy journals (``schema_version`` 1, written before checksums) read as
  before: stream-format sealed segments, no checksums; structure and seq
  order are still checked (:attr:`JournalReader.legacy` says so).
* ``skip_damaged``: instead of raising, skip what is damaged (a batch, or the
  rest of a segment when its framing is gone), keep reading what is sound,
  and list what was skipped in :attr:`JournalReader.skipped`.  Left unset, it
  follows :func:`skipping_damaged` (how ``--skip-damaged`` reaches every
  reader a command opens).
* A ``.partial`` segment (the writer was killed, or is still writing) may end
  in a torn batch: every whole batch is kept, the torn tail is reported in
  :attr:`JournalReader.tails` and never raises.
* Files that are not segments (``*.txt``, editor backups ...) are listed in
  :attr:`JournalReader.foreign` and otherwise ignored.
* Filters: receive-time range ``[start_ns, end_ns)``, kinds, dirs, sources.
* Seeking: sealed segments wholly outside the time filters, or wholly at or
  before ``after_seq`` (a fold restored from a checkpoint), are passed without
  being opened (``journal.json`` holds their seq and time ranges), though
  each one's size is checked against ``journal.json`` (a stat, or the
  listing: a truncated or replaced segment is refused as ``verify`` names
  it); in the sealed segment holding ``after_seq`` the first batch is found
  through the IPC file footer.  The bytes read are counted by
  :func:`~engine.journal.location.counting_reads`.
* Locations: a local path or a ``file://``/``s3://``/``gs://`` URI
  (:mod:`.location`); remote segments are read by ranged requests.

Read-only: this module never modifies a journal (see :mod:`.recovery`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from engine.journal.inputs import open_input
from engine.journal.integrity import FILE_MAGIC, SegmentSummary
from engine.journal.location import RemotePath, as_path, read_stats
from engine.journal.schema import MANIFEST, SCHEMA_VERSIONS, Frame
from engine.journal.segments import (
    _HINT,
    _READ_ERRORS,
    _SKIP_SINK,
    COMPANION_DIRS,
    Damage,
    JournalCorrupt,
    JournalError,
    NotAJournal,
    Segment,
    TailReport,
    _not_store,
    _SegmentRead,
    list_segments,
    read_segment,
    size_problem,
    skipping_damaged,
)

__all__ = [
    "COMPANION_DIRS",
    "JournalError",
    "JournalCorrupt",
    "NotAJournal",
    "Damage",
    "Segment",
    "TailReport",
    "JournalReader",
    "list_segments",
    "read_segment",
    "skipping_damaged",
]


class JournalReader:
    """Iterate a journal's frames, optionally filtered, verified on the way.

    Args:
        path: the journal directory: a local path, or a ``file://``, ``s3://``
            or ``gs://`` URI (:mod:`.location`).
        start_ns, end_ns: keep frames with ``start_ns <= recv_ns < end_ns``
            (sealed segments wholly outside the window are not read: their
            time range is in ``journal.json``).
        kinds, dirs, sources: keep frames whose column value is in the set.
        skip_damaged: skip damage (listed in :attr:`skipped`) instead of raising;
            None: as set by :func:`skipping_damaged` (off by default).

    Raises:
        NotAJournal: ``path`` is not a journal directory.
        JournalCorrupt: the manifest is missing, unreadable or of an unknown
            version, or (while iterating) a segment is damaged.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | RemotePath,
        *,
        start_ns: int | None = None,
        end_ns: int | None = None,
        kinds: Iterable[str] | None = None,
        dirs: Iterable[str] | None = None,
        sources: Iterable[str] | None = None,
        skip_damaged: bool | None = None,
    ) -> None:
        self.path = as_path(path)
        if not self.path.exists():
            why = self.path.missing() if isinstance(self.path, RemotePath) else "no such directory"
            raise NotAJournal(f"{self.path}: {why}")
        if not self.path.is_dir():
            raise NotAJournal(f"{self.path}: not a directory (a journal is a directory of segments)")
        sink = _SKIP_SINK.get()
        self._sink = sink if skip_damaged is None else None
        self.skip_damaged = sink is not None if skip_damaged is None else skip_damaged
        #: what was skipped (skip_damaged), in reading order
        self.skipped: list[Damage] = []
        self.segments, self.foreign = list_segments(self.path)
        manifest = self.path / MANIFEST
        if not self.segments and not manifest.exists():
            raise NotAJournal(f"{self.path}: no {MANIFEST} and no seg-*.arrows files")
        self.metadata: dict[str, Any] = {}
        #: journal.json's list of sealed segments (index → summary)
        self.index: dict[int, SegmentSummary] = {}
        if manifest.exists():
            self._read_manifest(manifest)
        else:
            self._skip(
                Damage(MANIFEST, None, "missing"),
                "; --skip-damaged reads the segments with the first one's metadata",
            )
            self.metadata = self._embedded_metadata()
        version = self.metadata.get("schema_version", 1)
        #: written before checksums (schema_version 1): structure and seq order are checked
        self.legacy = version == 1
        listed = {s.index for s in self.segments}
        for i, summary in self.index.items():
            if i not in listed:
                seqs = f"seq {summary.first_seq}..{summary.last_seq}" if summary.frames else "empty"
                what = f"missing ({MANIFEST} lists it: {summary.frames} frames, {seqs})"
                self._skip(Damage(f"seg-{i:06d}.arrows", None, what))
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.kinds = frozenset(kinds) if kinds is not None else None
        self.dirs = frozenset(dirs) if dirs is not None else None
        self.sources = frozenset(sources) if sources is not None else None
        #: torn tails dropped so far (filled while iterating)
        self.tails: list[TailReport] = []

    def _skip(self, d: Damage, hint: str = "") -> None:
        if not self.skip_damaged:
            raise JournalCorrupt(f"{self.path / str(d)}{hint or _HINT}")
        self.skipped.append(d)
        if self._sink is not None:
            self._sink.append(d)

    def _read_manifest(self, manifest: Path | RemotePath) -> None:
        try:
            md = json.loads(manifest.read_text())
            if not isinstance(md, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            raise JournalCorrupt(f"{manifest}: not valid JSON ({exc})") from None
        version = md.get("schema_version", 1)
        if version not in SCHEMA_VERSIONS:
            raise JournalCorrupt(
                f"{manifest}: schema_version {version!r} is not one this engine reads"
                f" ({', '.join(map(str, SCHEMA_VERSIONS))}): written by a newer engine?"
            )
        listed = md.pop("segments", None)
        for entry in listed if isinstance(listed, list) else []:
            try:
                s = SegmentSummary.from_json(entry)
            except ValueError as exc:
                raise JournalCorrupt(f"{manifest}: damaged segments list ({exc})") from None
            self.index[s.index] = s
        self.metadata = md

    def _embedded_metadata(self) -> dict[str, Any]:
        """Journal metadata from the first segment whose schema carries it (no manifest)."""
        for seg in self.segments:
            try:
                with open_input(seg.path) as f:
                    sealed = f.read(len(FILE_MAGIC)) == FILE_MAGIC
                    f.seek(0)
                    opener = pa.ipc.open_file if sealed else pa.ipc.open_stream
                    md = opener(f).schema.metadata or {}
                return dict(json.loads(md[b"wiretape"]))
            except (*_READ_ERRORS, KeyError, TypeError) as exc:
                _not_store(exc)
                continue
        return {}

    def _filtered(self) -> bool:
        return any(
            x is not None
            for x in (self.start_ns, self.end_ns, self.kinds, self.dirs, self.sources)
        )

    def _skippable(self, seg: Segment, after_seq: int, timed: bool) -> SegmentSummary | None:
        """``journal.json``'s summary of ``seg`` if the reading can pass it unread, else None.

        Only a sealed segment listed in the manifest is passed: wholly at or
        before ``after_seq``, or (``timed``: the time filters) wholly outside
        ``[start_ns, end_ns)`` by its recorded receive-time range.
        """
        summary = self.index.get(seg.index)
        if summary is None or seg.partial:
            return None
        if summary.frames == 0 or (
            summary.last_seq is not None and summary.last_seq <= after_seq
        ):
            return summary
        if timed and summary.min_ns is not None and summary.max_ns is not None:
            if self.start_ns is not None and summary.max_ns < self.start_ns:
                return summary
            if self.end_ns is not None and summary.min_ns >= self.end_ns:
                return summary
        return None

    def raw_batches(
        self, after_seq: int = 0, *, timed: bool = False
    ) -> Iterator[tuple[Segment, pa.RecordBatch]]:
        """Unfiltered sound batches with the segment they came from, seq continuity checked.

        ``after_seq``: sealed segments wholly at or before it are passed unread
        (their seq range is in ``journal.json``: a fold restored from a
        checkpoint starts where it ends); batches of the segment it falls in
        are still read (and verified) from the segment's start.  ``timed``:
        also pass sealed segments wholly outside the time filters (what
        :meth:`batches` does).  What is passed is counted in the active
        :func:`~engine.journal.location.counting_reads` tally.
        """
        self.tails = []
        expected = 1
        damage: list[Damage] | None = [] if self.skip_damaged else None
        stats = read_stats()
        for seg in self.segments:
            passed = self._skippable(seg, after_seq, timed) if (after_seq or timed) else None
            if passed is not None:
                if passed.frames and passed.first_seq is not None and passed.first_seq > expected:
                    # what is missing before it is still reported, as when reading
                    self._seq_problem_at(seg, passed, expected)
                bad = size_problem(seg, passed)
                if bad:  # truncated or replaced: noticed without reading it
                    self._skip(Damage(seg.name, None, bad))
                if passed.frames:
                    expected = max(expected, (passed.last_seq or 0) + 1)
                if stats is not None:
                    stats.segments_skipped += 1
                continue
            read = _SegmentRead(
                seg,
                required=not self.legacy,
                tails=self.tails,
                damage=damage,
                expect=self.index.get(seg.index),
                from_seq=after_seq + 1 if after_seq else None,
            )
            for i, batch in self._tracked(read, damage):
                rows = batch.num_rows
                if not rows:
                    continue
                seq = batch.column(0)
                first, last = seq[0].as_py(), seq[rows - 1].as_py()
                if read.sought and first <= after_seq + 1:
                    expected = max(expected, first)  # the batches before it were passed unread
                if first < expected:
                    self._seq_problem(
                        read,
                        i,
                        f"seq {first} comes again (expected {expected}): a duplicated or"
                        " reordered segment",
                    )
                    continue  # skipping: already read
                if first > expected:
                    self._seq_problem(
                        read,
                        i,
                        f"frames seq {expected}..{first - 1} are missing before it (a deleted,"
                        " emptied or truncated segment?)",
                    )
                if last - first + 1 != rows or (self.legacy and not _increasing(seq)):
                    self._seq_problem(read, i, "seq does not run on by one inside the batch")
                    continue
                expected = last + 1
                yield seg, batch
            self._flush(damage)

    def _tracked(
        self, read: _SegmentRead, damage: list[Damage] | None
    ) -> Iterator[tuple[int, pa.RecordBatch]]:
        for item in read:
            self._flush(damage)
            yield item

    def _flush(self, damage: list[Damage] | None) -> None:
        if damage:
            for d in damage:
                self._skip(d)
            damage.clear()

    def _seq_problem(self, read: _SegmentRead, batch: int, what: str) -> None:
        self._skip(Damage(read.seg.name, batch, what))

    def _seq_problem_at(self, seg: Segment, summary: SegmentSummary, expected: int) -> None:
        what = (
            f"frames seq {expected}..{(summary.first_seq or 0) - 1} are missing before it"
            " (a deleted, emptied or truncated segment?)"
        )
        self._skip(Damage(seg.name, None, what))

    def batches(self, after_seq: int = 0) -> Iterator[pa.RecordBatch]:
        """Record batches in seq order, filters applied (empty batches skipped).

        Sealed segments wholly outside the time window, or wholly at or before
        ``after_seq``, are not read (see :meth:`raw_batches`); batches read are
        still returned whole (the caller cuts at ``after_seq``).
        """
        filtered = self._filtered()
        timed = self.start_ns is not None or self.end_ns is not None
        for _seg, batch in self.raw_batches(after_seq, timed=timed):
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


def _increasing(seq: pa.Array) -> bool:
    n = len(seq)
    if n < 2:
        return True
    steps = pc.subtract(seq.slice(1), seq.slice(0, n - 1))
    return bool(pc.min(steps).as_py() == 1 and pc.max(steps).as_py() == 1)


def frames_of(batch: pa.RecordBatch) -> Iterator[Frame]:
    """The frames of one record batch."""
    cols = [batch.column(i) for i in range(batch.num_columns)]
    seq, recv, conn = (c.to_pylist() for c in cols[:3])
    dirs, kinds, sources = (c.dictionary_decode().to_pylist() for c in cols[3:6])
    codes, payloads = cols[6].to_pylist(), cols[7].to_pylist()
    for row in zip(seq, recv, conn, dirs, kinds, sources, payloads, codes, strict=True):
        yield Frame(*row)
