"""The dashboard: exact text of known states (real fixture journals), empty states, the trade tape
reducer (hypothesis against the trade-selection rule), and the live task against a real capture
from the simulator on 127.0.0.1."""

from __future__ import annotations

import io
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from engine import num, serde
from engine.anomaly import Alert
from engine.assembly import build_pipeline, standard_reducers
from engine.book_reducer import (
    BookSynced,
    CrossedBook,
    DriftDetected,
    GapDetected,
    TopOfBookMismatch,
    VerificationAbandoned,
)
from engine.candles import Candles, KlineMismatch
from engine.codecs.registry import get_codec
from engine.events import Trade
from engine.journal.reader import JournalReader
from engine.journal.writer import JournalWriter
from engine.live.capture import Capture, _NullPipeline
from engine.live.config import LiveConfig
from engine.live.dashboard import Dashboard
from engine.live.display import run_dashboard, status_line
from engine.live.notable import bps, describe
from engine.live.status import CaptureStatus
from engine.num import ONE, parse
from engine.pipeline import Pipeline
from engine.sim.cli import open_simulator
from engine.trades import TradeAggregator, TradeTape
from tests.helpers import alone
from tests.test_trades import accepted, trade_streams

JOURNALS = Path(__file__).resolve().parent.parent / "fixtures" / "journals"


def fold(journal: str, extra: list | None = None, reducers: list | None = None):
    """(pipeline, dashboard) after folding a fixture journal, the dashboard fed its outputs."""
    reader = JournalReader(JOURNALS / journal)
    codec = get_codec(reader.metadata["exchange"])
    d = Dashboard()
    p = Pipeline(
        codec, (reducers or standard_reducers(codec)) + (extra or []), listeners=[d.on_events]
    )
    for batch in reader.batches():
        d.on_outputs(p.feed_batch(batch))
    return p, d


def status() -> CaptureStatus:
    return CaptureStatus(
        frames_in=1540,
        bytes_in=2_345_678,
        frames_per_s=1234.4,
        connections_open=2,
        connects=3,
        reconnects=1,
        errors=Counter(stale=1),
        journal_bytes=12_345_678,
        journal_frames=1541,
        rest_requests=4,
        rest_responses=4,
        last_error="stale in conn 1: no data for 30 s",
    )


def text(renderable, width: int = 120) -> str:
    c = Console(record=True, width=width, force_terminal=False)
    c.print(renderable)
    return c.export_text()


# =============================================================== known states


def test_spot_fixture_renders_exact_book_and_header() -> None:
    p, d = fold("binance-spot")
    out = text(d.render(p, status(), ["nknusdt"]))
    lines = out.splitlines()
    assert lines[0].startswith("╭─ wiretape · binance · 2021-10-12 00:29:02.077 UTC ─")
    assert (
        "│ ● connected (2)   connects 3   reconnects 1   REST snapshots answered 4 of 4   "
        "1,234 frames/s   pipeline outputs 8  " in lines[1]
    )
    assert (
        "│ received 1,540 frames (2.3 MB)   journal 12.3 MB, 1,541 frames   decode errors 0   "
        "errors 1 (stale 1)  " in lines[2]
    )
    assert "last error: stale in conn 1: no data for 30 s" in out
    # the fixture's last NKNUSDT event came 5 ms "before" its exchange time (clock skew)
    assert "feed latency (receive − exchange time) -5 ms   last update 0 ms ago" in out
    assert (
        "─ NKNUSDT  synced  book levels: 614 bids, 994 asks  gaps 0  resyncs 0  drift 0  crossed 0 ─"
        in out
    )
    assert (
        "│ best bid 0.3527 × 9602   best ask 0.3531 × 152   spread 0.0004 (11.33 bps)   mid 0.3529   "
        "imbalance (top 5) +0.381636  " in text(d.render(p, status(), ["nknusdt"]), width=160)
    )
    # the ladder: asks above (worst first), spread, bids; bars scaled to the largest qty shown
    ladder = [ln[2:38].rstrip() for ln in lines if ln[2:].startswith(("ask  ", "bid  ", "sprd"))]
    assert ladder == [
        "ask   0.3535  4229  ███████",
        "ask   0.3534  3116  █████",
        "ask   0.3533  2713  █████",
        "ask   0.3532   949  ██",
        "ask   0.3531   152  █",
        "sprd  0.0004",
        "bid   0.3527  9602  ████████████████",
        "bid   0.3526  2829  █████",
        "bid   0.3525  1850  ███",
        "bid   0.3524  3421  ██████",
        "bid   0.3522  7231  ████████████",
    ]
    # the one trade of NKNUSDT in the capture, its VWAP and the open 1m candle
    assert "last trade 0.3528  trades 1" in out
    assert "VWAP  session  0.352800  vol  58" in out  # the price's 4 decimals + 2
    assert "00:28:00 open  0.3528  0.3528  0.3528  0.3528   58       1      —      —      —" in out
    # syncs are remembered but the alerts panel lists alerts only
    assert any(n.kind == "BookSynced" and n.symbol == "NKNUSDT" for n in d.notable)
    assert "BookSynced" not in out
    assert "alerts: 0" in out and "no alerts yet" in out


def test_ladder_prices_padded_to_one_precision_stay_exact() -> None:
    p, d = fold("binance-spot")
    out = text(d.render(p, status(), ["BLZETH"]))
    # the book holds 0.0000656 and 0.00006547: both shown with 8 decimals, spread too
    assert "ask   0.00006560   1528  ██" in out
    assert "sprd  0.00000013" in out
    assert "bid   0.00006547    100  █" in out
    assert (
        "spread 0.00000013 (19.83 bps)   mid 0.000065535" in out
    )  # the mid is exact in half units


def test_futures_fixture_last_trades_vwap_and_candles() -> None:
    p, d = fold("binance-futures")
    out = text(d.render(p, status(), ["SUSHIUSDT"]), width=160)
    assert "taker volume: buy 1619  sell 593" in out
    for row in (
        # 7.614884267631103074.. exactly: shown at the price's 3 decimals + 2, rounded
        "VWAP  session  7.61488  vol  2212",
        "      60s      7.61488  vol  2212",
        "      300s     7.61488  vol  2212",
    ):
        assert row in out
    # the six newest trades, newest first, with their exchange time
    assert "22:26:07.990  sell  7.611    1" in out
    assert "22:26:03.257  sell  7.616   13" in out
    assert "22:26:02.920" not in out  # the seventh newest is not shown
    assert "22:25:00       7.612  7.618  7.610  7.617  1713      63      —      —      —" in out
    assert "22:26:00 open  7.618  7.620  7.611  7.611   499      18      —      —      —" in out
    # wide enough (VWAP has 18 exact decimals) the three panes sit side by side: the ladder
    # row carries the candle header
    wide = text(d.render(p, status(), ["SUSHIUSDT"]), width=200)
    assert any("ask   7.620  2662" in ln and "22:25:00" in ln for ln in wide.splitlines())


def test_candle_indicators_shown_exactly() -> None:
    codec = get_codec("binance-futures")
    candles = Candles(intervals=("1s",), sma_periods=(3,), ema_periods=(2,))
    reducers = [r for r in standard_reducers(codec) if r.name != "candles"] + [candles]
    p, d = fold("binance-futures", reducers=reducers)
    d.candles_shown = 4
    out = text(d.render(p, status(), ["CTKUSDT"]), width=160)
    # indicators (derived, themselves rounded at 1e-18) show the price's 3 decimals + 2, rounded
    assert "1s start        open   high    low  close   vol  trades     sma3     ema2" in out
    # closes 1.011, 1.011, 1.011 -> SMA3 1.011; EMA2 = prev + 2/3 (1.011 - prev) = 1.0110275..
    assert "22:26:09       1.011  1.011  1.011  1.011    10       1  1.01100  1.01103" in out
    # the open candle, provisional: (1.011 + 1.011 + 1.012) / 3 = 1.0113333..; EMA2 1.0116758..
    assert "22:26:10 open  1.011  1.012  1.011  1.012    90       2  1.01133  1.01168" in out
    # an empty interval is a flat candle with no volume (Binance's definition)
    assert "22:26:08       1.011  1.011  1.011  1.011     0       0  1.01133  1.01108" in out


def test_alerts_kept_bounded_described_and_counted() -> None:
    d = Dashboard(alerts_kept=3, alerts_shown=3)
    t = 1_700_000_000_123_000_000
    d.on_outputs(
        [
            (1, GapDetected(1, t, "BTCUSDT", 100, 105, 110, None, "first id past book")),
            (2, Trade(2, t, "BTCUSDT", 1, 1, 1, "buy", 1, 1, 1, 1)),  # not notable
            (3, CrossedBook(3, t + 1_000_000, "ETHUSDT", 7, parse("3200.5"), parse("3200.25"))),
            (
                4,
                Alert(
                    4, t + 2_000_000, "wide_spread", "ETHUSDT", None, 42, 25, "bps", "mid 3200.375"
                ),
            ),
            (
                5,
                Alert(
                    5, t + 3_000_000, "large_trade", "ETHUSDT", None, parse("2.5"), ONE, num.UNIT, ""
                ),
            ),
        ]
    )
    assert [n.kind for n in d.notable] == ["CrossedBook", "wide_spread", "large_trade"]
    out = text(d._alerts())
    assert "alerts: 4 (CrossedBook 1, GapDetected 1, large_trade 1, wide_spread 1)" in out
    assert "22:13:20.123" not in out  # the gap was the oldest of four: forgotten
    assert "22:13:20.124  ETHUSDT  CrossedBook  crossed book: bid 3200.5 ≥ ask 3200.25" in out
    assert "22:13:20.125  ETHUSDT  wide_spread  value 42 ≥ threshold 25 bps  mid 3200.375" in out
    assert "22:13:20.126  ETHUSDT  large_trade  value 2.5 ≥ threshold 1" in out
    gap = GapDetected(1, t, "BTCUSDT", 100, 105, 110, None, "first id past book")
    assert describe(gap) == "gap: book at 100, diff 105..110 (first id past book); resyncing"
    sync = BookSynced(6, t, "BTCUSDT", 9, 9, 10, 10, 0, True)
    d.on_outputs([(6, sync)] * 5)
    assert len(d.notable) == 3  # bounded
    assert d.alert_counts["large_trade"] == 1 and sum(d.alert_counts.values()) == 4  # no infos
    assert describe(sync) == "resynced at 9 from snapshot 9 (0 diffs replayed, 10/10 levels)"


@pytest.mark.parametrize(
    ("output", "line"),
    [
        (
            DriftDetected(1, 0, "X", 9, 8, [(1, 2, 3)], [(4, 5, 6), (7, 8, 9)]),
            "drift vs snapshot 8: 1 bid, 2 ask levels differ",
        ),
        (
            TopOfBookMismatch(1, 0, "X", 1, 7, (parse("1.5"), ONE, parse("1.75"), 0), (0,) * 4),
            "bookTicker at 7: ours 1.5×1 / 1.75×0, theirs 0×0 / 0×0",
        ),
        (
            KlineMismatch(
                1, 0, "X", "1m", 60_000, (("close", parse("2.5"), ONE), ("trades", 3, 4))
            ),
            "kline 1m 00:01:00.000: close ours 2.5 exch 1, trades ours 3 exch 4",
        ),
        (VerificationAbandoned(1, 0, "X", "timeout"), "verification abandoned: timeout"),
    ],
)
def test_describe_book_and_candle_alerts_exactly(output: object, line: str) -> None:
    assert describe(output) == line
    d = Dashboard()
    d.on_outputs([(1, output)])
    assert d.alert_counts[type(output).__name__] == 1


def test_status_line_adds_data_time_books_and_last_error() -> None:
    p, _ = fold("binance-spot")
    line = status_line(status(), p)
    assert line.startswith("1234 frames/s  1540 frames  conns 2  reconnects 1")
    assert line.endswith(
        "data 2021-10-12 00:29:02.077 UTC  books 4/4 synced  "
        "last error: stale in conn 1: no data for 30 s"
    )
    assert status_line(CaptureStatus()) == CaptureStatus().line().strip()


# =============================================================== nothing yet


@pytest.mark.parametrize("symbols", [["btcusdt"], []])
def test_render_never_raises_before_anything_synced(symbols: list[str]) -> None:
    st0 = CaptureStatus()
    for pipeline in (build_pipeline("binance"), _NullPipeline()):
        out = text(Dashboard().render(pipeline, st0, symbols))
        assert "○ connecting" in out and "no alerts yet" in out
        assert "journal 0 B, 0 frames" in out
        if symbols:
            assert "BTCUSDT" in out and "book not synced" in out and "no book yet" in out


def test_render_while_buffering_shows_the_phase() -> None:
    """Every frame but the REST snapshots: the books wait, diffs buffered, trades go on."""
    p = build_pipeline("binance")
    for batch in JournalReader(JOURNALS / "binance-spot").batches():
        for row in batch.to_pylist():
            if row["kind"] != "rest":
                p.feed(
                    *(row[k] for k in ("seq", "recv_ns", "conn", "dir", "kind", "source")),
                    row["payload"],
                    row["code"],
                )
    out = text(Dashboard().render(p, CaptureStatus(connections_open=1, connects=1), ["NKNUSDT"]))
    assert "─ NKNUSDT  buffering (150 diffs buffered)  gaps 0  resyncs 0" in out
    assert "book not synced" in out and "no book yet" in out
    assert "last trade 0.3528  trades 1" in out


# =============================================================== the tape reducer


@given(
    trades=trade_streams(),
    size=st.integers(1, 12),
    source=st.sampled_from(["auto", "trade", "aggTrade"]),
)
def test_tape_holds_the_last_accepted_trades(trades: list[Trade], size: int, source: str) -> None:
    tape = TradeTape(size=size, source=source)
    agg = TradeAggregator(source=source)
    t_alone, a_alone = alone.Alone(tape), alone.Alone(agg)
    assert t_alone.feed(trades) == []
    a_alone.feed(trades)
    s = t_alone.state
    acc = accepted(trades, source)
    for sym in {e.symbol for e in trades}:
        want = [
            (e.txn_ms, e.price, e.qty, e.side, e.last_id - e.first_id + 1)
            for e, _ in acc
            if e.symbol == sym
        ][-size:]
        assert list(s.symbols[sym].recent) == want
    assert t_alone.counts == a_alone.counts  # the aggregator's selection rule, to the count


@given(trades=trade_streams(), cut=st.integers(0, 120))
def test_tape_snapshot_restore_continues_identically(trades: list[Trade], cut: int) -> None:
    tape = TradeTape(size=5)

    whole, _ = alone.run(tape, trades)
    half, _ = alone.run(tape, trades[:cut])
    resumed, _ = alone.run(tape, trades[cut:], half.resumed())  # through JSON
    assert resumed.snapshot() == whole.snapshot()
    assert all(s.recent.maxlen == 5 for s in resumed.state.symbols.values())
    assert serde.TYPES["TapeState"] is type(whole.state)


# =============================================================== the live task


def capture_for(sim, tmp_path: Path) -> Capture:
    codec = get_codec("sim")
    cfg = LiveConfig(exchange="sim", symbols=("btcusdt",), ws_url=sim.ws_url, rest_url=sim.rest_url)
    writer = JournalWriter.create(tmp_path / "j", {"exchange": "sim"})
    return Capture(cfg, writer, codec, standard_reducers(codec))


def synced_with_trades(cap: Capture) -> bool:
    st = cap.status  # connections_open is refreshed once a second by the capture
    return (
        st.outputs["BookSynced"] >= 1
        and st.connections_open >= 1
        and bool(cap.pipeline.state("tape").symbols)
    )


async def test_run_dashboard_draws_a_real_capture_and_sees_its_outputs(tmp_path: Path) -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=120, height=80, force_terminal=True, color_system=None)
    async with open_simulator(seed=3, symbols=["BTCUSDT"], tick=0.005) as sim:
        cap = capture_for(sim, tmp_path)
        async with trio.open_nursery() as n:
            await n.start(cap.run)
            n.start_soon(lambda: run_dashboard(cap, ["btcusdt"], 0.1, console=console))
            with trio.fail_after(10):
                while not synced_with_trades(cap):  # noqa: ASYNC110 - the capture's counters
                    await trio.sleep(0.05)
            drawn = ("BTCUSDT  synced", "frames/s", "connected (1)")
            with trio.fail_after(10):  # refreshes after the sync, however loaded the machine
                while not all(s in buf.getvalue() for s in drawn):  # noqa: ASYNC110 - the screen
                    await trio.sleep(0.05)
            cap.stop()
            n.cancel_scope.cancel()
    (listener,) = cap.output_listeners
    dash = listener.__self__
    assert any(x.kind == "BookSynced" and x.symbol == "BTCUSDT" for x in dash.notable)
    out = buf.getvalue()
    assert "BTCUSDT  synced" in out and "sprd" in out and "BookSynced" not in out
    assert f"journal path {tmp_path / 'j'}" in out
    assert "frames/s" in out and "connected (1)" in out


async def test_render_errors_are_logged_once_and_never_stop_the_capture(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Dashboard):
        def render(self, pipeline, status, symbols):
            raise RuntimeError("render exploded")

    dash = Broken()
    console = Console(file=io.StringIO(), width=100)
    async with open_simulator(seed=4, symbols=["BTCUSDT"], tick=0.005) as sim:
        cap = capture_for(sim, tmp_path)
        async with trio.open_nursery() as n:
            await n.start(cap.run)
            n.start_soon(lambda: run_dashboard(cap, [], 0.02, dashboard=dash, console=console))
            await trio.sleep(0.3)
            frames = cap.status.frames_in
            await trio.sleep(0.5)
            assert cap.status.frames_in > frames  # still capturing
            cap.stop()
            n.cancel_scope.cancel()
    assert dash.render_errors >= 5
    logged = [r for r in caplog.records if "render failed" in r.getMessage()]
    assert len(logged) == 1
    assert JournalReader(tmp_path / "j").metadata["exchange"] == "sim"  # sealed and readable


# =============================================================== what the screen says


def test_alerts_panel_lists_alerts_only() -> None:
    d = Dashboard()
    t = 1_700_000_000_123_000_000
    sync = BookSynced(1, t, "BTCUSDT", 9, 9, 10, 10, 0, False)
    gap = GapDetected(2, t + 1_000_000, "ETHUSDT", 100, 105, 110, None, "first id past book")
    d.on_outputs([(1, sync), (2, gap), (3, sync)])
    out = text(d._alerts())
    assert "alerts: 1 (GapDetected 1)" in out
    assert "ETHUSDT  GapDetected  gap: book at 100" in out
    assert "BookSynced" not in out and "BTCUSDT" not in out
    assert [n.kind for n in d.notable] == ["BookSynced", "GapDetected", "BookSynced"]


@given(spread=st.integers(-(10**12), 10**12), mid_x2=st.integers(1, 10**16))
def test_spread_bps_is_spread_over_mid_truncated_to_hundredths(spread: int, mid_x2: int) -> None:
    exact = abs(Fraction(spread) / Fraction(mid_x2, 2)) * 10_000
    hundredths = int(exact * 100)
    got = bps(spread, mid_x2)
    if hundredths == 0 and spread:
        assert got == ("<0.01" if spread > 0 else ">-0.01")
    else:
        assert got == f"{'-' if spread < 0 else ''}{hundredths // 100}.{hundredths % 100:02d}"


def test_latency_and_age_per_symbol_from_the_events_in_data_time() -> None:
    p, d = fold("binance-futures")
    now = p.counters.last_recv_ns
    ages = {sym: now - ns for sym, ns in d.last_recv_ns.items()}
    stale = max(ages, key=lambda s: ages[s])
    assert ages[stale] > 0
    out = text(d.render(p, status(), [stale]), width=160)
    ms = ages[stale] // 1_000_000
    want = f"{ms} ms ago" if ms < 1000 else f"{ms // 1000}.{ms % 1000 // 100} s ago"
    lat = d.latency_ms[stale]
    assert f"feed latency (receive − exchange time) {lat:,} ms   last update {want}" in out


def test_full_panels_on_a_tall_terminal_compact_rows_on_a_short_one() -> None:
    p, d = fold("binance-futures")
    syms = sorted(d.last_recv_ns)

    def screen(height: int) -> str:
        c = Console(record=True, width=120, height=height, force_terminal=True, color_system=None)
        c.print(d.render(p, status(), syms))
        return c.export_text()

    tall, short = screen(500), screen(30)
    assert "one line each" not in tall and "book levels: " in tall
    assert f"{len(syms)} symbols, one line each" in short and "book levels: " not in short
    for sym in syms:
        assert sum(ln.lstrip("│ ").startswith(sym) for ln in short.splitlines()) == 1
