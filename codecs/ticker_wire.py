"""A venue's ticker object ⇄ the one ticker model (:class:`engine.events.Ticker24h`).

Owns the step every non-Binance codec shares when it reads or writes a
ticker: the venue's JSON object (its own key for each model field, given as a
:data:`FieldMap`) → a Ticker24h, and a Ticker24h → those keys and their
decimal text (what the simulator and the replay server send).  Each codec
keeps its own field map and documents it in its header; the values that are
not numbers (times, ids, symbols) stay the codec's.  Numbers are exact
(:func:`engine.num.parse`, or :func:`engine.num.parse_json_number` for JSON
number tokens); an absent key, ``null`` or an empty string (OKX's "no best
bid") is None.  Must not: do I/O, keep state, or invent a value — a field the
venue does not send stays None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine import num
from engine.codecs.binance_wire import VMAX, Bad
from engine.events import Ticker24h

__all__ = ["FieldMap", "NUMBERS", "decode_ticker", "encode_fields", "string_number", "json_token"]

#: model field → the venue's key for it (only the fields the venue sends)
FieldMap = Mapping[str, str]
#: the Ticker24h fields that hold prices or quantities (units of engine.num)
NUMBERS = (
    "last_price", "last_qty", "open_price", "high_price", "low_price", "vwap", "volume",
    "quote_volume", "price_change", "bid_price", "ask_price", "bid_qty", "ask_qty",
)  # fmt: skip
#: the one signed number (a change may be negative)
_SIGNED = frozenset({"price_change"})

#: ``parse(value, where, signed) -> units`` (raises Bad)
Parse = Callable[[Any, str, bool], int]


def _checked(parse: Callable[[str], int], s: str, where: str, signed: bool) -> int:
    try:
        v = parse(s)
    except num.PrecisionError as exc:
        raise Bad(f"{where}: {exc}") from None
    if v < 0 and not signed:
        raise Bad(f"{where}: negative value {s[:40]!r}")
    if not -VMAX <= v <= VMAX:
        raise Bad(f"{where}: {s[:40]!r} is out of range")
    return v


def string_number(v: Any, where: str, signed: bool) -> int:
    """A decimal string (OKX, Bybit, Coinbase) → units."""
    if not isinstance(v, str):
        raise Bad(f"{where}: expected a decimal string, got {type(v).__name__}")
    return _checked(num.parse, v, where, signed)


def json_token(v: Any, where: str, signed: bool) -> int:
    """A JSON number token (Kraken v2; its text, as a ``float_hook=str`` decoder hands it) → units."""
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str):
        raise Bad(f"{where}: expected a number, got {type(v).__name__}")
    return _checked(num.parse_json_number, v, where, signed)


def decode_ticker(
    seq: int,
    recv_ns: int,
    symbol: str,
    exch_ms: int | None,
    obj: Mapping[str, Any],
    fields: FieldMap,
    where: str,
    *,
    parse: Parse = string_number,
    last_id: int | None = None,
    count: int | None = None,
    partial: bool = False,
) -> Ticker24h:
    """The Ticker24h of one venue ticker object ``obj`` (the keys of ``fields``; the rest None;
    ``last_id``/``count``, not numbers of :mod:`engine.num`, are the codec's to read).

    Raises:
        Bad: a value that is not an exact number of its kind (names ``where.key``).
    """
    vals: dict[str, int] = {}
    for field, key in fields.items():
        v = obj.get(key)
        if v is None or v == "":
            continue
        vals[field] = parse(v, f"{where}.{key}", field in _SIGNED)
    g = vals.get
    return Ticker24h(
        seq, recv_ns, symbol, exch_ms, g("last_price"), g("last_qty"), g("open_price"),
        g("high_price"), g("low_price"), g("vwap"), g("volume"), g("quote_volume"),
        g("price_change"), g("bid_price"), g("ask_price"), None, None, None, last_id, count,
        g("bid_qty"), g("ask_qty"), partial,
    )  # fmt: skip


def encode_fields(ev: Ticker24h, fields: FieldMap, render: Callable[[int], Any]) -> dict[str, Any]:
    """The venue keys of ``fields`` with ``render(value)`` for every field ``ev`` holds (None: left out)."""
    out: dict[str, Any] = {}
    for field, key in fields.items():
        v = getattr(ev, field)
        if v is not None:
            out[key] = render(v)
    return out
