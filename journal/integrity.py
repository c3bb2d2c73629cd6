"""Integrity of journal segments: per-batch checksums, structural validation, segment footers.

Where the proofs live (documented for users in the README and in :mod:`.schema`):

* **Every record batch** carries ``wiretape.crc32c`` in its IPC custom metadata
  (``write_batch(batch, custom_metadata=...)``): a CRC-32C over the batch's
  *logical* content — row count, and for every column its length, null count,
  validity bits, values, offsets and dictionary — as the writer built it.  It is
  computed on decoded buffers, so it is independent of compression, and checked
  on read after the batch has been structurally validated.  Plain Arrow readers
  ignore the key.
* **Every sealed segment** is an Arrow IPC *file* whose footer metadata
  ``wiretape.segment`` is a JSON :class:`SegmentSummary` (its index, frame count,
  seq range and receive-time range).  The footer is also the batch index, so a segment truncated at
  any offset (a batch boundary included) no longer has one.
* ``journal.json`` lists the summary of every segment sealed so far under
  ``segments``, so a deleted or emptied segment is noticed even when it was the
  last one; with each sealed file's size (``size``, in bytes), so a segment that a
  seek passes unread is still checked by one stat (or the listing) for
  truncation or replacement.

Validation order (what makes damaged files harmless): ``RecordBatch.validate(full=True)``
first (offsets, indices, lengths: no out-of-bounds read can follow), then the
checksum, then seq continuity (:mod:`.reader`).  Nothing here converts a
column to Python objects before it has been validated.

This module owns the checksum, the validation and the footer format; it does no I/O.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import attrs
import crc32c as _crc32c
import pyarrow as pa

from engine.journal.schema import frame_schema

__all__ = [
    "CHECKSUM_KEY",
    "FOOTER_KEY",
    "FILE_MAGIC",
    "SegmentSummary",
    "checksum",
    "batch_metadata",
    "check_batch",
    "schema_problem",
]

#: per-batch custom metadata key: 8 hex digits of the batch's CRC-32C
CHECKSUM_KEY = b"wiretape.crc32c"
#: footer metadata key of a sealed segment: JSON :class:`SegmentSummary`
FOOTER_KEY = b"wiretape.segment"
#: first bytes of an Arrow IPC file (a sealed segment); a stream has none
FILE_MAGIC = b"ARROW1"

_crc = _crc32c.crc32c
_HEADER = struct.Struct("<qqq")
_FRAME_FIELDS = [(f.name, f.type) for f in frame_schema()]


@attrs.frozen
class SegmentSummary:
    """What a sealed segment holds: written in its footer and in ``journal.json``."""

    index: int
    frames: int
    first_seq: int | None
    last_seq: int | None
    #: smallest and largest receive time in the segment (None: sealed before they were recorded);
    #: a reader skips a segment outside its time window without opening it
    min_ns: int | None = None
    max_ns: int | None = None
    #: the sealed file's size, in ``journal.json`` only (a footer cannot hold its own file's
    #: size): a reader that passes the segment unread still sees it truncated or replaced.
    #: Not part of equality: the footer's summary equals the manifest's record without it.
    size: int | None = attrs.field(default=None, eq=False)

    def to_json(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        if self.min_ns is None and self.max_ns is None:  # as written before time ranges
            del d["min_ns"], d["max_ns"]
        if self.size is None:  # a footer, or a manifest written before sizes
            del d["size"]
        return d

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True).encode()

    @classmethod
    def from_json(cls, d: Any) -> SegmentSummary:
        """Raises ValueError when ``d`` is not a summary (damaged or foreign footer)."""
        if not isinstance(d, dict):
            raise ValueError(f"not a segment summary: {d!r:.80}")
        try:
            out = cls(
                d["index"],
                d["frames"],
                d["first_seq"],
                d["last_seq"],
                d.get("min_ns"),
                d.get("max_ns"),
                d.get("size"),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a segment summary: {exc}") from None
        if out.size is not None and not (type(out.size) is int and out.size >= 0):
            raise ValueError(f"not a segment size: {d!r:.80}")
        ints = (out.index, out.frames) + ((out.first_seq, out.last_seq) if out.frames else ())
        if not all(type(x) is int and x >= 0 for x in ints):
            raise ValueError(f"not a segment summary: {d!r:.80}")
        times = (out.min_ns, out.max_ns)
        if times != (None, None) and not (
            out.frames
            and all(type(x) is int for x in times)
            and out.min_ns <= out.max_ns  # type: ignore[operator]
        ):
            raise ValueError(f"inconsistent segment time range: {d!r:.80}")
        if out.frames and out.last_seq - out.first_seq + 1 != out.frames:  # type: ignore[operator]
            raise ValueError(f"inconsistent segment summary: {d!r:.80}")
        return out

    @classmethod
    def decode(cls, raw: bytes) -> SegmentSummary:
        try:
            return cls.from_json(json.loads(raw))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"damaged footer summary ({exc})") from None


def _bits(buf: pa.Buffer | None, n: int, crc: int) -> int:
    """CRC of the first ``n`` bits of a bitmap (bits past ``n`` are not content)."""
    if buf is None:
        return _crc(b"-", crc)
    view = memoryview(buf)
    whole, rest = divmod(n, 8)
    crc = _crc(view[:whole], crc)
    if rest and len(view) > whole:
        crc = _crc(bytes([view[whole] & ((1 << rest) - 1)]), crc)
    return crc


def _array(arr: pa.Array, crc: int) -> int:
    n = len(arr)
    if arr.offset:
        raise ValueError("checksum of a sliced array: write fresh (unsliced) batches")
    crc = _crc(_HEADER.pack(n, arr.null_count, 0), crc)
    t = arr.type
    if pa.types.is_dictionary(t):
        validity, indices = arr.buffers()[:2]
        if arr.null_count:
            crc = _bits(validity, n, crc)
        crc = _crc(memoryview(indices)[: n * t.index_type.bit_width // 8], crc)
        return _array(arr.dictionary, crc)
    bufs = arr.buffers()
    if arr.null_count:
        crc = _bits(bufs[0], n, crc)
    if pa.types.is_binary(t) or pa.types.is_string(t):
        offsets = memoryview(bufs[1])[: (n + 1) * 4]
        crc = _crc(offsets, crc)
        if n:
            ends = offsets.cast("i")
            crc = _crc(memoryview(bufs[2])[ends[0] : ends[n]] if bufs[2] is not None else b"", crc)
        return crc
    width = t.bit_width // 8
    return _crc(memoryview(bufs[1])[: n * width], crc)


def checksum(batch: pa.RecordBatch) -> int:
    """CRC-32C of a batch's logical content (see the module docstring)."""
    crc = _crc(_HEADER.pack(batch.num_rows, batch.num_columns, 0))
    for col in batch.columns:
        crc = _array(col, crc)
    return crc


def batch_metadata(batch: pa.RecordBatch) -> dict[bytes, bytes]:
    """The custom metadata the writer attaches to ``batch``."""
    return {CHECKSUM_KEY: b"%08x" % checksum(batch)}


def schema_problem(schema: pa.Schema) -> str | None:
    """Why ``schema`` is not a frame segment's (None if it is one)."""
    try:
        got = [(f.name, f.type) for f in schema]
    except (ValueError, pa.ArrowException) as exc:  # e.g. a field name that is not UTF-8
        return f"not a wiretape segment (unreadable schema: {exc})"
    if got == _FRAME_FIELDS:
        return None
    return "not a wiretape segment (columns " + ", ".join(f"{n}:{t}" for n, t in got)[:200] + ")"


def check_batch(
    batch: pa.RecordBatch, metadata: pa.KeyValueMetadata | None, required: bool
) -> str | None:
    """What is wrong with a batch read from disk (None if sound).

    Structural validation comes first, so a damaged batch is never converted;
    then its checksum (``required``: a batch without one is damage, not legacy).
    """
    try:
        batch.validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowException, ValueError) as exc:
        return f"invalid structure ({str(exc).splitlines()[0][:160]})"
    stored = None if metadata is None else metadata.get(CHECKSUM_KEY)
    if stored is None:
        return "no checksum" if required else None
    try:
        actual = checksum(batch)
    except (ValueError, TypeError, IndexError) as exc:
        return f"unreadable buffers ({exc})"
    if stored != b"%08x" % actual:
        return f"checksum mismatch (stored {stored[:16].decode('ascii', 'replace')}, content {actual:08x})"
    return None
