"""Trade reducers throughput: TradeAggregator, Candles and AnomalyDetector, alone and together.

Usage:  python bench/reducers.py [--trades 1000000] [--symbols 40] [--repeat 5] [--real]
                                 [--diagnose]

What it measures (issue 6): trades/s on one core through each reducer alone,
through all three (``trio``) and with the trade tape too (``trio+tape``: the
trade consumers ``engine run`` and ``engine replay`` fold), folded by the real :class:`engine.pipeline.Pipeline`
(``fold_events``, in chunks of 1,000 events like a journal record batch), so
the trio runs as the pipeline runs it: the trade-selection rule applied once
per trade by the pipeline's selection stage, then each consumer's ``on_trade``, on

* ``synthetic``: Binance-like aggTrades of ``--symbols`` USDT pairs with a
  skewed activity (symbol k trades ∝ 1/(k+1), so the top pair takes ~25 %),
  exchange time advancing by a few ms per trade (one busy exchange-wide
  stream: ~1 hour of market time for the default million trades), prices on a
  random walk of whole ticks, lognormal lot-rounded quantities, increasing
  aggTrade ids, receive time = exchange time + 1-5 ms.  Deterministic (seeded).
* ``real`` (``--real``): the 93 aggTrades of the committed real Binance USD-M
  capture (fixtures/journals/binance-futures), decoded once, repeated to
  ``--trades`` with every pass shifted past the previous one in time and ids
  (so the selection rule accepts each copy instead of dropping duplicates).
  A sparse stream (a few trades per second per symbol): most trades finish a
  1 s aggregator bucket (a TradeStats report) or a volume interval, so this
  set measures the boundary work.

``--diagnose`` adds rows that locate the trio's cost: with
``TradeAggregator(emit_stats=False)`` (no TradeStats built when a 1 s bucket
closes), with ``Candles(intervals=("1m",))`` (one series per trade instead of
three), both, and the bare fold loop with a reducer that does nothing.

Events are built before timing; each figure is the median of ``--repeat``
runs on fresh states (gc collected before, on during the run).  Each reducer
runs with its default configuration, as ``engine.assembly`` builds it.  The
alert counts printed after the table show the synthetic stream does not keep
the detector on its slow (alerting) paths.

Target (issue 6): ≥ 500k trades/s for the trio (met only by the C trade path
that issue 11 removed: the reducers are their Python definition now).  On a
shared 2-core machine timings are noisy: compare ratios, rerun.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from engine.anomaly import AnomalyDetector
from engine.candles import Candles
from engine.events import BUY, SELL, Trade
from engine.pipeline import Pipeline
from engine.trades import TradeAggregator, TradeTape

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "journals"
START_MS = 1_714_521_600_000  # 2024-05-01T00:00:00Z


def synthetic(n: int, n_symbols: int, seed: int = 7) -> list[Trade]:
    """``n`` realistic aggTrades over ``n_symbols`` symbols (see the module docstring)."""
    rng = random.Random(seed)
    symbols = [f"S{k:02d}USDT" for k in range(n_symbols)]
    weights = [1 / (k + 1) for k in range(n_symbols)]
    tick = {s: 10 ** rng.randint(2, 6) for s in symbols}  # 1e-6 .. 1e-2 quote
    price = {s: tick[s] * rng.randint(5_000, 50_000) for s in symbols}
    lot = {s: 10 ** rng.randint(3, 8) for s in symbols}
    agg_id = dict.fromkeys(symbols, 1)
    trade_id = dict.fromkeys(symbols, 1)
    picks = rng.choices(symbols, weights, k=n)
    t = START_MS
    out = []
    for seq, sym in enumerate(picks, 1):
        t += rng.choice((0, 0, 1, 2, 3, 5, 8))
        p = price[sym] = max(tick[sym], price[sym] + tick[sym] * rng.choice((-1, 0, 0, 0, 1)))
        q = max(1, round(math.exp(rng.gauss(0, 1.5)) * 1000)) * lot[sym] // 1000
        q = max(lot[sym], q - q % lot[sym])
        fills = rng.choice((1, 1, 1, 2, 3))
        first = trade_id[sym]
        trade_id[sym] += fills
        recv = (t + rng.randint(1, 5)) * 1_000_000
        side = BUY if rng.random() < 0.5 else SELL
        out.append(
            Trade(seq, recv, sym, agg_id[sym], p, q, side, t + 1, t, first, first + fills - 1, True)
        )
        agg_id[sym] += 1
    return out


def real(n: int) -> list[Trade]:
    """The real capture's trades, repeated to ``n`` with time and ids shifted per pass."""
    from engine.codecs.binance import BinanceFutures
    from engine.journal.reader import JournalReader

    codec = BinanceFutures()
    base = [
        ev
        for f in JournalReader(FIX / "binance-futures").frames()
        if f.dir == "in" and f.kind == "text"
        for ev in codec.decode(f.seq, f.recv_ns, f.kind, f.source, f.payload)
        if type(ev) is Trade
    ]
    if not base:
        raise SystemExit("no trades in fixtures/journals/binance-futures")
    span_ms = max(e.txn_ms or 0 for e in base) - min(e.txn_ms or 0 for e in base) + 1
    span_id = max(e.last_id for e in base) + 1
    out = []
    for k in range(n // len(base) + 1):
        dt, di = k * span_ms, k * span_id
        out += [
            attrs.evolve(
                e, seq=len(out) + i + 1, recv_ns=e.recv_ns + dt * 1_000_000,
                exch_ms=None if e.exch_ms is None else e.exch_ms + dt,
                txn_ms=None if e.txn_ms is None else e.txn_ms + dt,
                trade_id=e.trade_id + di, first_id=e.first_id + di, last_id=e.last_id + di,
            )
            for i, e in enumerate(base)
        ]  # fmt: skip
    return out[:n]


class Null:
    """A reducer that does nothing: the fold loop's own cost."""

    name = "null"

    def initial(self) -> None:
        return None

    def step(self, state: None, event: Any) -> tuple[None, tuple[()]]:
        return state, ()

    def snapshot(self, state: None) -> None:
        return None

    def restore(self, data: None) -> None:
        return None


CHUNK = 1000


def fold(reducers: Sequence[Any], events: Sequence[Any]) -> tuple[float, list[Any], int]:
    """Fold ``events`` through a fresh Pipeline of ``reducers``: seconds, states, outputs."""
    p = Pipeline(None, reducers)
    chunks = [events[i : i + CHUNK] for i in range(0, len(events), CHUNK)]
    outputs = 0
    gc.collect()
    t0 = time.perf_counter()
    for chunk in chunks:
        outputs += len(p.fold_events(0, chunk))
    return time.perf_counter() - t0, p.states, outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trades", type=int, default=1_000_000)
    ap.add_argument("--symbols", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--real", action="store_true", help="also the real capture's trades")
    ap.add_argument("--diagnose", action="store_true", help="also the cost-locating variants")
    args = ap.parse_args()

    sets = {"synthetic": synthetic(args.trades, args.symbols)}
    if args.real:
        sets["real"] = real(args.trades)
    agg, candles, anomaly = TradeAggregator(), Candles(), AnomalyDetector()
    configs = {
        "trades": [agg],
        "candles": [candles],
        "anomaly": [anomaly],
        "trio": [agg, candles, anomaly],
        # what engine run / engine replay fold: the trio plus the trade tape
        "trio+tape": [agg, TradeTape(), candles, anomaly],
    }
    if args.diagnose:
        quiet, one = TradeAggregator(emit_stats=False), Candles(intervals=("1m",))
        configs |= {
            "trio-nostats": [quiet, candles, anomaly],
            "trio-1m": [agg, one, anomaly],
            "trio-both": [quiet, one, anomaly],
            "null": [Null()],
        }
    print(
        f"{'events':10} {'reducers':12} {'trades':>9} {'trades/s':>11} {'µs/trade':>9} {'outputs':>8}"
    )
    for name, events in sets.items():
        for label, reducers in configs.items():
            runs = [fold(reducers, events) for _ in range(args.repeat)]
            secs = statistics.median(r[0] for r in runs)
            outputs = runs[0][2]
            print(
                f"{name:10} {label:12} {len(events):>9} {len(events) / secs:>11,.0f} "
                f"{secs / len(events) * 1e6:>9.3f} {outputs:>8}"
            )
        _, states, _ = fold([anomaly], events)
        alerts = Counter(states[0].alerts)
        print(f"{name:10} alerts: {dict(sorted(alerts.items())) or 'none'}")


if __name__ == "__main__":
    main()
