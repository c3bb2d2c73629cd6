"""A journal writer that appends until killed (used by tests/test_crash.py).

argv: journal_dir rate_per_s segment_bytes.  Prints "ready" once the journal exists.
Each payload holds its own receive time so the test can check the loss bound.
"""

import sys
import time

from engine.journal.writer import JournalWriter, WriterConfig

path, rate, seg_bytes = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
w = JournalWriter.create(path, {"exchange": "crash-test"}, WriterConfig(segment_bytes=seg_bytes))
print("ready", flush=True)
gap = 1.0 / rate
nxt = time.monotonic()
i = 0
while True:
    now_ns = time.time_ns()
    w.append(now_ns, 1, "in", "text", f"wss://sim/stream{i % 3}", b'{"i":%d,"pad":"%s"}' % (i, b"x" * 150))
    i += 1
    w.tick()
    nxt += gap
    delay = nxt - time.monotonic()
    if delay > 0:
        time.sleep(delay)
