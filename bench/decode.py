"""Decode throughput: real Binance depth frames → DepthDiff events, per candidate JSON decoder.

Usage:  python bench/decode.py [--frames 1000000] [--repeat 3]

Takes the depth frames of the committed real captures (fixtures/journals/,
spot and USD-M futures), repeats them to ~N frames, and times one core
decoding them all into validated DepthDiff events with:

* ``json``     stdlib json.loads + dict access + engine.num.parse per value
* ``orjson``   orjson.loads + the same conversion
* ``msgspec``  the codec itself (BinanceSpot/BinanceFutures.decode) in pure
               Python: one typed Struct decode of the combined wrapper, then
               engine.num.parse per value behind the codec's price memo (the C
               fast path switched off)
* ``C``        the codec with its optional C fast path (engine._depthscan),
               if the extension is built

Prints frames/s (best of ``--repeat`` runs) and µs/frame.  Target: ≥ 300k
depth frames/s on one core (≥ 400k spot).

Caveat for the ``msgspec`` column: repeating a 30 s capture makes every price
after the first pass a hit of the codec's price memo, which a live stream
only mostly is; treat that column as an upper bound for pure Python.  The
``C`` path does not use the memo.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import orjson

from engine import num
from engine.codecs import binance
from engine.codecs.binance import BinanceFutures, BinanceSpot
from engine.events import DepthDiff
from engine.journal.reader import JournalReader

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "journals"


def depth_frames(journal: str) -> list[tuple[int, int, str, str, bytes]]:
    return [
        (f.seq, f.recv_ns, f.kind, f.source, f.payload)
        for f in JournalReader(FIX / journal).frames()
        if f.kind == "text" and b"depthUpdate" in f.payload
    ]


def _levels(raw: list) -> list[tuple[int, int]]:
    out = []
    for p, q in raw:
        pv, qv = num.parse(p), num.parse(q)
        if pv < 0 or qv < 0:
            raise ValueError("negative")
        out.append((pv, qv))
    return out


def dict_decoder(loads):
    """A straightforward validated decoder on top of a dict-producing JSON parser."""

    def decode(seq, recv_ns, kind, source, payload):
        d = loads(payload)["data"]
        if d["e"] != "depthUpdate":
            raise ValueError("event type")
        ints = [d["E"], d["U"], d["u"]]
        if any(type(x) is not int or x < 0 for x in ints):
            raise ValueError("ids")
        return [
            DepthDiff(
                seq, recv_ns, d["s"], d["U"], d["u"], d.get("pu"), d["E"], d.get("T"),
                _levels(d["b"]), _levels(d["a"]),
            )
        ]  # fmt: skip

    return decode


def run(decode, frames) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for seq, recv_ns, kind, source, payload in frames:
        decode(seq, recv_ns, kind, source, payload)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    scan = binance.scan_depth
    if scan is None:
        print("engine._depthscan is not built: no C column")
    sets = {
        "spot": (depth_frames("binance-spot"), BinanceSpot()),
        "futures": (depth_frames("binance-futures"), BinanceFutures()),
    }
    print(
        f"{'dialect':8} {'decoder':8} {'frames':>9} {'levels/frame':>12} {'frames/s':>10} {'µs/frame':>9}"
    )
    for dialect, (base, codec) in sets.items():
        frames = (base * (args.frames // len(base) + 1))[: args.frames]
        levels = sum(len(e.bids) + len(e.asks) for f in base for e in codec.decode(*f)) / len(base)
        # every candidate must produce the very same events
        ref = [codec.decode(*f) for f in base[:200]]
        decoders = {
            "json": (dict_decoder(json.loads), None),
            "orjson": (dict_decoder(orjson.loads), None),
            "msgspec": (codec.decode, None),
        }
        if scan is not None:
            decoders["C"] = (codec.decode, scan)
        for name, (dec, c_path) in decoders.items():
            binance.scan_depth = c_path
            try:
                assert [dec(*f) for f in base[:200]] == ref, name
                best = min(run(dec, frames) for _ in range(args.repeat))
            finally:
                binance.scan_depth = scan
            print(
                f"{dialect:8} {name:8} {len(frames):>9} {levels:>12.1f} "
                f"{len(frames) / best:>10,.0f} {best / len(frames) * 1e6:>9.2f}"
            )


if __name__ == "__main__":
    main()
