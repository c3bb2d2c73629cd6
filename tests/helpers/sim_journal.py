"""A longer journal without sockets: the simulator's market model written as a capture would be.

The embedded simulator runs in real time, so a socket capture of a test's
1-2 s never closes a 1m candle and is too short to be "deep".  This writes
what a capture of the market model would journal over minutes of simulated
time, in milliseconds of real time: a connection open, combined-stream frames
(``{"stream":...,"data":...}``, Binance's exact form) stamped with their
simulated time, and a REST depth snapshot per symbol shortly after the start
(as the live runtime fetches one when the book asks).  Deterministic for a seed
(only the manifest's ``created_ns`` differs between runs).
"""

from __future__ import annotations

from pathlib import Path

from engine.journal.schema import Dir, Kind
from engine.journal.writer import JournalWriter, WriterConfig
from engine.sim.model import Market

WS = "ws://127.0.0.1:9/stream?streams="
REST = "http://127.0.0.1:9/api/v3/depth?symbol={}&limit=100"
CHANNELS = ("trade", "aggTrade", "depth@100ms", "bookTicker", "ticker", "kline_1m")


def write_sim_journal(
    path: Path,
    *,
    seed: int = 1,
    symbols: tuple[str, ...] = ("btcusdt", "ethusdt"),
    seconds: float = 150.0,
    activity: float = 4.0,
    snapshot_after_ms: int = 300,
    config: WriterConfig | None = None,
) -> Path:
    """Write the journal into ``path`` (must not hold one); returns ``path``."""
    m = Market(seed=seed, symbols=list(symbols), activity=activity)
    streams = [f"{s.lower()}@{c}" for s in symbols for c in CHANNELS]
    url = WS + "/".join(streams)
    wanted = set(streams)
    w = JournalWriter.create(
        path,
        {"exchange": "sim", "symbols": [s.upper() for s in symbols], "origin": "tests/helpers"},
        config or WriterConfig(batch_frames=512),
    )
    t0 = m.start_ms
    w.append(t0 * 1_000_000, 1, Dir.LOCAL, Kind.OPEN, url, b"")
    snapped = False
    end = t0 + int(seconds * 1000)
    t = t0
    while t < end:
        t += 50
        for i, (stream, payload) in enumerate(m.advance(t)):
            if stream in wanted:
                frame = b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}"
                w.append(t * 1_000_000 + i + 1, 1, Dir.IN, Kind.TEXT, url, frame)
        if not snapped and t - t0 >= snapshot_after_ms:
            snapped = True
            for k, sym in enumerate(m.symbols):
                body = m.snapshot(sym, 100)
                w.append(
                    t * 1_000_000 + 900_000 + k, 0, Dir.IN, Kind.REST, REST.format(sym), body, 200
                )
    w.close()
    return path
