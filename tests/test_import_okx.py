"""OKX captures in Tardis's format import and replay to the same books as the cryptofeed import.

We have no Tardis download we may ship, so the test writes one from the real
cryptofeed OKX capture (fixtures/raw/OKX.ws.1.0) in Tardis's documented
one-message-per-line format (``<ISO-8601 UTC time> <raw message>``, as Tardis
records OKX's ``books``/``trades`` frames: OKX snapshots are in-stream, so no
generated REST message is needed), with one empty line (a disconnect) in
the middle of the trades-only prelude.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.journal.reader import JournalReader
from engine.replay.replay import Replay, book_summary, symbols_of
from engine.timefmt import format_ns, parse_epoch_s

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT / "fixtures" / "raw" / "OKX.ws.1.0"
FIXTURE = ROOT / "fixtures" / "journals" / "okx"


def books(journal: Path) -> dict[str, dict]:
    r = Replay(journal, use_checkpoints=False)
    for _ in r.outputs():
        pass
    return {s: book_summary(r.pipeline, s, 10) for s in symbols_of(r.pipeline)}


def test_tardis_okx_import_replays_to_the_same_verified_books(tmp_path):
    lines = []
    for raw in RAW.read_text().splitlines():
        head, sep, body = raw.partition(": ")
        if sep and " " not in head:  # a received frame
            lines.append(f"{format_ns(parse_epoch_s(head), 7)} {body}")
    src = tmp_path / "okex.tardis.txt"
    src.write_text("\n".join(lines[:5] + [""] + lines[5:]) + "\n")
    p = subprocess.run(
        [sys.executable, "-m", "engine.cli", "import", "tardis", str(src),
         "--exchange", "okx", "--out", str(tmp_path / "j")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert JournalReader(tmp_path / "j").metadata["exchange"] == "okx"
    got, want = books(tmp_path / "j"), books(FIXTURE)
    assert got == want and len(got) == 3
    assert all(b["state"] == "synced" and b["checksum_mismatches"] == 0 for b in got.values())
    assert sum(b["checksums_verified"] for b in got.values()) == 290
