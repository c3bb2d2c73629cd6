"""Shared test setup: hypothesis profiles, and the order tests are handed to xdist workers.

``default`` keeps the whole suite under a few minutes on 2 cores;
``HYPOTHESIS_PROFILE=slow`` runs many more examples (nightly / before a release).

Order: xdist hands tests out in collection order, so a module of long tests
collected last (``test_venue_*`` sorts late) leaves one worker running it while
the other has finished: the suite's tail.  The modules in :data:`LONG_FIRST`
(whole modules, so their module-scoped fixtures are still built once per
worker) are collected first, longest first; the rest keep pytest's order.
Measured with ``pytest -n 2 --durations=60``; a module whose tests take more
than ~10 s of waiting (captures of a few seconds, subprocess chains) belongs here.

Workers: ``-n auto`` starts one xdist worker more than the machine has cores
(:func:`pytest_xdist_auto_num_workers`).  About a third of the suite's wall
time is waiting, not computing (engine processes starting, captures running
for a set time at a set rate, a filesystem filling), and a third worker fills
it: on 2 cores the suite took 4 min 45 s with 2 workers and 3 min 38 s with 3,
the CPU time the same (5 min 19 s).  ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still
overrides it.

Bytecode: the suite starts some 350 ``python -m engine.cli`` processes.  Where
``PYTHONDONTWRITEBYTECODE`` is set (and no ``PYTHONPYCACHEPREFIX``), each of
them compiled the engine's modules from source again (~0.07 s of CPU apiece);
the processes the tests start (and the xdist workers) write and reuse one
bytecode cache instead, under the system's temp directory
(``wiretape-pycache-UID``), never beside the sources.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "slow",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _share_a_bytecode_cache() -> None:
    """Let the processes started from here cache bytecode outside the tree (see the docstring)."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    cache = Path(tempfile.gettempdir()) / f"wiretape-pycache-{os.getuid()}"
    try:
        cache.mkdir(mode=0o700, exist_ok=True)
        st = cache.lstat()
    except OSError:
        return
    if st.st_uid != os.getuid() or st.st_mode & 0o077 or not cache.is_dir():
        return  # not ours alone: never run bytecode another user could have written
    os.environ["PYTHONPYCACHEPREFIX"] = str(cache)
    del os.environ["PYTHONDONTWRITEBYTECODE"]


_share_a_bytecode_cache()

#: test modules run first, in this order (see the module docstring)
LONG_FIRST = (
    "test_readme_examples",
    "test_venue_coinbase",
    "test_venue_kraken",
    "test_live_disk",
    "test_venue_bybit",
    "test_shard_upload",
    "test_sim_model",
    "test_symbols",
    "test_venue_seam",
    "test_storage",
    "test_replay_roundtrip",
    "test_tickers",
    "test_venue_okx",
    "test_trades",
    "test_server_limits",
    "test_run_cli",
    "test_sync_okx",
)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one worker more than the cores this process may run on (see the docstring);
    None (xdist's own rule) where ``PYTEST_XDIST_AUTO_NUM_WORKERS`` says how many."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return len(os.sched_getaffinity(0)) + 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.path)).stem, len(LONG_FIRST)))
