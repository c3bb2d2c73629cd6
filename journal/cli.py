"""``engine journal inspect|verify|recover``: look at and check journals without decoding them.

Exit codes are :mod:`engine.cli`'s one rule: a missing folder is a usage error
(2); a folder that is not a journal, or an unsound one, is a data failure (1).
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from engine.journal.inspect import scan_journal, verify_journal
from engine.journal.reader import JournalError, skipping_damaged
from engine.timefmt import format_ns

__all__ = ["journal", "skip_damaged_option"]


def skip_damaged_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--skip-damaged`` for a command that reads journals.

    Every reader the command opens then skips damaged batches and segments
    instead of refusing the journal, and what was skipped is listed on stderr
    (one line each, naming segment and batch) when the command ends.
    """

    @functools.wraps(fn)
    def run(*args: Any, skip_damaged: bool, **kwargs: Any) -> Any:
        with skipping_damaged(skip_damaged) as skipped:
            try:
                return fn(*args, **kwargs)
            finally:
                for line in dict.fromkeys(map(str, skipped)):
                    click.echo(f"skipped (damaged): {line}", err=True)

    return click.option(
        "--skip-damaged",
        is_flag=True,
        help="Read what is sound in a damaged journal and list what was skipped"
        " (default: refuse it, naming the damaged segment and batch).",
    )(run)


def _ts(ns: int | None) -> str:
    if ns is None:
        return "-"
    return format_ns(ns, 3)


def _size(n: int) -> str:
    f = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if f < 1024 or unit == "GiB":
            return f"{f:.1f} {unit}" if unit != "B" else f"{n} B"
        f /= 1024
    return f"{n} B"


@click.group()
def journal() -> None:
    """Inspect, verify and recover journal directories."""


_DIR = click.Path(exists=True, file_okay=False, path_type=str)


@journal.command()
@click.argument("directory", type=_DIR)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--top", default=10, show_default=True, help="How many sources to list.")
@skip_damaged_option
def inspect(directory: str, as_json: bool, top: int) -> None:
    """Segments, frames, bytes on disk vs payload, time span, kinds, sources, recovered tails.

    DIRECTORY may be a capture set or a folder of journals: each member in turn.
    """
    for member in _each(directory):
        _inspect(member, as_json, top)


def _each(directory: str) -> list[str]:
    """The journal itself, or the member journals of a capture set or catalog."""
    from engine.journal.captureset import is_journal, journals_in

    found = [] if is_journal(directory) else journals_in(directory)
    return [str(p) for p in found] or [directory]


def _inspect(directory: str, as_json: bool, top: int) -> None:
    try:
        st = scan_journal(directory)
    except JournalError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(st.to_json(), indent=2, default=str))
        return
    md = st.metadata
    click.echo(f"journal   {st.path}")
    if md:
        keys = ("exchange", "symbols", "engine_version", "schema_version")
        click.echo("metadata  " + "  ".join(f"{k}={md[k]}" for k in keys if k in md))
    ratio = f"{st.disk_bytes / st.payload_bytes:.1%}" if st.payload_bytes else "-"
    click.echo(f"segments  {len(st.segments)}  ({sum(s.partial for s in st.segments)} partial)")
    click.echo(f"frames    {st.frames}")
    click.echo(
        f"bytes     {_size(st.disk_bytes)} on disk for {_size(st.payload_bytes)} of payload ({ratio})"
    )
    click.echo(f"span      {_ts(st.first_ns)} → {_ts(st.last_ns)}  ({st.span_s:.3f} s)")
    click.echo("kinds     " + "  ".join(f"{k}={v}" for k, v in st.kinds.items()))
    click.echo("sources")
    for i, (src, n) in enumerate(st.sources.items()):
        if i == top:
            click.echo(f"  … {len(st.sources) - top} more")
            break
        click.echo(f"  {n:>9}  {src if len(src) <= 100 else src[:97] + '...'}")
    for s in st.segments:
        click.echo(
            f"  {s.name:32} {s.frames:>9} frames  seq {s.first_seq}..{s.last_seq}  {_size(s.bytes)}"
        )
    for t in st.tails:
        click.echo(
            f"recovered {t['segment']}: kept {t['kept_frames']} frames in {t['kept_batches']} "
            f"batches, dropped a torn tail of {t['dropped_bytes']} bytes ({t['error']})"
        )
    for f in st.foreign:
        click.echo(f"ignored   {f} (not a segment)")


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Callable[[int], None] | None]:
    """A frame counter on stderr when it is a terminal (every batch read); quiet otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.completed:,} frames"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)
        yield lambda frames: bar.advance(task, frames)


@journal.command()
@click.argument("directory", type=_DIR)
def verify(directory: str) -> None:
    """Exit 0 if the journal is sound; else exit 1 with one FAIL line per problem.

    Checks every batch's structure and checksum, every sealed segment's footer
    against its content and journal.json, seq continuity across segments (no
    missing, duplicated or reordered segment), and the outputs journal.  A
    capture set or a folder of journals: every member (exit 1 if one fails).
    """
    failed = [m for m in _each(directory) if not _verify(m)]
    if failed:
        sys.exit(1)


def _verify(directory: str) -> bool:
    with _progress("verify") as on_batch:
        problems, st = verify_journal(directory, on_batch)
    if problems:
        for p in problems:
            click.echo(f"FAIL {p}", err=True)
        return False
    assert st is not None
    tails = f", {len(st.tails)} torn tail(s) recovered" if st.tails else ""
    how = (
        "legacy: no checksums (written before schema 2); structure and seq order verified"
        if st.legacy
        else "checksums, footers and seq continuity verified"
    )
    click.echo(f"OK {st.path}: {len(st.segments)} segments, {st.frames} frames{tails} ({how})")
    return True


@journal.command()
@click.argument("directory", type=_DIR)
def recover(directory: str) -> None:
    """Seal partial segments left by a crash (drops torn tails, keeps every whole batch).

    A capture set or a folder of journals: every member.
    """
    for member in _each(directory):
        _recover(member)


def _recover(directory: str) -> None:
    from pathlib import Path

    from engine.cli import DataFailure
    from engine.journal.recovery import NoSpaceToSeal, seal_partials
    from engine.journal.schema import MANIFEST

    d = Path(directory)
    if not (d / MANIFEST).is_file() and not any(d.glob("seg-*.arrows*")):
        raise DataFailure(f"{d}: not a journal (no {MANIFEST} and no seg-*.arrows files)")
    try:
        state = seal_partials(Path(directory))
    except JournalError as exc:
        raise click.ClickException(str(exc)) from None
    except NoSpaceToSeal as exc:
        # sealing rewrites the segment: it needs about the partial's size free
        click.echo(
            f"free space first: {exc.strerror}; the journal is unchanged, recover again", err=True
        )
        sys.exit(1)
    for t in state.tails:
        click.echo(
            f"{t.segment}: dropped {t.dropped_bytes} torn bytes, kept {t.kept_frames} frames"
        )
    click.echo(
        f"sealed {len(state.sealed)} partial segment(s); journal ends at seq {state.last_seq}"
    )
