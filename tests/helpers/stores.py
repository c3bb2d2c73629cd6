"""What the object-store tests share: starting a store server on 127.0.0.1, the journal they push, CLI calls.

:func:`serving` runs a server process on a free loopback port until it
answers (moto's S3 in :mod:`helpers.s3`, the GCS emulator in
:mod:`helpers.gcs`); :func:`seekable_journal` writes the journal the storage
tests push (small sealed segments and checkpoints, so seeking has something
to pass); :func:`cli` and :func:`cli_json` invoke a command in-process.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from helpers.sim_journal import write_sim_journal

from engine.journal.writer import WriterConfig

#: 90 % of the :func:`seekable_journal`'s 150 s
STORE_AT = "2024-01-01T00:02:15Z"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: How long a server may take to answer: moto imports for seconds, and far longer when the
#: machine is loaded (load 15 on 2 cores took moto past 20 s: every storage test then failed).
START_S = 120.0


@contextmanager
def serving(
    argv: Callable[[int], list[str]], probe: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run ``argv(port)`` on a free port until ``http://127.0.0.1:PORT{probe}`` answers; yields the URL.

    A server that exits before answering (its port taken meanwhile) is started
    again on another port; one still silent after :data:`START_S` is an error.
    """
    for _attempt in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            argv(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + START_S
        while proc.poll() is None:
            try:
                urllib.request.urlopen(url + probe, timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait(10)
                    raise RuntimeError(f"{argv(0)[:3]} did not answer in {START_S:.0f} s") from None
                time.sleep(0.05)
        if proc.poll() is None:
            break
    else:  # pragma: no cover - the machine refuses sockets
        raise RuntimeError(f"{argv(0)[:3]} did not start")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def cli(cmd: Any, *args: str) -> Any:
    """Invoke a click command in-process; it must succeed."""
    res = CliRunner().invoke(cmd, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def cli_json(cmd: Any, *args: str) -> dict[str, Any]:
    """A command's ``--json`` document."""
    return dict(json.loads(cli(cmd, *args, "--json").output))


def without(doc: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in names}


def seekable_journal(path: Path) -> Path:
    """A 150 s sim journal in 8 small sealed segments, with checkpoints every 300 frames."""
    from engine.replay.cli import replay

    d = write_sim_journal(path, config=WriterConfig(batch_frames=128, segment_bytes=12 << 10))
    cli(replay, str(d), "--save-checkpoints", "--checkpoint-frames", "300")
    return d


def assert_readers_equal_local(local_journal: Path, uri: str, tmp_path: Path) -> None:
    """Push ``local_journal`` to ``uri``; every reading command (and the API) from there equals local."""
    import engine
    from engine.journal.cli import journal as journal_cmd
    from engine.replay.cli import replay as replay_cmd
    from engine.replay.cli_book import book as book_cmd
    from engine.replay.cli_export import export as export_cmd
    from engine.replay.export import read_table

    pushed = cli_json(journal_cmd, "push", str(local_journal), uri)
    assert "journal.json" in pushed["uploaded"] and not pushed["pending"]
    assert "checkpoints/" in " ".join(pushed["uploaded"])
    assert cli_json(journal_cmd, "push", str(local_journal), uri)["uploaded"] == []  # idempotent

    assert f"OK {uri}" in cli(journal_cmd, "verify", uri).output
    st = cli_json(journal_cmd, "inspect", uri)
    assert st["frames"] == cli_json(journal_cmd, "inspect", str(local_journal))["frames"]

    r_remote, r_local = (cli_json(replay_cmd, d) for d in (uri, str(local_journal)))
    assert without(r_remote, "journal", "elapsed_s") == without(r_local, "journal", "elapsed_s")

    b_remote, b_local = (
        cli_json(book_cmd, d, "--symbol", "BTCUSDT", "--at", STORE_AT)
        for d in (uri, str(local_journal))
    )
    assert b_remote["book"] == b_local["book"] and b_remote["checkpoint"] is not None
    assert b_remote["last_seq"] == b_local["last_seq"]
    assert b_remote["io"]["segments_skipped"] >= 5  # seeking, through ranged reads

    for d, out in ((uri, tmp_path / "x_remote"), (str(local_journal), tmp_path / "x_local")):
        cli(export_cmd, d, "--out", str(out))
    assert read_table(tmp_path / "x_remote", "trades").equals(
        read_table(tmp_path / "x_local", "trades")
    )

    j = engine.open(uri)
    assert j.span == engine.open(local_journal).span
    assert (
        j.book_at("ETHUSDT", STORE_AT).best_bid
        == engine.open(local_journal).book_at("ETHUSDT", STORE_AT).best_bid
    )

    back = tmp_path / "pulled"
    assert cli_json(journal_cmd, "pull", uri, str(back))["uploaded"]
    assert cli_json(replay_cmd, str(back))["symbols"] == r_local["symbols"]
