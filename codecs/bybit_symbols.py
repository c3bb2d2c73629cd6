"""Bybit's instrument names read into the one normalized form (:func:`engine.codecs.base.instrument_name`).

Owns how a Bybit symbol's spelling says its market, kind and expiry (Bybit's symbol
table, v5 and the legacy realtime protocol alike): spot ``BTCUSDT``; linear
``BTCUSDT``/``BTCUSDC`` and ``BTCPERP`` perpetuals, ``BTC-28JUN24`` (USDC) and
``BTCUSDT-27DEC24`` (USDT) futures; inverse ``BTCUSD`` perpetuals and ``BTCUSDM24``
futures, which name only the quarter's month (H/M/U/Z = Mar/Jun/Sep/Dec), so their
name carries the month, not a guessed day.  Must not: format a name itself (the one
rule does), guess a split, or raise on any text (an unread spelling is returned as is).
"""

from __future__ import annotations

from engine.codecs.base import (
    FUTURE,
    NO_USD_QUOTES,
    PERPETUAL,
    expiry_ddmmmyy,
    expiry_month_code,
    instrument_name,
    split_pair,
    split_quote,
)

__all__ = ["spot_name", "linear_name", "inverse_name"]


def spot_name(symbol: str) -> str:
    """Spot ``BTCUSDT`` → ``BTC-USDT`` (Bybit spot lists no plain-USD quote)."""
    return split_quote(symbol, NO_USD_QUOTES)


def linear_name(symbol: str) -> str:
    """A linear contract's normalized name from its spelling (Bybit's symbol table):
    ``BTCUSDT``/``BTCUSDC`` perpetuals, ``BTCPERP`` (USDC perpetual), ``BTC-28JUN24``
    (USDC future), ``BTCUSDT-27DEC24`` (USDT future); anything else as spelled."""
    s = symbol.upper()
    head, sep, tail = s.partition("-")
    if not head.isalnum():
        return s
    if sep:
        expiry = expiry_ddmmmyy(tail)
        dated = split_pair(head, ("USDT", "USDC")) or (head, "USDC")
        return instrument_name(*dated, FUTURE, expiry) if expiry else s
    if s.endswith("PERP") and len(s) > 4:
        return instrument_name(s[:-4], "USDC", PERPETUAL)
    pair = split_pair(s, ("USDT", "USDC"))
    return instrument_name(*pair, PERPETUAL) if pair else s


def inverse_name(symbol: str) -> str:
    """An inverse contract's normalized name (quoted in USD): ``BTCUSD`` the perpetual,
    ``BTCUSDM24`` the June 2024 future (Bybit names only the quarter's month: H/M/U/Z);
    anything else as spelled."""
    s = symbol.upper()
    if not s.isalnum():
        return s
    if s.endswith("USD") and len(s) > 3:
        return instrument_name(s[:-3], "USD", PERPETUAL)
    glued, month, yy = s[:-3], s[-3:-2], s[-2:]
    expiry = expiry_month_code(month, yy) if month in ("H", "M", "U", "Z") else None
    if expiry and glued.endswith("USD") and len(glued) > 3:
        return instrument_name(glued[:-3], "USD", FUTURE, expiry)
    return s
