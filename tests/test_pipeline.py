"""The pipeline: frame → events → every reducer; feed() and feed_batch() agree; snapshot/restore."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import pytest

from engine import serde
from engine.events import ConnectionClosed, ConnectionOpened, ControlSent, DecodeError, Marker
from engine.journal.reader import JournalReader
from engine.journal.writer import JournalWriter, WriterConfig
from engine.pipeline import Pipeline
from engine.journal.recorder import OutputRecorder, read_outputs


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
