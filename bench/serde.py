"""Output and checkpoint JSON: msgspec (the engine's) against the stdlib encoder it replaced.

    python bench/serde.py [--seconds 120] [--repeat 5]

At 18 decimals nearly every price (anything ≥ 9.3) and every trade notional
(price × qty at 1e-36) is an int wider than 64 bits.  orjson refuses those,
so until this change every outputs-journal record and checkpoint went through
``json.dumps`` behind a ``"bigints": true`` marker.  This script replays a
simulator journal (``tests/helpers/sim_journal``) through the standard
pipeline, keeps its outputs as ``{"frame_seq", "output": serde.dump(o)}``
documents (what ``engine.journal.recorder`` writes), and times, per output:

* write: :func:`engine.serde.dumps_json` vs. the old path (orjson attempt,
  then ``json.dumps`` with the marker), and
* read: :func:`engine.serde.loads_json` vs. ``json.loads``, and the same for
  a checkpoint of the replay's end state,

checking the documents round-trip equal both ways.  One core; compare ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import serde  # noqa: E402
from engine.journal.reader import JournalReader  # noqa: E402
from engine.replay.checkpoints import CheckpointWriter  # noqa: E402
from engine.replay.replay import Replay  # noqa: E402
from tests.helpers.sim_journal import write_sim_journal  # noqa: E402


def old_dumps(doc: dict[str, Any]) -> bytes:
    """The encoder this replaced: orjson, or the stdlib behind the ``bigints`` marker."""
    try:
        return orjson.dumps(doc)
    except TypeError:
        return json.dumps({"bigints": True, **doc}, separators=(",", ":")).encode()


def per_item(fn: Any, items: list[Any], repeat: int) -> float:
    """Median seconds per item of ``fn`` over ``items``."""
    runs = []
    for _ in range(repeat):
        t = time.process_time()
        for x in items:
            fn(x)
        runs.append((time.process_time() - t) / len(items))
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="simulated seconds of market")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        j = write_sim_journal(Path(tmp) / "j", seconds=args.seconds, activity=40.0)
        r = Replay(j, checkpoints=None, use_checkpoints=False)
        docs = [{"frame_seq": seq, "output": serde.dump(o)} for seq, o in r.outputs()]
        ckpt = CheckpointWriter(Path(tmp) / "ckpt", JournalReader(j).metadata).prepare(r.pipeline).doc
    wide = sum(1 for d in docs if b'"bigints"' in old_dumps(d)[:16])
    new_raw = [serde.dumps_json(d) for d in docs]
    old_raw = [old_dumps(d) for d in docs]
    assert all(serde.loads_json(r) == d for r, d in zip(new_raw, docs, strict=True))
    assert all(serde.loads_json(r) == d for r, d in zip(old_raw, docs, strict=True))
    print(f"outputs  {len(docs):,} documents, {wide:,} ({wide / len(docs):.0%}) with ints over 64 bits")
    w_new = per_item(serde.dumps_json, docs, args.repeat)
    w_old = per_item(old_dumps, docs, args.repeat)
    r_new = per_item(serde.loads_json, new_raw, args.repeat)
    r_old = per_item(json.loads, old_raw, args.repeat)
    print(f"write    msgspec {w_new * 1e6:6.2f} µs, stdlib {w_old * 1e6:6.2f} µs  ({w_old / w_new:.1f}x)")
    print(f"read     msgspec {r_new * 1e6:6.2f} µs, stdlib {r_old * 1e6:6.2f} µs  ({r_old / r_new:.1f}x)")
    raw = serde.dumps_json(ckpt)
    assert serde.loads_json(raw) == serde.loads_json(old_dumps(ckpt))
    c_new = per_item(serde.dumps_json, [ckpt] * 20, args.repeat)
    c_old = per_item(old_dumps, [ckpt] * 20, args.repeat)
    l_new = per_item(serde.loads_json, [raw] * 20, args.repeat)
    l_old = per_item(json.loads, [old_dumps(ckpt)] * 20, args.repeat)
    print(f"checkpoint of the end state ({len(raw):,} bytes): write {c_old / c_new:.1f}x, "
          f"read {l_old / l_new:.1f}x faster ({c_new * 1e3:.2f} / {l_new * 1e3:.2f} ms)")


if __name__ == "__main__":
    main()
