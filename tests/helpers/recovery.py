"""One check for fault captures: every break of a book was detected and recovered from.

A capture with injected faults stops at its duration, whenever that falls:
the last fault's resync can still be in flight then (a resubscribe sent, its
snapshot not yet in), so a capture's *final* book state says nothing.  The
claim is made per break, from the outputs the capture recorded live
(``<journal>/outputs``; ``replay --check`` proves replay computes the same):

* a break is ``GapDetected``, ``ChecksumMismatch`` or ``BookWithdrawn`` (the
  book is not published from then on);
* it is recovered by that symbol's next ``BookSynced`` (a fresh snapshot,
  ``resync`` true), or, for a book withdrawn but ``kept`` (Binance), by its
  ``BookResumed``; a ``BookResumed`` of a book lost by a gap or a mismatch is
  a book published without a snapshot: a failure;
* the one break a capture may end in, still being recovered, must have had
  its resync asked for (a ``SnapshotRequest`` of purpose ``sync`` for the
  symbol; for a withdrawn book, another connection: one already open, a
  rotation's, or the reconnect's new one, unless the capture stopped before
  the reconnect was due: nothing but local frames, its stop, after the
  close), and the book must be unpublished at the journal's end (the journal
  replayed to its last frame: no book without a fresh snapshot).

Must not: look at times (a loaded machine shifts every one of them) or at the
runtime's internals; it reads the journal only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import engine
from engine import serde
from engine.journal.reader import JournalReader
from engine.journal.recorder import OUTPUTS_DIR, read_outputs
from engine.journal.writer import JournalWriter

BREAKS = ("GapDetected", "ChecksumMismatch", "BookWithdrawn")


class Breaks(NamedTuple):
    """A symbol's breaks: how many, and whether the capture ended while one was being recovered."""

    count: int
    in_flight: bool


def assert_every_break_recovered(
    jdir: Path, symbols: list[str] | tuple[str, ...]
) -> dict[str, Breaks]:
    """Assert the claim above for each of ``symbols``; returns their :class:`Breaks`."""
    outputs = [(seq, o) for seq, o in read_outputs(jdir) if o.get("symbol") in symbols]
    breaks = {}
    pending: dict[str, tuple[int, dict[str, Any]]] = {}
    for sym in symbols:
        mine = [(seq, o) for seq, o in outputs if o["symbol"] == sym]
        assert any(o["type"] == "BookSynced" for _, o in mine), f"{sym}: never synced"
        breaks[sym] = sum(o["type"] in BREAKS for _, o in mine)
        open_break: tuple[int, dict[str, Any]] | None = None
        for seq, o in mine:
            kind = o["type"]
            if kind in BREAKS and open_break is None:
                open_break = (seq, o)
            elif kind == "BookSynced" and open_break is not None:
                assert o["resync"], f"{sym}: the sync at seq {seq} after a break is no resync"
                open_break = None
            elif kind == "BookResumed":
                assert open_break is not None and open_break[1].get("kept"), (
                    f"{sym}: published again at seq {seq} without a snapshot after {open_break}"
                )
                open_break = None
        if open_break is not None:
            pending[sym] = open_break
    _assert_the_end(jdir, symbols, outputs, pending)
    return {s: Breaks(breaks[s], s in pending) for s in symbols}


def _assert_the_end(
    jdir: Path,
    symbols: list[str] | tuple[str, ...],
    outputs: list[tuple[int, dict[str, Any]]],
    pending: dict[str, tuple[int, dict]],
) -> None:
    """The breaks the capture ended in: each resync asked for, each book unpublished at the end
    (and every other book published then, as its outputs say)."""
    j = engine.open(jdir)
    frames = [(f.seq, f.dir, f.kind, f.conn) for f in j.frames()]
    for sym, (at, brk) in pending.items():
        asked = any(
            o["type"] == "SnapshotRequest" and o["purpose"] == "sync" and seq >= at
            for seq, o in outputs
            if o["symbol"] == sym
        )
        if brk["type"] == "BookWithdrawn":  # its connection closed: another one subscribes,
            after = [(d, k) for seq, d, k, _ in frames if seq > at]
            successor = _open_at(frames, at) - {brk["conn"]}  # already open (a rotation),
            asked = asked or bool(successor) or ("local", "open") in after  # or a reconnect,
            # or the capture stopped before the reconnect was due (nothing but local frames after)
            asked = asked or all(d == "local" for d, _ in after)
        assert asked, f"{sym}: the break at seq {at} was never recovered nor resynced: {brk}"
    span = j.span
    assert span is not None
    p = j.state_at(span.last_ns).pipeline
    reducer, books = p.reducer("book"), p.state("book")
    for sym in symbols:
        published = reducer.book(books, sym) is not None  # primed or synced
        if sym in pending:
            at, brk = pending[sym]
            assert not published, (
                f"{sym}: the book is published at the end (seq {span.last_seq}) with no fresh "
                f"snapshot recorded after the break at seq {at}: {brk}"
            )
        else:
            assert published, f"{sym}: unpublished at the end (seq {span.last_seq}), no break"


def _open_at(frames: list[tuple[int, str, str, int]], at: int) -> set[int]:
    """The connections open at frame ``at``: opened before it and not closed by then."""
    live: set[int] = set()
    for seq, d, k, conn in frames:
        if seq >= at:
            break
        if d == "local" and k == "open":
            live.add(conn)
        elif d == "local" and k == "close":
            live.discard(conn)
    return live


def cut_journal(
    src: Path, dst: Path, last_seq: int, outputs_to: int | None = None, without: str = ""
) -> Path:
    """A copy of the journal ``src`` as if its capture had stopped after frame ``last_seq``.

    Its outputs are the recorded ones of frames up to ``outputs_to`` (default ``last_seq``),
    less those of type ``without``: the outputs of a capture that did not (or did not record
    that it did) what the frames show.
    """

    def copy(a: Path, b: Path, keep: Any) -> None:
        r = JournalReader(a)
        w = JournalWriter.create(b, dict(r.metadata))
        for f in r.frames():
            if keep(f):
                w.append(f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
        w.close()

    upto = last_seq if outputs_to is None else outputs_to
    copy(src, dst, lambda f: f.seq <= last_seq)
    copy(src / OUTPUTS_DIR, dst / OUTPUTS_DIR,
         lambda f: f.source != without and serde.loads_json(f.payload)["frame_seq"] <= upto)  # fmt: skip
    return dst
