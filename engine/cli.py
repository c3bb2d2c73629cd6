"""The ``engine`` command line.

Subcommands live beside what they drive and are imported lazily, so
``engine journal inspect`` does not pay for trio-websocket and friends and a
broken module cannot take the whole CLI down.
"""

from __future__ import annotations

import importlib

import click

from engine import __version__

#: name → "module:attribute" of a click command.  The contract other issues rely on.
COMMANDS: dict[str, str] = {
    "run": "engine.live.cli:run",
    "simulate": "engine.sim.cli:simulate",
    "replay": "engine.replay.cli:replay",
    "book": "engine.replay.cli:book",
    "export": "engine.replay.cli:export",
    "import": "engine.replay.importers:import_group",
    "journal": "engine.journal.cli:journal",
}


class LazyGroup(click.Group):
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
