"""A journal's servable frames as numbered pieces, read on demand and shared by every connection's replay.

The replay server gives every WebSocket connection its own replay, and a
hundred connections must not cost a hundred copies of the journal's data.
This module owns that sharing:

* :meth:`Timeline.build` reads the journal once (the index pass): the REST
  bodies (:class:`engine.replay.recorded.RestIndex`), the frames per stream,
  and the *pieces* — every ``SLICE`` rows of the (inbound/outbound text and
  REST) record batches, with the receive-time span of their named frames and
  the stream-naming state at their start (:meth:`StreamNamer.snapshot`, kept
  only when a SUBSCRIBE changed it).
* :meth:`Timeline.cursor` walks the pieces of a window ``[from, to]``.  A
  piece is ``(recv_ns, stream, data)`` tuples; pieces live in a weak cache (and
  the last ``RECENT`` read are held), so connections at the same place share one copy.  A cursor that finds its
  piece gone reads it through the timeline's pool of at most ``READERS``
  journal readers (each holds one record batch and one decompression
  context: a reader per connection cost ~0.5 MiB each, 50 MiB for a hundred
  clients), taking the one nearest behind the piece, so memory is one piece
  per place a connection is at plus the pool, whatever the number of clients.

It must not pace or send anything (:mod:`engine.replay.server` does), nor
decode markets with the engine's codecs.  Reads go through
:class:`engine.journal.reader.JournalReader` (every batch verified).
"""

from __future__ import annotations

import bisect
import weakref
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine.journal.location import RemotePath, Where, as_path
from engine.journal.reader import JournalReader, frames_of
from engine.journal.schema import Dir, Kind
from engine.replay.recorded import ConnNamer, RestIndex, StreamNamer, stream_frames

__all__ = ["SLICE", "Piece", "Timeline"]

#: Rows of a record batch in one piece.
SLICE = 1024
#: Pieces kept even when no connection is at them.
RECENT = 4
#: Journal readers a timeline keeps for pieces not in the cache (each holds a batch).
READERS = 4

_DIRS = (Dir.IN, Dir.OUT)
_KINDS = (Kind.TEXT, Kind.REST)


class Piece(list[tuple[int, str, bytes]]):
    """The named frames of ``SLICE`` journal rows (a list that a weak cache can hold)."""

    __slots__ = ("__weakref__",)


class Timeline:
    """The pieces of one journal and the index pass's findings (see the module docstring)."""

    def __init__(self, path: Path | RemotePath, by_connection: bool = False) -> None:
        self.path = path
        #: frames named by recorded connection (:class:`ConnNamer`), not by stream
        self.by_connection = by_connection
        self._namer: type[StreamNamer] | type[ConnNamer] = (
            ConnNamer if by_connection else StreamNamer
        )
        self.rest = RestIndex()
        self.per_stream: Counter[str] = Counter()
        self.metadata: dict[str, Any] = {}
        self.first_ns = self.last_ns = -1
        self.unnamed = self.reserialized = 0
        #: per piece: (batch ordinal, row offset), first and last named recv_ns (-1: none)
        self._loc: list[tuple[int, int]] = []
        self._first: list[int] = []
        self._last: list[int] = []
        #: (piece, namer state at its start), whenever the state changed
        self._states: list[tuple[int, Any]] = [(0, {})]
        self._cache: weakref.WeakValueDictionary[int, Piece] = weakref.WeakValueDictionary()
        #: the last pieces read, held strongly: a short looped window is read once
        self._recent: deque[Piece] = deque(maxlen=RECENT)
        #: readers for cache misses, shared by every cursor (:meth:`_read`)
        self._readers: list[_PoolReader] = []

    def _reader(self) -> JournalReader:
        return JournalReader(self.path, dirs=_DIRS, kinds=_KINDS)

    @classmethod
    def build(cls, path: Where, by_connection: bool = False) -> Timeline:
        """One pass over the journal (raises what :class:`JournalReader` raises)."""
        t = cls(as_path(path), by_connection)
        reader = t._reader()
        t.metadata = reader.metadata
        namer = t._namer()
        version = 0
        running_last = -1
        for b, batch in enumerate(reader.batches()):
            for off in range(0, batch.num_rows, SLICE):
                if namer.version != version:
                    version = namer.version
                    t._states.append((len(t._loc), namer.snapshot()))
                first = -1
                for recv_ns, stream, _data in stream_frames(
                    frames_of(batch.slice(off, SLICE)), namer, t.rest
                ):
                    t.per_stream[stream] += 1
                    if first < 0:
                        first = recv_ns
                    running_last = max(running_last, recv_ns)
                t._loc.append((b, off))
                t._first.append(first)
                t._last.append(running_last)  # non-decreasing: bisect finds a window's start
                if first >= 0 and t.first_ns < 0:
                    t.first_ns = first
        t.last_ns = running_last
        t.unnamed, t.reserialized = namer.unnamed, namer.reserialized
        return t

    def __len__(self) -> int:
        return len(self._loc)

    def cursor(self, lo: int | None, hi: int | None) -> Iterator[tuple[int, str, bytes]]:
        """``(recv_ns, stream, data)`` of the named frames with ``lo <= recv_ns <= hi``, in order."""
        start = 0 if lo is None else bisect.bisect_left(self._last, lo)
        for k in range(start, len(self._loc)):
            first = self._first[k]
            if first < 0:
                continue  # no named frame in this piece
            if hi is not None and first > hi:
                return
            piece = self._cache.get(k)
            if piece is None:
                piece = self._cache[k] = self._read(k)
                self._recent.append(piece)
            for item in piece:
                t = item[0]
                if lo is not None and t < lo:
                    continue
                if hi is not None and t > hi:
                    return
                yield item

    def _namer_at(self, k: int) -> StreamNamer | ConnNamer:
        i = bisect.bisect_right(self._states, k, key=lambda s: s[0]) - 1
        return self._namer.restored(self._states[i][1])


    def _read(self, k: int) -> Piece:
        """Piece ``k`` from the pool reader nearest behind its batch (a new one, or the
        rearmost restarted, when none is)."""
        b = self._loc[k][0]
        behind = [r for r in self._readers if r.at <= b]
        if behind:
            reader = max(behind, key=lambda r: r.at)
        elif len(self._readers) < READERS:
            reader = _PoolReader(self)
            self._readers.append(reader)
        else:
            reader = min(self._readers, key=lambda r: r.at)
            reader.restart()
        return reader.piece(k)


class _PoolReader:
    """One pooled journal reader: moves forward through the batches, restarts to go back."""

    def __init__(self, timeline: Timeline) -> None:
        self.t = timeline
        self._batches: Iterator[pa.RecordBatch] | None = None
        self.at = -1
        self._batch: pa.RecordBatch | None = None

    def restart(self) -> None:
        self._batches, self.at, self._batch = None, -1, None

    def piece(self, k: int) -> Piece:
        b, off = self.t._loc[k]
        if self._batches is None:
            self._batches = iter(self.t._reader().batches())
        while self.at < b:
            self._batch = None
            self._batch = next(self._batches)
            self.at += 1
        assert self._batch is not None
        namer = self.t._namer_at(k)
        return Piece(stream_frames(frames_of(self._batch.slice(off, SLICE)), namer))
