"""The venue seam's generic pieces, through Binance: what the runtime does with what a codec says.

Each live test runs the simulator (Binance dialect) and a :class:`engine.live.capture.Capture`
over real sockets on 127.0.0.1 with a Binance codec whose *seam attributes* are changed —
subscribe-only connections chunked by the codec's limit, an application keep-alive, a resync
by resubscribing — and reads the journal back: what the runtime sent is journaled, in order,
on the connection it belongs to.  Then the dialect registry's errors, the per-venue
``engine run --sim`` journal, and the book reducer's checksum counters (a tiny ChainRule,
stateful against a naive count).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from engine import book_sync
from engine.assembly import standard_reducers
from engine.book import Book
from engine.book_reducer import BookReducer, BookSynced, ChecksumMismatch
from engine.book_sync import BinanceSpotRule
from engine.codecs.base import ConnLimits, KeepAlive, Resubscribe, split_quote
from engine.codecs.binance import BinanceSpot
from engine.codecs.registry import CODECS
from engine.events import BookSnapshot, DepthDiff, SubscriptionAck
from engine.journal.reader import JournalReader
from engine.journal.schema import Frame
from engine.journal.writer import JournalWriter
from engine.live.capture import Capture
from engine.live.config import LiveConfig
from engine.num import parse
from engine.outputs import SnapshotRequest
from engine.sim.cli import open_simulator
from engine.sim.dialect import DIALECTS, get_dialect
from engine.sim.server import SimConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.recovery import assert_every_break_recovered  # noqa: E402

SIM = dict(seed=3, rate=500, tick=0.005, close_timeout=0.5)
LIVE = dict(
    ping_interval_s=0.3,
    ping_timeout_s=1.0,
    stale_after_s=5.0,
    connect_timeout_s=2.0,
    disconnect_timeout_s=5.0,
    rest_timeout_s=2.0,
)


class SubscribeOnly(BinanceSpot):
    """Binance with no stream in the URL: every stream subscribed, three a request."""

    limits = ConnLimits(
        streams_in_url=False, max_per_subscribe=3, max_per_conn=1024, control_per_window=5
    )

    def ws_url(self, base_url: str, streams: Sequence[str]) -> str:
        return f"{base_url.rstrip('/')}/stream"


class KeptAlive(BinanceSpot):
    """Binance with an application keep-alive (LIST_SUBSCRIPTIONS: the simulator answers it)."""

    keepalive = KeepAlive(b'{"method":"LIST_SUBSCRIPTIONS","id":77}', 0.2)


class Resubscribing(BinanceSpot):
    """Binance resyncing a book by unsubscribing and subscribing its diff stream."""

    def resync(
        self, symbol: str, streams: Sequence[str], rest_base: str, limit: int, request_id: int
    ) -> Resubscribe | None:
        mine = tuple(s for s in streams if s == f"{symbol.lower()}@depth@100ms")
        return Resubscribe(
            mine,
            tuple(self.unsubscribe(mine, request_id)),
            tuple(self.subscribe(mine, request_id + 1)),
        )


async def until(condition: Any) -> None:
    with trio.fail_after(30):
        while not condition():  # noqa: ASYNC110 - polling the capture's counters
            await trio.sleep(0.02)


async def capture(tmp_path: Path, codec: Any, done: Any, **live: Any) -> tuple[list[Frame], Any]:
    jdir = tmp_path / "journal"
    async with open_simulator(**SIM) as s:
        cfg = LiveConfig(ws_url=s.ws_url, rest_url=s.rest_url, **{**LIVE, **live})
        writer = JournalWriter.create(jdir, {"exchange": "sim"})
        cap = Capture(cfg, writer, codec, standard_reducers(codec), rng=random.Random(1))
        async with trio.open_nursery() as n:
            await n.start(cap.run)
            await until(lambda: done(cap))
            cap.stop()
    return list(JournalReader(jdir).frames()), cap


def sent(frames: list[Frame]) -> list[dict[str, Any]]:
    return [json.loads(f.payload) for f in frames if f.dir == "out"]


async def test_streams_are_subscribed_in_chunks_of_the_codecs_limit(tmp_path: Path) -> None:
    codec = SubscribeOnly()
    frames, cap = await capture(
        tmp_path, codec, lambda c: c.status.frames_in > 200, symbols=("btcusdt", "ethusdt")
    )
    streams = codec.streams(["btcusdt", "ethusdt"], list(LiveConfig().channels))
    (opened,) = [f for f in frames if f.kind == "open"]
    assert opened.source.endswith("/stream")  # no stream in the URL
    subs = sent(frames)
    assert [len(m["params"]) for m in subs] == [3, 3, 3, 1]
    assert [p for m in subs for p in m["params"]] == streams
    acks = [
        e for f in frames if f.dir == "in" for e in codec.decode(0, 0, f.kind, f.source, f.payload)
    ]
    acked = {a.request_id for a in acks if isinstance(a, SubscriptionAck)}
    assert acked == {m["id"] for m in subs}
    assert cap.status.errors["subscription"] == 0
    data = {json.loads(f.payload).get("stream") for f in frames if f.dir == "in"}
    assert "btcusdt@depth@100ms" in data and "ethusdt@trade" in data


async def test_the_keepalive_is_sent_journaled_and_answered(tmp_path: Path) -> None:
    codec = KeptAlive()
    frames, cap = await capture(tmp_path, codec, lambda c: c.status.frames_out >= 4)
    pings = [f for f in frames if f.dir == "out"]
    assert len(pings) >= 4
    assert all(f.payload == KeptAlive.keepalive.payload for f in pings)
    assert {f.conn for f in pings} == {f.conn for f in frames if f.kind == "open"}
    answers = [f for f in frames if f.dir == "in" and f.payload.startswith(b'{"result":[')]
    assert len(answers) >= len(pings) - 1  # the last may be in flight at the stop
    assert all(json.loads(f.payload)["id"] == 77 for f in answers)


async def test_a_sync_request_is_answered_by_resubscribing_on_the_books_connection(
    tmp_path: Path,
) -> None:
    codec = Resubscribing()
    frames, cap = await capture(
        tmp_path, codec, lambda c: c.status.resubscribes >= 2, symbols=("btcusdt", "ethusdt")
    )
    msgs = [(f.conn, json.loads(f.payload)) for f in frames if f.dir == "out"]
    by_symbol = {
        sym: [m["method"] for _, m in msgs if m["params"] == [f"{sym}@depth@100ms"]]
        for sym in ("btcusdt", "ethusdt")
    }
    assert by_symbol == {
        "btcusdt": ["UNSUBSCRIBE", "SUBSCRIBE"],
        "ethusdt": ["UNSUBSCRIBE", "SUBSCRIBE"],
    }
    (conn,) = {f.conn for f in frames if f.kind == "open"}
    assert {c for c, _ in msgs} == {conn}
    assert cap.status.rest_requests == 0  # no REST: the codec said resubscribe
    assert cap.status.outputs["SnapshotRequest"] >= 2


# --------------------------------------------------------------------------- registry, CLI


def test_the_dialect_registry_names_what_it_speaks() -> None:
    assert get_dialect("binance").name == "binance"
    assert get_dialect("binance-futures").name == "binance-futures"
    assert get_dialect("binance-delivery").rest_route("/dapi/v1/depth") == "depth"
    with pytest.raises(ValueError, match="does not speak 'nope'; it speaks: binance, binance-"):
        get_dialect("nope")
    with pytest.raises(ValueError, match="does not speak 'kraken-x'"):
        SimConfig(venue="kraken-x")
    # every Binance variant the engine captures, the simulator speaks
    assert set(DIALECTS) >= {n for n in CODECS if n == "sim" or n.startswith("binance")}


def test_run_sim_journals_the_venue_and_replays_identically(tmp_path: Path) -> None:
    j = tmp_path / "fut"
    run = [sys.executable, "-m", "engine.cli"]
    r = subprocess.run(
        [*run, "run", "--exchange", "binance-futures", "--sim", "--sim-faults", "gap",
         "--sim-fault-every", "0.7", "--duration", "2.5", "--no-dashboard",
         "--symbols", "btcusdt", "--channels", "depth,trade", "--out", str(j)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["outputs"]["GapDetected"] >= 1 and summary["outputs"]["BookSynced"] >= 2
    assert_every_break_recovered(j, ["BTCUSDT"])  # each gap resynced (the last: or under way)
    manifest = json.loads((j / "journal.json").read_text())
    assert manifest["exchange"] == "binance-futures"
    assert manifest["simulator"]["venue"] == "binance-futures"
    check = subprocess.run([*run, "replay", str(j), "--check"], capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.startswith("OK"), check.stdout + check.stderr
    out = subprocess.run([*run, "replay", str(j), "--json"], capture_output=True, text=True)
    book = json.loads(out.stdout)["symbols"]["BTCUSDT"]["book"]
    assert book["sequence_gaps"] == summary["outputs"]["GapDetected"]
    assert (book["checksums_verified"], book["checksum_mismatches"]) == (0, 0)


def test_symbols_normalize_by_quote_suffix() -> None:
    assert BinanceSpot().normalized("btcusdt") == "BTC-USDT"
    assert split_quote("ETHBTC") == "ETH-BTC" and split_quote("FDUSDUSDT") == "FDUSD-USDT"
    assert split_quote("XYZ") == "XYZ"


# --------------------------------------------------------------------------- checksum counters

S = "BTCUSDT"


def total(book: Book) -> int:
    return sum(book.bids.values()) + sum(book.asks.values())


@attrs.frozen
class SumRule(BinanceSpotRule):
    """Spot chaining, with a checksum: the sum of every quantity in the book."""

    name: ClassVar[str] = "test-sum-checksum"
    has_checksum: bool = True

    def verify(
        self, sync: book_sync.Sync, msg: DepthDiff | BookSnapshot, bids: object, asks: object
    ) -> bool:
        return msg.checksum is None or (sync.book is not None and msg.checksum == total(sync.book))


@pytest.fixture(autouse=True)
def sum_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(book_sync.RULES, SumRule.name, SumRule())


@given(st.lists(st.tuples(st.integers(1, 20), st.integers(0, 5), st.booleans(), st.booleans()),
                max_size=40))  # fmt: skip
def test_checksums_are_counted_and_a_mismatch_resyncs(
    steps: list[tuple[int, int, bool, bool]],
) -> None:
    """Against a naive model: every diff carrying a checksum the book matches is verified, every
    wrong one is a ChecksumMismatch that drops the book until the next snapshot."""
    r = BookReducer(SumRule.name, verify_interval_s=None)
    state = r.initial()
    book: dict[int, int] = {parse("100"): parse("1")}  # the exchange's book (price → qty)
    uid, seq = 10, 0
    verified = mismatches = 0
    synced = False

    def feed(ev: Any) -> list[Any]:
        nonlocal state
        state, out = r.step(state, ev)
        return list(out)

    def snapshot() -> None:
        nonlocal seq, synced
        seq += 1
        out = feed(
            BookSnapshot(seq, seq, S, uid, sorted(book.items(), reverse=True), [], None, "rest")
        )
        assert any(isinstance(o, BookSynced) for o in out)
        synced = True

    snapshot()
    for tick, qty, with_sum, corrupt in steps:
        price = parse("100") - tick * parse("0.01")
        if qty:
            book[price] = qty * parse("1")
        else:
            book.pop(price, None)
        uid += 1
        seq += 1
        good = sum(book.values())
        checksum = (good + (1 if corrupt else 0)) if with_sum else None
        out = feed(
            DepthDiff(
                seq, seq, S, uid, uid, None, None, None, [(price, book.get(price, 0))], [], checksum
            )
        )
        if not synced:  # waiting for a snapshot: buffered, nothing judged
            assert out == []
            snapshot()
            continue
        if checksum is not None and corrupt:
            mismatches += 1
            assert [type(o) for o in out] == [ChecksumMismatch, SnapshotRequest]
            assert out[0].checksum == checksum and r.book(state, S) is None
            synced = False
        else:
            verified += checksum is not None
            assert out == []
            assert {p: q for p, q in r.book(state, S).bids.items()} == book  # type: ignore[union-attr]
    c = r.counts(state)[S]
    assert (c.checksums_verified, c.checksum_mismatches, c.gaps) == (verified, mismatches, 0)
