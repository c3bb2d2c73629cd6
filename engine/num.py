"""Exact prices and quantities: fixed-point integers at one engine-wide scale.

Every price and quantity in wiretape is an ``int`` counting units of
``10**-SCALE`` (``SCALE = 18``, so ``"0.00001234"`` is ``12340000000000`` and
``"1.5"`` is ``num.parse("1.5") == 15 * 10**17``).  Why this and not ``Decimal``
or a per-symbol scale:

* exact: no float ever touches a price or quantity; strings with more
  significant decimals than ``SCALE`` are *rejected* (:class:`PrecisionError`),
  never rounded.  Trailing zeros do not count ("0.000022880" is fine).
* every instrument fits: 18 decimals is the finest any token divides (ERC-20's
  ``decimals`` is 18 for ETH and nearly every token; a quantity cannot be
  finer than the token's smallest unit, and venues list ticks and lots far
  coarser: the finest seen are 1e-10 price ticks).  So no instrument is
  refused for its number of decimals; a 19th significant decimal is malformed
  input, not a real price, and refusing it keeps every value exact.
* fast: parsing is two C-level checks and ``int()`` of the digits times a
  power of ten; values are plain Python ints of any size (a price of 42000 is
  a 76-bit int), so reducers add, compare and multiply them without ever
  rescaling, and dict lookups and sorting on them stay cheap.
* bounded where it must be: :data:`MAX` (``10**38 - 1`` units, i.e. 20 whole
  digits) is the largest value the exports' ``decimal128(38, 18)`` holds; codecs
  refuse larger values as bad input, so every exported value is exact.

The exchange's own string form (Binance prints a fixed number of decimals per
symbol, e.g. ``"0.35130000"`` on spot, ``"7.6110"`` on futures) is rendered
back exactly by :func:`render` given the decimals learned from the strings
(:func:`decimals_of`).  :func:`rescale` converts unit ints recorded at another
scale (journals recorded before the scale was raised to 18 hold units of 1e-8).

This module owns number parsing/rendering only: no I/O, no state.
:func:`parse` is the engine's one decimal-string parser: every Python codec
path calls it (a memo or a range check around it is fine; a second parser is
not).  The optional C depth scanner (``engine/_depthscan.c``) reads the same
strings only where it fully understands them, and a differential test holds it
to this function.
"""

from __future__ import annotations

__all__ = [
    "SCALE", "ONE", "UNIT", "MAX", "PrecisionError", "parse", "parse_json_number", "render", "decimals_of",
    "rescale",
]  # fmt: skip

SCALE = 18
ONE = 10**SCALE
#: How outputs label a value in engine units (an alert's ``unit``): ``"1e-18"``.
UNIT = f"1e-{SCALE}"
#: The largest magnitude in units a codec accepts: what ``decimal128(38, SCALE)`` holds exactly.
MAX = 10**38 - 1
#: ``_MUL[n]``: the factor that turns a value written with ``n`` decimals into units.
_MUL = tuple(10 ** (SCALE - n) for n in range(SCALE + 1))


class PrecisionError(ValueError):
    """A numeric string is not a plain decimal, or has more than SCALE significant decimals."""


def parse(s: str) -> int:
    """Parse an exchange decimal string ("0.35130000", "813", "-1.5") into units of 1e-SCALE.

    Accepted: ASCII digits with at most one ``.`` (``"5."`` and ``".5"`` too),
    an optional leading ``+`` or ``-``, and more than SCALE decimals only when
    the extra ones are zeros.  Nothing else: no spaces, underscores, exponents
    or non-ASCII digits (all of which ``int()`` alone would take).

    Raises:
        PrecisionError: not a plain decimal string, or more than SCALE
            significant decimals (the value would not be exact).
    """
    try:
        a, _, b = s.partition(".")
        digits = a + b
        n = len(b)
        # the common case (unsigned, at most SCALE decimals): two C-level checks and int()
        if n <= SCALE and digits.isascii() and digits.isdigit():
            return int(digits) * _MUL[n]
        body = digits[1:] if a[:1] in ("+", "-") else digits  # a sign only before the digits
        if not (body.isascii() and body.isdigit()):
            raise PrecisionError(f"not a decimal number: {s[:40]!r}")
        if n > SCALE:
            extra = n - SCALE
            if digits[-extra:].strip("0"):
                raise PrecisionError(f"{s[:40]!r} has more than {SCALE} significant decimals")
            digits, n = digits[:-extra], SCALE
        return int(digits) * _MUL[n]
    except PrecisionError:
        raise
    except Exception:  # not a str, or more digits than int() takes
        raise PrecisionError(f"not a decimal number: {s!r:.40}") from None


def parse_json_number(s: str) -> int:
    """Parse a JSON number token exactly (Kraken v2 sends prices as JSON numbers: ``45283.5``,
    ``1e-05``, ``2.5E+3``) into units; never through float.

    Decode with ``json.loads(payload, parse_float=str, parse_int=str)`` (or any
    parser that hands over the number's text) and pass the token here.  The
    exponent is applied by moving the decimal point in the digit string, then
    :func:`parse` does the rest, so the precision rule is the same as for
    strings.

    Raises:
        PrecisionError: not a JSON number, or more significant decimals than SCALE.
    """
    if not isinstance(s, str):
        raise PrecisionError(f"not a decimal number: {s!r:.40}")
    mant, e, exp = s.replace("E", "e").partition("e")
    if not e:
        return parse(s)
    try:
        shift = int(exp)
    except ValueError:
        raise PrecisionError(f"not a decimal number: {s[:40]!r}") from None
    if not exp or exp.strip("+-") != exp.lstrip("+-") or abs(shift) > 64:
        raise PrecisionError(f"not a decimal number: {s[:40]!r}")
    sign = mant[:1] if mant[:1] in ("+", "-") else ""
    a, _, b = mant[len(sign):].partition(".")
    if not (a + b).isascii() or not (a + b).isdigit():  # one point at most, digits only
        raise PrecisionError(f"not a decimal number: {s[:40]!r}")
    digits, point = a + b, len(a) + shift
    if not digits:
        raise PrecisionError(f"not a decimal number: {s[:40]!r}")
    if point <= 0:
        text = "0." + "0" * -point + digits
    elif point >= len(digits):
        text = digits + "0" * (point - len(digits))
    else:
        text = digits[:point] + "." + digits[point:]
    return parse(sign + text)


def render(units: int, decimals: int = SCALE) -> str:
    """Render units as a decimal string with exactly ``decimals`` decimals.

    ``render(parse("0.3513"), 8) == "0.35130000"``; ``render(parse("7.611"), 4) == "7.6110"``.

    Raises:
        ValueError: ``decimals`` would drop non-zero digits (not exact).
    """
    sign = "-" if units < 0 else ""
    units = -units if units < 0 else units
    whole, frac = divmod(units, ONE)
    if decimals < 0:
        raise ValueError(f"decimals must be >= 0, got {decimals}")
    if decimals >= SCALE:
        f = f"{frac:0{SCALE}d}" + "0" * (decimals - SCALE)
    else:
        q, r = divmod(frac, _MUL[decimals])
        if r:
            raise ValueError(f"{units} units cannot be rendered exactly with {decimals} decimals")
        f = f"{q:0{decimals}d}" if decimals else ""
    return f"{sign}{whole}.{f}" if decimals else f"{sign}{whole}"


def decimals_of(s: str) -> int:
    """How many decimals an exchange string is printed with ("7.6110" → 4, "813" → 0)."""
    i = s.find(".")
    return 0 if i < 0 else len(s) - i - 1


def rescale(units: int, scale: int) -> int:
    """``units`` counted at ``10**-scale`` → units at this engine's ``SCALE``, exactly.

    Raises:
        ValueError: the value has digits finer than ``SCALE`` (``scale > SCALE``
            and not a multiple): it cannot be held exactly.
    """
    if scale == SCALE:
        return units
    if scale < SCALE:
        return units * 10 ** (SCALE - scale)
    q, r = divmod(units, 10 ** (scale - SCALE))
    if r:
        raise ValueError(f"{units} units of 1e-{scale} cannot be held exactly at 1e-{SCALE}")
    return q
