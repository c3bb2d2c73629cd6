"""Journal benchmark: append rate, raw read rate, bytes on disk vs payload bytes.

    python bench/journal.py [--frames 1000000]

Prints:
* append: frames/s and MB/s for ~200-byte JSON frames at the default batching
  (1024 frames / 50 ms, zstd), including the final seal and fsync;
* read: frames/s iterating every payload (record batch → Python bytes);
* disk ratio on the real Binance captures (fixtures/journals/binance-*), rewritten
  twice: paced as they were received live (the writer's clock follows the
  recorded receive times, so batches form by the 50 ms age rule exactly as in a
  live capture) and in bulk (1024-frame batches, as an import writes them).

Integrity is on (it cannot be switched off): append computes each batch's
CRC-32C, sealing rewrites the segment into an indexed IPC file; read validates
every batch (``validate(full=True)``) and verifies its checksum before the
payloads are converted.  The last lines price those two checks alone.

Targets: append ≥ 400k frames/s and read ≥ 2M frames/s with integrity on
(issue 12; issue 2's were 500k / 2M without it), disk ≤ 25 % of payload.
One core; run it on a quiet machine and compare ratios rather than absolutes
(``cd /work/before && .venv/bin/python bench/journal.py`` for the previous build).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from engine.journal.inspect import inspect_journal
from engine.journal.reader import JournalReader
from engine.journal.writer import JournalWriter, WriterConfig

ROOT = Path(__file__).resolve().parent.parent
FRAME = (
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1700000000123,'
    b'"s":"BTCUSDT","U":40000001,"u":40000003,"b":[["42000.01000000","0.51200000"]],'
    b'"a":[["42000.02000000","1.20000000"]]}}'
)


def bench_append(path: Path, n: int) -> tuple[float, int]:
    # vary the payload a little so compression sees realistic (not identical) frames
    payloads = [FRAME.replace(b"40000001", b"%08d" % (40000001 + i)) for i in range(4096)]
    t0 = time.perf_counter()
    with JournalWriter.create(path, {"exchange": "bench"}) as w:
        append = w.append
        for i in range(n):
            append(i, 1, "in", "text", "wss://bench/stream?streams=btcusdt@depth@100ms", payloads[i & 4095])
    return time.perf_counter() - t0, sum(len(payloads[i & 4095]) for i in range(n))


def bench_read(path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for batch in JournalReader(path).batches():
        for _payload in batch.column(7).to_pylist():
            n += 1
    return time.perf_counter() - t0, n


def rewrite(src: Path, dst: Path, paced: bool) -> tuple[int, int]:
    """Copy a journal's frames into a new one; paced=True drives the writer clock by recv_ns."""
    frames = list(JournalReader(src).frames())
    now = [0]
    config = WriterConfig() if paced else WriterConfig(batch_age_ms=1e12)
    with JournalWriter.create(dst, dict(JournalReader(src).metadata), config, clock=lambda: now[0]) as w:
        for f in frames:
            now[0] = f.recv_ns
            w.append(f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
            if paced:
                w.tick()
    st = inspect_journal(dst)
    return st.disk_bytes, st.payload_bytes


def integrity_costs(path: Path) -> None:
    """ns/frame of the read-side checks alone (absent from builds without integrity)."""
    try:
        from engine.journal.integrity import checksum
    except ImportError:
        print("checks  (this build has no journal integrity checks)")
        return
    batches = list(JournalReader(path).batches())
    n = sum(b.num_rows for b in batches)
    for name, fn in (("validate(full=True)", lambda b: b.validate(full=True)), ("crc32c", checksum)):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for b in batches:
                fn(b)
            best = min(best, time.perf_counter() - t0)
        print(f"checks  {best / n * 1e9:>12.1f} ns/frame  {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1_000_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wiretape-bench-"))
    try:
        el, nbytes = bench_append(tmp / "append", args.frames)
        print(f"append  {args.frames / el:>12,.0f} frames/s  {nbytes / el / 1e6:8.1f} MB/s  "
              f"({nbytes / args.frames:.0f}-byte frames, default batching, zstd)")
        el, n = bench_read(tmp / "append")
        print(f"read    {n / el:>12,.0f} frames/s  (every payload as Python bytes)")
        st = inspect_journal(tmp / "append")
        print(f"disk    {st.disk_bytes / st.payload_bytes:>12.1%} of payload (synthetic depth frames)")
        for name in ("binance-spot", "binance-futures"):
            src = ROOT / "fixtures" / "journals" / name
            if not src.exists():
                print(f"disk    {name}: fixture journal missing ({src})")
                continue
            for paced in (True, False):
                disk, payload = rewrite(src, tmp / f"{name}-{paced}", paced)
                how = "paced as received live" if paced else "bulk (import)"
                print(f"disk    {disk / payload:>12.1%} of payload  {name}, {how}: "
                      f"{disk:,} B on disk for {payload:,} B")
        integrity_costs(tmp / "append")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
