"""``engine run``: capture into a new journal, from the embedded simulator (default) or an exchange.

Owns the command line of a live capture: its options and their checks (a
bad one makes nothing), the run itself (one process,
:func:`engine.live.runner.capture_main`, or a capture set,
:mod:`engine.live.shards`), and the way out: the JSON summary on stdout, the
lines on stderr that say where the journal is, and the exit status.  Ctrl-C,
SIGTERM or ``--duration`` stop reading, the journal is flushed and sealed, a
summary is printed and the exit status is 0.  The disk ends a capture with
its own exit status (:data:`EXIT_CODES`), after the summary: 3 when a journal
write failed (disk full, I/O error; the open segment is left for ``engine
journal recover``), 4 when free space fell below ``--min-free-mb`` (stopped
in time, sealed).  With ``--upload``, an upload that did not finish (the
store failed, or a second Ctrl-C cut the final upload short) exits 1 after
the summary, with one line naming what stays local and the ``engine journal
push`` that finishes it.  Never a traceback, never a reconnect.

Must not: build or run the capture itself (that is :mod:`engine.live.runner`
and :mod:`engine.live.capture`) or hold market logic (codecs and reducers).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import attrs
import click
import trio

from engine.codecs.registry import CODECS
from engine.journal.cli import s3_endpoint_option
from engine.live.runner import RunOptions, capture_main, default_journal_dir

__all__ = ["run", "upload_unfinished"]

DEFAULT_CHANNELS = "trade,depth,bookTicker,ticker,kline_1m"

#: ``engine run``'s exit status by ``CaptureStatus.stopped_by`` (0 otherwise; click uses 1 and 2)
EXIT_CODES = {"journal_write_failed": 3, "low_disk": 4}


def upload_unfinished(up: dict[str, Any], local: Any, also: str | None = None) -> str:
    """One line: an upload that did not finish, what did not ship and how to finish it.

    ``up``: a summary's ``upload``; ``also``: what else stayed local (a set's manifest)."""
    left = up.get("not_uploaded") or {}
    n = left.get("files", 0)
    parts = [f"{n} file{'s' if n != 1 else ''} ({left.get('bytes', 0)} bytes)"] if n else []
    what = " and ".join([*parts, also] if also else parts) or "the manifests"
    why = "interrupted" if up.get("interrupted") else f"incomplete ({up['last_error']})"
    return (
        f"upload to {up['target']} {why}: {what} not uploaded, kept in {local}; finish it with"
        f" engine journal push {local} {up['target']}"
    )


def _remove_if_empty(target: Path) -> None:
    """Remove the journal directory of a capture that failed before it received anything."""
    import shutil

    from engine.journal.inspect import scan_journal
    from engine.journal.reader import JournalError

    try:
        received = scan_journal(target).frames if (target / "journal.json").exists() else 0
    except (JournalError, OSError):
        received = 0
    if not received:
        shutil.rmtree(target, ignore_errors=True)


def _run_sharded(opts: RunOptions, processes: int) -> None:
    """``--processes N``: the capture set of :mod:`engine.live.shards`; its summary and status."""
    from engine.journal.captureset import SET_MANIFEST, is_captureset
    from engine.live.shards import run_shards, split

    assert opts.journal is not None
    if is_captureset(opts.journal) or (opts.journal.is_dir() and any(opts.journal.iterdir())):
        raise click.UsageError(f"{opts.journal} is not empty: choose a new --out directory")
    try:
        split(opts.symbols, processes)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--processes") from None
    try:
        summary, code = run_shards(opts, processes)
    except OSError as exc:
        raise click.ClickException(f"capture could not start: {exc}") from None
    click.echo(json.dumps(summary, indent=2))
    up = summary.get("upload")
    if up is None or not up["local_copy_removed"]:
        click.echo(f"capture set: {opts.journal}  (replay: engine replay {opts.journal})", err=True)
    if up is not None and up["complete"]:
        gone = "; local copy removed" if up["local_copy_removed"] else ""
        click.echo(f"uploaded: {up['target']}  ({len(summary['shards'])} shards and"
                   f" captureset.json{gone})", err=True)  # fmt: skip
    if up is not None and not up["complete"]:
        if up["last_error"] is None:
            up = {**up, "last_error": f"shards incomplete: {', '.join(up['incomplete'])}"}
        line = upload_unfinished(up, opts.journal, also=SET_MANIFEST)
        if code in (0, 1):  # what did not ship is a data failure: exit 1, saying so
            raise click.ClickException(line)
        click.echo(line, err=True)
    if code:
        sys.exit(code)


def _default_channels(exchange: str) -> tuple[str, ...]:
    from engine.codecs.registry import get_codec

    return tuple(get_codec(exchange).default_channels)


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@click.command("run")
@click.option(
    "--exchange",
    type=click.Choice(sorted(CODECS)),
    default="sim",
    show_default=True,
    help="Where to capture from: the embedded simulator (no internet) or a venue.",
)
@click.option(
    "--sim",
    is_flag=True,
    help="Capture from the embedded simulator speaking --exchange's dialect (no internet);"
    " the journal names the venue.",
)
@click.option(
    "--symbols", default="btcusdt,ethusdt", show_default=True, help="Comma-separated symbols."
)
@click.option(
    "--channels",
    default=None,
    help="Comma-separated channels (default: the venue's default_channels; Binance: "
    f"{DEFAULT_CHANNELS}).",
)
@click.option(
    "--out",
    "--journal",
    "journal",
    type=click.Path(path_type=Path),
    default=None,
    help="Journal directory to create (default: journals/<exchange>-<UTC time>); --journal is"
    " the same option.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop after this many seconds.",
)
@click.option("--no-dashboard", is_flag=True, help="Plain status lines instead of the dashboard.")
@click.option("--url", default=None, help="WebSocket base URL (a replay server, a simulator …).")
@click.option("--rest-url", default=None, help="REST base URL for depth snapshots.")
@click.option(
    "--sim-faults",
    default="",
    help="Faults the embedded simulator injects: drop,stall,garbage,gap,close,shutdown,drift.",
)
@click.option(
    "--sim-fault-every", type=float, default=None, help="Seconds between injected faults."
)
@click.option(
    "--sim-seed", type=int, default=0, show_default=True, help="Seed of the embedded simulator."
)
@click.option(
    "--sim-rate", type=float, default=None, help="Embedded simulator frame rate (frames/s)."
)
@click.option(
    "--checkpoint-every",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds of journal time between state checkpoints (time travel).",
)
@click.option(
    "--verify-every",
    type=float,
    default=None,
    help="Seconds between drift-verification snapshots (default: the book reducer's, 300).",
)
@click.option("--max-streams-per-conn", type=int, default=1024, show_default=True)
@click.option(
    "--insecure", is_flag=True, help="Do not verify TLS certificates (never for real use)."
)
@click.option(
    "--min-free-mb",
    type=click.FloatRange(min=0),
    default=256.0,
    show_default=True,
    help="Stop cleanly (exit 4) when the journal's filesystem has less free space (0: never).",
)
@click.option(
    "--max-rest-bytes",
    type=click.IntRange(min=1),
    default=64 << 20,
    show_default=True,
    help="Largest REST response body read; a longer one is aborted and journaled as an error.",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Split the symbols across N capture processes, one journal shard each, under one"
    " capture-set directory (captureset.json); every reading command takes the set; with"
    " --upload each shard ships itself to URI/shard-k and captureset.json goes last.",
)
@click.option(
    "--upload",
    metavar="URI",
    default=None,
    help="Upload each sealed segment, the outputs, checkpoints and the manifest to URI"
    " (s3://BUCKET/PREFIX, gs://, file://) in the background, verified; the local copy is"
    " removed once verified unless --keep-local.",
)
@click.option("--keep-local", is_flag=True, help="With --upload: keep the local journal too.")
@click.option(
    "--segment-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seal the open segment at this size (default 64; with --upload: how soon data ships).",
)
@click.option(
    "--segment-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="...or at this age in seconds (default 3600).",
)
@s3_endpoint_option
@click.option("-v", "--verbose", count=True, help="More logging (-vv: debug).")
def run(
    exchange: str,
    sim: bool,
    symbols: str,
    channels: str | None,
    journal: Path | None,
    duration: float | None,
    no_dashboard: bool,
    url: str | None,
    rest_url: str | None,
    sim_faults: str,
    sim_fault_every: float | None,
    sim_seed: int,
    sim_rate: float | None,
    checkpoint_every: float,
    verify_every: float | None,
    max_streams_per_conn: int,
    insecure: bool,
    min_free_mb: float,
    max_rest_bytes: int,
    processes: int,
    upload: str | None,
    keep_local: bool,
    segment_mb: float | None,
    segment_seconds: float | None,
    verbose: int,
) -> None:
    """Capture market data into a new journal until Ctrl-C / SIGTERM (or --duration).

    With no arguments: starts the embedded Binance-compatible simulator on
    127.0.0.1 and captures from it; `--exchange NAME --sim` does the same with
    the simulator speaking NAME's dialect (faults: --sim-faults).  The journal is sealed on exit; replay it
    with `engine replay DIR`.  Exit status: 0 stopped as asked; 3 a journal
    write failed (disk full, I/O error: run `engine journal recover DIR`);
    4 free space fell below --min-free-mb (stopped in time, sealed); 1 the
    --upload did not finish (a second Ctrl-C cuts the final upload short).
    """
    from engine.sim.server import FAULTS

    logging.basicConfig(
        level=logging.DEBUG
        if verbose > 1
        else logging.INFO
        if verbose or no_dashboard or not sys.stdout.isatty()
        else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per REST request is noise
    faults = _csv(sim_faults)
    bad = [f for f in faults if f not in FAULTS]
    if bad:
        raise click.BadParameter(
            f"unknown fault(s) {bad}; choose from {','.join(FAULTS)}", param_hint="--sim-faults"
        )
    if sim and url:
        raise click.BadParameter(
            "--sim captures from the embedded simulator: drop --url", param_hint="--sim"
        )
    if sim:
        from engine.sim.dialect import DIALECTS

        if exchange not in DIALECTS:
            speaks = ", ".join(sorted(DIALECTS))
            raise click.BadParameter(
                f"the simulator does not speak {exchange!r}; it speaks: {speaks}",
                param_hint="--exchange",
            )
    if faults and not (sim or exchange == "sim"):
        raise click.BadParameter(
            "only the embedded simulator injects faults (add --sim)", param_hint="--sim-faults"
        )
    opts = RunOptions(
        exchange=exchange,
        sim=sim,
        symbols=_csv(symbols),
        channels=_csv(channels) if channels is not None else _default_channels(exchange),
        journal=journal,
        duration=duration,
        dashboard=not no_dashboard,
        url=url,
        rest_url=rest_url,
        sim_faults=faults,
        sim_fault_every=sim_fault_every,
        sim_seed=sim_seed,
        sim_rate=sim_rate,
        checkpoint_every_s=checkpoint_every,
        verify_every_s=verify_every,
        max_streams_per_conn=max_streams_per_conn,
        insecure=insecure,
        min_free_mb=min_free_mb,
        max_rest_bytes=max_rest_bytes,
        upload=upload,
        keep_local=keep_local,
        segment_mb=segment_mb,
        segment_s=segment_seconds,
    )
    if keep_local and upload is None:
        raise click.BadParameter("--keep-local goes with --upload", param_hint="--keep-local")
    if upload is not None:
        from engine.journal.location import LocationError, as_path

        try:
            as_path(upload)  # a bad URI is refused before anything is created
        except LocationError as exc:
            raise click.BadParameter(str(exc), param_hint="--upload") from None
    if not opts.symbols or not opts.channels:
        raise click.BadParameter("give at least one symbol and one channel")
    from engine.codecs.registry import get_codec

    try:  # the streams are named before anything is created: a bad channel makes nothing
        get_codec(exchange).streams(list(opts.symbols), list(opts.channels))  # type: ignore[attr-defined]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--channels") from None
    target = opts.journal or default_journal_dir(exchange)
    if (target / "journal.json").exists():
        raise click.UsageError(
            f"{target} already holds a journal: choose a new --journal directory"
        )
    existed = target.exists()
    opts = attrs.evolve(opts, journal=target.absolute())
    if processes > 1:
        params = click.get_current_context().params
        _run_sharded(
            attrs.evolve(
                opts, s3_endpoint=params.get("s3_endpoint"), gcs_endpoint=params.get("gcs_endpoint")
            ),
            processes,
        )
        return
    try:
        summary = trio.run(capture_main, opts)
    except BaseException as exc:
        if not existed:
            _remove_if_empty(target)
        from engine.cli import leaf_error

        leaf = leaf_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if isinstance(leaf, OSError):
            why = f"{leaf.strerror}: {leaf.filename}" if leaf.filename else leaf.strerror or leaf
            raise click.ClickException(f"capture could not start: {why}") from None
        raise
    click.echo(json.dumps(summary, indent=2))
    jdir = summary["journal"]
    stopped_by = summary.get("stopped_by", "")
    if stopped_by == "journal_write_failed":
        click.echo(
            f"journal write failed: {summary['stop_detail']}\n"
            "the open segment is left as it was on disk; free some space (sealing rewrites the "
            f"segment), then seal it with: engine journal recover {jdir}",
            err=True,
        )
    else:
        if stopped_by == "low_disk":
            click.echo(f"stopped: {summary['stop_detail']}", err=True)
        click.echo(f"journal sealed: {jdir}  (replay: engine replay {jdir})", err=True)
        up = summary.get("upload")
        if up is not None and up["complete"]:
            gone = "; local copy removed" if up["local_copy_removed"] else ""
            click.echo(f"uploaded: {up['target']}  ({up['files']} files{gone})", err=True)
    code = EXIT_CODES.get(stopped_by, 0)
    up = summary.get("upload")
    if up is not None and not up["complete"]:
        if not code:  # what did not ship is a data failure: exit 1, saying so
            raise click.ClickException(upload_unfinished(up, jdir))
        click.echo(upload_unfinished(up, jdir), err=True)
    if code:
        sys.exit(code)
