"""The live terminal dashboard of ``engine run``: what the pipeline holds, drawn with rich.

Owns: :class:`Dashboard` (the notable outputs it was shown, each symbol's
last receive time and feed latency from the events it watched, and
:meth:`Dashboard.render`, a pure function of the pipeline, the capture status
and that memory), the choice between the full screen and the compact one (one
line per symbol, when the panels do not fit the terminal's height).  Last
trades come from the :class:`engine.trades.TradeTape` reducer of the standard
pipeline.  The trio task that redraws it, and the plain status line, are
:mod:`engine.live.display`'s.

Must not: read a clock (the time shown is the pipeline's last receive time),
change reducer state, or do I/O: it returns renderables, and writing them to
the terminal is the display's (which logs a render error and tries again at
the next refresh: the dashboard never takes the capture down).

Numbers are exact: every price and quantity is an ``int`` of 1e-18 units
rendered with :func:`engine.num.render`.  A symbol's prices share one
precision everywhere on its screen (summary line, ladder, trades, candles,
compact row): the decimals its shown book levels need, more only where a
value needs them (zeros only, so the text stays exact).  The only floats are
bar lengths, frames/s and the imbalance ratio.  Feed latency is receive time
minus the exchange's event time of a symbol's last event that carried one
(ms; negative when the clocks disagree); the last-update age is measured
against the pipeline's last receive time, never a clock.

::

    Capture._on_outputs ─► Capture.output_listeners ─► Dashboard.on_outputs ─► notable deque
    Pipeline listeners (seq, events) ─► Dashboard.on_events ─► last receive ns, latency per symbol
    display.run_dashboard: every refresh_s ─► Dashboard.render(capture.pipeline, capture.status, symbols)
                                                  ├─ header: connections, REST, frames/s, journal path, errors
                                                  ├─ recent alerts (alerts only: syncs are remembered, not listed)
                                                  └─ per symbol: summary │ ladder │ trades + VWAP │ candles + SMA/EMA
                                                     or, when those do not fit: one line per symbol
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from engine.candles import live_indicators
from engine.live.notable import (
    ALERT_KINDS,
    DERIVED_EXTRA,
    INFO_KINDS,
    Notable,
    ago,
    book_decimals,
    book_line,
    clock,
    column,
    connection_text,
    decimals,
    derived_text,
    describe,
    kind_of,
    phase_text,
    price_text,
    quote,
    size,
    stamp,
)
from engine.live.terminal import Fit, Panes
from engine.num import parse, render
from engine.replay.replay import book_summary, is_alert, symbols_of, trades_summary

__all__ = ["Dashboard", "has_reducer"]


# =============================================================== the dashboard


class Dashboard:
    """What the terminal shows; feed it the pipeline's outputs, then :meth:`render`.

    Args:
        depth: ladder levels per side (also the imbalance depth).
        trades_shown: last trades listed per symbol (needs :class:`engine.trades.TradeTape` in the pipeline).
        candles_shown: closed candles listed per symbol, before the open one.
        candle_interval: which interval's candles to list (None: the reducer's first).
        alerts_kept: notable outputs remembered (the oldest are forgotten).
        alerts_shown: notable outputs listed, newest last.
        bar_width: ladder bar width in characters.
        journal: the journal's path, shown in the header (:func:`run_dashboard` sets it).
    """

    def __init__(
        self,
        *,
        depth: int = 5,
        trades_shown: int = 6,
        candles_shown: int = 3,
        candle_interval: str | None = None,
        alerts_kept: int = 100,
        alerts_shown: int = 6,
        bar_width: int = 16,
        journal: str = "",
    ) -> None:
        self.journal = journal
        self.depth = depth
        self.trades_shown = trades_shown
        self.candles_shown = candles_shown
        self.candle_interval = candle_interval
        self.alerts_shown = alerts_shown
        self.bar_width = bar_width
        self.notable: deque[Notable] = deque(maxlen=alerts_kept)
        #: every alert seen, by kind (not bounded by ``alerts_kept``)
        self.alert_counts: Counter[str] = Counter()
        self.render_errors = 0
        #: per symbol: receive ns of its last event, and receive − exchange time (ms) of the
        #: last one that carried an exchange time (fed by :meth:`on_events`)
        self.last_recv_ns: dict[str, int] = {}
        self.latency_ms: dict[str, int] = {}

    # ------------------------------------------------------------------ input

    def on_events(self, seq: int, events: Sequence[Any]) -> None:
        """A pipeline listener: remember when each symbol last updated and its feed latency."""
        for e in events:
            sym = getattr(e, "symbol", None)
            recv = getattr(e, "recv_ns", None)
            if not sym or not isinstance(recv, int):
                continue
            self.last_recv_ns[sym] = recv
            exch = getattr(e, "exch_ms", None)
            if isinstance(exch, int) and exch > 0:
                self.latency_ms[sym] = recv // 1_000_000 - exch

    def _freshness(self, pipeline: Any, sym: str) -> tuple[str, str]:
        """(feed latency, last-update age) texts of ``sym``; the age is in data time (no clock)."""
        lat = self.latency_ms.get(sym)
        last = self.last_recv_ns.get(sym)
        now = getattr(getattr(pipeline, "counters", None), "last_recv_ns", 0) or 0
        age = "—" if last is None else ago(max(0, now - last))
        return ("—" if lat is None else f"{lat:,} ms"), age

    def on_outputs(self, outputs: Sequence[tuple[int, Any]]) -> None:
        """Remember the notable ones among ``[(frame_seq, output), ...]`` (the pipeline's outputs)."""
        for _, o in outputs:
            name = type(o).__name__
            alert = name in ALERT_KINDS or is_alert(o)
            if not alert and name not in INFO_KINDS:
                continue
            kind = kind_of(o)
            if alert:
                self.alert_counts[kind] += 1
            try:
                text = describe(o)
            except Exception as exc:  # a malformed output must not stop the capture
                text = f"(cannot describe {name}: {exc})"
            sym = getattr(o, "symbol", None) or "*"
            self.notable.append(Notable(getattr(o, "recv_ns", 0) or 0, sym, kind, text, alert))

    # ------------------------------------------------------------------ output

    def render(self, pipeline: Any, status: Any, symbols: Sequence[str]) -> RenderableType:
        """The whole screen: header, recent alerts, one panel per symbol.

        Pure: reads ``pipeline`` (a :class:`engine.pipeline.Pipeline`, or a
        capture's journal-only stand-in), ``status`` (an
        :class:`engine.live.status.CaptureStatus`) and this dashboard's memory; never
        a clock.  ``symbols`` are matched case-insensitively; empty means every
        symbol a reducer holds.
        """
        wanted = [s.upper() for s in symbols] or _symbols_of(pipeline)
        # alerts under the header: a short terminal crops the bottom, and they matter most
        head = _header(pipeline, status, self.journal)
        full = Group(head, self._alerts(), *(self._symbol(pipeline, sym) for sym in wanted))
        # a short terminal: fewer alerts too, so the symbols' rows stay on screen
        few = min(self.alerts_shown, 3)
        compact = Group(head, self._alerts(few), self._compact(pipeline, wanted))
        return Fit(full, compact)

    def _compact(self, pipeline: Any, wanted: Sequence[str]) -> RenderableType:
        """One line per symbol: what the full panels say first, for when they do not all fit."""
        t = Table(box=None, pad_edge=False, header_style="dim", title_justify="left")
        names = ("symbol", "book", "bid", "ask", "spread bps", "last trade", "latency", "age")
        for name in names:
            t.add_column(name, justify="left" if name in names[:2] else "right", no_wrap=True)
        for sym in wanted:
            book = self._book(pipeline, sym)
            q = quote(book, self.depth)
            ts = trades_summary(pipeline, sym) if has_reducer(pipeline, "trades") else None
            t.add_row(
                Text(sym, "bold"),
                phase_text(_phase(pipeline, sym)),
                Text(q["bid_price"], "green"),
                Text(q["ask_price"], "red"),
                q["bps"],
                self._last_trade(pipeline, sym, ts),
                *(x.removesuffix(" ago") for x in self._freshness(pipeline, sym)),
            )
        note = Text("latency: receive − exchange time; age: since the symbol's last update", "dim")
        title = f"{len(wanted)} symbols, one line each (too many for their panels)"
        return Panel(Group(t, note), title=title, title_align="left", border_style="blue")

    def _last_trade(self, pipeline: Any, sym: str, ts: dict[str, Any] | None) -> str:
        """The last trade's price in the precision of the symbol's book (the tape's, else the summary's)."""
        tape = pipeline.state("tape").symbols.get(sym) if has_reducer(pipeline, "tape") else None
        if tape is not None and tape.recent:
            return self._prices(pipeline, sym, [tape.recent[-1][1]])[0]
        return "—" if ts is None else str(ts["last_price"])

    def _prices(self, pipeline: Any, sym: str, values: Sequence[int | None]) -> list[str]:
        """Prices of ``sym`` in its book's precision (more decimals only where a value needs them)."""
        book = self._book(pipeline, sym)
        dp = book_decimals(book, self.depth)[0] if book is not None else 0
        d = max([dp] + [decimals(v) for v in values if v is not None])
        return [price_text(v, d) for v in values]

    def _derived(self, pipeline: Any, sym: str, values: Sequence[int | None]) -> list[str]:
        """VWAP/SMA/EMA of ``sym``: its price precision plus DERIVED_EXTRA decimals, rounded."""
        book = self._book(pipeline, sym)
        dp = book_decimals(book, self.depth)[0] if book is not None else 0
        return [derived_text(v, dp + DERIVED_EXTRA) for v in values]

    def _book(self, pipeline: Any, sym: str) -> Any:
        if not has_reducer(pipeline, "book"):
            return None
        return pipeline.reducer("book").book(pipeline.state("book"), sym)

    def _symbol(self, pipeline: Any, sym: str) -> RenderableType:
        book = book_summary(pipeline, sym, self.depth) if has_reducer(pipeline, "book") else None
        title = Text.assemble((sym, "bold"), "  ", phase_text(_phase(pipeline, sym)))
        if book and "last_id" in book:  # published: primed or synced
            title.append(
                f"  book levels: {book['bid_levels']} bids, {book['ask_levels']} asks", style="dim"
            )
        if book and "gaps" in book:
            bad = book["gaps"] or book["drift"] or book["crossed"] or book["checksum_mismatches"]
            title.append(
                f"  gaps {book['gaps']}  resyncs {book['resyncs']}  drift {book['drift']}"
                f"  crossed {book['crossed']}"
                + (  # venues whose exchange checksums the book
                    f"  checksums {book['checksums_verified']} ok"
                    f" / {book['checksum_mismatches']} bad"
                    if book["checksums_verified"] or book["checksum_mismatches"]
                    else ""
                ),
                style="red" if bad else "dim",
            )
        panes = Panes(
            self._ladder(pipeline, sym), self._trades(pipeline, sym), self._candles(pipeline, sym)
        )
        lat, age = self._freshness(pipeline, sym)
        fresh = Text.assemble(
            ("feed latency (receive − exchange time) ", "dim"), lat, ("   last update ", "dim"), age
        )
        body = Group(book_line(book, self._book(pipeline, sym), self.depth), fresh, panes)
        return Panel(body, title=title, title_align="left", border_style="blue")

    def _ladder(self, pipeline: Any, sym: str) -> RenderableType:
        book = self._book(pipeline, sym)
        if book is None:
            return Text("no book yet", style="dim")
        bids, asks = book.top(self.depth)
        rows = [*reversed(asks), *bids]
        # one precision for every price of the symbol's screen (the summary line's too)
        d_price, d_qty = book_decimals(book, self.depth)
        prices = [render(p, d_price) for p, _ in rows] + [price_text(book.spread(), d_price)]
        qtys = [render(q, d_qty) for _, q in rows]
        biggest = max([q for _, q in rows] + [1])
        t = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
        t.add_column("")
        t.add_column("price", justify="right")
        t.add_column("qty", justify="right")
        t.add_column("", width=self.bar_width, no_wrap=True)
        n_asks = len(asks)
        for i, (_, q) in enumerate(rows):
            ask = i < n_asks
            style = "red" if ask else "green"
            bar = "█" * max(1, round(self.bar_width * q / biggest))  # float: a length only
            t.add_row(
                Text("ask" if ask else "bid", style),
                Text(prices[i], style),
                qtys[i],
                Text(bar, style),
            )
            if i == n_asks - 1 and bids:
                t.add_row(Text("sprd", "dim"), Text(prices[-1], "dim"), "", "")
        return t

    def _trades(self, pipeline: Any, sym: str) -> RenderableType:
        rows: list[RenderableType] = []
        ts = trades_summary(pipeline, sym) if has_reducer(pipeline, "trades") else None
        if ts is None:
            rows.append(Text("no trades yet", style="dim"))
        else:
            last_price = self._last_trade(pipeline, sym, ts)
            rows.append(Text(f"last trade {last_price}  trades {ts['count']}"))
            rows.append(Text(f"taker volume: buy {ts['buy_volume']}  sell {ts['sell_volume']}"))
            v = Table(box=None, pad_edge=False, show_header=False)
            v.add_column("")
            v.add_column("", justify="left")
            v.add_column("vwap", justify="right")
            v.add_column("", justify="left")
            v.add_column("vol", justify="right")
            names = ["session"] + [f"{w['window_s']}s" for w in ts["windows"]]
            vwaps = [ts["vwap"]] + [w["vwap"] for w in ts["windows"]]
            vols = [ts["volume"]] + [w["volume"] for w in ts["windows"]]
            shown = self._derived(pipeline, sym, [parse(x) if x else None for x in vwaps])
            for i, name in enumerate(names):
                v.add_row("VWAP" if i == 0 else "", name, shown[i], "vol", vols[i])
            rows.append(v)
        tape = pipeline.state("tape").symbols.get(sym) if has_reducer(pipeline, "tape") else None
        if tape is not None and tape.recent:
            last = list(tape.recent)[-self.trades_shown :][::-1]  # newest first
            prices = self._prices(pipeline, sym, [e[1] for e in last])
            qtys = column([e[2] for e in last])
            t = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
            t.add_column("time")
            t.add_column("side")
            t.add_column("price", justify="right")
            t.add_column("qty", justify="right")
            for i, (ms, _, _, side, _) in enumerate(last):
                style = "green" if side == "buy" else "red"
                t.add_row(clock(ms), Text(side, style=style), Text(prices[i], style), qtys[i])
            rows.append(t)
        elif not has_reducer(pipeline, "tape"):
            rows.append(Text("(no trade tape in this pipeline)", style="dim"))
        return Group(*rows)

    def _candles(self, pipeline: Any, sym: str) -> RenderableType:
        if not has_reducer(pipeline, "candles"):
            return Text("")
        cfg = pipeline.reducer("candles")
        sc = pipeline.state("candles").symbols.get(sym)
        ser = None
        if sc is not None:
            want = self.candle_interval
            ser = next((s for s in sc.series if want is None or s.interval == want), None)
        if ser is None or (ser.start < 0 and not ser.recent):
            return Text("no candles yet", style="dim")
        sma_p, ema_p = tuple(cfg.sma_periods), tuple(cfg.ema_periods)
        # rows: (start, o, h, l, c, volume, trades, sma..., ema..., open?)
        rows: list[tuple[Any, ...]] = []
        for c in list(ser.recent)[-self.candles_shown :] if self.candles_shown > 0 else []:
            sma, ema = dict(c.sma), dict(c.ema)
            rows.append(
                (
                    c.start_ms,
                    c.open,
                    c.high,
                    c.low,
                    c.close,
                    c.volume,
                    c.trades,
                    *(sma.get(p) for p in sma_p),
                    *(ema.get(p) for p in ema_p),
                    False,
                )
            )
        if ser.start >= 0:
            ind = live_indicators(cfg, pipeline.state("candles"), sym, ser.interval)
            sma_f, ema_i = ind if ind is not None else ({}, {})
            rows.append(
                (
                    ser.start,
                    ser.open,
                    ser.high,
                    ser.low,
                    ser.close,
                    ser.volume,
                    ser.trades,
                    *(None if p not in sma_f else round(sma_f[p]) for p in sma_p),
                    *(ema_i.get(p) for p in ema_p),
                    True,
                )
            )
        t = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
        heads = ["open", "high", "low", "close", "vol", "trades"]
        heads += [f"sma{p}" for p in sma_p] + [f"ema{p}" for p in ema_p]
        t.add_column(f"{ser.interval} start")
        for h in heads:
            t.add_column(h, justify="right")
        # open/high/low/close share one precision (one price scale), the rest one each
        ohlc = self._prices(pipeline, sym, [r[k] for k in range(1, 5) for r in rows])
        n = len(rows)
        cols = [ohlc[k * n : (k + 1) * n] for k in range(4)]
        cols.append(column([r[5] for r in rows]))
        cols.append([str(r[6]) for r in rows])
        cols += [
            self._derived(pipeline, sym, [r[k] for r in rows])
            for k in range(7, 7 + len(sma_p) + len(ema_p))
        ]
        for i, r in enumerate(rows):
            start = clock(r[0], 0) + (" open" if r[-1] else "     ")
            t.add_row(start, *(c[i] for c in cols), style="bold" if r[-1] else None)
        return t

    def _alerts(self, shown_max: int | None = None) -> RenderableType:
        limit = self.alerts_shown if shown_max is None else shown_max
        total = sum(self.alert_counts.values())
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.alert_counts.items()))
        title = f"alerts: {total}" + (f" ({kinds})" if kinds else "")
        alerts = [n for n in self.notable if n.alert]
        shown = alerts[-limit:] if limit > 0 else []
        if not shown:
            body: RenderableType = Text("no alerts yet", style="dim")
        else:
            t = Table(box=None, pad_edge=False, show_header=False)
            for _ in range(4):
                t.add_column("")
            for n in shown:
                style = "yellow"
                t.add_row(
                    clock(n.recv_ns // 1_000_000) if n.recv_ns else "—",
                    n.symbol,
                    Text(n.kind, style=style),
                    Text(n.text, style=style, no_wrap=True, overflow="ellipsis"),
                )
            body = t
        return Panel(
            body, title=title, title_align="left", border_style="yellow" if total else "dim"
        )


# =============================================================== pieces of the screen


def has_reducer(pipeline: Any, name: str) -> bool:
    """Does ``pipeline`` run a reducer named ``name``?"""
    return any(r.name == name for r in getattr(pipeline, "reducers", ()))


def _symbols_of(pipeline: Any) -> list[str]:
    if not getattr(pipeline, "reducers", None):
        return []
    return symbols_of(pipeline)


def _phase(pipeline: Any, sym: str) -> tuple[str, int]:
    """(sync state, buffered diffs) of ``sym``'s book ("—" without a book reducer)."""
    if not has_reducer(pipeline, "book"):
        return "—", 0
    state = pipeline.state("book")
    sb = state.symbols.get(sym)
    if sb is None:
        return "waiting", 0
    return pipeline.reducer("book").sync_state(state, sym), len(sb.main.buffer)


class Fields:
    """Labelled fields laid out on as many lines as the width needs, broken only *between* fields
    (three spaces apart): a narrow terminal never splits a label from its value."""

    def __init__(self, fields: list[Text], gap: int = 3) -> None:
        self.fields, self.gap = fields, gap

    def __rich_console__(self, console: Any, options: Any) -> Any:
        width = options.max_width
        line = Text()
        for f in self.fields:
            if line.cell_len and line.cell_len + self.gap + f.cell_len > width:
                yield line
                line = Text()
            if line.cell_len:
                line.append(" " * self.gap)
            line.append_text(f)
        if line.cell_len:
            yield line


def _header(pipeline: Any, status: Any, journal: str = "") -> RenderableType:
    c = getattr(pipeline, "counters", None)
    last_ns = getattr(c, "last_recv_ns", 0) or 0
    codec = getattr(getattr(pipeline, "codec", None), "name", None)
    title = "wiretape" + (f" · {codec}" if codec else "") + f" · {stamp(last_ns)}"
    errs = sum(status.errors.values())
    fields = [
        connection_text(status),
        Text.assemble(("connects ", "dim"), str(status.connects)),
        Text.assemble(
            ("reconnects ", "dim"), (str(status.reconnects), "yellow" if status.reconnects else "")
        ),
        *(
            [Text.assemble(("journal rotations ", "dim"), str(status.rotations))]
            if status.rotations
            else []
        ),
        Text.assemble(
            ("REST snapshots answered ", "dim"), f"{status.rest_responses} of {status.rest_requests}"
        ),
        Text.assemble((f"{status.frames_per_s:,.0f}", "bold"), (" frames/s", "dim")),
        Text.assemble(("pipeline outputs ", "dim"), f"{getattr(c, 'outputs', 0):,}"),
        Text.assemble(
            ("received ", "dim"),
            f"{status.frames_in:,}",
            (" frames (", "dim"),
            size(status.bytes_in),
            (")", "dim"),
        ),
        Text.assemble(
            ("journal ", "dim"),
            size(status.journal_bytes),
            (", ", "dim"),
            f"{status.journal_frames:,}",
            (" frames", "dim"),
        ),
        Text.assemble(
            ("decode errors ", "dim"),
            (str(status.decode_errors), "red" if status.decode_errors else ""),
        ),
        Text.assemble(
            ("errors ", "dim"),
            (str(errs), "red" if errs else ""),
            (
                " (" + ", ".join(f"{k} {n}" for k, n in sorted(status.errors.items())) + ")"
                if errs
                else "",
                "red",
            ),
        ),
    ]
    lines: list[RenderableType] = [Fields(fields)]
    if journal:
        lines.append(Text.assemble(("journal path ", "dim"), journal, overflow="fold"))
    if status.last_error:
        lines.append(Text(f"last error: {status.last_error}", style="red", overflow="ellipsis"))
    return Panel(Group(*lines), title=title, title_align="left", border_style="cyan")
