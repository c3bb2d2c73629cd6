"""The simulator's instruments: each symbol's price grid, lot step, start price and typical size.

This module owns :class:`SymbolSpec` (validated: a grid on which every
trade's quote quantity is exact at 8 decimals), the grids of the symbols the
simulator knows (as on Binance spot) and the deterministic generic grid of any
other name.  It must not hold order flow or rendering (:mod:`engine.sim.model`,
:mod:`engine.sim.binance_frames`); it reads no clock and uses no global
randomness (a generic grid's price comes from ``Random((seed, name))``).
"""

from __future__ import annotations

import random

import attrs

from engine.num import ONE, SCALE, parse

#: ``price * qty`` (units²) of one 1e-8 quote unit: quote volumes are printed with 8 decimals
QUOTE_GRID = ONE * 10 ** (SCALE - 8)

__all__ = ["KNOWN_SPECS", "SymbolSpec", "spec_for"]


@attrs.frozen
class SymbolSpec:
    """One instrument: its grid and typical sizes, all in engine units (:mod:`engine.num`).

    ``lot`` is the mean order size in lot steps.  ``tick * step`` must be a
    multiple of :data:`QUOTE_GRID` (1e-8 in units²) so every trade's quote
    quantity ``price * qty`` is exact at the 8 decimals Binance prints.
    """

    name: str
    tick: int
    step: int
    price: int
    lot: int = 10

    def __attrs_post_init__(self) -> None:
        bare = self.name.replace("-", "").replace("/", "")  # venues spell BTC-USDT, BTC/USD
        if not bare.isalnum() or self.name != self.name.upper():
            raise ValueError(f"symbol name must be upper-case alphanumeric, got {self.name!r}")
        if self.tick <= 0 or self.step <= 0 or self.lot <= 0:
            raise ValueError(f"{self.name}: tick, step and lot must be positive")
        if self.price % self.tick or self.price < 100 * self.tick:
            raise ValueError(f"{self.name}: price must be on the tick grid and >= 100 ticks")
        if (self.tick * self.step) % QUOTE_GRID:
            raise ValueError(
                f"{self.name}: tick*step must be a multiple of 1e-8 so quote volumes are exact"
            )


def _spec(name: str, tick: str, step: str, price: str, lot: int) -> SymbolSpec:
    return SymbolSpec(name, parse(tick), parse(step), parse(price), lot)


#: Grids as on Binance spot; SHIBUSDT exercises 8-decimal prices.
KNOWN_SPECS: dict[str, SymbolSpec] = {
    s.name: s
    for s in (
        _spec("BTCUSDT", "0.01", "0.00001", "65000.00", 2_000),
        _spec("ETHUSDT", "0.01", "0.0001", "3200.00", 1_000),
        _spec("BNBUSDT", "0.01", "0.001", "580.00", 500),
        _spec("SOLUSDT", "0.01", "0.001", "150.00", 2_000),
        _spec("SHIBUSDT", "0.00000001", "1", "0.00001234", 2_000_000),
    )
}


def spec_for(name: str, seed: int = 0) -> SymbolSpec:
    """The spec of ``name`` (any case): a known one, or a generic USDT-like grid.

    Unknown names get tick 0.01, step 0.001 and a price between 10 and 1000
    drawn from ``(seed, name)`` — deterministic, so ``--symbols xyzusdt`` works.
    """
    name = name.upper()
    known = KNOWN_SPECS.get(name.replace("-", "").replace("/", ""))  # BTC-USDT: BTCUSDT's grid
    if known is not None:
        return known if known.name == name else attrs.evolve(known, name=name)
    r = random.Random(f"spec:{seed}:{name}")
    return SymbolSpec(
        name, parse("0.01"), parse("0.001"), r.randrange(1_000, 100_000) * parse("0.01"), 1_000
    )
