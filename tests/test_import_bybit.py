"""`engine import tardis --exchange bybit`: a Tardis-format Bybit v5 recording becomes a journal that
replays with the lost delta found and the book resynced by the later snapshot.

fixtures/bybit/bybit.tardis.txt is hand-made (fixtures/bybit/make_tardis.py, origin in
fixtures/bybit/NOTICE.md): no Tardis download is available here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson

from engine import num
from engine.journal.reader import JournalReader

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "bybit" / "bybit.tardis.txt"
ENGINE = [sys.executable, "-m", "engine.cli"]


def _naive_final_book(path: Path) -> tuple[int, dict[int, int], dict[int, int]]:
    """The book after the file's last snapshot and the deltas after it, by a plain dict fold."""
    u, bids, asks = 0, {}, {}
    for line in path.read_text().splitlines():
        msg = orjson.loads(line.split(" ", 1)[1])
        if not msg["topic"].startswith("orderbook."):
            continue
        d = msg["data"]
        if msg["type"] == "snapshot":
            bids, asks = {}, {}
        for side, key in ((bids, "b"), (asks, "a")):
            for p, q in d[key]:
                side[num.parse(p)] = num.parse(q)
                if not num.parse(q):
                    del side[num.parse(p)]
        u = d["u"]
    return u, bids, asks


def test_a_tardis_bybit_file_imports_and_replays_with_its_gap_resynced(tmp_path):
    out = tmp_path / "j"
    done = subprocess.run(
        [*ENGINE, "import", "tardis", str(FIX), "--exchange", "bybit", "--out", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    frames = list(JournalReader(out).frames())
    assert JournalReader(out).metadata["exchange"] == "bybit"
    assert sum(f.kind == "text" for f in frames) == len(FIX.read_text().splitlines())
    done = subprocess.run(
        [*ENGINE, "replay", str(out), "--json"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    s = json.loads(done.stdout)
    assert s["decode_errors"] == 0
    b = s["symbols"]["BTCUSDT"]["book"]
    assert (b["state"], b["gaps"], b["resyncs"], b["crossed"]) == ("synced", 1, 1, 0)
    u, bids, asks = _naive_final_book(FIX)
    assert b["last_id"] == u
    assert [[num.parse(p), num.parse(q)] for p, q in b["bids"]] == [
        [p, q] for p, q in sorted(bids.items(), reverse=True)
    ][: len(b["bids"])]
    assert s["symbols"]["BTCUSDT"]["trades"]["count"] == 5
