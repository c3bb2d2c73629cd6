"""The replay server against real sockets: recorded bytes out, per stream, paced, with REST.

Fixtures: fixtures/journals/binance-spot and binance-futures (real cryptofeed
captures, see fixtures/README.md).  Expected values are computed here from the
journal with the journal reader and ``json`` — not with the server's own
stream-naming code — so a naming bug cannot agree with itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from engine.journal.reader import JournalReader
from engine.journal.schema import Dir, Kind
from engine.replay.server import (
    ReplayServer,
    RestIndex,
    StreamNamer,
    parse_speed,
    serve_journal,
)
from engine.sim.server import SimConfig

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "journals"
SPOT = FIX / "binance-spot"
FUTURES = FIX / "binance-futures"


def recorded(journal: Path, streams: set[str]) -> list[tuple[int, bytes, bytes]]:
    """(recv_ns, combined frame bytes, data bytes as JSON-normalized) of the streams, in order."""
    out = []
    for f in JournalReader(journal, kinds=[Kind.TEXT], dirs=[Dir.IN]).frames():
        obj = json.loads(f.payload)
        if isinstance(obj, dict) and obj.get("stream") in streams:
            out.append((f.recv_ns, f.payload, obj["data"]))
    return out


async def receive_n(ws, n: int, within: float = 10.0) -> list[bytes]:
    got: list[bytes] = []
    with trio.fail_after(within):
        while len(got) < n:
            m = await ws.get_message()
            got.append(m.encode() if isinstance(m, str) else m)
    return got


async def nothing_more(ws, wait: float = 0.3) -> list[bytes]:
    extra: list[bytes] = []
    with trio.move_on_after(wait):
        while True:
            extra.append(await ws.get_message())
    return extra


# --------------------------------------------------------------------------- WebSocket


async def test_combined_path_sends_the_recorded_frames_byte_exact(nursery):
    streams = {"nknusdt@depth@100ms", "lrcbtc@bookTicker"}
    want = recorded(SPOT, streams)
    assert len(want) == 150 + 9
    srv = await nursery.start(serve_journal, SPOT, "127.0.0.1", 0, "max")
    url = f"ws://127.0.0.1:{srv.port}/stream?streams=" + "/".join(sorted(streams))
    async with open_websocket_url(url) as ws:
        got = await receive_n(ws, len(want))
        assert got == [w[1] for w in want]
        assert await nothing_more(ws) == []
    assert srv.finished.is_set()
    assert srv.stats()["frames_sent"] == 265  # every recorded data frame was named


async def test_raw_path_sends_the_bare_data_bytes(nursery):
    want = recorded(SPOT, {"nknusdt@bookTicker"})
    srv = await nursery.start(serve_journal, SPOT, "127.0.0.1", 0, "max")
    async with open_websocket_url(f"ws://127.0.0.1:{srv.port}/ws/nknusdt@bookTicker") as ws:
        got = await receive_n(ws, len(want))
    assert [json.loads(g) for g in got] == [w[2] for w in want]
    for g, (_, frame, _) in zip(got, want, strict=True):
        assert frame == b'{"stream":"nknusdt@bookTicker","data":' + g + b"}"


async def test_subscribe_list_unsubscribe_on_raw_ws(nursery):
    srv = await nursery.start(serve_journal, SPOT, "127.0.0.1", 0, "max")
    want = recorded(SPOT, {"lrcbtc@depth@100ms", "blzeth@depth@100ms"})
    async with open_websocket_url(f"ws://127.0.0.1:{srv.port}/ws") as ws:
        # nothing is replayed before the first subscription
        assert await nothing_more(ws, 0.2) == []
        assert not srv.started.is_set()
        await ws.send_message(
            json.dumps(
                {
                    "method": "SUBSCRIBE",
                    "params": ["lrcbtc@depth@100ms", "blzeth@depth@100ms"],
                    "id": 1,
                }
            )
        )
        got = await receive_n(ws, 1 + len(want))
        assert json.loads(got[0]) == {"result": None, "id": 1}
        assert [json.loads(g) for g in got[1:]] == [w[2] for w in want]
        await ws.send_message(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        reply = json.loads(await ws.get_message())
        assert reply == {"result": ["lrcbtc@depth@100ms", "blzeth@depth@100ms"], "id": 2}
        await ws.send_message(
            json.dumps({"method": "UNSUBSCRIBE", "params": ["blzeth@depth@100ms"], "id": 3})
        )
        assert json.loads(await ws.get_message()) == {"result": None, "id": 3}
        await ws.send_message(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 4}))
        assert json.loads(await ws.get_message()) == {"result": ["lrcbtc@depth@100ms"], "id": 4}
        # Binance's error for a malformed request still comes from the shared machinery
        await ws.send_message(json.dumps({"method": "SUBSCRIBE", "params": [1], "id": 5}))
        assert json.loads(await ws.get_message())["error"]["code"] == 1


async def test_unknown_stream_is_accepted_and_silent(nursery):
    srv = await nursery.start(serve_journal, SPOT, "127.0.0.1", 0, "max")
    async with open_websocket_url(f"ws://127.0.0.1:{srv.port}/ws/btcusdt@trade") as ws:
        assert await nothing_more(ws, 0.3) == []
    assert srv.finished.is_set()


async def test_pacing_at_speed_10_and_unsubscribe_takes_effect(nursery):
    """Frames keep the recorded spacing /10; after the UNSUBSCRIBE reply no frame of that stream."""
    a, b = "nknusdt@depth@100ms", "nknusdt@bookTicker"
    want = recorded(SPOT, {a, b})
    srv = await nursery.start(serve_journal, SPOT, "127.0.0.1", 0, 10)
    arrivals: list[tuple[float, dict]] = []
    async with open_websocket_url(f"ws://127.0.0.1:{srv.port}/stream?streams={a}/{b}") as ws:
        t0 = None
        half = want[0][0] + (want[-1][0] - want[0][0]) // 2
        unsub_sent = False
        with trio.fail_after(10):
            while True:
                m = json.loads(await ws.get_message())
                now = trio.current_time()
                if "result" in m:
                    break
                t0 = now if t0 is None else t0
                arrivals.append((now - t0, m))
                i = len(arrivals) - 1
                if not unsub_sent and want[i][0] >= half:
                    await ws.send_message(
                        json.dumps({"method": "UNSUBSCRIBE", "params": [b], "id": 7})
                    )
                    unsub_sent = True
        rest = await receive_n(
            ws, sum(1 for w in want[len(arrivals) :] if json.loads(w[1])["stream"] == a)
        )
        assert all(json.loads(r)["stream"] == a for r in rest)
    n = len(arrivals)
    assert [m for _, m in arrivals] == [json.loads(w[1]) for w in want[:n]]
    base = want[0][0]
    for (t, _), (recv_ns, _, _) in zip(arrivals, want, strict=False):
        due = (recv_ns - base) / 1e9 / 10
        assert t >= due - 0.02, (t, due)  # never early
        assert t <= due + 0.5, (t, due)  # and not far behind
    assert arrivals[-1][0] > 1.0  # half of a 31 s capture at 10x is ~1.5 s


# --------------------------------------------------------------------------- REST


def rest_bodies(journal: Path) -> dict[str, bytes]:
    return {f.source: f.payload for f in JournalReader(journal, kinds=[Kind.REST]).frames()}


async def test_rest_serves_the_recorded_snapshot(nursery):
    srv = await nursery.start(serve_journal, SPOT, "127.0.0.1", 0, "max")
    bodies = rest_bodies(SPOT)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.port}") as http:
        for source, body in bodies.items():
            sym = source.split("symbol=")[1].split("&")[0]
            r = await http.get("/api/v3/depth", params={"symbol": sym, "limit": 1000})
            assert r.status_code == 200
            assert r.content == body
        r = await http.get("/api/v3/depth", params={"symbol": "BTCUSDT"})
        assert r.status_code == 400 and r.json()["code"] == -1121
        r = await http.get("/api/v3/depth")
        assert r.status_code == 400 and r.json()["code"] == -1102
        sym = next(iter(bodies)).split("symbol=")[1].split("&")[0]
        r = await http.get("/api/v3/depth", params={"symbol": sym.lower()})
        assert r.status_code == 200  # any case: the recorded body is the answer
        r = await http.get("/api/v3/depth", params={"symbol": sym, "limit": "ten"})
        assert r.status_code == 400 and r.json()["code"] == -1100  # Binance's parameter rules
        r = await http.post("/api/v3/depth", params={"symbol": sym})
        assert r.status_code == 405
        r = await http.get("/sim/inject", params={"fault": "drop"})
        assert r.status_code == 404  # the simulator's debug routes are not the replay's
        r = await http.get("/api/v3/time")
        assert r.json() == {"serverTime": srv.first_ns // 1_000_000}
        r = await http.get("/nope")
        assert r.status_code == 404
        stats = (await http.get("/replay/stats")).json()
        assert stats["rest_snapshots"] == 4 and stats["rest"]["snapshots"] == len(bodies) + 1


async def test_futures_journal_combined_and_fapi_depth(nursery):
    streams = {"sushiusdt@depth@100ms", "akrousdt@aggTrade"}
    want = recorded(FUTURES, streams)
    assert want
    srv = await nursery.start(serve_journal, FUTURES, "127.0.0.1", 0, "max")
    url = f"ws://127.0.0.1:{srv.port}/stream?streams=" + "/".join(sorted(streams))
    async with open_websocket_url(url) as ws:
        got = await receive_n(ws, len(want))
    assert got == [w[1] for w in want]
    body = next(b for s, b in rest_bodies(FUTURES).items() if "SUSHIUSDT" in s)
    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://127.0.0.1:{srv.port}/fapi/v1/depth?symbol=SUSHIUSDT&limit=1000")
    assert r.content == body


def test_rest_index_picks_latest_at_or_before_else_first():
    idx = RestIndex()
    src = "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000"
    idx.add(100, src, 200, b"A")
    idx.add(200, src, 200, b"B")
    idx.add(300, src.replace("depth", "ticker"), 200, b"ignored")
    assert idx.lookup("/api/v3/depth", "btcusdt", 50) == (200, b"A")  # before any: the first
    assert idx.lookup("/api/v3/depth", "BTCUSDT", 100) == (200, b"A")
    assert idx.lookup("/api/v3/depth", "BTCUSDT", 199) == (200, b"A")
    assert idx.lookup("/api/v3/depth", "BTCUSDT", 10**12) == (200, b"B")
    assert idx.lookup("/fapi/v1/depth", "BTCUSDT", 150) is None
    assert len(idx) == 2


# --------------------------------------------------------------------------- stream naming


def test_stream_namer_raw_connections_and_subscribe():
    n = StreamNamer()
    one = "wss://stream.binance.com:9443/ws/btcusdt@trade"
    trade = b'{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1,"m":true,"M":true}'
    assert n.name(1, one, trade) == ("btcusdt@trade", trade)
    multi = "wss://stream.binance.com:9443/ws"
    n.observe(
        2,
        multi,
        b'{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms","ethusdt@depth@100ms","ethusdt@bookTicker","ethusdt@depth5"],"id":1}',
    )
    assert n.name(2, multi, b'{"result":null,"id":1}') is None
    diff = b'{"e":"depthUpdate","E":1,"s":"ETHUSDT","U":1,"u":2,"b":[],"a":[]}'
    assert n.name(2, multi, diff) == ("ethusdt@depth@100ms", diff)
    bt = b'{"u":5,"s":"ETHUSDT","b":"1","B":"1","a":"2","A":"1"}'
    assert n.name(2, multi, bt) == ("ethusdt@bookTicker", bt)
    part = b'{"lastUpdateId":9,"bids":[],"asks":[]}'
    assert n.name(2, multi, part) == ("ethusdt@depth5", part)
    n.observe(2, multi, b'{"method":"UNSUBSCRIBE","params":["ethusdt@depth5"],"id":2}')
    assert n.name(2, multi, part) is None  # no stream left that it could be
    # a wrapper in a non-compact form is parsed and re-serialized
    loose = b'{ "stream": "x@trade", "data": {"a": 1} }'
    assert n.name(3, "wss://h/stream?streams=x@trade", loose) == ("x@trade", b'{"a":1}')
    assert n.reserialized == 1
    assert n.name(3, "wss://h/stream?streams=x@trade", b"not json") is None


def test_parse_speed():
    assert parse_speed("max") is None and parse_speed(None) is None
    assert parse_speed("10") == 10.0 and parse_speed(1) == 1.0
    for bad in ("0", "-1", "fast", "inf"):
        with pytest.raises(ValueError):
            parse_speed(bad)


# --------------------------------------------------------------------------- round trip


async def test_speed_max_back_pressure_keeps_every_frame_for_a_slow_reader(nursery):
    """A client that reads slowly at --speed max is throttled, not aborted as a slow consumer.

    The slow-consumer limit is set far below the journal's size (~390 kB): without the
    back-pressure the server would abort this client.
    """
    srv = ReplayServer(FUTURES, None, SimConfig(port=0, max_buffer=32 * 1024))
    await srv.start(nursery)
    streams = sorted(srv.recorded)
    want = recorded(FUTURES, set(streams))
    url = f"ws://127.0.0.1:{srv.port}/stream?streams=" + "/".join(streams)
    async with open_websocket_url(url) as ws:
        await trio.sleep(0.2)  # let the pump run ahead
        got = await receive_n(ws, len(want))
    assert got == [w[1] for w in want]
    assert srv.stats()["connections"][0]["close_kind"] != "slow_consumer"
