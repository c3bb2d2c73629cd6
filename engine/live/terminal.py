"""Terminal layout pieces for the dashboard (rich): fit-or-compact, side-by-side panes, logs above it.

Owns how the dashboard's renderables meet a real terminal: :class:`Fit` picks
the full screen or the compact one by the terminal's height, :class:`Panes`
lays panes side by side as the width allows, :func:`logs_through` prints log
records above the live display instead of tearing it.  Must not: know what the
dashboard shows (that is :mod:`engine.live.dashboard` and
:mod:`engine.live.notable`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

__all__ = ["Fit", "Panes", "logs_through"]


class Fit:
    """The full screen if it fits the terminal's height, else the compact one (every symbol shown).

    The height is the console's (a real terminal's rows); a console without
    one (a pipe, a recording) has no limit: the full screen.
    """

    def __init__(self, full: RenderableType, compact: RenderableType) -> None:
        self.full = full
        self.compact = compact

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = options.height or (console.height if console.is_terminal else None)
        if height is not None:
            lines = console.render_lines(self.full, options.update(height=None), pad=False)
            if len(lines) > height:
                yield self.compact
                return
        yield self.full


class Panes:
    """Ladder, trades and candles side by side if the width allows, else candles below."""

    def __init__(self, *panes: RenderableType, gap: int = 3) -> None:
        self.panes = panes
        self.gap = gap

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        widths = [Measurement.get(console, options, p).maximum for p in self.panes]
        fit = len(self.panes)
        while fit > 1 and sum(widths[:fit]) + self.gap * (fit - 1) > options.max_width:
            fit -= 1
        grid = Table.grid(padding=(0, self.gap))
        for _ in range(fit):
            grid.add_column()
        grid.add_row(*self.panes[:fit])
        yield grid
        yield from self.panes[fit:]



class _LogToConsole(logging.Handler):
    """Prints log records above the live display (a plain stream write would tear it)."""

    def __init__(self, console: Console, formatter: logging.Formatter | None) -> None:
        super().__init__()
        self.console = console
        self.setFormatter(formatter or logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(Text(self.format(record)), soft_wrap=True)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def logs_through(console: Console) -> Iterator[None]:
    """While the display runs, root handlers writing to the terminal print through ``console``."""
    root = logging.getLogger()
    moved = [
        h
        for h in root.handlers
        if type(h) is logging.StreamHandler and getattr(h.stream, "isatty", lambda: False)()
    ]
    if not moved:
        yield
        return
    repl = _LogToConsole(console, moved[0].formatter)
    repl.setLevel(min(h.level for h in moved))
    for h in moved:
        root.removeHandler(h)
    root.addHandler(repl)
    try:
        yield
    finally:
        root.removeHandler(repl)
        for h in moved:
            root.addHandler(h)
