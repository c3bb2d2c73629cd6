"""The ``engine`` command line: the root group and the one exit-code rule.

Subcommands live beside what they drive and are imported lazily, so
``engine journal inspect`` does not pay for trio-websocket and friends and a
broken module cannot take the whole CLI down.

Exit codes, the same for every command (implemented here once, in
:meth:`LazyGroup.main`): **0** success; **1** a data or check failure (a
journal that is not one or is damaged, a difference found by ``--check``, a
time outside the journal, a file or port the system refuses); **2** a usage
error (a bad option, a missing argument or folder, options that cannot be
combined).  Every failure is one line on stderr, never a traceback
(``ENGINE_TRACEBACK=1`` shows it for an unexpected error).  Commands raise
:class:`UsageFailure` / :class:`DataFailure` (or click's own usage errors, or
let an ``OSError`` / ``JournalError`` escape); they never pick an exit code.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from engine import __version__

#: name → "module:attribute" of a click command.  The contract other issues rely on.
COMMANDS: dict[str, str] = {
    "run": "engine.live.cli:run",
    "simulate": "engine.sim.cli:simulate",
    "replay": "engine.replay.cli:replay",
    "book": "engine.replay.cli_book:book",
    "export": "engine.replay.cli_export:export",
    "import": "engine.replay.importers:import_group",
    "journal": "engine.journal.cli:journal",
}


class UsageFailure(click.UsageError):
    """The command was asked something it cannot do as asked: exit 2."""


class DataFailure(click.ClickException):
    """The data (a journal, a file, a port) did not allow it, or a check failed: exit 1."""


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {' '.join(message.split())}", err=True)
    sys.exit(code)


def journal_holding(path: Path) -> Path | None:
    """The journal directory ``path`` is (or lies inside), or None."""
    from engine.journal.schema import MANIFEST

    p = path.absolute()
    for d in (p, *p.parents):
        if (d / MANIFEST).is_file():
            return d
    return None


def guard_output(path: Path, *, force: bool, option: str = "--out", forceable: bool = True) -> None:
    """Refuse to write ``path`` if it exists or lies inside a journal, unless ``--force``.

    A directory output (export, import) "exists" when it holds anything: an
    earlier result would be silently mixed with or replaced by the new one.
    ``forceable=False``: the command has no ``--force`` (it never replaces).

    Raises:
        UsageFailure: what is refused and how to go on.
    """
    if force:
        return
    hint = " (or --force to write there anyway)" if forceable else ""
    inside = journal_holding(path)
    if inside is not None and inside == path.absolute():
        raise UsageFailure(f"{option} {path} already holds a journal: choose a new path{hint}")
    if inside is not None:
        raise UsageFailure(
            f"{option} {path} is inside the journal {inside}: choose a path outside it{hint}"
        )
    if path.is_dir() and any(path.iterdir()) or (path.exists() and not path.is_dir()):
        raise UsageFailure(
            f"{option} {path} already exists: choose a new path"
            + (" or give --force" if forceable else "")
        )


def deprecated(old: str, new: str) -> None:
    """The one-line note an old option spelling prints (it still works)."""
    click.echo(f"note: {old} is deprecated; use {new}", err=True)


def leaf_error(group: BaseExceptionGroup) -> BaseException:
    """The first error of an exception group that is not itself a group (what went wrong)."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup) and first.exceptions:
        first = first.exceptions[0]
    return first


class LazyGroup(click.Group):
    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Run a command; turn every failure into one stderr line and the exit-code rule."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **kwargs)
        from engine.journal.reader import JournalError

        try:
            try:
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **kwargs)
            except BaseExceptionGroup as group:  # trio nurseries wrap what a task raised
                raise leaf_error(group) from None
        except click.exceptions.Abort:
            _fail("aborted", 130)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _fail(exc.format_message() + where, 2)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            _fail(f"{exc.strerror}{where}" if exc.strerror else str(exc), 1)
        except JournalError as exc:
            _fail(str(exc), 1)
        except Exception as exc:  # noqa: BLE001 - a bug still gets one line, not a traceback
            if os.environ.get("ENGINE_TRACEBACK"):
                raise
            _fail(f"internal error {type(exc).__name__}: {exc} (ENGINE_TRACEBACK=1 shows where)", 1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._load(name) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                return None  # not built yet
            raise
        cmd = getattr(module, attr, None)
        return cmd if isinstance(cmd, click.Command) else None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="engine")
def main() -> None:
    """wiretape: capture exchange WebSocket market data into Arrow journals and replay it exactly.

    With no arguments, `engine run` starts the embedded exchange simulator on
    127.0.0.1 and captures from it (no internet needed).
    """


if __name__ == "__main__":  # pragma: no cover
    main()
