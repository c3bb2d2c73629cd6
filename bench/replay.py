"""Replay benchmark: full-pipeline replay rate, time travel with and without checkpoints, export.

    python bench/replay.py [--seconds 600] [--repeat 3]

Writes (in a temp dir) a journal of the simulator's market model over
``--seconds`` of simulated time (two symbols; trade, aggTrade, depth, bookTicker,
ticker and kline streams, combined-stream frames as a capture journals them),
then prints the median of ``--repeat`` runs of:

* replay: frames/s folding the whole journal through the standard pipeline
  (book, trades, tape, candles, anomaly detector, send audit), as ``engine replay`` does;
* time travel: seconds for the state at 90 % of the journal's time span, from
  the beginning (no checkpoints) and from the nearest checkpoint (the ratio is
  the point: it should stay small however long the journal is);
* export: frames/s writing the normalized, hive-partitioned Parquet tables, and
  the rows each table got.

One core; run on a quiet machine and compare ratios rather than absolutes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.journal.reader import JournalReader  # noqa: E402
from engine.replay.checkpoints import CheckpointPolicy  # noqa: E402
from engine.replay.export import export_journal  # noqa: E402
from engine.replay.replay import Replay, state_at  # noqa: E402
from tests.helpers.sim_journal import write_sim_journal  # noqa: E402


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600.0, help="simulated seconds of market")
    ap.add_argument("--activity", type=float, default=40.0, help="market model activity")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        j = write_sim_journal(Path(tmp) / "j", seconds=args.seconds, activity=args.activity)
        reader = JournalReader(j)
        frames = sum(b.num_rows for b in reader.batches())
        first = next(iter(reader.batches())).column(1)[0].as_py()
        last = max(b.column(1)[-1].as_py() for b in reader.batches())
        at = first + (last - first) * 9 // 10
        print(f"journal  {frames:,} frames over {(last - first) / 1e9:,.0f} s of market time")

        def full() -> None:
            for _ in Replay(j, checkpoints=None, use_checkpoints=False).outputs():
                pass

        rates = [frames / timed(full) for _ in range(args.repeat)]
        print(f"replay        {statistics.median(rates):>12,.0f} frames/s  (standard pipeline)")

        # checkpoints every 30 s of journal time, written by one replay
        for _ in Replay(j, checkpoints=CheckpointPolicy(every_s=30.0)).outputs():
            pass
        cold = [timed(lambda: state_at(j, at, use_checkpoints=False)) for _ in range(args.repeat)]
        warm = [timed(lambda: state_at(j, at)) for _ in range(args.repeat)]
        c, w = statistics.median(cold), statistics.median(warm)
        print(f"time travel   {c:>12.3f} s from the start, {w:.3f} s from a checkpoint ({c / w:.1f}x)")

        rows: dict[str, int] = {}

        def export() -> None:
            rows.update(export_journal(j, Path(tmp) / f"x{time.perf_counter_ns()}").rows)

        ex = [frames / timed(export) for _ in range(args.repeat)]
        print(f"export        {statistics.median(ex):>12,.0f} frames/s  ({len(rows)} tables)")
        for name, n in rows.items():
            print(f"  {name:<12} {n:>10,} rows")


if __name__ == "__main__":
    main()
