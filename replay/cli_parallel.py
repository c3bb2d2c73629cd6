"""``--workers N`` / ``--scheduler ADDRESS`` and sets: the command line of parallel replay and export.

Owns the two options (:func:`parallel_options`), the Dask client a command
runs on (none: in this process; ``--workers``: a local cluster of processes;
``--scheduler``: an existing cluster), the progress bar fed by the futures
(rich, on a terminal only), turning a worker's failure into one error line,
and rendering what :mod:`engine.replay.catalog` and
:mod:`engine.replay.parallel` return.  ``engine replay`` and ``engine
export`` call in here when asked for workers or given a capture set or a
catalog.  Must not: fold, check or export by itself.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from engine.cli import DataFailure, UsageFailure, guard_output
from engine.journal.location import LocationError, RemotePath
from engine.journal.reader import JournalError, JournalReader
from engine.replay.catalog import Member, check_catalog, export_catalog, replay_catalog, select
from engine.replay.cli_summary import render_summary
from engine.replay.parallel import Progress, SliceMismatch
from engine.replay.replay import summarize

__all__ = ["parallel_options", "replay_many", "check_many", "export_many"]


def parallel_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="Run on an existing Dask cluster (tcp://host:8786); its workers need wiretape and"
        " the journals at the same paths or URIs (s3:// gets this command's --s3-endpoint).",
    )(fn)
    return click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=None,
        help="Run on a local Dask cluster of N processes: a journal is cut at its checkpoints,"
        " the journals of a capture set or catalog (a folder or a bucket prefix) go side by side.",
    )(fn)


@contextmanager
def _client(workers: int | None, scheduler: str | None) -> Iterator[Any]:
    if workers is not None and scheduler is not None:
        raise UsageFailure("--workers and --scheduler cannot be combined (the cluster has its own)")
    if workers is None and scheduler is None:
        yield None
        return
    from engine.replay.parallel import dask_client

    try:
        cm = dask_client(workers, scheduler)
        client = cm.__enter__()
    except OSError as exc:
        raise DataFailure(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
    try:
        yield client
    finally:
        cm.__exit__(None, None, None)


def _n_workers(client: Any, workers: int | None) -> int:
    if client is None:
        return 1
    return workers or max(1, len(client.scheduler_info().get("workers", {})))


@contextmanager
def _bar(label: str) -> Iterator[Progress | None]:
    """A bar of tasks done (and frames folded) on a terminal; else nothing."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("tasks  {task.fields[frames]} frames"), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task(label, total=None, frames=0)

        def done(n: int, total: int, frames: int) -> None:
            bar.update(task, completed=n, total=total, frames=frames)

        yield done


@contextmanager
def _worker_errors() -> Iterator[None]:
    """Any failure of a task (in a worker or here) becomes one line: exit 1."""
    try:
        yield
    except (click.ClickException, KeyboardInterrupt):
        raise
    except (JournalError, SliceMismatch, ValueError, OSError) as exc:
        raise DataFailure(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a worker's failure of any kind
        raise DataFailure(f"a worker failed: {type(exc).__name__}: {exc}") from None


@contextmanager
def _catalog_errors() -> Iterator[None]:
    """A damaged member, nothing in the window, a store's refusal: exit 1; an unknown symbol: 2."""
    try:
        yield
    except (JournalError, LocationError) as exc:
        raise DataFailure(str(exc)) from None
    except ValueError as exc:
        raise (UsageFailure if "unknown symbol" in str(exc) else DataFailure)(str(exc)) from None


def _members(directory: Path | RemotePath, remote: bool, **kw: Any) -> list[Member]:
    with _catalog_errors():
        chosen, left = select(directory, **kw)
    if remote and JournalReader(chosen[0].path).skip_damaged:
        raise UsageFailure(
            "--skip-damaged reads in this process only: leave out --workers/--scheduler"
        )
    for m, why in left:
        click.echo(f"skipped {m.name}: {why}", err=True)
    return chosen


def member_for_book(directory: Path | RemotePath, symbol: str, at: int) -> Path | RemotePath:
    """``engine book SET --symbol S``: the member journal holding S at that time."""
    from engine.replay.catalog import journal_for

    with _catalog_errors():
        return journal_for(directory, symbol, at)


def replay_many(
    directory: Path | RemotePath,
    *,
    workers: int | None,
    scheduler: str | None,
    from_: int | None,
    to: int | None,
    symbols: str | None,
    as_json: bool,
) -> None:
    """``engine replay`` of a journal on workers, or of a set / catalog (on workers or here)."""
    wanted = None if symbols is None else [s.strip() for s in symbols.split(",") if s.strip()]
    members = _members(directory, workers is not None or scheduler is not None,
                       start_ns=from_, end_ns=to, symbols=wanted)  # fmt: skip
    keep = None if wanted is None else frozenset(s.upper() for s in wanted)
    started = time.perf_counter()
    with _client(workers, scheduler) as client, _bar("replay") as on_done, _worker_errors():
        done = replay_catalog(
            members, client=client, workers=_n_workers(client, workers), start_ns=from_,
            end_ns=to, symbols=keep, on_done=on_done,
        )  # fmt: skip
    elapsed = round(time.perf_counter() - started, 3)
    summaries = []
    for m, plan, merged in done:
        extra = {
            "journal": str(m.path),
            "exchange": m.exchange,
            "from_ns": from_,
            "to_ns": to,
            "checkpoint": None,
            "frames_folded": merged.frames,
            "checkpoints_written": 0,
            "out": None,
            "parallel": {**merged.to_json(), "serial_reason": plan.serial_reason},
            "elapsed_s": elapsed,
        }
        mine = None if keep is None else sorted(keep & set(m.symbols))
        summaries.append(
            summarize(merged.pipeline, merged.tallies, mine, extra, merged.decode_errors)
        )
    bad = [(s["journal"], s["parallel"]["checkpoint_mismatches"]) for s in summaries
           if s["parallel"]["checkpoint_mismatches"]]  # fmt: skip
    if as_json:
        doc: Any = summaries[0] if len(summaries) == 1 and directory == members[0].path else {
            "catalog": str(directory), "journals": summaries, "elapsed_s": elapsed,
            "frames": sum(s["frames_folded"] for s in summaries),
        }  # fmt: skip
        click.echo(json.dumps(doc, indent=2))
    else:
        blocks = []
        for s in summaries:
            par = s["parallel"]
            note = par["serial_reason"] or (
                f"{par['slices']} slices at checkpoints; {par['checkpoints_matched']} of"
                f" {par['checkpoints_checked']} checkpoints reached exactly"
            )
            blocks.append(render_summary(s) + f"\nparallel  {note}")
        click.echo("\n\n".join(blocks))
    if bad:
        raise DataFailure(
            "; ".join(f"{j}: the fold does not reach the state of the checkpoint(s) at seq"
                      f" {', '.join(map(str, seqs))}" for j, seqs in bad)
        )  # fmt: skip


def check_many(directory: Path | RemotePath, *, workers: int | None, scheduler: str | None) -> None:
    """``engine replay SET --check``: every member checked on its own; exit 1 if one differs."""
    members = _members(directory, workers is not None or scheduler is not None)
    failed = []
    with _client(workers, scheduler) as client, _bar("check") as on_done, _worker_errors():
        reports = list(check_catalog(members, client=client, on_done=on_done))
    for m, rep in reports:
        if rep.mismatch is None:
            tail = "" if rep.unmatched_side is None else " (the capture did not stop cleanly)"
            click.echo(f"OK: {m.name}: replay reproduced the {rep.compared} recorded outputs{tail}")
        else:
            failed.append(m.name)
            click.echo(f"DIFFERENT: {m.name}: first difference at frame seq {rep.mismatch.seq}"
                       f" (after {rep.compared} identical outputs)")  # fmt: skip
    if failed:
        sys.exit(1)


def export_many(
    directory: Path | RemotePath,
    out_dir: Path,
    *,
    workers: int | None,
    scheduler: str | None,
    force: bool,
    symbols: str | None,
    from_: int | None,
    to: int | None,
    as_json: bool,
    **options: Any,
) -> None:
    """``engine export`` of a set / catalog (or one journal on workers) into one dataset."""
    import shutil

    wanted = None if symbols is None else [s.strip() for s in symbols.split(",") if s.strip()]
    members = _members(directory, workers is not None or scheduler is not None,
                       start_ns=from_, end_ns=to, symbols=wanted)  # fmt: skip
    guard_output(out_dir, force=force)
    created = not out_dir.exists()
    try:
        with _client(workers, scheduler) as client, _bar("export") as on_done, _worker_errors():
            res = export_catalog(
                members, out_dir, client=client, replace=force, on_done=on_done,
                symbols=wanted, start_ns=from_, end_ns=to, **options,
            )  # fmt: skip
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=2))
        return
    for name, n in res.rows.items():
        click.echo(f"{n:>10} rows  {out_dir / f'table={name}'}")
    click.echo(f"{res.frames} frames replayed from {len(res.members)} journals into one dataset")


def dispatch(
    directory: Path | RemotePath,
    *,
    workers: int | None,
    scheduler: str | None,
    serve: str | None,
    check: bool,
    out: Path | None,
    save: bool,
    from_: int | None,
    to: int | None,
    symbols: str | None,
    as_json: bool,
) -> bool:
    """``engine replay`` with workers or of a set; False: the serial replay should run instead.

    That is ``--save-checkpoints`` on one journal that has no checkpoints yet:
    it is replayed serially and writes them, so the next run can be cut.
    """
    from engine.journal.captureset import is_journal

    with _catalog_errors():
        single = is_journal(directory)
    if serve is not None:
        raise UsageFailure(
            "--serve serves one journal: give a member of the set"
            if not single else "--serve cannot be combined with --workers/--scheduler"
        )  # fmt: skip
    if check:
        check_many(directory, workers=workers, scheduler=scheduler)
        return True
    if out is not None:
        raise UsageFailure("--out writes the outputs of one serial replay: leave out --workers"
                           " (or use engine export, which takes workers and sets)")  # fmt: skip
    if save:
        from engine.replay.parallel import plan_slices

        if not single:
            raise UsageFailure("--save-checkpoints writes into one journal: give a member")
        try:
            plan = plan_slices(str(directory), tasks=2)
        except JournalError as exc:
            raise DataFailure(str(exc)) from None
        if plan.checkpoints_usable:
            raise UsageFailure(
                f"{directory} has {plan.checkpoints_usable} checkpoints already: --workers"
                " cuts the replay at them; leave out --save-checkpoints"
            )
        click.echo(f"{directory}: no checkpoints: replaying serially and writing them"
                   " (the next --workers replay is cut at them)", err=True)  # fmt: skip
        return False
    replay_many(directory, workers=workers, scheduler=scheduler, from_=from_, to=to,
                symbols=symbols, as_json=as_json)  # fmt: skip
    return True
