"""What is in a journal (``engine journal inspect``) and whether it is sound (``verify``).

Both stream the journal batch by batch through :class:`JournalReader` (bounded
memory, every batch validated and checksummed) and never modify it.
``inspect`` refuses a damaged journal like every other reader; ``verify``
reads past damage to list every problem.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pyarrow.compute as pc

from engine.journal.location import RemotePath, as_path
from engine.journal.reader import JournalReader
from engine.journal.recorder import OUTPUTS_DIR

__all__ = ["SegmentStats", "JournalStats", "inspect_journal", "scan_journal", "verify_journal"]


@attrs.define
class SegmentStats:
    name: str
    partial: bool
    bytes: int
    frames: int = 0
    first_seq: int | None = None
    last_seq: int | None = None


@attrs.define
class JournalStats:
    path: str
    metadata: dict[str, Any]
    segments: list[SegmentStats]
    frames: int
    disk_bytes: int
    payload_bytes: int
    first_ns: int | None
    last_ns: int | None
    kinds: dict[str, int]
    sources: dict[str, int]
    tails: list[dict[str, Any]]
    foreign: list[str]
    legacy: bool = False  #: schema_version 1: written before checksums

    @property
    def span_s(self) -> float:
        if self.first_ns is None or self.last_ns is None:
            return 0.0
        return (self.last_ns - self.first_ns) / 1e9

    def to_json(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["span_s"] = self.span_s
        d["disk_to_payload"] = (
            round(self.disk_bytes / self.payload_bytes, 4) if self.payload_bytes else None
        )
        return d


def inspect_journal(path: str | Path | RemotePath) -> JournalStats:
    """Count segments, frames, bytes, kinds and sources of a journal (streams it once).

    Raises:
        JournalError: not a journal, or a damaged one (``verify`` lists every problem).
    """
    return _scan(JournalReader(path, skip_damaged=False))


def scan_journal(path: str | Path | RemotePath) -> JournalStats:
    """:func:`inspect_journal`, skipping damage if :func:`~engine.journal.reader.skipping_damaged` says so."""
    return _scan(JournalReader(path))


def _scan(reader: JournalReader, on_batch: Callable[[int], None] | None = None) -> JournalStats:
    kinds: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    segs = {
        seg.name: SegmentStats(seg.name, seg.partial, seg.path.stat().st_size)
        for seg in reader.segments
    }
    payload = 0
    first_ns: int | None = None
    last_ns: int | None = None
    for seg, batch in reader.raw_batches():
        n = batch.num_rows
        if on_batch is not None:
            on_batch(n)
        if not n:
            continue
        st = segs[seg.name]
        seq = batch.column(0)
        st.first_seq = seq[0].as_py() if st.first_seq is None else st.first_seq
        st.last_seq = seq[-1].as_py()
        st.frames += n
        mm = pc.min_max(batch.column(1)).as_py()
        first_ns = mm["min"] if first_ns is None else min(first_ns, mm["min"])
        last_ns = mm["max"] if last_ns is None else max(last_ns, mm["max"])
        payload += pc.sum(pc.binary_length(batch.column(7))).as_py() or 0
        for name, counter in (("kind", kinds), ("source", sources)):
            vc = batch.column(name).dictionary_decode().value_counts()
            for item in vc.to_pylist():
                counter[item["values"]] += item["counts"]
    stats = list(segs.values())
    return JournalStats(
        path=str(reader.path),
        metadata=reader.metadata,
        segments=stats,
        frames=sum(s.frames for s in stats),
        disk_bytes=sum(s.bytes for s in stats),
        payload_bytes=payload,
        first_ns=first_ns,
        last_ns=last_ns,
        kinds=dict(kinds.most_common()),
        sources=dict(sources.most_common()),
        tails=[attrs.asdict(t) for t in reader.tails],
        foreign=[p.name for p in reader.foreign],
        legacy=reader.legacy,
    )


def verify_journal(
    path: str | Path | RemotePath, on_batch: Callable[[int], None] | None = None
) -> tuple[list[str], JournalStats | None]:
    """Problems found (empty list = sound), one line each naming the segment and batch.

    Reads every batch (skipping damage, so that every problem is listed, not
    only the first): structure, checksums, footers, ``journal.json``'s segment
    list, seq continuity; then the same for the outputs journal
    (``outputs/``) if there is one.  Torn tails of partial segments are
    recovered, not problems (they are the expected result of a crash); they are
    reported by ``inspect``.  A legacy journal (no checksums) is not a problem:
    :attr:`JournalStats.legacy` says so.  ``on_batch(frames)`` is called for
    every batch read (a progress display).
    """
    from engine.journal.reader import JournalError

    try:
        reader = JournalReader(path, skip_damaged=True)
        stats = _scan(reader, on_batch)
    except JournalError as exc:
        return [str(exc)], None
    problems = [f"{reader.path / str(d)}" for d in reader.skipped]
    outputs = as_path(path) / OUTPUTS_DIR
    if outputs.is_dir():
        problems += verify_journal(outputs, on_batch)[0]
    return problems, stats
