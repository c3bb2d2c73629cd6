"""The one pipeline: journaled frame → codec → every reducer → outputs.

``engine run`` feeds it each frame right after the journal accepted it (with
the seq the journal gave); ``engine replay`` feeds it the journal's record
batches.  Nothing else differs, so live outputs and replay outputs of one
journal are identical (``engine replay --check`` proves it).

::

    frame ──► events_of() ──► event ──► reducer 1 ──► outputs ─┐
      (in: codec.decode;         │   └──► reducer 2 ──► outputs ─┼──► [(seq, output), ...]
       local: connection          └──────► reducer N ──► outputs ─┘
       events; out: ControlSent)

Every event goes to every reducer in order; each reducer ignores what does
not concern it.  Adjacent trade consumers (aggregator, tape, candles, anomaly
detector) are folded as one stage that looks each trade's symbol up and
applies the shared selection rule once for all of them
(:class:`engine.tradefan.TradeFan`); ``fuse=False`` folds them one by one,
with identical outputs and states (tested).  The pipeline owns reducer *states* (the reducers are
immutable configurations) and can snapshot/restore them all (time travel).

This module must stay free of I/O and clocks: it is part of the fold.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import pyarrow as pa

from engine import tradefan
from engine.events import (
    ConnectionClosed,
    ConnectionFailed,
    ConnectionOpened,
    ControlSent,
    DecodeError,
    Marker,
)
from engine.journal.schema import Dir, Kind
from engine.reducer import Reducer

__all__ = ["Pipeline", "Counters", "SNAPSHOT_VERSION"]

SNAPSHOT_VERSION = 1
_DECODED_KINDS = frozenset({Kind.TEXT, Kind.BINARY, Kind.REST})


@attrs.define
class Counters:
    """What went through the pipeline (part of its snapshot)."""

    frames: int = 0
    events: int = 0
    decode_errors: int = 0
    outputs: int = 0
    last_seq: int = 0
    last_recv_ns: int = 0


class Pipeline:
    """Fold frames through a codec and reducers.

    Args:
        codec: the exchange codec (see :mod:`engine.codecs.base`).
        reducers: reducer configurations; names must be unique.
        fuse: fold adjacent trade consumers as one stage (module docstring).
        native: that stage's optional C common case: None = when built, False = never
            (tests compare both).
    """

    def __init__(
        self,
        codec: Any,
        reducers: Sequence[Reducer[Any]],
        *,
        fuse: bool = True,
        native: bool | None = None,
    ) -> None:
        names = [r.name for r in reducers]
        if len(set(names)) != len(names):
            raise ValueError(f"reducer names must be unique, got {names}")
        self.codec = codec
        self.reducers: list[Reducer[Any]] = list(reducers)
        self.states: list[Any] = [r.initial() for r in self.reducers]
        self.counters = Counters()
        #: the fold's stages (engine.tradefan.plan); they hold ``self.states``, so
        #: it is only ever updated in place
        self._stages = tradefan.plan(self.reducers, self.states, fuse, native)

    # ------------------------------------------------------------------ queries

    def state(self, name: str) -> Any:
        """The current state of the reducer called ``name``."""
        for r, s in zip(self.reducers, self.states, strict=True):
            if r.name == name:
                return s
        raise KeyError(f"no reducer named {name!r} (have {[r.name for r in self.reducers]})")

    def reducer(self, name: str) -> Reducer[Any]:
        for r in self.reducers:
            if r.name == name:
                return r
        raise KeyError(f"no reducer named {name!r}")

    # ------------------------------------------------------------------ folding

    def events_of(
        self,
        seq: int,
        recv_ns: int,
        conn: int,
        dir: str,
        kind: str,
        source: str,
        payload: bytes,
        code: int | None,
    ) -> Sequence[Any]:
        """The typed events of one frame (codec for inbound data, generic for the rest)."""
        if dir == Dir.IN:
            if kind in _DECODED_KINDS:
                return self.codec.decode(seq, recv_ns, kind, source, payload)
            return ()
        if dir == Dir.OUT:
            return (ControlSent(seq, recv_ns, conn, source, payload),)
        text = payload.decode("utf-8", "replace")
        if kind == Kind.OPEN:
            return (ConnectionOpened(seq, recv_ns, conn, source),)
        if kind == Kind.CLOSE:
            return (ConnectionClosed(seq, recv_ns, conn, source, code, text),)
        if kind == Kind.ERROR:
            return (ConnectionFailed(seq, recv_ns, conn, source, text),)
        if kind == Kind.MARKER:
            return (Marker(seq, recv_ns, source, text),)
        return ()

    def feed(
        self,
        seq: int,
        recv_ns: int,
        conn: int,
        dir: str,
        kind: str,
        source: str,
        payload: bytes,
        code: int | None = None,
    ) -> list[tuple[int, Any]]:
        """Fold one journaled frame; returns ``[(seq, output), ...]`` in production order."""
        out: list[tuple[int, Any]] = []
        self._fold(seq, self.events_of(seq, recv_ns, conn, dir, kind, source, payload, code), out)
        c = self.counters
        c.frames += 1
        c.last_seq = seq
        c.last_recv_ns = recv_ns
        return out

    def _fold(self, seq: int, events: Iterable[Any], out: list[tuple[int, Any]]) -> None:
        """Every event of frame ``seq`` through every stage, in order (the one fold loop)."""
        stages = self._stages
        states = self.states
        n_events = n_errors = n_outputs = 0
        for ev in events:
            n_events += 1
            if type(ev) is DecodeError:
                n_errors += 1
            for i, step, stage in stages:
                if stage is None:
                    states[i], outs = step(states[i], ev)
                else:
                    outs = stage(ev)
                if outs:
                    n_outputs += len(outs)
                    out.extend([(seq, o) for o in outs])
        if n_events:
            c = self.counters
            c.events += n_events
            c.decode_errors += n_errors
            c.outputs += n_outputs

    def fold_events(self, seq: int, events: Iterable[Any]) -> list[tuple[int, Any]]:
        """Fold already-decoded ``events`` of frame ``seq`` (benchmarks, tests): no frame counted."""
        out: list[tuple[int, Any]] = []
        self._fold(seq, events, out)
        return out

    def feed_batch(self, batch: pa.RecordBatch) -> list[tuple[int, Any]]:
        """Fold every frame of a journal record batch (the replay path).

        The same fold as :meth:`feed` frame by frame (a test pins that), written
        for speed: dictionary columns are read as indices into their (tiny)
        dictionaries and inbound data frames go straight to the codec; every
        frame's events go through the one fold loop (:meth:`_fold`).
        """
        out: list[tuple[int, Any]] = []
        n = batch.num_rows
        if not n:
            return out
        seqs = batch.column(0).to_pylist()
        recvs = batch.column(1).to_pylist()
        dir_col, kind_col, src_col = batch.column(3), batch.column(4), batch.column(5)
        dir_names = dir_col.dictionary.to_pylist()
        kind_names = kind_col.dictionary.to_pylist()
        src_names = src_col.dictionary.to_pylist()
        # per dictionary index: does this dir / kind go to the codec?
        dir_in = [d == Dir.IN for d in dir_names]
        kind_dec = [k in _DECODED_KINDS for k in kind_names]
        dirs = dir_col.indices.to_pylist()
        kinds = kind_col.indices.to_pylist()
        sources = src_col.indices.to_pylist()
        payloads = batch.column(7).to_pylist()
        conns: list[Any] | None = None
        codes: list[Any] | None = None
        decode = self.codec.decode
        fold = self._fold
        for i in range(n):
            seq = seqs[i]
            d = dirs[i]
            k = kinds[i]
            if dir_in[d] and kind_dec[k]:
                events = decode(seq, recvs[i], kind_names[k], src_names[sources[i]], payloads[i])
            else:
                if conns is None:
                    conns = batch.column(2).to_pylist()
                    codes = batch.column(6).to_pylist()
                events = self.events_of(
                    seq,
                    recvs[i],
                    conns[i],
                    dir_names[d],
                    kind_names[k],
                    src_names[sources[i]],
                    payloads[i],
                    codes[i],  # type: ignore[index]
                )
            fold(seq, events, out)
        c = self.counters
        c.frames += n
        c.last_seq = seqs[-1]
        c.last_recv_ns = recvs[-1]
        return out

    # ------------------------------------------------------------------ snapshot / restore

    def snapshot(self) -> dict[str, Any]:
        """Every reducer's state and the counters, as plain data (JSON-safe via engine.serde)."""
        return {
            "version": SNAPSHOT_VERSION,
            "codec": getattr(self.codec, "name", None),
            "counters": attrs.asdict(self.counters),
            "reducers": {
                r.name: r.snapshot(s) for r, s in zip(self.reducers, self.states, strict=True)
            },
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Load a :meth:`snapshot`; the next frame fed must be the one after ``counters.last_seq``."""
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported pipeline snapshot version {data.get('version')!r}")
        saved = data["reducers"]
        missing = [r.name for r in self.reducers if r.name not in saved]
        if missing:
            raise ValueError(f"snapshot has no state for reducers {missing}")
        self.states[:] = [r.restore(saved[r.name]) for r in self.reducers]
        for _, fan, stage in self._stages:
            if stage is not None:
                fan.reset()
        self.counters = Counters(**data["counters"])
