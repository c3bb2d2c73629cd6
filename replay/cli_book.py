"""``engine book``: the order book (and trade/candle state) at an instant, as text or ``--json``.

Owns the command's options and its rendering: an aligned ``price × qty``
ladder, the depth it shows stated, the imbalance over that depth.  Must not
fold or restore state itself (that is :func:`engine.replay.replay.state_at`);
shares the replay command line's options, checks and error rules
(:mod:`engine.replay.cli`) and its summary lines (:mod:`engine.replay.cli_summary`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from engine.cli import DataFailure, UsageFailure
from engine.journal.captureset import holds_journals
from engine.journal.cli import journal_argument, skip_damaged_option
from engine.journal.location import RemotePath, counting_reads
from engine.journal.reader import JournalError
from engine.replay.cli import (
    _TIME,
    TIME,
    _checkpoint_options,
    _fail,
    _open_checked,
    _policy,
    _progress,
    _save,
    _symbols_checked,
)
from engine.replay.cli_parallel import member_for_book
from engine.replay.cli_summary import candle_lines, health_lines, sync_text, trade_lines
from engine.replay.replay import symbols_of
from engine.timefmt import format_ns

__all__ = ["book", "render_book", "ladder"]


@click.command("book")
@journal_argument()
@click.option("--symbol", required=True, help="The symbol, e.g. BTCUSDT.")
@click.option("--at", "at", type=TIME, required=True, help=f"The instant ({_TIME}).")
@click.option(
    "--depth",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Levels per side shown; the imbalance is over these levels too.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_checkpoint_options
@skip_damaged_option
@click.pass_context
def book(
    ctx: click.Context,
    directory: Path | RemotePath,
    symbol: str,
    at: int,
    depth: int,
    as_json: bool,
    save_checkpoints: bool,
    checkpoint_every: float | None,
    checkpoint_frames: int | None,
) -> None:
    """The order book (and trade/candle state) of SYMBOL at an instant.

    Restores the nearest checkpoint at or before --at and folds forward: the
    state after every frame received at or before that time.  Prints the
    instant TIME resolved to; a time outside the journal is an error naming its span.
    """
    from engine.replay.replay import book_summary, candles_summary, state_at, trades_summary

    if holds_journals(directory):  # a capture set or catalog: the member holding the symbol
        directory = member_for_book(directory, symbol, at)
    policy = _policy(directory, _save(ctx, save_checkpoints), checkpoint_every, checkpoint_frames)
    j = _open_checked(directory)
    if "," in symbol:
        raise UsageFailure(f"--symbol takes one symbol, not {symbol!r}")
    sym = (_symbols_checked(j, symbol) or [symbol.strip().upper()])[0]

    def inside() -> None:
        try:
            j.resolve_instant(at, "--at")
        except ValueError as exc:
            raise DataFailure(str(exc)) from None

    span = j.span
    if span is None or at < span.first_ns:
        inside()
    started = time.perf_counter()
    try:
        with _progress(str(directory), "book") as on_chunk, counting_reads() as io:
            pipeline, used, folded = state_at(directory, at, checkpoints=policy, on_chunk=on_chunk)
    except (JournalError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    inside()  # after the last frame: said once the fold proved the journal sound to its end
    elapsed = time.perf_counter() - started
    known = symbols_of(pipeline)
    if sym not in known:
        raise DataFailure(
            f"no state for {sym} in {directory} at {format_ns(at)} (nothing of it received by"
            f" then); symbols with state: {', '.join(known) or 'none'}"
        )
    doc = {
        "symbol": sym,
        "at_ns": at,
        "at": format_ns(at),
        "last_seq": pipeline.counters.last_seq,
        "last_recv_ns": pipeline.counters.last_recv_ns,
        "checkpoint": None
        if used is None
        else {"last_seq": used.last_seq, "max_recv_ns": used.max_recv_ns},
        "frames_folded": folded,
        "elapsed_s": round(elapsed, 3),
        # what the fold read: sealed segments before the checkpoint are passed unread
        "io": io.to_json(),
        "book": book_summary(pipeline, sym, depth),
        "trades": trades_summary(pipeline, sym),
        "candles": candles_summary(pipeline, sym),
    }
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(render_book(doc))


def render_book(doc: dict[str, Any]) -> str:
    """``engine book`` as text: header, an aligned ladder (asks above bids), then the rest.

    Levels are ``price × qty`` as everywhere else (the replay summary, the
    dashboard); the imbalance line names the depth it was taken over.
    """
    ck = doc["checkpoint"]
    src = (
        f"checkpoint at seq {ck['last_seq']} + {doc['frames_folded']} frames"
        if ck
        else f"{doc['frames_folded']} frames from the start"
    )
    lines = [
        f"{doc['symbol']} at {doc['at']} (epoch ns {doc['at_ns']})  (state after seq"
        f" {doc['last_seq']}; {src}; {doc['elapsed_s']:.3f} s)"
    ]
    b = doc["book"]
    if b is None or "last_id" not in b:
        lines.append(f"book {sync_text(b)} at that time: no book" if b else "no book kept")
    else:
        lines.append(
            f"book {sync_text(b)}; top {b['depth']} of {b['bid_levels']} bid /"
            f" {b['ask_levels']} ask levels"
        )
        lines.extend(ladder(b["bids"], b["asks"]))
        lines.append(
            f"spread {b['spread']}  mid {b['mid']}  imbalance (top {b['depth']} levels)"
            f" {b['imbalance']}  update id {b['last_id']}"
        )
    if b is not None:
        lines.extend(health_lines(b))
    lines.extend(trade_lines(doc["trades"]) + candle_lines(doc["candles"]))
    return "\n".join(lines)


def ladder(bids: list[list[str]], asks: list[list[str]]) -> list[str]:
    """Asks (highest first) above bids, ``side  price × qty``, each column aligned on its point."""
    rows = [("ask", p, q) for p, q in reversed(asks)] + [("bid", p, q) for p, q in bids]
    prices = _aligned([p for _, p, _ in rows], "price")
    qtys = _aligned([q for _, _, q in rows], "qty")
    out = [f"       {prices[0]}   {qtys[0]}"]
    out.extend(
        f"  {side}  {p} × {q}"
        for (side, _, _), p, q in zip(rows, prices[1:], qtys[1:], strict=True)
    )
    return out


def _aligned(numbers: list[str], title: str) -> list[str]:
    """``title`` then the decimal texts, padded to one width with their points in one column."""
    parts = [n.partition(".") for n in numbers]
    iw = max([len(i) for i, _, _ in parts] + [1])
    fw = max([len(f) for _, _, f in parts] + [0])
    cells = [
        f"{i:>{iw}}" + (f".{f:<{fw}}" if f else " " * (fw + 1) if fw else "") for i, _, f in parts
    ]
    width = max([len(c) for c in cells] + [len(title)])
    return [f"{title:>{width}}"] + [f"{c:>{width}}" for c in cells]
