"""``engine run --processes N``: one capture split across N processes, one journal shard each.

Owns splitting the symbols into shards (:func:`split`), the capture-set
directory (its ``captureset.json`` is written before any shard starts, by
:mod:`engine.journal.captureset`), starting one ``engine run`` child per shard
(each its own connections, journal, outputs, checkpoints and pipeline: a
shard is an ordinary capture of its symbols), the one simulator the shards
share when capturing from the simulator (its own process, so it does not
take a shard's core), forwarding SIGINT / SIGTERM to every child, reporting
a child that dies (which shard, its exit status) and the combined summary.
With ``--upload URI`` each shard uploads its own journal to
``URI/<its directory in the set>`` exactly as one ``engine run --upload``
does (:mod:`engine.live.upload`); once every shard has finished and its
upload is complete, the parent uploads ``captureset.json`` last, so a reader
of the store never meets a set whose members are incomplete.  A shard whose
upload is incomplete is named and leaves the set manifest local for
``engine journal push SET URI``; the other shards' uploads go on.  A second
signal is forwarded too (the shards cut their final uploads short) and stops
the parent's retries of the set manifest: no signal ever raises in the parent.

A shard dies with its parent (``PR_SET_PDEATHSIG``: SIGTERM, as a stop): a
kill -9 of the parent leaves no shard capturing unattended; each seals and
finishes its own upload.

Must not: capture, journal or fold anything itself (the children do), or
let a dying shard stop the others (they keep capturing; the set's exit
status says a shard failed).

Exit status: 0 when every shard stopped as asked; else the first of a
shard's own disk statuses (3 write failed, 4 low disk), else 1 (a shard
died or could not start, or its upload did not finish).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from engine.journal.captureset import SET_MANIFEST, write_set

__all__ = ["split", "Shard", "run_shards", "child_args"]

#: how often the parent looks at its children (s); nothing here is per frame
_POLL_S = 0.1
#: a child given SIGTERM has this long to seal its journal before it is killed
_STOP_GRACE_S = 60.0


def split(symbols: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """Symbols dealt round-robin into ``n`` shards (in the order given); each shard gets one at least."""
    if n < 1:
        raise ValueError(f"--processes must be at least 1, not {n}")
    if n > len(symbols):
        raise ValueError(
            f"--processes {n} needs at least {n} symbols (one shard per process); got"
            f" {len(symbols)}: {','.join(symbols)}"
        )
    return [tuple(symbols[i::n]) for i in range(n)]


@attrs.define
class Shard:
    index: int
    symbols: tuple[str, ...]
    journal: Path
    proc: subprocess.Popen[str] | None = None
    status: int | None = None
    summary: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return f"shard-{self.index}"


def child_args(opts: Any, symbols: Sequence[str], journal: Path, url: str | None,
               rest_url: str | None, upload: str | None = None) -> list[str]:  # fmt: skip
    """The ``engine run`` command line of one shard (``opts``: :class:`engine.live.runner.RunOptions`).

    ``upload``: the shard's own target (``URI/<shard>``) when the set is uploaded."""
    args = [
        sys.executable, "-m", "engine.cli", "run", "--no-dashboard",
        "--exchange", opts.exchange,
        "--symbols", ",".join(symbols),
        "--out", str(journal),
        "--checkpoint-every", repr(opts.checkpoint_every_s),
        "--max-streams-per-conn", str(opts.max_streams_per_conn),
        "--min-free-mb", repr(opts.min_free_mb),
        "--max-rest-bytes", str(opts.max_rest_bytes),
    ]  # fmt: skip
    if opts.channels:  # else the venue's default channels, as the parent's would be
        args += ["--channels", ",".join(opts.channels)]
    for flag, value in (
        ("--duration", opts.duration),
        ("--verify-every", opts.verify_every_s),
        ("--url", url),
        ("--rest-url", rest_url),
        ("--segment-mb", opts.segment_mb),
        ("--segment-seconds", opts.segment_s),
        ("--upload", upload),
        ("--s3-endpoint", opts.s3_endpoint),
        ("--gcs-endpoint", opts.gcs_endpoint),
    ):
        if value is not None:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    if opts.insecure:
        args.append("--insecure")
    if upload is not None and opts.keep_local:
        args.append("--keep-local")
    return args


#: Linux's prctl(2) option: the signal a process gets when its parent dies
_PR_SET_PDEATHSIG = 1
try:  # loaded in the parent: nothing is imported between fork and exec
    _LIBC: Any = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _LIBC = None


def _dies_with(parent: int) -> Any:
    """``preexec_fn`` of a child: SIGTERM when ``parent`` dies (even by SIGKILL), as a stop would."""

    def preexec() -> None:
        if _LIBC is not None and hasattr(_LIBC, "prctl"):
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # it died before the line above: stop at once
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _start_simulator(opts: Any, symbols: Sequence[str]) -> tuple[subprocess.Popen[str], str, str]:
    """``engine simulate`` (the venue's dialect) for every shard's symbols: (process, ws, REST base)."""
    from engine.codecs.registry import get_codec

    args = [sys.executable, "-m", "engine.cli", "simulate", "--port", "0", "--venue", opts.exchange,
            "--max-streams", str(get_codec(opts.exchange).limits.max_per_conn),
            "--seed", str(opts.sim_seed), "--symbols", ",".join(symbols)]  # fmt: skip
    if opts.sim_rate is not None:
        args += ["--rate", repr(opts.sim_rate)]
    if opts.sim_faults:
        args += ["--faults", ",".join(opts.sim_faults)]
    if opts.sim_fault_every is not None:
        args += ["--fault-every", repr(opts.sim_fault_every)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True, preexec_fn=_dies_with(os.getpid()))  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening "):
        _stop(proc)
        raise OSError(f"the simulator did not start: {line.strip() or 'no output'}")
    return proc, line.split()[1], line.split("rest=")[1].strip()


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _describe(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with status {status}"


def run_shards(opts: Any, n: int, say: Any = None) -> tuple[dict[str, Any], int]:
    """Capture ``opts`` (its ``journal`` is the set directory) in ``n`` processes until stopped.

    ``say``: where one-line reports go (a dying shard); default stderr.
    Returns the combined summary and the exit status.
    """
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    root = Path(opts.journal)
    groups = split([s.lower() for s in opts.symbols], n)
    cs = write_set(root, opts.exchange, groups, time.time_ns())
    shards = [Shard(i, g, root / m.journal) for i, (g, m) in enumerate(zip(groups, cs.members,
              strict=True))]  # fmt: skip
    sim = None
    url, rest = opts.url, opts.rest_url
    signals = {"seen": 0, "forwarded": 0}  # a second one cuts the uploads short

    def on_signal(signum: int, _frame: Any) -> None:
        signals["seen"] += 1

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:  # the handlers stay until the set manifest went: no signal ever raises here
        try:
            from engine.live.runner import simulated

            if simulated(opts):  # one simulator process, speaking the venue's dialect, for all
                sim, url, sim_rest = _start_simulator(opts, [s for g in groups for s in g])
                rest = rest or sim_rest
            for sh in shards:
                # a session of its own: a Ctrl-C on the terminal reaches the parent only, which
                # forwards it, so every shard gets exactly one stop
                up = None if opts.upload is None else _upload_target(opts.upload, root, sh)
                sh.proc = subprocess.Popen(
                    child_args(opts, sh.symbols, sh.journal, url, rest, up),
                    stdout=subprocess.PIPE, text=True, start_new_session=True,
                    preexec_fn=_dies_with(os.getpid()),
                )  # fmt: skip
            while any(sh.status is None for sh in shards):
                # each signal is forwarded once: the first stops the shards, a second their
                # final uploads (as it does for one `engine run`)
                while signals["forwarded"] < min(signals["seen"], 2):
                    for sh in shards:
                        if sh.status is None and sh.proc is not None:
                            sh.proc.send_signal(signal.SIGTERM)
                    signals["forwarded"] += 1
                for sh in shards:
                    if sh.status is None and sh.proc is not None and sh.proc.poll() is not None:
                        _collect(sh)
                        if not _upload_only(sh) and (
                            sh.status not in (0, 3, 4) or (sh.status and not signals["forwarded"])
                        ):
                            say(f"{sh.name} ({','.join(sh.symbols)}) {_describe(sh.status or 0)};"
                                f" journal {sh.journal}")  # fmt: skip
                time.sleep(_POLL_S)
        finally:
            for sh in shards:
                if sh.proc is not None and sh.status is None:
                    _stop(sh.proc)
                    _collect(sh)
            if sim is not None:
                _stop(sim)
        statuses = [sh.status or 0 for sh in shards]
        code = next((c for c in statuses if c in (3, 4)), 1 if any(statuses) else 0)
        summary: dict[str, Any] = {
            "captureset": str(root),
            "processes": n,
            "exchange": opts.exchange,
            "journal_frames": sum((sh.summary or {}).get("journal_frames", 0) for sh in shards),
            "shards": [
                {"name": sh.name, "symbols": [s.upper() for s in sh.symbols],
                 "journal": str(sh.journal), "exit_status": sh.status,
                 **({"summary": sh.summary} if sh.summary else {})}
                for sh in shards
            ],
        }  # fmt: skip
        if opts.upload is not None:
            # a signal once stopping (a second Ctrl-C, or one after the shards ended) cuts it short
            before = min(signals["seen"], 1)
            summary["upload"] = _finish_upload(
                opts, root, shards, say, lambda: signals["seen"] > before
            )
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return summary, code


def _upload_only(sh: Shard) -> bool:
    """Did the shard exit 1 only because its upload did not finish (named with the set's upload)?"""
    up = (sh.summary or {}).get("upload")
    return sh.status == 1 and up is not None and not up.get("complete")


def _upload_target(uri: str, root: Path, sh: Shard) -> str:
    """Where a shard uploads: ``URI/<its directory in the set>``."""
    from engine.live.upload import member_target

    return member_target(uri, sh.journal.relative_to(root).as_posix())


def _finish_upload(
    opts: Any, root: Path, shards: list[Shard], say: Any, interrupted: Callable[[], bool]
) -> dict[str, Any]:
    """Every shard has exited: name those whose upload is incomplete, else ship the set manifest.

    ``interrupted()``: a signal asked to stop uploading (the manifest's retries stop)."""
    import pyarrow as pa

    from engine.live.upload import upload_set_manifest

    incomplete, cut_short, files, size = [], False, 0, 0
    for sh in shards:
        up = (sh.summary or {}).get("upload")
        if up is None or not up.get("complete"):
            cut_short = cut_short or bool((up or {}).get("interrupted"))
            left = (up or {}).get("not_uploaded") or {}
            files, size = files + left.get("files", 0), size + left.get("bytes", 0)
            why = ("interrupted" if (up or {}).get("interrupted") else (up or {}).get("last_error")
                   or ("files pending" if up else
                       f"it {_describe(sh.status or 0)} before finishing"))  # fmt: skip
            incomplete.append(sh.name)
            say(f"{sh.name} ({','.join(sh.symbols)}): upload to"
                f" {_upload_target(opts.upload, root, sh)} incomplete: {why}")  # fmt: skip
    shipped, last_error, delay = False, None, 0.5
    for attempt in range(3 if not incomplete else 0):
        if interrupted():
            break
        try:
            upload_set_manifest(root, opts.upload)
            shipped = True
            break
        except (OSError, pa.ArrowException) as exc:
            last_error = f"{SET_MANIFEST}: {exc}"
            if attempt < 2:
                _sleep_unless(delay, interrupted)
                delay *= 2
    removed = False
    if shipped and not opts.keep_local and not any(sh.journal.exists() for sh in shards):
        (root / SET_MANIFEST).unlink(missing_ok=True)
        try:
            root.rmdir()
            removed = True
        except OSError:  # something else is in the set directory: it stays
            pass
    return {
        "target": opts.upload,
        "complete": shipped,
        "interrupted": not shipped and (cut_short or interrupted()),
        "incomplete": incomplete,
        "not_uploaded": {"files": files, "bytes": size},
        "last_error": last_error,
        "local_copy_removed": removed,
    }


def _sleep_unless(seconds: float, stop: Callable[[], bool]) -> None:
    """Sleep ``seconds``, or less when ``stop()`` turns true (looked at every poll)."""
    deadline = time.monotonic() + seconds
    while not stop() and time.monotonic() < deadline:
        time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))


def _collect(sh: Shard) -> None:
    """The exited child's status and its JSON summary (its stdout), if it printed one."""
    assert sh.proc is not None
    out = sh.proc.stdout.read() if sh.proc.stdout is not None else ""
    sh.status = sh.proc.wait()
    try:
        sh.summary = json.loads(out) if out.strip() else None
    except ValueError:
        sh.summary = None
    if sh.proc.stdout is not None:
        sh.proc.stdout.close()
