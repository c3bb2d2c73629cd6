"""Importers: cryptofeed and Tardis captures become ordinary journals, times and order preserved."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.codecs.registry import get_codec
from engine.events import DecodeError
from engine.journal.reader import JournalReader
from engine.replay.importers import import_cryptofeed, import_tardis
from engine.timefmt import parse_epoch_s

RAW = Path(__file__).resolve().parent.parent / "fixtures" / "raw"
JOURNALS = Path(__file__).resolve().parent.parent / "fixtures" / "journals"


def frames(path):
    return [
        (f.seq, f.recv_ns, f.conn, f.dir, f.kind, f.source, f.payload, f.code)
        for f in JournalReader(path).frames()
    ]


@pytest.mark.parametrize(
    "prefix,exchange,journal",
    [
        ("BINANCE", "binance", "binance-spot"),
        ("BINANCE_FUTURES", "binance-futures", "binance-futures"),
    ],
)
def test_cryptofeed_import_matches_committed_fixture(tmp_path, prefix, exchange, journal):
    ws, http = RAW / f"{prefix}.ws.1.0", RAW / f"{prefix}.http.0.0"
    rep = import_cryptofeed([ws, http], tmp_path / "j")
    assert rep.bad == 0
    got = frames(tmp_path / "j")
    assert got == frames(JOURNALS / journal)  # the committed fixture is what the importer makes
    md = JournalReader(tmp_path / "j").metadata
    assert md["exchange"] == exchange and md["importer"] == "cryptofeed"
    assert md["source_files"] == [ws.name, http.name] and len(md["symbols"]) == 4

    # every line became a frame, times exact and non-decreasing, REST merged among the diffs
    n_lines = sum(1 for p in (ws, http) for line in p.read_text().splitlines() if line.strip())
    assert len(got) == n_lines == rep.frames
    times = [f[1] for f in got]
    assert times == sorted(times)
    kinds = [f[4] for f in got]
    assert kinds[0] == "open" and kinds.count("rest") == 4
    first_rest = kinds.index("rest")
    assert 1 < first_rest < len(kinds) - 4  # between stream frames, not appended at the end
    first_line = ws.read_text().splitlines()[1]
    assert got[1][1] == parse_epoch_s(first_line.split(": ", 1)[0])
    assert got[1][6] == first_line.split(": ", 1)[1].encode()
    rest = got[first_rest]
    assert rest[3] == "in" and rest[7] == 200 and "depth?symbol=" in rest[5]

    # imported journals are ordinary: the codec decodes every inbound frame
    codec = get_codec(exchange)
    for seq, t, _conn, d, kind, source, payload, _code in got:
        if d == "in":
            (ev,) = codec.decode(seq, t, kind, source, payload)
            assert not isinstance(ev, DecodeError)


def test_cryptofeed_reconnects_sent_messages_and_bad_lines(tmp_path):
    ws = tmp_path / "BINANCE.ws.7.0"
    url = "wss://stream.binance.com:9443/ws"
    ws.write_text(
        f"{url} <-> 100.0\n"
        f'{url} <- 100.5: {{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}}\n'
        '101.0: {"result":null,"id":1}\n'
        "not a line\n"
        "102.x: {}\n"
        f"{url} <-> 103.0\n"
        "104.25: {}\n"
    )
    rep = import_cryptofeed([ws], tmp_path / "j")
    assert rep.bad == 2 and [s.split(":")[1] for s in rep.bad_lines] == ["4", "5"]
    got = [(t, c, d, k, p, code) for _s, t, c, d, k, _src, p, code in frames(tmp_path / "j")]
    assert got == [
        (100_000_000_000, 1, "local", "open", b"", None),
        (
            100_500_000_000,
            1,
            "out",
            "text",
            b'{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}',
            None,
        ),
        (101_000_000_000, 1, "in", "text", b'{"result":null,"id":1}', None),
        (103_000_000_000, 1, "local", "close", b"reconnected (implied by the capture)", None),
        (103_000_000_000, 2, "local", "open", b"", None),
        (104_250_000_000, 2, "in", "text", b"{}", None),
    ]


def test_cryptofeed_refuses_mixed_captures(tmp_path):
    with pytest.raises(ValueError, match="import each exchange separately"):
        import_cryptofeed([RAW / "BINANCE.ws.1.0", RAW / "BINANCE_FUTURES.ws.1.0"], tmp_path / "j")


def test_tardis_import(tmp_path):
    src = RAW / "binance.tardis.txt"
    rep = import_tardis([src], tmp_path / "j", exchange="binance")
    assert rep.bad == 1 and rep.bad_lines[0].startswith("binance.tardis.txt:11:")
    got = frames(tmp_path / "j")
    kinds = [(f[2], f[4]) for f in got]
    # open, 20 messages (one garbage line skipped → 19 + the 20th), close, open, 20 messages, close
    assert kinds[0] == (1, "open") and kinds[-1] == (2, "close")
    assert kinds.count((1, "text")) == 20 and kinds.count((2, "text")) == 20
    i = kinds.index((1, "close"))
    assert (
        kinds[i + 1] == (2, "open") and got[i][1] == got[i - 1][1]
    )  # close at the last message time
    # same bytes and times as the cryptofeed capture they were written from (7-digit precision)
    cf = [line for line in (RAW / "BINANCE.ws.1.0").read_text().splitlines()[1:41]]
    texts = [f for f in got if f[4] == "text"]
    for f, line in zip(texts, cf, strict=True):
        ts, body = line.split(": ", 1)
        assert f[6] == body.encode()
        assert f[1] == parse_epoch_s(ts) // 100 * 100
    md = JournalReader(tmp_path / "j").metadata
    assert md["importer"] == "tardis" and md["symbols"] == ["BLZETH", "LRCBTC", "NKNUSDT"]
    codec = get_codec("binance")
    assert not any(
        isinstance(e, DecodeError)
        for f in texts
        for e in codec.decode(f[0], f[1], "text", f[5], f[6])
    )


def test_cli_subprocess(tmp_path):
    out = tmp_path / "j"
    r = subprocess.run(
        [sys.executable, "-m", "engine.cli", "import", "tardis", str(RAW / "binance.tardis.txt"),
         "--out", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "wrote 44 frames" in r.stdout and "1 bad line(s)" in r.stderr and ":11:" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "engine.cli", "import", "cryptofeed", str(RAW / "BINANCE.ws.1.0"),
         "--out", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "already holds a journal" in r.stderr
