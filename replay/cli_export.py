"""``engine export``: the command line of the normalized Parquet tables.

Owns the command's options (``--out`` for the directory, ``--from``/``--to``
for times, the old ``--to OUTDIR`` / ``--until`` spellings as deprecated
aliases), refusing an existing or in-journal ``--out`` without ``--force``, and
removing the directory a failed export made.  Must not: write tables (that is
:mod:`engine.replay.export`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from engine.cli import UsageFailure, deprecated, guard_output
from engine.journal.captureset import holds_journals
from engine.journal.cli import journal_argument, skip_damaged_option
from engine.journal.location import RemotePath
from engine.journal.reader import JournalError
from engine.replay.cli import (
    _TIME,
    TIME,
    _fail,
    _open_checked,
    _progress,
    _symbols_checked,
    _window,
)
from engine.replay.cli_parallel import export_many, parallel_options
from engine.replay.cli_summary import window_text
from engine.timefmt import parse_time

__all__ = ["export"]


@click.command("export")
@journal_argument()
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="New directory for the Parquet dataset (never inside a journal; an earlier"
    " export there is replaced only with --force).",
)
@click.option("--force", is_flag=True, help="Replace an earlier export in --out.")
@click.option(
    "--symbols",
    default=None,
    help="Comma-separated symbols (default: all; unknown ones are an error).",
)
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
@click.option("--to", "to", default=None, metavar="TIME", help=f"Export up to this time ({_TIME}).")
@click.option("--until", type=TIME, default=None, hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@parallel_options
@skip_damaged_option
def export(
    directory: Path | RemotePath,
    out_dir: Path | None,
    force: bool,
    symbols: str | None,
    top: int,
    interval: float,
    from_: int | None,
    to: str | None,
    until: int | None,
    as_json: bool,
    workers: int | None,
    scheduler: str | None,
) -> None:
    """Write normalized Parquet tables as one hive-partitioned dataset (table/symbol/date).

    DIRECTORY may be a capture set or a catalog (a folder of journals): every journal goes
    into the one dataset (--workers N: side by side on a local Dask cluster).

    Tables: trades, book_diffs, book_top, book_events, candles, alerts, errors,
    book_ticker, ticker, kline.  Prices and quantities are exact decimal128(38, 18)
    columns, times timestamp[ns, UTC].  Read by pyarrow.dataset, Polars, DuckDB
    and Spark in one call; export.json in the --out directory describes the run.
    """
    to_ns: int | None = None
    if to is not None:
        try:
            to_ns = parse_time(to)
        except ValueError as exc:
            if out_dir is not None:
                raise click.BadParameter(str(exc), param_hint="--to") from None
            deprecated("--to OUTDIR", "--out OUTDIR (--to is a time, as on every command)")
            out_dir = Path(to)
    if until is not None:
        deprecated("--until", "--to")
        if to_ns is not None:
            raise UsageFailure("--until and --to are the same option: give --to only")
        to_ns = until
    if out_dir is None:
        raise UsageFailure("Missing option '--out' (the directory for the tables)")
    if from_ is not None and to_ns is not None and to_ns < from_:
        raise click.BadParameter("--to is before --from", param_hint="--to")
    if workers is not None or scheduler is not None or holds_journals(directory):
        export_many(directory, out_dir, workers=workers, scheduler=scheduler, force=force,
                    symbols=symbols, from_=from_, to=to_ns, as_json=as_json, top=top,
                    interval_s=interval)  # fmt: skip
        return
    guard_output(out_dir, force=force)
    j = _open_checked(directory)
    wanted = _symbols_checked(j, symbols)
    _window(j, from_, to_ns)
    from engine.replay.export import export_journal

    created = not out_dir.exists()
    try:
        with _progress(str(directory), "export") as on_chunk:
            res = export_journal(
                directory,
                out_dir,
                symbols=wanted,
                top=top,
                interval_s=interval,
                start_ns=from_,
                end_ns=to_ns,
                on_chunk=on_chunk,
                replace=force,
            )
    except BaseException as exc:
        if created:  # a failed export leaves no directory behind
            shutil.rmtree(out_dir, ignore_errors=True)
        if isinstance(exc, (JournalError, ValueError, OSError)):
            raise _fail(exc) from None
        raise
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=2))
        return
    if from_ is not None or to_ns is not None:
        click.echo(f"window     {window_text(from_, to_ns)}")
    for name, n in res.rows.items():
        click.echo(f"{n:>10} rows  {out_dir / f'table={name}'}")
    click.echo(
        f"{res.frames} frames replayed; {res.decode_errors} decode errors; dropped duplicates:"
        f" {res.duplicate_trades} trades, {res.duplicate_diffs} depth diffs"
    )
