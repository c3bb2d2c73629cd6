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
from pathlib import Path
from typing import Any

import click

from engine.journal import location
from engine.journal.inspect import scan_journal, verify_journal
from engine.journal.reader import JournalError, skipping_damaged
from engine.timefmt import format_ns

__all__ = ["journal", "skip_damaged_option", "journal_argument", "s3_endpoint_option"]


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


def s3_endpoint_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--s3-endpoint URL`` and ``--gcs-endpoint URL``: the endpoints the command's URIs use."""

    @functools.wraps(fn)
    def run(*args: Any, s3_endpoint: str | None, gcs_endpoint: str | None, **kwargs: Any) -> Any:
        with location.s3_endpoint(s3_endpoint), location.gcs_endpoint(gcs_endpoint):
            return fn(*args, **kwargs)

    s3 = click.option(
        "--s3-endpoint",
        metavar="URL",
        default=None,
        help="S3-compatible endpoint for s3:// journals, e.g. http://127.0.0.1:9000"
        " (default: $AWS_ENDPOINT_URL, else AWS).",
    )
    gcs = click.option(
        "--gcs-endpoint",
        metavar="URL",
        default=None,
        help="GCS endpoint for gs:// journals, e.g. an emulator's http://127.0.0.1:4443"
        " (default: $STORAGE_EMULATOR_HOST, else Google).",
    )
    return s3(gcs(run))


def journal_argument(name: str = "directory") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The journal argument of a reading command: a local directory or a URI, plus ``--s3-endpoint``.

    The command receives a :class:`~pathlib.Path` for a local directory
    (``file://`` URIs included) or a :class:`~engine.journal.location.RemotePath`
    for ``s3://``/``gs://``.  A missing local directory is a usage error, as
    before; a remote one is checked by the reader (one request).
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            raw = kwargs[name]
            try:
                where = location.as_path(raw)
            except location.LocationError as exc:
                raise click.BadParameter(str(exc), param_hint=f"'{name.upper()}'") from None
            if isinstance(where, Path):
                if not where.exists():
                    raise click.BadParameter(
                        f"Directory {raw!r} does not exist.", param_hint=f"'{name.upper()}'"
                    )
                if not where.is_dir():
                    raise click.BadParameter(
                        f"Directory {raw!r} is a file.", param_hint=f"'{name.upper()}'"
                    )
            kwargs[name] = where
            return fn(*args, **kwargs)

        arg = click.argument(name, metavar=f"{name.upper()}|URI")(run)
        return s3_endpoint_option(arg)

    return wrap


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
    """Inspect, verify, recover, push and pull journals (directories or URIs)."""


_DIR = click.Path(exists=True, file_okay=False, path_type=str)


@journal.command()
@journal_argument()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--top", default=10, show_default=True, help="How many sources to list.")
@skip_damaged_option
def inspect(directory: Path | location.RemotePath, as_json: bool, top: int) -> None:
    """Segments, frames, bytes on disk vs payload, time span, kinds, sources, recovered tails.

    DIRECTORY may be a capture set or a folder of journals: each member in turn.
    """
    for member in _each(directory):
        _inspect(member, as_json, top)


def _each(directory: Any) -> list[Any]:
    """The journal itself, or the member journals of a capture set or catalog (a folder or a prefix)."""
    from engine.journal.captureset import is_journal, journals_in

    try:
        found = [] if is_journal(directory) else journals_in(directory)
    except location.LocationError:  # the journal's own reader says it in its words
        found = []
    return found or [directory]


def _inspect(directory: Path | location.RemotePath, as_json: bool, top: int) -> None:
    try:
        st = scan_journal(directory)
    except (JournalError, location.LocationError) as exc:
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
@journal_argument()
def verify(directory: Path | location.RemotePath) -> None:
    """Exit 0 if the journal is sound; else exit 1 with one FAIL line per problem.

    Checks every batch's structure and checksum, every sealed segment's footer
    against its content and journal.json, seq continuity across segments (no
    missing, duplicated or reordered segment), and the outputs journal.  A
    capture set or a folder of journals: every member (exit 1 if one fails).
    """
    failed = [m for m in _each(directory) if not _verify(m)]
    if failed:
        sys.exit(1)


def _verify(directory: Path | location.RemotePath) -> bool:
    try:
        with _progress("verify") as on_batch:
            problems, st = verify_journal(directory, on_batch)
    except location.LocationError as exc:
        raise click.ClickException(str(exc)) from None
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

    The journal's outputs journal (``DIR/outputs``) too; a capture set or a folder of
    journals: every member.
    """
    from pathlib import Path

    from engine.journal.recorder import OUTPUTS_DIR
    from engine.journal.schema import MANIFEST

    for member in _each(directory):
        _recover(member)
        outputs = Path(member) / OUTPUTS_DIR
        if any(outputs.glob("seg-*.arrows*")) or (outputs / MANIFEST).is_file():
            _recover(str(outputs), label=f"{OUTPUTS_DIR}: ")


def _recover(directory: str, label: str = "") -> None:
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
            f"{label}{t.segment}: dropped {t.dropped_bytes} torn bytes, kept {t.kept_frames} frames"
        )
    click.echo(
        f"{label}sealed {len(state.sealed)} partial segment(s); journal ends at seq {state.last_seq}"
    )


@journal.command()
@click.argument("directory", type=_DIR)
@click.argument("uri")
@click.option(
    "--remove-local",
    is_flag=True,
    help="Remove each local file once its upload is verified (manifests stay).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was done as one JSON object.")
@s3_endpoint_option
def push(directory: str, uri: str, remove_local: bool, as_json: bool) -> None:
    """Upload a journal to URI (s3://, gs://, file://, a path): what a crash or a failure left.

    Sealed segments, the outputs journal, checkpoints, then the manifests; each
    upload verified (size and CRC-32C read back); objects already there and
    identical are skipped, so push can be run again and again.  Partial
    segments are not uploaded: seal them first with `engine journal recover`.
    A capture set (captureset.json): each shard to URI/<shard>, then the set
    manifest, only once every shard is complete in the store.
    """
    from engine.journal.captureset import is_captureset
    from engine.live.upload import UploadError, push_journal

    if is_captureset(directory):
        _push_set(directory, uri, remove_local, as_json)
        return
    try:
        rep = push_journal(directory, uri, keep_local=not remove_local)
    except (location.LocationError, UploadError) as exc:
        raise click.ClickException(str(exc)) from None
    _transfer_report(rep, f"{directory} → {uri}", as_json)
    partial = [p for p in rep.pending if p.endswith(".partial")]
    if partial:
        click.echo(
            f"not uploaded: {', '.join(partial)} (unsealed: run `engine journal recover"
            f" {directory}` once no capture writes it, then push again)",
            err=True,
        )
        sys.exit(1)


def _push_set(directory: str, uri: str, remove_local: bool, as_json: bool) -> None:
    """``push`` of a capture set: every shard (one failing does not stop the others), manifest last."""
    from engine.journal.captureset import NotACaptureSet
    from engine.live.upload import UploadError, member_target, push_set

    try:
        rep = push_set(directory, uri, keep_local=not remove_local)
    except (NotACaptureSet, location.LocationError, UploadError) as exc:
        raise click.ClickException(str(exc)) from None
    _set_report(rep, directory, uri, as_json)
    for name, r in rep.members.items():
        partial = [p for p in r.pending if p.endswith(".partial")]
        dirs = sorted({str(Path(directory, rep.journals[name], p).parent) for p in partial})
        if dirs:
            click.echo(
                f"{name}: not uploaded: {', '.join(partial)}"
                f" (unsealed: once no capture writes it, run `engine journal recover DIR` for"
                f" {' and '.join(dirs)}, then push again)",
                err=True,
            )
    for name, why in rep.failed.items():
        click.echo(
            f"{name}: not uploaded to {member_target(uri, rep.journals[name])}: {why}", err=True
        )
    if not rep.complete:
        click.echo(f"the set manifest was not uploaded: shards incomplete:"
                   f" {', '.join(rep.incomplete())}", err=True)  # fmt: skip
        sys.exit(1)


@journal.command()
@click.argument("uri")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print what was done as one JSON object.")
@s3_endpoint_option
def pull(uri: str, directory: str, as_json: bool) -> None:
    """Download the journal at URI into DIRECTORY (verified; files already there are skipped).

    A capture set at URI (captureset.json): every shard, then the set manifest.
    """
    from engine.journal.captureset import NotACaptureSet
    from engine.live.upload import UploadError, pull_journal, pull_set, stored_set_manifest

    try:
        if stored_set_manifest(uri) is not None:
            srep = pull_set(uri, directory)
            _set_report(srep, uri, directory, as_json)
            for name, why in srep.failed.items():
                click.echo(f"{name}: not copied: {why}", err=True)
            if not srep.complete:
                sys.exit(1)
            return
        rep = pull_journal(uri, directory)
    except (NotACaptureSet, location.LocationError, UploadError) as exc:
        raise click.ClickException(str(exc)) from None
    _transfer_report(rep, f"{uri} → {directory}", as_json)


def _set_report(rep: Any, src: str, dest: str, as_json: bool) -> None:
    """One line per shard copied, and one for the set manifest (or one JSON object)."""
    if as_json:
        click.echo(json.dumps(rep.to_json(), indent=2))
        return
    for name, r in rep.members.items():
        j = rep.journals[name]
        _transfer_report(r, f"{name}: {src.rstrip('/')}/{j} → {dest.rstrip('/')}/{j}", False)
    for name in rep.stored_earlier:
        click.echo(
            f"{name}: already in {dest.rstrip('/')}/{rep.journals[name]} (no local copy left)"
        )
    click.echo(f"captureset.json: {rep.manifest}")


def _transfer_report(rep: Any, what: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rep.to_json(), indent=2))
        return
    click.echo(
        f"{what}: {len(rep.uploaded)} copied ({_size(rep.bytes)}), {len(rep.skipped)} already"
        f" there and verified, {len(rep.removed)} local copies removed"
    )
