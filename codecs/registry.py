"""Codec lookup by exchange name, as typed on the command line (``--exchange``).

Owns the name → codec table, and the venue variants that differ from a base
codec only in their name, hosts and REST path (Binance US and TR speak the
spot protocol on their own hosts; COIN-M futures the USD-M one, ``pu`` chain
included, on ``dstream``/``dapi``).  Must not do I/O, nor decode anything
itself: a variant's frames go through its base codec's code, exactly.
The embedded simulator speaks the Binance spot dialect, so ``sim`` is a
:class:`BinanceSpot` named "sim".
"""

from __future__ import annotations

from collections.abc import Callable

from engine.codecs.base import QUOTES, Codec
from engine.codecs.binance import BinanceFutures, BinanceSpot
from engine.codecs.binance_urls import DeliveryOutbound
from engine.codecs.bybit import BybitInverse, BybitLinear, BybitSpot
from engine.codecs.bybit_legacy import BybitLegacy
from engine.codecs.coinbase import CoinbaseExchange
from engine.codecs.coinbase_advanced import CoinbaseAdvanced
from engine.codecs.kraken import KrakenV2
from engine.codecs.kraken_v1 import KrakenV1
from engine.codecs.okx import Okx

__all__ = ["get_codec", "CODECS", "BinanceUS", "BinanceTR", "BinanceDelivery"]


class BinanceUS(BinanceSpot):
    """Binance.US: the spot protocol on its own hosts."""

    name = "binance-us"
    ws_base = "wss://stream.binance.us:9443"
    rest_base = "https://api.binance.us"
    quotes = QUOTES  # Binance.US lists USD pairs (BTCUSD)


class BinanceTR(BinanceSpot):
    """Binance TR: the spot protocol on its own hosts (as cryptofeed's BINANCE_TR)."""

    name = "binance-tr"
    ws_base = "wss://stream-cloud.trbinance.com"
    rest_base = "https://api.binance.me"


class BinanceDelivery(DeliveryOutbound, BinanceFutures):
    """Binance COIN-M futures: the USD-M dialect (``pu``/``T``), ``/dapi/v1/depth``, one path."""

    name = "binance-delivery"
    ws_base = "wss://dstream.binance.com"
    rest_base = "https://dapi.binance.com"


#: exchange name → factory.  A fresh codec per call: codecs hold no shared state.
CODECS: dict[str, Callable[[], Codec]] = {
    "sim": lambda: BinanceSpot(name="sim"),
    "binance": BinanceSpot,
    "binance-futures": BinanceFutures,
    "binance-us": BinanceUS,
    "binance-tr": BinanceTR,
    "binance-delivery": BinanceDelivery,
    "kraken": KrakenV2,
    "kraken-v1": KrakenV1,
    "bybit": BybitSpot,
    "bybit-linear": BybitLinear,
    "bybit-inverse": BybitInverse,
    "bybit-legacy": BybitLegacy,
    "okx": Okx,
    "coinbase": CoinbaseExchange,
    "coinbase-advanced": CoinbaseAdvanced,
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
