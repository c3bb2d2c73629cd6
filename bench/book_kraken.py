"""Kraken order-book benchmark: decode + book fold of the real v1 capture, with and without checksums.

Usage:  python bench/book_kraken.py [--frames 300000] [--repeat 3] [--naive-frames 50000]
        (also ``python bench/book.py --venue kraken``)

What it measures (issue 14), on ``fixtures/kraken/journal`` (4 pairs of
cryptofeed's 2021 capture, book depth 1000, a CRC32 checksum on every update):

1. **Build** (untimed): a journal (the real JournalWriter, in a temp dir) of the
   capture's book frames repeated to ``--frames`` frames.  Kraken has no update
   ids (the journal ``seq`` orders messages) and every update's checksum is of
   the book after it, so a pass cannot simply continue the previous one: each
   pass begins with the capture's snapshots again (what a resubscription
   brings), then its updates, payloads byte for byte as captured.
2. **Replay** (timed, median of ``--repeat``): JournalReader batches →
   ``Pipeline.feed_batch`` → the ``kraken-v1`` codec → a ``BookReducer``, once
   with the Kraken rule (truncation to depth 1000 and the checksum after every
   update) and once with the same rule minus the checksum (same driver path,
   ``inline=False`` both times, so the difference is the checksum alone).
   Prints frames/s, level updates/s, and checks the run was honest: every
   checksum verified, 0 mismatches, every update applied.
3. **Fold only** (the first ``--naive-frames`` frames, decoded beforehand):
   ``BookReducer.step`` with and without the checksum, versus the naive
   baseline (a ``dict`` per side, sorted for the top 10 on every message to
   compute the checksum, as a hand-written client does), same events.  Prints
   the rates, and **checksum cost / fold** = (with − without) / without
   (target ≤ 30 %); then the same with the reducer's steady case inlined on
   both sides, as the engine runs it.  The four reducer runs take turns, at
   least 15 rounds, and each one's best time counts (a slow spell of the
   machine falls on all four alike; bench/book.py's ``best_interleaved``), in
   each of 5 fresh processes; the figures are the processes' medians, and the
   cost line lists all five (one interpreter's memory layout and string
   hashes alone move it by several points).

Rates are per second of this process's CPU time ("one core"); the replay line
also gives wall-clock.  A busy shared machine moves the figures: compare ratios.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, ClassVar

import attrs
import book  # bench/book.py: its naive baseline book

from engine import book_sync
from engine.book_reducer import BookReducer
from engine.book_sync import KrakenRule
from engine.codecs.registry import get_codec
from engine.events import BookSnapshot, DepthDiff
from engine.journal.reader import JournalReader
from engine.journal.writer import JournalWriter
from engine.num import render
from engine.pipeline import Pipeline
from engine.replay.replay import chunks

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "kraken" / "journal"
UNCHECKED = "kraken-unchecked"


@attrs.frozen
class UncheckedKraken(KrakenRule):
    """The Kraken rule without its checksum: the bench's "without verification" run."""

    name: ClassVar[str] = UNCHECKED
    has_checksum: bool = False


def load() -> tuple[dict[str, Any], list[tuple[int, str, bytes]], int]:
    """The capture's metadata, its book frames (recv_ns, source, payload), its time span."""
    reader = JournalReader(FIX)
    codec = get_codec(reader.metadata["exchange"])
    frames = []
    for f in reader.frames():
        if f.dir != "in" or f.kind != "text":
            continue
        evs = codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload)
        if len(evs) == 1 and type(evs[0]) in (BookSnapshot, DepthDiff):
            frames.append((f.recv_ns, f.source, f.payload))
    span = frames[-1][0] - frames[0][0] + 100_000_000
    return reader.metadata, frames, span


def build(path: Path, metadata: dict[str, Any], frames: list, span: int, n: int) -> None:
    with JournalWriter.create(path, dict(metadata)) as w:
        for i in range(n):
            k, j = divmod(i, len(frames))
            ns, source, payload = frames[j]
            w.append(ns + k * span, 1, "in", "text", source, payload)


def replay(path: Path, rule: str) -> tuple[float, float, Pipeline]:
    reader = JournalReader(path)
    codec = get_codec(reader.metadata["exchange"])
    p = Pipeline(codec, [BookReducer(rule, verify_interval_s=None, inline=False)])
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    for batch in chunks(reader):
        p.feed_batch(batch)
    return time.process_time() - c0, time.perf_counter() - t0, p


def check(p: Pipeline, updates: int, checked: bool) -> str:
    reducer: BookReducer = p.reducer("book")  # type: ignore[assignment]
    t = reducer.totals(p.state("book"))
    if t.gaps or p.counters.decode_errors or t.diffs_applied != updates:
        raise SystemExit(
            f"NOT A VALID RUN: gaps {t.gaps}, decode errors {p.counters.decode_errors}, "
            f"applied {t.diffs_applied} of {updates} updates"
        )
    verdict = f"{updates:,} checksums verified, 0 mismatches" if checked else "no checksums"
    return f"{verdict}; {t.syncs} snapshots loaded, {t.diffs_applied:,} updates applied"


class NaiveBook(book.NaiveBook):
    """The baseline: dicts, sorted for the top 10 (and the truncation) on every message."""

    __slots__ = ("pd", "qd", "depth")

    def __init__(self, snap: BookSnapshot) -> None:
        super().__init__(snap)
        self.pd, self.qd, self.depth = snap.price_decimals, snap.qty_decimals, snap.depth

    def apply(self, ev: DepthDiff) -> bool:  # type: ignore[override]
        super().apply(ev)
        bids = sorted(self.bids, reverse=True)
        asks = sorted(self.asks)
        for p in bids[self.depth :]:
            del self.bids[p]
        for p in asks[self.depth :]:
            del self.asks[p]
        text = ""
        for side, keys in ((self.asks, asks[:10]), (self.bids, bids[:10])):
            for p in keys:
                text += render(p, self.pd).replace(".", "").lstrip("0")
                text += render(side[p], self.qd).replace(".", "").lstrip("0")
        return zlib.crc32(text.encode()) == ev.checksum


def naive_fold(events: list[Any]) -> float:
    books: dict[str, NaiveBook] = {}
    gc.collect()
    t0 = time.process_time()
    for ev in events:
        if type(ev) is BookSnapshot:
            books[ev.symbol] = NaiveBook(ev)
        elif not books[ev.symbol].apply(ev):
            raise AssertionError(f"naive book: checksum mismatch at {ev.seq}")
    return time.process_time() - t0


def reducer_fold(events: list[Any], rule: str, inline: bool = False) -> float:
    reducer = BookReducer(rule, verify_interval_s=None, inline=inline)
    state = reducer.initial()
    step = reducer.step
    gc.collect()
    t0 = time.process_time()
    for ev in events:
        state, _ = step(state, ev)
    if reducer.totals(state).gaps:
        raise AssertionError("the fold found a gap")
    return time.process_time() - t0


def bench(frames: int, repeat: int, naive_frames: int) -> None:
    book_sync.RULES[UNCHECKED] = UncheckedKraken()
    metadata, captured, span = load()
    codec = get_codec(metadata["exchange"])
    events = [codec.decode(i, ns, "text", s, pl)[0] for i, (ns, s, pl) in enumerate(captured, 1)]
    upd = [type(e) is DepthDiff for e in events]
    lv = [len(e.bids) + len(e.asks) if type(e) is DepthDiff else 0 for e in events]
    whole, rest = divmod(frames, len(captured))
    updates = whole * sum(upd) + sum(upd[:rest])
    levels = whole * sum(lv) + sum(lv[:rest])
    tmp = Path(tempfile.mkdtemp(prefix="wiretape-bench-kraken-"))
    try:
        path = tmp / "journal"
        t0 = time.perf_counter()
        build(path, metadata, captured, span, frames)
        print(
            f"kraken-v1: {len(captured)} captured book frames ({sum(upd)} updates, "
            f"{len(captured) - sum(upd)} snapshots of up to 1,436 levels) × "
            f"{frames / len(captured):.0f} = {frames:,} frames, {levels / updates:.2f} levels/update, "
            f"{len({e.symbol for e in events})} pairs (journal built in {time.perf_counter() - t0:.1f} s)"
        )
        rates = {}
        for rule, label in (
            (book_sync.SyncRule.KRAKEN, "with checksum"),
            (UNCHECKED, "no checksum"),
        ):
            cpu, wall, summary = [], [], ""
            for _ in range(repeat):
                c, w, p = replay(path, rule)
                summary = check(p, updates, rule != UNCHECKED)
                cpu.append(c)
                wall.append(w)
            el = statistics.median(cpu)
            rates[label] = el
            print(
                f"  replay {label:>13}: {frames / el:>9,.0f} frames/s {levels / el:>11,.0f} "
                f"level updates/s  (CPU, median of {repeat}: {', '.join(f'{t:.2f}' for t in cpu)} s;"
                f" wall {frames / statistics.median(wall):,.0f} frames/s)\n    {summary}"
            )
        cost = rates["with checksum"] / rates["no checksum"] - 1
        print(f"  replay: checksum cost / fold = {cost:.0%}")

        n = min(naive_frames, frames)
        prefix = [events[i % len(events)] for i in range(n)]
        nd = sum(type(e) is DepthDiff for e in prefix)
        runs = book.best_in_processes(__file__, ["--fold-only", str(n), "--repeat", str(repeat)])
        t = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        naive = statistics.median(naive_fold(prefix) for _ in range(repeat))
        naive_line = f"; naive dict+sort with checksum {nd / naive:>9,.0f}/s → "
        naive_line += f"{naive / t['with']:.1f}× the naive"
        for label, checked, unchecked, extra in (
            ("", "with", "without", naive_line),
            (", inlined (as engine replay runs)", "with inlined", "without inlined", ""),
        ):
            costs = sorted(r[checked] / r[unchecked] - 1 for r in runs)
            print(
                f"  fold only{label}, {nd:,} updates: BookReducer with checksum "
                f"{nd / t[checked]:>9,.0f}/s, without {nd / t[unchecked]:>9,.0f}/s{extra}\n"
                f"    checksum cost / fold = {statistics.median(costs):.0%} (target ≤ 30 %; median "
                f"of {len(costs)} processes: {', '.join(f'{c:.0%}' for c in costs)})"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        book_sync.RULES.pop(UNCHECKED, None)


def fold_only(n: int, repeat: int) -> dict[str, float]:
    """The four reducer folds of the capture's first ``n`` frames, taking turns: each one's best
    CPU time (run by ``--fold-only`` in each of bench/book.py's ``best_in_processes``)."""
    book_sync.RULES[UNCHECKED] = UncheckedKraken()
    metadata, captured, _ = load()
    codec = get_codec(metadata["exchange"])
    events = [codec.decode(i, ns, "text", s, pl)[0] for i, (ns, s, pl) in enumerate(captured, 1)]
    prefix = [events[i % len(events)] for i in range(n)]
    kraken = book_sync.SyncRule.KRAKEN
    return book.best_interleaved(
        {
            "with": lambda: reducer_fold(prefix, kraken),
            "without": lambda: reducer_fold(prefix, UNCHECKED),
            "with inlined": lambda: reducer_fold(prefix, kraken, True),
            "without inlined": lambda: reducer_fold(prefix, UNCHECKED, True),
        },
        max(repeat, book.FOLD_ROUNDS),
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--naive-frames", type=int, default=50_000)
    ap.add_argument("--fold-only", type=int, metavar="N", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.fold_only:
        print(json.dumps(fold_only(args.fold_only, args.repeat)))
        return
    bench(args.frames, args.repeat, args.naive_frames)


if __name__ == "__main__":
    main()
