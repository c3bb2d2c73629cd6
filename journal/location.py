"""Journal locations: a local path, ``file://…``, ``s3://…`` or ``gs://…``, opened through ``pyarrow.fs``.

The one place that turns what a user typed into something the readers can open:

* :func:`as_path` gives a :class:`pathlib.Path` for a local path or ``file://``
  URI (local reading is unchanged: plain files, same speed) and a
  :class:`RemotePath` for an object-store URI.  :class:`RemotePath` speaks the
  read-only part of ``pathlib`` the readers use (``/``, ``name``, ``parent``,
  ``exists``, ``is_dir``, ``is_file``, ``iterdir``, ``read_bytes``,
  ``read_text``, ``stat().st_size``), backed by a ``pyarrow.fs.FileSystem``
  (S3FileSystem, GcsFileSystem), so the code that walks a journal directory
  is the same for both.
* :func:`open_input` opens a file for random access (an IPC file footer, one
  batch at a time) and counts the bytes it reads when :func:`counting_reads`
  is active (always for remote files): how seeking is measured.
* S3 settings are the standard ones: the AWS credential chain (environment
  variables, ``~/.aws``, instance roles), ``AWS_REGION``/``AWS_DEFAULT_REGION``,
  ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), or :func:`s3_endpoint`
  (``--s3-endpoint URL`` on every reading command).
* Store failures become one-line :class:`LocationError` messages (bad URI,
  no credentials, bucket missing, access denied, endpoint unreachable).

Must not: interpret journal content (that is :mod:`.reader`) or write (only
:mod:`engine.live.upload` writes to a store, through :func:`filesystem_of`).
"""

from __future__ import annotations

import contextvars
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs
import pyarrow as pa
import pyarrow.fs as pafs

__all__ = [
    "LocationError",
    "RemotePath",
    "Where",
    "ReadStats",
    "as_path",
    "is_remote",
    "is_uri",
    "open_input",
    "read_all",
    "counting_reads",
    "s3_endpoint",
    "filesystem_of",
    "store_error",
    "list_tree",
    "worker_settings",
]

REMOTE_SCHEMES = ("s3", "gs", "gcs")
_URI_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class LocationError(OSError):
    """A location that cannot be used: bad URI, no credentials, missing bucket, access denied."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "location error"


# ------------------------------------------------------------------ settings

_ENDPOINT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "wiretape_s3_endpoint", default=None
)
_FS_CACHE: dict[tuple[str, str | None, str], pafs.FileSystem] = {}


@contextmanager
def s3_endpoint(url: str | None) -> Iterator[None]:
    """S3 URIs opened inside this block use this endpoint (None: ``AWS_ENDPOINT_URL`` or AWS)."""
    token = _ENDPOINT.set(url)
    try:
        yield
    finally:
        _ENDPOINT.reset(token)


def _endpoint() -> str | None:
    return (
        _ENDPOINT.get()
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or None
    )


def _s3(bucket: str) -> pafs.FileSystem:
    endpoint = _endpoint()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    key = ("s3", endpoint, region or "")
    fs = _FS_CACHE.get(key)
    if fs is not None:
        return fs
    kw: dict[str, Any] = {}
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if not parts.netloc:
            raise LocationError(f"{endpoint}: not an endpoint URL (expected http://HOST:PORT)")
        kw.update(endpoint_override=parts.netloc, scheme=parts.scheme or "https")
        kw["region"] = region or "us-east-1"
    elif region:
        kw["region"] = region
    else:
        try:  # AWS proper: the bucket's own region (one request)
            kw["region"] = pafs.resolve_s3_region(bucket)
        except (OSError, pa.ArrowException) as exc:
            raise store_error(exc, f"s3://{bucket}") from None
    fs = _FS_CACHE[key] = pafs.S3FileSystem(**kw)
    return fs


def _gcs() -> pafs.FileSystem:
    key = ("gs", None, "")
    fs = _FS_CACHE.get(key)
    if fs is None:
        fs = _FS_CACHE[key] = pafs.GcsFileSystem()
    return fs


# ------------------------------------------------------------------ paths


def is_uri(x: object) -> bool:
    """Does ``x`` look like ``scheme://…`` (and not a Windows drive or a plain path)?"""
    return isinstance(x, str) and bool(_URI_RE.match(x))


def is_remote(x: object) -> bool:
    return isinstance(x, RemotePath) or (
        is_uri(x) and str(x).split("://", 1)[0].lower() in REMOTE_SCHEMES
    )


def as_path(x: str | os.PathLike[str] | RemotePath) -> Path | RemotePath:
    """A local :class:`Path` (plain path or ``file://``) or a :class:`RemotePath` (``s3://``, ``gs://``).

    Raises:
        LocationError: an unsupported scheme or a URI without a bucket.
    """
    if isinstance(x, Path | RemotePath):
        return x
    s = os.fspath(x)
    m = _URI_RE.match(s)
    if not m:
        return Path(s)
    scheme = m.group(1).lower()
    parts = urlsplit(s)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise LocationError(f"{s}: a file:// URI names no host (file:///abs/path)")
        return Path(unquote(parts.path))
    if scheme not in REMOTE_SCHEMES:
        raise LocationError(
            f"{s}: unsupported scheme {scheme}:// (a local path, file://, s3:// or gs://)"
        )
    bucket = parts.netloc
    if not bucket:
        raise LocationError(f"{s}: no bucket (expected {scheme}://BUCKET/PREFIX)")
    key = unquote(parts.path).strip("/")
    fs = _s3(bucket) if scheme == "s3" else _gcs()
    return RemotePath(fs, f"{bucket}/{key}" if key else bucket, "gs" if scheme == "gcs" else scheme)


def filesystem_of(p: Path | RemotePath) -> tuple[pafs.FileSystem, str]:
    """The pyarrow FileSystem and its path for ``p`` (local: LocalFileSystem and the absolute path)."""
    if isinstance(p, RemotePath):
        return p.fs, p.key
    return pafs.LocalFileSystem(), str(Path(p).absolute())


@attrs.frozen
class _Stat:
    st_size: int


@attrs.frozen(eq=False)
class RemotePath:
    """A file or "directory" (a key prefix) in an object store, with the read-only pathlib subset.

    ``key`` is the FileSystem path (``bucket/prefix/name``); ``str()`` the URI.
    A listing (:meth:`iterdir`) remembers each entry's type and size, so
    walking a journal costs one request per directory.
    """

    fs: pafs.FileSystem = attrs.field(repr=False)
    key: str
    scheme: str = "s3"
    _info: pafs.FileInfo | None = attrs.field(default=None, repr=False)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.key}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and (self.scheme, self.key) == (other.scheme, other.key)

    def __hash__(self) -> int:
        return hash((self.scheme, self.key))

    def __lt__(self, other: RemotePath) -> bool:
        return (self.scheme, self.key) < (other.scheme, other.key)

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(self.fs, f"{self.key.rstrip('/')}/{str(name).strip('/')}", self.scheme)

    @property
    def name(self) -> str:
        return self.key.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> RemotePath:
        head = self.key.rstrip("/").rsplit("/", 1)[0]
        return RemotePath(self.fs, head, self.scheme)

    def info(self) -> pafs.FileInfo:
        if self._info is not None:
            return self._info
        try:
            return self.fs.get_file_info(self.key)
        except (OSError, pa.ArrowException) as exc:
            raise store_error(exc, str(self)) from None

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def missing(self) -> str:
        """Why it does not exist, in words: its bucket is missing, or nothing is under the prefix."""
        bucket = self.key.split("/", 1)[0]
        try:
            gone = self.fs.get_file_info(bucket).type == pafs.FileType.NotFound
        except (OSError, pa.ArrowException) as exc:
            raise store_error(exc, str(self)) from None
        if gone:
            return f"bucket {bucket} does not exist"
        return "no such prefix (nothing stored under it)"

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def stat(self) -> _Stat:
        info = self.info()
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(f"{self}: no such object")
        return _Stat(info.size or 0)

    def iterdir(self) -> Iterator[RemotePath]:
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.key, allow_not_found=True))
        except (OSError, pa.ArrowException) as exc:
            raise store_error(exc, str(self)) from None
        for info in sorted(infos, key=lambda i: i.path):
            yield RemotePath(self.fs, info.path, self.scheme, info)

    def read_bytes(self) -> bytes:
        return read_all(self)

    def read_text(self) -> str:
        return self.read_bytes().decode()


def list_tree(p: RemotePath) -> list[RemotePath]:
    """Every object under the prefix ``p``, in key order, each knowing its size: one recursive listing.

    Reads no object: a listing is metadata only (S3 answers up to 1000 keys a
    request), so finding the journals of a catalog costs what listing its keys
    costs, whatever the journals hold.  A prefix with nothing under it (or a
    missing bucket) lists nothing; :meth:`RemotePath.missing` says which.

    Raises:
        LocationError: the store refused (access denied, no credentials, unreachable).
    """
    try:
        infos = p.fs.get_file_info(pafs.FileSelector(p.key, allow_not_found=True, recursive=True))
    except NotADirectoryError:  # a file (an object) holds nothing under it
        return []
    except (OSError, pa.ArrowException) as exc:
        raise store_error(exc, str(p)) from None
    files = sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)
    return [RemotePath(p.fs, i.path, p.scheme, i) for i in files]


def worker_settings() -> dict[str, str]:
    """The store settings of this process another process needs to read the same URIs.

    That is the S3 endpoint when one is in effect (``--s3-endpoint`` or the
    environment): a worker process started elsewhere (a Dask worker) sets
    these as its environment.  Credentials are not passed on: each process
    finds its own through the standard AWS chain.
    """
    endpoint = _endpoint()
    return {"AWS_ENDPOINT_URL_S3": endpoint} if endpoint else {}


#: What every reading function takes: a path, a URI (``file://``, ``s3://``, ``gs://``) or a RemotePath.
Where = str | os.PathLike[str] | RemotePath


# ------------------------------------------------------------------ reading, counted


@attrs.define
class ReadStats:
    """Bytes and files read inside a :func:`counting_reads` block."""

    bytes_read: int = 0
    files_opened: int = 0
    segments_skipped: int = 0

    def to_json(self) -> dict[str, int]:
        return attrs.asdict(self)


_STATS: contextvars.ContextVar[ReadStats | None] = contextvars.ContextVar(
    "wiretape_read_stats", default=None
)


@contextmanager
def counting_reads() -> Iterator[ReadStats]:
    """Count the bytes every journal file opened in this block reads (local and remote)."""
    stats = ReadStats()
    token = _STATS.set(stats)
    try:
        yield stats
    finally:
        _STATS.reset(token)


def read_stats() -> ReadStats | None:
    """The active :func:`counting_reads` tally (None outside one)."""
    return _STATS.get()


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
    stats = _STATS.get()
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


def read_all(p: Path | RemotePath) -> bytes:
    """The whole content of a small file (a manifest, a checkpoint), counted like :func:`open_input`."""
    if not isinstance(p, RemotePath):
        data = Path(p).read_bytes()
    else:
        try:
            with p.fs.open_input_stream(p.key, compression=None) as f:
                data = f.read()
        except (OSError, pa.ArrowException) as exc:
            raise store_error(exc, str(p)) from None
    stats = _STATS.get()
    if stats is not None:
        stats.files_opened += 1
        stats.bytes_read += len(data)
    return data


# ------------------------------------------------------------------ errors

_ERRORS = (
    (("NO_SUCH_BUCKET", "NoSuchBucket", "bucket does not exist"), "bucket {bucket} does not exist"),
    (
        ("ACCESS_DENIED", "AccessDenied", "403", "Forbidden"),
        "access denied to {where} (check the credentials' permissions on bucket {bucket})",
    ),
    (
        (
            "INVALID_ACCESS_KEY_ID",
            "InvalidAccessKeyId",
            "SIGNATURE_DOES_NOT_MATCH",
            "SignatureDoesNotMatch",
            "credentials",
            "Credentials",
            "ExpiredToken",
        ),
        "no valid credentials for {where} (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,"
        " or AWS_PROFILE)",
    ),
    (
        ("Couldn't connect", "Connection refused", "curlCode: 7", "Could not resolve", "NETWORK"),
        "cannot reach the store for {where} ({endpoint})",
    ),
)


def store_error(exc: BaseException, where: str) -> LocationError:
    """A one-line :class:`LocationError` for a store failure at ``where`` (a URI)."""
    if isinstance(exc, LocationError):
        return exc
    text = str(exc)
    bucket = urlsplit(where).netloc if is_uri(where) else where.split("/", 1)[0]
    endpoint = _endpoint() or "AWS"
    for needles, message in _ERRORS:
        if any(n in text for n in needles):
            return LocationError(message.format(where=where, bucket=bucket, endpoint=endpoint))
    first = (text.strip().splitlines() or [type(exc).__name__])[0][:200]
    return LocationError(f"{where}: {first}")
