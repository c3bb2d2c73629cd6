"""Shipping journals to object storage: ``engine run --upload URI``, ``engine journal push|pull``.

Owns the copy of a journal directory to a location (:mod:`engine.journal.location`:
``s3://``, ``gs://``, ``file://`` or a path) and back, and the background
uploader of a live capture.  One pass (:func:`push_journal`) serves both:

* What goes: sealed segments (``seg-N.arrows``) of the journal and of its
  outputs journal (``outputs/``), checkpoints (``checkpoints/ckpt-*``), and
  each ``journal.json``.  Never a ``.partial`` (the open segment: it goes once
  sealed) nor a ``.tmp``.
* Order: a manifest is read first and uploaded last, and only once every
  segment it lists is in the store: a reader of the bucket never sees a
  manifest naming a segment that is not there yet.
* Verified: after each upload the object's size is read from the store and
  its content read back and compared by CRC-32C with the local file.  An
  object already in the store with the same size and checksum is skipped
  (so a pass is idempotent: ``push`` finishes what a crash left).
* ``keep_local=False``: a file is removed locally only after its upload is
  verified (manifests stay: the writer keeps rewriting them; the capture's
  end removes the emptied directory).

:class:`Uploader` is the capture's trio task: a pass in a worker thread
whenever a seal may have happened (every ``interval_s``), retries with
exponential backoff, and reports each failure through ``on_error`` (the
capture journals it as a local ``error`` frame).  The backlog is what is on
disk (bounded by the journal itself); the wake-up queue holds one item.  It
never blocks the capture: the capture never waits for it.

A capture set (``engine run --processes N``, :mod:`engine.journal.captureset`)
goes member by member, each to ``URI/<its journal directory>`` as one
journal would, and its set manifest ``captureset.json`` last, only once every
member is complete in the store (:func:`push_set`, :func:`pull_set`): a
reader never meets a set whose members are incomplete.  A member that fails
is named and the others still go.

Must not: modify journal content (it copies files byte for byte) or decide
what a journal holds (the writer does).
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import crc32c as _crc32c
import pyarrow as pa
import pyarrow.fs as pafs
import trio

from engine.journal.location import (
    LocationError,
    RemotePath,
    as_path,
    filesystem_of,
    store_error,
)
from engine.journal.schema import MANIFEST

__all__ = [
    "PushReport",
    "SetReport",
    "UploadError",
    "push_journal",
    "pull_journal",
    "push_set",
    "pull_set",
    "member_target",
    "upload_set_manifest",
    "stored_set_manifest",
    "Uploader",
]

log = logging.getLogger(__name__)

_SEALED = re.compile(r"^seg-\d{6,}\.arrows$")
_CKPT = re.compile(r"^ckpt-\d{12,}-(-?\d+)\.json(\.zst)?$")
_CHUNK = 1 << 20
COMPANIONS = ("outputs",)
CHECKPOINTS = "checkpoints"


class UploadError(OSError):
    """An upload that could not be done or verified (the local copy is kept)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "upload failed"


@attrs.define
class PushReport:
    """What one pass did (names relative to the journal directory)."""

    uploaded: list[str] = attrs.Factory(list)
    skipped: list[str] = attrs.Factory(list)  #: already in the store, verified
    removed: list[str] = attrs.Factory(list)  #: local copies removed after verification
    pending: list[str] = attrs.Factory(list)  #: not uploaded yet (partials, unlisted manifests)
    bytes: int = 0

    def merge(self, other: PushReport) -> None:
        for f in ("uploaded", "skipped", "removed", "pending"):
            getattr(self, f).extend(getattr(other, f))
        self.bytes += other.bytes

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


# ------------------------------------------------------------------ one file


def _crc_of(fs: pafs.FileSystem, path: str) -> tuple[int, int]:
    """(size, CRC-32C) of a file read back through ``fs``."""
    crc = n = 0
    with fs.open_input_stream(path, compression=None) as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                return n, crc
            n += len(chunk)
            crc = _crc32c.crc32c(chunk, crc)


def _crc_bytes(data: bytes) -> int:
    return int(_crc32c.crc32c(data))


def _present(fs: pafs.FileSystem, path: str, size: int, crc: int) -> bool:
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File or info.size != size:
        return False
    return _crc_of(fs, path) == (size, crc)


def _put(fs: pafs.FileSystem, path: str, data: Iterator[bytes], local: bool) -> None:
    """Write an object; on a local filesystem through ``.tmp`` and a rename (readers ignore .tmp)."""
    target = path + ".tmp" if local else path
    parent = path.rsplit("/", 1)[0]
    if local:
        fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(target, compression=None) as out:
        for chunk in data:
            out.write(chunk)
    if local:
        fs.move(target, path)


def _chunks_from(f: pa.NativeFile) -> Iterator[bytes]:
    while chunk := f.read(_CHUNK):
        yield chunk


def _chunks_of(p: Path) -> Iterator[bytes]:
    with open(p, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def copy_verified(
    src: Path, fs: pafs.FileSystem, dest: str, *, local: bool, data: bytes | None = None
) -> bool:
    """Copy ``src`` (or ``data``, its bytes as read) to ``dest`` unless already there; verify.

    Returns True if it uploaded, False if a verified copy was already there.

    Raises:
        UploadError: the store's object differs after the upload (size or CRC).
        LocationError: the store failed (credentials, bucket, network).
    """
    where = f"{dest}"
    try:
        if data is None:
            size, crc = _crc_of(pafs.LocalFileSystem(), str(src.absolute()))
        else:
            size, crc = len(data), _crc_bytes(data)
        if _present(fs, dest, size, crc):
            return False
        _put(fs, dest, iter([data]) if data is not None else _chunks_of(src), local)
        info = fs.get_file_info(dest)
        if info.size != size:
            raise UploadError(f"{where}: uploaded {info.size} bytes, {src.name} has {size}")
        got = _crc_of(fs, dest)
        if got != (size, crc):
            raise UploadError(f"{where}: the stored copy of {src.name} differs (CRC-32C)")
        return True
    except UploadError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise store_error(exc, where) from None


# ------------------------------------------------------------------ a journal directory


def _dest(target: Path | RemotePath) -> tuple[pafs.FileSystem, str, bool]:
    fs, root = filesystem_of(target)
    return fs, root.rstrip("/"), not isinstance(target, RemotePath)


def _listed(manifest: bytes) -> list[str]:
    import json

    try:
        md = json.loads(manifest)
        return [f"seg-{int(s['index']):06d}.arrows" for s in md.get("segments") or []]
    except (ValueError, TypeError, KeyError, AttributeError):
        return []


def _push_dir(
    d: Path,
    rel: str,
    fs: pafs.FileSystem,
    root: str,
    local: bool,
    keep_local: bool,
    known: dict[str, int],
) -> PushReport:
    """One journal directory (the journal or its outputs): sealed segments, then its manifest."""
    rep = PushReport()
    manifest = d / MANIFEST
    data = manifest.read_bytes() if manifest.is_file() else None  # read first, put last
    there: set[str] = set()
    for p in sorted(d.iterdir()):
        name = f"{rel}{p.name}"
        if p.name.endswith(".partial"):
            rep.pending.append(name)
            continue
        if not _SEALED.match(p.name) or not p.is_file():
            continue
        size = p.stat().st_size
        if known.get(name) == size:
            pass  # verified by an earlier pass of this process
        elif copy_verified(p, fs, f"{root}/{name}", local=local):
            rep.uploaded.append(name)
            rep.bytes += size
        else:
            rep.skipped.append(name)
        known[name] = size
        there.add(p.name)
        if not keep_local:
            p.unlink()
            rep.removed.append(name)
    if data is not None:
        missing = [
            s
            for s in _listed(data)
            if s not in there
            and f"{rel}{s}" not in known
            and fs.get_file_info(f"{root}/{rel}{s}").type != pafs.FileType.File
        ]
        name = f"{rel}{MANIFEST}"
        if missing:  # never a manifest naming what the store lacks
            rep.pending.append(name)
        elif copy_verified(manifest, fs, f"{root}/{name}", local=local, data=data):
            rep.uploaded.append(name)
            rep.bytes += len(data)
        else:
            rep.skipped.append(name)
    return rep


def push_journal(
    journal_dir: str | Path,
    target: str | Path | RemotePath,
    *,
    keep_local: bool = True,
    known: dict[str, int] | None = None,
) -> PushReport:
    """Copy a local journal directory to ``target`` (see the module docstring); one idempotent pass.

    ``known``: names (and sizes) already verified in the store by earlier
    passes, not checked again; updated by this pass (the live uploader's memory).

    Raises:
        LocationError: the store failed (the message says what: credentials, bucket ...).
        UploadError: a copy could not be verified.
        FileNotFoundError: ``journal_dir`` is not a directory.
    """
    src = Path(journal_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such journal directory")
    dest = as_path(target)
    fs, root, local = _dest(dest)
    rep = PushReport()
    known = {} if known is None else known
    for rel in ("", *(f"{c}/" for c in COMPANIONS)):
        d = src / rel if rel else src
        if d.is_dir():
            rep.merge(_push_dir(d, rel, fs, root, local, keep_local, known))
    ck = src / CHECKPOINTS
    if ck.is_dir():
        for p in sorted(ck.iterdir()):
            if not _CKPT.match(p.name) or not p.is_file():
                continue
            name = f"{CHECKPOINTS}/{p.name}"
            try:
                size = p.stat().st_size
                if known.get(name) == size:
                    continue
                fresh = copy_verified(p, fs, f"{root}/{name}", local=local)
            except FileNotFoundError:
                continue  # retention removed it meanwhile
            known[name] = size
            (rep.uploaded if fresh else rep.skipped).append(name)
            rep.bytes += size if fresh else 0
            if not keep_local:
                p.unlink(missing_ok=True)
                rep.removed.append(name)
    return rep


def pull_journal(source: str | Path | RemotePath, journal_dir: str | Path) -> PushReport:
    """Copy a journal from ``source`` into a local directory (verified; present files skipped)."""
    src = as_path(source)
    fs, root, _local = _dest(src)
    out = Path(journal_dir)
    rep = PushReport()
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except (OSError, pa.ArrowException) as exc:
        raise store_error(exc, str(src)) from None
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File)
    if not any(f == f"{root}/{MANIFEST}" for f in files):
        raise LocationError(f"{src}: not a journal (no {MANIFEST} there)")
    lfs = pafs.LocalFileSystem()
    # manifests last, as when pushing: an interrupted pull never lists what it lacks
    files.sort(key=lambda f: f.endswith("/" + MANIFEST))
    for key in files:
        rel = key[len(root) + 1 :]
        name = rel.rsplit("/", 1)[-1]
        if name.endswith((".tmp", ".partial")):
            continue
        local = out / rel
        try:
            size, crc = _crc_of(fs, key)
            if local.is_file() and _crc_of(lfs, str(local.absolute())) == (size, crc):
                rep.skipped.append(rel)
                continue
            with fs.open_input_stream(key, compression=None) as f:
                _put(lfs, str(local.absolute()), _chunks_from(f), True)
        except (OSError, pa.ArrowException) as exc:
            raise store_error(exc, f"{src}/{rel}") from None
        if _crc_of(lfs, str(local.absolute())) != (size, crc):
            raise UploadError(f"{local}: the copy differs from {src}/{rel} (CRC-32C)")
        rep.uploaded.append(rel)
        rep.bytes += size
    return rep


# ------------------------------------------------------------------ a capture set


def member_target(target: str | Path, journal: str) -> str:
    """Where a set member's journal goes: ``target/<its journal directory>`` (URI or path)."""
    return f"{str(target).rstrip('/')}/{journal}"


@attrs.define
class SetReport:
    """What one pass over a capture set did: one :class:`PushReport` per member, the set manifest."""

    members: dict[str, PushReport] = attrs.Factory(dict)
    #: member name → its journal directory in the set
    journals: dict[str, str] = attrs.Factory(dict)
    failed: dict[str, str] = attrs.Factory(dict)  #: member name → why it could not go
    stored_earlier: list[str] = attrs.Factory(list)  #: no local copy, already in the store
    manifest: str = "pending"  #: "copied", "skipped" (already there, identical) or "pending"

    @property
    def complete(self) -> bool:
        return self.manifest != "pending"

    def incomplete(self) -> list[str]:
        """Members not wholly in the store (failed, or files pending)."""
        return [n for n, r in self.members.items() if r.pending] + list(self.failed)

    def to_json(self) -> dict[str, Any]:
        return {
            "captureset": self.manifest,
            "members": {n: r.to_json() for n, r in self.members.items()},
            "journals": dict(self.journals),
            "failed": dict(self.failed),
            "stored_earlier": list(self.stored_earlier),
        }


def upload_set_manifest(set_dir: str | Path, target: str | Path | RemotePath) -> bool:
    """Copy ``set_dir``'s ``captureset.json`` to ``target`` (verified); False if already there.

    The caller uploads it last, once every member is complete in the store.
    """
    from engine.journal.captureset import SET_MANIFEST

    src = Path(set_dir) / SET_MANIFEST
    fs, root, local = _dest(as_path(target))
    return copy_verified(src, fs, f"{root}/{SET_MANIFEST}", local=local, data=src.read_bytes())


def _stored_journal(target: str) -> bool:
    fs, root, _local = _dest(as_path(target))
    try:
        return fs.get_file_info(f"{root}/{MANIFEST}").type == pafs.FileType.File
    except (OSError, pa.ArrowException) as exc:
        raise store_error(exc, target) from None


def push_set(set_dir: str | Path, target: str | Path, *, keep_local: bool = True) -> SetReport:
    """Copy a local capture set to ``target``: each member, then the set manifest (one idempotent pass).

    A member that fails (store error, unverified copy, no journal) is in
    ``failed`` and the others still go; a member whose local directory is gone
    (a capture that shipped it and removed it) counts if its journal is in the
    store.  The set manifest goes only when no member failed or left anything.

    Raises:
        NotACaptureSet: ``set_dir`` holds no readable ``captureset.json``.
        LocationError / UploadError: the set manifest's own upload failed.
    """
    from engine.journal.captureset import read_set

    cs = read_set(set_dir)
    rep = SetReport()
    for m in cs.members:
        d, dest = cs.journal_dir(m), member_target(target, m.journal)
        rep.journals[m.name] = m.journal
        try:
            if d.is_dir():
                rep.members[m.name] = push_journal(d, dest, keep_local=keep_local)
            elif _stored_journal(dest):
                rep.stored_earlier.append(m.name)
            else:
                rep.failed[m.name] = f"{d}: no such journal directory, and none at {dest}"
        except (OSError, pa.ArrowException) as exc:
            rep.failed[m.name] = str(exc)
    if not rep.incomplete():
        rep.manifest = "copied" if upload_set_manifest(cs.path, target) else "skipped"
    return rep


def stored_set_manifest(source: str | Path | RemotePath) -> bytes | None:
    """The ``captureset.json`` stored at ``source`` (None when ``source`` holds no capture set)."""
    from engine.journal.captureset import SET_MANIFEST

    fs, root, _local = _dest(as_path(source))
    key = f"{root}/{SET_MANIFEST}"
    try:
        if fs.get_file_info(key).type != pafs.FileType.File:
            return None
        with fs.open_input_stream(key, compression=None) as f:
            return bytes(f.read())
    except (OSError, pa.ArrowException) as exc:
        raise store_error(exc, str(source)) from None


def pull_set(source: str | Path, set_dir: str | Path) -> SetReport:
    """Copy the capture set stored at ``source`` into ``set_dir``: each member, the set manifest last.

    The manifest is checked (as :func:`engine.journal.captureset.read_set`
    does) before anything is copied, and written locally only after every
    member was copied and verified, so an interrupted pull never looks like
    a whole set; run it again to finish.

    Raises:
        NotACaptureSet: ``source`` holds no capture set, or a damaged manifest.
    """
    import tempfile

    from engine.journal.captureset import SET_MANIFEST, NotACaptureSet, read_set

    data = stored_set_manifest(source)
    if data is None:
        raise NotACaptureSet(f"{source}: no {SET_MANIFEST} there")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / SET_MANIFEST).write_bytes(data)
        cs = read_set(tmp)
    out = Path(set_dir)
    rep = SetReport()
    for m in cs.members:
        rep.journals[m.name] = m.journal
        try:
            rep.members[m.name] = pull_journal(member_target(source, m.journal), out / m.journal)
        except (OSError, pa.ArrowException) as exc:
            rep.failed[m.name] = str(exc)
    if not rep.failed:
        lfs = pafs.LocalFileSystem()
        dest = str((out / SET_MANIFEST).absolute())
        fresh = copy_verified(out / SET_MANIFEST, lfs, dest, local=True, data=data)
        rep.manifest = "copied" if fresh else "skipped"
    return rep


def remove_if_shipped(journal_dir: Path, rep: PushReport) -> bool:
    """After a final pass with nothing pending: remove the local directory (manifests only left)."""
    if rep.pending:
        return False
    left = [p for p in journal_dir.rglob("*") if p.is_file() and p.name != MANIFEST]
    if left:
        return False
    shutil.rmtree(journal_dir)
    return True


# ------------------------------------------------------------------ the capture's task


@attrs.define
class Uploader:
    """Upload a capture's journal in the background (see the module docstring).

    ``on_error(text)`` is called in the trio thread for each failed pass (the
    capture journals it); ``pass_`` defaults to :func:`push_journal`.
    """

    journal_dir: Path
    target: str
    keep_local: bool = False
    interval_s: float = 1.0
    backoff_s: tuple[float, float] = (0.5, 30.0)
    on_error: Callable[[str], None] | None = None
    report: PushReport = attrs.Factory(PushReport)
    failures: int = 0
    last_error: str | None = None
    _limiter: Any = None
    _known: dict[str, int] = attrs.Factory(dict)

    async def run(self) -> None:
        """Pass after pass until cancelled (the capture's end cancels it, then calls :meth:`finish`)."""
        self._limiter = trio.CapacityLimiter(1)
        delay = self.backoff_s[0]
        while True:
            ok = await self._pass()
            if ok:
                delay = self.backoff_s[0]
                await trio.sleep(self.interval_s)
            else:
                await trio.sleep(delay)
                delay = min(delay * 2, self.backoff_s[1])

    async def _pass(self) -> bool:
        limiter = self._limiter or trio.CapacityLimiter(1)
        try:
            rep = await trio.to_thread.run_sync(
                lambda: push_journal(
                    self.journal_dir, self.target, keep_local=self.keep_local, known=self._known
                ),
                limiter=limiter,
                abandon_on_cancel=False,
            )
        except (OSError, pa.ArrowException) as exc:
            self.failures += 1
            self.last_error = f"upload to {self.target} failed: {exc}"
            log.warning("%s", self.last_error)
            if self.on_error is not None:
                self.on_error(self.last_error)
            return False
        self.report.uploaded.extend(rep.uploaded)
        self.report.removed.extend(rep.removed)
        self.report.bytes += rep.bytes
        self.report.pending = rep.pending
        return True

    def unshipped(self) -> dict[str, int]:
        """The journal's data files (segments, open or sealed, and checkpoints) not verified in
        the store by this uploader: name (relative to the journal) → size.  Manifests are not
        counted: they are rewritten while capturing and go last, once their segments are there."""
        left: dict[str, int] = {}
        for p in sorted(self.journal_dir.rglob("*")):
            name = p.relative_to(self.journal_dir).as_posix()
            if p.name == MANIFEST or p.name.endswith(".tmp") or not p.is_file():
                continue
            try:
                size = p.stat().st_size
            except FileNotFoundError:  # removed meanwhile
                continue
            if self._known.get(name) != size:
                left[name] = size
        return left

    async def finish(self, attempts: int = 3) -> bool:
        """The final passes once the journal is sealed; True when nothing is left to upload."""
        delay = self.backoff_s[0]
        for i in range(attempts):
            if await self._pass() and not self.report.pending:
                return True
            if i + 1 < attempts:
                await trio.sleep(delay)
                delay = min(delay * 2, self.backoff_s[1])
        return False
