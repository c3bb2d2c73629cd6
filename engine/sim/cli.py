"""``engine simulate`` and the embedding API of the exchange simulator.

This module owns the simulator's front doors: :func:`open_simulator` (an async
context manager that runs a :class:`engine.sim.server.SimServer` in its own
nursery — what ``engine run`` with no arguments uses) and the click command.
It must not hold protocol rules or market logic (those live in
:mod:`engine.sim.server` and :mod:`engine.sim.model`).

The command's first stdout line is machine-readable, for tests and scripts
that start it as a subprocess::

    listening ws://127.0.0.1:PORT rest=http://127.0.0.1:PORT
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import attrs
import click
import trio

from engine.sim.dialect import names as dialect_names
from engine.sim.model import DEFAULT_SYMBOLS
from engine.sim.server import FAULTS, SimConfig, SimServer

__all__ = [
    "Simulator",
    "limit_options",
    "limits",
    "plain_errors",
    "open_simulator",
    "parse_epoch",
    "simulate",
]


@attrs.define
class Simulator:
    """A running simulator: where to connect, its counters, and fault injection."""

    server: SimServer

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def ws_url(self) -> str:
        """Base WebSocket URL: append ``/ws/<stream>`` or ``/stream?streams=a/b``."""
        return f"ws://{self.server.config.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        """Base REST URL: append ``/api/v3/depth?symbol=BTCUSDT&limit=1000``."""
        return f"http://{self.server.config.host}:{self.port}"

    @property
    def market(self) -> Any:
        """The live :class:`engine.sim.model.Market` (read-only use: the pump advances it)."""
        return self.server.market

    def stats(self) -> dict[str, Any]:
        return self.server.stats()

    def inject(self, fault: str, conn_id: int | None = None, **kw: Any) -> list[int]:
        """See :meth:`engine.sim.server.SimServer.inject`."""
        return self.server.inject(fault, conn_id, **kw)


@asynccontextmanager
async def open_simulator(config: SimConfig | None = None, **kw: Any) -> AsyncIterator[Simulator]:
    """Run a simulator for the duration of the block (``config`` or SimConfig(**kw)).

    The server listens once the block is entered; leaving the block cancels
    every simulator task and closes every socket.
    """
    cfg = config if config is not None else SimConfig(**kw)
    server = SimServer(cfg)
    async with trio.open_nursery() as nursery:
        await server.start(nursery)
        try:
            yield Simulator(server)
        finally:
            nursery.cancel_scope.cancel()


def parse_epoch(text: str) -> int | None:
    """``--epoch`` → epoch ms, or None for ``now`` (the server then takes the wall clock).

    Any TIME the engine reads (:func:`engine.timefmt.parse_time`: ISO-8601, UTC
    unless a zone is given; integer epoch ns; epoch seconds with a fraction).

    Raises:
        ValueError: none of those forms.
    """
    if text.strip().lower() == "now":
        return None
    from engine.timefmt import parse_time

    return parse_time(text) // 1_000_000


def limit_options(only_with: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--max-connections`` and ``--max-buffered-mb`` (the limits against hostile clients).

    Both default to None: :class:`SimConfig`'s defaults (:func:`limits` maps them).
    ``only_with`` prefixes the help (``"With --serve: "``).
    """
    defaults = SimConfig()
    conns, budget = defaults.max_connections, defaults.max_buffered // (1024 * 1024)

    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.option(
            "--max-buffered-mb",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help=f"{only_with}MiB of memory for all clients' buffers together (default {budget});"
            " queued bytes get half, and past that the clients that read least are closed with"
            " 1008.",
        )(fn)
        return click.option(
            "--max-connections",
            type=click.IntRange(min=1),
            default=None,
            help=f"{only_with}WebSocket clients at once (default {conns}); one more is refused"
            " with HTTP 503.",
        )(fn)

    return add


def limits(max_connections: int | None, max_buffered_mb: float | None) -> dict[str, int]:
    """The :class:`SimConfig` fields the options of :func:`limit_options` set (none if not given)."""
    out = {}
    if max_connections is not None:
        out["max_connections"] = max_connections
    if max_buffered_mb is not None:
        out["max_buffered"] = max(1, int(max_buffered_mb * 1024 * 1024))
    return out


@contextmanager
def plain_errors(*types: type[BaseException]) -> Iterator[None]:
    """Re-raise a lone ``OSError`` (or one of ``types``) out of trio's exception groups as itself.

    A port in use fails inside a nursery, which wraps it (in groups within
    groups); the commands report it as one line, not as a traceback.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], (OSError, *types)):
            raise leaves[0] from None
        raise


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@click.command("simulate")
@click.option(
    "--venue",
    default="binance",
    show_default=True,
    help="The venue whose dialect the simulator speaks: " + ", ".join(dialect_names()) + ".",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=0, show_default=True, help="TCP port (0 = pick a free one).")
@click.option("--seed", default=0, show_default=True, help="Market seed: same seed, same streams.")
@click.option(
    "--symbols",
    default=",".join(s.lower() for s in DEFAULT_SYMBOLS),
    show_default=True,
    help="Comma-separated symbols (known grids for btcusdt, ethusdt, bnbusdt, solusdt, shibusdt).",
)
@click.option(
    "--rate", type=float, default=None, help="Target frames/s over all streams (load tests)."
)
@click.option("--faults", default="", help=f"Comma-separated faults to inject: {','.join(FAULTS)}.")
@click.option("--fault-every", type=float, default=None, help="Seconds between injected faults.")
@click.option("--ping-interval", type=float, default=20.0, show_default=True)
@click.option("--pong-timeout", type=float, default=60.0, show_default=True)
@click.option("--max-streams", type=int, default=1024, show_default=True)
@click.option(
    "--lifetime", type=float, default=86_400.0, show_default=True, help="Connection lifetime (s)."
)
@limit_options()
@click.option(
    "--epoch",
    default="now",
    show_default=True,
    help="Exchange time the market starts at: a TIME (2024-01-01T00:00:00Z, epoch ns, epoch"
    " seconds with a fraction) or 'now' (the wall clock). A fixed epoch with a fixed --seed gives the same bytes every run.",
)
def simulate(
    venue: str,
    host: str,
    port: int,
    seed: int,
    symbols: str,
    rate: float | None,
    faults: str,
    fault_every: float | None,
    ping_interval: float,
    pong_timeout: float,
    max_streams: int,
    lifetime: float,
    max_connections: int | None,
    max_buffered_mb: float | None,
    epoch: str,
) -> None:
    """Run the exchange simulator (speaking --venue's dialect) on loopback until Ctrl-C / SIGTERM."""
    try:
        cfg = SimConfig(
            venue=venue,
            host=host,
            port=port,
            seed=seed,
            symbols=[s.upper() for s in _csv(symbols)],
            rate=rate,
            faults=_csv(faults),
            fault_every=fault_every,
            ping_interval=ping_interval,
            pong_timeout=pong_timeout,
            max_streams=max_streams,
            lifetime=lifetime,
            epoch=parse_epoch(epoch),
            **limits(max_connections, max_buffered_mb),
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    try:
        with plain_errors():
            summary = trio.run(_serve, cfg)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    click.echo(summary, err=True)


async def _serve(cfg: SimConfig) -> str:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_simulator(cfg) as sim:
            print(f"listening {sim.ws_url} rest={sim.rest_url}", flush=True)
            if sim.server.dialect.rest_route("/api/v3/depth") == "depth":  # Binance spot's shape
                print(
                    f"streams: {sim.ws_url}/stream?streams="
                    + "/".join(sim.market.streams()[:3])
                    + f"  snapshot: {sim.rest_url}/api/v3/depth?symbol={sim.market.symbols[0]}"
                    + f"&limit=100  stats: {sim.rest_url}/sim/stats",
                    flush=True,
                )
            else:
                print(
                    f"venue: {cfg.venue}  streams: "
                    + " ".join(sim.market.streams()[:3])
                    + f"  stats: {sim.rest_url}/sim/stats",
                    flush=True,
                )
            async for _sig in signals:
                break
            st = sim.stats()
    frames = sum(c["frames"] for c in st["connections"])
    sys.stdout.flush()
    return json.dumps(
        {
            "stopped": True,
            "connections": len(st["connections"]),
            "frames_sent": frames,
            "slow_consumers": st["limits"]["slow_consumers"],
            "refused_connections": st["limits"]["refused_connections"],
            "sim_ms": st["sim_ms"],
        }
    )
