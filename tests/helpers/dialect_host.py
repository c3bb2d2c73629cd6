"""What a simulator dialect talks to, without sockets: a real market as its host, a bare connection.

Tests of a dialect's replies (``control_reply(conn, text, host)``) over a real
:class:`engine.sim.model.Market`: :class:`Host` is the server's side of
:class:`engine.sim.dialect.DialectHost` (``drift = True`` edits the next book
served, as the drift fault does), :class:`Conn` the connection's subscriptions.
"""

from __future__ import annotations

from engine.sim.faults import drifted
from engine.sim.model import Market


class Host:
    """What a dialect reads of its server, over a real market."""

    max_streams = 200

    def __init__(self, market: Market) -> None:
        self.market = market
        self.valid_streams = frozenset(market.streams())
        self.drift = False

    def sim_now(self) -> int:
        return self.market.now_ms

    def book(self, symbol):
        view = self.market.view(symbol)
        if self.drift:
            self.drift = False
            return drifted(view, self.market.spec(symbol).step)
        return view

    def snapshot(self, symbol, limit, book):
        return self.market.snapshot(symbol, limit, book)


class Conn:
    """A connection's subscriptions, as a dialect (un)subscribes them."""

    def __init__(self) -> None:
        self.subs: dict[str, None] = {}

    def subscribe(self, s):
        self.subs[s] = None

    def unsubscribe(self, s):
        self.subs.pop(s, None)
