"""The connection-actions reducer: every serverShutdown notice becomes one RotateRequest, in replay too.

Live, the runtime answers a RotateRequest by rotating the connection that
delivered the frame (tests/test_live.py, the simulator's ``shutdown`` fault);
here: the fold itself, over any event stream and over a journal replayed
through the standard pipeline.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from engine.assembly import build_pipeline
from engine.connection_actions import ConnectionActions
from engine.events import ServerShutdown
from engine.journal.reader import JournalReader
from engine.journal.schema import Dir, Kind
from engine.journal.writer import JournalWriter
from engine.outputs import RotateRequest
from tests.strategies import events

streams = st.lists(st.one_of(events(), st.builds(ServerShutdown, st.integers(1, 10**9),
                                                  st.integers(0, 10**18), st.none())), max_size=40)  # fmt: skip


@given(evs=streams)
def test_one_rotate_request_per_server_shutdown_and_nothing_else(evs: list) -> None:
    r = ConnectionActions()
    state, outs = r.initial(), []
    for ev in evs:
        state, o = r.step(state, ev)
        outs.extend(o)
    want = [
        RotateRequest(e.seq, e.recv_ns, "serverShutdown") for e in evs if type(e) is ServerShutdown
    ]
    assert outs == want and state.rotate_requests == len(want)


@given(evs=streams, cut=st.integers(0, 40))
def test_snapshot_restore_continues_identically(evs: list, cut: int) -> None:
    r = ConnectionActions()

    def fold(state, part):
        out = []
        for ev in part:
            state, o = r.step(state, ev)
            out.extend(o)
        return state, out

    whole, all_outs = fold(r.initial(), evs)
    half, first = fold(r.initial(), evs[:cut])
    resumed, rest = fold(r.restore(json.loads(json.dumps(r.snapshot(half)))), evs[cut:])
    assert first + rest == all_outs and r.snapshot(resumed) == r.snapshot(whole)


def test_replaying_a_journal_with_a_shutdown_notice_asks_for_a_rotation(tmp_path) -> None:
    """The standard pipeline (live and replay alike) answers the notice's frame with a RotateRequest."""
    w = JournalWriter.create(tmp_path / "j", {"exchange": "binance"})
    src = "wss://stream.binance.com:9443/stream?streams=btcusdt@trade"
    w.append(1_000, 1, Dir.LOCAL, Kind.OPEN, src, b"{}")
    w.append(2_000, 1, Dir.IN, Kind.TEXT, src, b'{"e":"serverShutdown","E":1700000000000}')
    w.append(3_000, 1, Dir.IN, Kind.TEXT, src, b'{"e":"serverShutdown","E":1700000000001}')
    w.close()
    p = build_pipeline("binance")
    outs = [o for b in JournalReader(tmp_path / "j").batches() for o in p.feed_batch(b)]
    rot = [(seq, o) for seq, o in outs if type(o) is RotateRequest]
    assert rot == [(2, RotateRequest(2, 2_000, "serverShutdown")),
                   (3, RotateRequest(3, 3_000, "serverShutdown"))]  # fmt: skip
