"""OKX order-book benchmark: decode + book fold of the real OKX ``books`` frames, checksums on and off.

Usage:  python bench/book.py --venue okx [--frames 200000] [--repeat 3] [--naive-frames 50000]
        (or python bench/book_okx.py with the same options)

What it measures (issue 14), on fixtures/journals/okx (cryptofeed's 2022 OKX
v5 capture: three instruments, a snapshot then ~95 updates each, a non-zero
checksum on every message):

1. **Build** (untimed): a journal of the capture's ``books`` frames repeated to
   ``--frames`` frames.  Each pass is a resubscription: every instrument's
   snapshot, then its updates, all frames byte for byte the captured ones
   except ``ts`` (the 2022 frames' only id) moved on by the capture's span per
   pass, as the receive times are.  So every checksum in the journal is one
   OKX computed, and every one must verify.
2. **Replay** (timed, median of ``--repeat``): JournalReader batches →
   ``Pipeline.feed_batch`` → the OKX codec → a ``BookReducer`` (its only
   reducer), once with the OKX rule (every checksum verified) and once with
   the same rule minus its checksum (``has_checksum`` False, a bench-only
   rule, which also lets the reducer inline its steady case).  Prints frames/s and level updates/s (one level update = one level
   of an update message; snapshots count as frames only) and checks the run:
   every checksum verified, 0 mismatches, 0 gaps, every book synced.
3. **Fold only** (timed on the first ``--naive-frames`` frames, decoded
   beforehand): ``BookReducer.step`` with and without checksums, versus a
   naive book (a ``dict`` price → qty per side, sorted when the top is asked
   for, with and without a naive checksum: sort, take 25, render, CRC32), and
   split the checksum's cost into computing it and the checked (not inlined)
   path (a rule whose checksum is free); those three runs take turns, at least
   15 rounds, each one's best time counting, in each of 5 fresh processes, the
   figures their medians (bench/book.py's ``best_interleaved`` and
   ``best_in_processes``).  The books must agree at the end.
   The line that matters: **checksum cost / fold**, the extra CPU time the
   checksum adds over the fold without it (target ≤ 30 %).

Rates are per second of this process's CPU time ("one core"); compare ratios.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, ClassVar

import attrs
from book import (  # type: ignore[import-not-found]  # bench/book.py
    FOLD_ROUNDS,
    best_in_processes,
    best_interleaved,
    reducer_fold,
)

from engine import book_sync
from engine.book_reducer import BookReducer
from engine.book_sync import OkxRule
from engine.codecs.okx_checksum import DEPTH, signed32, text
from engine.codecs.registry import get_codec
from engine.events import BookSnapshot, DepthDiff
from engine.journal.reader import JournalReader
from engine.journal.writer import JournalWriter
from engine.pipeline import Pipeline
from engine.replay.replay import chunks

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "journals" / "okx"
_TS = re.compile(rb'"ts":"(\d+)"')
NO_CHECKSUM = "okx-bench-no-checksum"
FREE_CHECKSUM = "okx-bench-free-checksum"


@attrs.frozen
class OkxRuleNoChecksum(OkxRule):
    """The OKX chain rule without its checksum: what the fold costs when nothing is verified."""

    name: ClassVar[str] = NO_CHECKSUM
    has_checksum: bool = False


@attrs.frozen
class OkxRuleFreeChecksum(OkxRule):
    """The OKX rule on the checksum path, with a checksum that costs nothing (always right)."""

    name: ClassVar[str] = FREE_CHECKSUM

    def verify(self, sync: Any, msg: Any, bids: Any, asks: Any) -> bool:
        return True


book_sync.RULES.setdefault(NO_CHECKSUM, OkxRuleNoChecksum())
book_sync.RULES.setdefault(FREE_CHECKSUM, OkxRuleFreeChecksum())


def load_frames() -> tuple[dict[str, Any], list[tuple[int, str, bytes, int]], int]:
    """The capture's books frames (recv_ns, source, payload, level updates) and its span."""
    reader = JournalReader(FIX)
    codec = get_codec("okx")
    out = []
    for f in reader.frames():
        if f.dir != "in" or f.kind != "text":
            continue
        evs = codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload)
        if len(evs) == 1 and type(evs[0]) in (BookSnapshot, DepthDiff):
            ev = evs[0]
            levels = len(ev.bids) + len(ev.asks) if type(ev) is DepthDiff else 0
            out.append((f.recv_ns, f.source, f.payload, levels))
    span = out[-1][0] - out[0][0] + 100_000_000
    return dict(reader.metadata), out, span


def build_journal(path: Path, metadata: dict[str, Any], frames: list, span: int, n: int) -> int:
    """``n`` frames of the repeated capture; returns the level updates they hold."""
    levels = 0
    span_ms = span // 1_000_000 + 1
    with JournalWriter.create(path, metadata) as w:
        for i in range(n):
            k, j = divmod(i, len(frames))
            recv_ns, source, payload, lv = frames[j]
            if k:
                moved = k * span_ms
                payload = _TS.sub(lambda m, d=moved: b'"ts":"%d"' % (int(m.group(1)) + d), payload)
            w.append(recv_ns + k * span, 1, "in", "text", source, payload)
            levels += lv
    return levels


def replay(path: Path, rule: str) -> tuple[float, Pipeline]:
    reader = JournalReader(path)
    p = Pipeline(get_codec("okx"), [BookReducer(rule, verify_interval_s=None)])
    gc.collect()
    c0 = time.process_time()
    for batch in chunks(reader):
        p.feed_batch(batch)
    return time.process_time() - c0, p


def check(p: Pipeline, n: int, with_checksum: bool) -> str:
    reducer: Any = p.reducer("book")
    state = p.state("book")
    t = reducer.totals(state)
    problems = []
    if t.gaps or t.checksum_mismatches or p.counters.decode_errors:
        problems.append(f"gaps {t.gaps} mismatches {t.checksum_mismatches} "
                        f"decode errors {p.counters.decode_errors}")  # fmt: skip
    if with_checksum and t.checksums_verified != n:
        problems.append(f"verified {t.checksums_verified} of {n} checksums")
    if any(reducer.book(state, s) is None for s in state.symbols):
        problems.append("a book is not published")
    if problems:
        raise SystemExit("NOT A VALID RUN: " + "; ".join(problems))
    return (f"synced {len(state.symbols)}/{len(state.symbols)}, gaps 0, mismatches 0, "
            f"checksums verified {t.checksums_verified:,}, resets (snapshots) {t.syncs:,}")  # fmt: skip


class NaiveBook:
    """The baseline: a dict price → qty per side, sorted whenever the top is asked for."""

    __slots__ = ("bids", "asks")

    def __init__(self, snap: BookSnapshot) -> None:
        self.bids = {p: q for p, q in snap.bids if q}
        self.asks = {p: q for p, q in snap.asks if q}

    def apply(self, ev: DepthDiff) -> None:
        for side, levels in ((self.bids, ev.bids), (self.asks, ev.asks)):
            for p, q in levels:
                if q:
                    side[p] = q
                else:
                    side.pop(p, None)

    def checksum(self) -> int:
        b = sorted(self.bids.items(), reverse=True)[:DEPTH]
        a = sorted(self.asks.items())[:DEPTH]
        parts: list[str] = []
        for i in range(max(len(b), len(a))):
            for side in (b, a):
                if i < len(side):
                    parts += (text(side[i][0]), text(side[i][1]))
        return signed32(zlib.crc32(":".join(parts).encode()))

    def crossed(self) -> bool:
        return bool(self.bids and self.asks) and max(self.bids) >= min(self.asks)


def naive_fold(events: list[Any], with_checksum: bool) -> tuple[float, dict[str, NaiveBook]]:
    books: dict[str, NaiveBook] = {}
    gc.collect()
    t0 = time.process_time()
    for ev in events:
        if type(ev) is BookSnapshot:
            b = books[ev.symbol] = NaiveBook(ev)
        else:
            b = books[ev.symbol]
            b.apply(ev)
        b.crossed()
        if with_checksum and ev.checksum is not None and b.checksum() != ev.checksum:
            raise AssertionError(f"naive book: checksum mismatch at seq {ev.seq}")
    return time.process_time() - t0, books


def bench(frames: int, repeat: int, naive_frames: int) -> None:
    metadata, captured, span = load_frames()
    tmp = Path(tempfile.mkdtemp(prefix="wiretape-bench-book-okx-"))
    try:
        path = tmp / "journal"
        levels = build_journal(path, metadata, captured, span, frames)
        print(f"okx: {len(captured)} captured books frames × {frames / len(captured):.0f} = "
              f"{frames:,} frames, {levels / frames:.2f} levels/frame, 3 symbols, a checksum on "
              "every frame")  # fmt: skip
        cpu: dict[str, float] = {}
        for label, rule, verify in (("checksums verified", "okx", True),
                                    ("no checksum", NO_CHECKSUM, False)):  # fmt: skip
            runs = [replay(path, rule) for _ in range(repeat)]
            summary = check(runs[0][1], frames, verify)
            el = cpu[label] = statistics.median(t for t, _ in runs)
            print(f"  replay, {label:<18}: {frames / el:>9,.0f} frames/s {levels / el:>11,.0f} "
                  f"level updates/s  (CPU s: {', '.join(f'{t:.2f}' for t, _ in runs)})")  # fmt: skip
            print(f"    {summary}")
        print(
            f"  replay: checksum cost / rest of the replay "
            f"{(cpu['checksums verified'] - cpu['no checksum']) / cpu['no checksum']:.0%}"
        )

        events = decoded(path, naive_frames)
        n = len(events)
        argv = [
            "--fold-only",
            str(path),
            "--naive-frames",
            str(naive_frames),
            "--repeat",
            str(repeat),
        ]
        runs = best_in_processes(__file__, argv)
        ours, bare, free = (statistics.median(r[k] for r in runs) for k in ("ours", "bare", "free"))
        costs = sorted(r["ours"] / r["bare"] - 1 for r in runs)
        naive = statistics.median(naive_fold(events, False)[0] for _ in range(repeat))
        naive_cs, books = naive_fold(events, True)
        _, reducer, state = reducer_fold(events, "okx")
        for sym, nb in books.items():
            book = reducer.book(state, sym)
            assert book is not None and (book.bids, book.asks) == (nb.bids, nb.asks), sym
        print(f"  fold only, {n:,} decoded frames: BookReducer {n / ours:>9,.0f} frames/s with "
              f"checksums, {n / bare:>9,.0f} without; naive dict+sort {n / naive:>9,.0f} without, "
              f"{n / naive_cs:>9,.0f} with (books equal)")  # fmt: skip
        print(
            f"  fold only: checksum cost / fold {statistics.median(costs):.0%} (target ≤ 30 %; "
            f"median of {len(costs)} processes: {', '.join(f'{c:.0%}' for c in costs)}): "
            f"computing the checksums {(ours - free) / bare:.0%}, the fold's checked (not "
            f"inlined) path {(free - bare) / bare:.0%}; BookReducer with checksums = "
            f"{naive_cs / ours:.1f}× the naive book with them"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def decoded(path: Path, n: int) -> list[Any]:
    """The events of the journal's first frames, up to ``n`` of them (decoded, untimed)."""
    codec = get_codec("okx")
    events: list[Any] = []
    for f in JournalReader(path).frames():
        events.extend(codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload))
        if len(events) >= n:
            break
    return events


def fold_only(path: Path, n: int, repeat: int) -> dict[str, float]:
    """The three reducer folds of the journal's first ``n`` events, taking turns: each one's best
    CPU time (run by ``--fold-only`` in each of bench/book.py's ``best_in_processes``)."""
    events = decoded(path, n)
    return best_interleaved(
        {
            "ours": lambda: reducer_fold(events, "okx")[0],
            "bare": lambda: reducer_fold(events, NO_CHECKSUM)[0],
            "free": lambda: reducer_fold(events, FREE_CHECKSUM)[0],
        },
        max(repeat, FOLD_ROUNDS),
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--naive-frames", type=int, default=50_000)
    ap.add_argument("--fold-only", type=Path, metavar="JOURNAL", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.fold_only:
        print(json.dumps(fold_only(args.fold_only, args.naive_frames, args.repeat)))
        return
    bench(args.frames, args.repeat, args.naive_frames)


if __name__ == "__main__":
    main(sys.argv[1:])
