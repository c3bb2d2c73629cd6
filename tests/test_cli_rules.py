"""The command line's rules, as a new user meets them, each through a real ``engine`` subprocess.

- One exit-code rule for every command: 0 success, 1 a data or check failure,
  2 a usage error; a failure is one ``Error:`` line on stderr, never a traceback.
- One vocabulary: ``--from/--to`` are times, ``--out`` is where output goes;
  old spellings work with a one-line note; ``--speed`` needs ``--serve``;
  unknown symbols are errors listing the journal's.
- Nothing is overwritten or written into a journal without ``--force``; the
  ``--out`` suffix chooses the format or is refused; failed commands leave no
  directory behind.

Read-only filesystems are real ones: a read-only tmpfs mounted in a private
mount namespace (``unshare``) around the one command; the test is skipped
where that is not allowed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from engine.journal.reader import JournalReader
from engine.timefmt import format_ns

ROOT = Path(__file__).resolve().parent.parent
SPOT = ROOT / "fixtures" / "journals" / "binance-spot"
SYMBOLS = "BLZETH, LRCBTC, NKNUSDT, RUNEEUR"


def engine(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def failed(p: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """Assert the exit code and one ``Error:`` line holding ``words``; return that line."""
    assert p.returncode == code, (p.returncode, p.stdout[-500:], p.stderr[-1500:])
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    errors = [line for line in p.stderr.splitlines() if line.startswith("Error: ")]
    others = [line for line in p.stderr.splitlines() if not line.startswith(("Error: ", "note: "))]
    assert len(errors) == 1 and not [o for o in others if "INFO" not in o], p.stderr
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


def table(out: Path, name: str) -> Any:
    """One table of an export (a hive-partitioned dataset)."""
    import pyarrow.dataset as ds

    return ds.dataset(out / f"table={name}", format="parquet", partitioning="hive").to_table()


@pytest.fixture
def spot(tmp_path: Path) -> Path:
    return Path(shutil.copytree(SPOT, tmp_path / "spot"))


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


# ------------------------------------------------------------------ usage errors: exit 2


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["replay", "{tmp}/missing"], ["does not exist"]),
        (["book", "{tmp}/missing", "--symbol", "X", "--at", "0"], ["does not exist"]),
        (["export", "{tmp}/missing", "--out", "{tmp}/t"], ["does not exist"]),
        (["journal", "inspect", "{tmp}/missing"], ["does not exist"]),
        (["journal", "verify", "{tmp}/missing"], ["does not exist"]),
        (["journal", "recover", "{tmp}/missing"], ["does not exist"]),
        (["replay", "{spot}", "--speed", "10"], ["--speed only applies to --serve"]),
        (["replay", "{spot}", "--symbols", "FOO"], ["unknown symbol FOO", SYMBOLS]),
        (["replay", "{spot}", "--symbols", "nknusdt,FOO,BAR"], ["unknown symbols BAR, FOO"]),
        (["export", "{spot}", "--out", "{tmp}/t", "--symbols", "FOO"], ["FOO", SYMBOLS]),
        (["book", "{spot}", "--symbol", "FOO", "--at", "1633998530"], ["FOO", SYMBOLS]),
        (["replay", "{spot}", "--out", "{tmp}/o.csv"], ["unknown format '.csv'", ".parquet"]),
        (["replay", "{spot}", "--out", "{tmp}/o"], ["(no suffix)"]),
        (["replay", "{spot}", "--out", "{spot}/o.parquet"], ["inside the journal"]),
        (["export", "{spot}", "--out", "{spot}/tables"], ["inside the journal"]),
        (["export", "{spot}", "--out", "{spot}"], ["already holds a journal"]),
        (["export", "{spot}"], ["--out"]),
        (["replay", "{spot}", "--checkpoint-frames", "10"], ["need --save-checkpoints"]),
        (["replay", "{spot}", "--check", "--save-checkpoints"], ["cannot be combined"]),
        (["run", "--channels", "foo", "--journal", "{tmp}/run"], ["unknown Binance channel"]),
        (["run", "--duration", "-1", "--journal", "{tmp}/run"], ["--duration"]),
        (["run", "--exchange", "mtgox", "--journal", "{tmp}/run"], ["mtgox"]),
        (["import", "tardis", "{raw}", "--out", "{tmp}/i", "--exchange", "x"], ["unknown exch"]),
    ],
)
def test_usage_errors_exit_2_in_one_line(spot: Path, tmp_path: Path, args, words) -> None:
    names = {"tmp": tmp_path, "spot": spot, "raw": ROOT / "fixtures/raw/binance.tardis.txt"}
    before = tree(spot)
    failed(engine(*[a.format(**names) for a in args]), 2, *words)
    assert tree(spot) == before  # nothing written into the journal
    assert not (tmp_path / "run").exists() and not (tmp_path / "i").exists()
    assert not (tmp_path / "t").exists()


# ------------------------------------------------------------------ data failures: exit 1


def test_data_failures_exit_1_in_one_line(spot: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for cmd in (["replay"], ["journal", "inspect"], ["journal", "recover"], ["export"]):
        extra = ["--out", str(tmp_path / "t")] if cmd == ["export"] else []
        failed(engine(*cmd, str(empty), *extra), 1, str(empty))
    assert not (tmp_path / "t").exists()  # the failed export left no directory
    span = "the journal spans 2021-10-12T00:28:31.159679000Z … 2021-10-12T00:29:02.077861800Z"
    failed(engine("replay", str(spot), "--from", "2030-01-01T00:00:00Z"), 1, "--from", span)
    failed(engine("replay", str(spot), "--to", "2020-01-01T00:00:00Z"), 1, "--to", span)
    failed(engine("book", str(spot), "--symbol", "NKNUSDT", "--at", "2020-01-01"), 1, span)
    failed(engine("book", str(spot), "--symbol", "NKNUSDT", "--at", "1733998542.5"), 1, span)
    failed(engine("export", str(spot), "--out", str(tmp_path / "t"), "--from", "2030-01-01"), 1)
    assert not (tmp_path / "t").exists()


def test_a_port_in_use_is_one_line(spot: Path, busy_port: int) -> None:
    failed(engine("replay", str(spot), "--serve", f"127.0.0.1:{busy_port}"), 1, "in use")
    failed(engine("simulate", "--port", str(busy_port)), 1, "in use")


def _read_only(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``engine *args`` with ``{ro}`` a read-only filesystem (a tmpfs in a private mount ns)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    cmd = " ".join(
        [sys.executable, "-m", "engine.cli", *[a.replace("{ro}", str(ro)) for a in args]]
    )
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0 or shutil.which("mount") is None:
        pytest.skip("no private mount namespace here for a read-only filesystem")
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs -o ro,size=1m none {ro} && exec {cmd}"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


def test_read_only_filesystem_is_one_line(tmp_path: Path) -> None:
    raw = str(ROOT / "fixtures/raw/binance.tardis.txt")
    failed(_read_only(tmp_path, "import", "tardis", raw, "--out", "{ro}/i"), 1, "Read-only")
    shutil.rmtree(tmp_path / "ro")
    p = _read_only(tmp_path, "run", "--journal", "{ro}/j", "--duration", "2", "--no-dashboard")
    failed(p, 1, "capture could not start", "Read-only")


# ------------------------------------------------------------------ outputs are never clobbered


def test_out_refuses_existing_files_unless_forced(spot: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    out.write_bytes(b"precious")
    failed(engine("replay", str(spot), "--out", str(out)), 2, "already exists", "--force")
    assert out.read_bytes() == b"precious"
    p = engine("replay", str(spot), "--out", str(out), "--force")
    assert p.returncode == 0, p.stderr
    assert pq.read_table(out).num_rows == 8
    arrow = tmp_path / "o.arrow"
    assert engine("replay", str(spot), "--out", str(arrow)).returncode == 0
    import pyarrow as pa

    with pa.ipc.open_file(arrow) as f:  # the suffix chose the Arrow IPC file format
        assert f.read_all().num_rows == 8


def test_a_segment_cannot_be_overwritten(spot: Path) -> None:
    seg = sorted(spot.glob("seg-*.arrows"))[0]
    before = tree(spot)
    failed(engine("replay", str(spot), "--out", str(seg)), 2)
    failed(engine("replay", str(spot), "--out", str(seg.with_suffix(".parquet"))), 2, "inside")
    assert tree(spot) == before
    assert engine("journal", "verify", str(spot)).returncode == 0


def test_export_refuses_an_existing_export_unless_forced(spot: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    p = engine("export", str(spot), "--out", str(out))
    assert p.returncode == 0, p.stderr
    first = tree(out)
    failed(engine("export", str(spot), "--out", str(out)), 2, "already exists")
    assert tree(out) == first
    p = engine("export", str(spot), "--out", str(out), "--force", "--symbols", "NKNUSDT")
    assert p.returncode == 0, p.stderr
    assert set(table(out, "book_diffs").column("symbol").to_pylist()) == {"NKNUSDT"}


# ------------------------------------------------------------------ one vocabulary


def test_export_speaks_from_to_out_and_keeps_old_spellings(spot: Path, tmp_path: Path) -> None:
    t = "2021-10-12T00:28:45Z"
    new = engine("export", str(spot), "--out", str(tmp_path / "a"), "--to", t, "--json")
    assert new.returncode == 0, new.stderr
    old = engine("export", str(spot), "--to", str(tmp_path / "b"), "--until", t, "--json")
    assert old.returncode == 0, old.stderr
    assert "note: --to OUTDIR is deprecated" in old.stderr
    assert "note: --until is deprecated; use --to" in old.stderr
    a, b = json.loads(new.stdout), json.loads(old.stdout)
    assert a["rows"] == b["rows"] and a["frames"] == b["frames"]
    full = json.loads(engine("export", str(spot), "--out", str(tmp_path / "c"), "--json").stdout)
    assert a["frames"] < full["frames"]  # --to is a time: the export stopped there
    last = max(table(tmp_path / "a", "book_diffs").column("recv_time").cast("int64").to_pylist())
    assert format_ns(last) <= "2021-10-12T00:28:45.000000000Z"


def test_symbols_filter_replay_output(spot: Path, tmp_path: Path) -> None:
    p = engine("replay", str(spot), "--symbols", "nknusdt", "--json")
    assert p.returncode == 0, p.stderr
    assert list(json.loads(p.stdout)["symbols"]) == ["NKNUSDT"]


def test_book_prints_the_instant_it_resolved(spot: Path) -> None:
    # fractional epoch seconds, cryptofeed's own format, resolve to the exact instant
    p = engine("book", str(spot), "--symbol", "NKNUSDT", "--at", "1633998540.1234567")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(
        "NKNUSDT at 2021-10-12T00:29:00.123456700Z (epoch ns 1633998540123456700)"
    )


# ------------------------------------------------------------------ engine run


def test_run_failures_leave_no_directory_and_the_summary_speaks_plainly(tmp_path: Path) -> None:
    j = tmp_path / "j"
    failed(engine("run", "--channels", "trade,foo", "--journal", str(j)), 2, "'foo'")
    assert not j.exists()
    p = engine("run", "--journal", str(j), "--duration", "2", "--no-dashboard")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert "started_mono" not in s and s["started"] < s["stopped"]
    assert s["started"].endswith("Z") and s["duration_s"] >= 2
    inspect = json.loads(engine("journal", "inspect", str(j), "--json").stdout)
    assert s["journal_bytes_on_disk"] == inspect["disk_bytes"]
    assert s["journal_bytes_written"] > 0
    assert s["journal_frames"] == sum(1 for _ in JournalReader(j).frames())
    # the retry of a finished capture is refused, and says what to do
    failed(engine("run", "--journal", str(j), "--duration", "1"), 2, "choose a new --journal")


def test_replay_prints_the_window_it_resolved(spot: Path) -> None:
    p = engine(
        "replay", str(spot), "--from", "1633998520.5", "--to", "2021-10-12T00:28:45.123456789Z"
    )
    assert p.returncode == 0, p.stderr
    assert (
        "window    from 2021-10-12T00:28:40.500000000Z (epoch ns 1633998520500000000)"
        "  to 2021-10-12T00:28:45.123456789Z (epoch ns 1633998525123456789)"
    ) in p.stdout.splitlines()


def _on_a_terminal(args: list[str]) -> tuple[subprocess.CompletedProcess[bytes], bytes]:
    """Run ``engine *args`` with stderr on a pseudo-terminal; returns (process, terminal bytes)."""
    import os
    import pty

    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"}
    env.pop("NO_COLOR", None)
    p = subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, timeout=120, env=env,
    )  # fmt: skip
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal's other side is closed and drained
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return p, seen


def test_import_shows_progress_on_a_terminal_and_is_quiet_otherwise(tmp_path: Path) -> None:
    raw = ROOT / "fixtures" / "raw"
    files = [str(raw / "BINANCE.ws.1.0"), str(raw / "BINANCE.http.0.0")]
    p, seen = _on_a_terminal(["import", "cryptofeed", *files, "--out", str(tmp_path / "a")])
    assert p.returncode == 0 and b"import" in seen and "━".encode() in seen
    q = engine("import", "cryptofeed", *files, "--out", str(tmp_path / "b"))
    assert q.returncode == 0 and q.stderr == ""


def test_verify_shows_progress_on_a_terminal_and_is_quiet_otherwise(spot: Path) -> None:
    p, seen = _on_a_terminal(["journal", "verify", str(spot)])
    assert p.returncode == 0 and b"verify" in seen and b"frames" in seen
    assert p.stdout.startswith(b"OK ")
    q = engine("journal", "verify", str(spot))
    assert q.returncode == 0 and q.stderr == "" and q.stdout.startswith("OK ")
