"""Order-book benchmark: decode + book fold of real Binance depth frames, read back from a journal.

Usage:  python bench/book.py [--frames 1000000] [--venue spot|futures|both|kraken|okx|bybit|coinbase|coinbase-advanced] [--repeat 1]
                             [--naive-frames 50000] [--no-c]
        (``--venue coinbase|coinbase-advanced``: bench/book_coinbase.py)

``--venue okx`` runs ``bench/book_okx.py`` (OKX frames, checksums on and off).
``--no-c`` switches off the optional C depth scanner (``engine._depthscan``):
run with and without it for the ratio the C path buys.

What it measures (issue 5), per venue:

1. **Build** (untimed): a journal, in a temp dir with the real JournalWriter, of
   the venue's REST snapshots (fixtures/journals/binance-*, real captures) followed
   by the capture's depth frames repeated to ``--frames`` frames.  Each pass shifts
   every symbol's update ids (``U``, ``u``, ``pu``) by that symbol's span so it
   chains onto the previous pass (receive times move on by the capture's span too),
   and the payload bytes are otherwise the captured ones.  The journal ends with
   one REST snapshot per symbol holding the book an independent dict fold expects
   at that point (``lastUpdateId`` = the last diff's ``u``): the reducer verifies
   it against its own book, so "0 drift" is a real comparison, not a default.
2. **Replay** (timed, median of ``--repeat``): JournalReader batches (sliced as
   ``engine replay`` slices them) → ``Pipeline.feed_batch`` → the codec → a
   ``BookReducer`` (the pipeline's only reducer).  Prints frames/s and level
   updates/s (one level update = one ``[price, qty]`` pair of a diff), and checks
   the figure is honest: every symbol synced, 0 gaps, 0 drift, 4 verified, every
   frame either applied or (first pass only) stale.  (A pass re-sets levels at
   the capture's first prices over a book that has moved on, so the book may
   cross for a moment at a seam between passes; those episodes are counted.)
3. **Fold only** (timed on the first ``--naive-frames`` frames, decoded beforehand):
   ``BookReducer.step`` versus a naive book (a ``dict`` price → qty per side,
   sorted on each top-of-book query, queried once per frame: the crossed check
   the reducer also does), same events, same chain rule.  Prints both rates and
   the ratio; the two books must agree level for level at the end.

Periodic verification is off in the timed reducer (``verify_interval_s=None``):
its snapshot requests are answered by the live runtime, which a synthetic
journal has none of; the closing snapshots do the verification instead.

Rates are per second of this process's CPU time (all its threads: "one
core"), which a busy shared machine disturbs far less than wall time; the
replay line also gives the wall-clock rate.  Compare ratios and rerun.

Target (issue 5): ≥ 350k spot and ≥ 170k futures frames/s on one core for the
replay figure.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import orjson

from engine import num
from engine.book_reducer import (
    BookReducer,
    BookSynced,
    BookVerified,
    CrossedBook,
)
from engine.book_sync import APPLY, GAP, STALE, rule_for
from engine.codecs.registry import get_codec
from engine.events import BookSnapshot, DepthDiff
from engine.journal.reader import JournalReader
from engine.journal.writer import JournalWriter
from engine.pipeline import Pipeline
from engine.replay.replay import chunks

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "journals"
VENUES = {"spot": "binance-spot", "futures": "binance-futures"}
#: update-id fields of a depthUpdate payload, rewritten per pass
_IDS = re.compile(rb'"(U|u|pu)":(\d+)')


# =============================================================== the capture


@attrs.define
class DiffFrame:
    """One captured depth frame as a template whose ids can be shifted."""

    recv_ns: int
    source: str
    template: bytes  # payload with its ids replaced by %d (and % escaped)
    ids: tuple[int, ...]  # the captured ids, in template order
    symbol: str
    levels: int


@attrs.define
class Capture:
    metadata: dict[str, Any]
    snapshots: list[tuple[int, str, bytes]]  # (recv_ns, source, payload) of the REST frames
    snapshot_events: list[BookSnapshot]
    diffs: list[DiffFrame]
    events: list[DepthDiff]  # the first pass, decoded
    shift: dict[str, int]  # per symbol: how far the ids move per pass
    span_ns: int  # how far receive times move per pass


def load_capture(name: str) -> Capture:
    reader = JournalReader(FIX / name)
    codec = get_codec(reader.metadata["exchange"])
    snaps, snap_events, diffs, events = [], [], [], []
    for f in reader.frames():
        if f.dir != "in" or f.kind not in ("text", "rest"):
            continue
        evs = codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload)
        if len(evs) != 1:
            continue
        ev = evs[0]
        if type(ev) is BookSnapshot:
            snaps.append((f.recv_ns, f.source, f.payload))
            snap_events.append(ev)
        elif type(ev) is DepthDiff:
            found = _IDS.findall(f.payload)
            template = _IDS.sub(rb'"\1":%d', f.payload.replace(b"%", b"%%"))
            ids = tuple(int(v) for _, v in found)
            assert template % ids == f.payload
            levels = len(ev.bids) + len(ev.asks)
            diffs.append(DiffFrame(f.recv_ns, f.source, template, ids, ev.symbol, levels))
            events.append(ev)
    futures = codec.futures
    shift = {}
    for sym in {e.symbol for e in events}:
        mine = [e for e in events if e.symbol == sym]
        # the next pass's first diff must chain onto this pass's last one
        start = mine[0].prev_id if futures else mine[0].first_id - 1
        shift[sym] = mine[-1].last_id - start  # type: ignore[operator]
    span = diffs[-1].recv_ns - min(s[0] for s in snaps) + 100_000_000
    return Capture(reader.metadata, snaps, snap_events, diffs, events, shift, span)


# =============================================================== the journal


def frames_of(cap: Capture, n: int) -> Iterator[tuple[int, int, DiffFrame]]:
    """(pass, index in pass, frame) for the first ``n`` frames of the repeated capture."""
    per = len(cap.diffs)
    for i in range(n):
        k, j = divmod(i, per)
        yield k, j, cap.diffs[j]


def expected_books(cap: Capture, n: int) -> dict[str, tuple[int, dict[int, int], dict[int, int]]]:
    """symbol → (last id, bids, asks) after ``n`` frames, by a plain dict fold.

    Every pass sets the same levels to the same values, so after the first two
    whole passes a further whole pass changes nothing: the state is the
    snapshot, then pass 1 (minus its stale diffs), then pass 2 if there is a
    later one, then the last (partial) pass.
    """
    rule = rule_for(get_codec(cap.metadata["exchange"]).sync_rule)
    books = {s.symbol: (s.last_id, {p: q for p, q in s.bids}, {p: q for p, q in s.asks})
             for s in cap.snapshot_events}  # fmt: skip
    per = len(cap.events)
    whole, rest = divmod(n, per)
    passes = [(0, per if whole else rest)]
    if whole >= 2:
        passes.append((1, per))
    if whole >= 3:
        passes.append((whole - 1, per))  # changes no level, only the ids
    if whole and rest:
        passes.append((whole, rest))
    primed = set(books)
    for k, count in passes:
        for ev in cap.events[:count]:
            lid, bids, asks = books[ev.symbol]
            if k == 0:  # the stream against the snapshot: drop what it already covers
                verdict = (rule.first if ev.symbol in primed else rule.next)(lid, ev)
                if verdict == STALE:
                    continue
                if verdict != APPLY:
                    raise AssertionError(f"{ev.symbol}: the capture does not chain ({verdict})")
                primed.discard(ev.symbol)
            for side, levels in ((bids, ev.bids), (asks, ev.asks)):
                for p, q in levels:
                    if q:
                        side[p] = q
                    else:
                        side.pop(p, None)
            books[ev.symbol] = (ev.last_id + k * cap.shift[ev.symbol], bids, asks)
    return books


def snapshot_body(last_id: int, bids: dict[int, int], asks: dict[int, int]) -> bytes:
    return orjson.dumps(
        {
            "lastUpdateId": last_id,
            "bids": [[num.render(p), num.render(q)] for p, q in sorted(bids.items(), reverse=True)],
            "asks": [[num.render(p), num.render(q)] for p, q in sorted(asks.items())],
        }
    )


def build_journal(path: Path, cap: Capture, n: int) -> None:
    """The capture's snapshots, ``n`` shifted depth frames, then one verifying snapshot per symbol."""
    shift = cap.shift
    span = cap.span_ns
    with JournalWriter.create(path, dict(cap.metadata)) as w:
        append = w.append
        t0 = cap.diffs[0].recv_ns - 1
        for _, source, payload in cap.snapshots:
            append(t0, 0, "in", "rest", source, payload, 200)
        last = t0
        for k, _, f in frames_of(cap, n):
            d = k * shift[f.symbol]
            last = f.recv_ns + k * span
            append(last, 1, "in", "text", f.source, f.template % tuple(i + d for i in f.ids))
        for sym, (lid, bids, asks) in sorted(expected_books(cap, n).items()):
            src = next(s for _, s, _ in cap.snapshots if f"symbol={sym}&" in s)
            src = src.replace("limit=1000", "limit=5000")  # every level: compare whole sides
            append(last + 1, 0, "in", "rest", src, snapshot_body(lid, bids, asks), 200)


# =============================================================== the timed runs


def replay(path: Path) -> tuple[float, float, Pipeline, list[tuple[int, Any]]]:
    """Fold the journal as ``engine replay`` does, with the book reducer only.

    Returns (CPU seconds, wall seconds, the pipeline, its outputs)."""
    reader = JournalReader(path)
    codec = get_codec(reader.metadata["exchange"])
    p = Pipeline(codec, [BookReducer(codec.sync_rule, verify_interval_s=None)])
    outs: list[tuple[int, Any]] = []
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    for batch in chunks(reader):
        o = p.feed_batch(batch)
        if o:
            outs.extend(o)
    return time.process_time() - c0, time.perf_counter() - t0, p, outs


def check(p: Pipeline, outs: list[tuple[int, Any]], cap: Capture, n: int) -> str:
    """Raise unless the fold was clean; returns a one-line summary."""
    reducer: BookReducer = p.reducer("book")  # type: ignore[assignment]
    state = p.state("book")
    t = reducer.totals(state)
    kinds: dict[str, int] = {}
    for _, o in outs:
        kinds[type(o).__name__] = kinds.get(type(o).__name__, 0) + 1
    symbols = sorted(cap.shift)
    expected = {BookSynced.__name__: len(symbols), BookVerified.__name__: len(symbols)}
    # a pass re-sets levels at the prices of the capture's start over a book that has moved
    # on, so a repetition may cross the book for a moment (reported once per episode)
    kinds.pop(CrossedBook.__name__, None)
    problems = []
    if kinds != expected:
        problems.append(f"outputs {kinds} != {expected}")
    if t.gaps or t.drift or p.counters.decode_errors:
        problems.append(f"gaps {t.gaps} drift {t.drift} decode errors {p.counters.decode_errors}")
    if t.diffs_applied + t.stale_diffs != n:
        problems.append(f"applied {t.diffs_applied} + stale {t.stale_diffs} != {n} frames")
    if any(reducer.book(state, s) is None for s in symbols):
        problems.append("a book is not synced")
    if problems:
        raise SystemExit("NOT A VALID RUN: " + "; ".join(problems))
    return (f"synced {len(symbols)}/{len(symbols)}, gaps 0, drift 0, verified {t.verified}, "
            f"applied {t.diffs_applied:,}, stale {t.stale_diffs}, crossed episodes {t.crossed} "
            "(pass seams)")  # fmt: skip


class NaiveBook:
    """The baseline: a dict price → qty per side, sorted whenever the top of book is asked for."""

    __slots__ = ("bids", "asks", "last_id")

    def __init__(self, snap: BookSnapshot) -> None:
        self.bids = {p: q for p, q in snap.bids if q}
        self.asks = {p: q for p, q in snap.asks if q}
        self.last_id = snap.last_id

    def apply(self, ev: DepthDiff) -> None:
        for side, levels in ((self.bids, ev.bids), (self.asks, ev.asks)):
            for p, q in levels:
                if q:
                    side[p] = q
                else:
                    side.pop(p, None)
        self.last_id = ev.last_id

    def crossed(self) -> bool:
        if not self.bids or not self.asks:
            return False
        return sorted(self.bids)[-1] >= sorted(self.asks)[0]


def naive_fold(events: list[Any], sync_rule: str) -> tuple[float, dict[str, NaiveBook]]:
    rule = rule_for(sync_rule)
    books: dict[str, NaiveBook] = {}
    primed: set[str] = set()
    gc.collect()
    t0 = time.process_time()
    for ev in events:
        if type(ev) is BookSnapshot:
            books[ev.symbol] = NaiveBook(ev)
            primed.add(ev.symbol)
            continue
        b = books[ev.symbol]
        first = ev.symbol in primed
        verdict = (rule.first if first else rule.next)(b.last_id, ev)
        if verdict == GAP:
            raise AssertionError(f"naive book: gap at {ev}")
        if verdict == APPLY:
            primed.discard(ev.symbol)
            b.apply(ev)
        b.crossed()
    return time.process_time() - t0, books


#: the fold-only comparisons (Kraken, OKX): at least this many rounds in a process, each variant's
#: best time counting (best_interleaved), in each of this many fresh processes, the figures their
#: medians (best_in_processes): one interpreter's memory layout and string hashes alone move a
#: checksum's cost by several points on a shared machine
FOLD_ROUNDS = 15
FOLD_PROCESSES = 5


def best_in_processes(script: str, argv: list[str]) -> list[dict[str, float]]:
    """``script argv`` run in FOLD_PROCESSES fresh interpreters, one after the other: the JSON
    object (each variant's best time) each one printed last."""
    runs = []
    for _ in range(FOLD_PROCESSES):
        out = subprocess.run(
            [sys.executable, script, *argv], capture_output=True, text=True, check=True
        ).stdout
        runs.append(json.loads(out.splitlines()[-1]))
    return runs


def best_interleaved(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Each run's least CPU time (what it returns) over ``rounds`` rounds, the runs taking turns
    in every round (A B C, A B C, ...).  A slow spell of a shared machine then falls on every
    variant alike instead of on one of them, and the least time is the run least disturbed (as
    ``timeit`` reports): the ratios of the fold-only lines come from these."""
    best = dict.fromkeys(runs, math.inf)
    for _ in range(rounds):
        for name, run in runs.items():
            best[name] = min(best[name], run())
    return best


def reducer_fold(events: list[Any], sync_rule: str) -> tuple[float, BookReducer, Any]:
    reducer = BookReducer(sync_rule, verify_interval_s=None)
    state = reducer.initial()
    step = reducer.step
    gc.collect()
    t0 = time.process_time()
    for ev in events:
        state, _ = step(state, ev)
    return time.process_time() - t0, reducer, state


def fold_against_naive(events: list[Any], rule: str, repeat: int) -> tuple[int, float, float]:
    """(diffs, BookReducer CPU s, naive CPU s) folding ``events``, medians of ``repeat``;
    raises unless both end with the same books."""
    nd = sum(type(e) is DepthDiff for e in events)
    ours = statistics.median(reducer_fold(events, rule)[0] for _ in range(repeat))
    base = [naive_fold(events, rule) for _ in range(repeat)]
    naive = statistics.median(t for t, _ in base)
    _, reducer, state = reducer_fold(events, rule)
    for sym, nb in base[0][1].items():
        book = reducer.book(state, sym)
        assert book is not None and (book.bids, book.asks) == (nb.bids, nb.asks), sym
    return nd, ours, naive


def decoded_prefix(path: Path, n: int) -> list[Any]:
    """The events of the journal's first ``n`` frames after its snapshots (decoded, untimed)."""
    reader = JournalReader(path)
    codec = get_codec(reader.metadata["exchange"])
    out: list[Any] = []
    diffs = 0
    for f in reader.frames():
        out.extend(codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload))
        diffs += f.kind == "text"
        if diffs >= n:
            break
    return out


# =============================================================== main


def bench_venue(venue: str, frames: int, repeat: int, naive_frames: int) -> None:
    cap = load_capture(VENUES[venue])
    per_pass_levels = sum(f.levels for f in cap.diffs)
    whole, rest = divmod(frames, len(cap.diffs))
    levels = whole * per_pass_levels + sum(f.levels for f in cap.diffs[:rest])
    tmp = Path(tempfile.mkdtemp(prefix="wiretape-bench-book-"))
    try:
        path = tmp / "journal"
        t0 = time.perf_counter()
        build_journal(path, cap, frames)
        built = time.perf_counter() - t0
        print(f"{venue}: {len(cap.diffs)} captured depth frames × {frames / len(cap.diffs):.0f} "
              f"= {frames:,} frames, {levels / frames:.2f} levels/frame, {len(cap.shift)} symbols "
              f"(journal built in {built:.1f} s)")  # fmt: skip
        cpu, wall = [], []
        summary = ""
        for _ in range(repeat):
            c, w, p, outs = replay(path)
            summary = check(p, outs, cap, frames)
            cpu.append(c)
            wall.append(w)
        el = statistics.median(cpu)
        print(f"  replay (journal → codec → BookReducer): {frames / el:>10,.0f} frames/s "
              f"{levels / el:>12,.0f} level updates/s  (CPU, median of {repeat}: "
              f"{', '.join(f'{t:.2f}' for t in cpu)} s; wall "
              f"{frames / statistics.median(wall):,.0f} frames/s)")  # fmt: skip
        print(f"    {summary}")

        events = decoded_prefix(path, min(naive_frames, frames))
        print(fold_comparison(events, get_codec(cap.metadata["exchange"]).sync_rule, repeat))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fold_comparison(events: list[Any], rule: str, repeat: int) -> str:
    """BookReducer against the naive book on the same decoded events: the line to print."""
    nd, ours, naive = fold_against_naive(events, rule, repeat)
    return (f"  fold only, {nd:,} decoded diffs: BookReducer {nd / ours:>10,.0f} frames/s, "
            f"naive dict+sort {nd / naive:>10,.0f} frames/s → {naive / ours:.1f}× the naive "
            "(books equal)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument(
        "--venue",
        choices=[
            "spot", "futures", "both", "kraken", "okx", "bybit", "coinbase", "coinbase-advanced",
        ],
        default="both",
    )
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--naive-frames", type=int, default=50_000)
    ap.add_argument(
        "--no-c", action="store_true", help="pure Python: switch off the C depth scanner"
    )
    args = ap.parse_args()
    if args.venue == "kraken":  # its own script (checksums, no update ids): bench/book_kraken.py
        import book_kraken

        n = ["--frames", str(args.frames), "--repeat", str(args.repeat)]
        return book_kraken.main([*n, "--naive-frames", str(args.naive_frames)])
    if args.venue == "bybit":  # its own script (bench/book_bybit.py): v5 frames, no checksum
        from book_bybit import bench_bybit

        return bench_bybit(args.frames, args.repeat, args.naive_frames)
    if args.venue == "okx":  # its own script: checksums on and off (bench/book_okx.py)
        import book_okx  # type: ignore[import-not-found]

        frames = "200000" if args.frames == 1_000_000 else str(args.frames)
        return book_okx.main(["--frames", frames, "--repeat", str(args.repeat),
                              "--naive-frames", str(args.naive_frames)])  # fmt: skip
    if args.venue.startswith("coinbase"):  # bench/book_coinbase.py
        import book_coinbase

        opts = ["--frames", str(args.frames), "--repeat", str(args.repeat)]
        book_coinbase.main(["--venue", args.venue, *opts, "--naive-frames", str(args.naive_frames)])
        return
    if args.no_c:
        from engine.codecs import binance

        binance.scan_depth = None
    print(f"depth decoding: {'pure Python' if args.no_c else 'C scanner where built'}")
    for venue in ("spot", "futures") if args.venue == "both" else (args.venue,):
        bench_venue(venue, args.frames, args.repeat, args.naive_frames)


if __name__ == "__main__":
    main()
