"""The exchange simulator over real sockets on 127.0.0.1, with trio-websocket (and raw wsproto) clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from itertools import pairwise
from typing import Any

import httpx
import pytest
import trio
import wsproto
import wsproto.events as we
from click.testing import CliRunner
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url
from wsproto import ConnectionType

from engine.num import parse
from engine.sim.cli import Simulator, open_simulator, parse_epoch, simulate
from engine.sim.model import Market

FAST = dict(tick=0.005, close_timeout=0.5)


def ws(url: str):  # noqa: ANN201 - a trio-websocket client with short timeouts
    return open_websocket_url(
        url, disconnect_timeout=1, connect_timeout=5, receive_buffer_size=65536
    )


def replica(sim: Simulator) -> Market:
    """A fresh copy of the simulator's market: same seed, symbols, activity and start."""
    m = sim.market
    return Market(seed=m.seed, symbols=m.symbols, activity=m.activity, start_ms=m.start_ms)


def replica_at(sim: Simulator, update_id: int, symbol: str) -> Market:
    """The replica stepped (1 ms at a time) to the first state with ``update_id``."""
    r = replica(sim)
    while r.book(symbol)[0] < update_id:
        r.advance(r.now_ms + 1)
    assert r.book(symbol)[0] == update_id
    return r


async def request(conn: Any, obj: Any) -> dict:
    """Send a control message and return its reply (skipping market data in between)."""
    await conn.send_message(obj if isinstance(obj, str) else json.dumps(obj))
    with trio.fail_after(3):
        while True:
            msg = json.loads(await conn.get_message())
            if "id" in msg and ("result" in msg or "error" in msg):
                return msg


async def collect(conn: Any, seconds: float) -> list[Any]:
    out: list[Any] = []
    with trio.move_on_after(seconds):
        while True:
            out.append(await conn.get_message())
    return out


async def collect_until(conn: Any, done: Any, within: float = 30) -> list[Any]:
    """Messages until one satisfies ``done`` (that one included): wait for what must come."""
    out: list[Any] = []
    with trio.fail_after(within):
        while not out or not done(out[-1]):
            out.append(await conn.get_message())
    return out


class RawWs:
    """A bare wsproto client that never answers pings (to provoke the server's keep-alive rules)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(ConnectionType.CLIENT)

    @classmethod
    async def open(cls, port: int, target: str) -> RawWs:
        self = cls(await trio.open_tcp_stream("127.0.0.1", port))
        await self.stream.send_all(self.ws.send(we.Request(host="127.0.0.1", target=target)))
        evs = await self.events()
        assert any(isinstance(e, we.AcceptConnection) for e in evs)
        return self

    async def events(self) -> list[we.Event]:
        data = await self.stream.receive_some(65536)
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    async def until_close(self, within: float) -> tuple[we.CloseConnection | None, int, int]:
        """Read (never answering pings) until the server closes: (close event, pings seen, messages)."""
        pings = msgs = 0
        with trio.fail_after(within):
            while True:
                evs = await self.events()
                for e in evs:
                    if isinstance(e, we.Ping):
                        pings += 1
                    elif isinstance(e, we.Message):
                        msgs += 1
                    elif isinstance(e, we.CloseConnection):
                        return e, pings, msgs
                if not evs and self.ws.state.name == "CLOSED":
                    return None, pings, msgs


# --------------------------------------------------------------------------- paths and control


async def test_combined_raw_and_subscribe_paths() -> None:
    async with open_simulator(seed=1, rate=600, **FAST) as sim:
        async with ws(f"{sim.ws_url}/stream?streams=btcusdt@trade/ethusdt@depth@100ms") as c:
            msgs = [json.loads(m) for m in await collect(c, 0.6)]
            assert {m["stream"] for m in msgs} == {"btcusdt@trade", "ethusdt@depth@100ms"}
            assert all(m["data"]["e"] in ("trade", "depthUpdate") for m in msgs)
        async with ws(f"{sim.ws_url}/ws/btcusdt@bookTicker") as c:
            msgs = [json.loads(m) for m in await collect(c, 0.4)]
            assert msgs and all(set(m) == {"u", "s", "b", "B", "a", "A"} for m in msgs)
        async with ws(f"{sim.ws_url}/ws") as c:
            assert await collect(c, 0.2) == []
            assert await request(
                c, {"method": "SUBSCRIBE", "params": ["shibusdt@aggTrade"], "id": 1}
            ) == {"result": None, "id": 1}
            msgs = [json.loads(m) for m in await collect(c, 0.5)]
            assert msgs and all(m["e"] == "aggTrade" and m["s"] == "SHIBUSDT" for m in msgs)
        with pytest.raises(ConnectionRejected) as rej:
            async with ws(f"{sim.ws_url}/ws/btcusdt@nope"):
                pass
        assert rej.value.status_code == 400
        with pytest.raises(ConnectionRejected):
            async with ws(f"{sim.ws_url}/elsewhere"):
                pass


async def test_control_messages_and_binance_error_codes() -> None:
    async with open_simulator(seed=2, control_limit=1000, **FAST) as sim:
        async with ws(f"{sim.ws_url}/ws") as c:
            sub = {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "btcusdt@kline_1m"], "id": 1}
            assert await request(c, sub) == {"result": None, "id": 1}
            assert await request(c, {"method": "LIST_SUBSCRIPTIONS", "id": 2}) == {
                "result": ["btcusdt@trade", "btcusdt@kline_1m"],
                "id": 2,
            }
            unsub = {"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": "a-1"}
            assert await request(c, unsub) == {"result": None, "id": "a-1"}
            assert (await request(c, {"method": "LIST_SUBSCRIPTIONS", "id": None}))["result"] == [
                "btcusdt@kline_1m"
            ]
            cases = [
                ("{not json", 3, None),
                ({"method": "PING", "id": 5}, 2, 5),
                ({"params": [], "id": 6}, 2, 6),
                ({"method": "SUBSCRIBE", "params": ["BTCUSDT@trade"], "id": 7}, 2, 7),
                ({"method": "SUBSCRIBE", "params": [1], "id": 8}, 1, 8),
                ({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1.5}, 2, None),
                ({"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 9}, 1, 9),
                ({"method": "SET_PROPERTY", "params": ["compressed", True], "id": 10}, 0, 10),
                ([1, 2], 2, None),
            ]
            for req, code, rid in cases:
                reply = await request(c, req)
                assert reply["error"]["code"] == code and reply["id"] == rid, (req, reply)
                assert reply["error"]["msg"]
            assert (await request(c, {"method": "GET_PROPERTY", "params": ["combined"], "id": 11}))[
                "result"
            ] is False
            assert (
                await request(c, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 12})
            )["result"] is None
            assert await request(
                c, {"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 13}
            ) == {"result": None, "id": 13}
            msgs = [json.loads(m) for m in await collect(c, 0.5)]
            assert msgs and all(set(m) == {"stream", "data"} for m in msgs)


async def test_stream_limit_1024_per_connection() -> None:
    symbols = [f"S{i:03d}USDT" for i in range(150)]
    async with open_simulator(seed=3, symbols=symbols, activity=0.5, **FAST) as sim:
        streams = sim.market.streams()[:1025]
        async with ws(f"{sim.ws_url}/ws") as c:
            ok = await request(c, {"method": "SUBSCRIBE", "params": streams[:1024], "id": 1})
            assert ok == {"result": None, "id": 1}
            assert (
                len((await request(c, {"method": "LIST_SUBSCRIPTIONS", "id": 2}))["result"]) == 1024
            )
            more = await request(c, {"method": "SUBSCRIBE", "params": streams[1024:], "id": 3})
            assert more["error"]["code"] == 2 and "1024" in more["error"]["msg"]
    async with open_simulator(seed=3, max_streams=2, **FAST) as sim:
        with pytest.raises(ConnectionRejected) as rej:
            async with ws(
                f"{sim.ws_url}/stream?streams=btcusdt@trade/btcusdt@ticker/btcusdt@depth"
            ):
                pass
        assert rej.value.status_code == 400


# --------------------------------------------------------------------------- REST and book sync


async def test_rest_snapshot_syncs_with_the_diff_stream_and_matches_the_model() -> None:
    async with (
        open_simulator(seed=4, rate=3000, **FAST) as sim,
        httpx.AsyncClient(base_url=sim.rest_url) as http,
    ):
        async with ws(f"{sim.ws_url}/stream?streams=btcusdt@depth@100ms") as c:
            buffered = [json.loads(m)["data"] for m in await collect(c, 0.35)]
            r = await http.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 5000})
            snap = r.json()
            lid = snap["lastUpdateId"]
            assert buffered and lid >= buffered[0]["U"]
            # the snapshot is exactly the model's book at lastUpdateId
            assert r.content == replica_at(sim, lid, "BTCUSDT").snapshot("BTCUSDT", 5000)
            bids = {parse(p): parse(q) for p, q in snap["bids"]}
            asks = {parse(p): parse(q) for p, q in snap["asks"]}
            events = buffered + [json.loads(m)["data"] for m in await collect(c, 0.6)]
            live = [e for e in events if e["u"] > lid]
            assert live[0]["U"] <= lid + 1 <= live[0]["u"]
            book_id = lid
            for e in live:
                assert e["U"] == book_id + 1 or book_id == lid
                for side, levels in ((bids, e["b"]), (asks, e["a"])):
                    for p, q in levels:
                        if parse(q):
                            side[parse(p)] = parse(q)
                        else:
                            side.pop(parse(p), None)
                book_id = e["u"]
            rep = replica(sim)
            rep.advance(live[-1]["E"] - 1)
            assert rep.book("BTCUSDT") == (book_id, bids, asks)


async def test_rest_parameters_and_errors_like_binance() -> None:
    async with (
        open_simulator(seed=5, **FAST) as sim,
        httpx.AsyncClient(base_url=sim.rest_url) as http,
    ):
        r = await http.get("/api/v3/depth", params={"symbol": "ETHUSDT", "limit": 3})
        assert r.status_code == 200 and len(r.json()["bids"]) == 3 and len(r.json()["asks"]) == 3
        assert (
            len((await http.get("/api/v3/depth?symbol=ETHUSDT")).json()["bids"]) == 40
        )  # default 100, book has 40
        for url, code in [
            ("/api/v3/depth?symbol=ethusdt", -1121),
            ("/api/v3/depth?symbol=NOPE", -1121),
            ("/api/v3/depth", -1102),
            ("/api/v3/depth?symbol=ETHUSDT&limit=ten", -1100),
        ]:
            r = await http.get(url)
            assert r.status_code == 400 and r.json()["code"] == code, url
        assert (await http.get("/api/v3/ping")).json() == {}
        assert (await http.get("/api/v3/time")).json()["serverTime"] >= sim.market.start_ms
        assert (await http.get("/nope")).status_code == 404
        assert sim.stats()["rest"]["snapshots"] == 2


# --------------------------------------------------------------------------- Binance's rules


async def test_pings_answered_keep_the_connection_alive() -> None:
    # Pongs count against the 5 control messages/s (Binance's rule), so the pings come at 4/s:
    # an honest client answering every ping stays under the limit.
    async with open_simulator(seed=6, ping_interval=0.25, pong_timeout=0.6, **FAST) as sim:
        async with ws(f"{sim.ws_url}/ws/btcusdt@trade") as c:
            await collect(c, 1.5)
            assert not c.closed
        conn = sim.stats()["connections"][0]
        assert conn["pings_sent"] >= 5 and conn["pongs_received"] >= 5
        assert conn["close_kind"] == "client_close"


async def test_no_pong_means_disconnect() -> None:
    async with open_simulator(seed=6, ping_interval=0.1, pong_timeout=0.3, **FAST) as sim:
        raw = await RawWs.open(sim.port, "/ws/btcusdt@trade")
        start = trio.current_time()
        close, pings, msgs = await raw.until_close(3)
        assert close is not None and close.code == 1008 and "Pong" in close.reason
        assert pings >= 1 and 0.35 <= trio.current_time() - start < 1.5
        assert sim.stats()["connections"][0]["close_kind"] == "pong_timeout"


async def test_more_than_5_control_messages_per_second_disconnects() -> None:
    async with open_simulator(seed=7, **FAST) as sim:
        async with ws(f"{sim.ws_url}/ws") as c:
            for i in range(10):  # 5 a second, spaced: never disconnected
                await request(c, {"method": "LIST_SUBSCRIPTIONS", "id": i})
                await trio.sleep(0.21)
            await trio.sleep(1.05)  # the spaced requests leave the 1 s window
            for i in range(6):  # the 6th within a second breaks the limit
                await c.send_message(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 100 + i}))
            replies, reason = await drain_until_closed(c, within=3)
            assert reason.code == 1008 and reason.reason == "Too many requests"
            # the first five were answered (queued replies are flushed before the close frame)
            assert [json.loads(m)["id"] for m in replies] == [100, 101, 102, 103, 104]
        assert sim.stats()["connections"][0]["close_kind"] == "rate_limit"


async def test_connection_lifetime() -> None:
    async with open_simulator(seed=8, lifetime=0.3, **FAST) as sim:
        async with ws(f"{sim.ws_url}/ws/ethusdt@trade") as c:
            with pytest.raises(ConnectionClosed) as closed:
                with trio.fail_after(3):
                    while True:
                        await c.get_message()
            assert closed.value.reason.code == 1001


# --------------------------------------------------------------------------- faults


async def drain_until_closed(c: Any, within: float = 5) -> tuple[list[Any], Any]:
    got: list[Any] = []
    with trio.fail_after(within):
        try:
            while True:
                got.append(await c.get_message())
        except ConnectionClosed as exc:
            return got, exc.reason


async def test_fault_drop_is_abrupt_and_nothing_counted_is_lost() -> None:
    async with open_simulator(seed=9, rate=5000, **FAST) as sim:
        async with ws(
            f"{sim.ws_url}/stream?streams=btcusdt@trade/btcusdt@depth@100ms/ethusdt@aggTrade"
        ) as c:
            got = await collect(c, 0.4)
            assert sim.inject("drop") == [1]
            more, reason = await drain_until_closed(c)
        assert reason.code == 1006
        conn = sim.stats()["connections"][0]
        assert conn["close_kind"] == "drop"
        received = Counter(json.loads(m)["stream"] for m in got + more)
        assert received == Counter(conn["frames_by_stream"]) and conn["frames"] == len(got + more)


async def test_fault_stall_stops_data_and_pongs_then_resumes() -> None:
    # the checks during the stall end a second before it does: a loaded machine that wakes
    # this test late must not see the resumed stream inside a window meant to be silent
    async with open_simulator(seed=10, rate=2000, stall_duration=2.0, **FAST) as sim:
        async with ws(f"{sim.ws_url}/ws/btcusdt@trade") as c:
            assert await collect(c, 0.2)
            sim.inject("stall")
            await collect(c, 0.05)  # frames already in flight
            assert await collect(c, 0.3) == []
            with pytest.raises(trio.TooSlowError):
                with trio.fail_after(0.3):
                    await c.ping(b"x")
            assert await collect_until(c, lambda m: True, within=10)  # resumed


async def test_fault_garbage_sends_each_kind_of_invalid_frame() -> None:
    async with open_simulator(seed=11, **FAST) as sim:
        async with ws(f"{sim.ws_url}/stream?streams=btcusdt@depth@100ms") as c:
            sim.inject("garbage")
            got = await collect(c, 0.5)
            binary = [m for m in got if isinstance(m, bytes)]
            bad = []
            for m in got:
                if isinstance(m, str):
                    try:
                        d = json.loads(m)
                        if not isinstance(d["data"]["U"], int):
                            bad.append("types")
                    except (ValueError, KeyError):
                        bad.append("invalid json")
            assert len(binary) == 1 and sorted(bad) == ["invalid json", "invalid json", "types"]
            assert not c.closed
        assert sim.stats()["connections"][0]["frames_by_stream"]["!garbage"] == 4


async def test_fault_gap_skips_depth_ids_on_that_connection() -> None:
    async with open_simulator(seed=12, rate=3000, **FAST) as sim:
        async with ws(f"{sim.ws_url}/stream?streams=ethusdt@depth@100ms") as c:
            before = [json.loads(m)["data"] for m in await collect(c, 0.3)]
            sim.inject("gap")
            after = [json.loads(m)["data"] for m in await collect(c, 0.5)]
        seq = before + after
        gaps = [(a["u"], b["U"]) for a, b in pairwise(seq) if b["U"] != a["u"] + 1]
        assert len(gaps) == 1 and gaps[0][1] > gaps[0][0] + 1


async def test_fault_close_with_code_and_reason() -> None:
    async with open_simulator(seed=13, **FAST) as sim:
        async with ws(f"{sim.ws_url}/ws/btcusdt@trade") as c:
            sim.inject("close", code=4001, reason="maintenance")
            _, reason = await drain_until_closed(c)
        assert (reason.code, reason.reason) == (4001, "maintenance")


async def test_fault_shutdown_notice_then_close_after_grace() -> None:
    async with open_simulator(seed=14, shutdown_grace=0.3, rate=1000, **FAST) as sim:
        async with ws(f"{sim.ws_url}/stream?streams=btcusdt@trade") as c:
            sim.inject("shutdown")
            got, reason = await drain_until_closed(c)
        notices = [i for i, m in enumerate(got) if json.loads(m).get("e") == "serverShutdown"]
        assert len(notices) == 1 and notices[0] < len(got) - 1  # data keeps flowing during grace
        assert reason.code == 1001


async def test_fault_drift_makes_one_snapshot_disagree() -> None:
    async with (
        open_simulator(seed=15, rate=500, **FAST) as sim,
        httpx.AsyncClient(base_url=sim.rest_url) as http,
    ):
        assert sim.inject("drift") == []
        drifted = (await http.get("/api/v3/depth?symbol=ETHUSDT&limit=50")).content
        honest = (await http.get("/api/v3/depth?symbol=ETHUSDT&limit=50")).content
        for body, differs in ((drifted, True), (honest, False)):
            lid = json.loads(body)["lastUpdateId"]
            truth = json.loads(replica_at(sim, lid, "ETHUSDT").snapshot("ETHUSDT", 50))
            snap = json.loads(body)
            diff = [
                a
                for a, b in zip(
                    snap["bids"] + snap["asks"], truth["bids"] + truth["asks"], strict=True
                )
                if a != b
            ]
            assert len(diff) == (1 if differs else 0)


async def test_scheduled_faults_hit_open_connections() -> None:
    async with open_simulator(seed=16, faults=["close"], fault_every=0.3, **FAST) as sim:
        async with ws(f"{sim.ws_url}/ws/btcusdt@trade") as c:
            _, reason = await drain_until_closed(c, within=2)
        assert reason.code == 1011
        assert sim.stats()["faults"][0]["fault"] == "close"


# --------------------------------------------------------------------------- determinism and counters


async def test_same_seed_same_stream_content() -> None:
    trades: list[dict[int, str]] = []
    for _ in range(2):
        async with open_simulator(seed=17, rate=2000, epoch=1_704_067_200_000, **FAST) as sim:
            async with ws(f"{sim.ws_url}/ws/btcusdt@trade") as c:
                got = await collect(c, 0.5)
            trades.append({json.loads(m)["t"]: m for m in got})
    common = set(trades[0]) & set(trades[1])
    assert len(common) > 50
    assert all(trades[0][t] == trades[1][t] for t in common)


async def test_counters_match_what_the_client_received() -> None:
    async with open_simulator(seed=18, rate=3000, control_limit=100, **FAST) as sim:
        async with ws(f"{sim.ws_url}/stream?streams=btcusdt@trade/shibusdt@bookTicker") as c:
            got = await collect(c, 0.3)
            await c.send_message(
                json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@ticker"], "id": 1})
            )
            # the ticker comes about once a second: wait for it, not for a fixed time
            got += await collect_until(c, lambda m: '"ethusdt@ticker"' in m)
            # the server ends it: a client-side aclose() would drop frames still in flight
            sim.inject("close", code=1000)
            more, _ = await drain_until_closed(c)
            got += more
        conn = sim.stats()["connections"][0]
        keys = Counter(json.loads(m).get("stream", "!reply") for m in got)
        assert keys == Counter(conn["frames_by_stream"]) and keys["ethusdt@ticker"] >= 1
        assert conn["payload_bytes"] == sum(len(m.encode()) for m in got)


# --------------------------------------------------------------------------- the exchange clock


async def test_exchange_clock_starts_at_the_wall_clock_by_default() -> None:
    before = int(time.time() * 1000)
    async with (
        open_simulator(seed=19, symbols=["BTCUSDT"], **FAST) as sim,
        httpx.AsyncClient(base_url=sim.rest_url) as http,
    ):
        async with ws(f"{sim.ws_url}/ws/btcusdt@depth@100ms") as c:
            first = json.loads(await c.get_message())["E"]
        server_time = (await http.get("/api/v3/time")).json()["serverTime"]
        after = int(time.time() * 1000)
    # simulated time never runs ahead of the wall clock, and starts at it
    assert before <= sim.market.start_ms <= first <= server_time <= after


async def test_a_fixed_epoch_gives_the_same_streams_every_run() -> None:
    epoch = 1_704_067_200_000
    async with open_simulator(seed=20, symbols=["ETHUSDT"], epoch=epoch, **FAST) as sim:
        assert sim.market.start_ms == epoch
        async with ws(f"{sim.ws_url}/ws/ethusdt@depth@100ms") as c:
            got = [json.loads(await c.get_message()) for _ in range(3)]
    expected = {
        e["E"]: e
        for s, p in Market(seed=20, symbols=["ETHUSDT"], start_ms=epoch).advance(got[-1]["E"])
        if s == "ethusdt@depth@100ms"
        for e in [json.loads(p)]
    }
    assert got == [expected[g["E"]] for g in got]


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("now", None),
        ("1704067200000000000", 1_704_067_200_000),
        ("1704067200.25", 1_704_067_200_250),
        ("2024-01-01T00:00:05.5Z", 1_704_067_205_500),
        ("2024-01-01T01:00:00+01:00", 1_704_067_200_000),
    ],
)
def test_epoch_option_reads_the_engine_time_grammar(text: str, ms: int | None) -> None:
    assert parse_epoch(text) == ms


def test_a_bad_epoch_is_a_usage_error() -> None:
    res = CliRunner().invoke(simulate, ["--epoch", "yesterday"])
    assert res.exit_code == 2 and "not a time" in res.output


# --------------------------------------------------------------------------- the CLI


async def test_engine_simulate_subprocess_prints_urls_serves_stats_and_exits_on_sigterm() -> None:
    proc = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once; waits go to a thread
        [
            sys.executable,
            "-m",
            "engine.cli",
            "simulate",
            "--seed",
            "3",
            "--symbols",
            "btcusdt,shibusdt",
            "--epoch",
            "2024-01-01T00:00:00Z",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = await trio.to_thread.run_sync(proc.stdout.readline)  # type: ignore[union-attr]
        assert line.startswith("listening ws://127.0.0.1:") and " rest=http://127.0.0.1:" in line
        rest = line.split("rest=")[1].strip()
        port = int(rest.rsplit(":", 1)[1])
        async with ws(f"ws://127.0.0.1:{port}/ws/shibusdt@depth@100ms") as c:
            assert json.loads(await c.get_message())["s"] == "SHIBUSDT"
            async with httpx.AsyncClient(base_url=rest) as http:
                assert (await http.get("/sim/inject?fault=close&code=4002")).json()[
                    "connections"
                ] == [1]
                st = (await http.get("/sim/stats")).json()
                assert st["seed"] == 3 and st["symbols"] == ["BTCUSDT", "SHIBUSDT"]
                assert st["start_ms"] == 1_704_067_200_000 <= st["sim_ms"]
            _, reason = await drain_until_closed(c)
            assert reason.code == 4002
        proc.send_signal(signal.SIGTERM)
        rc = await trio.to_thread.run_sync(lambda: proc.wait(10))
        assert rc == 0
        assert '"stopped": true' in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]

