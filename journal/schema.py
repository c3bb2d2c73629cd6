"""The journal's on-disk schema: one Arrow IPC stream of frames per segment.

A segment is a plain Arrow IPC *stream* (``pyarrow.ipc.open_stream`` and
``polars.read_ipc_stream`` read it without our code) with these columns:

========  =============================  =============================================
column    type                           meaning
========  =============================  =============================================
seq       uint64                         strictly increasing across the whole journal
recv_ns   int64                          local wall-clock receive/emit time, ns
conn      uint32                         connection id (0 = the engine itself)
dir       dictionary<int8, utf8>         ``in`` / ``out`` / ``local``
kind      dictionary<int8, utf8>         see :class:`Kind`
source    dictionary<int32, utf8>        URL or stream key the frame belongs to
code      int32 (nullable)               close code, HTTP status, error code
payload   binary                         the exact bytes (frame, body, reason text)
========  =============================  =============================================

Journal-level metadata (schema version, engine version, exchange, symbols,
config, start time) is in each segment's schema metadata *and* in the
directory's ``journal.json`` manifest, so a lone segment is self-describing.

Integrity (schema version 2; :mod:`engine.journal.integrity` owns the formats):

* the open segment ``seg-NNNNNN.arrows.partial`` is an Arrow IPC **stream**; a
  sealed ``seg-NNNNNN.arrows`` is an Arrow IPC **file** (``pyarrow.ipc.open_file``,
  ``pyarrow.dataset(format="ipc")``, ``polars.read_ipc``/``scan_ipc`` read it)
  whose footer metadata ``wiretape.segment`` holds its index, frame count and
  seq range;
* every record batch carries ``wiretape.crc32c`` (CRC-32C of its content) in
  its IPC custom metadata;
* ``journal.json`` lists every sealed segment's summary under ``segments``.

Version 1 journals (legacy: stream-format sealed segments, no checksums, no
segment list) still read.

This module owns names and types only; no I/O.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pyarrow as pa

__all__ = [
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "Kind",
    "Dir",
    "KINDS",
    "DIRS",
    "Col",
    "Frame",
    "frame_schema",
    "SEGMENT_SUFFIX",
    "PARTIAL_SUFFIX",
    "MANIFEST",
    "STOP_MARKER",
]

SCHEMA_VERSION = 2
#: versions this engine reads (1: legacy, no checksums)
SCHEMA_VERSIONS = (1, 2)
SEGMENT_SUFFIX = ".arrows"
PARTIAL_SUFFIX = ".arrows.partial"
MANIFEST = "journal.json"
#: The text a capture's last frame (a ``marker``) starts with when it stopped cleanly:
#: written by the live runtime, read by ``engine replay --check`` (a journal without it crashed)
STOP_MARKER = "capture stop"


class Kind:
    """Frame kinds (plain strings: they are what users see in Polars/DuckDB)."""

    TEXT = "text"  #: WebSocket text frame
    BINARY = "binary"  #: WebSocket binary frame
    REST = "rest"  #: HTTP response body for GET ``source``; ``code`` = status
    OPEN = "open"  #: connection opened to ``source``
    CLOSE = "close"  #: connection closed; ``code`` = close code, payload = reason
    ERROR = "error"  #: connect failure, timeout, invalid data ...; payload = message
    MARKER = "marker"  #: engine note (resync, drift, seal ...); payload = text


class Dir:
    IN = "in"
    OUT = "out"
    LOCAL = "local"


KINDS: tuple[str, ...] = (
    Kind.TEXT,
    Kind.BINARY,
    Kind.REST,
    Kind.OPEN,
    Kind.CLOSE,
    Kind.ERROR,
    Kind.MARKER,
)
DIRS: tuple[str, ...] = (Dir.IN, Dir.OUT, Dir.LOCAL)


class Col:
    """The segment's column names (``batch.column(Col.PAYLOAD)``), in schema order."""

    SEQ = "seq"
    RECV_NS = "recv_ns"
    CONN = "conn"
    DIR = "dir"
    KIND = "kind"
    SOURCE = "source"
    CODE = "code"
    PAYLOAD = "payload"


@attrs.frozen(slots=True)
class Frame:
    """One journaled frame, for convenience (use record batches for speed)."""

    seq: int
    recv_ns: int
    conn: int
    dir: str
    kind: str
    source: str
    payload: bytes
    code: int | None = None

    @property
    def text(self) -> str:
        """The payload as text (close reasons, error messages, JSON frames)."""
        return self.payload.decode("utf-8", "replace")


def frame_schema(metadata: dict[str, Any] | None = None) -> pa.Schema:
    """The Arrow schema of a segment, with journal metadata JSON-encoded under ``wiretape``."""
    fields = [
        pa.field(Col.SEQ, pa.uint64(), nullable=False),
        pa.field(Col.RECV_NS, pa.int64(), nullable=False),
        pa.field(Col.CONN, pa.uint32(), nullable=False),
        pa.field(Col.DIR, pa.dictionary(pa.int8(), pa.utf8()), nullable=False),
        pa.field(Col.KIND, pa.dictionary(pa.int8(), pa.utf8()), nullable=False),
        pa.field(Col.SOURCE, pa.dictionary(pa.int32(), pa.utf8()), nullable=False),
        pa.field(Col.CODE, pa.int32(), nullable=True),
        pa.field(Col.PAYLOAD, pa.binary(), nullable=False),
    ]
    md = None
    if metadata is not None:
        md = {b"wiretape": json.dumps(metadata, sort_keys=True).encode()}
    return pa.schema(fields, metadata=md)
