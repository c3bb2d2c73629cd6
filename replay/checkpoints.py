"""Checkpoints: periodic snapshots of the whole pipeline state, beside the journal, for time travel.

Owns the checkpoint files in ``<journal>/checkpoints/``: when to write one
(:class:`CheckpointPolicy`), how (:class:`CheckpointWriter`, atomic), how many
to keep (retention below), and finding + restoring the nearest usable one
(:func:`restore_nearest`).  Folding forward from a checkpoint is the replay's
business (:func:`engine.replay.replay.state_at`).  Must not: touch the journal
segments, read the wall clock (cadence is *journal* time and frame seq), or
ever let a bad checkpoint change a result (an unreadable or foreign checkpoint
is skipped; the fold then starts further back, possibly at the beginning).

File: ``ckpt-<last_seq:012d>-<max_recv_ns>.json.zst`` (or ``.json`` with
``compress=False``): a standard zstd stream (``zstd -d`` reads it) of one JSON
object ``{"format", "journal", "fingerprint", "last_seq",
"max_recv_ns", "pipeline"}`` where ``pipeline`` is :meth:`Pipeline.snapshot`.
``max_recv_ns`` (the largest receive time folded so far) is in the file name
too, so picking the checkpoint for a time needs no decompression.

Which checkpoint serves time T: the state "at T" is the fold of the journal's
frames in seq order up to (excluding) the first frame whose ``recv_ns > T``.
A checkpoint is usable iff ``max_recv_ns <= T``: every frame it folded is in
that prefix.  The writer tracks the running maximum itself, so it must see
every frame: call :meth:`CheckpointWriter.maybe_checkpoint` (or
:meth:`~CheckpointWriter.due`) after each fed frame (live) or pass the batch's
max ``recv_ns`` (replay).  The live runtime splits a write in two:
:meth:`~CheckpointWriter.prepare` in its read loop (the state as plain data),
:meth:`~CheckpointWriter.store` in a worker thread (encode, compress, fsync).

Identity: ``journal`` is the manifest's ``created_ns`` and ``fingerprint`` a
hash of the codec name and every reducer's configuration ``repr``: a
checkpoint from another journal or another reducer set/configuration is never
restored (it would silently give a different state).

JSON: :func:`engine.serde.dumps_json` (msgspec: exact for ints of any width, as the
18-decimal prices and the trade notional at 1e-36 need); checkpoints written with the
older ``"bigints": true`` marker still load.

Retention (bounded count, documented for users): the newest ``keep_recent``
checkpoints are always kept; older ones are thinned to at most ``keep_old`` by
repeatedly deleting the one whose neighbours are closest together in seq, so
the survivors stay roughly evenly spread over the whole journal.  A seek
anywhere then folds at most about ``journal_frames / keep_old`` frames (plus
the cadence) after the restore.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import attrs
import pyarrow as pa

from engine import serde
from engine.journal.location import LocationError, RemotePath, Where, as_path, read_all
from engine.pipeline import Pipeline

__all__ = [
    "CHECKPOINTS_DIR",
    "CheckpointPolicy",
    "CheckpointInfo",
    "CheckpointWriter",
    "PendingCheckpoint",
    "list_checkpoints",
    "load_checkpoint",
    "restore_nearest",
    "fingerprint",
    "journal_id",
]

CHECKPOINTS_DIR = "checkpoints"
#: 2: JSON through engine.serde.dumps_json (its ``bigints`` marker); format-1 files are skipped.
FORMAT = 2
_NAME_RE = re.compile(r"^ckpt-(\d{12,})-(-?\d+)\.json(\.zst)?$")


@attrs.frozen
class CheckpointPolicy:
    """When to checkpoint and how many to keep.

    Args:
        every_frames: at least this many frames (by seq) since the last checkpoint, or
        every_s: this many seconds of journal (receive) time since the last one.
        keep_recent: newest checkpoints always kept.
        keep_old: older checkpoints kept, evenly thinned (see the module docstring).
        compress: zstd (``.json.zst``) or plain ``.json``.
    """

    every_frames: int = attrs.field(default=50_000, validator=attrs.validators.ge(1))
    every_s: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    keep_recent: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    keep_old: int = attrs.field(default=28, validator=attrs.validators.ge(0))
    compress: bool = True


@attrs.frozen(order=True)
class CheckpointInfo:
    """One checkpoint file, as its name describes it."""

    last_seq: int
    max_recv_ns: int
    path: Path | RemotePath = attrs.field(order=False)


def journal_id(metadata: dict[str, Any]) -> int | None:
    """What ties a checkpoint to its journal: the manifest's creation time (ns)."""
    v = metadata.get("created_ns")
    return v if isinstance(v, int) else None


def fingerprint(pipeline: Pipeline) -> str:
    """Hash of the codec name and the reducers' configurations (their attrs ``repr``)."""
    text = "|".join([str(getattr(pipeline.codec, "name", "?")), *map(repr, pipeline.reducers)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def list_checkpoints(journal_dir: Where) -> list[CheckpointInfo]:
    """The checkpoints of a journal, oldest (lowest seq) first; unrelated files ignored."""
    d = as_path(journal_dir) / CHECKPOINTS_DIR
    if not d.is_dir():  # a remote journal: one listing request
        return []
    out = []
    for p in d.iterdir():
        m = _NAME_RE.match(p.name)
        if m and p.is_file():
            out.append(CheckpointInfo(int(m.group(1)), int(m.group(2)), p))
    out.sort()
    return out


def load_checkpoint(path: Where) -> dict[str, Any]:
    """The JSON document of one checkpoint file.

    Raises:
        ValueError: unreadable (damaged zstd, invalid JSON, wrong format version).
    """
    p = as_path(path)
    try:
        raw = read_all(p)
        if p.name.endswith(".zst"):
            with pa.CompressedInputStream(pa.BufferReader(raw), "zstd") as f:
                raw = f.read()
        doc = serde.loads_json(raw)
    except LocationError:
        raise  # the store failed, not the checkpoint
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise ValueError(f"{p}: unreadable checkpoint ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{p}: not a format-{FORMAT} checkpoint")
    return doc


@attrs.frozen
class PendingCheckpoint:
    """A checkpoint taken (:meth:`CheckpointWriter.prepare`) but not yet written."""

    path: Path
    doc: dict[str, Any]


class CheckpointWriter:
    """Write checkpoints of a pipeline beside a journal, on a frame/journal-time cadence.

    Used by ``engine replay`` and by the live runtime (``engine run``): call
    :meth:`maybe_checkpoint` after every frame fed (cheap: two comparisons).

    Args:
        journal_dir: the journal directory (checkpoints go to ``<dir>/checkpoints``).
        metadata: the journal's manifest metadata (for :func:`journal_id`).
        policy: cadence and retention.
    """

    def __init__(
        self,
        journal_dir: Where,
        metadata: dict[str, Any],
        policy: CheckpointPolicy | None = None,
    ) -> None:
        where = as_path(journal_dir)
        if isinstance(where, RemotePath):
            raise ValueError(
                f"{where}: checkpoints are written beside a local journal only"
                " (save them locally, then `engine journal push`)"
            )
        self.dir = where / CHECKPOINTS_DIR
        self.policy = policy or CheckpointPolicy()
        self.journal = journal_id(metadata)
        self._every_ns = int(self.policy.every_s * 1e9)
        self._last_seq: int | None = None
        self._last_ns: int | None = None
        self._max_ns: int | None = None
        #: seq of the newest state known to be in a checkpoint (stored, or restored from)
        self._done_seq: int | None = None
        self.written: list[Path] = []

    def start(self, pipeline: Pipeline) -> None:
        """Start the cadence at the pipeline's current position (call after a restore)."""
        c = pipeline.counters
        self._last_seq = c.last_seq
        self._last_ns = self._max_ns = c.last_recv_ns if c.frames else None
        self._done_seq = c.last_seq if c.frames else None

    def due(self, pipeline: Pipeline, max_recv_ns: int | None = None) -> bool:
        """Does the cadence ask for a checkpoint now?  (Call after every frame or batch fed.)

        ``max_recv_ns``: the largest receive time among the frames fed since the
        previous call (a batch); default: the pipeline's last frame's.
        """
        c = pipeline.counters
        t = c.last_recv_ns if max_recv_ns is None else max_recv_ns
        m = self._max_ns
        if m is None or t > m:
            self._max_ns = m = t
        if self._last_ns is None:
            self._last_ns = m
        if self._last_seq is None:  # first call on a fresh pipeline: the cadence starts at 0
            self._last_seq, self._last_ns = c.last_seq - c.frames, m
        return (
            c.last_seq - self._last_seq >= self.policy.every_frames
            or m - self._last_ns >= self._every_ns  # type: ignore[operator]
        )

    def maybe_checkpoint(self, pipeline: Pipeline, max_recv_ns: int | None = None) -> Path | None:
        """Checkpoint if the cadence says so (:meth:`due`); returns the file written, else None."""
        return self.write(pipeline) if self.due(pipeline, max_recv_ns) else None

    def finish(self, pipeline: Pipeline) -> Path | None:
        """Checkpoint the final state unless a checkpoint already holds it (end of a fold).

        Call it once nothing else is storing (after the live capture's worker
        thread is done): a checkpoint prepared but skipped does not count.
        """
        c = pipeline.counters
        if not c.frames or c.last_seq == self._done_seq:
            return None
        return self.write(pipeline)

    def write(self, pipeline: Pipeline) -> Path:
        """Write a checkpoint now (atomically: temp file, fsync, rename), then apply retention."""
        return self.store(self.prepare(pipeline))

    def prepare(self, pipeline: Pipeline) -> PendingCheckpoint:
        """Take the pipeline's state now, as plain data detached from it; advance the cadence.

        The cheap half of :meth:`write`: the live runtime calls it in its read
        loop and hands the result to :meth:`store` in a worker thread, so the
        encoding, compression and fsync never pause frame reading.
        """
        c = pipeline.counters
        max_ns = self._max_ns if self._max_ns is not None else c.last_recv_ns
        max_ns = max(max_ns, c.last_recv_ns)
        self._last_seq, self._last_ns = c.last_seq, max_ns
        suffix = ".json.zst" if self.policy.compress else ".json"
        doc = {
            "format": FORMAT,
            "journal": self.journal,
            "fingerprint": fingerprint(pipeline),
            "last_seq": c.last_seq,
            "max_recv_ns": max_ns,
            "pipeline": pipeline.snapshot(),  # fresh containers, immutable leaves: detached
        }
        return PendingCheckpoint(self.dir / f"ckpt-{c.last_seq:012d}-{max_ns}{suffix}", doc)

    def store(self, pending: PendingCheckpoint) -> Path:
        """Encode, compress and write a prepared checkpoint atomically; apply retention.

        Touches only ``pending`` and the checkpoint folder, so it may run in a
        worker thread while the pipeline goes on (one store at a time).
        """
        path = pending.path
        self.dir.mkdir(parents=True, exist_ok=True)
        raw = serde.dumps_json(pending.doc)
        if self.policy.compress:
            sink = pa.BufferOutputStream()
            with pa.CompressedOutputStream(sink, "zstd") as z:
                z.write(raw)
            raw = sink.getvalue().to_pybytes()
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        seq = pending.doc["last_seq"]
        if self._done_seq is None or seq > self._done_seq:
            self._done_seq = seq
        self.written.append(path)
        self._retain()
        return path

    def _retain(self) -> None:
        infos = list_checkpoints(self.dir.parent)
        p = self.policy
        if len(infos) <= p.keep_recent + p.keep_old:
            return
        old = infos[: -p.keep_recent]
        while len(old) > p.keep_old:
            if p.keep_old == 0 or len(old) <= 2:
                victim = 0
            else:
                # delete the interior checkpoint whose neighbours are closest together
                victim = min(
                    range(1, len(old) - 1),
                    key=lambda i: (old[i + 1].last_seq - old[i - 1].last_seq, i),
                )
            gone = old[victim].path
            if isinstance(gone, Path):  # the writer's journal is local (see __init__)
                gone.unlink(missing_ok=True)
            del old[victim]


def restore_nearest(
    journal_dir: Where,
    pipeline: Pipeline,
    metadata: dict[str, Any],
    at_ns: int | None = None,
) -> CheckpointInfo | None:
    """Restore ``pipeline`` from the newest usable checkpoint whose ``max_recv_ns <= at_ns``.

    ``at_ns=None``: the newest usable checkpoint of all.  Unreadable, foreign
    (other journal) or mismatched (other reducer configuration) checkpoints
    are skipped.  Returns the checkpoint used, or None (``pipeline`` untouched:
    fold from the beginning).
    """
    want_journal = journal_id(metadata)
    want_fp = fingerprint(pipeline)
    for info in reversed(list_checkpoints(journal_dir)):
        if at_ns is not None and info.max_recv_ns > at_ns:
            continue
        try:
            doc = load_checkpoint(info.path)
            if doc.get("journal") != want_journal or doc.get("fingerprint") != want_fp:
                continue
            pipeline.restore(doc["pipeline"])
        except Exception:  # noqa: BLE001 - a bad checkpoint only costs a longer fold
            continue
        return info
    return None
