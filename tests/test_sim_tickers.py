"""The simulator's tickers as each venue sends them, judged against the market model's own day.

* Bybit linear/inverse: one ``tickers`` snapshot, then deltas of the changed fields only; a
  subscription that comes later starts from the full ticker of the last message.  The frames go
  through the engine's pipeline (codec, then :class:`engine.tickers.TickerMerge`), and every full
  ticker it holds equals the model's ticker at that time, for an early and a late subscriber —
  offline against the model here, and end to end (``engine simulate`` and ``engine run`` in real
  processes, real sockets) for ``bybit-linear``.
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
from engine.events import Ticker24h
from engine.journal.reader import JournalReader
from engine.sim.bybit_frames import BybitFrames
from engine.sim.dialect import get_dialect
from engine.sim.frames import day_ticker
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


def _served_until_stopped(venue: str, seed: int, symbols: str, run_args: list[str], out: Path):
    """``engine simulate --venue`` (fixed epoch and seed) and ``engine run --url`` capturing from it
    for ``run_args``, in real processes on 127.0.0.1; the simulator is stopped after the capture."""
    sim = subprocess.Popen(
        [*ENGINE, "simulate", "--venue", venue, "--seed", str(seed), "--symbols", symbols,
         "--epoch", "2024-01-01T00:00:00Z"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = sim.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("listening ws://"), (line, sim.poll())
        url = line.split()[1]
        run = subprocess.run(
            [*ENGINE, "run", "--exchange", venue, "--url", url, "--symbols", symbols,
             "--no-dashboard", "--out", str(out), *run_args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
    finally:
        sim.terminate()
        sim.communicate(timeout=15)


def test_engine_run_from_the_bybit_linear_simulator_merges_tickers_equal_to_the_models(tmp_path):
    out = tmp_path / "j"
    run_args = ["--channels", "depth,trade,ticker", "--duration", "3.5"]
    _served_until_stopped("bybit-linear", 4, "BTCUSDT", run_args, out)
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
