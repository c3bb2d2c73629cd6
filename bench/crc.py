"""CRC-32 throughput: the checksums' two C implementations against zlib.crc32.

Usage:  python bench/crc.py [--sizes 64,256,800,4096] [--calls 20000] [--repeat 25]

The Kraken and OKX book checksums CRC a text of ~150-800 bytes per check
(engine/_cksum.c, the CRC in engine/_crc32.h).  This times, on one core,
``engine._cksum.crc32`` with the CRC the checksums use, once as this CPU
chooses it (``pclmul``: PCLMULQDQ folding, where the CPU has it) and once
forced to the slicing-by-8 table (``ENGINE_CRC32=table``, in a child
process), and the standard library's ``zlib.crc32``, on random buffers of
each size.  Calls go through ``map`` (no Python frame per call), and a call
on an empty buffer, timed the same way, is taken off: the checksum path calls
the CRC from C, so the net figures are the ones that say what it gains.
Prints per size ns per call (best of ``--repeat`` runs), net GB/s, and the
ratios pclmul/table and pclmul/zlib of the net rates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zlib
from collections import deque
from collections.abc import Callable
from itertools import repeat

from engine import _cksum


def ns_per_call(f: Callable[[bytes], int], data: bytes, calls: int, runs: int) -> float:
    """Best of ``runs`` runs of ``calls`` calls, in ns per call."""
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        deque(map(f, repeat(data, calls)), maxlen=0)
        best = min(best, (time.perf_counter() - t) / calls * 1e9)
    return best


def timings(f: Callable[[bytes], int], sizes: list[int], calls: int, runs: int) -> dict[int, float]:
    """ns per call for each size (0 included: the call itself); checks f against zlib first."""
    out = {}
    for size in [0, *sizes]:
        data = os.urandom(size)
        assert f(data) == zlib.crc32(data), size
        out[size] = ns_per_call(f, data, max(calls * 64 // (64 + size), 1000), runs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,256,800,4096", help="buffer sizes in bytes")
    ap.add_argument(
        "--calls", type=int, default=20_000, help="calls per run (64 bytes; fewer above)"
    )
    ap.add_argument("--repeat", type=int, default=25, help="runs per figure (the best counts)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:  # the checksums' CRC as this process's environment chose it
        print(
            json.dumps([_cksum.crc32_impl(), timings(_cksum.crc32, sizes, args.calls, args.repeat)])
        )
        return

    def child(env: dict[str, str]) -> tuple[str, dict[int, float]]:
        argv = [sys.executable, __file__, "--child", "--sizes", args.sizes,
                "--calls", str(args.calls), "--repeat", str(args.repeat)]  # fmt: skip
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        impl, ns = json.loads(done.stdout)
        return impl, {int(k): v for k, v in ns.items()}

    env = {k: v for k, v in os.environ.items() if k != "ENGINE_CRC32"}
    results: dict[str, dict[int, float]] = {}
    impl, ns = child(env)
    if impl == "pclmul":
        results["pclmul"] = ns
    else:
        print("pclmul: this CPU (or build) has no PCLMULQDQ folding; the checksums use the table")
    results["table"] = child({**env, "ENGINE_CRC32": "table"})[1]
    results["zlib"] = timings(zlib.crc32, sizes, args.calls, args.repeat)
    print(
        f"zlib {zlib.ZLIB_RUNTIME_VERSION}; ns per call, then net GB/s (the empty call taken off)"
    )
    print("empty call: " + ", ".join(f"{k} {v[0]:.0f} ns" for k, v in results.items()))
    print(f"{'bytes':>6} " + "".join(f"{name:>22}" for name in results)
          + ("   pclmul/table  pclmul/zlib" if "pclmul" in results else ""))  # fmt: skip
    for size in sizes:
        net = {k: size / max(v[size] - v[0], 1e-3) for k, v in results.items()}
        line = f"{size:>6} " + "".join(
            f"{v[size]:9.0f} ns {net[k]:6.2f} GB/s" for k, v in results.items()
        )
        if "pclmul" in net:
            line += f"   {net['pclmul'] / net['table']:11.2f}x {net['pclmul'] / net['zlib']:11.2f}x"
        print(line)


if __name__ == "__main__":
    main()
