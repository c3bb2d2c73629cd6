"""How a running capture is shown: the live dashboard on a terminal, plain status lines otherwise.

Owns the display task of ``engine run`` (:func:`show`: the dashboard when
stdout is a terminal, else a status line on stderr every 5 s),
:func:`run_dashboard` (the trio task that redraws
:class:`engine.live.dashboard.Dashboard` and writes it to the terminal) and
:func:`status_line` (the plain-log alternative).

Must not: decide what the screen holds (:meth:`engine.live.dashboard.Dashboard.render`
does, a pure function of the pipeline and the capture status), change
reducer state, or ever take the capture down: a render error is logged and
the next refresh tries again.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio
from rich.console import Console
from rich.live import Live

from engine.book_sync import PRIMED, SYNCED
from engine.live.dashboard import Dashboard, has_reducer
from engine.live.notable import stamp
from engine.live.terminal import logs_through

__all__ = ["show", "run_dashboard", "status_line"]

log = logging.getLogger("engine.live.dashboard")


async def show(capture: Any, symbols: list[str], dashboard: bool) -> None:
    """The dashboard on a terminal; otherwise a status line on stderr every 5 s."""
    if dashboard and sys.stdout.isatty():
        await run_dashboard(capture, symbols)
        return
    while True:
        await trio.sleep(5.0)
        print(status_line(capture.status, capture.pipeline), file=sys.stderr, flush=True)


def status_line(status: Any, pipeline: Any = None) -> str:
    """One plain log line (``engine run --no-dashboard``): the status, data time, books in sync.

    :meth:`engine.live.status.CaptureStatus.line` plus what only the pipeline knows
    (the receive time of the last frame folded, how many books are synced) and
    the last error.
    """
    parts = [status.line().strip()]
    if pipeline is not None:
        c = getattr(pipeline, "counters", None)
        ns = getattr(c, "last_recv_ns", 0) or 0
        parts.append(f"data {stamp(ns)}")
        if has_reducer(pipeline, "book"):
            state, red = pipeline.state("book"), pipeline.reducer("book")
            states = [red.sync_state(state, sym) for sym in state.symbols]
            books = f"books {states.count(SYNCED)}/{len(states)} synced"
            primed = states.count(PRIMED)
            parts.append(f"{books} ({primed} primed)" if primed else books)
    if status.last_error:
        parts.append(f"last error: {status.last_error}")
    return "  ".join(parts)


async def run_dashboard(
    capture: Any,
    symbols: Sequence[str],
    refresh_s: float = 0.5,
    *,
    dashboard: Dashboard | None = None,
    console: Console | None = None,
) -> None:
    """Redraw the dashboard of ``capture`` every ``refresh_s`` until cancelled.

    Run it as a task in the capture's nursery.  It listens to the capture's
    outputs (``capture.output_listeners``) unless a ``dashboard`` is given:
    then the caller feeds it.  :meth:`Dashboard.render`
    runs in this trio task between frames (the pipeline is not locked; what it
    returns holds plain text only), the layout and the terminal write in a
    worker thread.  An exception while rendering is logged once per distinct
    message and skipped — the display must never stop the capture.
    """
    dash = dashboard
    if dash is None:
        dash = Dashboard()
        capture.output_listeners.append(dash.on_outputs)
        listeners = getattr(capture.pipeline, "listeners", None)
        if isinstance(listeners, list):
            listeners.append(dash.on_events)
    if not dash.journal:
        dash.journal = str(getattr(getattr(capture, "writer", None), "path", "") or "")
    con = console or Console(file=sys.stdout)
    seen: set[str] = set()
    with (
        logs_through(con),
        Live(console=con, auto_refresh=False, redirect_stdout=False, redirect_stderr=False) as live,
    ):
        while True:
            try:
                # reading the pipeline (cheap) must happen here: it is not locked; laying out
                # and writing the screen (the slow part) goes to a worker thread, so the read
                # loop keeps stamping receive times (the GIL is handed over every 5 ms)
                view = dash.render(capture.pipeline, capture.status, symbols)
                await trio.to_thread.run_sync(partial(live.update, view, refresh=True))
            except Exception as exc:
                dash.render_errors += 1
                key = f"{type(exc).__name__}: {exc}"
                if key not in seen and len(seen) < 100:
                    seen.add(key)
                    log.exception("dashboard: render failed (skipped; capture unaffected)")
            await trio.sleep(refresh_s)
