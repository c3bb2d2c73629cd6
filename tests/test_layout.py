"""The pure core stays pure: no core module pulls in the I/O stack.

``engine/`` (except ``engine/cli.py``, the command-line root, and the
``engine.live`` / ``engine.sim`` packages) and ``engine.codecs`` are the pure
core: numbers, events, outputs, serde, reducers, the pipeline, codecs.  Each is
imported in a fresh interpreter (one after another, each charged with what it newly
loads); if trio, trio-websocket, httpx,
rich or click (or their own dependencies) end up loaded, the test names the
module and what it loaded.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import engine
import engine.codecs

FORBIDDEN = ("trio", "trio_websocket", "httpx", "httpcore", "anyio", "rich", "click", "wsproto", "h11")
NOT_CORE = {"engine.cli"}


def core_modules() -> list[str]:
    names: list[str] = []
    for pkg in (engine, engine.codecs):
        for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
            if info.ispkg or info.name in NOT_CORE or info.name.rsplit(".", 1)[1].startswith("_"):
                continue
            names.append(info.name)
    return sorted(names)


def test_the_core_is_found() -> None:
    mods = core_modules()
    # the pieces the architecture names must be among them (a rename must update this list)
    for name in ("engine.pipeline", "engine.num", "engine.events", "engine.book_reducer",
                 "engine.codecs.binance"):  # fmt: skip
        assert name in mods
    assert not any(m.startswith(("engine.live", "engine.sim")) for m in mods)


def test_core_modules_import_no_io_stack() -> None:
    code = (
        "import importlib, json, sys\n"
        f"forbidden = {FORBIDDEN!r}\n"
        "bad = {}\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    before = set(sys.modules)\n"
        "    importlib.import_module(name)\n"
        "    hit = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in forbidden)\n"
        "    if hit: bad[name] = hit\n"
        "print(json.dumps(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(core_modules())],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    bad = json.loads(out.stdout)
    assert bad == {}, f"core modules load the I/O stack: {bad}"


def test_the_check_catches_a_violation() -> None:
    # the same probe on a module that does load trio must report it (the test can fail)
    code = (
        "import importlib, sys\n"
        "importlib.import_module('engine.live.capture')\n"
        "print(any(m.split('.')[0] == 'trio' for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr
