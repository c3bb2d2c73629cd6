"""Times as text: the one place epoch nanoseconds are parsed from and formatted to strings.

Owns the engine's time grammar, for the command line (``--from``/``--to``/
``--at``), the importers (cryptofeed's float seconds, Tardis's ISO times) and
every printed time.  Pure: no I/O, no clock, no floats (every conversion is
integer arithmetic on the text's digits, so ``…06.3915486Z`` is exactly
``…391548600`` ns).  Must not: guess units, round, or read the local time zone.

Accepted by :func:`parse_time` (and nothing else):

* **ISO-8601**: ``YYYY-MM-DDTHH:MM[:SS[.F]]`` or a bare ``YYYY-MM-DD``
  (midnight), with up to 9 fractional digits ``F``, then ``Z`` or a ``±HH:MM``
  offset; no zone means UTC.  (:func:`parse_iso`)
* **an integer**: epoch nanoseconds, always (``1704067205123456789``).  No
  magnitude guessing: ``1704067205`` is 1.7 s after the epoch, not 2024.
* **an unsigned decimal with a fraction**: epoch seconds (``1704067205.123``,
  up to 9 fractional digits), the form cryptofeed writes.  (:func:`parse_epoch_s`)

Formatting (:func:`format_ns`, :func:`format_ms`) writes ISO-8601 UTC with a
``Z``, truncating (never rounding) to the digits asked for; for every int64 ns,
``parse_time(format_ns(ns)) == ns``.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

__all__ = [
    "NS_PER_S",
    "ACCEPTED",
    "parse_time",
    "float_seconds_ns",
    "parse_iso",
    "parse_epoch_s",
    "format_ns",
    "format_ms",
]

NS_PER_S = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)

#: What :func:`parse_time` accepts, for error messages and ``--help`` texts.
ACCEPTED = (
    "ISO-8601 like 2024-01-01T00:00:05.123456789Z (up to 9 fractional digits; Z or ±HH:MM, "
    "UTC if no zone), integer epoch nanoseconds like 1704067205123456789, or epoch seconds "
    "with a fraction like 1704067205.123"
)

_ISO = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)"
    r"(?:T(\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,9}))?)?)?"
    r"(?:(Z)|([+-])(\d\d):(\d\d))?",
    re.ASCII,
)
_EPOCH_S = re.compile(r"(\d+)(?:\.(\d{1,9}))?", re.ASCII)


def _frac_ns(digits: str | None) -> int:
    """Up to 9 fractional-second digits → ns ("3915486" → 391548600)."""
    return int(digits.ljust(9, "0")) if digits else 0


def parse_iso(text: str) -> int:
    """An ISO-8601 time (see the module docstring) → epoch ns, exactly.

    Raises:
        ValueError: not that form, or not a real calendar time (the message says which).
    """
    m = _ISO.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not an ISO-8601 time: {text[:60]!r} (expected {ACCEPTED.split(',')[0]})")
    y, mo, d, h, mi, s, frac, z, sign, oh, om = m.groups()
    try:
        when = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), tzinfo=UTC)
        if sign is not None:
            if int(oh) > 23 or int(om) > 59:
                raise ValueError(f"zone offset {sign}{oh}:{om} out of range")
            offset = timedelta(hours=int(oh), minutes=int(om))
            when = when - offset if sign == "+" else when + offset
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not a valid time: {text[:60]!r} ({exc})") from None
    return (when - _EPOCH) // _SECOND * NS_PER_S + _frac_ns(frac)


def parse_epoch_s(text: str) -> int:
    """Epoch seconds as decimal text ("1633998512.0633569", "1633998512") → ns, exactly.

    Unsigned, at most 9 fractional digits (a finer one would be dropped, so it is refused).

    Raises:
        ValueError: not digits with an optional fraction.
    """
    m = _EPOCH_S.fullmatch(text.strip())
    if m is None:
        raise ValueError(
            f"not epoch seconds: {text[:60]!r} (expected digits with up to 9 decimals, "
            "like 1633998512.0633569)"
        )
    whole, frac = m.groups()
    return int(whole) * NS_PER_S + _frac_ns(frac)


def float_seconds_ns(value: float) -> int:
    """Epoch seconds as a Python float (the Python API) → ns: its shortest repr, rounded to the ns.

    Raises:
        ValueError: not finite.
    """
    if not math.isfinite(value):
        raise ValueError(f"not a time: {value!r}")
    return int((Decimal(repr(value)) * NS_PER_S).to_integral_value(ROUND_HALF_EVEN))


def parse_time(text: str) -> int:
    """A time typed by a user (``--from``, ``--to``, ``--at``) → epoch ns; see :data:`ACCEPTED`.

    Raises:
        ValueError: none of the accepted forms; the message lists them.
    """
    s = text.strip()
    body = s[1:] if s[:1] in ("+", "-") else s
    if body.isascii() and body.isdigit():
        return int(s)  # epoch nanoseconds, whatever the magnitude
    try:
        return parse_epoch_s(s) if "." in s and "-" not in s else parse_iso(s)
    except ValueError as exc:
        if "not a valid time" in str(exc):
            raise
        raise ValueError(f"not a time: {text[:60]!r} (use {ACCEPTED})") from None


def format_ns(ns: int, digits: int = 9) -> str:
    """Epoch ns → ISO-8601 UTC, ``2024-01-01T00:00:05.123456789Z`` (``digits`` 0..9, truncated).

    Total: a value outside the calendar (years 1..9999) comes back as ``"<ns>ns"``.
    """
    secs, frac = divmod(ns, NS_PER_S)
    try:
        when = _EPOCH + timedelta(seconds=secs)
    except OverflowError:
        return f"{ns}ns"
    text = f"{when:%Y-%m-%dT%H:%M:%S}"
    if digits > 0:
        text += "." + f"{frac:09d}"[:digits]
    return text + "Z"


def format_ms(ms: int) -> str:
    """Epoch ms (an exchange's event time) → ``2024-01-01T00:00:05.123Z``; total like :func:`format_ns`."""
    text = format_ns(ms * 1_000_000, 3)
    return f"{ms}ms" if text.endswith("ns") else text
