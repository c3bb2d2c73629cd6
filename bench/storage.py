"""Storage benchmark: bytes read by ``book --at`` at 90 % of a journal, with and without seeking; local vs S3 reads.

    python bench/storage.py [--seconds 600] [--days 8] [--endpoint URL]

Writes a simulated journal (tests/helpers/sim_journal.py: minutes of the
simulator's market in seconds) in small sealed segments, folds it once with
checkpoints, pushes it to an S3 server (moto's standalone server started on
127.0.0.1, unless ``--endpoint`` names one: MinIO, AWS ...) and prints:

* bytes read for the state at 90 % of the journal, from S3: with seeking
  (nearest checkpoint + the segments after it, as ``engine book --at``) and
  without (a fold from the first frame);
* read rate (frames/s, every payload as Python bytes) local vs S3;
* what finding the journals of a catalog in a prefix costs (``--days N``
  copies of the journal under ``s3://…/catalog/sim/<date>/``): objects
  listed and bytes read to find them (one listing, none), then to open them
  (their manifests and first/last batches, as ``select`` does for a command).

The moto server is a Python process on the same 2 cores: S3 figures here
price the request path, not a network; compare the byte counts, which do not
depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.journal.location import counting_reads  # noqa: E402
from engine.journal.reader import JournalReader  # noqa: E402
from engine.journal.writer import WriterConfig  # noqa: E402
from engine.live.upload import push_journal  # noqa: E402
from engine.replay.checkpoints import CheckpointPolicy  # noqa: E402
from engine.replay.replay import Replay, state_at  # noqa: E402
from tests.helpers.s3 import KEYS, client, moto_server  # noqa: E402
from tests.helpers.sim_journal import write_sim_journal  # noqa: E402


def read_rate(where: str | Path) -> tuple[float, int]:
    best, n = 1e9, 0
    for _ in range(3):
        t0 = time.perf_counter()
        n = 0
        for batch in JournalReader(where).batches():
            for _p in batch.column(7).to_pylist():
                n += 1
        best = min(best, time.perf_counter() - t0)
    return n / best, n


def catalog_cost(local: Path, days: int) -> None:
    from engine.journal.captureset import journals_in
    from engine.journal.location import as_path, list_tree
    from engine.replay import catalog
    from engine.replay.catalog import select

    base = "s3://wiretape-bench/catalog"
    for d in range(days):
        push_journal(local, f"{base}/sim/2026-11-{d + 1:02d}")
    objects = list_tree(as_path(base))  # type: ignore[arg-type]
    stored = sum(o.stat().st_size for o in objects)
    with counting_reads() as found_io:
        t0 = time.perf_counter()
        found = journals_in(base)
        find_s = time.perf_counter() - t0
    print(f"catalog {base}/ of {len(found)} journals:")
    print(
        f"  finding them     {len(objects):>12,} objects listed ({stored:,} bytes stored),"
        f" {found_io.bytes_read:,} bytes read  {find_s:.2f} s"
    )
    for openers in (1, catalog.OPENERS):
        saved, catalog.OPENERS = catalog.OPENERS, openers
        with counting_reads() as open_io:
            t0 = time.perf_counter()
            select(base)
            open_s = time.perf_counter() - t0
        catalog.OPENERS = saved
        print(
            f"  opening them     {open_io.bytes_read:>12,} bytes read ({open_io.files_opened} files:"
            f" manifests, first and last batches)  {open_s:.2f} s, {openers} at a time"
        )


def measure(endpoint: str, seconds: float, days: int = 0) -> None:
    os.environ.update(KEYS)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    client(endpoint).create_bucket(Bucket="wiretape-bench")
    with tempfile.TemporaryDirectory() as tmp:
        local = write_sim_journal(
            Path(tmp) / "j",
            seconds=seconds,
            activity=8.0,
            config=WriterConfig(batch_frames=256, segment_bytes=64 << 10),
        )
        Replay(local, checkpoints=CheckpointPolicy(every_frames=2000, every_s=1e9)).run()
        uri = "s3://wiretape-bench/sim/j"
        t0 = time.perf_counter()
        rep = push_journal(local, uri)
        push_s = time.perf_counter() - t0
        r = JournalReader(uri)
        lo = min(s.min_ns for s in r.index.values() if s.min_ns is not None)
        hi = max(s.max_ns for s in r.index.values() if s.max_ns is not None)
        at = lo + (hi - lo) * 9 // 10
        rows = []
        for label, use in (("with seeking", True), ("without seeking", False)):
            with counting_reads() as io:
                t0 = time.perf_counter()
                p, used, folded = state_at(uri, at, use_checkpoints=use)
                dt = time.perf_counter() - t0
            rows.append((label, io.bytes_read, io.segments_skipped, folded, dt, used))
        print(
            f"journal: {len(r.segments)} segments, {rep.bytes:,} bytes pushed in {push_s:.2f} s"
            f" ({len(rep.uploaded)} files, verified)"
        )
        print("book --at 90 % of the journal, from S3:")
        for label, nbytes, skipped, folded, dt, used in rows:
            ck = f"checkpoint at seq {used.last_seq}" if used else "from the first frame"
            print(
                f"  {label:16} {nbytes:>12,} bytes read  {skipped:>3} segments passed unread"
                f"  {folded:>8,} frames folded ({ck})  {dt:.2f} s"
            )
        print(f"  ratio            {rows[1][1] / max(rows[0][1], 1):.1f}x fewer bytes with seeking")
        for label, where in (("local", local), ("S3   ", uri)):
            rate, n = read_rate(where)
            print(f"read {label} {rate:>12,.0f} frames/s  ({n:,} frames, best of 3)")
        if days:
            catalog_cost(local, days)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=600.0, help="simulated journal length")
    ap.add_argument("--days", type=int, default=8, help="journals in the catalog (0: none)")
    ap.add_argument("--endpoint", default=None, help="an S3 endpoint (default: start moto)")
    a = ap.parse_args()
    if a.endpoint:
        measure(a.endpoint, a.seconds, a.days)
        return
    with moto_server() as url:
        measure(url, a.seconds, a.days)


if __name__ == "__main__":
    main()
