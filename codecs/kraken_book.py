"""Kraken's book checksum, and the instrument facts both Kraken dialects (v1, v2) share.

Owns the one implementation of Kraken's CRC32 book checksum (the same rule for
WebSocket v1 and v2, see ``../shared/protocols.md``): the top 10 asks, lowest
first, then the top 10 bids, highest first; each level's price and quantity
written as decimal strings at the *instrument's* precision, the ``.`` removed
and the leading zeros stripped, concatenated; CRC32 of that text as an
unsigned 32-bit int.  The strings are rendered from the book's exact ints by
:func:`engine.num.render`, so the precision is an input: Kraken prints it on
the wire (v1 strings such as ``"0.000022900"``, v2 JSON numbers "containing
full precision"), the codecs read it from a book snapshot's numbers
(:attr:`engine.events.BookSnapshot.price_decimals`) and the sync rule keeps it
with the book (:class:`engine.book_sync.KrakenRule`).

The book path (:func:`checksum`, after every book message) runs the text and
CRC in C where ``engine._cksum`` is built: the same rule, walked over the
book's own sorted keys without copying its top, re-rendering only levels that
changed (given the diff just applied, only those it set) and summing the text's
CRC from each level's kept CRC; a differential test holds it to
:func:`checksum_of_levels`, the rule's one definition here.

Also what the two codecs share beyond frames: the depths Kraken accepts,
symbol normalization (``XBT/CHF`` → ``BTC-CHF``), the number and time helpers
(every value through :func:`engine.num.parse` / :func:`~engine.num.parse_json_number`,
every time through :mod:`engine.timefmt`) and the :class:`Bad` → DecodeError
plumbing.  Must not: do I/O, keep state of its own (what the C path keeps for a book is
the book's: ``Book.memo``), or know a frame's layout (the codecs do).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from engine import num
from engine.book import Book
from engine.codecs.base import (
    ConnLimits,
    Resubscribe,
    VenueDefaults,
    decode_error,
    instrument_name,
    internal_reason,
    matcher,
    split_pair,
)
from engine.num import decimals_of, render
from engine.timefmt import format_ns, parse_epoch_s, parse_iso

try:  # the optional C text/CRC path (engine/_cksum.c); the Python rule below runs without it
    from engine import _cksum

    _cksum.configure(Book)
except ImportError:  # pragma: no cover - a build without a C compiler
    _cksum = None  # type: ignore[assignment]

__all__ = [
    "CHECKSUM_LEVELS",
    "DEPTHS",
    "checksum",
    "checksum_of_levels",
    "matches",
    "normalized",
    "token_decimals",
    "max_decimals",
    "Bad",
    "decode_error",
    "number",
    "json_number",
    "epoch_s_ms",
    "iso_ms",
    "ms_epoch_s",
    "ms_iso",
    "by_channel",
    "KrakenCodec",
]

#: levels a side the checksum covers, whatever the subscribed depth
CHECKSUM_LEVELS = 10
#: the book depths Kraken accepts in a subscription (v1 and v2)
DEPTHS = (10, 25, 100, 500, 1000)

#: Kraken's own asset codes → the common ones (``XBT`` is bitcoin, ``XDG`` dogecoin)
_ASSETS = {"XBT": "BTC", "XDG": "DOGE"}


def _digits(units: int, decimals: int) -> str:
    """``render(units, decimals)`` with the point removed and the leading zeros stripped."""
    return render(units, decimals).replace(".", "").lstrip("0")


def checksum_of_levels(
    bids: Iterable[tuple[int, int]],
    asks: Iterable[tuple[int, int]],
    price_decimals: int | None,
    qty_decimals: int | None,
) -> int:
    """The checksum of best-first ``bids`` and ``asks`` (only the first 10 a side count).

    The rule's one definition (:func:`checksum` runs it in C where it can, to the same result).
    A precision of None is one not known (a snapshot without levels tells none): only empty
    sides have a checksum then (the empty text's, 0).

    Raises:
        ValueError: a value has more decimals than the precision given (not Kraken's book), or
            there is a level and the precision is not known.
    """
    top = list(asks)[:CHECKSUM_LEVELS] + list(bids)[:CHECKSUM_LEVELS]
    if top and (price_decimals is None or qty_decimals is None):
        raise ValueError("a level, and the instrument's precision is not known")
    text = "".join(_digits(p, price_decimals) + _digits(q, qty_decimals) for p, q in top)
    return zlib.crc32(text.encode("ascii"))


def _checksum(
    book: Book,
    price_decimals: int | None,
    qty_decimals: int | None,
    bids: Sequence[tuple[int, int]] | None = None,
    asks: Sequence[tuple[int, int]] | None = None,
) -> int:
    """:func:`checksum` in Python: the rule of ``book.top(10)`` (the hint is not needed)."""
    top_bids, top_asks = book.top(CHECKSUM_LEVELS)
    return checksum_of_levels(top_bids, top_asks, price_decimals, qty_decimals)


#: ``checksum(book, price_decimals, qty_decimals[, bids, asks]) -> int``: the checksum of
#: ``book`` as Kraken computes it at the instrument's precision.  ``bids, asks``, when given,
#: must be the levels the book's last :meth:`Book.apply` set (the diff just applied): with the
#: book's memo of the version before, only those levels are read again.  Where
#: ``engine._cksum`` is built this is a ``BookChecksum``'s ``checksum`` method (a builtin: CPython
#: 3.11 specializes calls to it): it reads the book's top in place (its rendered top kept in
#: ``book.memo``), answers exactly what :func:`checksum_of_levels`
#: of ``book.top(10)`` answers, and hands whatever it does not fully handle to
#: :func:`_checksum`, the same rule in Python.  Raises ValueError where a value has more
#: decimals than the precision given (not Kraken's book), or where the book has a level and the
#: precision is None (not known).
_book_checksum = (
    None if _cksum is None else _cksum.BookChecksum("kraken", CHECKSUM_LEVELS, num.SCALE, _checksum)
)
checksum: Callable[..., int] = _checksum if _book_checksum is None else _book_checksum.checksum


#: ``matches(want, book, price_decimals, qty_decimals[, bids, asks]) -> bool``:
#: ``checksum(book, ...) == want``, the sync rule's test (:class:`engine.book_sync.KrakenRule`).
#: In C (the same ``BookChecksum``'s ``matches`` method) no int is made for the checksum when
#: ``want`` is one; it raises where :func:`checksum` raises.
matches: Callable[..., bool] = (
    matcher(checksum) if _book_checksum is None else _book_checksum.matches
)


def normalized(symbol: str) -> str:
    """``"XBT/CHF"`` → ``"BTC-CHF"``: Kraken's ``BASE/QUOTE`` in the engine's ``BASE-QUOTE`` form
    (a glued name, as the simulator's ``BTCUSDT``, is split by its quote suffix)."""
    base, sep, quote = symbol.upper().partition("/")
    if not sep:
        base, quote = split_pair(symbol) or ("", "")
    if not base or not quote or "-" in base + quote:
        return symbol.upper()
    return instrument_name(_ASSETS.get(base, base), _ASSETS.get(quote, quote))


def token_decimals(token: str) -> int:
    """Decimals a number token is written with (``"0.000022900"`` → 9, ``"1.5e-3"`` → 4)."""
    mant, e, exp = token.replace("E", "e").partition("e")
    d = decimals_of(mant)
    if e:
        try:
            d -= int(exp)
        except ValueError:
            return d
    return max(d, 0)


def max_decimals(tokens: Iterable[str]) -> int | None:
    """The most decimals among ``tokens`` (None if there are none): an instrument's precision."""
    best: int | None = None
    for t in tokens:
        d = token_decimals(t)
        if best is None or d > best:
            best = d
    return best


# --------------------------------------------------------------------------- codec plumbing


class Bad(Exception):
    """A frame the codec cannot read; the message says what and where (becomes a DecodeError)."""


def _units(parse: Callable[[str], int], text: str, where: str) -> int:
    try:
        v = parse(text)
    except num.PrecisionError as exc:
        raise Bad(f"{where}: {exc}") from None
    if v < 0:
        raise Bad(f"{where}: negative value {text[:40]!r}")
    return v


def number(s: object, where: str) -> int:
    """A decimal string (v1) → units, non-negative (:func:`engine.num.parse`)."""
    if not isinstance(s, str):
        raise Bad(f"{where}: expected a decimal string, got {type(s).__name__}")
    return _units(num.parse, s, where)


def json_number(tok: object, where: str) -> int:
    """A JSON number token (v2; its text, as the decoder's float hook hands it over) → units."""
    if isinstance(tok, int) and not isinstance(tok, bool):
        tok = str(tok)
    if not isinstance(tok, str):
        raise Bad(f"{where}: expected a number, got {type(tok).__name__}")
    return _units(num.parse_json_number, tok, where)


def epoch_s_ms(s: object, where: str) -> int:
    """v1 times (``"1618678123.481570"``, epoch seconds) → epoch ms, truncated."""
    if not isinstance(s, str):
        raise Bad(f"{where}: expected epoch seconds as a string, got {type(s).__name__}")
    try:
        return parse_epoch_s(s) // 1_000_000
    except ValueError:
        raise Bad(f"{where}: not epoch seconds: {s[:40]!r}") from None


def iso_ms(s: object, where: str) -> int:
    """v2 times (RFC 3339, ``"2023-09-25T07:49:37.708706Z"``) → epoch ms, truncated."""
    if not isinstance(s, str):
        raise Bad(f"{where}: expected an RFC 3339 time, got {type(s).__name__}")
    try:
        return parse_iso(s) // 1_000_000
    except ValueError:
        raise Bad(f"{where}: not an RFC 3339 time: {s[:40]!r}") from None


def ms_epoch_s(ms: int) -> str:
    """epoch ms → v1's time string (``"1618678123.481000"``); :func:`epoch_s_ms` reads it back."""
    return f"{ms // 1000}.{ms % 1000:03d}000"


def ms_iso(ms: int) -> str:
    """epoch ms → v2's time string (``"2021-04-17T16:48:53.481000Z"``); :func:`iso_ms` reads it."""
    return format_ns(ms * 1_000_000, 6)


def by_channel(streams: Sequence[str], channels: Sequence[str]) -> dict[str, list[str]]:
    """``["book:A", "trade:A", "book:B"]`` → ``{"book": ["A", "B"], "trade": ["A"]}``."""
    out: dict[str, list[str]] = {}
    for s in streams:
        ch, sep, sym = s.partition(":")
        if not sep or ch not in channels or not sym:
            raise ValueError(f"not a Kraken stream {s!r}: want channel:SYMBOL, e.g. book:BTC/USD")
        out.setdefault(ch, []).append(sym)
    return out


class KrakenCodec(VenueDefaults):
    """What both dialects' codecs share (:class:`engine.codecs.base.Codec`): the never-raising
    ``decode`` around the dialect's ``_message(seq, recv_ns, msg)`` (one decoded JSON value →
    events, :class:`Bad` if it cannot), and the outbound side.  Each dialect supplies
    ``name``, ``channels``, ``depth``, ``keepalive``, its JSON decoder ``_json`` and
    ``subscribe_messages(streams, request_id, method)``.

    Kraken takes every subscription by message after connecting (one message per channel);
    it has no REST snapshot the runtime could use, so a book is resynced by unsubscribing
    and subscribing its ``book`` stream again (the fresh in-stream snapshot resets it), and
    verification requests go unanswered: the checksum after every message vouches instead.
    """

    name = "kraken"
    channels: tuple[str, ...] = ()
    depth: int = 10
    default_channels: tuple[str, ...] = ("book", "trade")
    rest_base = "https://api.kraken.com"
    #: Kraken publishes no per-second control limit for public feeds; stay polite
    limits = ConnLimits(
        streams_in_url=False, max_per_subscribe=50, max_per_conn=200, control_per_window=5
    )
    _json: msgspec.json.Decoder[Any]

    def decode(
        self, seq: int, recv_ns: int, kind: str, source: str, payload: bytes
    ) -> Sequence[Any]:
        """Events of one journaled inbound frame; never raises (a bad one is a DecodeError)."""
        try:
            if kind != "text" and kind != "binary":
                raise Bad(f"{self.name} codec decodes text frames, not {kind!r}")
            try:
                msg = self._json.decode(payload)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                raise Bad(f"invalid JSON: {exc}") from None
            return self._message(seq, recv_ns, msg)
        except Bad as exc:
            reason = str(exc)
        except Exception as exc:  # never raise out of a codec: a bug here is still just an event
            reason = internal_reason(exc)
        return [decode_error(seq, recv_ns, source, reason, payload)]

    def _message(self, seq: int, recv_ns: int, msg: Any) -> list[Any]:  # pragma: no cover
        raise NotImplementedError

    def subscribe_messages(
        self, streams: Sequence[str], request_id: int, method: str = "subscribe"
    ) -> list[bytes]:  # pragma: no cover - interface
        raise NotImplementedError

    def streams(self, symbols: Sequence[str], channels: Sequence[str]) -> list[str]:
        """``channel:PAIR`` names (``book:BTC/USD``) for symbols × channels."""
        for ch in channels:
            if ch not in self.channels:
                raise ValueError(
                    f"unknown Kraken channel {ch!r}; valid: {', '.join(self.channels)}"
                )
        return [f"{ch}:{s.upper()}" for ch in channels for s in symbols]

    def ws_url(self, base_url: str, streams: Sequence[str]) -> str:
        """Kraken takes subscriptions by message: the URL is the endpoint itself."""
        return base_url

    def subscribe(self, streams: Sequence[str], request_id: int) -> list[bytes]:
        """One message per channel, ids ``request_id``, ``request_id + 1`` …"""
        return self.subscribe_messages(streams, request_id)

    def unsubscribe(self, streams: Sequence[str], request_id: int) -> list[bytes]:
        return self.subscribe_messages(streams, request_id, "unsubscribe")

    def resync(
        self, symbol: str, streams: Sequence[str], rest_base: str, limit: int, request_id: int
    ) -> Resubscribe | None:
        """Unsubscribe and subscribe ``symbol``'s book again: Kraken sends a fresh snapshot."""
        book = [s for s in streams if s.upper() == f"BOOK:{symbol.upper()}"]
        if not book:
            return None
        unsub = self.unsubscribe(book, request_id)
        sub = self.subscribe(book, request_id + len(unsub))
        return Resubscribe(tuple(book), tuple(unsub), tuple(sub))

    def normalized(self, symbol: str) -> str:
        return normalized(symbol)
