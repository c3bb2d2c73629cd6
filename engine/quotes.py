"""The anomaly detector's quote checks: crossed and wide spreads on the exchange's top of book.

Owns: the rules below and :func:`quote_alerts`, which applies them to one
quote for :class:`engine.anomaly.AnomalyDetector` (whose configuration, state
and :class:`~engine.anomaly.Alert` outputs they are; the other rules and the
alert convention, value ≥ threshold, are in :mod:`engine.anomaly`).  Must
not: read the clock, do I/O, use floats, or raise on any event.

crossed_book (engine units of price) and wide_spread
    Quotes are the exchange's own top of book: ``BookTicker`` events and the
    best levels of ``BookSnapshot`` events (REST or in-stream partial depth).
    The diff-built book lives in :mod:`engine.book_reducer`, which reports its
    own crossing as ``CrossedBook``; this module does not keep a second book.
    A symbol's quotes are its BookTickers and BookSnapshots in event order;
    a quote with an empty side (price 0 / no level) is ignored.  Spread
    alerts are per episode (a wide book stays wide for many updates, one
    alert says it); trade alerts are per trade (each trade is its own event).
    ``crossed_book``: a BookTicker with bid ≥ ask (locked counts) after one that was not,
    value ``bid - ask``, threshold 0.  Only BookTickers: a crossed BookSnapshot is the
    book reducer's to report (it loads that snapshot and says ``CrossedBook``); counting
    it here too would report one crossing twice.  A crossed snapshot still ends every
    wide episode.
    ``wide_spread`` has three criteria, each with its own *episode*: an alert
    when a quote meets the criterion and the symbol's previous quote did not
    (a crossed quote ends every wide episode; a non-crossed one ends the
    crossed episode): ``abs`` spread ≥ ``spread_abs`` (engine price units); ``bps``
    spread / mid ≥ ``spread_bps`` (bps); ``vs median`` spread ≥
    ``spread_median_ratio_pct``% of the *lower median* (element ``(M-1)//2``
    of the sorted window, an exact int) of the previous ``spread_window``
    non-crossed spreads, once the window is full and its median > 0.
    Rolling median: the window is kept twice, in arrival order (a deque) and
    sorted (a list); each quote does one ``bisect`` to remove the oldest and
    one ``insort`` to add the newest: O(log M) comparisons plus an O(M)
    memmove of pointers, and nothing when the spread leaving the window equals
    the one entering it (the common case on a liquid book, whose spread is one
    tick most of the time).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import Any

from engine import num
from engine.events import BookTicker
from engine.reducer import NO_OUTPUTS

__all__ = ["CROSSED_BOOK", "WIDE_SPREAD", "quote_alerts", "ceil_div"]

WIDE_SPREAD = "wide_spread"
CROSSED_BOOK = "crossed_book"

# wide-spread criteria, as bits of SymbolWatch.wide
_ABS, _BPS, _MEDIAN = 1, 2, 4


def ceil_div(a: int, b: int) -> int:
    """``a / b`` rounded up (exact ints, ``b > 0``): thresholds are rounded up to their unit."""
    return -(-a // b)


def quote_alerts(
    cfg: Any, state: Any, s: Any, ev: Any, bid: int, ask: int, out: list[Any] | None
) -> Any:
    """The checks of one quote (``bid``, ``ask`` > 0) of symbol record ``s``: ``out`` plus alerts.

    ``cfg`` is the :class:`~engine.anomaly.AnomalyDetector` (thresholds, ``alert``).
    """
    sym = ev.symbol
    exch = ev.exch_ms
    ticker = type(ev) is BookTicker
    if bid >= ask:
        s.wide = 0
        # a crossed snapshot is the book reducer's to report (CrossedBook when it loads it)
        if ticker and not s.crossed:
            s.crossed = True
            if out is None:
                out = []
            cfg.alert(
                state, out, ev, CROSSED_BOOK, sym, exch, bid - ask, 0, num.UNIT,
                f"{type(ev).__name__} bid {num.render(bid)} >= ask {num.render(ask)}",
            )  # fmt: skip
        return out if out else NO_OUTPUTS
    if ticker:
        s.crossed = False
    spread = ask - bid
    met = 0
    a = cfg.spread_abs
    if a is not None and spread >= a:
        met = _ABS
    b = cfg.spread_bps
    if b is not None and spread * 20_000 >= b * (ask + bid):
        met |= _BPS
    m = cfg.spread_window
    med_thr = 0
    if m is not None:
        srt = s.spreads_sorted
        win = s.spreads
        if len(win) == m:
            med = srt[(m - 1) // 2]
            if med:
                med_thr = ceil_div(cfg.spread_median_ratio_pct * med, 100)
                f = cfg.spread_median_min_bps
                if spread >= med_thr and (f is None or spread * 20_000 >= f * (ask + bid)):
                    met |= _MEDIAN
            old = win.popleft()
            win.append(spread)
            if old != spread:  # the common case on a liquid book: same spread in and out
                del srt[bisect_left(srt, old)]
                insort(srt, spread)
        else:
            win.append(spread)
            insort(srt, spread)
    new = met & ~s.wide
    s.wide = met
    if new:
        if out is None:
            out = []
        where = f"{type(ev).__name__} {num.render(bid)} / {num.render(ask)}"
        if new & _ABS:
            cfg.alert(
                state, out, ev, WIDE_SPREAD, sym, exch, spread, a or 0, num.UNIT, f"abs: {where}"
            )
        if new & _BPS:
            cfg.alert(
                state, out, ev, WIDE_SPREAD, sym, exch, spread * 20_000 // (ask + bid), b or 0,
                "bps", f"bps of mid: {where}",
            )  # fmt: skip
        if new & _MEDIAN:
            cfg.alert(
                state, out, ev, WIDE_SPREAD, sym, exch, spread, med_thr, num.UNIT,
                f"vs median: {cfg.spread_median_ratio_pct}% of the median of the last "
                f"{m} spreads: {where}",
            )  # fmt: skip
    return out if out else NO_OUTPUTS
