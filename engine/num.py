"""Exact prices and quantities: fixed-point integers at one engine-wide scale.

Every price and quantity in wiretape is an ``int`` counting units of
``10**-SCALE`` (``SCALE = 8``, so ``"0.00001234"`` is ``1234`` and
``"42000.5"`` is ``4200050000000``).  Why this and not ``Decimal`` or a
per-symbol scale:

* exact: no float ever touches a price or quantity; strings with more
  significant decimals than ``SCALE`` are *rejected* (:class:`PrecisionError`),
  never rounded.  Trailing zeros do not count ("0.000022880" is fine).
* fast: parsing is ``int(s.replace(".", ""))`` times a power of ten (about
  110 ns); dict lookups and sorting on small ints are the cheapest Python has.
* simple: one scale for every symbol and exchange means reducers add, compare
  and multiply values without ever rescaling.  8 decimals covers every value
  in the recorded Binance, Coinbase, Kraken, OKX and Bybit captures, and keeps
  values inside int64 for Arrow/Parquet (up to 92 billion whole units).

The exchange's own string form (Binance prints a fixed number of decimals per
symbol, e.g. ``"0.35130000"`` on spot, ``"7.6110"`` on futures) is rendered
back exactly by :func:`render` given the decimals learned from the strings
(:func:`decimals_of`).

This module owns number parsing/rendering only: no I/O, no state.
"""

from __future__ import annotations

from decimal import Decimal

__all__ = [
    "SCALE",
    "ONE",
    "PrecisionError",
    "parse",
    "parse_json_number",
    "render",
    "to_decimal",
    "from_decimal",
    "decimals_of",
]

SCALE = 8
ONE = 10**SCALE
_POW = tuple(10**i for i in range(SCALE + 1))


class PrecisionError(ValueError):
    """A numeric string is not a plain decimal, or has more than SCALE significant decimals."""


def parse(s: str) -> int:
    """Parse an exchange decimal string ("0.35130000", "813", "-1.5") into units of 1e-SCALE.

    Raises:
        PrecisionError: not a plain decimal string, or more than SCALE
            significant decimals (the value would not be exact).
    """
    i = s.find(".")
    try:
        if i < 0:
            if not s.isdigit() and not (s[:1] in "+-" and s[1:].isdigit()):
                raise PrecisionError(f"not a decimal number: {s[:40]!r}")
            return int(s) * ONE
        frac = len(s) - i - 1
        digits = s[:i] + s[i + 1 :]
        if frac <= SCALE:
            if not digits.isdigit():
                if not (digits[:1] in "+-" and digits[1:].isdigit()):
                    raise PrecisionError(f"not a decimal number: {s[:40]!r}")
            return int(digits) * _POW[SCALE - frac]
    except PrecisionError:
        raise
    except Exception as exc:  # pragma: no cover - defensive (e.g. non-str)
        raise PrecisionError(f"not a decimal number: {s!r:.40}") from exc
    # more decimals than SCALE: fine only if the extra ones are zeros
    extra = frac - SCALE
    head, tail = digits[:-extra], digits[-extra:]
    if tail.strip("0"):
        raise PrecisionError(f"{s[:40]!r} has more than {SCALE} significant decimals")
    if not head.lstrip("+-").isdigit():
        raise PrecisionError(f"not a decimal number: {s[:40]!r}")
    return int(head)


def parse_json_number(x: object) -> int:
    """Parse a JSON number that a decoder returned (Kraken sends prices as JSON numbers).

    Ints are exact; floats are accepted only via their shortest repr, which is
    the literal the exchange sent (Python's float repr round-trips), and only
    if that literal is exact at SCALE.
    """
    if isinstance(x, bool):
        raise PrecisionError(f"boolean is not a number: {x!r}")
    if isinstance(x, int):
        return x * ONE
    if isinstance(x, float):
        r = repr(x)
        if "e" in r or "E" in r:
            r = format(Decimal(r), "f")
        return parse(r)
    if isinstance(x, str):
        return parse(x)
    raise PrecisionError(f"not a number: {x!r:.40}")


def render(units: int, decimals: int = SCALE) -> str:
    """Render units as a decimal string with exactly ``decimals`` decimals.

    ``render(35130000, 8) == "0.35130000"``; ``render(761100000, 4) == "7.6110"``.

    Raises:
        ValueError: ``decimals`` would drop non-zero digits (not exact).
    """
    sign = "-" if units < 0 else ""
    units = -units if units < 0 else units
    whole, frac = divmod(units, ONE)
    if decimals >= SCALE:
        f = f"{frac:0{SCALE}d}" + "0" * (decimals - SCALE)
    else:
        drop = SCALE - decimals
        q, r = divmod(frac, _POW[drop])
        if r:
            raise ValueError(f"{units} units cannot be rendered exactly with {decimals} decimals")
        f = f"{q:0{decimals}d}" if decimals else ""
    return f"{sign}{whole}.{f}" if decimals else f"{sign}{whole}"


def decimals_of(s: str) -> int:
    """How many decimals an exchange string is printed with ("7.6110" → 4, "813" → 0)."""
    i = s.find(".")
    return 0 if i < 0 else len(s) - i - 1


def to_decimal(units: int) -> Decimal:
    """Units → Decimal (exact), for display and export."""
    return Decimal(units).scaleb(-SCALE)


def from_decimal(d: Decimal) -> int:
    """Decimal → units; raises PrecisionError if not exact at SCALE."""
    q = d.scaleb(SCALE)
    if q != q.to_integral_value():
        raise PrecisionError(f"{d} has more than {SCALE} significant decimals")
    return int(q)
