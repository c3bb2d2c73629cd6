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
from trio_websocket import ConnectionRejected, open_websocket_url

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
    st = srv.stats()
    assert st["named_frames"] == 265  # every recorded data frame was named
    assert st["frames_sent"] == len(want)  # and this connection got those of its streams


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
    # the server's clock starts at the subscription, after this instant: no frame may come
    # before opened + its due time (measured from the first arrival, a late first frame
    # would make the frames after it, on time, look early)
    opened = trio.current_time()
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
        assert t + (t0 - opened) >= due - 0.02, (t, t0 - opened, due)  # never early
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


# --------------------------------------------------------------------------- every connection's own replay


SPOT_STREAMS = {"nknusdt@depth@100ms", "lrcbtc@bookTicker", "blzeth@depth@100ms"}


def combined_url(port: int, streams: set[str], query: str = "") -> str:
    return f"ws://127.0.0.1:{port}/stream?streams=" + "/".join(sorted(streams)) + query


async def test_a_client_that_connects_after_another_finished_gets_the_whole_replay(nursery):
    want = [w[1] for w in recorded(SPOT, SPOT_STREAMS)]
    srv = await nursery.start(serve_journal, SPOT, "127.0.0.1", 0, "max")
    for _ in range(2):  # the second client comes after the first one's replay has ended
        async with open_websocket_url(combined_url(srv.port, SPOT_STREAMS)) as ws:
            assert await receive_n(ws, len(want)) == want
            assert await nothing_more(ws) == []
        assert srv.finished.is_set()
    assert srv.stats()["replays"] == {"started": 2, "finished": 2}


async def test_the_window_and_the_symbols_choose_what_every_connection_replays(nursery):
    every = recorded(SPOT, SPOT_STREAMS)
    t1, t2 = every[len(every) // 4][0], every[3 * len(every) // 4][0]
    want = [w[1] for w in every if t1 <= w[0] <= t2 and not w[1].startswith(b'{"stream":"lrc')]
    srv = ReplayServer(SPOT, None, start_ns=t1, end_ns=t2, symbols=["nknusdt", "BLZETH"])
    await srv.start(nursery)
    async with open_websocket_url(combined_url(srv.port, SPOT_STREAMS)) as ws:
        assert await receive_n(ws, len(want)) == want
        assert await nothing_more(ws) == []
    with pytest.raises(ValueError, match="holds no stream of BTCUSDT; its symbols: BLZETH"):
        ReplayServer(SPOT, symbols=["BTCUSDT"])
    with pytest.raises(ValueError, match="outside the journal's data, which spans 2021-10-12T"):
        ReplayServer(SPOT, start_ns=every[-1][0] + 10**9)


async def test_url_overrides_give_one_connection_its_own_window_speed_and_loop(nursery):
    from engine.timefmt import format_ns

    every = recorded(SPOT, SPOT_STREAMS)
    t1, t2 = every[10][0], every[60][0]
    want = [w[1] for w in every if t1 <= w[0] <= t2]
    srv = await nursery.start(serve_journal, SPOT, "127.0.0.1", 0, 1)  # the default: real time
    query = f"&from={format_ns(t1)}&to={t2}&speed=max&loop=true"
    async with open_websocket_url(combined_url(srv.port, SPOT_STREAMS, query)) as ws:
        # at "max" (not the server's 1x) and looped: the window twice, then more
        assert await receive_n(ws, 2 * len(want)) == want + want
    for bad, why in (
        ("&from=yesterday", b"from='yesterday'"),
        ("&speed=0", b"--speed must be a positive number"),
        ("&loop=maybe", b"expected true or false"),
        (f"&from={t2}&to={t1}", b"is before from"),
        ("&from=2030-01-01", b"outside the journal"),
    ):
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(combined_url(srv.port, SPOT_STREAMS, bad)):
                pass
        assert refused.value.status_code == 400
        assert why in (refused.value.body or b""), refused.value.body


async def test_rest_depth_honours_limit(nursery):
    srv = await nursery.start(serve_journal, FUTURES, "127.0.0.1", 0, "max")
    body = next(b for s, b in rest_bodies(FUTURES).items() if "SUSHIUSDT" in s)
    full = json.loads(body)
    assert len(full["bids"]) > 5 and len(full["asks"]) > 5
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.port}") as http:
        r = await http.get("/fapi/v1/depth", params={"symbol": "SUSHIUSDT", "limit": 5})
        cut = r.json()
        assert cut["bids"] == full["bids"][:5] and cut["asks"] == full["asks"][:5]
        assert {k: v for k, v in cut.items() if k not in ("bids", "asks")} == {
            k: v for k, v in full.items() if k not in ("bids", "asks")
        }
        r = await http.get("/fapi/v1/depth", params={"symbol": "SUSHIUSDT"})
        n = len(r.json()["bids"])
        assert n == min(100, len(full["bids"]))  # Binance's default limit
        r = await http.get("/fapi/v1/depth", params={"symbol": "SUSHIUSDT", "limit": 5000})
        assert r.content == body  # within the limit: the recorded bytes


# --------------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    "args",
    [["--speed", "10"], ["--loop"], ["--max-connections", "5"], ["--max-buffered-mb", "8"]],
    ids=lambda a: a[0],
)
def test_serve_options_without_serve_are_a_usage_error(args: list[str]) -> None:
    from click.testing import CliRunner

    from engine.cli import main

    res = CliRunner().invoke(main, ["replay", str(SPOT), *args])
    assert res.exit_code == 2
    errors = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and errors[0].startswith(f"Error: {args[0]} only applies to --serve")


# --------------------------------------------------------------------------- the shared timeline


def _subscribing_journal(path: Path) -> None:
    """~3500 frames in batches of 1500 (so pieces of 1024 rows cross batches), a raw connection
    whose SUBSCRIBEs change twice, and a combined one."""
    import random

    from engine.journal.writer import JournalWriter, WriterConfig

    rng = random.Random(5)
    raw, comb = "wss://h/ws", "wss://h/stream?streams=ethusdt@depth@100ms"
    with JournalWriter.create(path, {"exchange": "binance"}, WriterConfig(compact_rows=1500)) as w:
        t = 1_700_000_000_000_000_000
        sub = b'{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@bookTicker"],"id":1}'
        w.append(t, 1, Dir.OUT, Kind.TEXT, raw, sub, None)
        for i in range(3500):
            t += rng.randrange(1, 5_000_000)
            if i == 1200:
                msg = b'{"method":"SUBSCRIBE","params":["ethusdt@trade"],"id":2}'
                w.append(t, 1, Dir.OUT, Kind.TEXT, raw, msg, None)
            if i == 2500:
                msg = b'{"method":"UNSUBSCRIBE","params":["btcusdt@bookTicker"],"id":3}'
                w.append(t, 1, Dir.OUT, Kind.TEXT, raw, msg, None)
            sym = rng.choice(["BTCUSDT", "ETHUSDT"])
            r = rng.random()
            if r < 0.4:
                p = f'{{"e":"trade","E":{i},"s":"{sym}","t":{i},"p":"1","q":"1","T":{i}}}'
                w.append(t, 1, Dir.IN, Kind.TEXT, raw, p.encode(), None)
            elif r < 0.6:
                p = f'{{"u":{i},"s":"{sym}","b":"1","B":"1","a":"2","A":"1"}}'
                w.append(t, 1, Dir.IN, Kind.TEXT, raw, p.encode(), None)
            else:
                d = f'{{"e":"depthUpdate","E":{i},"s":"ETHUSDT","U":{i},"u":{i},"b":[],"a":[]}}'
                p = '{"stream":"ethusdt@depth@100ms","data":' + d + "}"
                w.append(t, 2, Dir.IN, Kind.TEXT, comb, p.encode(), None)


@pytest.fixture(scope="module")
def subscribing_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("timeline") / "j"
    _subscribing_journal(path)
    return path


def test_a_window_read_from_the_shared_pieces_names_every_frame_as_a_full_pass(subscribing_journal):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from engine.replay.recorded import stream_frames
    from engine.replay.timeline import Timeline

    full = list(stream_frames(JournalReader(subscribing_journal).frames(), StreamNamer()))
    assert len({s for _, s, _ in full}) >= 4
    tl = Timeline.build(subscribing_journal)
    assert len(tl) >= 4  # pieces across several batches
    times = [t for t, _, _ in full]

    @settings(max_examples=40, deadline=None)
    @given(a=st.integers(0, len(full) - 1), b=st.integers(0, len(full) - 1), none=st.booleans())
    def check(a: int, b: int, none: bool) -> None:
        lo, hi = (None, None) if none else (times[min(a, b)], times[max(a, b)])
        want = [f for f in full if (lo is None or lo <= f[0]) and (hi is None or f[0] <= hi)]
        one, two = tl.cursor(lo, hi), tl.cursor(lo, hi)
        got1, got2 = [], []
        for x in one:  # two cursors interleaved: the second reads what the first cached
            got1.append(x)
            got2.append(next(two))
        got2.extend(two)
        assert got1 == want and got2 == want

    check()


# --------------------------------------------------------------------------- served by connection


def subscribe_style_journal(path: Path) -> dict[int, list[bytes]]:
    """A journal of a venue the simulator does not speak: subscribe messages out, then the
    venue's ack, snapshot, updates and pongs in, on two connections; a REST body.  Returns
    each connection's inbound text frames."""
    from engine.journal.writer import JournalWriter

    w = JournalWriter.create(path, {"exchange": "no-such-dialect", "symbols": ["BTC-USD"]})
    t = 1_700_000_000_000_000_000
    inbound: dict[int, list[bytes]] = {1: [], 2: []}
    url = "wss://venue.example/ws/public"
    for conn in (1, 2):
        w.append(t, conn, Dir.LOCAL, Kind.OPEN, url, b"{}", None)
        sub = b'{"op":"subscribe","args":["book.BTC-USD"],"id":%d}' % conn
        w.append(t + 1, conn, Dir.OUT, Kind.TEXT, url, sub, None)
    for i in range(30):
        conn = 1 + i % 2
        t += 1_000_000  # 1 ms apart
        payload = (
            b'{"op":"subscribe","success":true,"id":%d}' % conn
            if i < 2
            else b'{"op":"pong"}'
            if i % 7 == 0
            else b'{"topic":"book.BTC-USD","u":%d,"b":[["1.5","2"]]}' % i
        )
        w.append(t, conn, Dir.IN, Kind.TEXT, url, payload, None)
        inbound[conn].append(payload)
    rest = "https://venue.example/api/book?limit=5&symbol=BTC-USD"
    w.append(t, 0, Dir.IN, Kind.REST, rest, b'{"book":"recorded"}', 200)
    w.close()
    return inbound


async def test_a_venue_without_stream_names_is_served_by_recorded_connection(nursery, tmp_path):
    jdir = tmp_path / "j"
    inbound = subscribe_style_journal(jdir)
    srv = await nursery.start(serve_journal, jdir, "127.0.0.1", 0, "max")
    assert srv.by_connection and set(srv.recorded) == {"!conn1", "!conn2"}
    base = f"ws://127.0.0.1:{srv.port}"
    async with open_websocket_url(f"{base}/ws/public") as ws:
        assert await nothing_more(ws) == []  # nothing before the client's subscribe
        await ws.send_message('{"op":"subscribe","args":["book.BTC-USD"],"id":1}')
        got = await receive_n(ws, len(inbound[1]))
        assert got == inbound[1]  # the recorded ack first, every frame byte for byte
        await ws.send_message('{"op":"ping"}')  # accepted, not answered by invention
        assert await nothing_more(ws) == []
        assert not ws.closed
    async with open_websocket_url(f"{base}/anything?conn=1") as ws:
        await ws.send_message("hello")
        assert await receive_n(ws, len(inbound[1])) == inbound[1]
    async with open_websocket_url(f"{base}/ws/public") as ws:  # the next one in turn
        await ws.send_message("{}")
        assert await receive_n(ws, len(inbound[2])) == inbound[2]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.port}") as http:
        r = await http.get("/api/book", params={"symbol": "BTC-USD", "limit": 5})
        assert (r.status_code, r.content) == (200, b'{"book":"recorded"}')
        r = await http.get("/api/book", params={"symbol": "ETH-USD", "limit": 5})
        assert r.status_code == 404
    with pytest.raises(ValueError, match="--symbols cannot narrow it"):
        ReplayServer(jdir, None, symbols=["BTC-USD"])
