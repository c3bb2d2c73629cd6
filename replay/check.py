"""The determinism check (``engine replay --check``): replayed outputs vs the outputs recorded live.

Owns comparing, output by output, what a replay of a journal computes with
what ``engine run`` recorded beside it (``<journal>/outputs``), and deciding
what a difference is: after a clean stop both sides must end together; after
a kill -9 or a crash each journal lost its own unflushed tail, so only the
common prefix is compared and where each side ends is reported.  Must not:
print or parse command lines (the CLI renders a :class:`CheckReport`).

Outputs recorded at another number scale (before the engine's scale was
raised from 8 to 18 decimals) are refused with :class:`ScaleMismatch`, not
rescaled: their rounded values (VWAP, SMA, EMA at 1e-8) cannot equal what a
replay computes at 1e-18, so a rescaled comparison would report a false
difference at the first of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from engine import num, serde
from engine.journal.location import Where, as_path
from engine.journal.reader import JournalError, JournalReader, frames_of, read_segment
from engine.journal.recorder import OUTPUTS_DIR, outputs_scale, read_outputs
from engine.journal.schema import STOP_MARKER
from engine.pipeline import Pipeline
from engine.replay.replay import Replay, plain

__all__ = [
    "Mismatch", "CheckReport", "check_report", "check", "stopped_cleanly", "STOP_MARKER",
    "ScaleMismatch",
]  # fmt: skip


class ScaleMismatch(JournalError):
    """The outputs were recorded at another number scale than this engine's: not comparable."""


@attrs.frozen
class Mismatch:
    """The first place where replay and the recorded live outputs differ.

    ``index`` counts outputs from 0; ``recorded``/``replayed`` are the dumped
    outputs (None when that side had ended); ``*_seq`` their frame seqs.
    """

    index: int
    recorded_seq: int | None
    replayed_seq: int | None
    recorded: dict[str, Any] | None
    replayed: dict[str, Any] | None

    @property
    def seq(self) -> int:
        """The frame seq to look at: the earlier of the two sides'."""
        seqs = [s for s in (self.recorded_seq, self.replayed_seq) if s is not None]
        return min(seqs)




def stopped_cleanly(journal_dir: Where) -> bool:
    """Did the capture end with its "capture stop" marker (not a kill, a crash or a power loss)?"""
    reader = JournalReader(journal_dir)
    for seg in reversed(reader.segments):
        last = None
        for batch in read_segment(seg):
            if batch.num_rows:
                last = batch
        if last is not None:
            frame = list(frames_of(last.slice(last.num_rows - 1)))[0]
            return frame.kind == "marker" and frame.payload.startswith(STOP_MARKER.encode())
    return False


@attrs.frozen
class CheckReport:
    """What ``engine replay --check`` found.

    ``mismatch`` is the first difference (None: identical).  A capture that
    did not stop cleanly (``clean=False``: killed, crashed, power lost) loses
    the unflushed tail of its frames journal and of its outputs journal
    independently, so one side may end before the other: then only the
    common prefix is compared, and ``recorded_end``/``replayed_end`` say
    where each side ended (frame seqs) and ``unmatched`` how many outputs of
    the longer side had nothing to compare with.  After a clean stop both
    sides must end together, and a missing or extra output is a mismatch.
    """

    mismatch: Mismatch | None
    compared: int
    clean: bool
    recorded_end: int | None = None
    replayed_end: int | None = None
    unmatched: int = 0
    unmatched_side: str | None = None  # "recorded" | "replayed": which side went on


def check_report(
    journal_dir: Where,
    on_chunk: Callable[[int, Pipeline], None] | None = None,
) -> CheckReport:
    """Replay from the beginning and compare output by output with ``<journal>/outputs``.

    Raises:
        ScaleMismatch: the outputs were recorded at another number scale.
    """
    scale = outputs_scale(journal_dir)
    if scale is not None and scale != num.SCALE:
        raise ScaleMismatch(
            f"{as_path(journal_dir) / OUTPUTS_DIR} was recorded at number scale {scale!r}"
            f" (units of 1e-{scale}), this engine computes at 1e-{num.SCALE}: its rounded values"
            " cannot compare exactly; check it with the engine version that recorded it"
        )
    clean = stopped_cleanly(journal_dir)
    recorded = iter(read_outputs(journal_dir))
    r = Replay(journal_dir, use_checkpoints=False, on_chunk=on_chunk)
    n = 0
    last_rec = None
    replayed = r.outputs()
    for seq, out in replayed:
        mine = plain(serde.dump(out))
        theirs = next(recorded, None)
        if theirs is None:
            if clean:
                return CheckReport(Mismatch(n, None, seq, None, mine), n, clean)
            rest = 1 + sum(1 for _ in replayed)
            end = r.pipeline.counters.last_seq
            return CheckReport(None, n, clean, last_rec, end, rest, "replayed")
        if theirs[0] != seq or plain(theirs[1]) != mine:
            return CheckReport(Mismatch(n, theirs[0], seq, plain(theirs[1]), mine), n, clean)
        last_rec = seq
        n += 1
    extra = next(recorded, None)
    if extra is not None:
        if clean:
            return CheckReport(Mismatch(n, extra[0], None, plain(extra[1]), None), n, clean)
        rest, end = 1, extra[0]
        for seq, _ in recorded:
            rest, end = rest + 1, seq
        return CheckReport(None, n, clean, end, r.pipeline.counters.last_seq, rest, "recorded")
    return CheckReport(None, n, clean)


def check(
    journal_dir: Where,
    on_chunk: Callable[[int, Pipeline], None] | None = None,
) -> tuple[Mismatch | None, int]:
    """:func:`check_report` as ``(first mismatch or None, outputs compared)``."""
    rep = check_report(journal_dir, on_chunk)
    return rep.mismatch, rep.compared
