"""The outputs stream: what the pipeline computed, recorded beside the journal, keyed by frame seq.

``engine run`` records every output it produced live into ``<journal>/outputs/``
so that ``engine replay --check`` can prove replay computes exactly the same.
The outputs stream is itself a journal (same writer, same crash safety): one
frame per output, ``kind=marker``, ``source`` = the output's type name,
``recv_ns`` = the receive time of the frame that caused it, payload = JSON
``{"frame_seq": N, "output": <engine.serde.dump(output)>}``.

Prices and quantities in the outputs are unit ints (:mod:`engine.num`), whose
meaning depends on the engine's number scale, so the outputs journal's
metadata records it (``"number_scale": 18``); outputs recorded before it was
recorded (no key) are at the old scale, 8 (:func:`outputs_scale`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine import num, serde
from engine.journal.location import Where, as_path
from engine.journal.reader import JournalReader
from engine.journal.schema import Dir, Kind
from engine.journal.writer import JournalWriter, WriterConfig

__all__ = ["OUTPUTS_DIR", "OutputRecorder", "read_outputs", "encode_output", "outputs_scale"]

OUTPUTS_DIR = "outputs"
#: the number scale of outputs journals that do not record one (written before it was raised)
LEGACY_SCALE = 8


def encode_output(frame_seq: int, output: Any) -> bytes:
    return serde.dumps_json({"frame_seq": frame_seq, "output": serde.dump(output)})


class OutputRecorder:
    """Append pipeline outputs to ``<journal_dir>/outputs``."""

    def __init__(self, journal_dir: str | Path, config: WriterConfig | None = None) -> None:
        self._w = JournalWriter.create(
            Path(journal_dir) / OUTPUTS_DIR,
            {"content": "pipeline outputs", "number_scale": num.SCALE},
            config,
        )
        self.count = 0

    def record(self, recv_ns: int, outputs: list[tuple[int, Any]]) -> None:
        append = self._w.append
        for frame_seq, out in outputs:
            append(
                recv_ns,
                0,
                Dir.LOCAL,
                Kind.MARKER,
                type(out).__name__,
                encode_output(frame_seq, out),
            )
        self.count += len(outputs)

    def tick(self) -> None:
        self._w.tick()

    def close(self) -> None:
        self._w.close()


def read_outputs(journal_dir: Where) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(frame_seq, dumped_output)`` pairs in recorded order (empty if none were recorded)."""
    path = as_path(journal_dir) / OUTPUTS_DIR
    if not path.exists():
        return
    for batch in JournalReader(path).batches():
        for payload in batch.column(7).to_pylist():
            d = serde.loads_json(payload)
            yield d["frame_seq"], d["output"]


def outputs_scale(journal_dir: Where) -> object:
    """The number scale the outputs of ``journal_dir`` were recorded at (None: no outputs).

    An outputs journal without ``number_scale`` in its metadata was written at
    :data:`LEGACY_SCALE` (8 decimals).
    """
    path = as_path(journal_dir) / OUTPUTS_DIR
    if not path.exists():
        return None
    return JournalReader(path).metadata.get("number_scale", LEGACY_SCALE)
