"""Random-access journal files: :func:`open_input` and the counted, read-ahead view behind it.

The one place a journal file (a segment: an IPC file footer, then one batch at
a time) is opened for random access.  A local file opens as a plain
``pyarrow.OSFile`` (no wrapper, same speed) unless a
:func:`~engine.journal.location.counting_reads` block is active; a remote one
always goes through :class:`_Counted`, which counts the bytes fetched into that
tally, reads ahead on sequential scans (a few large requests per segment, not
two small ones per batch) and raises a store failure as a one-line
:class:`~engine.journal.location.LocationError`.

Must not: interpret journal content (that is :mod:`.segments` and
:mod:`.reader`), resolve what a user typed into a location or build a store's
FileSystem (that is :mod:`.location`), or write.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from engine.journal.location import ReadStats, RemotePath, read_stats, store_error

__all__ = ["open_input", "READAHEAD_MIN", "READAHEAD_MAX"]


#: Sequential remote reads fetch ahead, doubling from this size ...
READAHEAD_MIN = 256 << 10
#: ... up to this one (the memory a remote file holds beyond what the reader asked for).
READAHEAD_MAX = 8 << 20


class _Counted:
    """A file-like view of a pyarrow NativeFile that counts bytes read (wrapped in pa.PythonFile).

    ``readahead`` (remote files): a read that continues where the previous one
    ended fetches ahead, from ``READAHEAD_MIN`` doubling to ``READAHEAD_MAX``,
    so scanning a segment costs a few large requests instead of two small
    ones per batch; a read elsewhere (a footer, a seek) fetches exactly what
    it asks for.  ``bytes_read`` counts what was fetched.  A store failure is
    raised as a one-line :class:`LocationError` (pyarrow passes it through),
    so the reader reports it as what it is, not as a damaged segment.
    """

    def __init__(self, f: pa.NativeFile, stats: ReadStats, where: str, readahead: bool) -> None:
        self._f = f
        self._stats = stats
        self._where = where
        self._readahead = readahead
        self._size = f.size()
        self._pos = 0
        self._buf = b""
        self._buf_at = 0
        self._next = READAHEAD_MIN
        self._end = -1  # where the previous read ended
        self.closed = False

    def _fetch(self, n: int, at: int) -> bytes:
        try:
            data = self._f.read_at(n, at)
        except (OSError, pa.ArrowException) as exc:
            raise store_error(exc, self._where) from None
        self._stats.bytes_read += len(data)
        return bytes(data)

    def read(self, n: int = -1) -> bytes:
        pos = self._pos
        if n is None or n < 0:
            n = self._size - pos
        n = max(0, min(n, self._size - pos))
        off = pos - self._buf_at
        if 0 <= off and off + n <= len(self._buf):
            data = self._buf[off : off + n]
        elif self._readahead and pos == self._end:
            want = min(max(n, self._next), self._size - pos)
            self._next = min(self._next * 2, READAHEAD_MAX)
            self._buf, self._buf_at = self._fetch(want, pos), pos
            data = self._buf[:n]
        else:
            self._next = READAHEAD_MIN
            self._buf, self._buf_at = b"", 0
            data = self._fetch(n, pos)
        self._pos = self._end = pos + len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        base = (0, self._pos, self._size)[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True
        self._buf = b""
        self._f.close()


def open_input(p: Path | RemotePath) -> pa.NativeFile:
    """``p`` opened for random access; counted when :func:`counting_reads` is active or ``p`` is remote.

    A store failure while reading raises :class:`LocationError` through
    pyarrow (the readers let it pass: it is not damage).

    Raises:
        LocationError: the store refused (missing, access denied, unreachable).
        OSError: a local file that cannot be opened.
    """
    stats = read_stats()
    if isinstance(p, RemotePath):
        try:
            f = p.fs.open_input_file(p.key)
        except (OSError, pa.ArrowException) as exc:
            raise store_error(exc, str(p)) from None
        if stats is None:
            stats = ReadStats()  # remote reads always go through the wrapper (errors named)
    else:
        f = pa.OSFile(str(p))
        if stats is None:
            return f
    stats.files_opened += 1
    return pa.PythonFile(_Counted(f, stats, str(p), isinstance(p, RemotePath)), mode="r")
