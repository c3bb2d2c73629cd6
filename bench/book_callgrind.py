"""The Kraken and OKX checksum cost counted by callgrind: a view that does not move with the load.

Usage:  python bench/book_callgrind.py [--venue kraken|okx|both] [--events N]
                                      [--hash-seed 0] [--cache fixed|host]
        (needs valgrind; a few minutes a venue: callgrind runs the fold ~50x slower)

What it counts (issue 14): the book fold of bench/book.py's fold-only figures, the real
captures' book messages repeated to ``--events`` events and decoded beforehand, with the
venue's checksum verified and without it (the bench's own rule with ``has_checksum`` False),
the reducer's steady case inlined as the engine runs it.  Each variant runs in a child
process under ``valgrind --tool=callgrind --cache-sim=yes --branch-sim=yes`` twice, folding
the events once and three times; the difference of the two, over two folds, is the cost of
one fold with the start-up (imports, decoding, the first fold's warming) taken out.  Per event
it prints instructions (Ir), simulated L1 instruction and data misses, mispredicted branches
and one weighted sum, ``Ir + 10 x (I1 + D1 read + D1 write misses) + 15 x mispredicts``, a
cycle estimate; the line that matters is **checksum cost / fold** on that sum (target
≤ 30 %).  The counts do not depend on the load, nor on the CPU's cache sizes: the simulated
caches are fixed (``CACHE``: 32 KiB 8-way L1s), where callgrind would take the host CPU's, and
a 64 KiB instruction cache misses so much less that the Kraken ratio fell from 28.2 % to
19.3 % (``--cache host`` shows this CPU's).  The children run with one hash seed
(``--hash-seed``, default 0), which otherwise moves the simulated misses from run to run
(the dicts' layout), the ratio by a few tenths of a point: the way to judge a change to ``engine._cksum`` or to the sync rules when wall-clock figures move by
several points from process to process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EVENTS = {"kraken": 20_000, "okx": 3_000}
#: the simulated caches (bytes, ways, line bytes; callgrind's --I1/--D1/--LL): see the docstring
CACHE = {"I1": "32768,8,64", "D1": "32768,8,64", "LL": "8388608,16,64"}
#: the callgrind events read, and the weighted sum's weights
COUNTS = ("Ir", "I1mr", "D1mr", "D1mw", "Bcm", "Bim")
MISS, MISPREDICT = 10, 15


def events_of(venue: str, n: int) -> tuple[list[Any], str, str]:
    """``n`` decoded events of the venue's capture, and its checked and unchecked rule names."""
    sys.path.insert(0, str(HERE))
    from engine.codecs.registry import get_codec

    if venue == "kraken":
        import book_kraken as bk  # type: ignore[import-not-found]

        from engine import book_sync
        from engine.book_sync import SyncRule

        book_sync.RULES[bk.UNCHECKED] = bk.UncheckedKraken()  # (the bench registers it so too)
        md, cap, _ = bk.load()
        codec = get_codec(md["exchange"])
        evs = [codec.decode(i, ns, "text", s, pl)[0] for i, (ns, s, pl) in enumerate(cap, 1)]
        return [evs[i % len(evs)] for i in range(n)], SyncRule.KRAKEN, bk.UNCHECKED
    import book_okx as bo  # type: ignore[import-not-found]

    _, cap, _ = bo.load_frames()
    codec = get_codec("okx")
    evs: list[Any] = []
    for ns, src, payload, _levels in cap:
        evs.extend(codec.decode(len(evs) + 1, ns, "text", src, payload))
    return [evs[i % len(evs)] for i in range(n)], "okx", bo.NO_CHECKSUM


def child(venue: str, checked: bool, n: int, folds: int) -> None:
    """Fold the events ``folds`` times (run under callgrind by :func:`counts`)."""
    from engine.book_reducer import BookReducer

    events, rule, unchecked = events_of(venue, n)
    for _ in range(folds):
        reducer = BookReducer(rule if checked else unchecked, verify_interval_s=None)
        state = reducer.initial()
        step = reducer.step
        for ev in events:
            state, _ = step(state, ev)


def totals(path: Path) -> dict[str, int]:
    """The totals line of a callgrind output file, by event name."""
    names: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("events:"):
            names = line.split()[1:]
        elif line.startswith(("totals:", "summary:")):
            return dict(zip(names, map(int, line.split()[1:]), strict=True))
    raise ValueError(f"{path}: no totals line")


def counts(
    venue: str, n: int, tmp: Path, seed: str, cache: list[str]
) -> dict[bool, dict[str, float]]:
    """Per event of one fold, with the checksum (True) and without (False): each count, and
    the weighted sum as "cycles".  The four callgrind runs go side by side (the counts do not
    depend on what else runs)."""
    runs = {}
    for checked in (True, False):
        for folds in (1, 3):
            out = tmp / f"{venue}.{checked}.{folds}"
            cmd = [
                "valgrind", "--tool=callgrind", "--cache-sim=yes", "--branch-sim=yes",
                *cache,
                f"--callgrind-out-file={out}", sys.executable, str(Path(__file__).resolve()),
                "--child", venue, "1" if checked else "0", str(n), str(folds),
            ]  # fmt: skip
            env = {**os.environ, "PYTHONHASHSEED": seed}
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            runs[checked, folds] = (proc, out)
    got = {}
    for checked in (True, False):
        one, three = (runs[checked, folds] for folds in (1, 3))
        for proc, _ in (one, three):
            _, err = proc.communicate()
            if proc.returncode:
                sys.exit(f"callgrind run failed: {err.decode(errors='replace').strip()[-500:]}")
        a, b = totals(one[1]), totals(three[1])
        per = {k: (b[k] - a[k]) / (2 * n) for k in COUNTS}
        per["cycles"] = (
            per["Ir"]
            + MISS * (per["I1mr"] + per["D1mr"] + per["D1mw"])
            + MISPREDICT * (per["Bcm"] + per["Bim"])
        )
        got[checked] = per
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venue", choices=["kraken", "okx", "both"], default="both")
    ap.add_argument("--events", type=int, help="events folded (default: kraken 20000, okx 3000)")
    ap.add_argument("--hash-seed", default="0", help="PYTHONHASHSEED of the folds (default 0)")
    ap.add_argument(
        "--cache",
        choices=["fixed", "host"],
        default="fixed",
        help="simulated caches: fixed 32 KiB 8-way L1s (default), or this CPU's (callgrind's own)",
    )
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        venue, checked, n, folds = args.child
        child(venue, checked == "1", int(n), int(folds))
        return
    if shutil.which("valgrind") is None:
        sys.exit("bench/book_callgrind.py needs valgrind (apt install valgrind)")
    venues = ["kraken", "okx"] if args.venue == "both" else [args.venue]
    fixed = args.cache == "fixed"
    cache = [f"--{k}={v}" for k, v in CACHE.items()] if fixed else []
    shown = " ".join(cache) if fixed else "this CPU's"
    print(f"simulated caches: {shown}; PYTHONHASHSEED={args.hash_seed}")
    with tempfile.TemporaryDirectory() as tmp:
        for venue in venues:
            n = args.events or EVENTS[venue]
            got = counts(venue, n, Path(tmp), args.hash_seed, cache)
            print(f"{venue}: {n:,} events, the steady case inlined; per event of one fold:")
            for c, label in ((True, "with checksum"), (False, "without")):
                g = got[c]
                print(
                    f"  {label:<14} Ir {g['Ir']:>9,.0f}  I1 misses {g['I1mr']:>6,.1f}  D1 misses "
                    f"{g['D1mr'] + g['D1mw']:>6,.1f}  mispredicts {g['Bcm'] + g['Bim']:>6,.1f}  "
                    f"= {g['cycles']:>9,.0f} cycles (est.)"
                )
            cost = got[True]["cycles"] / got[False]["cycles"] - 1
            ir = got[True]["Ir"] / got[False]["Ir"] - 1
            print(
                f"  checksum cost / fold = {cost:.1%} (target ≤ 30 %; on instructions alone "
                f"{ir:.1%})"
            )


if __name__ == "__main__":
    main()
