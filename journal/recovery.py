"""Recovery: turn the ``.partial`` segments a crash left behind into sealed ones.

Reading never needs this (the reader drops torn tails on the fly); it is for
continuing a journal (:meth:`JournalWriter.resume`) and for ``engine journal
recover``.  A partial segment is truncated to its last whole batch, given the
end-of-stream marker, fsynced and renamed — the same steps as a normal seal.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from engine.journal.reader import TailReport, list_segments, read_segment

__all__ = ["RecoveryState", "seal_partials", "EOS"]

#: Arrow IPC end-of-stream marker (continuation token + zero length).
EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"


@attrs.frozen
class RecoveryState:
    last_seq: int  #: 0 for an empty journal
    last_index: int  #: 0 when there is no segment
    sealed: list[str]
    tails: list[TailReport]
    removed: list[str]


def seal_partials(path: Path) -> RecoveryState:
    """Seal every partial segment of the journal at ``path``; return where the journal ends."""
    from engine.journal.writer import fsync_dir, segment_name

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
    for seg in segments:
        seg_tails: list[TailReport] = []
        for batch in read_segment(seg, seg_tails):
            if batch.num_rows:
                last_seq = batch.column(0)[-1].as_py()
        if not seg.partial:
            continue
        tails.extend(seg_tails)
        size = seg.path.stat().st_size
        with open(seg.path, "r+b") as fh:
            if seg_tails:
                good = seg_tails[0].good_bytes
                fh.truncate(good)
            else:  # ended on a message boundary: keep it all, add EOS unless present
                good = size
                fh.seek(max(0, size - len(EOS)))
                if fh.read() == EOS:
                    good = 0  # already terminated
            if good:
                fh.seek(good)
                fh.write(EOS)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(seg.path, path / segment_name(seg.index, partial=False))
        sealed.append(seg.name)
    if sealed or removed:
        fsync_dir(path)
    last_index = segments[-1].index if segments else 0
    return RecoveryState(last_seq, last_index, sealed, tails, removed)
