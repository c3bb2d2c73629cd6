"""Parallel replay: one journal cut into time slices at its checkpoints, the slices folded on Dask.

Owns planning the slices of a journal (:func:`plan_slices`), folding one
slice (:func:`fold_slice`, the task a Dask worker runs), running a list of
slices on a Dask client or in this process (:func:`run_slices`, with progress
from the futures as they complete), merging the slices' results into what a
serial replay reports (:func:`merge`), and the cluster (:func:`dask_client`:
a local cluster of processes, or an existing scheduler by address).
Must not: fold by itself (a slice is :class:`engine.replay.replay.Replay`
started from a checkpoint), print, or parse command lines.

Why checkpoints make slices exact
    A checkpoint is the exact state of the serial fold after frame
    ``last_seq``.  Worker k restores checkpoint k and folds the frames
    ``last_seq_k < seq <= last_seq_{k+1}``: its outputs are the serial
    replay's outputs for those frames, so the slices' outputs concatenated in
    order are the serial replay's, output for output.  At the end of its slice
    (and at every checkpoint it passes) the worker compares its state with
    the checkpoint's: a free consistency check of the checkpoints and of the
    fold's determinism, reported per checkpoint.

A journal without usable checkpoints is one slice (a serial fold, said so in
:attr:`Plan.serial_reason`); ``engine replay --save-checkpoints`` or ``engine
run`` (every ``--checkpoint-every`` seconds) make them.  Each worker reads the
journal from its first segment and skips, undecoded, the batches before its
slice (the reader checks seq continuity from seq 1), so a slice costs its
fold plus a cheap read of the prefix.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs

from engine.journal.reader import JournalReader
from engine.pipeline import Pipeline
from engine.replay.checkpoints import (
    CheckpointInfo,
    fingerprint,
    journal_id,
    list_checkpoints,
    load_checkpoint,
)
from engine.replay.replay import DecodeErrorLog, Replay, Tally, pipeline_for, seq_span, tally_output

__all__ = [
    "Slice",
    "Plan",
    "SliceResult",
    "Merged",
    "SliceMismatch",
    "plan_slices",
    "fold_slice",
    "run_slices",
    "merge",
    "dask_client",
]


class SliceMismatch(ValueError):
    """A slice's fold did not arrive at the state its closing checkpoint holds."""


@attrs.frozen
class Slice:
    """Frames ``start.last_seq < seq <= ends[-1].last_seq`` of one journal (None: from/to the edge).

    ``ends``: the checkpoints the slice folds through, in order; it stops at
    the last one, whose state it must reach (each one is checked on the way).
    Empty: the slice folds to the journal's end (or ``end_ns``).
    """

    journal: str
    index: int
    start: CheckpointInfo | None
    ends: tuple[CheckpointInfo, ...]
    #: the first slice's seq .. the last one's, for weighting and progress
    first_seq: int
    last_seq: int
    last: bool

    @property
    def frames(self) -> int:
        return self.last_seq - self.first_seq + 1


@attrs.frozen
class Plan:
    journal: str
    slices: tuple[Slice, ...]
    #: why the journal is one serial slice (None: it is cut at checkpoints)
    serial_reason: str | None
    checkpoints_usable: int
    checkpoints_skipped: int


def _usable(journal: str, metadata: dict[str, Any]) -> tuple[list[CheckpointInfo], int]:
    """The checkpoints a replay of this journal may restore (this journal, this reducer set)."""
    want = (journal_id(metadata), fingerprint(pipeline_for(metadata)))
    ok, bad = [], 0
    for info in list_checkpoints(journal):
        try:
            doc = load_checkpoint(info.path)
        except ValueError:
            bad += 1
            continue
        if (doc.get("journal"), doc.get("fingerprint")) == want:
            ok.append(info)
        else:
            bad += 1
    return ok, bad


def plan_slices(
    journal: str | os.PathLike[str],
    *,
    tasks: int,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> Plan:
    """Cut ``journal`` into at most ``tasks`` slices at its usable checkpoints, balanced by frames.

    ``start_ns``/``end_ns`` are ``engine replay``'s ``--from``/``--to``: the
    first slice starts at the newest checkpoint before ``start_ns`` (the
    frames before it report nothing); only checkpoints at or before
    ``end_ns`` close a slice (the last slice stops at ``end_ns`` itself).
    """
    path = str(journal)
    reader = JournalReader(path)
    span = seq_span(reader)
    if span is None:
        return Plan(path, (Slice(path, 0, None, (), 1, 0, True),), "the journal is empty", 0, 0)
    first, last = span
    usable, skipped = _usable(path, reader.metadata)
    marks = [c for c in usable if c.last_seq <= last]
    if end_ns is not None:
        marks = [c for c in marks if c.max_recv_ns <= end_ns]
    head: CheckpointInfo | None = None
    if start_ns is not None:
        before = [c for c in marks if c.max_recv_ns < start_ns]
        head = before[-1] if before else None
        marks = [c for c in marks if head is None or c.last_seq > head.last_seq]
    # boundaries: head .. marks .. the end (None), each interval a piece
    bounds: list[CheckpointInfo | None] = [head, *marks]
    ends_at_mark = bool(marks) and marks[-1].last_seq == last
    pieces: list[tuple[CheckpointInfo | None, CheckpointInfo | None]] = [
        (bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)
    ]
    if not ends_at_mark:
        pieces.append((bounds[-1], None))
    reason = None
    if not usable:
        reason = (
            "no checkpoints" if not skipped else f"no usable checkpoints ({skipped} skipped)"
        ) + ": one serial slice (make them with --save-checkpoints or engine run)"
    elif len(pieces) == 1:
        reason = "no checkpoint inside the replayed window: one serial slice"

    def seq_after(c: CheckpointInfo | None) -> int:
        return first if c is None else c.last_seq + 1

    def seq_to(c: CheckpointInfo | None) -> int:
        return last if c is None else c.last_seq

    # cut after the pieces whose ends lie nearest to k/tasks of the frames (k = 1 .. tasks-1)
    ends_at = []
    acc = 0
    for a, b in pieces:
        acc += seq_to(b) - seq_after(a) + 1
        ends_at.append(acc)
    cuts = sorted({
        min(range(len(pieces) - 1), key=lambda i: abs(ends_at[i] - acc * k / tasks))
        for k in range(1, tasks)
    }) if len(pieces) > 1 else []  # fmt: skip
    groups = [
        pieces[lo + 1 : hi + 1]
        for lo, hi in zip([-1, *cuts], [*cuts, len(pieces) - 1], strict=True)
    ]
    slices = []
    for i, g in enumerate(groups):
        start, stop = g[0][0], g[-1][1]
        ends = tuple(b for _, b in g if b is not None)
        slices.append(
            Slice(path, i, start, ends, seq_after(start), seq_to(stop), i == len(groups) - 1)
        )
    return Plan(path, tuple(slices), reason, len(usable), skipped)


# =============================================================== one slice (a worker's task)


@attrs.define
class SliceResult:
    """What one slice's fold reports back (picklable: it travels from a worker)."""

    journal: str
    index: int
    frames: int
    last_seq: int
    #: per checkpoint passed: (its last_seq, did the fold's state equal it)
    checked: list[tuple[int, bool]]
    tallies: dict[str, Tally]
    decode_errors: DecodeErrorLog
    #: the outputs in the window, (frame seq, output), when asked for (``collect``)
    outputs: list[tuple[int, Any]] | None
    #: the last slice's final pipeline state (``Pipeline.snapshot``)
    snapshot: dict[str, Any] | None
    metadata: dict[str, Any]
    #: CPU seconds the fold took in its worker (the per-worker rate, whatever shares the machine)
    cpu_s: float = 0.0


class _Bounded:
    """A reader's batches cut at the given seqs (chunk boundaries fall on them); stops at the last."""

    def __init__(self, reader: JournalReader, cuts: Sequence[int]) -> None:
        self.reader = reader
        self.cuts = list(cuts)

    def batches(self, after_seq: int = 0) -> Iterator[Any]:
        """The reader's batches past ``after_seq`` (a slice's start: the reader seeks to it)."""
        cuts = deque(self.cuts)
        for batch in self.reader.batches(after_seq):
            s0 = batch.column(0)[0].as_py()
            pos = 0
            n = batch.num_rows
            while cuts and cuts[0] < s0 + n:
                k = cuts.popleft() - s0 + 1
                if k > pos:
                    yield batch.slice(pos, k - pos)
                    pos = k
                if not cuts and self.cuts:
                    return
            if pos < n:
                yield batch.slice(pos)


def _same_state(pipeline: Pipeline, info: CheckpointInfo, metadata: dict[str, Any]) -> bool:
    ref = pipeline_for(metadata)
    ref.restore(load_checkpoint(info.path)["pipeline"])
    return ref.snapshot() == pipeline.snapshot()


def fold_slice(
    s: Slice,
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
    symbols: frozenset[str] | None = None,
    collect: bool = False,
) -> SliceResult:
    """Restore ``s.start``, fold through ``s.ends`` checking each, tally (and collect) the outputs.

    The outputs are those :class:`~engine.replay.replay.Replay` reports for
    these frames with the same window (``start_ns``, ``end_ns``); ``symbols``
    keeps the outputs of those symbols and the symbol-less ones, as
    ``engine replay --symbols`` reports them.
    """
    cpu0 = time.process_time()
    checked: list[tuple[int, bool]] = []
    pending = deque(s.ends)

    def on_chunk(_frames: int, p: Pipeline) -> None:
        while pending and p.counters.last_seq >= pending[0].last_seq:
            c = pending.popleft()
            checked.append((c.last_seq, p.counters.last_seq == c.last_seq and _same_state(
                p, c, r.metadata)))  # fmt: skip

    r = Replay(s.journal, start_ns=start_ns, end_ns=end_ns, use_checkpoints=False,
               on_chunk=on_chunk)  # fmt: skip
    if s.start is not None:
        r.pipeline.restore(load_checkpoint(s.start.path)["pipeline"])
    r.reader = _Bounded(r.reader, [c.last_seq for c in s.ends])  # type: ignore[assignment]
    tallies: dict[str, Tally] = {}
    kept: list[tuple[int, Any]] | None = [] if collect else None
    for seq, o in r.outputs():
        sym = getattr(o, "symbol", None)
        if symbols is not None and sym is not None and sym not in symbols:
            continue
        tally_output(tallies, o)
        if kept is not None:
            kept.append((seq, o))
    c = r.pipeline.counters
    return SliceResult(
        s.journal, s.index, r.frames, c.last_seq, checked, tallies, r.decode_errors, kept,
        r.pipeline.snapshot() if s.last else None, r.metadata, time.process_time() - cpu0,
    )  # fmt: skip


# =============================================================== running and merging


#: progress callback: (tasks done, tasks in all, frames folded so far)
Progress = Callable[[int, int, int], None]


def run_slices(
    slices: Sequence[Slice],
    client: Any = None,
    on_done: Progress | None = None,
    **options: Any,
) -> list[SliceResult]:
    """Fold every slice (on ``client``'s workers, or here one after the other); results in order.

    ``options`` go to :func:`fold_slice`.  A worker's exception is raised here
    (the first to arrive); the other tasks are cancelled.
    """
    results: list[SliceResult] = []
    frames = 0
    if client is None:
        for s in slices:
            results.append(fold_slice(s, **options))
            frames += results[-1].frames
            if on_done is not None:
                on_done(len(results), len(slices), frames)
    else:
        from distributed import as_completed

        futures = [
            client.submit(
                fold_slice, s, key=f"slice-{s.index}-{_key(s.journal)}", pure=False, **options
            )  # fmt: skip
            for s in slices
        ]
        try:
            for fut in as_completed(futures):
                res = fut.result()
                results.append(res)
                frames += res.frames
                if on_done is not None:
                    on_done(len(results), len(slices), frames)
        except BaseException:
            client.cancel(futures)
            raise
    order = {(s.journal, s.index): i for i, s in enumerate(slices)}
    results.sort(key=lambda x: order[(x.journal, x.index)])
    return results


def _key(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:12]


@attrs.define
class Merged:
    """One journal's slices put back together: what a serial replay of it reports."""

    journal: str
    pipeline: Pipeline
    tallies: dict[str, Tally]
    decode_errors: DecodeErrorLog
    frames: int
    slices: int
    checked: list[tuple[int, bool]]
    outputs: list[tuple[int, Any]] | None
    metadata: dict[str, Any]

    @property
    def consistent(self) -> bool:
        return all(ok for _, ok in self.checked)

    def to_json(self) -> dict[str, Any]:
        """The parallel part of a replay summary: slices and the checkpoint checks."""
        return {
            "slices": self.slices,
            "checkpoints_checked": len(self.checked),
            "checkpoints_matched": sum(ok for _, ok in self.checked),
            "checkpoint_mismatches": [seq for seq, ok in self.checked if not ok],
        }


def merge(results: Sequence[SliceResult]) -> Merged:
    """The slices of one journal (in order) as one replay: tallies summed, final state restored."""
    if not results:
        raise ValueError("no slice results to merge")
    tallies: dict[str, Tally] = {}
    for res in results:
        for sym, t in res.tallies.items():
            m = tallies.setdefault(sym, Tally())
            m.by_type.update(t.by_type)
            m.alerts.extend(t.alerts)
            m.alert_count += t.alert_count
    errors = DecodeErrorLog(results[0].decode_errors.start_ns)
    for res in results:
        errors.count += res.decode_errors.count
        errors.first.extend(res.decode_errors.first[: errors.limit - len(errors.first)])
    final = results[-1]
    assert final.snapshot is not None, "the last slice carries the final state"
    p = pipeline_for(final.metadata)
    p.restore(final.snapshot)
    outs = None
    if all(r.outputs is not None for r in results):
        outs = [o for r in results for o in r.outputs]  # type: ignore[union-attr]
    return Merged(
        final.journal, p, tallies, errors, sum(r.frames for r in results), len(results),
        [c for r in results for c in r.checked], outs, final.metadata,
    )  # fmt: skip


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A Dask client: on ``scheduler`` (an address) if given, else on a new local cluster.

    The local cluster is ``workers`` processes of one thread each (the fold is
    pure Python: threads would share one interpreter lock).  Remote workers
    need wiretape installed and the journals at the same paths or URIs.
    """
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler, timeout="10s") as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers or 1,
            processes=True,
            threads_per_worker=1,
            # any free port: with None the scheduler still takes 8787 for its HTTP routes and
            # only warns (an error under the tests) when another cluster on the host holds it
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
