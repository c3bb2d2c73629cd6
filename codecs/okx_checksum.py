"""OKX's book checksum (the legacy v5 ``books`` CRC32) and OKX's decimal text, once.

Owns: the one definition of the checksum OKX puts on every ``books`` message
(``checksum`` field) and of the text OKX writes a price or size in.  Used by
the sync rule (:class:`engine.book_sync.OkxRule` verifies a book after each
update) and by the OKX codec's encoder (the simulator and the replay server
stamp the frames they send).  Must not: do I/O, keep state beyond a bounded
pure memo, or know about sequence numbers (that is the rule).

The book path (:func:`checksum`, after every update) runs the text and CRC
in C where ``engine._cksum`` is built, over the book's own sorted keys
without copying its top, re-rendering only levels that changed (given the diff
just applied, only those it set; what it keeps is the book's ``Book.memo``) and
summing the text's CRC from each level's kept CRC; a differential test holds it
to :func:`checksum_of_levels`, the rule's one definition here.

The checksum (OKX v5 docs, "Checksum"): take the best 25 bids and the best
25 asks, interleave ``bidPx:bidSz:askPx:askSz:...`` (when one side has fewer
levels, the other goes on alone), join with ``:``, CRC32 the UTF-8 text and
read it as a **signed** 32-bit int.  Vector: ``3366.1:7:3366.8:9:3368:8:3372:8``
→ 831078360.

Where the decimals come from: OKX writes every number in its shortest
decimal form: no trailing zeros, no ``.`` for whole numbers (``"5.16"``,
``"30316"``, ``"0.00684062"``; every one of the ~10,000 number strings of the
real 2022 capture is in that form, and every non-zero checksum in it verifies
this way).  So the text is a function of the exact value alone: :func:`text`
renders the book's int units with :func:`engine.num.render` at exactly the
value's own number of decimals.  No per-instrument precision is needed, no
state is kept, and replay computes the same strings live did.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

from engine import num
from engine.book import Book
from engine.codecs.base import matcher

try:  # the optional C text/CRC path (engine/_cksum.c); the Python rule below runs without it
    from engine import _cksum

    _cksum.configure(Book)
except ImportError:  # pragma: no cover - a build without a C compiler
    _cksum = None  # type: ignore[assignment]

__all__ = ["DEPTH", "text", "checksum", "checksum_of_levels", "matches", "signed32"]

#: levels per side the checksum covers
DEPTH = 25
_MEMO_MAX = 1 << 16
#: units → OKX text: a pure memo of :func:`_render` (a book keeps hitting the same values)
_memo: dict[int, str] = {}
#: (price, qty) → ``"px:sz"``: a pure memo (most top levels are unchanged from one update to the next)
_pairs: dict[tuple[int, int], str] = {}


def _render(units: int) -> str:
    """``units`` at the value's own decimals: ``render(516000000, 2) == "5.16"`` at scale 8."""
    if units % num.ONE == 0:
        return num.render(units, 0)
    frac = abs(units) % num.ONE
    decimals = num.SCALE
    while frac % 10 == 0:
        frac //= 10
        decimals -= 1
    return num.render(units, decimals)


def text(units: int) -> str:
    """The decimal text OKX writes for ``units`` (shortest form: ``"5.16"``, ``"30316"``)."""
    s = _memo.get(units)
    if s is None:
        s = _render(units)
        if len(_memo) >= _MEMO_MAX:
            _memo.clear()
        _memo[units] = s
    return s


def signed32(crc: int) -> int:
    """An unsigned CRC32 read as OKX's signed 32-bit int."""
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def _pair(level: tuple[int, int]) -> str:
    s = _pairs[level] = f"{text(level[0])}:{text(level[1])}"
    if len(_pairs) > _MEMO_MAX:
        _pairs.clear()
    return s


def checksum_of_levels(bids: Sequence[tuple[int, int]], asks: Sequence[tuple[int, int]]) -> int:
    """The checksum of the given ``(price, qty)`` tuples (best first; only the first 25 count)."""
    get = _pairs.get
    b = [get(lv) or _pair(lv) for lv in bids[:DEPTH]]
    a = [get(lv) or _pair(lv) for lv in asks[:DEPTH]]
    if len(b) == len(a):  # the common case: the interleave in C
        s = ":".join(map(":".join, zip(b, a, strict=True)))
    else:
        n = min(len(b), len(a))
        rows = [f"{x}:{y}" for x, y in zip(b[:n], a[:n], strict=True)]
        s = ":".join(rows + b[n:] + a[n:])
    return signed32(zlib.crc32(s.encode()))


def _checksum(
    book: Book,
    bids: Sequence[tuple[int, int]] | None = None,
    asks: Sequence[tuple[int, int]] | None = None,
) -> int:
    """:func:`checksum` in Python: the rule of ``book.top(25)`` (the hint is not needed)."""
    top_bids, top_asks = book.top(DEPTH)
    return checksum_of_levels(top_bids, top_asks)


#: ``checksum(book[, bids, asks]) -> int``: the OKX checksum of ``book`` as it stands (its best
#: 25 levels a side).  ``bids, asks``, when given, must be the levels the book's last
#: :meth:`Book.apply` set (the diff just applied): with the book's memo of the version before,
#: only those levels are read again.  Where ``engine._cksum`` is built this is a
#: ``BookChecksum``'s ``checksum`` method (a builtin: CPython 3.11 specializes calls to it): it
#: reads the book's top in place (its rendered top kept in ``book.memo``), answers exactly what
#: :func:`checksum_of_levels` of ``book.top(25)`` answers, and hands whatever it does not fully
#: handle to :func:`_checksum`, the same rule in Python.
_book_checksum = None if _cksum is None else _cksum.BookChecksum("okx", DEPTH, num.SCALE, _checksum)
checksum: Callable[..., int] = _checksum if _book_checksum is None else _book_checksum.checksum


#: ``matches(want, book[, bids, asks]) -> bool``: ``checksum(book, ...) == want``, the sync
#: rule's test (:class:`engine.book_sync.OkxRule`).  In C (the same ``BookChecksum``'s
#: ``matches`` method) no int is made for the checksum when ``want`` is one.
matches: Callable[..., bool] = (
    matcher(checksum) if _book_checksum is None else _book_checksum.matches
)
