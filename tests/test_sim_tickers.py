"""The simulator's tickers as each venue sends them, judged against the market model's own day.

* Bybit linear/inverse: one ``tickers`` snapshot, then deltas of the changed fields only; a
  subscription that comes later starts from the full ticker of the last message.  The frames go
  through the engine's pipeline (codec, then :class:`engine.tickers.TickerMerge`), and every full
  ticker it holds equals the model's ticker at that time, for an early and a late subscriber —
  offline against the model here, and end to end (``engine simulate`` and ``engine run`` in real
  processes, real sockets) for ``bybit-linear``.
* Coinbase Advanced Trade numbers each connection's messages (``sequence_num``): the simulator
  sends ``ticker`` only to a connection subscribed to it and counts only what that connection
  receives, so connections with and without tickers, with all products or some, see no gap;
  a withheld frame still takes its number (the gap fault stays a gap).
* Kraken v1's ticker carries the model's 24 h figures beside the best bid/offer: each decodes
  to the model's day as of its last 1 s ticker, and a capture's BookTickers never mismatch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import attrs
import orjson
import pytest

from engine.assembly import build_pipeline
from engine.codecs.kraken_v1 import KrakenV1
from engine.events import BookTicker, Ticker24h
from engine.journal.reader import JournalReader
from engine.sim.bybit_frames import BybitFrames
from engine.sim.dialect import get_dialect
from engine.sim.frames import day_ticker
from engine.sim.kraken_frames import KrakenV1Frames
from engine.sim.model import Market
from engine.tickers import MERGED_FIELDS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.dialect_host import Conn, Host  # noqa: E402

ENGINE = [sys.executable, "-m", "engine.cli"]
START_MS = 1_704_067_200_000  # 2024-01-01


class ModelDay(BybitFrames):
    """The market model's ticker at each time it sends one (the reference; frames as Bybit)."""

    def __init__(self, category: str) -> None:
        super().__init__(category)
        self.day: dict[tuple[str, int], Ticker24h] = {}

    def ticker(self, symbol, e, day, prev_close, last_qty, top):
        self.day[(symbol, e)] = day_ticker(symbol, e, day, last_qty, top)
        return super().ticker(symbol, e, day, prev_close, last_qty, top)


def model_tickers(seed: int, symbols: list[str], activity: float, start_ms: int, to_ms: int,
                  category: str) -> dict[tuple[str, int], Ticker24h]:  # fmt: skip
    """A second market of the same seed, run offline to ``to_ms``: the model's tickers."""
    ref = ModelDay(category)
    Market(seed=seed, symbols=symbols, activity=activity, start_ms=start_ms, encoder=ref).advance(
        to_ms
    )
    return ref.day


def sent(t: Ticker24h, category: str) -> dict[str, object]:
    """What a full Bybit ticker of ``category`` holds of the model's (no last size; inverse: no
    turnover in the quote currency)."""
    t = attrs.evolve(t, last_qty=None)
    if category == "inverse":
        t = attrs.evolve(t, quote_volume=None)
    return {f: getattr(t, f) for f in MERGED_FIELDS}


class Subscriber:
    """One connection's ticker frames through the engine's pipeline: its full tickers, in order."""

    def __init__(self, venue: str, dialect, host: Host, symbols: list[str]) -> None:
        self.p = build_pipeline(venue)
        self.conn = Conn()
        self.seq = 0
        self.full: list[Ticker24h] = []
        self.kinds: dict[str, int] = {}
        #: per message type the fewest fields a message of it carried
        self.fewest: dict[str, int] = {}
        req = {"op": "subscribe", "args": self.p.codec.streams(symbols, ["ticker"])}
        replies = dialect.control_reply(self.conn, json.dumps(req), host)
        assert orjson.loads(replies[0])["success"] is True
        for r in replies[1:]:
            self.feed(r)

    def feed(self, payload: bytes) -> None:
        self.seq += 1
        msg = orjson.loads(payload)
        typ = msg["type"]
        self.kinds[typ] = self.kinds.get(typ, 0) + 1
        self.fewest[typ] = min(self.fewest.get(typ, 99), len(msg["data"]))
        self.p.feed(self.seq, self.seq, 0, "in", "text", "ws://sim", payload)
        # the merge's last full ticker of the symbol: a snapshot's, or a delta merged into it
        self.full.append(self.p.state("tickers").last[msg["data"]["symbol"]])


@pytest.mark.parametrize(("venue", "category"), [("bybit-linear", "linear"),
                                                 ("bybit-inverse", "inverse")])  # fmt: skip
def test_bybit_sends_deltas_whose_merge_is_the_models_ticker(venue, category):
    symbols = ["BTCUSDT", "ETHUSDT"] if category == "linear" else ["BTCUSD"]
    d = get_dialect(venue)
    m = Market(seed=4, symbols=symbols, activity=40.0, start_ms=START_MS, encoder=d.encoder())
    host = Host(m)
    early = Subscriber(venue, d, host, symbols)
    subs = [early]
    for step in range(1, 13):
        for stream, payload in m.advance(m.now_ms + 500):
            for s in subs:
                if stream in s.conn.subs:
                    s.feed(payload)
        if step == 5:  # a later connection: its subscription starts from the last full ticker
            subs.append(Subscriber(venue, d, host, symbols))
    late = subs[1]
    assert late.kinds.get("snapshot") == len(symbols)  # one each, in the subscribe's replies
    model = model_tickers(4, symbols, 40.0, START_MS, m.now_ms, category)
    for s in subs:
        assert s.kinds["delta"] >= 3 * len(symbols)
        assert s.fewest["delta"] < s.fewest["snapshot"]  # only what changed
        for t in s.full:
            assert not t.partial
            assert sent(t, category) == sent(model[(t.symbol, t.exch_ms)], category)
    assert len(early.full) > len(late.full) >= 4
    assert early.kinds["snapshot"] == len(symbols)  # the first message of each symbol only


def captures(venue: str, seed: int, symbols: str, runs: dict[str, list[str]], tmp: Path):
    """``engine simulate --venue`` (fixed epoch and seed) and, at the same time, one ``engine run
    --url`` capturing from it per ``runs`` entry (name → its arguments), in real processes on
    127.0.0.1; returns name → journal directory once every capture ended (then the simulator)."""
    sim = subprocess.Popen(
        [*ENGINE, "simulate", "--venue", venue, "--seed", str(seed), "--symbols", symbols,
         "--epoch", "2024-01-01T00:00:00Z"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = sim.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("listening ws://"), (line, sim.poll())
        url = line.split()[1]
        procs = {
            name: subprocess.Popen(
                [
                    *ENGINE,
                    "run",
                    "--exchange",
                    venue,
                    "--url",
                    url,
                    "--no-dashboard",
                    "--out",
                    str(tmp / name),
                    *args,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for name, args in runs.items()
        }
        for p in procs.values():
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-2000:]
    finally:
        sim.terminate()
        sim.communicate(timeout=15)
    return {name: tmp / name for name in runs}


def test_engine_run_from_the_bybit_linear_simulator_merges_tickers_equal_to_the_models(tmp_path):
    run = ["--symbols", "BTCUSDT", "--channels", "depth,trade,ticker", "--duration", "3"]
    out = captures("bybit-linear", 4, "BTCUSDT", {"j": run}, tmp_path)["j"]
    p = build_pipeline("bybit-linear")
    full, kinds = [], {}
    for f in JournalReader(out).frames():
        p.feed(f.seq, f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
        if f.dir == "in" and f.payload.startswith(b'{"topic":"tickers.'):
            typ = orjson.loads(f.payload)["type"]
            kinds[typ] = kinds.get(typ, 0) + 1
            full.append(p.state("tickers").last["BTCUSDT"])
    assert kinds.get("snapshot") == 1 and kinds.get("delta", 0) >= 1, kinds
    assert p.state("tickers").merged == {"BTCUSDT": kinds["delta"]}
    model = model_tickers(4, ["BTCUSDT"], 20.0, START_MS, max(t.exch_ms for t in full), "linear")
    for t in full:
        assert sent(t, "linear") == sent(model[("BTCUSDT", t.exch_ms)], "linear")


# =============================================================== Coinbase Advanced Trade

ADV_SYMBOLS = ["BTC-USD", "ETH-USD"]


class NumberedConn(Conn):
    """A connection as the server makes it for Advanced Trade: with its own ``sequence_num``."""

    def __init__(self, dialect) -> None:
        super().__init__()
        self.numbered = dialect.connection_numbers()


class AdvancedClient:
    """One connection's frames (numbered for it) through the engine's pipeline."""

    def __init__(self, d, host: Host, channels: list[str], products: list[str]) -> None:
        self.p = build_pipeline("coinbase-advanced")
        self.conn = NumberedConn(d)
        self.seq = 0
        self.numbers: list[int] = []
        self.outs: list = []
        self.tickers: list[Ticker24h] = []
        for ch in channels:
            req = {"type": "subscribe", "channel": ch}
            if ch != "heartbeats":
                req["product_ids"] = products
            for f in d.control_reply(self.conn, json.dumps(req), host):
                self.feed(f)

    def feed(self, frame: bytes) -> None:
        self.seq += 1
        self.numbers.append(orjson.loads(frame)["sequence_num"])
        self.outs += [o for _, o in self.p.feed(self.seq, self.seq, 0, "in", "text", "x", frame)]
        self.tickers += [
            e for e in self.p.codec.decode(self.seq, self.seq, "text", "x", frame)
            if type(e) is Ticker24h
        ]  # fmt: skip

    def push(self, stream: str, payload: bytes, lose: bool = False) -> None:
        """A market frame of a stream it subscribed, numbered for it (``lose``: a fault's)."""
        if stream in self.conn.subs:
            framed = self.conn.numbered(payload)
            if not lose:
                self.feed(framed)


def test_advanced_trade_numbers_each_connection_by_what_it_receives():
    d = get_dialect("coinbase-advanced")
    m = Market(seed=6, symbols=ADV_SYMBOLS, activity=30.0, start_ms=START_MS, encoder=d.encoder())
    host = Host(m)
    everything = AdvancedClient(d, host, ["level2", "market_trades", "ticker", "heartbeats"],
                                ADV_SYMBOLS)  # fmt: skip
    no_ticker = AdvancedClient(d, host, ["level2", "market_trades"], ADV_SYMBOLS)
    one_product = AdvancedClient(d, host, ["level2"], ADV_SYMBOLS[:1])
    clients = [everything, no_ticker, one_product]
    for s, payload in m.advance(m.now_ms + 4_000):
        for c in clients:
            c.push(s, payload)
    for c in clients:  # 0, 1, 2, ...: every message it got, replies included, and no gap
        assert c.numbers == list(range(len(c.numbers))) and len(c.numbers) > 20
        assert not [o for o in c.outs if "Gap" in type(o).__name__]
        assert c.p.reducer("book").sync_state(c.p.state("book"), "BTC-USD") == "synced"
    assert not no_ticker.tickers and not one_product.tickers
    assert {t.symbol for t in everything.tickers} == set(ADV_SYMBOLS)
    for t in everything.tickers:  # the model's day as Advanced Trade's ticker says it
        assert t.low_price <= t.last_price <= t.high_price and t.bid_price < t.ask_price
        assert (t.open_price, t.last_qty, t.vwap, t.quote_volume) == (None,) * 4
    # a frame the connection loses (the gap fault) still takes its number: the client sees it
    stream = d.diff_stream("BTC-USD")
    lost = False
    for s, payload in m.advance(m.now_ms + 1_000):
        one_product.push(s, payload, lose=s == stream and not lost)
        lost = lost or s == stream
    gaps = [o for o in one_product.outs if type(o).__name__ == "GapDetected"]
    assert lost and len(gaps) == 1 and gaps[0].symbol == "BTC-USD"


def test_engine_run_captures_advanced_trade_with_and_without_tickers_with_no_false_gap(tmp_path):
    """Two captures of one simulator at once: every channel of both products (tickers too), and
    the books of one product only.  Each connection's numbers rise by 1: no gap in either."""
    runs = {
        "all": ["--symbols", ",".join(ADV_SYMBOLS), "--channels",
                "level2,market_trades,heartbeats,ticker", "--duration", "3"],
        "some": ["--symbols", ADV_SYMBOLS[0], "--channels", "level2", "--duration", "3"],
    }  # fmt: skip
    journals = captures("coinbase-advanced", 6, ",".join(ADV_SYMBOLS), runs, tmp_path)
    for name, j in journals.items():
        p = build_pipeline("coinbase-advanced")
        outs, tickers = [], []
        for f in JournalReader(j).frames():
            outs += [o for _, o in p.feed(f.seq, f.recv_ns, f.conn, f.dir, f.kind, f.source,
                                          f.payload, f.code)]  # fmt: skip
            if f.dir == "in" and f.kind == "text":
                evs = p.codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload)
                tickers += [e for e in evs if type(e) is Ticker24h]
        wanted = ADV_SYMBOLS if name == "all" else ADV_SYMBOLS[:1]
        assert not [o for o in outs if "Gap" in type(o).__name__], name
        book, state = p.reducer("book"), p.state("book")
        assert sorted(state.symbols) == sorted(wanted)
        for sym in wanted:
            assert book.sync_state(state, sym) == "synced" and state.symbols[sym].counts.gaps == 0
        assert {t.symbol for t in tickers} == (set(wanted) if name == "all" else set())


# =============================================================== Kraken v1

DAY_FIGURES = ("last_price", "last_qty", "open_price", "high_price", "low_price", "volume")


class KrakenModelDay(KrakenV1Frames):
    """The v1 encoder, logging each ticker frame beside the model's day as of its last 1 s
    ticker of the symbol (the reference: :func:`day_ticker` and the day's trade count)."""

    def __init__(self) -> None:
        super().__init__()
        self.latest: dict[str, tuple[Ticker24h, int]] = {}
        self.log: list[tuple[bytes, tuple[Ticker24h, int] | None]] = []

    def ticker(self, symbol, e, day, prev_close, last_qty, top):
        self.latest[symbol] = (day_ticker(symbol, e, day, last_qty, top), day.n)
        return super().ticker(symbol, e, day, prev_close, last_qty, top)

    def _ticker_frame(self, t, pd):
        frame = super()._ticker_frame(t, pd)
        self.log.append((frame, self.latest.get(t.symbol)))
        return frame


def test_kraken_v1_tickers_carry_the_models_24h_figures():
    enc = KrakenModelDay()
    m = Market(seed=2, symbols=["XBT/USD", "ETH/USD"], activity=40.0, start_ms=START_MS,
               encoder=enc)  # fmt: skip
    m.advance(m.now_ms + 5_000)
    codec = KrakenV1()
    seen = {"bbo only": 0, "with day": 0}
    for frame, model in enc.log:
        evs = codec.decode(1, 1, "text", "x", frame)
        assert type(evs[0]) is BookTicker
        if model is None:  # before the model's first 1 s ticker of the symbol: no day to tell
            assert len(evs) == 1
            seen["bbo only"] += 1
            continue
        bbo, t = evs
        want, n = model
        assert {f: getattr(t, f) for f in DAY_FIGURES} == {f: getattr(want, f) for f in DAY_FIGURES}
        assert t.count == n and (t.vwap, t.quote_volume, t.exch_ms) == (None, None, None)
        assert (t.bid_price, t.bid_qty, t.ask_price, t.ask_qty) == (
            bbo.bid_price, bbo.bid_qty, bbo.ask_price, bbo.ask_qty,
        )  # fmt: skip
        seen["with day"] += 1
    assert seen["with day"] > 20 and seen["bbo only"] > 0


@pytest.mark.slow  # the frames are the offline test's; the reducer's side, test_tickers.py's
def test_engine_run_kraken_v1_sim_captures_24h_tickers_and_no_book_ticker_mismatch(tmp_path):
    out = tmp_path / "j"
    cmd = [*ENGINE, "run", "--exchange", "kraken-v1", "--sim", "--channels", "book,trade,ticker",
           "--symbols", "XBT/USD", "--duration", "2.5", "--no-dashboard", "--out", str(out)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout[run.stdout.index("{") :])
    assert "TopOfBookMismatch" not in summary["outputs"], summary["outputs"]
    codec = KrakenV1()
    tickers = [e for f in JournalReader(out).frames() if f.dir == "in" and f.kind == "text"
               for e in codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload)
               if type(e) is Ticker24h]  # fmt: skip
    assert len(tickers) >= 2
    for t in tickers:
        assert t.low_price <= t.last_price <= t.high_price and t.bid_price < t.ask_price
    rep = subprocess.run([*ENGINE, "replay", str(out), "--json"], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    book = json.loads(rep.stdout)["symbols"]["XBT/USD"]["book"]
    assert book["checksum_mismatches"] == 0 and book["checksums_verified"] > 0
