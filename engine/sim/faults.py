"""Fault injection for the simulator (and the replay server): what each fault does to a client.

``SimServer.inject()`` / ``/sim/inject`` apply one fault now; ``faults=[...]`` with
``fault_every`` schedules them (round-robin over the list, each hitting every
open WebSocket connection):

* ``drop``: no close frame; TCP FIN (after already-sent data), client sees 1006.
* ``stall``: stop sending *and* reading (so pings go unanswered) for
  ``stall_duration`` seconds (or ``duration=``), then resume.
* ``garbage``: four invalid frames: random bytes (binary frame), truncated
  JSON, a depthUpdate with wrong types, and non-JSON text (``kind=`` one of them).
* ``gap``: withhold the next update of one subscribed symbol's diff stream (the
  dialect's ``diff_stream``; or ``symbol=``) from this connection: a dropped
  update, which the client sees by its venue's rule (Binance: ``U`` > previous
  ``u`` + 1; a checksum venue: the next checksum fails).
* ``close``: close frame with ``code``/``reason`` (default 1011 "Simulated close").
* ``shutdown``: the serverShutdown notice, ``shutdown_grace`` seconds of normal
  streaming (so a client can open its replacement first), then close 1001.
* ``drift``: server-wide: the next snapshot served (REST or in-stream, any
  symbol) is of an edited book (:meth:`Faults.book`): its deepest bid (else
  ask) holds one lot step more than the stream implies.

This module owns the decisions (which connection, when, in what order) and
the log of what was injected.  It must not frame or send bytes itself (it
queues through :class:`engine.sim.connection.WsConn`) nor spell a venue's
shapes (the server's :class:`engine.sim.dialect.Dialect` does).  Its randomness (garbage bytes) comes
from its own ``Random`` seeded from the simulator's seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import trio

from engine.sim.connection import WsConn
from engine.sim.dialect import Dialect
from engine.sim.frames import BookView

__all__ = ["FAULTS", "Faults", "check_faults"]

#: Fault kinds, in the order ``--faults`` documents them.
FAULTS = ("drop", "stall", "garbage", "gap", "close", "shutdown", "drift")


def check_faults(faults: Iterable[str]) -> None:
    """Raises ValueError naming every unknown fault kind."""
    bad = [f for f in faults if f not in FAULTS]
    if bad:
        raise ValueError(f"unknown fault(s) {bad}; choose from {', '.join(FAULTS)}")


class Faults:
    """The faults of one server: injection, the schedule, the pending drift, the log."""

    def __init__(
        self,
        seed: int,
        conns: dict[int, WsConn],
        now_ms: Callable[[], int],
        fallback_stream: Callable[[], str],
        config: Any,
        dialect: Dialect,
        symbols: Callable[[], Iterable[str]],
    ) -> None:
        self._conns = conns
        self._dialect = dialect
        self._symbols = symbols
        self._now_ms = now_ms
        self._fallback_stream = fallback_stream
        self._cfg = config
        self._rng = random.Random(f"faults:{seed}")
        self._drift_pending = 0
        self.log: list[dict[str, Any]] = []

    def inject(self, fault: str, conn_id: int | None = None, **kw: Any) -> list[int]:
        """Inject ``fault`` now into one connection (``conn_id``) or all open ones.

        Returns the ids of the connections it was applied to (``[]`` for ``drift``,
        which arms the next REST snapshot instead).

        Raises:
            ValueError: unknown fault kind, or no open connection with ``conn_id``.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose from {', '.join(FAULTS)}")
        self.log.append({"fault": fault, "conn": conn_id, "sim_ms": self._now_ms(), **kw})
        if fault == "drift":
            self._drift_pending += 1
            return []
        if conn_id is not None:
            conn = self._conns.get(conn_id)
            if conn is None:
                raise ValueError(f"no open connection {conn_id}; open: {sorted(self._conns)}")
            targets = [conn]
        else:
            targets = list(self._conns.values())
        for c in targets:
            self._apply(c, fault, kw)
        return [c.id for c in targets]

    async def schedule(self, faults: list[str], every: float) -> None:
        """Forever: every ``every`` seconds, the next fault of ``faults`` on every connection."""
        i = 0
        while True:
            await trio.sleep(every)
            self.inject(faults[i % len(faults)])
            i += 1

    def book(self, view: BookView, step: int) -> BookView:
        """A book as served in a snapshot: drifted by one lot ``step`` if a drift is pending."""
        if not self._drift_pending:
            return view
        self._drift_pending -= 1
        return drifted(view, step)

    # ---------------------------------------------------------------- one connection

    def _apply(self, conn: WsConn, fault: str, kw: dict[str, Any]) -> None:
        nursery = conn.nursery
        if nursery is None or conn.closing or conn.ended:
            return
        conn.stats.faults.append(fault)
        if fault == "drop":
            conn.abort("drop", None, "simulated TCP drop")
        elif fault == "stall":
            duration = float(kw.get("duration", self._cfg.stall_duration))
            conn.stalled_until = trio.current_time() + duration
            nursery.start_soon(_unstall, conn)
        elif fault == "garbage":
            stream = next(iter(conn.subs), None) or self._fallback_stream()
            only = kw.get("kind")
            shapes = self._dialect.garbage(self._rng, stream, self._now_ms(), conn.combined)
            for kind, data, op in shapes:
                if only is None or kind == only:
                    conn.push_message("!garbage", data, op)
                    conn.stats.faults.append(f"garbage:{kind}")
        elif fault == "gap":
            diff_streams = {self._dialect.diff_stream(sym) for sym in self._symbols()}
            diffs = [s for s in conn.subs if s in diff_streams]
            if kw.get("symbol"):
                diffs = [self._dialect.diff_stream(str(kw["symbol"]))]
            if diffs:
                conn.withheld.add(diffs[0])
        elif fault == "close":
            code, reason = int(kw.get("code", 1011)), str(kw.get("reason", "Simulated close"))
            conn.begin_close("close", code, reason)
        elif fault == "shutdown":
            notice = self._dialect.server_shutdown(self._now_ms())
            if notice is not None:
                conn.push_message("!serverShutdown", notice)
            nursery.start_soon(_shutdown_later, conn, self._cfg.shutdown_grace)


def drifted(view: BookView, step: int) -> BookView:
    """``view`` with its deepest served bid (asks if there are no bids) ``step`` units larger.

    The deepest level, because the market rarely touches it: a verification that
    compares this snapshot with the book a few updates later still sees the drift
    (a drifted best level would usually be overwritten by the next diffs).
    """

    def edit(side: list[tuple[int, int]]) -> list[tuple[int, int]]:
        if side:
            p, q = side[-1]
            side[-1] = (p, q + step)
        return side

    if view.bids(1):
        return BookView(view.symbol, view.last_id, lambda n: edit(view.bids(n)), view.asks)
    return BookView(view.symbol, view.last_id, view.bids, lambda n: edit(view.asks(n)))


async def _unstall(conn: WsConn) -> None:
    await trio.sleep_until(conn.stalled_until)
    conn.stalled_until = 0.0


async def _shutdown_later(conn: WsConn, grace: float) -> None:
    await trio.sleep(grace)
    conn.begin_close("shutdown", 1001, "Server shutdown")
