"""The pipeline: frame → events → every reducer; feed() and feed_batch() agree; snapshot/restore;
one trade selection per source equals each consumer with its own; listeners see every frame."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import serde
from engine.anomaly import AnomalyDetector
from engine.candles import Candles
from engine.events import (
    BookTicker,
    ConnectionClosed,
    ConnectionOpened,
    ControlSent,
    DecodeError,
    Kline,
    Marker,
    Trade,
)
from engine.journal.reader import JournalReader
from engine.journal.recorder import OutputRecorder, read_outputs
from engine.journal.writer import JournalWriter, WriterConfig
from engine.pipeline import Pipeline
from engine.trades import SelectCounts, TradeAggregator, TradeSelect, TradeTape, select_trade
from tests.test_trades import trade_streams


@serde.register
@attrs.frozen
class Tally:
    seq: int
    kind: str
    count: int


class CountingReducer:
    """Counts events per type; every 3rd event of a type is an output.  A real (tiny) reducer."""

    name = "count"

    def initial(self) -> dict[str, int]:
        return {}

    def step(self, state: dict[str, int], event: Any) -> tuple[dict[str, int], Sequence[Tally]]:
        k = type(event).__name__
        n = state.get(k, 0) + 1
        state[k] = n
        return state, ((Tally(event.seq, k, n),) if n % 3 == 0 else ())

    def snapshot(self, state: dict[str, int]) -> dict[str, int]:
        return dict(state)

    def restore(self, data: dict[str, int]) -> dict[str, int]:
        return dict(data)


class EchoCodec:
    """A codec for tests of the pipeline alone: payload b"bad" is a decode error, else a Marker."""

    name = "echo"
    sync_rule = "none"

    def decode(self, seq, recv_ns, kind, source, payload):
        if payload == b"bad":
            return [DecodeError(seq, recv_ns, source, "bad payload", payload)]
        return [Marker(seq, recv_ns, source, payload.decode())]


FRAMES = [
    (1_000, 1, "local", "open", "wss://x", b"", None),
    (2_000, 1, "in", "text", "wss://x", b"a", None),
    (3_000, 1, "out", "text", "wss://x", b'{"method":"SUBSCRIBE"}', None),
    (4_000, 1, "in", "text", "wss://x", b"bad", None),
    (5_000, 0, "in", "rest", "https://r", b"r", 200),
    (6_000, 1, "local", "close", "wss://x", b"going away", 1001),
    (7_000, 2, "local", "open", "wss://x", b"", None),
] * 5


def journal(tmp_path) -> list[tuple]:
    rows = []
    with JournalWriter.create(tmp_path / "j", {}, WriterConfig(batch_frames=4)) as w:
        for f in FRAMES:
            rows.append((w.append(*f), *f))
    return rows


def test_events_of_every_frame_kind(tmp_path):
    p = Pipeline(EchoCodec(), [])
    assert p.events_of(1, 5, 1, "local", "open", "wss://x", b"", None) == (
        ConnectionOpened(1, 5, 1, "wss://x"),
    )
    assert p.events_of(2, 6, 1, "local", "close", "wss://x", b"bye", 1000) == (
        ConnectionClosed(2, 6, 1, "wss://x", 1000, "bye"),
    )
    assert p.events_of(3, 7, 1, "out", "text", "wss://x", b"{}", None) == (
        ControlSent(3, 7, 1, "wss://x", b"{}"),
    )
    assert p.events_of(4, 8, 1, "in", "text", "wss://x", b"hi", None) == [
        Marker(4, 8, "wss://x", "hi")
    ]


def test_feed_and_feed_batch_agree_and_count(tmp_path):
    rows = journal(tmp_path)
    live = Pipeline(EchoCodec(), [CountingReducer()])
    live_out = []
    for seq, *f in rows:
        live_out += live.feed(seq, *f)
    replay = Pipeline(EchoCodec(), [CountingReducer()])
    replay_out = []
    for batch in JournalReader(tmp_path / "j").batches():
        replay_out += replay.feed_batch(batch)
    assert live_out == replay_out and live_out
    assert live.counters == replay.counters
    assert live.counters.decode_errors == 5 and live.counters.frames == len(FRAMES)
    assert live.state("count")["DecodeError"] == 5


@pytest.mark.parametrize("rows_per_slice", [1, 3, 5])
def test_feed_batch_of_slices_agrees_with_feed(tmp_path, rows_per_slice):
    """Replay slices batches (offsets into dictionary columns); two reducers see every event."""
    rows = journal(tmp_path)

    class Second(CountingReducer):
        name = "second"

    live = Pipeline(EchoCodec(), [CountingReducer(), Second()])
    live_out = [o for seq, *f in rows for o in live.feed(seq, *f)]
    replay = Pipeline(EchoCodec(), [CountingReducer(), Second()])
    replay_out = []
    for batch in JournalReader(tmp_path / "j").batches():
        for i in range(0, batch.num_rows, rows_per_slice):
            replay_out += replay.feed_batch(batch.slice(i, rows_per_slice))
    assert live_out == replay_out
    assert live.counters == replay.counters
    assert live.states == replay.states


def test_snapshot_restore_continues_exactly(tmp_path):
    rows = journal(tmp_path)
    full = Pipeline(EchoCodec(), [CountingReducer()])
    full_out = [o for seq, *f in rows for o in full.feed(seq, *f)]
    for cut in (0, 7, 13, len(rows)):
        a = Pipeline(EchoCodec(), [CountingReducer()])
        out = [o for seq, *f in rows[:cut] for o in a.feed(seq, *f)]
        b = Pipeline(EchoCodec(), [CountingReducer()])
        b.restore(a.snapshot())
        out += [o for seq, *f in rows[cut:] for o in b.feed(seq, *f)]
        assert out == full_out
        assert b.counters == full.counters


def test_duplicate_reducer_names_rejected():
    with pytest.raises(ValueError, match="unique"):
        Pipeline(EchoCodec(), [CountingReducer(), CountingReducer()])


def test_outputs_recorded_beside_the_journal_read_back(tmp_path):
    rows = journal(tmp_path)
    p = Pipeline(EchoCodec(), [CountingReducer()])
    rec = OutputRecorder(tmp_path / "j")
    expected = []
    for seq, *f in rows:
        outs = p.feed(seq, *f)
        rec.record(f[0], outs)
        expected += [(s, serde.dump(o)) for s, o in outs]
    rec.close()
    assert list(read_outputs(tmp_path / "j")) == expected
    # the outputs directory does not disturb the journal itself
    r = JournalReader(tmp_path / "j")
    assert r.foreign == [] and sum(1 for _ in r.frames()) == len(rows)


# ----------------------------------------------------------------- the trade consumers


def consumers(sources: Sequence[str]) -> list[Any]:
    """The four trade consumers with the given sources (tuned so that they all fire), and a
    non-consumer between them."""
    a, t, c, d = sources
    return [
        TradeAggregator(source=a, bucket_ms=500, windows_ms=(1000, 5000)),
        TradeTape(source=t, size=4),
        CountingReducer(),
        Candles(source=c, intervals=("1s", "5s"), sma_periods=(2,), ema_periods=(2,), max_fill=3),
        AnomalyDetector(
            source=d,
            volume_interval_ms=1000,
            volume_baseline=3,
            large_notional=10**16,
            large_window=4,
            price_jump_bps=50,
            stale_after_ms=2,
            spread_window=3,
        ),  # fmt: skip
    ]


@st.composite
def market(draw: st.DrawFn) -> list[Any]:
    """Trades of two symbols (both kinds, duplicates, some untimed) among connection events,
    quotes and klines."""
    out: list[Any] = []
    for ev in draw(trade_streams()):
        if draw(st.integers(0, 20)) == 0:
            ev = attrs.evolve(ev, txn_ms=None, exch_ms=None)
        out.append(ev)
        roll = draw(st.integers(0, 30))
        if roll == 0:
            out.append(ConnectionClosed(ev.seq, ev.recv_ns, 1, "wss://x", 1006, ""))
        elif roll == 1:
            out.append(BookTicker(ev.seq, ev.recv_ns, ev.symbol, 1, ev.price, 1, ev.price + 9, 1))
        elif roll == 2 and ev.txn_ms is not None:
            start = ev.txn_ms - ev.txn_ms % 1000
            out.append(
                Kline(
                    ev.seq,
                    ev.recv_ns,
                    ev.symbol,
                    ev.txn_ms,
                    "1s",
                    start,
                    start + 999,
                    ev.price,
                    ev.price,
                    ev.price,
                    ev.price,
                    ev.qty,
                    0,
                    1,
                    True,
                    ev.first_id,
                    ev.last_id,
                    0,
                    0,
                )  # fmt: skip
            )
    return out


def naive(reducers: Sequence[Any], events: Sequence[Any]) -> tuple[list, list, dict]:
    """Each reducer folded on its own, a trade consumer with its own copy of the selection
    rule's memory: the outputs (in the pipeline's order), the states, the counts per source."""
    states = [r.initial() for r in reducers]
    memory = [({}, SelectCounts()) for _ in reducers]
    out = []
    for ev in events:
        for k, r in enumerate(reducers):
            if type(ev) is Trade and hasattr(r, "on_trade"):
                sels, counts = memory[k]
                t = select_trade(counts, sels.setdefault(ev.symbol, TradeSelect()), ev, r.source)
                states[k], o = r.on_trade(states[k], ev, t)
            else:
                states[k], o = r.step(states[k], ev)
            out += [(ev.seq, x) for x in o]
    counts = {r.source: memory[k][1] for k, r in enumerate(reducers) if hasattr(r, "on_trade")}
    return out, [r.snapshot(s) for r, s in zip(reducers, states, strict=True)], counts


@settings(max_examples=60)
@given(
    events=market(),
    sources=st.lists(st.sampled_from(["auto", "trade", "aggTrade"]), min_size=4, max_size=4),
    cut=st.integers(0, 200),
)
def test_pipeline_equals_each_consumer_alone_across_restore(events, sources, cut) -> None:
    """One selection per source, shared by the consumers, is each consumer with its own."""
    want_out, want_states, want_counts = naive(consumers(sources), events)
    first = Pipeline(None, consumers(sources))
    got = [o for ev in events[:cut] for o in first.fold_events(ev.seq, [ev])]
    second = Pipeline(None, consumers(sources))
    second.restore(json.loads(json.dumps(first.snapshot())))  # a checkpoint, through JSON
    got += [o for ev in events[cut:] for o in second.fold_events(ev.seq, [ev])]
    assert got == want_out
    assert [r.snapshot(s) for r, s in zip(second.reducers, second.states, strict=True)] == (
        want_states
    )
    assert {s: second.selection(s).counts for s in want_counts} == want_counts
    assert len(second.selectors) == len(set(sources))


def test_an_older_snapshot_version_is_refused_and_changes_nothing() -> None:
    """A checkpoint written before the selection moved into the pipeline is not restored
    (replay then folds from the start) rather than restored wrong."""
    p = Pipeline(None, consumers(["auto"] * 4))
    p.fold_events(1, [Trade(1, 1, "X", 1, 10**8, 10**8, "buy", 5, 5, 1, 1)])
    before = p.snapshot()
    old = json.loads(json.dumps(before))
    old["version"] = 1
    del old["selection"]
    fresh = Pipeline(None, consumers(["auto"] * 4))
    with pytest.raises(ValueError, match="version"):
        fresh.restore(old)
    assert fresh.snapshot() == Pipeline(None, consumers(["auto"] * 4)).snapshot()
    old["version"] = before["version"]
    with pytest.raises(ValueError, match="selection"):
        fresh.restore(old)


# ----------------------------------------------------------------- listeners


def test_listeners_see_every_frames_events_before_the_reducers(tmp_path):
    """feed and feed_batch report the same (seq, events), each before that frame's fold."""
    rows = journal(tmp_path)
    seen: list[tuple[int, list, int]] = []

    def make():
        p = Pipeline(EchoCodec(), [CountingReducer()])
        p.listeners.append(lambda seq, evs: seen.append((seq, list(evs), p.counters.events)))
        return p

    live = make()
    for seq, *f in rows:
        live.feed(seq, *f)
    live_seen, seen[:] = seen[:], []
    replay = make()
    for batch in JournalReader(tmp_path / "j").batches():
        replay.feed_batch(batch)
    assert seen == live_seen
    assert [s for s, _, _ in seen] == [seq for seq, *_ in rows]  # every frame decodes to something
    assert [evs for _, evs, _ in seen] == [
        list(Pipeline(EchoCodec(), []).events_of(*r)) for r in rows
    ]
    # before the fold: the counters had not yet counted the frame's events
    total = 0
    for _, evs, counted in seen:
        assert counted == total
        total += len(evs)
