"""Importing other venues and Tardis snapshots: every imported journal replays, its books sync.

The captures are the real Binance ones in fixtures/raw (cryptofeed's sample
data), respelled for the venue under test:

- Binance US and TR speak the spot protocol on their own hosts, COIN-M futures
  the USD-M one (``pu`` chain) on ``dstream``/``dapi``: the files get the venue's
  cryptofeed prefix and hosts (and ``/dapi/v1/depth``), the messages stay the same.
- Tardis: we have no Tardis download we may ship, so the test writes one from
  the spot capture in Tardis's documented format (https://docs.tardis.dev,
  Binance "raw data"): ``<ISO-8601 UTC time> <message>`` per line, and the REST
  snapshot Tardis fetches at each connect as a generated message
  ``{"stream":"<sym>@depthSnapshot","generated":true,"data":<REST body>}``.

Each imported journal must replay to the same books as the committed fixture
journal made from the original capture.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.journal.reader import JournalReader
from engine.replay.importers import import_cryptofeed, import_tardis
from engine.replay.replay import Replay, book_summary, symbols_of
from engine.timefmt import format_ns, parse_epoch_s

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT / "fixtures" / "raw"
JOURNALS = ROOT / "fixtures" / "journals"


def books(journal: Path) -> dict[str, dict]:
    r = Replay(journal, use_checkpoints=False)
    for _ in r.outputs():
        pass
    return {s: book_summary(r.pipeline, s, 10) for s in symbols_of(r.pipeline)}


def respell(prefix: str, venue: str, tmp: Path, swaps: list[tuple[str, str]]) -> list[Path]:
    out = []
    for kind in ("ws.1.0", "http.0.0"):
        text = (RAW / f"{prefix}.{kind}").read_text()
        for a, b in swaps:
            text = text.replace(a, b)
        p = tmp / f"{venue}.{kind}"
        p.write_text(text)
        out.append(p)
    return out


VENUES = [
    ("BINANCE", "BINANCE_US", "binance-us", "binance-spot",
     [("stream.binance.com", "stream.binance.us"), ("api.binance.com", "api.binance.us")]),
    ("BINANCE", "BINANCE_TR", "binance-tr", "binance-spot",
     [("stream.binance.com:9443", "stream-cloud.trbinance.com"),
      ("api.binance.com", "api.binance.me")]),
    ("BINANCE_FUTURES", "BINANCE_DELIVERY", "binance-delivery", "binance-futures",
     [("fstream.binance.com", "dstream.binance.com"), ("fapi.binance.com", "dapi.binance.com"),
      ("/fapi/v1/depth", "/dapi/v1/depth")]),
]  # fmt: skip


@pytest.mark.parametrize(("prefix", "venue", "exchange", "fixture", "swaps"), VENUES)
def test_venue_captures_import_and_replay(tmp_path, prefix, venue, exchange, fixture, swaps):
    files = respell(prefix, venue, tmp_path, swaps)
    rep = import_cryptofeed(files, tmp_path / "j")
    assert rep.bad == 0 and JournalReader(tmp_path / "j").metadata["exchange"] == exchange
    got, want = books(tmp_path / "j"), books(JOURNALS / fixture)
    assert got == want and got and all(b["state"] == "synced" for b in got.values())


def test_exchange_option_overrides_the_file_prefix(tmp_path):
    files = respell("BINANCE", "capture", tmp_path, [])  # a prefix no venue has
    p = subprocess.run(
        [sys.executable, "-m", "engine.cli", "import", "cryptofeed", *map(str, files),
         "--out", str(tmp_path / "j")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 1 and "give --exchange" in p.stderr and "binance-us" in p.stderr
    assert not (tmp_path / "j").exists()
    p = subprocess.run(
        [sys.executable, "-m", "engine.cli", "import", "cryptofeed", *map(str, files),
         "--out", str(tmp_path / "j"), "--exchange", "binance"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert books(tmp_path / "j") == books(JOURNALS / "binance-spot")


@pytest.mark.parametrize("command", ["cryptofeed", "tardis"])
def test_unknown_venue_is_refused_before_anything_is_written(tmp_path, command):
    src = RAW / ("BINANCE.ws.1.0" if command == "cryptofeed" else "binance.tardis.txt")
    p = subprocess.run(
        [sys.executable, "-m", "engine.cli", "import", command, str(src),
         "--out", str(tmp_path / "j"), "--exchange", "mtgox"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.splitlines()) == 1 and "unknown exchange 'mtgox'" in p.stderr
    assert "binance-delivery" in p.stderr and not (tmp_path / "j").exists()


def tardis_from_cryptofeed(dest: Path) -> Path:
    """The spot capture as a Tardis file: stream messages, and the REST snapshots as
    generated ``depthSnapshot`` messages, in receive-time order."""
    lines = []
    for raw in (RAW / "BINANCE.ws.1.0").read_text().splitlines()[1:]:
        if ": " not in raw:
            continue
        ts, body = raw.split(": ", 1)
        lines.append((parse_epoch_s(ts), body))
    for raw in (RAW / "BINANCE.http.0.0").read_text().splitlines():
        if ": " not in raw:
            continue
        head, body = raw.split(": ", 1)
        url, ts = head.split(" -> ")
        sym = url.split("symbol=")[1].split("&")[0].lower()
        msg = f'{{"stream":"{sym}@depthSnapshot","generated":true,"data":{body}}}'
        lines.append((parse_epoch_s(ts), msg))
    merged = sorted(lines, key=lambda x: x[0])  # stable: a tie keeps the stream first
    dest.write_text("".join(f"{format_ns(t)} {body}\n" for t, body in merged))
    return dest


def test_tardis_depth_snapshots_sync_books(tmp_path):
    src = tardis_from_cryptofeed(tmp_path / "binance.tardis.txt")
    rep = import_tardis([src], tmp_path / "j", exchange="binance")
    assert rep.bad == 0
    frames = list(JournalReader(tmp_path / "j").frames())
    rest = [f for f in frames if f.kind == "rest"]
    assert len(rest) == 4 and all(f.code == 200 for f in rest)
    assert all(f.source.startswith("https://api.binance.com/api/v3/depth?symbol=") for f in rest)
    got = books(tmp_path / "j")
    assert got == books(JOURNALS / "binance-spot")
    assert len(got) == 4 and all(b["state"] == "synced" for b in got.values())


def test_a_failed_import_leaves_no_directory(tmp_path):
    bad = tmp_path / "BINANCE.ws.1.0"
    bad.write_text("nothing here\nnor here\n")
    p = subprocess.run(
        [sys.executable, "-m", "engine.cli", "import", "cryptofeed", str(bad),
         "--out", str(tmp_path / "j")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 1 and "no frame could be imported (2 bad lines" in p.stderr
    assert len(p.stderr.splitlines()) == 1 and not (tmp_path / "j").exists()
    good = [RAW / "BINANCE.ws.1.0", RAW / "BINANCE.http.0.0"]
    p = subprocess.run(
        [sys.executable, "-m", "engine.cli", "import", "cryptofeed", *map(str, good),
         "--out", str(tmp_path / "j")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr  # the retry is not refused


def test_venue_codecs_speak_their_base_protocol_on_their_own_hosts():
    from engine.codecs.base import SyncRule
    from engine.codecs.registry import get_codec

    us, tr, dm = get_codec("binance-us"), get_codec("binance-tr"), get_codec("binance-delivery")
    assert us.sync_rule == tr.sync_rule == SyncRule.BINANCE_SPOT
    assert dm.sync_rule == SyncRule.BINANCE_FUTURES  # the pu chain
    assert us.snapshot_url(us.rest_base, "btcusd", 100) == (
        "https://api.binance.us/api/v3/depth?symbol=BTCUSD&limit=100"
    )
    assert tr.ws_url(tr.ws_base, ["btctry@trade"]).startswith("wss://stream-cloud.trbinance.com/")
    streams = dm.streams(["btcusd_perp"], ["depth", "aggTrade", "kline_1m"])
    assert dm.ws_url(dm.ws_base, streams) == (
        "wss://dstream.binance.com/stream?streams=" + "/".join(streams)
    )  # COIN-M serves every stream kind on one path: one connection, not /public + /market
    assert dm.snapshot_url(dm.rest_base, "BTCUSD_PERP", 1000) == (
        "https://dapi.binance.com/dapi/v1/depth?symbol=BTCUSD_PERP&limit=1000"
    )
    futures_only = get_codec("binance-futures")
    assert len(futures_only.streams_by_path(streams)) == 2 and len(dm.streams_by_path(streams)) == 1
