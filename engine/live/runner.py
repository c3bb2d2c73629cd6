"""One ``engine run`` capture as a trio function: options in, a sealed journal and its summary out.

Owns what a capture is made of and how it ends: :class:`RunOptions` (the
command line, parsed), the endpoints (an embedded simulator on 127.0.0.1
unless ``--exchange`` names a real venue or ``--url`` points elsewhere), the
journal with its manifest, the outputs recorder (for ``engine replay
--check``), the checkpoint writer (for ``engine book --at``), the background
uploader of ``--upload``, the display task, and :func:`capture_main`, which
runs them until Ctrl-C, SIGTERM or ``--duration`` stops the capture (the
journal is drained and sealed), then finishes the upload and returns the
summary.  Signals: the first one stops the capture; any signal once it is
stopping (a second Ctrl-C) cuts the final upload short, and the summary's
``upload`` says ``interrupted`` and what did not ship.

Must not: parse the command line, print, or choose an exit status (that is
:mod:`engine.live.cli`); hold capture logic (:mod:`engine.live.capture` and
its modules) or market logic (codecs and reducers).  Everything that shapes
state goes through the journal.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from engine.timefmt import format_ns

__all__ = ["RunOptions", "capture_main", "default_journal_dir", "simulated", "pipeline_options"]

log = logging.getLogger("engine.run")


@attrs.frozen
class RunOptions:
    """Everything ``engine run`` was asked for (the command line, parsed)."""

    exchange: str = "sim"
    symbols: tuple[str, ...] = ("btcusdt", "ethusdt")
    #: empty: the venue's ``codec.default_channels``
    channels: tuple[str, ...] = ()
    journal: Path | None = None
    duration: float | None = None
    dashboard: bool = True
    url: str | None = None
    rest_url: str | None = None
    #: capture from the embedded simulator speaking ``exchange``'s dialect (``exchange="sim"``
    #: always does: the Binance spot dialect under the name "sim")
    sim: bool = False
    sim_faults: tuple[str, ...] = ()
    sim_fault_every: float | None = None
    sim_seed: int = 0
    sim_rate: float | None = None
    checkpoint_every_s: float = 60.0
    verify_every_s: float | None = None
    max_streams_per_conn: int = 1024
    insecure: bool = False
    min_free_mb: float = 256.0
    max_rest_bytes: int = 64 << 20
    upload: str | None = None  #: ship sealed files to this location (engine.live.upload)
    keep_local: bool = False
    s3_endpoint: str | None = None  #: ``--s3-endpoint`` (the shards of ``--processes`` get it too)
    gcs_endpoint: str | None = None  #: ``--gcs-endpoint`` (likewise)
    segment_mb: float | None = None  #: rotate segments at this size (default: the writer's)
    segment_s: float | None = None  #: ... or this age


def default_journal_dir(exchange: str, now_ns: int | None = None) -> Path:
    """``journals/<exchange>-<UTC time>`` under the current directory (a new one each run)."""
    iso = format_ns(now_ns or time.time_ns(), 3)  # 2026-11-25T12:03:05.123Z
    stamp = iso[:-1].replace("-", "").replace(":", "").replace(".", "-")
    return Path("journals") / f"{exchange}-{stamp}"


def simulated(opts: RunOptions) -> bool:
    """Does this capture run against the embedded simulator?"""
    return (opts.sim or opts.exchange == "sim") and not opts.url


@asynccontextmanager
async def _endpoints(opts: RunOptions, codec: Any) -> AsyncIterator[tuple[str, str, Any]]:
    """(ws base URL, REST base URL, simulator or None) for the capture, for as long as it runs."""
    if simulated(opts):
        from engine.sim.cli import open_simulator
        from engine.sim.server import SimConfig

        lim = codec.limits  # the simulator keeps the venue's own limits
        cfg = SimConfig(
            venue=opts.exchange,
            control_limit=lim.control_per_window,
            control_window=lim.control_window_s,
            max_streams=lim.max_per_conn,
            port=0,
            seed=opts.sim_seed,
            symbols=[s.upper() for s in opts.symbols],
            faults=list(opts.sim_faults),
            fault_every=opts.sim_fault_every,
            rate=opts.sim_rate,
        )
        async with open_simulator(cfg) as sim:
            yield sim.ws_url, opts.rest_url or sim.rest_url, sim
        return
    ws = str(opts.url or getattr(codec, "ws_base", ""))
    rest = str(opts.rest_url or getattr(codec, "rest_base", ""))
    if opts.url and not opts.rest_url:
        # a local endpoint (replay server, simulator) serves REST on the same host:port
        rest = "http" + opts.url[2:] if opts.url.startswith("ws") else rest
    yield ws, rest, None


def _live_config(opts: RunOptions, ws: str, rest: str) -> Any:
    from engine.live.config import LiveConfig

    kw: dict[str, Any] = {}
    if simulated(opts):
        # loopback: a stall or a dead simulator is known within seconds, not tens of seconds
        kw.update(ping_interval_s=5.0, ping_timeout_s=5.0, stale_after_s=10.0, backoff_cap_s=5.0)
    return LiveConfig(
        exchange=opts.exchange,
        symbols=tuple(s.lower() for s in opts.symbols),
        channels=opts.channels,
        ws_url=ws,
        rest_url=rest,
        max_streams_per_conn=opts.max_streams_per_conn,
        verify_tls=not opts.insecure,
        min_free_bytes=int(opts.min_free_mb * 2**20),
        max_rest_bytes=opts.max_rest_bytes,
        **kw,
    )


def pipeline_options(opts: RunOptions) -> dict[str, Any]:
    """Reducer options of this capture (kept in the manifest so replay builds the same pipeline)."""
    return {} if opts.verify_every_s is None else {"verify_interval_s": opts.verify_every_s}


async def capture_main(opts: RunOptions, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> dict:
    """Run one capture to its end (signal, ``duration`` or cancellation); returns the summary."""
    from engine.assembly import standard_reducers
    from engine.codecs.registry import get_codec
    from engine.journal.recorder import OutputRecorder
    from engine.journal.writer import JournalWriter
    from engine.live.capture import Capture
    from engine.live.display import show
    from engine.replay.checkpoints import CheckpointPolicy, CheckpointWriter

    codec = get_codec(opts.exchange)
    if not opts.channels:
        opts = attrs.evolve(opts, channels=tuple(codec.default_channels))
    jdir = opts.journal or default_journal_dir(opts.exchange)
    started_ns = time.time_ns()
    async with _endpoints(opts, codec) as (ws, rest, sim):
        config = _live_config(opts, ws, rest)
        options = pipeline_options(opts)
        reducers = standard_reducers(codec, options)
        metadata = {
            "pipeline": options,
            "exchange": opts.exchange,
            "symbols": [s.upper() for s in config.symbols],
            "channels": list(config.channels),
            "ws_url": ws,
            "rest_url": rest,
            "simulator": None
            if sim is None
            else {"seed": opts.sim_seed, "faults": list(opts.sim_faults), "venue": opts.exchange},
            "config": json.loads(json.dumps(attrs.asdict(config), default=str)),
        }
        writer = JournalWriter.create(jdir, metadata, _writer_config(opts))
        recorder = OutputRecorder(jdir)
        checkpointer = CheckpointWriter(
            jdir, writer.metadata, CheckpointPolicy(every_s=opts.checkpoint_every_s)
        )
        capture = Capture(
            config, writer, codec, reducers, recorder=recorder, checkpointer=checkpointer
        )
        log.info("capturing %d streams from %s into %s", len(capture.streams), ws, jdir)
        uploader = _uploader(opts, jdir, capture)
        # a signal once the capture is stopping (a second Ctrl-C) cuts the final upload short
        final_upload = trio.CancelScope()
        stopping = False

        def stop(why: str) -> None:
            nonlocal stopping
            log.info("%s: stopping", why)
            stopping = True
            capture.stop()

        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as outer:

                async def on_signals() -> None:
                    async for sig in signals:
                        name = signal.Signals(sig).name
                        if not stopping:
                            stop(name)
                        elif uploader is not None and not final_upload.cancel_called:
                            log.info("%s: stopping the upload", name)
                            final_upload.cancel()

                outer.start_soon(on_signals)
                async with trio.open_nursery() as n:
                    if uploader is not None:
                        n.start_soon(uploader.run)

                    async def run_capture(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                        try:
                            await capture.run(task_status=task_status)
                        finally:  # the capture sealed its journal: the helpers below go too
                            n.cancel_scope.cancel()

                    async def stop_after(seconds: float) -> None:
                        await trio.sleep(seconds)
                        stop(f"duration of {seconds:g}s reached")

                    await n.start(run_capture)
                    task_status.started(capture)
                    n.start_soon(show, capture, list(config.symbols), opts.dashboard)
                    if opts.duration is not None:
                        n.start_soon(stop_after, opts.duration)
                stopping = True  # the capture ended by itself too (a journal write failed ...)
                summary = {
                    "journal": str(jdir),
                    **capture.status.summary(),
                    "checkpoints": len(checkpointer.written),
                }
                if sim is not None:
                    frames = sum(c["frames"] for c in sim.stats()["connections"])
                    summary["simulator_frames_sent"] = frames
                summary = _summary_fields(summary, jdir, started_ns)
                if uploader is not None:  # the journal is sealed: the last of it goes now
                    log.info("uploading the rest to %s (Ctrl-C leaves it local)", uploader.target)
                    done = False
                    with final_upload:
                        done = await uploader.finish()
                    summary["upload"] = _upload_summary(
                        uploader, jdir, done, interrupted=final_upload.cancelled_caught
                    )
                outer.cancel_scope.cancel()
        return summary


def _writer_config(opts: RunOptions) -> Any:
    from engine.journal.writer import WriterConfig

    kw: dict[str, Any] = {}
    if opts.segment_mb is not None:
        kw["segment_bytes"] = max(1, int(opts.segment_mb * 2**20))
    if opts.segment_s is not None:
        kw["segment_age_s"] = opts.segment_s
    return WriterConfig(**kw)


def _uploader(opts: RunOptions, jdir: Path, capture: Any) -> Any:
    """The background uploader of ``--upload`` (None without it); failures are journaled."""
    if opts.upload is None:
        return None
    from engine.journal.schema import Dir, Kind
    from engine.live.upload import Uploader

    def journal_failure(text: str) -> None:
        if capture.write_error is None and not capture.writer.closed:
            capture.journal(0, Dir.LOCAL, Kind.ERROR, "upload", text.encode())

    return Uploader(jdir, opts.upload, keep_local=opts.keep_local, on_error=journal_failure)


def _upload_summary(uploader: Any, jdir: Path, done: bool, *, interrupted: bool) -> dict[str, Any]:
    """The summary's ``upload``: what went, and what did not (it stays in ``jdir``)."""
    from engine.live.upload import remove_if_shipped

    removed = done and not uploader.keep_local and remove_if_shipped(jdir, uploader.report)
    left = {} if done else uploader.unshipped()
    return {
        "target": uploader.target,
        "complete": done,
        "interrupted": interrupted,
        "files": len(uploader.report.uploaded),
        "bytes": uploader.report.bytes,
        "not_uploaded": {"files": len(left), "bytes": sum(left.values())},
        "failures": uploader.failures,
        "last_error": uploader.last_error,
        "local_copy_removed": bool(removed),
    }


def _summary_fields(summary: dict[str, Any], jdir: Path, started_ns: int) -> dict[str, Any]:
    """What the summary's counters mean to a user: wall-clock times, both journal sizes."""
    from engine.journal.inspect import scan_journal
    from engine.journal.reader import JournalError

    summary.pop("started_mono", None)
    stopped_ns = time.time_ns()
    summary["started"] = format_ns(started_ns)
    summary["stopped"] = format_ns(stopped_ns)
    summary["duration_s"] = round((stopped_ns - started_ns) / 1e9, 3)
    # bytes appended while capturing; sealing compacts segments, so the disk size differs
    summary["journal_bytes_written"] = summary.pop("journal_bytes", 0)
    try:
        summary["journal_bytes_on_disk"] = scan_journal(jdir).disk_bytes  # as `journal inspect`
    except JournalError:  # --upload removed shipped segments: the local journal is a stub
        summary["journal_bytes_on_disk"] = None
    return summary
