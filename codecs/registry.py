"""Codec lookup by exchange name, as typed on the command line (``--exchange``).

Owns the name → codec table only; must not do I/O.  The embedded simulator
speaks the Binance spot dialect, so ``sim`` is a :class:`BinanceSpot` named "sim".
"""

from __future__ import annotations

from collections.abc import Callable

from engine.codecs.base import Codec
from engine.codecs.binance import BinanceFutures, BinanceSpot

__all__ = ["get_codec", "CODECS"]

#: exchange name → factory.  A fresh codec per call: codecs hold no shared state.
CODECS: dict[str, Callable[[], Codec]] = {
    "sim": lambda: BinanceSpot(name="sim"),
    "binance": BinanceSpot,
    "binance-futures": BinanceFutures,
}


def get_codec(name: str) -> Codec:
    """The codec for exchange ``name``.

    Raises:
        ValueError: unknown name; the message lists the valid choices.
    """
    factory = CODECS.get(name)
    if factory is None:
        raise ValueError(f"unknown exchange {name!r}; choose one of: {', '.join(sorted(CODECS))}")
    return factory()
