"""Sealing: a closed segment (an Arrow IPC stream) rewritten into the sealed Arrow IPC file.

Owns :func:`compact_segment`, the one rewrite both the writer's seal worker and
recovery (``engine journal recover``) use: batches merged to a target size, one
source dictionary per segment (Polars rejects delta dictionaries), each batch's
checksum metadata, and the footer summary (frame count, seq range) that readers
and ``verify`` check; then fsync, the atomic rename over the final name and the
directory fsync.  Must not: decide when to seal or touch the manifest (the
writer and recovery do).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from engine.journal.integrity import FOOTER_KEY, SegmentSummary, batch_metadata
from engine.journal.schema import frame_schema

__all__ = ["compact_segment", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename in it is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compact_segment(
    partial: Path,
    final: Path,
    options: pa.ipc.IpcWriteOptions,
    rows: int | None,
    summary: SegmentSummary,
    sources: list[str] | None = None,
) -> int:
    """Rewrite a closed partial segment (an IPC stream) into the sealed IPC file ``final``; its size.

    ``rows``: merge batches up to about this many frames (None: keep them as
    they are).  ``sources``: the segment's source dictionary (the writer's; None:
    taken from the partial's last batch).  Every batch is read (and verified)
    from the partial, given the one dictionary (an IPC file allows no
    replacement) and a fresh checksum; the footer records ``summary``.  Memory
    stays bounded by ``rows`` frames.  Crash-safe at every step (see the module
    docstring).
    """
    from engine.journal.reader import Segment, read_segment

    seg = Segment(partial, summary.index, True)
    if sources is None:
        sources = _last_sources(seg)
    dictionary = pa.array(sources, pa.utf8())
    tmp = final.with_name(final.name + ".tmp")
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    footer = {FOOTER_KEY: summary.encode()}
    with pa.OSFile(str(tmp), "wb") as sink:
        writer: pa.ipc.RecordBatchFileWriter | None = None
        schema: pa.Schema | None = None

        def emit() -> None:
            nonlocal writer, pending, pending_rows
            batch = pending[0] if len(pending) == 1 else pa.concat_batches(pending)
            if writer is None:
                writer = pa.ipc.new_file(sink, batch.schema, options=options, metadata=footer)
            writer.write_batch(batch, custom_metadata=batch_metadata(batch))
            pending, pending_rows = [], 0

        for batch in read_segment(seg):
            schema = batch.schema
            pending.append(_with_sources(batch, dictionary))
            pending_rows += batch.num_rows
            if rows is None or pending_rows >= rows:
                emit()
        if pending:
            emit()
        if writer is None:  # nothing to keep: still a valid (empty) sealed segment
            writer = pa.ipc.new_file(
                sink, schema or frame_schema(), options=options, metadata=footer
            )
        writer.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    os.rename(tmp, final)
    fsync_dir(final.parent)
    os.unlink(partial)
    fsync_dir(final.parent)
    return size


_SOURCE = 5  #: the source column (dictionary-encoded)


def _last_sources(seg: Any) -> list[str]:
    """The source dictionary of a partial's last whole batch (it extends every earlier one)."""
    from engine.journal.reader import read_segment

    last: pa.Array | None = None
    for batch in read_segment(seg):
        last = batch.column(_SOURCE).dictionary
    return [] if last is None else last.to_pylist()


def _with_sources(batch: pa.RecordBatch, dictionary: pa.Array) -> pa.RecordBatch:
    """``batch`` with its source column re-expressed against ``dictionary``."""
    col = batch.column(_SOURCE)
    old = col.dictionary
    if len(old) <= len(dictionary) and old.equals(dictionary.slice(0, len(old))):
        indices = col.indices  # the writer's dictionaries only ever grow: same indices
    else:
        indices = pc.index_in(col.dictionary_decode(), value_set=dictionary).cast(pa.int32())
    if indices.offset:
        indices = pa.concat_arrays([indices])
    new = pa.DictionaryArray.from_arrays(indices, dictionary)
    return batch.set_column(_SOURCE, batch.schema.field(_SOURCE), new)
