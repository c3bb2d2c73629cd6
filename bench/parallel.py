"""Parallel benchmark: replay and export speed-up with 1 and 2 Dask workers (ideal: 2x).

    python bench/parallel.py [--seconds 600] [--activity 40] [--journals 4] [--repeat 3]

Writes (in a temp dir) journals of the simulator's market model (as
bench/replay.py does), then on a LocalCluster of 1 and of 2 worker processes
(one thread each; the cluster's start-up is not timed, its tasks are):

* replay: one journal with checkpoints every ``--seconds / 8`` of market time,
  cut into slices at them (``engine replay J --workers N``); the outputs of
  a first, untimed run are compared with the serial replay's (exactly, or the
  bench fails); the timed runs keep tallies only, as ``engine replay`` does;
* export: a catalog of ``--journals`` journals exported into one dataset
  (``engine export CATALOG --workers N``).

Prints the median over ``--repeat`` runs of each, frames/s, the speed-up of 2
workers over 1 and the per-worker rate that the README's model of N machines
starts from.  On a shared 2-core machine the ratio also measures the
neighbours: compare it with the load average printed at the start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.journal.reader import JournalReader  # noqa: E402
from engine.replay.catalog import export_catalog, select  # noqa: E402
from engine.replay.checkpoints import CheckpointPolicy  # noqa: E402
from engine.replay.parallel import dask_client, merge, plan_slices, run_slices  # noqa: E402
from engine.replay.replay import Replay  # noqa: E402
from tests.helpers.sim_journal import write_sim_journal  # noqa: E402


def frames_of(j: Path) -> int:
    return sum(b.num_rows for b in JournalReader(j).batches())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600.0, help="simulated seconds per journal")
    ap.add_argument("--activity", type=float, default=40.0, help="market model activity")
    ap.add_argument("--journals", type=int, default=4, help="journals in the export catalog")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"machine  {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        j = write_sim_journal(root / "one", seconds=args.seconds, activity=args.activity)
        Replay(j, checkpoints=CheckpointPolicy(every_s=args.seconds / 8, every_frames=10**9)).run()
        n = frames_of(j)
        t = time.perf_counter()
        serial = Replay(j)
        want = list(serial.outputs())
        serial_s = time.perf_counter() - t
        print(f"journal  {n:,} frames, {len(want):,} outputs; serial replay here {serial_s:.2f} s"
              f" ({n / serial_s:,.0f} frames/s)")  # fmt: skip
        cat = root / "catalog"
        for i in range(args.journals):
            write_sim_journal(cat / "sim" / f"day-{i + 1}", seed=i + 1, seconds=args.seconds,
                              activity=args.activity)  # fmt: skip
        members, _ = select(cat)
        cat_frames = sum(frames_of(m.path) for m in members)
        print(f"catalog  {len(members)} journals, {cat_frames:,} frames")
        rates: dict[str, dict[int, float]] = {"replay": {}, "export": {}}
        for workers in (1, 2):
            with dask_client(workers) as client:
                # warm up (every worker imports the engine, reads the journal), untimed, and
                # the proof: the outputs are the serial replay's, output for output
                plan = plan_slices(j, tasks=2 * workers)
                m = merge(run_slices(plan.slices, client, collect=True))
                if m.outputs != want or not m.consistent:
                    raise SystemExit("parallel replay differs from the serial one")
                times, cpu = [], []
                for _ in range(args.repeat):  # as engine replay --workers: tallies, no outputs
                    t = time.perf_counter()
                    plan = plan_slices(j, tasks=2 * workers)
                    res = run_slices(plan.slices, client)
                    merge(res)
                    times.append(time.perf_counter() - t)
                    cpu.append(sum(r.cpu_s for r in res))
                rt = statistics.median(times)
                rates["replay"][workers] = n / rt
                per_cpu = n / statistics.median(cpu)
                times = []
                for k in range(args.repeat):
                    t = time.perf_counter()
                    export_catalog(members, root / f"out-{workers}-{k}", client=client)
                    times.append(time.perf_counter() - t)
                et = statistics.median(times)
                rates["export"][workers] = cat_frames / et
                print(f"workers {workers}  replay {rt:6.2f} s {n / rt:>10,.0f} frames/s"
                      f"  ({len(plan.slices)} slices, {per_cpu:,.0f} frames per worker CPU s)   export {et:6.2f} s"
                      f" {cat_frames / et:>10,.0f} frames/s")  # fmt: skip
        print(f"load average at the end {os.getloadavg()[0]:.2f} (2 cores: above ~1, neighbours"
              " share them)")  # fmt: skip
        for what, r in rates.items():
            print(f"speed-up {what}: 2 workers / 1 = {r[2] / r[1]:.2f}x (ideal 2x);"
                  f" per-worker rate {r[2] / 2:,.0f} frames/s at 2 workers")  # fmt: skip


if __name__ == "__main__":
    main()
