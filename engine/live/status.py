"""The capture's status: counters a display renders and ``engine run`` prints as its summary.

Owns :class:`CaptureStatus` (updated in place by the runtime, read any time
from the trio thread).  Must not: compute anything a replay would need (those
are outputs of the fold, not counters of the I/O shell).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs

__all__ = ["CaptureStatus"]


@attrs.define
class CaptureStatus:
    """Counters a display renders (read it any time; the runtime updates it in place)."""

    started_mono: float = 0.0
    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    frames_per_s: float = 0.0
    connections_open: int = 0
    connects: int = 0
    reconnects: int = 0
    rotations: int = 0
    rest_requests: int = 0
    rest_responses: int = 0
    #: resyncs answered by resubscribing (venues whose snapshots come in-stream)
    resubscribes: int = 0
    errors: Counter[str] = attrs.Factory(Counter)
    outputs: Counter[str] = attrs.Factory(Counter)
    journal_bytes: int = 0
    journal_frames: int = 0
    decode_errors: int = 0
    checkpoints_skipped: int = 0
    last_error: str = ""
    #: why the capture ended: "" (asked to stop), "low_disk" (free space fell below the
    #: minimum; sealed), "journal_write_failed" (disk full / I/O error; left for recovery)
    stopped_by: str = ""
    #: what stopped it, in words (for the two disk cases)
    stop_detail: str = ""

    def line(self) -> str:
        """One human line: what a terminal status bar or a periodic log shows."""
        errs = sum(self.errors.values())
        return (
            f"{self.frames_per_s:8.0f} frames/s  {self.frames_in} frames  "
            f"conns {self.connections_open}  reconnects {self.reconnects}  "
            f"journal {self.journal_bytes / 1e6:.1f} MB  decode errors {self.decode_errors}  "
            f"errors {errs}"
        )

    def summary(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["errors"] = dict(self.errors)
        d["outputs"] = dict(self.outputs)
        return d
