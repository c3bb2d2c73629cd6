"""A journal writer that appends until killed (used by tests/test_crash.py).

argv: journal_dir rate_per_s segment_bytes progress_file.  Prints "ready" once the journal exists.

It records its progress in ``progress_file``, a small file mapped ``MAP_SHARED``: its pages live in
the page cache, so every store made before a ``kill -9`` is still there for the test to read.
Layout (little-endian int64, each field stored on its own, so a kill leaves each one old or new):
``announced``, ``ticked``, then a ring of ``RING`` slots, one per seq (``seq % RING``), each
``[recv_ns, mono_ns]``:

* ``announced``: the seq about to be appended, stored *before* ``append`` (which may write it), so
  the journal never holds a seq above it;
* slot ``recv_ns``: the frame's receive time, as journaled;
* slot ``mono_ns``: ``time.monotonic_ns()`` (the writer's own clock) read after ``append`` returned
  and before ``tick`` starts: no earlier than the writer's clock reading inside ``append`` and no
  later than the one inside ``tick``;
* ``ticked``: the last seq whose ``tick`` has returned, stored after it.
"""

import mmap
import struct
import sys
import time

from engine.journal.writer import JournalWriter, WriterConfig

#: ring slots; more than ``WriterConfig.batch_frames``, the most frames a writer ever buffers
RING = 4096
INT = struct.Struct("<q")
ANNOUNCED, TICKED, RING_AT = 0, INT.size, 2 * INT.size
SLOT = struct.Struct("<qq")
SIZE = RING_AT + RING * SLOT.size


class Progress:
    """What a killed helper's progress file says (read by the test after the kill)."""

    def __init__(self, progress_path) -> None:
        with open(progress_path, "rb") as f:
            self._raw = f.read()
        (self.announced,) = INT.unpack_from(self._raw, ANNOUNCED)
        (self.ticked,) = INT.unpack_from(self._raw, TICKED)

    def slot(self, seq: int) -> tuple[int, int]:
        """``(recv_ns, mono_ns)`` of ``seq``, one of the last ``RING`` announced seqs."""
        assert self.announced - RING < seq <= self.announced, (seq, self.announced)
        return SLOT.unpack_from(self._raw, RING_AT + (seq % RING) * SLOT.size)


def main() -> None:
    path, rate, seg_bytes, progress_path = (
        sys.argv[1],
        float(sys.argv[2]),
        int(sys.argv[3]),
        sys.argv[4],
    )
    with open(progress_path, "wb") as f:
        f.truncate(SIZE)
    with open(progress_path, "r+b") as f:
        progress = mmap.mmap(f.fileno(), SIZE, flags=mmap.MAP_SHARED)
    w = JournalWriter.create(
        path, {"exchange": "crash-test"}, WriterConfig(segment_bytes=seg_bytes)
    )
    print("ready", flush=True)
    gap = 1.0 / rate
    nxt = time.monotonic()
    seq = 0
    while True:
        seq += 1
        slot = RING_AT + (seq % RING) * SLOT.size
        recv_ns = time.time_ns()
        SLOT.pack_into(progress, slot, recv_ns, 0)
        INT.pack_into(progress, ANNOUNCED, seq)
        payload = b'{"i":%d,"pad":"%s"}' % (seq - 1, b"x" * 150)
        assert (
            w.append(recv_ns, 1, "in", "text", f"wss://sim/stream{(seq - 1) % 3}", payload) == seq
        )
        SLOT.pack_into(progress, slot, recv_ns, time.monotonic_ns())
        w.tick()
        INT.pack_into(progress, TICKED, seq)
        nxt += gap
        delay = nxt - time.monotonic()
        if delay > 0:
            time.sleep(delay)


if __name__ == "__main__":
    main()
