"""The one pipeline: journaled frame → codec → trade selection → every reducer → outputs.

``engine run`` feeds it each frame right after the journal accepted it (with
the seq the journal gave); ``engine replay`` feeds it the journal's record
batches.  Both go through the one frame→events dispatch (:func:`decoded`,
:meth:`Pipeline.events_of`) and the one fold loop, so live outputs and replay
outputs of one journal are identical (``engine replay --check`` proves it).

::

    frame ──► events_of() ──► events ──► listeners (seq, events)      (watch only)
      (in: codec.decode;        │
       local: connection        ├─ Trade ──► selection, once per source ──► on_trade(state, trade, t)
       events; out: ControlSent)│                                          of each trade consumer
                                └─ other ──► step(state, event) of every reducer
                                                     └──► outputs ──► [(seq, output), ...]

The fold is event-sourced: one generic loop, one handler per event type.
Every event goes to every reducer, in order, so outputs keep the reducers'
order.  A reducer's handler is ``step(state, event)``; a trade consumer's
handler for a :class:`~engine.events.Trade` is ``on_trade(state, trade, t)``
(:class:`engine.reducer.TradeConsumer`), where ``t`` is what the trade-selection
rule of :mod:`engine.trades` gave the trade.  The pipeline owns that rule's
state once per distinct ``source`` of its consumers (one
:class:`~engine.trades.TradeSelector` each), not once per consumer, and
selects each trade once per source, before any consumer sees it.

Connections: before a decoded frame whose journal ``conn`` differs from the
previous decoded frame's, every reducer gets a :class:`~engine.events.FrameConn`
(the book follows one connection per symbol: :mod:`engine.book_reducer`).

The pipeline owns reducer *states* (the reducers are immutable
configurations) and the selection states, and can snapshot/restore them all
(time travel, checkpoints).

Listeners: ``Pipeline(..., listeners=[f])`` or ``pipeline.listeners.append(f)``
calls ``f(seq, events)`` with the decoded events of every frame, before the
reducers fold them (frames that decode to nothing are not reported).  A
listener watches: it must not mutate the events (frozen anyway), the pipeline
or its states, and an exception it raises propagates out of ``feed``.  This is
how consumers other than reducers see events (``engine export`` keeps trades
and depth diffs this way); nothing wraps or replaces the codec.

This module must stay free of I/O and clocks: it is part of the fold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import pyarrow as pa

from engine.events import (
    ConnectionClosed,
    ConnectionFailed,
    ConnectionOpened,
    ControlSent,
    DecodeError,
    FrameConn,
    Marker,
    Trade,
)
from engine.journal.schema import Col, Dir, Kind
from engine.reducer import Reducer, TradeConsumer
from engine.trades import SelectState, TradeSelector

__all__ = ["Pipeline", "Counters", "SNAPSHOT_VERSION", "Listener", "decoded"]

#: 2: the trade-selection state moved from each consumer's state to the pipeline's
#: 3: prices and quantities in units of 1e-18 (engine.num.SCALE 18), no longer 1e-8
#: 4: a book's applied diffs counted as verified or untested (engine.book_reducer.BookCounts)
SNAPSHOT_VERSION = 4
_DECODED_KINDS = frozenset({Kind.TEXT, Kind.BINARY, Kind.REST})

#: ``f(seq, events)``: sees every frame's decoded events (module docstring)
Listener = Callable[[int, Sequence[Any]], None]


def decoded(dir: str, kind: str) -> bool:
    """Does a frame of this direction and kind go to the codec? (The one dispatch rule.)"""
    return dir == Dir.IN and kind in _DECODED_KINDS


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
    """Fold frames through a codec, the trade selection and reducers.

    Args:
        codec: the exchange codec (see :mod:`engine.codecs.base`).
        reducers: reducer configurations; names must be unique.
        listeners: called with ``(seq, events)`` for every frame (module docstring).
    """

    def __init__(
        self,
        codec: Any,
        reducers: Sequence[Reducer[Any]],
        *,
        listeners: Iterable[Listener] = (),
    ) -> None:
        names = [r.name for r in reducers]
        if len(set(names)) != len(names):
            raise ValueError(f"reducer names must be unique, got {names}")
        self.codec = codec
        self.reducers: list[Reducer[Any]] = list(reducers)
        self.states: list[Any] = [r.initial() for r in self.reducers]
        self.counters = Counters()
        #: the connection of the last decoded frame (None: unknown, after a restore)
        self._conn: int | None = None
        self.listeners: list[Listener] = list(listeners)
        #: one selector per distinct source of the trade consumers, in order of first use
        self.selectors: list[TradeSelector] = []
        #: per reducer: the index of its selector, or -1 (not a trade consumer)
        by_source: dict[str, int] = {}
        sel_of: list[int] = []
        for r in self.reducers:
            if isinstance(r, TradeConsumer):
                k = by_source.get(r.source)
                if k is None:
                    k = by_source[r.source] = len(self.selectors)
                    self.selectors.append(TradeSelector(r.source))  # type: ignore[arg-type]
                sel_of.append(k)
            else:
                sel_of.append(-1)
        self.selections: list[SelectState] = [s.initial() for s in self.selectors]
        #: (select, its state) per selector, rebuilt whenever ``selections`` changes
        self._selects: list[tuple[Callable[[SelectState, Trade], int | None], SelectState]] = []
        self._bind()
        # the handlers: every reducer's step; for trades, on_trade of the consumers
        self._steps = [(i, r.step) for i, r in enumerate(self.reducers)]
        self._trade_steps: list[tuple[int, Any, int]] = [
            (i, r.on_trade if k >= 0 else r.step, k)  # type: ignore[attr-defined]
            for (i, r), k in zip(enumerate(self.reducers), sel_of, strict=True)
        ]

    def _bind(self) -> None:
        self._selects = [
            (s.select, st) for s, st in zip(self.selectors, self.selections, strict=True)
        ]

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

    def selection(self, source: str = "auto") -> SelectState:
        """The trade-selection state for consumers with ``source`` (counts of trades set aside)."""
        for sel, st in zip(self.selectors, self.selections, strict=True):
            if sel.source == source:
                return st
        raise KeyError(f"no trade consumer with source {source!r}")

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
        if decoded(dir, kind):
            return self.codec.decode(seq, recv_ns, kind, source, payload)
        if dir == Dir.IN:
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
        if conn != self._conn and decoded(dir, kind):
            self._via(seq, recv_ns, conn, out)
        self._fold(seq, self.events_of(seq, recv_ns, conn, dir, kind, source, payload, code), out)
        c = self.counters
        c.frames += 1
        c.last_seq = seq
        c.last_recv_ns = recv_ns
        return out

    def _via(self, seq: int, recv_ns: int, conn: int, out: list[tuple[int, Any]]) -> None:
        """Decoded frames now come over ``conn``: a :class:`FrameConn` to every reducer
        (not counted as an event, not shown to listeners: the journal's, not the exchange's)."""
        self._conn = conn
        ev = FrameConn(seq, recv_ns, conn)
        states = self.states
        for i, step in self._steps:
            states[i], outs = step(states[i], ev)
            if outs:
                out.extend([(seq, o) for o in outs])

    def _fold(self, seq: int, events: Sequence[Any], out: list[tuple[int, Any]]) -> None:
        """Every event of frame ``seq`` through its handlers, in order (the one fold loop)."""
        if not events:
            return
        for listen in self.listeners:
            listen(seq, events)
        states = self.states
        n_events = n_errors = n_outputs = 0
        for ev in events:
            n_events += 1
            tp = type(ev)
            if tp is Trade:
                # the selection stage: the rule once per source, then each handler
                selects = self._selects
                if len(selects) == 1:  # the common case: every consumer has the same source
                    select, st = selects[0]
                    t = select(st, ev)
                    ts = None
                else:
                    ts = [select(st, ev) for select, st in selects]
                for i, handle, k in self._trade_steps:
                    if k < 0:
                        states[i], outs = handle(states[i], ev)
                    else:
                        states[i], outs = handle(states[i], ev, t if ts is None else ts[k])
                    if outs:
                        n_outputs += len(outs)
                        out.extend([(seq, o) for o in outs])
                continue
            if tp is DecodeError:
                n_errors += 1
            for i, step in self._steps:
                states[i], outs = step(states[i], ev)
                if outs:
                    n_outputs += len(outs)
                    out.extend([(seq, o) for o in outs])
        c = self.counters
        c.events += n_events
        c.decode_errors += n_errors
        c.outputs += n_outputs

    def fold_events(self, seq: int, events: Sequence[Any]) -> list[tuple[int, Any]]:
        """Fold already-decoded ``events`` of frame ``seq`` (benchmarks, tests): no frame counted."""
        out: list[tuple[int, Any]] = []
        self._fold(seq, events, out)
        return out

    def feed_batch(self, batch: pa.RecordBatch) -> list[tuple[int, Any]]:
        """Fold every frame of a journal record batch (the replay path).

        The same fold as :meth:`feed` frame by frame (a test pins that):
        dictionary columns are read once per batch as indices into their
        (tiny) dictionaries, and :func:`decoded` is asked once per (dir, kind)
        pair of those dictionaries instead of once per frame.
        """
        out: list[tuple[int, Any]] = []
        n = batch.num_rows
        if not n:
            return out
        seqs = batch.column(Col.SEQ).to_pylist()
        recvs = batch.column(Col.RECV_NS).to_pylist()
        dir_col, kind_col = batch.column(Col.DIR), batch.column(Col.KIND)
        src_col = batch.column(Col.SOURCE)
        dir_names = dir_col.dictionary.to_pylist()
        kind_names = kind_col.dictionary.to_pylist()
        src_names = src_col.dictionary.to_pylist()
        to_codec = [[decoded(d, k) for k in kind_names] for d in dir_names]
        dirs = dir_col.indices.to_pylist()
        kinds = kind_col.indices.to_pylist()
        sources = src_col.indices.to_pylist()
        payloads = batch.column(Col.PAYLOAD).to_pylist()
        conns = batch.column(Col.CONN).to_pylist()
        codes: list[Any] = []
        decode = self.codec.decode
        fold = self._fold
        for i in range(n):
            seq = seqs[i]
            d = dirs[i]
            k = kinds[i]
            if to_codec[d][k]:
                if conns[i] != self._conn:
                    self._via(seq, recvs[i], conns[i], out)
                events = decode(seq, recvs[i], kind_names[k], src_names[sources[i]], payloads[i])
            else:
                if not codes:
                    codes = batch.column(Col.CODE).to_pylist()
                events = self.events_of(
                    seq, recvs[i], conns[i], dir_names[d], kind_names[k], src_names[sources[i]],
                    payloads[i], codes[i],
                )  # fmt: skip
            fold(seq, events, out)
        c = self.counters
        c.frames += n
        c.last_seq = seqs[-1]
        c.last_recv_ns = recvs[-1]
        return out

    # ------------------------------------------------------------------ snapshot / restore

    def snapshot(self) -> dict[str, Any]:
        """Every reducer's state, the selection states and the counters, as plain data."""
        return {
            "version": SNAPSHOT_VERSION,
            "codec": getattr(self.codec, "name", None),
            "counters": attrs.asdict(self.counters),
            "selection": {
                s.source: s.snapshot(st)
                for s, st in zip(self.selectors, self.selections, strict=True)
            },
            "reducers": {
                r.name: r.snapshot(s) for r, s in zip(self.reducers, self.states, strict=True)
            },
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Load a :meth:`snapshot`; the next frame fed must be the one after ``counters.last_seq``.

        Raises ValueError (and changes nothing) for another snapshot version or
        a snapshot that lacks a reducer's or a selection's state.
        """
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported pipeline snapshot version {data.get('version')!r}")
        saved = data["reducers"]
        missing = [r.name for r in self.reducers if r.name not in saved]
        chosen = data.get("selection", {})
        missing += [f"selection {s.source!r}" for s in self.selectors if s.source not in chosen]
        if missing:
            raise ValueError(f"snapshot has no state for {missing}")
        states = [r.restore(saved[r.name]) for r in self.reducers]
        selections = [s.restore(chosen[s.source]) for s in self.selectors]
        self.states[:] = states
        self.selections[:] = selections
        self._bind()
        self._conn = None  # the next decoded frame says its connection again
        self.counters = Counters(**data["counters"])
