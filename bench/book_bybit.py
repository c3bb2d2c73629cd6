"""Order-book benchmark for Bybit v5: decode + book fold, read back from a journal (``bench/book.py --venue bybit``).

Usage:  python bench/book.py --venue bybit [--frames 1000000] [--repeat 1] [--naive-frames 50000]
        (or python bench/book_bybit.py with the same options)

No real Bybit v5 recording exists here, so the frames are real *book dynamics* in the v5 wire
shape: every snapshot and delta of the real 2021 Bybit capture (fixtures/bybit/legacy-journal,
the legacy protocol: BTCUSD and EOSUSD inverse contracts, 25 levels a side) is re-encoded by the
v5 codec's own encoder (``engine.codecs.bybit.book_frame``) as ``orderbook.50.<symbol>`` frames of
``bybit-inverse``, with ``u`` counting 1, 2, 3 ... per symbol from the snapshot, prices and sizes
at the decimals the capture printed them with.  Then, as for Binance (bench/book.py):

1. **Build** (untimed): a journal of the two snapshots, the delta frames repeated to ``--frames``
   with each pass's ``u`` shifted to chain onto the previous pass, and at the end one snapshot
   per symbol at the last ``u`` holding the book a plain dict fold expects: under Bybit's rule a
   snapshot at the synced book's own ``u`` verifies it, so "0 drift, 2 verified" is a real
   comparison.
2. **Replay** (timed): journal → Pipeline → codec → BookReducer; frames/s, level updates/s.
3. **Fold only**: BookReducer.step against the naive dict-and-sort book on decoded events.

Bybit sends no book checksum, so there is no "with checksum" run: the chain (``u`` + 1) is the
only thing the exchange vouches a book with, and it costs one comparison per delta.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

from book import FIX, check, decoded_prefix, fold_against_naive, replay  # noqa: E402

from engine import num  # noqa: E402
from engine.codecs.bybit import book_frame  # noqa: E402
from engine.codecs.registry import get_codec  # noqa: E402
from engine.events import BookSnapshot, DepthDiff  # noqa: E402
from engine.journal.reader import JournalReader  # noqa: E402
from engine.journal.writer import JournalWriter  # noqa: E402

SOURCE = FIX.parent / "bybit" / "legacy-journal"
EXCHANGE = "bybit-inverse"
URL = "wss://stream.bybit.com/v5/public/inverse"
DEPTH = 50
_U = re.compile(rb'"u":(\d+)')


def _decimals(values: list[int]) -> int:
    """The fewest decimals that render every value exactly."""
    for d in range(num.SCALE + 1):
        if all(v % 10 ** (num.SCALE - d) == 0 for v in values):
            return d
    return num.SCALE


def load() -> SimpleNamespace:
    """The legacy capture's book events, renumbered as v5 (``u`` from 1 per symbol)."""
    reader = JournalReader(SOURCE)
    codec = get_codec(reader.metadata["exchange"])
    snaps: dict[str, BookSnapshot] = {}
    deltas: list[DepthDiff] = []
    u: dict[str, int] = {}
    legacy_id: dict[str, int] = {}  # the legacy snapshot's cross_seq: older deltas are stale
    for f in reader.frames():
        if f.dir != "in":
            continue
        for ev in codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload):
            if type(ev) is BookSnapshot and ev.symbol not in snaps:
                u[ev.symbol] = 1
                legacy_id[ev.symbol] = ev.last_id
                snaps[ev.symbol] = BookSnapshot(0, ev.recv_ns, ev.symbol, 1, ev.bids, ev.asks,
                                                DEPTH, "stream", ev.exch_ms)  # fmt: skip
            elif type(ev) is DepthDiff and ev.symbol in snaps:
                if ev.last_id <= legacy_id[ev.symbol]:
                    continue
                u[ev.symbol] += 1
                n = u[ev.symbol]
                deltas.append(DepthDiff(0, ev.recv_ns, ev.symbol, n, n, None, ev.exch_ms, None,
                                        ev.bids, ev.asks))  # fmt: skip
    dec = {}
    for sym, s in snaps.items():
        mine = [s] + [d for d in deltas if d.symbol == sym]
        px = [p for e in mine for p, _ in e.bids + e.asks]
        qty = [q for e in mine for _, q in e.bids + e.asks]
        dec[sym] = (_decimals(px), _decimals(qty))
    shift = {sym: n - 1 for sym, n in u.items()}  # a pass's deltas: u = 2 .. n
    return SimpleNamespace(snaps=snaps, deltas=deltas, dec=dec, shift=shift)


def expected(cap: SimpleNamespace, n: int) -> dict[str, tuple[int, dict[int, int], dict[int, int]]]:
    """symbol → (u, bids, asks) after the snapshots and ``n`` repeated delta frames."""
    books = {s: (e.last_id, dict(e.bids), dict(e.asks)) for s, e in cap.snaps.items()}
    per = len(cap.deltas)
    for i in range(n):
        k, j = divmod(i, per)
        ev = cap.deltas[j]
        _, bids, asks = books[ev.symbol]
        for side, levels in ((bids, ev.bids), (asks, ev.asks)):
            for p, q in levels:
                if q:
                    side[p] = q
                else:
                    side.pop(p, None)
        books[ev.symbol] = (ev.last_id + k * cap.shift[ev.symbol], bids, asks)
    return books


def build(path: Path, cap: SimpleNamespace, n: int) -> int:
    """Write the benchmark journal; returns the level updates in its ``n`` delta frames."""
    templates = []
    for ev in cap.deltas:
        frame = book_frame(ev, DEPTH, *cap.dec[ev.symbol])
        templates.append((ev, _U.sub(rb'"u":%d', frame.replace(b"%", b"%%"))))
    span = cap.deltas[-1].recv_ns - cap.deltas[0].recv_ns + 100_000_000
    levels = 0
    with JournalWriter.create(path, {"exchange": EXCHANGE, "symbols": sorted(cap.snaps)}) as w:
        t = cap.deltas[0].recv_ns - 1
        for ev in cap.snaps.values():
            w.append(t, 1, "in", "text", URL, book_frame(ev, DEPTH, *cap.dec[ev.symbol]))
        per = len(templates)
        for i in range(n):
            k, j = divmod(i, per)
            ev, tpl = templates[j]
            t = ev.recv_ns + k * span
            levels += len(ev.bids) + len(ev.asks)
            w.append(t, 1, "in", "text", URL, tpl % (ev.last_id + k * cap.shift[ev.symbol]))
        for sym, (u, bids, asks) in sorted(expected(cap, n).items()):
            snap = BookSnapshot(0, t + 1, sym, u, sorted(bids.items(), reverse=True),
                                sorted(asks.items()), DEPTH, "stream")  # fmt: skip
            w.append(t + 1, 1, "in", "text", URL, book_frame(snap, DEPTH, *cap.dec[sym]))
    return levels


def bench_bybit(frames: int, repeat: int, naive_frames: int) -> None:
    cap = load()
    tmp = Path(tempfile.mkdtemp(prefix="wiretape-bench-bybit-"))
    try:
        path = tmp / "journal"
        t0 = time.perf_counter()
        levels = build(path, cap, frames)
        print(f"bybit (v5 frames of real 2021 Bybit book updates, {EXCHANGE}): "
              f"{len(cap.deltas)} deltas × {frames / len(cap.deltas):.0f} = {frames:,} frames, "
              f"{levels / frames:.2f} levels/frame, {len(cap.snaps)} symbols "
              f"(journal built in {time.perf_counter() - t0:.1f} s)")  # fmt: skip
        cpu, wall = [], []
        summary = ""
        for _ in range(repeat):
            c, w, p, outs = replay(path)
            # the closing frames are snapshots, not diffs: the check counts frames as diffs
            summary = check(p, outs, SimpleNamespace(shift=cap.shift), frames)
            cpu.append(c)
            wall.append(w)
        el = statistics.median(cpu)
        print(f"  replay (journal → codec → BookReducer): {frames / el:>10,.0f} frames/s "
              f"{levels / el:>12,.0f} level updates/s  (CPU, median of {repeat}; wall "
              f"{frames / statistics.median(wall):,.0f} frames/s)")  # fmt: skip
        print(f"    {summary}")
        events = decoded_prefix(path, min(naive_frames, frames) + len(cap.snaps))
        nd, ours, naive = fold_against_naive(events, get_codec(EXCHANGE).sync_rule, repeat)
        print(f"  fold only, {nd:,} decoded deltas: BookReducer {nd / ours:>10,.0f} frames/s, "
              f"naive dict+sort {nd / naive:>10,.0f} frames/s → {naive / ours:.1f}× the naive "
              "(books equal)")  # fmt: skip
        print("  checksum: Bybit v5 sends none (the u + 1 chain is the exchange's only check); "
              "checksum cost / fold: n/a")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--naive-frames", type=int, default=50_000)
    args = ap.parse_args(argv)
    bench_bybit(args.frames, args.repeat, args.naive_frames)


if __name__ == "__main__":
    main()
