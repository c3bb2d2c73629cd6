"""``engine replay``: the command line of replay, and what ``engine book`` / ``engine export`` share.

``engine book`` is :mod:`engine.replay.cli_book`, ``engine export``
:mod:`engine.replay.cli_export`; both take their time type, checkpoint
options and journal checks (times and symbols against the journal) from here,
and their summary lines from :mod:`engine.replay.cli_summary`.

Owns parsing, the output mode (text or ``--json``), the progress bar (rich, on
a terminal only), exit codes and turning our errors into one-line messages.
Must not: fold, compare or write tables itself — that is
:mod:`engine.replay.replay`, :mod:`engine.replay.export` and
:mod:`engine.replay.server` — nor lay out the summary's text (that is
:mod:`engine.replay.cli_summary`).

Exit codes follow the one rule of :mod:`engine.cli` (0 success, 1 a data or
check failure, 2 a usage error): this module raises its error classes and never
exits with a code of its own, except ``--check``'s 1 for a difference.
Replays never write into the journal they read unless asked
(``--save-checkpoints``); ``--out`` never replaces a file or writes into a
journal without ``--force``.
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

from engine.cli import DataFailure, UsageFailure, deprecated, guard_output, leaf_error
from engine.journal.captureset import holds_journals
from engine.journal.cli import journal_argument, skip_damaged_option
from engine.journal.location import RemotePath
from engine.journal.reader import JournalError
from engine.pipeline import Pipeline
from engine.replay.checkpoints import CheckpointPolicy
from engine.replay.cli_parallel import parallel_options
from engine.replay.cli_summary import render_summary
from engine.replay.replay import (
    Tally,
    open_journal,
    seq_span,
    tally_output,
)
from engine.sim.cli import limit_options, limits
from engine.timefmt import parse_time

__all__ = ["replay", "TIME"]


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


class CheckFailed(DataFailure):
    """``--check`` could not compare at all (no recorded outputs, unreadable journal): exit 1."""


def _policy(
    directory: Path | RemotePath, save: bool, every_s: float | None, every_frames: int | None
) -> CheckpointPolicy | None:
    """The checkpoint policy asked for; None unless ``--save-checkpoints`` (never by default)."""
    if not save:
        if every_s is not None or every_frames is not None:
            raise UsageFailure(
                "--checkpoint-every/--checkpoint-frames need --save-checkpoints"
                " (replays write nothing into the journal unless asked)"
            )
        return None
    if not isinstance(directory, Path):  # s3://, gs://: the readers never write to a store
        raise DataFailure(
            f"{directory}: --save-checkpoints writes beside a local journal only"
            " (pull it, save them, then `engine journal push`)"
        )
    if directory.is_dir() and not os.access(directory, os.W_OK):
        raise DataFailure(f"{directory} is read-only: --save-checkpoints cannot write there")
    try:
        return CheckpointPolicy(
            every_frames=50_000 if every_frames is None else every_frames,
            every_s=60.0 if every_s is None else every_s,
        )
    except ValueError as exc:
        raise click.BadParameter(
            str(exc), param_hint="--checkpoint-every/--checkpoint-frames"
        ) from None


def _old_checkpoint_flag(ctx: click.Context, param: click.Parameter, value: bool | None) -> None:
    if value is not None:
        new = "--save-checkpoints" if value else "nothing (no checkpoints is the default)"
        deprecated("--checkpoints" if value else "--no-checkpoints", new)
        if value:
            ctx.meta["save_checkpoints"] = True


def _checkpoint_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The checkpoint flags shared by ``replay`` and ``book``."""
    fn = click.option(
        "--checkpoints/--no-checkpoints",
        "old_checkpoints",
        default=None,
        hidden=True,
        expose_value=False,
        callback=_old_checkpoint_flag,
    )(fn)
    fn = click.option(
        "--checkpoint-frames",
        type=click.IntRange(min=1),
        default=None,
        help="With --save-checkpoints: ...or after this many frames, whichever first [50000].",
    )(fn)
    fn = click.option(
        "--checkpoint-every",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="With --save-checkpoints: every this many seconds of journal time [60]...",
    )(fn)
    return click.option(
        "--save-checkpoints",
        is_flag=True,
        help="Write state checkpoints into the journal's checkpoints/ while folding (they make"
        " later --from and engine book fast).  Off by default: a replay writes nothing.",
    )(fn)


def _save(ctx: click.Context, flag: bool) -> bool:
    return flag or bool(ctx.meta.get("save_checkpoints"))


def _open_checked(directory: Path | RemotePath) -> Any:
    """The journal through the Python API, whose rules check times and symbols against it."""
    import engine

    return engine.open(directory)


def _window(j: Any, from_: int | None, to: int | None) -> None:
    try:
        j.resolve_window(from_, to)
    except ValueError as exc:
        raise DataFailure(
            str(exc).replace("start ", "--from ", 1).replace("end ", "--to ", 1)
        ) from None


def _symbols_checked(j: Any, symbols: str | None) -> list[str] | None:
    """The ``--symbols`` asked for, upper-cased (None: all); unknown ones list the journal's."""
    if symbols is None:
        return None
    try:
        return sorted(j.resolve_symbols(symbols))
    except ValueError as exc:
        raise UsageFailure(str(exc).replace("symbols=", "--symbols", 1)) from None


#: ``--out`` suffix → what is written (anything else is refused, never guessed).
OUT_FORMATS = {".parquet": "Parquet", ".arrow": "Arrow IPC file", ".feather": "Arrow IPC file"}


def _out_checked(out: Path | None, force: bool) -> None:
    if out is None:
        return
    if out.suffix.lower() not in OUT_FORMATS:
        raise UsageFailure(
            f"--out {out}: unknown format {out.suffix or '(no suffix)'!r}; the suffix chooses it:"
            f" {', '.join(f'{k} ({v})' for k, v in OUT_FORMATS.items())}"
        )
    guard_output(out, force=force)


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


def _fail(exc: BaseException) -> click.ClickException:
    return DataFailure(str(exc))


# =============================================================== engine replay


@click.command("replay")
@journal_argument()
@click.option("--from", "from_", type=TIME, default=None, help=f"Report from this time ({_TIME}).")
@click.option(
    "--to", "to", type=TIME, default=None, help=f"Stop the replay at this time ({_TIME})."
)
@click.option(
    "--symbols",
    default=None,
    help="Comma-separated symbols to report (default: all; unknown ones are an error).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write every reported output to FILE; the suffix chooses the format: .parquet,"
    " .arrow/.feather (Arrow IPC file).  An existing file, or one inside a journal, needs --force.",
)
@click.option(
    "--force", is_flag=True, help="Allow --out to replace a file or write into a journal."
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
    "--speed", default=None, help="With --serve: 1 (the default), 10, any factor, or max."
)
@click.option("--loop", is_flag=True, help="With --serve: every connection's replay starts over.")
@limit_options(only_with="With --serve: ")
@_checkpoint_options
@parallel_options
@skip_damaged_option
@click.pass_context
def replay(
    ctx: click.Context,
    directory: Path | RemotePath,
    from_: int | None,
    to: int | None,
    symbols: str | None,
    as_json: bool,
    out: Path | None,
    force: bool,
    check: bool,
    serve: str | None,
    speed: str | None,
    loop: bool,
    max_connections: int | None,
    max_buffered_mb: float | None,
    save_checkpoints: bool,
    checkpoint_every: float | None,
    checkpoint_frames: int | None,
    workers: int | None,
    scheduler: str | None,
) -> None:
    """Fold a journal through the same pipeline as `engine run` and summarize it per symbol.

    TIME is ISO-8601 (2024-01-01T00:00:05.123456789Z: up to 9 fractional digits, UTC
    unless a zone is given), integer epoch nanoseconds (1704067205123456789), or epoch
    seconds with a fraction (1704067205.123).  --from/--to choose what is reported; state always
    comes from the journal's beginning (or an exact checkpoint).  Nothing is written into the
    journal unless --save-checkpoints is given.
    """
    save = _save(ctx, save_checkpoints)
    modes = [name for name, on in (("--serve", serve is not None), ("--check", check)) if on]
    others = [
        name
        for name, on in (
            ("--from", from_ is not None),
            ("--to", to is not None),
            ("--symbols", symbols is not None),
            ("--json", as_json),
            ("--out", out is not None),
            ("--save-checkpoints", save),
        )
        if on
    ]
    serving = [
        name
        for name, on in (
            ("--speed", speed is not None),
            ("--loop", loop),
            ("--max-connections", max_connections is not None),
            ("--max-buffered-mb", max_buffered_mb is not None),
        )
        if on
    ]
    if serve is None and serving:
        raise UsageFailure(
            f"{serving[0]} only applies to --serve (a replay folds as fast as it can)"
        )
    if serve is not None:
        # the window options choose what every connection replays
        others = [o for o in others if o not in ("--from", "--to", "--symbols")]
    if len(modes) > 1 or (modes and others):
        raise UsageFailure(f"{' and '.join(modes + others)} cannot be combined")
    if workers is not None or scheduler is not None or holds_journals(directory):
        from engine.replay.cli_parallel import dispatch

        if dispatch(directory, workers=workers, scheduler=scheduler, serve=serve, check=check,
                    out=out, save=save, from_=from_, to=to, symbols=symbols, as_json=as_json):
            return  # fmt: skip
    if serve is not None:
        j = _open_checked(directory)
        _window(j, from_, to)
        _serve(
            directory,
            serve,
            speed or "1",
            start_ns=from_,
            end_ns=to,
            symbols=_symbols_checked(j, symbols),
            loop=loop,
            limits=limits(max_connections, max_buffered_mb),
        )
        return
    if check:
        _check(directory)
        return
    if from_ is not None and to is not None and to < from_:
        raise click.BadParameter("--to is before --from", param_hint="--to")
    from engine.replay.export import OutputsWriter
    from engine.replay.replay import Replay, summarize

    policy = _policy(directory, save, checkpoint_every, checkpoint_frames)
    _out_checked(out, force)
    j = _open_checked(directory)
    wanted = _symbols_checked(j, symbols)
    _window(j, from_, to)
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
        "out": None
        if out is None
        else {"file": str(out), "format": OUT_FORMATS[out.suffix.lower()], "outputs": written},
        "elapsed_s": round(elapsed, 3),
    }
    summary = summarize(r.pipeline, tallies, wanted, extra, r.decode_errors)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(render_summary(summary))


def _serve(directory: Path | RemotePath, where: str, speed: str, **options: Any) -> None:
    from engine.replay.server import parse_speed, run_server

    host, sep, port_text = where.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise click.BadParameter(
            f"expected HOST:PORT like 127.0.0.1:9443, not {where!r}", param_hint="--serve"
        )
    try:
        parse_speed(speed)
        open_journal(directory)
    except (JournalError, ValueError) as exc:
        raise _fail(exc) from None
    try:
        run_server(directory, host.strip("[]"), int(port_text), speed, echo=click.echo, **options)
    except* OSError as group:
        err = leaf_error(group)
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise DataFailure(f"cannot serve on {where}: {why}") from None
    except* (JournalError, ValueError) as group:  # unknown symbols, a window outside the journal
        raise _fail(leaf_error(group)) from None


def _check(directory: Path | RemotePath) -> None:
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
