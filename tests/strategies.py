"""Shared hypothesis strategies for every event class in engine.events (import from any test).

Values stay inside what codecs can produce: prices and quantities are ints
≥ 0 in engine units (int64-bounded: well inside num.MAX), ids and exchange times are int64-bounded
and ≥ 0 (``-1`` where Binance uses it for "none"), symbols are upper case.
``events()`` draws any event; ``STRATEGIES`` maps each class to its strategy,
and classes added to engine.events later fall back to ``st.builds`` by type
(tests/test_serde.py checks every class is covered).
"""

from __future__ import annotations

import attrs
from hypothesis import strategies as st

from engine import events as ev

__all__ = [
    "INT64",
    "units",
    "prices",
    "qtys",
    "levels",
    "symbols",
    "ids",
    "ms",
    "opt_ms",
    "event_classes",
    "STRATEGIES",
    "strategy_for",
    "events",
    "market_events",
]

INT64 = 2**63 - 1

seqs = st.integers(1, INT64)
recv_ns = st.integers(0, INT64)
#: prices and quantities: exact engine units, ≥ 0; mostly realistic magnitudes, sometimes huge.
units = st.one_of(st.integers(0, 10**16), st.integers(0, INT64))
prices = st.integers(1, 10**16)
qtys = st.integers(0, 10**16)
levels = st.lists(st.tuples(prices, qtys), max_size=8)
symbols = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=12)
ids = st.integers(0, INT64)
opt_ids = st.integers(-1, INT64)
ms = st.integers(0, 2**53)
opt_ms = st.none() | ms
sides = st.sampled_from([ev.BUY, ev.SELL])
sources = st.sampled_from(
    [
        "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms",
        "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000",
        "wss://127.0.0.1:9443/ws/btcusdt@trade",
    ]
) | st.text(max_size=40)
request_ids = st.none() | st.integers(-(2**31), 2**31) | st.text(max_size=10)
conns = st.integers(0, 2**32 - 1)


def event_classes() -> list[type]:
    """Every attrs event class exported by engine.events."""
    return [
        obj for name in ev.__all__ if isinstance(obj := getattr(ev, name), type) and attrs.has(obj)
    ]


@st.composite
def _trade(draw: st.DrawFn) -> ev.Trade:
    agg = draw(st.booleans())
    first = draw(ids)
    last = draw(st.integers(first, INT64)) if agg else first
    tid = draw(ids) if agg else first
    return ev.Trade(
        draw(seqs), draw(recv_ns), draw(symbols), tid, draw(prices), draw(qtys), draw(sides),
        draw(opt_ms), draw(opt_ms), first, last, agg,
    )  # fmt: skip


@st.composite
def _depth(draw: st.DrawFn) -> ev.DepthDiff:
    first = draw(ids)
    return ev.DepthDiff(
        draw(seqs), draw(recv_ns), draw(symbols), first, draw(st.integers(first, INT64)),
        draw(st.none() | opt_ids), draw(opt_ms), draw(opt_ms), draw(levels), draw(levels),
    )  # fmt: skip


STRATEGIES: dict[type, st.SearchStrategy] = {
    ev.Trade: _trade(),
    ev.DepthDiff: _depth(),
    ev.BookSnapshot: st.builds(
        ev.BookSnapshot,
        seqs,
        recv_ns,
        symbols,
        ids,
        levels,
        levels,
        st.none() | st.sampled_from([5, 10, 20, 100, 1000, 5000]),
        st.sampled_from(["rest", "stream"]),
        opt_ms,
        opt_ms,
    ),  # fmt: skip
    ev.BookTicker: st.builds(
        ev.BookTicker, seqs, recv_ns, symbols, ids, prices, qtys, prices, qtys, opt_ms, opt_ms
    ),
    ev.Ticker24h: st.builds(
        ev.Ticker24h,
        seqs,
        recv_ns,
        symbols,
        opt_ms,
        st.none() | prices,
        st.none() | qtys,
        st.none() | prices,
        st.none() | prices,
        st.none() | prices,
        st.none() | prices,
        st.none() | units,
        st.none() | units,
        st.none() | st.integers(-(10**16), 10**16),
        st.none() | prices,
        st.none() | prices,
        st.none() | ms,
        st.none() | ms,
        st.none() | opt_ids,
        st.none() | opt_ids,
        st.none() | ids,
        st.none() | qtys,
        st.none() | qtys,
        st.booleans(),
    ),  # fmt: skip
    ev.Kline: st.builds(
        ev.Kline,
        seqs,
        recv_ns,
        symbols,
        opt_ms,
        st.sampled_from(["1s", "1m", "5m", "1h", "1d"]),
        ms,
        ms,
        prices,
        prices,
        prices,
        prices,
        units,
        units,
        ids,
        st.booleans(),
        opt_ids,
        opt_ids,
        units,
        units,
    ),  # fmt: skip
    ev.SubscriptionAck: st.builds(
        ev.SubscriptionAck, seqs, recv_ns, request_ids, st.none() | st.lists(st.text(max_size=30))
    ),
    ev.SubscriptionError: st.builds(
        ev.SubscriptionError, seqs, recv_ns, request_ids, st.integers(-(2**31), 2**31), st.text()
    ),
    ev.ServerShutdown: st.builds(ev.ServerShutdown, seqs, recv_ns, opt_ms),
    ev.Heartbeat: st.builds(
        ev.Heartbeat, seqs, recv_ns, st.sampled_from(["pong", "heartbeat"]), opt_ms
    ),
    ev.StreamSequence: st.builds(ev.StreamSequence, seqs, recv_ns, sources, st.integers(0, INT64)),
    ev.DecodeError: st.builds(
        ev.DecodeError,
        seqs,
        recv_ns,
        sources,
        st.text(max_size=200),
        st.binary(max_size=ev.EXCERPT_BYTES),
    ),  # fmt: skip
    ev.ConnectionOpened: st.builds(ev.ConnectionOpened, seqs, recv_ns, conns, sources),
    ev.ConnectionClosed: st.builds(
        ev.ConnectionClosed,
        seqs,
        recv_ns,
        conns,
        sources,
        st.none() | st.integers(1000, 4999),
        st.text(max_size=123),
    ),  # fmt: skip
    ev.ConnectionFailed: st.builds(ev.ConnectionFailed, seqs, recv_ns, conns, sources, st.text()),
    ev.FrameConn: st.builds(ev.FrameConn, seqs, recv_ns, conns),
    ev.Marker: st.builds(ev.Marker, seqs, recv_ns, sources, st.text()),
    ev.ControlSent: st.builds(
        ev.ControlSent, seqs, recv_ns, conns, sources, st.binary(max_size=300)
    ),
}


def strategy_for(cls: type) -> st.SearchStrategy:
    """The strategy of one event class (type-inferred for classes this module does not know yet)."""
    s = STRATEGIES.get(cls)
    return s if s is not None else st.builds(cls)


def events() -> st.SearchStrategy:
    """Any event of any class in engine.events."""
    return st.one_of([strategy_for(c) for c in event_classes()])


def market_events() -> st.SearchStrategy:
    """Trades, depth diffs, snapshots, tickers and klines only."""
    return st.one_of(
        [STRATEGIES[c] for c in (ev.Trade, ev.DepthDiff, ev.BookSnapshot, ev.BookTicker,
                                 ev.Ticker24h, ev.Kline)]
    )  # fmt: skip
