"""Deterministic replay of a journal: the fold, time travel, the determinism check, the summary.

Owns the library side of ``engine replay`` / ``engine book``: streaming a
journal's record batches through the standard pipeline (built by
:func:`engine.assembly.build_pipeline` from the manifest's exchange, exactly
as ``engine run`` builds it), the prefix rule for "state at time T", output
filtering by report window, comparing replayed outputs with the outputs
recorded live, and turning the final state into a per-symbol summary
(plain data; rendering is the CLI's business).  Must not: print, parse
command lines, or hold more than one record batch of frames at a time.

State depends on history
    ``--from``/``--to`` only choose what is *reported*.  The fold always
    starts at the journal's beginning or at a checkpoint (which is the exact
    state of such a fold), never at ``--from``: a book, a VWAP or a candle at
    ``--from`` is the product of every frame before it.

State "at T"
    The fold of the journal's frames in seq order up to, not including, the
    first frame whose ``recv_ns > T``.  (Receive times are monotonic in a
    capture; if a clock stepped back, the prefix rule still gives one exact,
    reproducible answer.)
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import attrs
import pyarrow as pa
import pyarrow.compute as pc

from engine import serde
from engine.assembly import pipeline_from_manifest
from engine.events import DecodeError
from engine.journal.location import Where, as_path
from engine.journal.reader import JournalReader
from engine.num import SCALE, render
from engine.pipeline import Pipeline
from engine.replay.checkpoints import (
    CheckpointInfo,
    CheckpointPolicy,
    CheckpointWriter,
    restore_nearest,
)
from engine.timefmt import format_ns

__all__ = [
    "CHUNK_ROWS",
    "seq_span",
    "open_journal",
    "pipeline_for",
    "chunks",
    "Replay",
    "DecodeErrorLog",
    "state_at",
    "plain",
    "summarize",
    "symbols_of",
]

#: Record batches are cut to at most this many frames: checkpoint and progress granularity.
CHUNK_ROWS = 4096
_ALERTS_KEPT = 5


# =============================================================== inputs


def seq_span(reader: JournalReader) -> tuple[int, int] | None:
    """``(first_seq, last_seq)`` of a journal, reading its first batch and its last segment only.

    For progress bars: seqs increase by one per frame, so the span estimates
    the frame count without reading the whole journal.  None if it is empty.
    """
    from engine.journal.reader import read_segment

    first = last = None
    for seg in reader.segments:
        for batch in read_segment(seg):
            if batch.num_rows:
                first = batch.column(0)[0].as_py()
                break
        if first is not None:
            break
    if first is None:
        return None
    for seg in reversed(reader.segments):
        for batch in read_segment(seg):
            if batch.num_rows:
                last = batch.column(0)[batch.num_rows - 1].as_py()
        if last is not None:
            return first, last
    return None


def open_journal(journal_dir: Where) -> JournalReader:
    """A reader of the journal (raises :class:`engine.journal.reader.NotAJournal`)."""
    return JournalReader(journal_dir)


def pipeline_for(metadata: dict[str, Any]) -> Pipeline:
    """The pipeline the journal was captured with (manifest ``exchange``, "sim" if absent, and ``pipeline``)."""
    return pipeline_from_manifest(metadata)


def chunks(
    reader: JournalReader,
    after_seq: int = 0,
    until_ns: int | None = None,
    rows: int = CHUNK_ROWS,
) -> Iterator[pa.RecordBatch]:
    """The journal's frames with ``seq > after_seq`` as batches of at most ``rows`` frames.

    Stops before the first frame whose ``recv_ns > until_ns`` (the prefix rule).
    Batches wholly at or before ``after_seq`` are skipped without decoding.
    """
    for batch in reader.batches(after_seq):
        n = batch.num_rows
        if not n:
            continue
        seqs = batch.column(0)
        if seqs[n - 1].as_py() <= after_seq:
            continue
        if seqs[0].as_py() <= after_seq:
            first = pc.index(pc.greater(seqs, after_seq), True).as_py()
            batch = batch.slice(first)
            n = batch.num_rows
        stop = False
        if until_ns is not None:
            late = pc.index(pc.greater(batch.column(1), until_ns), True).as_py()
            if late >= 0:
                batch = batch.slice(0, late)
                n = late
                stop = True
        for i in range(0, n, rows):
            yield batch.slice(i, rows)
        if stop:
            return


# =============================================================== the fold


@attrs.define
class DecodeErrorLog:
    """Decode errors of the report window: how many, and the first ``limit`` (pipeline listener)."""

    start_ns: int | None = None
    limit: int = 20
    count: int = 0
    first: list[dict[str, Any]] = attrs.Factory(list)

    def listen(self, seq: int, events: Any) -> None:
        for ev in events:
            if type(ev) is DecodeError and (self.start_ns is None or ev.recv_ns >= self.start_ns):
                self.count += 1
                if len(self.first) < self.limit:
                    self.first.append(
                        {"seq": ev.seq, "time": format_ns(ev.recv_ns), "recv_ns": ev.recv_ns,
                         "source": ev.source, "reason": ev.reason}
                    )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "listed": len(self.first), "first": self.first}


class Replay:
    """One replay of a journal through the standard pipeline.

    Iterate :meth:`outputs` to run it; afterwards :attr:`pipeline` holds the
    final state.  Memory: one record batch of frames plus the outputs of one
    chunk at a time.

    Args:
        journal_dir: the journal.
        start_ns: first receive time to *report* outputs for; the fold may start at
            the nearest checkpoint before it (``use_checkpoints``), else at the beginning.
        end_ns: stop the fold at this time (state at ``end_ns``, see the module docstring).
        checkpoints: write checkpoints with this policy while folding (None: don't).
        final_checkpoint: with ``checkpoints``, also checkpoint the state the fold ends in.
        use_checkpoints: allow starting from a checkpoint.
        on_chunk: called after each chunk with ``(frames_in_chunk, pipeline)`` (progress).
    """

    def __init__(
        self,
        journal_dir: Where,
        *,
        start_ns: int | None = None,
        end_ns: int | None = None,
        checkpoints: CheckpointPolicy | None = None,
        use_checkpoints: bool = True,
        on_chunk: Callable[[int, Pipeline], None] | None = None,
        final_checkpoint: bool = True,
    ) -> None:
        self.dir = as_path(journal_dir)
        self.reader = open_journal(self.dir)
        self.metadata = self.reader.metadata
        self.pipeline = pipeline_for(self.metadata)
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.restored: CheckpointInfo | None = None
        if use_checkpoints and start_ns is not None:
            self.restored = restore_nearest(self.dir, self.pipeline, self.metadata, start_ns - 1)
        self.writer = (
            CheckpointWriter(self.dir, self.metadata, checkpoints) if checkpoints else None
        )
        self.on_chunk = on_chunk
        self.final_checkpoint = final_checkpoint
        self.frames = 0
        #: the report window's decode errors (seq, source, reason of the first ones)
        self.decode_errors = DecodeErrorLog(start_ns)
        self.pipeline.listeners.append(self.decode_errors.listen)

    def outputs(self) -> Iterator[tuple[int, Any]]:
        """Run the fold; yield ``(frame_seq, output)`` for frames inside the report window."""
        p = self.pipeline
        writer = self.writer
        if writer is not None:
            writer.start(p)
        start = self.start_ns
        after = p.counters.last_seq
        # a frame cadence finer than a chunk needs finer chunks to be honoured
        rows = CHUNK_ROWS if writer is None else min(CHUNK_ROWS, writer.policy.every_frames)
        for batch in chunks(self.reader, after, self.end_ns, rows):
            outs = p.feed_batch(batch)
            self.frames += batch.num_rows
            if writer is not None:
                writer.maybe_checkpoint(p, pc.max(batch.column(1)).as_py())
            if outs:
                if start is None:
                    yield from outs
                else:
                    yield from _in_window(outs, batch, start)
            if self.on_chunk is not None:
                self.on_chunk(batch.num_rows, p)
        if writer is not None and self.final_checkpoint:
            writer.finish(p)  # the end state too: time travel to the very end is instant

    def run(self) -> Pipeline:
        """Fold to the end (or ``end_ns``), discarding outputs; returns the pipeline."""
        for _ in self.outputs():
            pass
        return self.pipeline


def _in_window(
    outs: list[tuple[int, Any]], batch: pa.RecordBatch, start_ns: int
) -> Iterator[tuple[int, Any]]:
    """Outputs whose *frame* was received at or after ``start_ns``."""
    recv = batch.column(1)
    if pc.min(recv).as_py() >= start_ns:
        yield from outs
        return
    recv_of = dict(zip(batch.column(0).to_pylist(), recv.to_pylist(), strict=True))
    for seq, o in outs:
        if recv_of[seq] >= start_ns:
            yield seq, o


def state_at(
    journal_dir: Where,
    at_ns: int,
    *,
    use_checkpoints: bool = True,
    checkpoints: CheckpointPolicy | None = None,
    on_chunk: Callable[[int, Pipeline], None] | None = None,
) -> tuple[Pipeline, CheckpointInfo | None, int]:
    """The pipeline state at ``at_ns``: nearest checkpoint at or before it, then fold forward.

    Returns ``(pipeline, checkpoint used or None, frames folded after it)``.
    Equal, reducer state for reducer state, to a full replay stopped at the
    same time (the tests prove it).
    """
    r = Replay(
        journal_dir,
        end_ns=at_ns,
        checkpoints=checkpoints,
        use_checkpoints=False,
        on_chunk=on_chunk,
        final_checkpoint=False,  # on the cadence only: a query must not litter its T
    )
    if use_checkpoints:
        r.restored = restore_nearest(r.dir, r.pipeline, r.metadata, at_ns)
    r.run()
    return r.pipeline, r.restored, r.frames


# =============================================================== outputs as data


def plain(x: Any) -> Any:
    """A dumped output as the JSON round trip gives it back (tuples → lists), for comparison."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [plain(v) for v in x]
    return x


# =============================================================== summary


@attrs.define
class Tally:
    """What the reported outputs said, per symbol (filled while replaying)."""

    by_type: Counter[str] = attrs.Factory(Counter)
    alerts: deque[dict[str, Any]] = attrs.Factory(lambda: deque(maxlen=_ALERTS_KEPT))
    alert_count: int = 0


def is_alert(output: Any) -> bool:
    """Alerts: the anomaly detector's outputs (module ``engine.anomaly``) or any ``*Alert`` class."""
    cls = type(output)
    return cls.__module__ == "engine.anomaly" or cls.__name__.endswith("Alert")


def tally_output(tallies: dict[str, Tally], output: Any) -> None:
    sym = getattr(output, "symbol", None) or "*"
    t = tallies.get(sym)
    if t is None:
        t = tallies[sym] = Tally()
    t.by_type[type(output).__name__] += 1
    if is_alert(output):
        t.alert_count += 1
        t.alerts.append(plain(serde.dump(output)))


def symbols_of(pipeline: Pipeline) -> list[str]:
    """Every symbol any reducer holds state for, sorted."""
    names: set[str] = set()
    for r in pipeline.reducers:
        syms = getattr(pipeline.state(r.name), "symbols", None)
        if isinstance(syms, dict):
            names.update(syms)
    return sorted(names)


def _units(v: int | None) -> str | None:
    """Exact decimal text of engine units, trailing zeros dropped ("42000.5")."""
    return None if v is None else _trim(render(v, SCALE))


def _half_units(v2: int | None) -> str | None:
    """Exact text of ``v2 / 2`` units (a mid price may fall between two units)."""
    if v2 is None:
        return None
    return _trim(format((Decimal(v2) / 2).scaleb(-SCALE), "f"))


def _trim(s: str) -> str:
    if "." in s:
        s = s.rstrip("0")
        if s.endswith("."):
            s = s[:-1]
    return s


def _ratio(f: Any) -> str | None:
    return None if f is None else f"{float(f):.6f}"


def book_summary(pipeline: Pipeline, symbol: str, depth: int = 5) -> dict[str, Any] | None:
    """Sync state, top of book, spread, mid, imbalance and health counters for one symbol.

    ``state`` is the book's sync state (``BookReducer.sync_state``); ``synced``
    is true only in "synced": a "primed" book (a snapshot no diff has chained
    onto yet) is published, so its levels are here, but it is not synced.
    None: no book reducer.
    """
    try:
        red: Any = pipeline.reducer("book")  # a BookReducer
    except KeyError:
        return None
    state = pipeline.state("book")
    sb = state.symbols.get(symbol)
    book = red.book(state, symbol)
    sync = red.sync_state(state, symbol)
    out: dict[str, Any] = {"state": sync, "synced": sync == "synced"}
    if book is not None:
        bb, ba = book.best_bid(), book.best_ask()
        bids, asks = book.top(depth)
        out.update(
            last_id=book.last_id,
            best_bid=None if bb is None else [_units(bb[0]), _units(bb[1])],
            best_ask=None if ba is None else [_units(ba[0]), _units(ba[1])],
            spread=_units(book.spread()),
            mid=_half_units(book.mid_x2()),
            depth=depth,
            imbalance=_ratio(book.imbalance(depth)),
            bids=[[_units(p), _units(q)] for p, q in bids],
            asks=[[_units(p), _units(q)] for p, q in asks],
            bid_levels=len(book.bids),
            ask_levels=len(book.asks),
        )
    if sb is not None:
        c = sb.counts
        out.update(
            gaps=c.gaps,
            # book health the exchange vouches for (the same counts live and in replay)
            sequence_gaps=c.gaps,
            checksums_verified=c.checksums_verified,
            checksum_mismatches=c.checksum_mismatches,
            resyncs=c.resyncs,
            drift=c.drift,
            syncs=c.syncs,
            # its connection closed: off the air (withdrawn), back by a chaining diff (resumed)
            withdrawn=c.withdrawn,
            resumed=c.resumed,
            crossed=c.crossed,
            diffs_applied=c.diffs_applied,
        )
    return out


def trades_summary(pipeline: Pipeline, symbol: str) -> dict[str, Any] | None:
    """Last price, VWAP, volumes, count (session and rolling windows) for one symbol."""
    from engine.trades import current_stats

    try:
        state = pipeline.state("trades")
    except KeyError:
        return None
    st = current_stats(state, symbol)
    if st is None:
        return None
    return {
        "as_of_ms": st.as_of_ms,
        "last_price": _units(st.last_price),
        "vwap": _units(st.vwap),
        "count": st.count,
        "volume": _units(st.volume),
        "buy_volume": _units(st.buy_volume),
        "sell_volume": _units(st.sell_volume),
        "windows": [
            {"window_s": w.window_ms // 1000, "vwap": _units(w.vwap), "volume": _units(w.volume)}
            for w in st.windows
        ],
    }


def candles_summary(pipeline: Pipeline, symbol: str) -> list[dict[str, Any]] | None:
    """Per interval: the open candle and the latest closed one with its SMA/EMA (None: no candles)."""
    try:
        state = pipeline.state("candles")
    except KeyError:
        return None
    sc = state.symbols.get(symbol)
    if sc is None:
        return []
    out = []
    for ser in sc.series:
        d: dict[str, Any] = {"interval": ser.interval}
        if ser.start >= 0:
            d["open_candle"] = {
                "start_ms": ser.start,
                "open": _units(ser.open),
                "high": _units(ser.high),
                "low": _units(ser.low),
                "close": _units(ser.close),
                "volume": _units(ser.volume),
                "trades": ser.trades,
            }
        if ser.recent:
            c = ser.recent[-1]
            d["last_closed"] = {
                "start_ms": c.start_ms,
                "open": _units(c.open),
                "high": _units(c.high),
                "low": _units(c.low),
                "close": _units(c.close),
                "volume": _units(c.volume),
                "trades": c.trades,
                "sma": {str(p): _units(v) for p, v in c.sma},
                "ema": {str(p): _units(v) for p, v in c.ema},
            }
        out.append(d)
    return out


def summarize(
    pipeline: Pipeline,
    tallies: dict[str, Tally],
    symbols: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    errors: DecodeErrorLog | None = None,
) -> dict[str, Any]:
    """The replay summary as one JSON-safe object: per symbol, plus totals.

    ``decode_errors`` counts every decode error the fold met (a checkpoint's
    too); ``errors`` adds ``decode_error_list``: those of the report window,
    their count and the first ones with seq, time, source and reason.
    """
    c = pipeline.counters
    wanted = [s.upper() for s in symbols] if symbols else symbols_of(pipeline)
    per: dict[str, Any] = {}
    name = getattr(pipeline.codec, "normalized", None)
    for sym in wanted:
        t = tallies.get(sym, Tally())
        per[sym] = {
            # the venue's spelling is the key; the one cross-venue name beside it
            "normalized": sym if name is None else name(sym),
            "trades": trades_summary(pipeline, sym),
            "candles": candles_summary(pipeline, sym),
            "book": book_summary(pipeline, sym),
            "alerts": {"count": t.alert_count, "latest": list(t.alerts)},
            "outputs": dict(sorted(t.by_type.items())),
        }
        for r in pipeline.reducers:  # reducers with their own per-symbol report (trade_ids)
            report = getattr(r, "symbol_summary", None)
            if report is not None:
                per[sym][r.name] = report(pipeline.state(r.name), sym)
    g = tallies.get("*", Tally())
    return {
        **(extra or {}),
        "frames": c.frames,
        "events": c.events,
        "decode_errors": c.decode_errors,
        **({} if errors is None else {"decode_error_list": errors.to_json()}),
        "outputs": c.outputs,
        "last_seq": c.last_seq,
        "last_recv_ns": c.last_recv_ns,
        "other_outputs": dict(sorted(g.by_type.items())),
        "symbols": per,
    }
