"""Order-book benchmark for Coinbase: decode + book fold of the real capture's level2 frames.

Usage:  python bench/book.py --venue coinbase|coinbase-advanced [--frames N] [--repeat R]
        (or python bench/book_coinbase.py with the same options)

Like ``bench/book.py`` for Binance, per dialect:

1. **Build** (untimed): a journal (real JournalWriter, temp dir) of the capture's
   ten in-stream snapshots (fixtures/journals/coinbase: cryptofeed's
   COINBASE.ws.28.0) followed by its 9,719 ``l2update`` frames repeated to
   ``--frames``.  On the Exchange feed a book's update id is the frame's
   journal seq, so repeated frames need no id shifting: the payloads are the
   captured bytes.  ``coinbase-advanced`` re-encodes the same events in the
   Advanced Trade dialect (``l2_data`` frames, ``sequence_num`` +1 per frame)
   with the codec's own encoder.
2. **Replay** (timed, median of ``--repeat``): JournalReader batches →
   ``Pipeline.feed_batch`` → the codec → a ``BookReducer``.  Frames/s and level
   updates/s (one level = one change of an ``l2update``), checked: every book
   synced, 0 gaps, every frame applied, 0 decode errors.  (A pass re-sets the
   capture's first levels over a book that moved on, so the book may cross for
   a moment at a pass seam; counted.)
3. **Fold only** (the first ``--naive-frames`` frames, decoded beforehand):
   ``BookReducer.step`` against bench/book.py's naive dict-and-sort book, same
   events; the books must agree level for level.

Checksum verification: Coinbase's level2 carries no checksum (and no sequence
on the Exchange feed), so there is nothing to verify per update: the
"with/without checksum" pair of the other venues is one figure here, and the
checksum's cost is 0 % of the fold by construction.

Rates are per second of this process's CPU time ("one core").
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.book_reducer import BookReducer, BookSynced, CrossedBook
from engine.codecs.coinbase_advanced import CoinbaseAdvanced
from engine.codecs.registry import get_codec
from engine.events import BookSnapshot, DepthDiff
from engine.journal.reader import JournalReader
from engine.journal.writer import JournalWriter
from engine.pipeline import Pipeline

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "journals" / "coinbase"
DIALECTS = ("coinbase", "coinbase-advanced")


def load_capture() -> tuple[
    dict[str, Any], list[tuple[Any, BookSnapshot]], list[tuple[Any, DepthDiff]]
]:
    """The capture's (frame, event) snapshots and diffs, decoded by the Exchange codec."""
    reader = JournalReader(FIX)
    codec = get_codec("coinbase")
    snaps, diffs = [], []
    for f in reader.frames():
        if f.dir != "in" or f.kind != "text":
            continue
        for ev in codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload):
            if type(ev) is BookSnapshot:
                snaps.append((f, ev))
            elif type(ev) is DepthDiff:
                diffs.append((f, ev))
    return reader.metadata, snaps, diffs


def build_journal(path: Path, dialect: str, n: int) -> int:
    """Snapshots, then ``n`` l2update frames (the capture repeated); returns the level count."""
    meta, snaps, diffs = load_capture()
    adv = CoinbaseAdvanced()
    span = diffs[-1][0].recv_ns - snaps[0][0].recv_ns + 100_000_000
    levels = 0
    with JournalWriter.create(path, {**meta, "exchange": dialect}) as w:
        sn = 0
        for f, ev in snaps:
            sn += 1
            payload = f.payload if dialect == "coinbase" else adv.encode_book([ev], sn)
            w.append(f.recv_ns, 1, "in", "text", f.source, payload)
        for i in range(n):
            k, j = divmod(i, len(diffs))
            f, ev = diffs[j]
            sn += 1
            payload = f.payload if dialect == "coinbase" else adv.encode_book([ev], sn)
            w.append(f.recv_ns + k * span, 1, "in", "text", f.source, payload)
            levels += len(ev.bids) + len(ev.asks)
    return levels


def check(p: Pipeline, outs: list[tuple[int, Any]], n: int) -> str:
    reducer: BookReducer = p.reducer("book")  # type: ignore[assignment]
    state = p.state("book")
    t = reducer.totals(state)
    kinds: dict[str, int] = {}
    for _, o in outs:
        kinds[type(o).__name__] = kinds.get(type(o).__name__, 0) + 1
    kinds.pop(CrossedBook.__name__, None)
    symbols = sorted(state.symbols)
    problems = []
    if kinds != {BookSynced.__name__: len(symbols)}:
        problems.append(f"outputs {kinds}")
    if t.gaps or p.counters.decode_errors or t.diffs_applied != n:
        problems.append(f"gaps {t.gaps}, decode errors {p.counters.decode_errors}, "
                        f"applied {t.diffs_applied} of {n}")  # fmt: skip
    if len(symbols) != 10 or any(reducer.book(state, s) is None for s in symbols):
        problems.append("a book is not synced")
    if problems:
        raise SystemExit("NOT A VALID RUN: " + "; ".join(problems))
    return (f"synced {len(symbols)}/10, gaps 0, applied {t.diffs_applied:,}, "
            f"crossed episodes {t.crossed} (pass seams)")  # fmt: skip


def decoded_prefix(path: Path, n: int) -> list[Any]:
    reader = JournalReader(path)
    codec = get_codec(reader.metadata["exchange"])
    out: list[Any] = []
    for i, f in enumerate(reader.frames()):
        if i >= n:
            break
        out.extend(codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload))
    return [e for e in out if type(e) in (BookSnapshot, DepthDiff)]


def bench(dialect: str, frames: int, repeat: int, naive_frames: int) -> None:
    from book import fold_comparison, replay  # bench/book.py: the timed fold, the naive baseline

    tmp = Path(tempfile.mkdtemp(prefix="wiretape-bench-book-coinbase-"))
    try:
        path = tmp / "journal"
        t0 = time.perf_counter()
        levels = build_journal(path, dialect, frames)
        print(f"{dialect}: 9,719 captured l2update frames repeated to {frames:,} frames, "
              f"{levels / frames:.2f} levels/frame, 10 products "
              f"(journal built in {time.perf_counter() - t0:.1f} s)")  # fmt: skip
        cpu = []
        summary = ""
        for _ in range(repeat):
            c, _, p, outs = replay(path)
            summary = check(p, outs, frames)
            cpu.append(c)
        el = statistics.median(cpu)
        print(f"  replay (journal → codec → BookReducer): {frames / el:>10,.0f} frames/s "
              f"{levels / el:>12,.0f} level updates/s  (CPU, median of {repeat}: "
              f"{', '.join(f'{t:.2f}' for t in cpu)} s)")  # fmt: skip
        print(f"    {summary}")
        print(
            "  checksum verification: none (Coinbase level2 has no checksum): the replay "
            "figure is both 'with' and 'without'; checksum cost 0 % of the fold"
        )
        print(
            fold_comparison(
                decoded_prefix(path, naive_frames), get_codec(dialect).sync_rule, repeat
            )
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venue", choices=[*DIALECTS, "both"], default="both")
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--naive-frames", type=int, default=50_000)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for d in DIALECTS if args.venue == "both" else (args.venue,):
        bench(d, args.frames, args.repeat, args.naive_frames)


if __name__ == "__main__":
    main()
