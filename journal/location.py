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
* :func:`counting_reads` tallies the bytes and files read inside a block
  (:class:`ReadStats`): how seeking is measured.  :func:`read_all` reads a
  small file whole (a manifest, a checkpoint) into that tally; a journal
  file opened for random access is :func:`engine.journal.inputs.open_input`'s
  (counted, read ahead when remote).
* S3 settings are the standard ones: the AWS credential chain (environment
  variables, ``~/.aws``, instance roles), ``AWS_REGION``/``AWS_DEFAULT_REGION``,
  ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), or :func:`s3_endpoint`
  (``--s3-endpoint URL`` on every reading command).
* GCS settings are the standard ones too: Google's application-default
  credentials (``GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud auth
  application-default login``, the metadata server), ``GOOGLE_CLOUD_PROJECT``;
  an endpoint (an emulator, a private endpoint) from :func:`gcs_endpoint`
  (``--gcs-endpoint URL``, beside every ``--s3-endpoint``), else the
  emulator variables Google's clients read, ``STORAGE_EMULATOR_HOST`` or
  ``CLOUD_STORAGE_EMULATOR_ENDPOINT``.  With an endpoint and no
  ``GOOGLE_APPLICATION_CREDENTIALS`` requests are anonymous (what an emulator
  takes).
* Store failures become one-line :class:`LocationError` messages (bad URI,
  no credentials, bucket missing, access denied, endpoint unreachable).

Must not: interpret journal content (that is :mod:`.reader`), open files for
random access (that is :mod:`.inputs`), or write (only
:mod:`engine.live.upload` writes to a store, through :func:`filesystem_of`).
"""

from __future__ import annotations

import contextvars
import datetime
import os
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
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
    "read_all",
    "counting_reads",
    "read_stats",
    "s3_endpoint",
    "gcs_endpoint",
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
_GCS_ENDPOINT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "wiretape_gcs_endpoint", default=None
)
_FS_CACHE: dict[tuple[str, str | None, str], pafs.FileSystem] = {}


@contextmanager
def _setting(var: contextvars.ContextVar[str | None], value: str | None) -> Iterator[None]:
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def s3_endpoint(url: str | None) -> AbstractContextManager[None]:
    """S3 URIs opened inside this block use this endpoint (None: ``AWS_ENDPOINT_URL`` or AWS)."""
    return _setting(_ENDPOINT, url)


def gcs_endpoint(url: str | None) -> AbstractContextManager[None]:
    """gs:// URIs opened inside this block use this endpoint (None: the emulator variables or Google)."""
    return _setting(_GCS_ENDPOINT, url)


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
        kw.update(_override(endpoint, "https"))
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


def _override(endpoint: str, default_scheme: str) -> dict[str, str]:
    """``endpoint_override`` and ``scheme`` for a pyarrow FileSystem from an endpoint URL."""
    parts = urlsplit(endpoint if "://" in endpoint else f"{default_scheme}://{endpoint}")
    if not parts.netloc:
        raise LocationError(f"{endpoint}: not an endpoint URL (expected http://HOST:PORT)")
    return {"endpoint_override": parts.netloc, "scheme": parts.scheme or default_scheme}


#: How long one GCS request is retried on transient failures (google-cloud-cpp's own default
#: is 15 minutes: a reading command facing an unreachable endpoint would hang that long).
GCS_RETRY_S = 15.0


def _gcs_endpoint() -> tuple[str | None, str]:
    """The GCS endpoint in force and the scheme a bare ``HOST:PORT`` gets.

    ``STORAGE_EMULATOR_HOST`` is often written without a scheme
    (``localhost:4443``): an emulator speaks plain http, as Google's Go and
    Python clients assume; ``--gcs-endpoint`` and
    ``CLOUD_STORAGE_EMULATOR_ENDPOINT`` default to https like ``--s3-endpoint``.
    """
    chosen = _GCS_ENDPOINT.get()
    if chosen:
        return chosen, "https"
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if host:
        return host, "http"
    return os.environ.get("CLOUD_STORAGE_EMULATOR_ENDPOINT") or None, "https"


def _gcs() -> pafs.FileSystem:
    endpoint, default_scheme = _gcs_endpoint()
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or ""
    key = ("gs", endpoint, f"{project}/{GCS_RETRY_S}")
    fs = _FS_CACHE.get(key)
    if fs is not None:
        return fs
    kw: dict[str, Any] = {"retry_time_limit": datetime.timedelta(seconds=GCS_RETRY_S)}
    if project:
        kw["project_id"] = project
    if endpoint:
        kw.update(_override(endpoint, default_scheme))
        # an emulator takes no credentials; a private endpoint still gets the key file
        kw["anonymous"] = not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    fs = _FS_CACHE[key] = pafs.GcsFileSystem(**kw)
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
        return isinstance(other, RemotePath) and (self.scheme, self.key) == (
            other.scheme,
            other.key,
        )

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

    That is the S3 and the GCS endpoint when one is in effect (``--s3-endpoint``,
    ``--gcs-endpoint`` or the environment): a worker process started elsewhere
    (a Dask worker) sets these as its environment.  Credentials are not passed
    on: each process finds its own through the standard AWS / Google chain.
    """
    out: dict[str, str] = {}
    endpoint = _endpoint()
    if endpoint:
        out["AWS_ENDPOINT_URL_S3"] = endpoint
    gcs, scheme = _gcs_endpoint()
    if gcs:
        out["CLOUD_STORAGE_EMULATOR_ENDPOINT"] = gcs if "://" in gcs else f"{scheme}://{gcs}"
    return out


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


def read_all(p: Path | RemotePath) -> bytes:
    """The whole content of a small file (a manifest, a checkpoint), counted like a segment's reads."""
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
            "UNAUTHENTICATED",
        ),
        "no valid credentials for {where} ({credentials})",
    ),
    (
        (
            "Couldn't connect",
            "Could not connect",
            "Connection refused",
            "curlCode: 7",
            "Could not resolve",
            "NETWORK",
        ),
        "cannot reach the store for {where} ({endpoint})",
    ),
)
_CREDENTIALS = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
    "gs": "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file,"
    " or run gcloud auth application-default login",
}


def _gcs_not_found(where: str, bucket: str) -> LocationError:
    """GCS says only 404: whether the bucket or the object is missing takes one more request."""
    try:
        gone = _gcs().get_file_info(bucket).type == pafs.FileType.NotFound
    except (OSError, pa.ArrowException):
        gone = False
    if gone:
        return LocationError(f"bucket {bucket} does not exist")
    return LocationError(f"{where}: no such object")


def store_error(exc: BaseException, where: str) -> LocationError:
    """A one-line :class:`LocationError` for a store failure at ``where`` (a URI)."""
    if isinstance(exc, LocationError):
        return exc
    text = str(exc)
    bucket = urlsplit(where).netloc if is_uri(where) else where.split("/", 1)[0]
    # ``where`` may be a FileSystem path (no scheme): google-cloud-cpp's errors name themselves
    gcs = "google::cloud::" in text or where.split("://", 1)[0] in ("gs", "gcs")
    endpoint = (_gcs_endpoint()[0] or "Google Cloud Storage") if gcs else (_endpoint() or "AWS")
    if gcs and "NOT_FOUND" in text:
        return _gcs_not_found(where, bucket)
    for needles, message in _ERRORS:
        if any(n in text for n in needles):
            return LocationError(
                message.format(
                    where=where,
                    bucket=bucket,
                    endpoint=endpoint,
                    credentials=_CREDENTIALS["gs" if gcs else "s3"],
                )
            )
    first = (text.strip().splitlines() or [type(exc).__name__])[0][:200]
    return LocationError(f"{where}: {first}")
