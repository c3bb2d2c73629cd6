"""``engine replay``, ``engine book`` and ``engine export``: the command lines of replay.

Owns parsing, rendering (text or ``--json``), the progress bar (rich, on a
terminal only), exit codes and turning our errors into one-line messages.
Must not: fold, compare or write tables itself — that is
:mod:`engine.replay.replay`, :mod:`engine.replay.export` and
:mod:`engine.replay.server`.

Exit codes: 0 success; 1 ``--check`` found a difference, or any error
(a message, never a traceback); ``--check`` uses 2 when it could not compare
at all (no recorded outputs, unreadable journal), like ``cmp``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from engine.journal.cli import skip_damaged_option
from engine.journal.reader import JournalError
from engine.pipeline import Pipeline
from engine.replay.checkpoints import CheckpointPolicy
from engine.replay.replay import (
    Tally,
    open_journal,
    seq_span,
    symbols_of,
    tally_output,
)
from engine.timefmt import format_ms, format_ns, parse_time

__all__ = ["replay", "book", "export"]


class TimeParam(click.ParamType):
    """A time on the command line → epoch ns (:func:`engine.timefmt.parse_time`)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


TIME = TimeParam()
#: The TIME rule in one line, for option help texts (the full rule: engine.timefmt.ACCEPTED).
_TIME = "TIME: ISO-8601 UTC unless zoned, integer epoch ns, or epoch s with a fraction"


class CheckFailed(click.ClickException):
    """``--check`` could not compare at all (exit 2, unlike a difference's 1)."""

    exit_code = 2


def _csv(value: str | None) -> list[str] | None:
    items = [v.strip().upper() for v in (value or "").split(",") if v.strip()]
    return items or None


def _policy(
    directory: Path, enabled: bool, every_s: float, every_frames: int
) -> CheckpointPolicy | None:
    if not enabled:
        return None
    if directory.is_dir() and not os.access(directory, os.W_OK):
        click.echo(f"note: {directory} is read-only: no checkpoints written", err=True)
        return None
    try:
        return CheckpointPolicy(every_frames=every_frames, every_s=every_s)
    except ValueError as exc:
        raise click.BadParameter(
            str(exc), param_hint="--checkpoint-every/--checkpoint-frames"
        ) from None


def _checkpoint_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The checkpoint flags shared by ``replay`` and ``book``."""
    fn = click.option(
        "--checkpoint-frames",
        type=click.IntRange(min=1),
        default=50_000,
        show_default=True,
        help="...or after this many frames, whichever comes first.",
    )(fn)
    fn = click.option(
        "--checkpoint-every",
        type=click.FloatRange(min=0, min_open=True),
        default=60.0,
        show_default=True,
        help="Write a state checkpoint beside the journal every this many seconds of journal time...",
    )(fn)
    return click.option(
        "--checkpoints/--no-checkpoints",
        default=True,
        show_default=True,
        help="Write checkpoints while folding (they make later --from / engine book fast).",
    )(fn)


@contextmanager
def _progress(journal_dir: str, label: str) -> Iterator[Callable[[int, Pipeline], None] | None]:
    """A rich progress bar on stderr when it is a terminal; else no callback at all."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    span = seq_span(open_journal(journal_dir))
    first = span[0] - 1 if span else 0
    total = span[1] - first if span else None
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("frames"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)

        def advance(_frames: int, pipeline: Pipeline) -> None:
            bar.update(task, completed=max(0, pipeline.counters.last_seq - first))

        yield advance


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


# =============================================================== engine replay


@click.command("replay")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--from", "from_", type=TIME, default=None, help=f"Report from this time ({_TIME}).")
@click.option(
    "--to", "to", type=TIME, default=None, help=f"Stop the replay at this time ({_TIME})."
)
@click.option("--symbols", default=None, help="Comma-separated symbols to report (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write every reported output to FILE (Parquet; .arrow/.feather: Arrow IPC file).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Compare replay with the outputs recorded live; exit 0 if identical, 1 if not.",
)
@click.option(
    "--serve", metavar="HOST:PORT", default=None, help="Serve the journal as an exchange."
)
@click.option(
    "--speed", default="1", show_default=True, help="With --serve: 1, 10, any factor, or max."
)
@_checkpoint_options
@skip_damaged_option
def replay(
    directory: Path,
    from_: int | None,
    to: int | None,
    symbols: str | None,
    as_json: bool,
    out: Path | None,
    check: bool,
    serve: str | None,
    speed: str,
    checkpoints: bool,
    checkpoint_every: float,
    checkpoint_frames: int,
) -> None:
    """Fold a journal through the same pipeline as `engine run` and summarize it per symbol.

    TIME is ISO-8601 (2024-01-01T00:00:05.123456789Z: up to 9 fractional digits, UTC
    unless a zone is given), integer epoch nanoseconds (1704067205123456789), or epoch
    seconds with a fraction (1704067205.123).  --from/--to choose what is reported; state always
    comes from the journal's beginning (or an exact checkpoint).
    """
    modes = [name for name, on in (("--serve", serve is not None), ("--check", check)) if on]
    others = [
        name
        for name, on in (
            ("--from", from_ is not None),
            ("--to", to is not None),
            ("--symbols", symbols is not None),
            ("--json", as_json),
            ("--out", out is not None),
        )
        if on
    ]
    if len(modes) > 1 or (modes and others):
        raise click.UsageError(f"{' and '.join(modes + others)} cannot be combined")
    if serve is not None:
        _serve(directory, serve, speed)
        return
    if check:
        _check(directory)
        return
    if from_ is not None and to is not None and to < from_:
        raise click.BadParameter("--to is before --from", param_hint="--to")
    from engine.replay.export import OutputsWriter
    from engine.replay.replay import Replay, summarize

    wanted = _csv(symbols)
    policy = _policy(directory, checkpoints, checkpoint_every, checkpoint_frames)
    started = time.perf_counter()
    writer = None
    try:
        with _progress(str(directory), "replay") as on_chunk:
            r = Replay(directory, start_ns=from_, end_ns=to, checkpoints=policy, on_chunk=on_chunk)
            if out is not None:
                writer = OutputsWriter(out)
            tallies: dict[str, Tally] = {}
            keep = frozenset(wanted) if wanted else None
            written = 0
            for seq, o in r.outputs():
                sym = getattr(o, "symbol", None)
                if keep is not None and sym is not None and sym not in keep:
                    continue
                tally_output(tallies, o)
                if writer is not None:
                    writer.write(seq, o)
                    written += 1
            if writer is not None:
                writer.close()
                writer = None
    except (JournalError, ValueError, OSError) as exc:
        if writer is not None:
            writer.abort()
        raise _fail(exc) from None
    elapsed = time.perf_counter() - started
    if wanted:
        unknown = sorted(set(wanted) - set(symbols_of(r.pipeline)))
        if unknown:
            click.echo(f"warning: no state for {', '.join(unknown)} in {directory}", err=True)
    extra = {
        "journal": str(directory),
        "exchange": r.metadata.get("exchange"),
        "from_ns": from_,
        "to_ns": to,
        "checkpoint": None
        if r.restored is None
        else {"last_seq": r.restored.last_seq, "max_recv_ns": r.restored.max_recv_ns},
        "frames_folded": r.frames,
        "checkpoints_written": len(r.writer.written) if r.writer is not None else 0,
        "out": None if out is None else {"file": str(out), "outputs": written},
        "elapsed_s": round(elapsed, 3),
    }
    summary = summarize(r.pipeline, tallies, wanted, extra, r.decode_errors)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(render_summary(summary))


def _serve(directory: Path, where: str, speed: str) -> None:
    from engine.replay.server import parse_speed, run_server

    host, sep, port_text = where.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise click.BadParameter(
            f"expected HOST:PORT like 127.0.0.1:9443, not {where!r}", param_hint="--serve"
        )
    try:
        parse_speed(speed)
        open_journal(directory)
        run_server(directory, host.strip("[]"), int(port_text), speed, echo=click.echo)
    except (JournalError, ValueError, OSError) as exc:
        raise _fail(exc) from None


def _check(directory: Path) -> None:
    from engine.journal.recorder import OUTPUTS_DIR
    from engine.replay.check import check_report

    try:
        open_journal(directory)
    except JournalError as exc:
        raise CheckFailed(str(exc)) from None
    if not (directory / OUTPUTS_DIR).is_dir():
        raise CheckFailed(
            f"{directory}: no recorded outputs ({OUTPUTS_DIR}/ is missing); only journals captured"
            " by `engine run` can be checked"
        )
    try:
        with _progress(str(directory), "check") as on_chunk:
            rep = check_report(directory, on_chunk=on_chunk)
    except JournalError as exc:
        raise CheckFailed(str(exc)) from None
    mismatch, compared = rep.mismatch, rep.compared
    if mismatch is None and rep.unmatched_side is None:
        click.echo(f"OK: replay reproduced all {compared} recorded outputs of {directory}")
        return
    if mismatch is None:
        # the capture did not stop cleanly: each journal lost its own unflushed tail
        click.echo(
            f"OK: replay reproduced the {compared} recorded outputs both sides hold of {directory}"
        )
        if rep.unmatched_side == "replayed":
            click.echo(
                f"  the capture did not stop cleanly: recorded outputs end after frame seq"
                f" {_opt(rep.recorded_end)}; the journal goes on to frame seq {rep.replayed_end}"
                f" ({rep.unmatched} replayed outputs not recorded: lost with the recorder's tail)"
            )
        else:
            click.echo(
                f"  the capture did not stop cleanly: the journal ends at frame seq"
                f" {_opt(rep.replayed_end)}; {rep.unmatched} recorded outputs (up to frame seq"
                f" {rep.recorded_end}) are of frames the journal lost with its tail"
            )
        return
    assert mismatch is not None
    click.echo(
        f"DIFFERENT: first difference at frame seq {mismatch.seq} (output #{mismatch.index}, "
        f"after {compared} identical outputs)"
    )
    click.echo(f"  recorded (frame seq {_opt(mismatch.recorded_seq)}): {_js(mismatch.recorded)}")
    click.echo(f"  replayed (frame seq {_opt(mismatch.replayed_seq)}): {_js(mismatch.replayed)}")
    sys.exit(1)


def _opt(v: Any) -> str:
    return "-" if v is None else str(v)


def _js(d: Any) -> str:
    return "(none: that side ended)" if d is None else json.dumps(d, sort_keys=True)


# =============================================================== rendering


def _pair(level: list[str] | None) -> str:
    return "-" if not level else f"{level[1]} @ {level[0]}"


def render_summary(s: dict[str, Any]) -> str:
    """The replay summary as text, one block per symbol."""
    lines = [
        f"journal   {s['journal']}  exchange={s.get('exchange')}",
        f"frames    {s['frames']}  events {s['events']}  decode errors {s['decode_errors']}"
        f"  outputs {s['outputs']}  (last seq {s['last_seq']}"
        + (f", at {format_ns(s['last_recv_ns'])})" if s["frames"] else ")"),
    ]
    window = []
    if s.get("from_ns") is not None:
        window.append(f"from {format_ns(s['from_ns'])}")
    if s.get("to_ns") is not None:
        window.append(f"to {format_ns(s['to_ns'])}")
    if window:
        lines.append("window    " + "  ".join(window))
    ck = s.get("checkpoint")
    if ck:
        lines.append(
            f"restored  checkpoint at seq {ck['last_seq']}, then folded {s['frames_folded']} frames"
        )
    if s.get("out"):
        lines.append(f"wrote     {s['out']['outputs']} outputs to {s['out']['file']}")
    if s.get("other_outputs"):
        lines.append("other     " + _counts(s["other_outputs"]))
    for sym, d in s["symbols"].items():
        lines.append("")
        lines.append(sym)
        lines.extend("  " + x for x in _symbol_lines(d))
    return "\n".join(lines)


def _counts(d: dict[str, int]) -> str:
    return "  ".join(f"{k}={v}" for k, v in d.items()) or "-"


def _symbol_lines(d: dict[str, Any]) -> list[str]:
    out = _trade_lines(d.get("trades")) + _candle_lines(d.get("candles"))
    b = d.get("book")
    if b is not None:
        out.append(f"sync     {_sync_text(b)}")
        if "last_id" in b:  # published: primed or synced
            out.append(
                f"book     bid {_pair(b['best_bid'])}  ask {_pair(b['best_ask'])}  spread"
                f" {b['spread']}  mid {b['mid']}  imbalance {b['imbalance']}"
                f"  levels {b['bid_levels']}/{b['ask_levels']}  update id {b['last_id']}"
            )
        else:
            out.append("book     none")
        out.extend(_health_lines(b))
    alerts = d["alerts"]
    out.append(f"alerts   {alerts['count']}")
    for a in alerts["latest"]:
        out.append(f"         {json.dumps(a, sort_keys=True)}")
    out.append("outputs  " + _counts(d["outputs"]))
    return out


def _sync_text(b: dict[str, Any]) -> str:
    """A book summary's sync state in words (a primed book is published but not yet synced)."""
    if b["state"] == "primed":
        return "primed (the snapshot is the book; no diff has chained onto it yet)"
    return str(b["state"])


def _health_lines(b: dict[str, Any]) -> list[str]:
    if "gaps" not in b:
        return []
    return [
        f"health   gaps {b['gaps']}  resyncs {b['resyncs']}  drift {b['drift']}"
        f"  syncs {b['syncs']}  crossed {b['crossed']}  diffs applied {b['diffs_applied']}"
    ]


def _trade_lines(t: dict[str, Any] | None) -> list[str]:
    if not t:
        return ["trades   -"]
    out = [
        f"trades   last {t['last_price']}  vwap {t['vwap']}  volume {t['volume']}"
        f" (buy {t['buy_volume']} / sell {t['sell_volume']})  count {t['count']}"
    ]
    for w in t["windows"]:
        out.append(f"         {w['window_s']}s window: vwap {w['vwap']}  volume {w['volume']}")
    return out


def _ohlcv(c: dict[str, Any]) -> str:
    start = format_ms(c["start_ms"])[:19]
    return f"{start} O {c['open']} H {c['high']} L {c['low']} C {c['close']} V {c['volume']}"


def _candle_lines(candles: list[dict[str, Any]] | None) -> list[str]:
    out = []
    for c in candles or []:
        lc = c.get("last_closed")
        if lc:
            ma = [f"sma{p} {v}" for p, v in lc["sma"].items()]
            ma += [f"ema{p} {v}" for p, v in lc["ema"].items()]
            line = f"candle   {c['interval']} closed {_ohlcv(lc)}"
            out.append("  ".join([line, *ma]))
        oc = c.get("open_candle")
        if oc:
            out.append(f"candle   {c['interval']} open   {_ohlcv(oc)}")
    return out


# =============================================================== engine book


@click.command("book")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--symbol", required=True, help="The symbol, e.g. BTCUSDT.")
@click.option("--at", "at", type=TIME, required=True, help=f"The instant ({_TIME}).")
@click.option("--depth", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_checkpoint_options
@skip_damaged_option
def book(
    directory: Path,
    symbol: str,
    at: int,
    depth: int,
    as_json: bool,
    checkpoints: bool,
    checkpoint_every: float,
    checkpoint_frames: int,
) -> None:
    """The order book (and trade/candle state) of SYMBOL at an instant.

    Restores the nearest checkpoint at or before --at and folds forward: the
    state after every frame received at or before that time.
    """
    from engine.replay.replay import book_summary, candles_summary, state_at, trades_summary

    sym = symbol.strip().upper()
    policy = _policy(directory, checkpoints, checkpoint_every, checkpoint_frames)
    started = time.perf_counter()
    try:
        with _progress(str(directory), "book") as on_chunk:
            pipeline, used, folded = state_at(directory, at, checkpoints=policy, on_chunk=on_chunk)
    except (JournalError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    elapsed = time.perf_counter() - started
    known = symbols_of(pipeline)
    if sym not in known:
        where = "at that time" if pipeline.counters.frames else "(nothing received by then)"
        raise click.ClickException(
            f"no state for {sym} in {directory} {where}; symbols: {', '.join(known) or 'none'}"
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
        "book": book_summary(pipeline, sym, depth),
        "trades": trades_summary(pipeline, sym),
        "candles": candles_summary(pipeline, sym),
    }
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(render_book(doc))


def render_book(doc: dict[str, Any]) -> str:
    """``engine book`` as text: header, ladder (asks above bids), then the aggregator state."""
    ck = doc["checkpoint"]
    src = (
        f"checkpoint at seq {ck['last_seq']} + {doc['frames_folded']} frames"
        if ck
        else f"{doc['frames_folded']} frames from the start"
    )
    lines = [
        f"{doc['symbol']} at {doc['at']}  (state after seq {doc['last_seq']}; {src};"
        f" {doc['elapsed_s']:.3f} s)"
    ]
    b = doc["book"]
    if b is None or "last_id" not in b:
        lines.append(f"book {_sync_text(b)} at that time: no book" if b else "no book kept")
    else:
        lines.append(f"book {_sync_text(b)}")
        w = max([len(p) for p, _ in b["bids"] + b["asks"]] + [5])
        lines.append(f"  {'price':>{w}}  qty")
        for p, q in reversed(b["asks"]):
            lines.append(f"  {p:>{w}}  {q}   ask")
        lines.append(f"  {'-' * w}  spread {b['spread']}  mid {b['mid']}")
        for p, q in b["bids"]:
            lines.append(f"  {p:>{w}}  {q}   bid")
        lines.append(
            f"update id {b['last_id']}  levels {b['bid_levels']}/{b['ask_levels']}"
            f"  imbalance {b['imbalance']}"
        )
    if b is not None:
        lines.extend(_health_lines(b))
    lines.extend(_trade_lines(doc["trades"]) + _candle_lines(doc["candles"]))
    return "\n".join(lines)


# =============================================================== engine export


@click.command("export")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--to",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the Parquet tables (created if missing).",
)
@click.option("--symbols", default=None, help="Comma-separated symbols (default: all).")
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Levels per side in book_top.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Seconds between book_top snapshots (receive time).",
)
@click.option("--from", "from_", type=TIME, default=None, help=f"Export from this time ({_TIME}).")
@click.option("--until", type=TIME, default=None, help=f"Export up to this time ({_TIME}).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@skip_damaged_option
def export(
    directory: Path,
    out_dir: Path,
    symbols: str | None,
    top: int,
    interval: float,
    from_: int | None,
    until: int | None,
    as_json: bool,
) -> None:
    """Write normalized Parquet tables as one hive-partitioned dataset (table/symbol/date).

    Tables: trades, book_diffs, book_top, book_events, candles, alerts, errors,
    book_ticker, ticker, kline.  Prices and quantities are exact decimal128(38, 8)
    columns, times timestamp[ns, UTC].  Read by pyarrow.dataset, Polars, DuckDB
    and Spark in one call; export.json in OUTDIR describes the run.
    """
    from engine.replay.export import export_journal

    try:
        with _progress(str(directory), "export") as on_chunk:
            res = export_journal(
                directory,
                out_dir,
                symbols=_csv(symbols),
                top=top,
                interval_s=interval,
                start_ns=from_,
                end_ns=until,
                on_chunk=on_chunk,
            )
    except (JournalError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=2))
        return
    for name, n in res.rows.items():
        click.echo(f"{n:>10} rows  {out_dir / f'table={name}'}")
    click.echo(
        f"{res.frames} frames replayed; {res.decode_errors} decode errors; dropped duplicates:"
        f" {res.duplicate_trades} trades, {res.duplicate_diffs} depth diffs"
    )
