"""wiretape: record exchange market-data WebSocket streams frame by frame, replay them exactly.

Import everything through ``engine.…``: ``engine.codecs``, ``engine.journal``
and ``engine.replay`` are installed from the top-level folders ``codecs/``,
``journal/`` and ``replay/`` (see pyproject.toml).

``engine.open(path)`` opens a journal for notebooks and scripts
(:mod:`engine.replay.api`)::

    import engine
    j = engine.open("fixtures/journals/binance-spot")
    j.book_at("NKNUSDT", "2021-10-12T00:29:00Z").best_bid

It is loaded on first use, so ``import engine`` alone stays light: it pulls in
no pyarrow, no I/O and none of the engine's modules.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "open"]

#: Names served lazily: name → the module that defines it.
_LAZY = {"open": "engine.replay.api"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
