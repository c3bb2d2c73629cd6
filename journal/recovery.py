"""Recovery: turn the ``.partial`` segments a crash left behind into sealed ones.

Reading never needs this (the reader drops torn tails on the fly); it is for
continuing a journal (:meth:`JournalWriter.resume`) and for ``engine journal
recover``.  A partial segment is cut at its last whole, sound batch and
rewritten into a sealed segment with its footer summary, then listed in
``journal.json`` — the same steps as a normal seal
(:func:`engine.journal.writer.compact_segment`).  A partial that holds no
whole batch (the writer died right after creating it) is removed.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import attrs
import pyarrow as pa
import pyarrow.compute as pc

from engine.journal.integrity import SegmentSummary
from engine.journal.reader import TailReport, list_segments, read_segment
from engine.journal.schema import MANIFEST

__all__ = ["RecoveryState", "seal_partials", "EOS", "NoSpaceToSeal"]

#: Arrow IPC end-of-stream marker (continuation token + zero length).
EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"


class NoSpaceToSeal(OSError):
    """Sealing a partial needs room for its rewrite and the disk has none: nothing was changed.

    The half-written sealed copy is removed; the partial stays as it was (it
    still reads and verifies), so recovering again once there is room works.
    """


def _no_space(exc: OSError) -> bool:
    # pyarrow's file writes raise OSError without errno on some versions: match its text too
    return exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(exc)


@attrs.frozen
class RecoveryState:
    last_seq: int  #: 0 for an empty journal
    last_index: int  #: 0 when there is no segment
    sealed: list[str]
    tails: list[TailReport]
    removed: list[str]


def seal_partials(path: Path, config: object | None = None) -> RecoveryState:
    """Seal every partial segment of the journal at ``path``; return where the journal ends.

    ``config``: the :class:`~engine.journal.writer.WriterConfig` whose compression
    and batch size the sealed segments get (default: the defaults).
    """
    from engine.journal.seal import compact_segment
    from engine.journal.writer import WriterConfig, _write_manifest, fsync_dir, segment_name

    cfg = config if isinstance(config, WriterConfig) else WriterConfig()
    options = pa.ipc.IpcWriteOptions(compression=cfg.compression, emit_dictionary_deltas=False)
    segments, foreign = list_segments(path)
    sealed: list[str] = []
    removed: list[str] = []
    tails: list[TailReport] = []
    # an unfinished compaction (crash before its rename): the partial is still there
    for tmp in path.glob("seg-*.arrows.tmp"):
        os.unlink(tmp)
        removed.append(tmp.name)
    # a partial shadowed by a sealed twin (crash after rename, before unlink) is garbage
    for f in foreign:
        if f.name.endswith(".arrows.partial"):
            os.unlink(f)
            removed.append(f.name)
    last_seq = 0
    last_index = 0
    summaries = []
    for seg in segments:
        assert isinstance(seg.path, Path)  # recovery rewrites local journals only
        seg_tails: list[TailReport] = []
        first = None
        frames = 0
        sources: pa.Array | None = None
        lo: int | None = None
        hi: int | None = None
        for batch in read_segment(seg, seg_tails):
            if batch.num_rows:
                mm = pc.min_max(batch.column(1)).as_py()
                lo = mm["min"] if lo is None else min(lo, mm["min"])
                hi = mm["max"] if hi is None else max(hi, mm["max"])
                first = batch.column(0)[0].as_py() if first is None else first
                last_seq = batch.column(0)[-1].as_py()
                frames += batch.num_rows
                sources = batch.column(5).dictionary
        if not seg.partial:
            last_index = seg.index
            continue
        tails.extend(seg_tails)
        if not frames:
            os.unlink(seg.path)
            removed.append(seg.name)
            continue
        summary = SegmentSummary(seg.index, frames, first, last_seq, lo, hi)
        final = path / segment_name(seg.index, partial=False)
        names = [] if sources is None else sources.to_pylist()
        try:
            size = compact_segment(seg.path, final, options, cfg.compact_rows, summary, names)
        except OSError as exc:
            if not _no_space(exc):
                raise
            final.with_name(final.name + ".tmp").unlink(missing_ok=True)
            raise NoSpaceToSeal(
                errno.ENOSPC, f"no space left to seal {seg.name} ({seg.path.stat().st_size} bytes)"
            ) from None
        summaries.append(attrs.evolve(summary, size=size).to_json())
        sealed.append(seg.name)
        last_index = seg.index
    manifest = path / MANIFEST
    if summaries and manifest.exists():
        md = json.loads(manifest.read_text())
        listed = md.get("segments")
        md["segments"] = (listed if isinstance(listed, list) else []) + summaries
        _write_manifest(path, md)
    if removed:
        fsync_dir(path)
    return RecoveryState(last_seq, last_index, sealed, tails, removed)
