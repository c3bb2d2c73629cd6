"""RateLimiter and SendAudit: never more than N in any window, work-conserving FIFO, audit = naive scan."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import serde
from engine.events import ConnectionClosed, ControlSent
from engine.journal.schema import Frame
from engine.outputs import SendRequest
from engine.ratelimit import (
    NextRelease,
    RateLimiter,
    RateViolation,
    Request,
    RequestRejected,
    SendAudit,
    Tick,
    audit_frames,
    control_limit,
)

W = 1000


# the draws' strategies, each built once: one built inside a composite is validated and
# labelled anew at every draw (most of the time of the properties here)
REQUEST_STEPS = st.sampled_from([0, 0, 1, 50, 199, 200, 333, 999, 1000, 1001, 2500])
TIME_BACK = st.sampled_from([0, 0, 0, 0, 700])
CONN = st.sampled_from([1, 2])
SEND_STEPS = st.sampled_from([0, 1, 100, 250, 999, 1000, 3000])
DIRECTION = st.sampled_from(["out", "out", "out", "in"])


@st.composite
def schedules(draw: st.DrawFn, weights: tuple[int, ...] = (1,)) -> list:
    """Requests on two connections and ticks; time mostly forward, sometimes a step back."""
    t = 0
    weight_of = st.sampled_from(weights)
    out: list = []
    for seq in range(draw(st.integers(0, 80))):
        t += draw(REQUEST_STEPS)
        ts = t - draw(TIME_BACK)
        what = draw(st.integers(0, 9))
        if what < 6:
            conn, weight = draw(CONN), draw(weight_of)
            out.append(Request(ts, conn, b"m%d" % seq, seq, weight))
        elif what < 9:
            out.append(Tick(ts))
        else:
            out.append(ConnectionClosed(seq, ts, draw(CONN), "wss://x", None, ""))
    return out


def drive(lim: RateLimiter, events, state=None, follow: bool = True):
    """Step events; like the runtime, after each step wake up at every NextRelease (if follow)."""
    state = lim.initial() if state is None else state
    outs: list = []
    for ev in events:
        state, o = lim.step(state, ev)
        outs.extend(o)
        check_work_conserving(lim, state)
    return state, outs


def check_work_conserving(lim: RateLimiter, state) -> None:
    """Nothing waits that could go now: a queue's head waits only while it does not fit the window."""
    for c in state.conns.values():
        if c.queue:
            in_window = sum(1 for u in c.sent if u + lim.window_ns > state.now)
            assert in_window + min(c.queue[0].weight, lim.limit) > lim.limit


def released_weight(outs: list, events: list, limit: int) -> dict[int, int]:
    """seq → the weight its release counted (at most ``limit``)."""
    w = {e.seq: min(e.weight, limit) for e in events if isinstance(e, Request)}
    return {o.seq: w[o.seq] for o in outs if isinstance(o, SendRequest)}


@pytest.mark.parametrize(
    "limit,max_queue,weights",
    [(1, 0, (1,)), (3, 2, (1,)), (5, 64, (1,)), (5, 3, (1, 2, 5, 8)), (10, 64, (1, 3, 4, 10))],
)
@given(data=st.data())
def test_never_more_than_n_in_any_window(
    limit: int, max_queue: int, weights: tuple[int, ...], data: st.DataObject
) -> None:
    events = data.draw(schedules(weights))
    lim = RateLimiter(limit=limit, window_ns=W, max_queue=max_queue)
    state, outs = drive(lim, events)
    # then wake up as told until every queue is empty
    for _ in range(200):
        nxt = [o for o in outs if isinstance(o, NextRelease)]
        if not any(c.queue for c in state.conns.values()):
            break
        state, o = lim.step(state, Tick(max(x.at_ns for x in nxt)))
        outs.extend(o)
    assert not any(c.queue for c in state.conns.values())
    sends = [o for o in outs if isinstance(o, SendRequest)]
    rejected = [o for o in outs if isinstance(o, RequestRejected)]
    weight = released_weight(outs, events, limit)
    for conn in (1, 2):
        mine = [(s.recv_ns, weight[s.seq]) for s in sends if s.conn == conn]
        times = [t for t, _ in mine]
        assert times == sorted(times)
        for t in times:  # every window (t - W, t] ending at a release — hence every window
            assert sum(w for u, w in mine if t - W < u <= t) <= limit
    # each request is sent exactly once or rejected exactly once, FIFO per connection
    reqs = [e for e in events if isinstance(e, Request)]
    assert sorted(o.seq for o in sends + rejected) == sorted(r.seq for r in reqs)
    for conn in (1, 2):
        seqs = [s.seq for s in sends if s.conn == conn]
        assert seqs == sorted(seqs)
    assert state.released == len(sends) and state.rejected == len(rejected)


@given(events=schedules((1, 1, 2, 3)), cut=st.integers(0, 80))
def test_snapshot_restore_continues_identically(events: list, cut: int) -> None:
    lim = RateLimiter(limit=3, window_ns=W, max_queue=3)
    _, whole = drive(lim, events)
    half, o1 = drive(lim, events[:cut])
    restored = lim.restore(json.loads(json.dumps(lim.snapshot(half))))
    _, o2 = drive(lim, events[cut:], restored)
    assert o1 + o2 == whole
    for o in whole:
        assert serde.load(json.loads(json.dumps(serde.dump(o)))) == o


def test_burst_is_spread_and_overflow_rejects_newest() -> None:
    lim = RateLimiter(limit=2, window_ns=W, max_queue=2)
    state, outs = drive(lim, [Request(0, 7, b"%d" % i, i) for i in range(5)])
    assert [o.seq for o in outs if isinstance(o, SendRequest)] == [0, 1]
    assert [(o.seq, o.reason) for o in outs if isinstance(o, RequestRejected)] == [
        (4, "queue full")
    ]
    assert outs[-1] == NextRelease(7, W, 2)
    assert lim.next_release_ns(state, 7) == W
    state, outs = lim.step(state, Tick(W - 1))
    assert [o for o in outs if isinstance(o, SendRequest)] == []
    state, outs = lim.step(state, Tick(W))
    assert outs == [SendRequest(2, W, 7, b"2"), SendRequest(3, W, 7, b"3")]
    assert lim.next_release_ns(state, 7) is None


def test_closed_connection_drops_its_queue() -> None:
    lim = RateLimiter(limit=1, window_ns=W)
    state, _ = drive(lim, [Request(0, 1, b"a", 1), Request(0, 1, b"b", 2)])
    state, outs = lim.step(state, ConnectionClosed(3, 5, 1, "wss://x", 1000, "bye"))
    assert outs == [RequestRejected(2, 0, 1, b"b", "connection closed")]


def test_published_limits_and_bad_configuration() -> None:
    assert (control_limit("binance"), control_limit("sim"), control_limit("binance-futures")) == (
        5,
        5,
        10,
    )
    with pytest.raises(ValueError):
        RateLimiter(limit=0)


def test_audit_of_the_pipeline_events_equals_the_audit_of_the_frames() -> None:
    """The standard pipeline feeds the audit ControlSent events (journaled dir=out frames)."""
    frames = [Frame(i, i * 150, 1 + i % 2, "out", "text", "wss://x", b"{}") for i in range(40)]
    audit = SendAudit(limit=3, window_ns=W)
    state, got = audit.initial(), []
    for f in frames:
        state, o = audit.step(state, ControlSent(f.seq, f.recv_ns, f.conn, f.source, f.payload))
        got.extend(o)
    assert got == audit_frames(frames, audit) != []


@st.composite
def sent_frames(draw: st.DrawFn) -> list[Frame]:
    t, out = 0, []
    for seq in range(draw(st.integers(0, 60))):
        t += draw(SEND_STEPS)
        d = draw(DIRECTION)
        out.append(Frame(seq, t, draw(CONN), d, "text", "wss://x", b"{}"))
    return out


@given(frames=sent_frames(), limit=st.integers(1, 4))
def test_audit_equals_naive_scan(frames: list[Frame], limit: int) -> None:
    got = audit_frames(frames, SendAudit(limit=limit, window_ns=W))
    expected = []
    for f in frames:
        if f.dir != "out":
            continue
        n = sum(
            g.dir == "out" and g.conn == f.conn and f.recv_ns - W < g.recv_ns <= f.recv_ns
            for g in frames[: f.seq + 1]
        )
        if n > limit:
            expected.append(RateViolation(f.seq, f.recv_ns, f.conn, n, limit, W))
    assert got == expected


def test_limiter_output_passes_audit() -> None:
    """What the limiter releases, journaled as sends, never trips the audit."""
    lim = RateLimiter(limit=5, window_ns=W, max_queue=1000)
    state, outs = drive(lim, [Request(i * 7, 1, b"x", i) for i in range(300)])
    while any(c.queue for c in state.conns.values()):
        state, o = lim.step(state, Tick(lim.next_release_ns(state, 1)))
        outs.extend(o)
    frames = [
        Frame(s.seq, s.recv_ns, 1, "out", "text", "wss://x", s.payload)
        for s in outs
        if isinstance(s, SendRequest)
    ]
    assert len(frames) == 300
    assert audit_frames(frames, SendAudit(limit=5, window_ns=W)) == []
    assert audit_frames(frames, SendAudit(limit=4, window_ns=W)) != []


def test_weights_share_one_budget_and_a_heavy_request_goes_alone() -> None:
    """A weight budget (REST: 10 per window): 4+4 go at once, the next 4 when the first left."""
    lim = RateLimiter(limit=10, window_ns=W, max_queue=10)
    reqs = [Request(0, 0, b"", 1, 4), Request(0, 0, b"", 2, 4), Request(10, 0, b"", 3, 4)]
    state, outs = drive(lim, reqs)
    assert [o.seq for o in outs if isinstance(o, SendRequest)] == [1, 2]
    assert outs[-1] == NextRelease(0, W, 1)  # the 3rd fits once the first 4 left the window
    state, outs = lim.step(state, Tick(W))
    assert outs == [SendRequest(3, W, 0, b"")]
    # heavier than the whole budget: counted as the whole budget, so it waits for an empty window
    state, outs = lim.step(state, Request(W + 1, 0, b"", 4, 50))
    assert outs == [NextRelease(0, 2 * W, 1)]
    state, outs = lim.step(state, Tick(2 * W))
    assert outs == [SendRequest(4, 2 * W, 0, b"")]
