"""kill -9 a real writer process at random moments: the journal must open, verify, and lose only
frames appended within the documented flush window (batch age 50 ms; see engine/journal/writer.py)
before the writer's last tick."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.journal.inspect import verify_journal
from engine.journal.reader import JournalReader
from engine.journal.recovery import seal_partials
from engine.journal.writer import WriterConfig
from tests.helpers.crash_writer import Progress

HELPER = Path(__file__).parent / "helpers" / "crash_writer.py"
#: the documented flush window: a tick writes the buffered batch once its first frame is this old
BATCH_AGE_NS = int(WriterConfig().batch_age_ms * 1e6)


def test_sigkill_at_random_moments_leaves_verifiable_journals_within_the_flush_window(tmp_path):
    rng = random.Random(20261125)
    for trial in range(6):
        path = tmp_path / f"j{trial}"
        progress_path = tmp_path / f"j{trial}.progress"
        proc = subprocess.Popen(
            [
                sys.executable,
                str(HELPER),
                str(path),
                "4000",
                str(rng.choice([20_000, 1 << 20])),
                str(progress_path),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.2, 0.9))
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL

        problems, stats = verify_journal(path)
        assert problems == [], problems
        frames = list(JournalReader(path).frames())
        assert frames, "nothing survived: the writer should have flushed aged batches"
        # a prefix: seq 1..n with no hole, of the frames the writer was given
        n = len(frames)
        assert [f.seq for f in frames] == list(range(1, n + 1))
        progress = Progress(progress_path)
        assert n <= progress.announced, f"trial {trial}: journal holds seq {n} never appended"
        assert frames[-1].recv_ns == progress.slot(n)[0]
        # Loss bounded by the flush window, measured on the writer's side, not against the moment
        # of the kill (a loaded machine may deschedule the writer for hundreds of ms before it:
        # nothing is appended then, so nothing is lost).  `ticked` is the last seq whose append
        # and tick both returned; the first lost frame, n + 1, started the batch still buffered.
        # That tick did not write it, so the writer's clock at the tick minus its clock at that
        # frame's append was < the batch age.  The helper reads the same monotonic clock between
        # each append and its tick, i.e. after the writer's reading in append and before the one
        # in tick, so the difference of its readings is a lower bound of the writer's: it must be
        # below the batch age with no slack at all, however late the process ran.  (The receive
        # times are read before append, so their gap also counts any descheduling between the
        # receive time and the append: it is not a load-free measure.)  Frames after `ticked`
        # were appended but never ticked: the writer had no chance to age them out.
        if n < progress.ticked:
            _, first_lost_mono = progress.slot(n + 1)
            last_recv, last_mono = progress.slot(progress.ticked)
            assert last_mono - first_lost_mono < BATCH_AGE_NS, (
                f"trial {trial}: frame {n + 1} was appended "
                f"{(last_mono - first_lost_mono) / 1e6:.1f} ms before the writer's last tick "
                f"(seq {progress.ticked}) and lost; last kept frame "
                f"{(last_recv - frames[-1].recv_ns) / 1e6:.1f} ms older than the last ticked"
            )
        # and the journal can be continued after recovery
        state = seal_partials(path)
        assert state.last_seq == n
        assert not list(path.glob("*.partial"))
