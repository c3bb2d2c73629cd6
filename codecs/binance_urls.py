"""Binance outbound side: stream names, subscribe messages, WebSocket and REST URLs.

Owns what the runtime sends to Binance and where: channel → stream names,
combined-stream URLs, SUBSCRIBE/UNSUBSCRIBE messages, REST depth snapshot URLs,
and the USD-M futures split of streams over the ``/public`` and ``/market``
URL paths.  The codecs of :mod:`engine.codecs.binance` inherit these as
:class:`SpotOutbound` / :class:`FuturesOutbound`; COIN-M futures (the
``dapi``/``dstream`` hosts) as :class:`DeliveryOutbound`.  Must not: do I/O or decode
anything (inbound is :mod:`engine.codecs.binance_wire` and the codec).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import orjson

from engine.codecs.base import (
    FUTURE,
    NO_USD_QUOTES,
    PERPETUAL,
    ConnLimits,
    VenueDefaults,
    expiry_yymmdd,
    instrument_name,
    split_pair,
    split_quote,
)

__all__ = ["CHANNELS", "FUTURES_PATHS", "SpotOutbound", "FuturesOutbound", "DeliveryOutbound"]

#: channel name (as given to :meth:`streams`) → stream suffix.
CHANNELS: dict[str, str] = {
    "trade": "trade",
    "aggTrade": "aggTrade",
    "depth": "depth@100ms",
    "depth5": "depth5@100ms",
    "depth10": "depth10@100ms",
    "depth20": "depth20@100ms",
    "bookTicker": "bookTicker",
    "ticker": "ticker",
    "kline_1m": "kline_1m",
}

#: USD-M futures, since 2026-04-23: which URL path serves which stream kind.
FUTURES_PATHS: dict[str, str] = {
    "depth": "/public",
    "bookTicker": "/public",
    "trade": "/public",
    "aggTrade": "/market",
    "kline": "/market",
    "ticker": "/market",
    "markPrice": "/market",
    "forceOrder": "/market",
}


class SpotOutbound(VenueDefaults):
    """Stream names, URLs and control messages of Binance spot (and the simulator)."""

    depth_path = "/api/v3/depth"
    default_channels = ("trade", "depth", "bookTicker", "ticker", "kline_1m")
    #: streams in the combined-stream URL, the rest SUBSCRIBEd 200 a message; 1024 a
    #: connection; 5 messages a second (pings and pongs included)
    limits = ConnLimits(
        streams_in_url=True, max_per_subscribe=200, max_per_conn=1024, control_per_window=5
    )

    def streams(self, symbols: Sequence[str], channels: Sequence[str]) -> list[str]:
        """Stream names for symbols × channels, e.g. ``btcusdt@depth@100ms``.

        Raises:
            ValueError: an unknown channel (the message lists the valid ones).
        """
        out: list[str] = []
        for ch in channels:
            suffix = CHANNELS.get(ch)
            if suffix is None and ch.startswith("kline_") and len(ch) > 6:
                suffix = ch
            if suffix is None:
                raise ValueError(
                    f"unknown Binance channel {ch!r}; valid: {', '.join(CHANNELS)} or kline_<interval>"
                )
            out.extend(f"{s.lower()}@{suffix}" for s in symbols)
        return out

    def ws_url(self, base_url: str, streams: Sequence[str]) -> str:
        """Combined-stream URL ``<base>/stream?streams=a/b/c``."""
        if not streams:
            raise ValueError("ws_url needs at least one stream")
        return f"{base_url.rstrip('/')}/stream?streams={'/'.join(streams)}"

    def _control_msg(self, method: str, streams: Sequence[str], request_id: int) -> bytes:
        return orjson.dumps({"method": method, "params": list(streams), "id": request_id})

    def subscribe(self, streams: Sequence[str], request_id: int) -> list[bytes]:
        """One SUBSCRIBE for ``streams`` (any number: the runtime chunks by ``limits``)."""
        return [self._control_msg("SUBSCRIBE", streams, request_id)]

    def unsubscribe(self, streams: Sequence[str], request_id: int) -> list[bytes]:
        return [self._control_msg("UNSUBSCRIBE", streams, request_id)]

    def snapshot_url(self, rest_base: str, symbol: str, limit: int) -> str:
        """REST depth snapshot URL (spot ``/api/v3/depth``, futures ``/fapi/v1/depth``)."""
        return f"{rest_base.rstrip('/')}{self.depth_path}?symbol={symbol.upper()}&limit={limit}"

    def snapshot_weight(self, limit: int) -> int:
        """Binance spot's published weight of ``/api/v3/depth``."""
        return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250

    #: the quotes of the venue's glued names (Binance lists no plain-USD quote; Binance.US does)
    quotes: tuple[str, ...] = NO_USD_QUOTES

    def normalized(self, symbol: str) -> str:
        """``BTCUSDT`` → ``BTC-USDT`` by quote suffix (offline stand-in for ``exchangeInfo``)."""
        return split_quote(symbol, self.quotes)


class FuturesOutbound(SpotOutbound):
    """USD-M futures: ``/fapi/v1/depth`` and one connection per ``/public`` or ``/market`` path."""

    depth_path = "/fapi/v1/depth"
    #: USD-M: 10 messages a second (200 streams a connection is the documented figure; the
    #: runtime keeps its 1024 default as before)
    limits = ConnLimits(
        streams_in_url=True, max_per_subscribe=200, max_per_conn=1024, control_per_window=10
    )

    @staticmethod
    def stream_path(stream: str) -> str:
        """The URL path (``/public`` or ``/market``) that serves ``stream`` since 2026-04-23.

        Raises:
            ValueError: a stream kind we do not know the path of.
        """
        ch = stream.partition("@")[2].split("@", 1)[0]
        key = (
            "depth"
            if ch.startswith("depth")
            else "kline"
            if ch.startswith("kline_")
            else "markPrice"
            if ch.startswith("markPrice")
            else ch
        )
        path = FUTURES_PATHS.get(key)
        if path is None:
            raise ValueError(f"no known futures URL path for stream {stream!r}")
        return path

    def snapshot_weight(self, limit: int) -> int:
        """Binance futures' published weight of ``/fapi/v1/depth``."""
        return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20

    def normalized(self, symbol: str) -> str:
        """USD-M: ``BTCUSDT`` → ``BTC-USDT-PERP``; ``BTCUSDT_240628`` → ``BTC-USDT-20240628``."""
        return _contract_name(symbol, self.quotes, None)

    def streams_by_path(self, streams: Sequence[str]) -> dict[str, list[str]]:
        """Group streams by URL path: open one connection per key (order kept)."""
        out: dict[str, list[str]] = {}
        for s in streams:
            out.setdefault(self.stream_path(s), []).append(s)
        return out

    def ws_url(self, base_url: str, streams: Sequence[str]) -> str:
        """Combined-stream URL; appends ``/public`` or ``/market`` unless ``base_url`` has a path.

        Raises:
            ValueError: the streams need different paths (use :meth:`streams_by_path`).
        """
        if not streams:
            raise ValueError("ws_url needs at least one stream")
        base = base_url.rstrip("/")
        if urlsplit(base).path in ("", "/"):
            paths = self.streams_by_path(streams)
            if len(paths) > 1:
                raise ValueError(
                    f"streams need different URL paths {sorted(paths)}: "
                    "open one connection per path (BinanceFutures.streams_by_path)"
                )
            base += next(iter(paths))
        return f"{base}/stream?streams={'/'.join(streams)}"


def _contract_name(symbol: str, quotes: tuple[str, ...], perp_suffix: str | None) -> str:
    """A Binance futures symbol's normalized name: ``GLUED[_TAIL]``, the tail ``YYMMDD`` (a
    dated future) or ``perp_suffix`` (a perpetual; None: the bare glued name is one)."""
    s = symbol.upper()
    glued, sep, tail = s.partition("_")
    pair = split_pair(glued, quotes)
    if pair is None:
        return s
    if (tail if sep else None) == perp_suffix:
        return instrument_name(*pair, PERPETUAL)
    expiry = expiry_yymmdd(tail) if sep else None
    return instrument_name(*pair, FUTURE, expiry) if expiry else s


class DeliveryOutbound(FuturesOutbound):
    """COIN-M futures: ``/dapi/v1/depth``; every stream on one ``/stream`` path (no split)."""

    depth_path = "/dapi/v1/depth"

    def normalized(self, symbol: str) -> str:
        """COIN-M (quoted in USD): ``BTCUSD_PERP`` → ``BTC-USD-PERP``; ``BTCUSD_240628`` →
        ``BTC-USD-20240628``; the bare ``BTCUSD`` is the index pair, not an instrument: as is."""
        return _contract_name(symbol, ("USD",), "PERP")

    def streams_by_path(self, streams: Sequence[str]) -> dict[str, list[str]]:
        """One group: COIN-M serves every stream kind on the same URL path."""
        return {"": list(streams)} if streams else {}

    def ws_url(self, base_url: str, streams: Sequence[str]) -> str:
        return SpotOutbound.ws_url(self, base_url, streams)
