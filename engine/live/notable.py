"""What the live display says about numbers and outputs: exact text, alerts, one-line descriptions.

Owns: exact decimal text of engine units (:func:`column`, :func:`num`: every
value of a column with the decimals the most precise needs, zeros only, so
the text stays exact), a book's texts in one precision (:func:`quote`,
:func:`book_line`, spread in basis points :func:`bps`), the short time, age
and size texts of the screen, the sync-state and connection texts, which
outputs are shown as alerts or as good news (:data:`ALERT_KINDS`,
:data:`INFO_KINDS`), :func:`describe` (one line per output) and
:class:`Notable` (one remembered line).  Must not: read a clock, touch the
pipeline, or raise on a malformed output (the dashboard catches, but should
rarely need to).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from rich.console import RenderableType
from rich.text import Text

from engine.num import ONE, SCALE, UNIT, render
from engine.timefmt import format_ms, format_ns

__all__ = [
    "ALERT_KINDS",
    "DERIVED_EXTRA",
    "INFO_KINDS",
    "Notable",
    "ago",
    "bps",
    "book_decimals",
    "book_line",
    "clock",
    "column",
    "connection_text",
    "derived_text",
    "describe",
    "kind_of",
    "num",
    "phase_text",
    "price_text",
    "quote",
    "size",
    "stamp",
]


# =============================================================== exact text


def decimals(units: int) -> int:
    """Decimals ``units`` needs to print exactly (``4200050000000`` → 1)."""
    frac = abs(units) % ONE
    if not frac:
        return 0
    d = SCALE
    while frac % 10 == 0:
        frac //= 10
        d -= 1
    return d


def column(values: Sequence[int | None]) -> list[str]:
    """Exact decimal text of a column of units, all with the decimals the most precise needs."""
    d = max((decimals(v) for v in values if v is not None), default=0)
    return ["—" if v is None else render(v, d) for v in values]


def num(units: int | None) -> str:
    return column([units])[0]


def bps(spread: int | None, mid_x2: int | None) -> str:
    """Spread over mid in basis points, two decimals, truncated (``mid_x2`` is twice the mid)."""
    if spread is None or not mid_x2:
        return "—"
    x = abs(spread) * 2_000_000 // mid_x2  # hundredths of a bp: spread / (mid_x2 / 2) * 1e4 * 100
    if x == 0 and spread:
        return "<0.01" if spread > 0 else ">-0.01"
    return f"{'-' if spread < 0 else ''}{x // 100}.{x % 100:02d}"


def ago(ns: int) -> str:
    """An age: ``"350 ms ago"`` below a second, ``"12.3 s ago"`` below a minute, then ``"4 min ago"``."""
    ms = ns // 1_000_000
    if ms < 1000:
        return f"{ms} ms ago"
    if ms < 60_000:
        return f"{ms // 1000}.{ms % 1000 // 100} s ago"
    return f"{ms // 60_000:,} min ago"


def clock(ms: int, digits: int = 3) -> str:
    """``HH:MM:SS.mmm`` UTC of epoch ms (``digits`` 0: ``HH:MM:SS``), from engine.timefmt."""
    return format_ms(ms)[11 : 19 + (digits and digits + 1)]


def stamp(ns: int) -> str:
    """``YYYY-MM-DD HH:MM:SS.mmm UTC`` of epoch ns (``—`` for 0: nothing received yet)."""
    if ns <= 0:
        return "—"
    return format_ns(ns, 3)[:-1].replace("T", " ") + " UTC"


def size(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# =============================================================== a book's texts


def book_decimals(book: Any, depth: int) -> tuple[int, int]:
    """(price, qty) decimals of a symbol's screen: what its shown levels need, one for all."""
    bids, asks = book.top(depth)
    rows = [*bids, *asks]
    return (
        max((decimals(p) for p, _ in rows), default=0),
        max((decimals(q) for _, q in rows), default=0),
    )


def price_text(units: int | None, d: int) -> str:
    return "—" if units is None else render(units, d)


#: decimals a derived value (VWAP, SMA, EMA) shows beyond its symbol's price precision
DERIVED_EXTRA = 2


def derived_text(units: int | None, d: int) -> str:
    """A derived value (VWAP, SMA, EMA: itself a rounded quotient) for display, rounded half-even
    to ``d`` decimals; the exact figure stays in ``engine replay --json`` and the exports."""
    if units is None:
        return "—"
    if d >= SCALE:
        return render(units, SCALE)
    step = 10 ** (SCALE - d)
    q, r = divmod(units, step)
    if r * 2 > step or (r * 2 == step and q % 2):
        q += 1
    return render(q * step, d)


def quote(book: Any, depth: int) -> dict[str, str]:
    """Bid, ask (price × qty, and price alone), spread, spread in bps, mid: texts in one precision."""
    if book is None:
        return dict.fromkeys(("bid", "ask", "bid_price", "ask_price", "spread", "bps", "mid"), "—")
    dp, dq = book_decimals(book, depth)
    bb, ba = book.best_bid(), book.best_ask()
    mid_x2 = book.mid_x2()
    # the mid is exact in half units: one more decimal only when it needs it
    mid = "—"
    if mid_x2 is not None:
        m = mid_x2 // 2
        mid = render(m, 8) + "5" if mid_x2 % 2 else render(m, max(dp, decimals(m)))
    return {
        "bid": "—" if bb is None else f"{render(bb[0], dp)} × {render(bb[1], dq)}",
        "ask": "—" if ba is None else f"{render(ba[0], dp)} × {render(ba[1], dq)}",
        "bid_price": "—" if bb is None else render(bb[0], dp),
        "ask_price": "—" if ba is None else render(ba[0], dp),
        "spread": price_text(book.spread(), dp),
        "bps": bps(book.spread(), mid_x2),
        "mid": mid,
    }


def phase_text(phase: tuple[str, int]) -> Text:
    name, buffered = phase
    style = {"synced": "green", "primed": "green", "resyncing": "red"}.get(name, "yellow")
    extra = f" ({buffered} diffs buffered)" if buffered else ""
    return Text(f"{name}{extra}", style=style)


def book_line(book: dict[str, Any] | None, live: Any, depth: int) -> RenderableType:
    if not book or "last_id" not in book or live is None:  # nothing published (a primed book is)
        return Text("book not synced", style="dim")
    q = quote(live, depth)
    imb = book["imbalance"]
    if imb is not None and not imb.startswith("-"):
        imb = "+" + imb
    return Text.assemble(
        ("best bid ", "dim"),
        (q["bid"], "green"),
        ("   best ask ", "dim"),
        (q["ask"], "red"),
        ("   spread ", "dim"),
        q["spread"],
        (" (", "dim"),
        q["bps"],
        (" bps)   mid ", "dim"),
        q["mid"],
        (f"   imbalance (top {depth}) ", "dim"),
        str(imb or "—"),
    )


def connection_text(status: Any) -> Text:
    if status.connections_open > 0:
        return Text(f"● connected ({status.connections_open})", style="bold green")
    if status.connects == 0:
        return Text("○ connecting", style="bold yellow")
    return Text("✕ disconnected", style="bold red")


# =============================================================== notable outputs

#: Shown as alerts beside the anomaly alerts (:func:`engine.replay.replay.is_alert`, the one
#: definition replay and export use): the book/candle/outbound health outputs.
ALERT_KINDS = frozenset(
    {
        "GapDetected",
        "ChecksumMismatch",
        "DriftDetected",
        "CrossedBook",
        "TopOfBookMismatch",
        "KlineMismatch",
        "BufferOverflow",
        "VerificationAbandoned",
        "BookWithdrawn",
        "RateViolation",
    }
)
#: Outputs shown dimmed beside the alerts: things going right that an operator wants to see.
INFO_KINDS = frozenset({"BookSynced", "BookVerified", "BookResumed"})


def _tob(t: tuple[int, int, int, int]) -> str:
    bp, bq, ap, aq = t
    return f"{num(bp)}×{num(bq)} / {num(ap)}×{num(aq)}"


_DESCRIBE: dict[str, Any] = {
    "GapDetected": lambda o: (
        f"gap: book at {o.book_id}, diff {o.first_id}..{o.last_id} ({o.reason}); resyncing"
    ),
    "ChecksumMismatch": lambda o: (
        f"checksum mismatch after {o.book_id}..{o.last_id} (exchange {o.checksum}); resyncing"
    ),
    "DriftDetected": lambda o: (
        f"drift vs snapshot {o.snapshot_id}: {len(o.bids)} bid, {len(o.asks)} ask levels differ"
    ),
    "CrossedBook": lambda o: f"crossed book: bid {num(o.bid)} ≥ ask {num(o.ask)}",
    "BookWithdrawn": lambda o: (
        f"off the air at {o.book_id}: {o.reason}; "
        + ("kept until the next connection's diff chains" if o.kept else "awaiting a snapshot")
    ),
    "BookResumed": lambda o: (
        f"back on the air: diff {o.first_id}..{o.last_id} chains on {o.book_id}"
    ),
    "TopOfBookMismatch": lambda o: (
        f"bookTicker at {o.update_id}: ours {_tob(o.ours)}, theirs {_tob(o.theirs)}"
    ),
    "KlineMismatch": lambda o: (
        f"kline {o.interval} {clock(o.start_ms)}: "
        + ", ".join(
            f"{f} ours {num(a) if f != 'trades' else a} exch {num(b) if f != 'trades' else b}"
            for f, a, b in o.fields
        )
    ),
    "BufferOverflow": lambda o: f"diff buffer full ({o.limit}): dropping oldest",
    "VerificationAbandoned": lambda o: f"verification abandoned: {o.reason}",
    "BookSynced": lambda o: (
        f"{'re' if o.resync else ''}synced at {o.last_id} from snapshot {o.snapshot_id} "
        f"({o.replayed} diffs replayed, {o.bid_levels}/{o.ask_levels} levels)"
    ),
    "BookVerified": lambda o: f"verified at {o.last_id}: {o.levels} levels agree",
}


def _alert_text(o: Any) -> str:
    """An anomaly ``Alert`` without what the dashboard's other columns already say."""
    unit = getattr(o, "unit", "")
    fmt = num if unit == UNIT else str
    text = f"value {fmt(o.value)} ≥ threshold {fmt(o.threshold)}"
    if unit and unit != UNIT:
        text += f" {unit}"
    detail = getattr(o, "detail", "")
    return f"{text}  {detail}" if detail else text


def kind_of(output: Any) -> str:
    """What the alert column says: an anomaly's own kind ("large_trade"), else the class name."""
    name = type(output).__name__
    kind = getattr(output, "kind", None) if name == "Alert" else None
    return kind if isinstance(kind, str) and kind else name


def describe(output: Any) -> str:
    """One line saying what an output reports (time, symbol and kind are shown beside it)."""
    name = type(output).__name__
    if name == "Alert" and hasattr(output, "value") and hasattr(output, "threshold"):
        return _alert_text(output)
    f = _DESCRIBE.get(name)
    if f is not None:
        return str(f(output))
    line = getattr(output, "line", None)
    if callable(line):
        return str(line())
    return repr(output)


@attrs.frozen
class Notable:
    """One output worth showing: when (frame receive ns), which symbol, what kind, what it said."""

    recv_ns: int
    symbol: str
    kind: str
    text: str
    alert: bool
