"""Binance inbound wire formats: typed message shapes, exact numbers, stream routing.

Owns, for the Binance codec (:mod:`engine.codecs.binance`): the msgspec
Structs each message type is decoded into (field types carry the int64 and
non-negative id rules), turning Binance's decimal strings into exact units
(always through :func:`engine.num.parse`, the engine's one number parser, with
a pure price memo around it), and naming which handler a stream or event type
goes to.  Must not: do I/O, keep state beyond a caller-owned bounded memo, or
let an exception other than :class:`Bad` escape on exchange input.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec

from engine import num

__all__ = [
    "Bad", "json_object",
    "number", "levels", "PRICE_MEMO_MAX", "route_of", "stream_of_url", "E_KIND",
    "ROUTE_CACHE_MAX", "MAX",
]  # fmt: skip

MAX = 2**63 - 1  # ids and times: int64, as journals, Arrow exports and Parquet hold them
VMAX = num.MAX  # prices and quantities: what the exports' decimal128 holds exactly
Id = Annotated[int, msgspec.Meta(ge=0, le=MAX)]
OptId = Annotated[int, msgspec.Meta(ge=-1, le=MAX)]  # Binance uses -1 for "none"
Ms = Annotated[int, msgspec.Meta(ge=0, le=MAX)]
RawLevels = list[tuple[str, str]]


# --------------------------------------------------------------------------- message shapes


class Depth(msgspec.Struct, gc=False):
    e: str
    E: Ms
    s: str
    U: Id
    u: Id
    b: RawLevels
    a: RawLevels
    T: Ms | None = None
    pu: OptId | None = None


class Partial(msgspec.Struct, gc=False):  # spot @depthN and REST depth bodies
    lastUpdateId: Id
    bids: RawLevels
    asks: RawLevels
    E: Ms | None = None
    T: Ms | None = None


class BookTicker(msgspec.Struct, gc=False):
    u: Id
    s: str
    b: str
    B: str
    a: str
    A: str
    e: str | None = None
    E: Ms | None = None
    T: Ms | None = None


class Trade(msgspec.Struct, gc=False):
    e: str
    E: Ms
    s: str
    t: Id
    p: str
    q: str
    T: Ms
    m: bool


class AggTrade(msgspec.Struct, gc=False):
    e: str
    E: Ms
    s: str
    a: Id
    p: str
    q: str
    f: Id
    l: Id  # noqa: E741 - Binance's name
    T: Ms
    m: bool


class K(msgspec.Struct, gc=False):
    t: Ms
    T: Ms
    s: str
    i: str
    f: OptId
    L: OptId
    o: str
    c: str
    h: str
    l: str  # noqa: E741
    v: str
    n: Id
    x: bool
    q: str
    V: str
    Q: str


class Kline(msgspec.Struct, gc=False):
    e: str
    E: Ms
    s: str
    k: K


class Ticker(msgspec.Struct, gc=False):
    e: str
    E: Ms
    s: str
    p: str
    w: str
    c: str
    Q: str
    o: str
    h: str
    l: str  # noqa: E741
    v: str
    q: str
    O: Ms  # noqa: E741
    C: Ms
    F: OptId
    L: OptId
    n: Id
    b: str | None = None
    a: str | None = None
    B: str | None = None
    A: str | None = None


class Shutdown(msgspec.Struct, gc=False):
    e: str
    E: Ms | None = None


class Err(msgspec.Struct, gc=False):
    code: int
    msg: str


class Bad(Exception):
    """A frame is invalid; the message is the DecodeError reason (never leaves the codec)."""


def json_object(decoder: Any, payload: bytes) -> dict[str, Any]:
    """``payload`` as a JSON object through a msgspec ``decoder``, or a Bad saying why not:
    the one front of every codec's generic (untyped) decode."""
    try:
        obj = decoder.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise Bad(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Bad(f"expected a JSON object, got {type(obj).__name__}")
    return obj


# --------------------------------------------------------------------------- numbers


def number(s: str, where: str, signed: bool = False) -> int:
    """One decimal string → units (:func:`engine.num.parse`), within ±``num.MAX``, ≥ 0 unless ``signed``.

    Raises:
        Bad: with a reason that names the field (``where``) and the problem.
    """
    try:
        v = num.parse(s)
    except num.PrecisionError as exc:
        raise Bad(f"{where}: {exc}") from None
    if 0 <= v <= VMAX:
        return v
    if v < 0 and not signed:
        raise Bad(f"{where}: negative value {s!r}")
    if not -VMAX <= v <= VMAX:
        raise Bad(f"{where}: {s[:40]!r} is out of range")
    return v


#: Bound of a codec's price memo (see :func:`levels`); it is emptied when full.
PRICE_MEMO_MAX = 1 << 16


def levels(raw: RawLevels, side: str, prices: dict[str, int]) -> list[tuple[int, int]]:
    """Parse ``[[price, qty], ...]`` strings into unit tuples (the hot loop of the engine).

    ``prices`` memoizes price strings already read (a book's updates keep
    hitting the same few hundred prices near the top, so most prices of a live
    stream were seen moments before).  A pure memo: an entry is the exact value
    of its string, so it cannot change what a frame decodes to.  Quantities
    repeat far less and are always parsed.  On any bad value the levels are
    read again by :func:`number`, whose error names the side, index and field.

    Raises:
        Bad: a price or quantity is not an exact non-negative decimal within ``num.MAX``.
    """
    out: list[tuple[int, int]] = []
    ap = out.append
    get = prices.get
    parse = num.parse
    try:
        for p, q in raw:
            pv = get(p)
            if pv is None:
                pv = parse(p)
                if not 0 <= pv <= VMAX:
                    break
                if len(prices) >= PRICE_MEMO_MAX:
                    prices.clear()
                prices[p] = pv
            qv = parse(q)
            if not 0 <= qv <= VMAX:
                break
            ap((pv, qv))
        else:
            return out
    except num.PrecisionError:
        pass
    return [
        (number(p, f"{side}[{i}] price"), number(q, f"{side}[{i}] qty"))
        for i, (p, q) in enumerate(raw)
    ]


# --------------------------------------------------------------------------- streams


def route_of(stream: str) -> tuple[str, int | None] | None:
    """Stream name → (handler kind, partial depth) or None if we do not decode it."""
    _, at, rest = stream.partition("@")
    if not at:
        return None
    ch = rest.split("@", 1)[0]
    if ch == "depth":
        return ("depth", None)
    if ch.startswith("depth") and ch[5:].isdigit():
        return ("partial", int(ch[5:]))
    if ch.startswith("kline_"):
        return ("kline", None)
    if ch in ("trade", "aggTrade", "bookTicker", "ticker"):
        return (ch, None)
    return None


def stream_of_url(source: str) -> str | None:
    """The stream of a raw ``.../ws/<stream>`` connection URL, else None."""
    path = urlsplit(source).path
    i = path.rfind("/ws/")
    if i < 0:
        return None
    name = path[i + 4 :]
    return name if "@" in name and "/" not in name else None


E_KIND = {
    "depthUpdate": "depth",
    "trade": "trade",
    "aggTrade": "aggTrade",
    "kline": "kline",
    "24hrTicker": "ticker",
    "bookTicker": "bookTicker",
}

ROUTE_CACHE_MAX = 4096
