"""The journal writer: append frames, batch them, write each batch with one ``write()``.

Durability policy (the numbers users need to know, all in :class:`WriterConfig`):

* Frames are buffered in memory and written as one Arrow record batch when
  ``batch_frames`` (default 1024) accumulate or the oldest buffered frame is
  ``batch_age_ms`` (default 50 ms) old.  **A kill -9 loses at most the frames
  of the batch being buffered: ≤ 1024 frames and ≤ 50 ms of data** (plus the
  time until the caller's next ``append``/``tick``; the live runtime ticks
  every 10 ms).  Written batches are in the OS page cache and survive a
  process crash.
* ``fsync`` runs every ``fsync_interval_ms`` (default 1000 ms) and on every
  rotation/close: **an OS crash or power loss loses at most ~1 s**.
* Each batch (with any dictionary update) is serialized in memory and handed
  to the OS with a single ``os.write``, so a crash can only tear the *last*
  batch of the open segment; the reader drops that torn tail and keeps every
  whole batch (:mod:`engine.journal.reader`).
* Every batch carries its CRC-32C in its IPC custom metadata
  (:mod:`engine.journal.integrity`), verified on every read.
* The open segment is ``seg-NNNNNN.arrows.partial``, an Arrow IPC *stream*
  (appendable; a crash tears at most its last batch).  Sealing writes the
  end-of-stream marker and fsyncs it, then rewrites it on a worker thread,
  while the next segment is being written, into the sealed
  ``seg-NNNNNN.arrows``: an Arrow IPC *file* whose footer indexes its batches
  and records a :class:`~engine.journal.integrity.SegmentSummary` (index,
  frame count, seq range).  The summary is then added to ``journal.json``'s
  ``segments`` list.  Segments rotate at ``segment_bytes`` (default 64 MiB) or
  ``segment_age_s`` (default 1 h).
* Record batches are zstd-compressed (Arrow IPC buffer compression).
* **Compaction on seal** (default on): live traffic makes small batches (a
  quiet stream flushes 1-2 frames every 50 ms, and a tiny compressed batch
  costs more than its payload), so the rewrite merges them into batches of
  about ``compact_rows`` frames (off: the live batches are kept as they are).
  ``.partial`` is the crash-safe log, the sealed ``.arrows`` is the compact,
  indexed archive.  The rewrite goes to ``seg-N.arrows.tmp`` → fsync → rename
  → fsync dir → unlink the partial → update ``journal.json``; a crash at any
  step leaves either the partial or the sealed segment readable (the reader
  ignores ``*.tmp``; a partial shadowed by its sealed twin is ignored and
  removed by recovery; a sealed segment not yet listed is checked by its seq
  continuity alone).

The writer is synchronous and single-threaded (the trio runtime calls it from
its one thread; ``fsync`` may be pushed to a worker thread with
:meth:`JournalWriter.fsync`).  It owns the files of one journal directory; it
never interprets payloads.

A failed write, fsync or seal (disk full, I/O error) raises
:class:`JournalWriteError` and closes the writer without writing anything more:
the open segment stays a ``.partial`` (at most its last batch torn) for
``engine journal recover``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import pyarrow as pa

from engine import __version__
from engine.journal.integrity import SegmentSummary, batch_metadata
from engine.journal.schema import (
    DIRS,
    KINDS,
    MANIFEST,
    PARTIAL_SUFFIX,
    SCHEMA_VERSION,
    SEGMENT_SUFFIX,
    frame_schema,
)
from engine.journal.seal import compact_segment, fsync_dir

__all__ = [
    "WriterConfig",
    "JournalWriter",
    "JournalExistsError",
    "JournalWriteError",
    "segment_name",
    "fsync_dir",
]

_KIND_INDEX = {k: i for i, k in enumerate(KINDS)}
_DIR_INDEX = {d: i for i, d in enumerate(DIRS)}
_KIND_DICT = pa.array(KINDS, pa.utf8())
_DIR_DICT = pa.array(DIRS, pa.utf8())


class JournalExistsError(FileExistsError):
    """The target directory already holds a journal; pick a new directory (or resume it explicitly)."""


class JournalWriteError(OSError):
    """Writing the journal failed (disk full, I/O error: ``errno`` is the OS's); nothing more is written.

    The writer that raised it is closed at once: its open segment stays a
    ``.partial`` as it was on disk (at most its last batch torn, which the reader
    drops) for ``engine journal recover`` to seal; every later ``append`` raises
    it again and ``close`` is a no-op.
    """


def _write_failures(method: Callable[..., Any]) -> Callable[..., Any]:
    """An ``OSError`` in ``method`` becomes the writer's :class:`JournalWriteError` and closes it."""

    @functools.wraps(method)
    def wrapper(self: JournalWriter, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except JournalWriteError:
            raise
        except OSError as exc:
            err = self._fail(exc)
            self._release()
            raise err from exc

    return wrapper


@attrs.frozen
class WriterConfig:
    """Batching, durability and rotation knobs (see the module docstring for what they bound)."""

    batch_frames: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    batch_age_ms: float = attrs.field(default=50.0, validator=attrs.validators.ge(0))
    fsync_interval_ms: float = attrs.field(default=1000.0, validator=attrs.validators.ge(0))
    segment_bytes: int = attrs.field(default=64 << 20, validator=attrs.validators.ge(1))
    segment_age_s: float = attrs.field(default=3600.0, validator=attrs.validators.gt(0))
    compression: str | None = "zstd"
    compact_on_seal: bool = True
    compact_rows: int = attrs.field(default=16384, validator=attrs.validators.ge(1))


def segment_name(index: int, partial: bool) -> str:
    return f"seg-{index:06d}" + (PARTIAL_SUFFIX if partial else SEGMENT_SUFFIX)


class _Collector:
    """A write-only file object that keeps what the Arrow IPC writer emits, so it can be written at once."""

    closed = False

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: Any) -> int:
        self.buf += data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


class JournalWriter:
    """Append-only writer of one journal directory.

    Use :meth:`create` for a new journal, :meth:`resume` to continue one after
    a crash or restart (its open segment is sealed first, ``seq`` continues).
    """

    def __init__(
        self,
        path: Path,
        metadata: dict[str, Any],
        config: WriterConfig,
        *,
        next_seq: int,
        next_index: int,
        clock: Callable[[], int] = time.monotonic_ns,
        sealed: list[dict[str, Any]] | None = None,
    ) -> None:
        self.path = path
        self.config = config
        self.metadata = metadata
        #: summaries of the sealed segments, as listed in journal.json (worker-thread owned)
        self._sealed: list[dict[str, Any]] = sealed if sealed is not None else []
        self._clock = clock
        self._schema = frame_schema(metadata)
        self._options = pa.ipc.IpcWriteOptions(
            compression=config.compression, emit_dictionary_deltas=False
        )
        self._batch_age_ns = int(config.batch_age_ms * 1e6)
        self._fsync_ns = int(config.fsync_interval_ms * 1e6)
        self._segment_age_ns = int(config.segment_age_s * 1e9)
        self._next_seq = next_seq
        self._index = next_index
        # buffered columns of the batch being built
        self._recv: list[int] = []
        self._conn: list[int] = []
        self._dir: list[int] = []
        self._kind: list[int] = []
        self._src: list[int] = []
        self._code: list[int | None] = []
        self._payload: list[bytes] = []
        self._batch_started = 0
        # per-segment state
        self._fd = -1
        self._ipc: pa.ipc.RecordBatchStreamWriter | None = None
        self._collector = _Collector()
        self._sources: dict[str, int] = {}
        self._source_list: list[str] = []
        self._source_dict = pa.array([], pa.utf8())
        self._segment_bytes = 0
        self._segment_opened = 0
        self._segment_first_seq = 0
        #: receive-time range of the open segment (recorded in its summary at sealing)
        self._segment_min_ns: int | None = None
        self._segment_max_ns: int | None = None
        self._last_fsync = 0
        self._dirty = False
        self.closed = False
        #: set by the first failed write (see :class:`JournalWriteError`)
        self.failed: JournalWriteError | None = None
        self._compactor: ThreadPoolExecutor | None = None
        self._compactions: list[Future[None]] = []
        #: totals since this writer started (for status displays)
        self.frames_written = 0
        self.bytes_written = 0

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        metadata: dict[str, Any] | None = None,
        config: WriterConfig | None = None,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> JournalWriter:
        """Start a new journal in ``path`` (created if missing; must hold no journal)."""
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        if (p / MANIFEST).exists() or any(p.glob("seg-*")):
            raise JournalExistsError(
                f"{p} already holds a journal: choose a new directory, or resume it"
            )
        md = {
            "engine_version": __version__,
            "created_ns": time.time_ns(),
            **(metadata or {}),
            "schema_version": SCHEMA_VERSION,  # the format this writer writes, whatever was copied
        }
        md.pop("segments", None)
        _write_manifest(p, {**md, "segments": []})
        return cls(p, md, config or WriterConfig(), next_seq=1, next_index=1, clock=clock)

    @classmethod
    def resume(
        cls,
        path: str | os.PathLike[str],
        config: WriterConfig | None = None,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> JournalWriter:
        """Continue an existing journal: seal its open segment (dropping a torn tail), go on at last seq + 1."""
        from engine.journal.recovery import seal_partials

        p = Path(path)
        manifest = p / MANIFEST
        if not manifest.exists():
            raise FileNotFoundError(f"{p} holds no journal ({MANIFEST} missing)")
        config = config or WriterConfig()
        state = seal_partials(p, config)
        md = json.loads(manifest.read_text())
        sealed = md.pop("segments", None)
        return cls(
            p,
            md,
            config,
            next_seq=state.last_seq + 1,
            next_index=state.last_index + 1,
            clock=clock,
            sealed=sealed if isinstance(sealed, list) else [],
        )

    # ------------------------------------------------------------------ appending

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def buffered(self) -> int:
        return len(self._payload)

    def append(
        self,
        recv_ns: int,
        conn: int,
        dir: str,
        kind: str,
        source: str,
        payload: bytes,
        code: int | None = None,
    ) -> int:
        """Buffer one frame; returns its ``seq``.  May write a batch (count or age reached)."""
        if self.closed:
            raise self.failed or ValueError("append on a closed JournalWriter")
        si = self._sources.get(source)
        if si is None:
            si = self._add_source(source)
        self._recv.append(recv_ns)
        self._conn.append(conn)
        self._dir.append(_DIR_INDEX[dir])
        self._kind.append(_KIND_INDEX[kind])
        self._src.append(si)
        self._code.append(code)
        self._payload.append(payload)
        seq = self._next_seq
        self._next_seq = seq + 1
        n = len(self._payload)
        if n == 1:
            self._batch_started = self._clock()
        elif n >= self.config.batch_frames:
            self.flush()
        elif not n & 15 and self._clock() - self._batch_started >= self._batch_age_ns:
            self.flush()
        return seq

    def _add_source(self, source: str) -> int:
        if not isinstance(source, str):
            raise TypeError(f"source must be str, not {type(source).__name__}")
        si = len(self._source_list)
        self._sources[source] = si
        self._source_list.append(source)
        self._source_dict = pa.array(self._source_list, pa.utf8())
        return si

    @_write_failures
    def tick(self) -> None:
        """Apply the time-based policies: write an aged batch, fsync when due.  Call every ~10 ms."""
        now = self._clock()
        if self._payload and now - self._batch_started >= self._batch_age_ns:
            self.flush()
        if self.fsync_due(now):
            self.fsync()

    def fsync_due(self, now: int | None = None) -> bool:
        now = self._clock() if now is None else now
        return self._dirty and now - self._last_fsync >= self._fsync_ns

    def fsync(self) -> None:
        """Make everything written so far durable (safe to call from a worker thread)."""
        fd = self._fd
        if fd >= 0 and self._dirty:
            self._dirty = False
            self._last_fsync = self._clock()
            try:
                os.fsync(fd)
            except OSError as exc:
                # EBADF, or another fd now: sealed (and fsynced) meanwhile by the writer's thread
                if exc.errno != errno.EBADF and fd == self._fd:
                    raise self._fail(exc) from exc

    # ------------------------------------------------------------------ writing batches

    @_write_failures
    def flush(self) -> None:
        """Write the buffered frames as one record batch (one ``os.write``); rotate if due."""
        n = len(self._payload)
        if not n:
            return
        first = self._next_seq - n
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array(range(first, first + n), pa.uint64()),
                pa.array(self._recv, pa.int64()),
                pa.array(self._conn, pa.uint32()),
                pa.DictionaryArray.from_arrays(pa.array(self._dir, pa.int8()), _DIR_DICT),
                pa.DictionaryArray.from_arrays(pa.array(self._kind, pa.int8()), _KIND_DICT),
                pa.DictionaryArray.from_arrays(
                    pa.array(self._src, pa.int32()), self._source_dict
                ),
                pa.array(self._code, pa.int32()),
                pa.array(self._payload, pa.binary()),
            ],
            schema=self._schema,
        )
        lo, hi = min(self._recv), max(self._recv)
        if self._ipc is None or self._segment_min_ns is None:
            self._segment_min_ns, self._segment_max_ns = lo, hi
        else:
            self._segment_min_ns = min(self._segment_min_ns, lo)
            self._segment_max_ns = max(self._segment_max_ns, hi)  # type: ignore[type-var]
        for col in (self._recv, self._conn, self._dir, self._kind, self._src, self._code):
            col.clear()
        self._payload = []
        if self._ipc is None:
            self._open_segment()
            self._segment_first_seq = first
        assert self._ipc is not None
        self._ipc.write_batch(batch, custom_metadata=batch_metadata(batch))
        self._write_all(self._collector.take())
        self.frames_written += n
        now = self._clock()
        if (
            self._segment_bytes >= self.config.segment_bytes
            or now - self._segment_opened >= self._segment_age_ns
        ):
            self._seal_segment()

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._segment_bytes += len(data)
        self.bytes_written += len(data)
        self._dirty = True

    def _open_segment(self) -> None:
        path = self.path / segment_name(self._index, partial=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._collector = _Collector()
        self._ipc = pa.ipc.new_stream(
            pa.PythonFile(self._collector, mode="w"), self._schema, options=self._options
        )
        self._segment_bytes = 0
        self._segment_opened = self._clock()
        self._last_fsync = self._segment_opened
        fsync_dir(self.path)

    def _seal_segment(self) -> None:
        if self._ipc is None:
            return
        self._ipc.close()  # end-of-stream marker
        self._write_all(self._collector.take())
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._ipc = None
        self._dirty = False
        partial = self.path / segment_name(self._index, partial=True)
        final = self.path / segment_name(self._index, partial=False)
        # nothing is buffered here (sealing follows a flush): the segment ends at next_seq - 1
        first, last = self._segment_first_seq, self._next_seq - 1
        summary = SegmentSummary(
            self._index, last - first + 1, first, last, self._segment_min_ns, self._segment_max_ns
        )
        self._segment_min_ns = self._segment_max_ns = None
        if self._compactor is None:
            self._compactor = ThreadPoolExecutor(1, thread_name_prefix="journal-compact")
        self._reap_compactions()
        self._compactions.append(
            self._compactor.submit(
                self._seal_worker,
                partial,
                final,
                summary,
                list(self._source_list),
            )
        )
        self._index += 1
        # The next segment is a new IPC stream: its source dictionary starts afresh
        # (nothing is buffered here: sealing follows a flush).
        self._sources = {}
        self._source_list = []
        self._source_dict = pa.array([], pa.utf8())

    # ------------------------------------------------------------------ closing

    @_write_failures
    def close(self) -> None:
        """Write what is buffered and seal the open segment (idempotent; no-op after a write failure)."""
        if self.closed:
            self._release()  # after a write failure: the files as they are, nothing written
            return
        self.flush()
        self._seal_segment()
        self.closed = True
        if self._compactor is not None:
            self._compactor.shutdown(wait=True)
            self._reap_compactions()

    def _seal_worker(
        self, partial: Path, final: Path, summary: SegmentSummary, sources: list[str]
    ) -> None:
        rows = self.config.compact_rows if self.config.compact_on_seal else None
        size = compact_segment(partial, final, self._options, rows, summary, sources)
        self._sealed.append(attrs.evolve(summary, size=size).to_json())
        _write_manifest(self.path, {**self.metadata, "segments": self._sealed})

    def _fail(self, exc: OSError) -> JournalWriteError:
        """Record the first write failure: the writer is closed, nothing more is written."""
        if self.failed is None:
            self.failed = JournalWriteError(
                exc.errno, f"journal write failed in {self.path}: {exc.strerror or exc}"
            )
            self.closed = True
            self._payload = []
        return self.failed

    def _release(self) -> None:
        """After a write failure: let go of the open segment's file as it is, and of the compactor."""
        fd, self._fd, self._ipc = self._fd, -1, None
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._compactor is not None:  # a failed compaction leaves its readable partial
            self._compactor.shutdown(wait=True)
            self._compactions = []

    def _reap_compactions(self) -> None:
        """Surface errors of finished compactions (a failed one leaves the readable partial)."""
        pending = []
        for fut in self._compactions:
            if fut.done():
                fut.result()
            else:
                pending.append(fut)
        self._compactions = pending

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_manifest(path: Path, metadata: dict[str, Any]) -> None:
    tmp = path / (MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(metadata, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path / MANIFEST)
    fsync_dir(path)
