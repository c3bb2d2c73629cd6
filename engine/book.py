"""One symbol's order book at exact int prices, and the analytics queries on it.

Owns: the book data structure (levels set by absolute quantity, 0 removes),
best bid/ask, and read-only queries — spread, mid, imbalance, top-N,
``depth_within``, ``execution_price``, a text ladder — plus the range
comparison the drift check needs.  Must not: know about update ids' meaning,
sync rules, events or outputs (that is :mod:`engine.book_sync` and
:mod:`engine.book_reducer`); do I/O; use floats for anything but the ladder's
bar lengths.

Structure (chosen by measurement, see ``bench/book.py``): per side a ``dict``
price → qty plus a sorted ``list`` of keys maintained with :mod:`bisect`.
Bids are keyed by price, asks by *negated* price, so on both sides the best
level is the list's **last** element: the levels that change most (near the
top) are inserted/removed at the end of the list, where ``list.insert`` moves
almost nothing.  A real Binance diff touches 2–8 levels, most of them already
present (a dict hit, no list work).  The ``sortedcontainers`` approach and a
plain dict re-sorted per query were both slower on the real frames.

Exactness: prices and quantities are ints in units of 1e-18
(:mod:`engine.num`).  The mid of two prices can be half a unit, so the mid is
returned as a :class:`fractions.Fraction` (and :meth:`Book.mid_x2` gives the
exact int ``bid + ask`` in half-units); averages and ratios are Fractions too.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from fractions import Fraction

from attrs import frozen

from engine.num import render

__all__ = ["Book", "Execution", "DepthWithin", "LevelDiff"]


@frozen
class Execution:
    """What walking the book for ``qty`` would cost (``execution_price``).

    ``complete`` is False when the side holds less than ``qty``: then
    ``filled`` is everything available and ``shortfall = qty - filled``; the
    averages describe the partial fill (None if nothing at all was available).
    ``notional`` is Σ price·qty in units of 1e-36 (exact).  ``slippage`` is how
    much worse than mid the average is, in price units (positive = worse for
    the taker, on both sides); ``slippage_bps`` the same relative to mid ×1e4.
    """

    side: str
    qty: int
    filled: int
    shortfall: int
    complete: bool
    levels: int
    notional: int
    avg_price: Fraction | None
    worst_price: int | None
    mid: Fraction | None
    slippage: Fraction | None
    slippage_bps: Fraction | None


@frozen
class DepthWithin:
    """Levels and volume whose price lies within ``distance`` of mid (inclusive), per side."""

    distance: int
    mid: Fraction
    bid_levels: int
    bid_volume: int
    ask_levels: int
    ask_volume: int


@frozen
class LevelDiff:
    """One level where two books disagree: ``ours``/``theirs`` qty (0 = absent)."""

    side: str
    price: int
    ours: int
    theirs: int


class Book:
    """Price levels of one symbol at update id ``last_id``.

    ``bids``/``asks`` are dicts price → qty (read them, never write them:
    the sorted key lists must stay in step — use :meth:`apply`).
    """

    __slots__ = ("bids", "asks", "_bk", "_ak", "last_id", "version", "memo")

    def __init__(self, last_id: int = 0) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self._bk: list[int] = []  # bid prices ascending: best = [-1]
        self._ak: list[int] = []  # negated ask prices ascending: best = -[-1]
        self.last_id = last_id
        #: counts :meth:`apply` calls, the only way a level's qty changes (:meth:`truncate`
        #: only removes levels): a reader that knows the version it last saw and the levels one
        #: apply since set need not re-read the others (the checksums' C path); never
        #: compared or saved
        self.version = 0
        #: what a reader of the top keeps with this book to go faster next time (the
        #: checksums' rendered levels, ``engine._cksum.Memo``): keyed on the levels' own
        #: objects, so no change to the book can make it wrong; never copied, compared or
        #: checkpointed (a restored book starts without it)
        self.memo: object = None

    # ------------------------------------------------------------------ building

    @classmethod
    def from_levels(
        cls, last_id: int, bids: Iterable[tuple[int, int]], asks: Iterable[tuple[int, int]]
    ) -> Book:
        """A book holding the non-zero levels given (a snapshot)."""
        b = cls(last_id)
        b.bids = {p: q for p, q in bids if q}
        b.asks = {p: q for p, q in asks if q}
        b._bk = sorted(b.bids)
        b._ak = sorted(-p for p in b.asks)
        return b

    def copy(self) -> Book:
        b = Book(self.last_id)
        b.bids = dict(self.bids)
        b.asks = dict(self.asks)
        b._bk = list(self._bk)
        b._ak = list(self._ak)
        return b

    def apply(
        self, bids: Iterable[tuple[int, int]], asks: Iterable[tuple[int, int]], last_id: int
    ) -> bool:
        """Set each level's absolute quantity (0 removes; removing an absent level is normal).

        Returns whether the book is crossed afterwards (:meth:`crossed`), the
        check every update is followed by, for free here.
        """
        # The engine's hottest loop, so one inlined loop per side (asks keyed by -price):
        # a level already present is one dict store; only new/removed levels touch the list.
        if bids:
            d = self.bids
            keys = self._bk
            for p, q in bids:
                if q:
                    if p not in d:
                        insort(keys, p)
                    d[p] = q
                elif p in d:
                    del d[p]
                    del keys[bisect_left(keys, p)]
        if asks:
            d = self.asks
            keys = self._ak
            for p, q in asks:
                if q:
                    if p not in d:
                        insort(keys, -p)
                    d[p] = q
                elif p in d:
                    del d[p]
                    del keys[bisect_left(keys, -p)]
        self.last_id = last_id
        self.version += 1
        bk = self._bk
        ak = self._ak
        return bool(bk and ak and bk[-1] >= -ak[-1])

    def truncate(self, depth: int) -> None:
        """Keep only the best ``depth`` levels a side (Kraken sends no removal for a level
        that an insert pushed out of the subscribed depth)."""
        k = len(self._bk) - depth
        if k > 0:
            d = self.bids
            for p in self._bk[:k]:
                del d[p]
            del self._bk[:k]
        k = len(self._ak) - depth
        if k > 0:
            d = self.asks
            for p in self._ak[:k]:
                del d[-p]
            del self._ak[:k]

    # ------------------------------------------------------------------ top of book

    def best_bid(self) -> tuple[int, int] | None:
        if not self._bk:
            return None
        p = self._bk[-1]
        return p, self.bids[p]

    def best_ask(self) -> tuple[int, int] | None:
        if not self._ak:
            return None
        p = -self._ak[-1]
        return p, self.asks[p]

    def crossed(self) -> bool:
        """Best bid ≥ best ask (both sides present)."""
        return bool(self._bk and self._ak and self._bk[-1] >= -self._ak[-1])

    def spread(self) -> int | None:
        """Best ask − best bid in price units (None if a side is empty; ≤ 0 if crossed)."""
        if not self._bk or not self._ak:
            return None
        return -self._ak[-1] - self._bk[-1]

    def mid_x2(self) -> int | None:
        """best bid + best ask: twice the mid, exact in half-units."""
        if not self._bk or not self._ak:
            return None
        return self._bk[-1] - self._ak[-1]

    def mid(self) -> Fraction | None:
        """(best bid + best ask) / 2 in price units, exact (may be a half unit)."""
        m2 = self.mid_x2()
        return None if m2 is None else Fraction(m2, 2)

    # ------------------------------------------------------------------ depth queries

    def top(self, n: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The best ``n`` levels per side, best first: ``(bids, asks)``."""
        bids = [(p, self.bids[p]) for p in reversed(self._bk[-n:])] if n > 0 else []
        asks = [(-k, self.asks[-k]) for k in reversed(self._ak[-n:])] if n > 0 else []
        return bids, asks

    def sorted_keys(self) -> tuple[list[int], list[int]]:
        """The sorted key lists behind :meth:`top`, not copies: bid prices ascending and
        *negated* ask prices ascending (the best level is last on both).  Read-only: for a
        reader of the top that must not copy it (the checksums' C path, ``engine._cksum``)."""
        return self._bk, self._ak

    def levels(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Every level, best first: ``(bids, asks)``."""
        return self.top(max(len(self._bk), len(self._ak)))

    def imbalance(self, n: int) -> Fraction | None:
        """(bid volume − ask volume) / (bid volume + ask volume) over the top ``n`` levels.

        In [-1, 1]; None when both sides hold nothing in those levels.
        """
        bids, asks = self.top(n)
        bv = sum(q for _, q in bids)
        av = sum(q for _, q in asks)
        if bv + av == 0:
            return None
        return Fraction(bv - av, bv + av)

    def depth_within(self, distance: int) -> DepthWithin | None:
        """Levels and volume priced within ``distance`` of mid (inclusive) on each side.

        None when a side is empty (no mid).  Bids counted are those with
        price ≥ mid − distance, asks those with price ≤ mid + distance; exact
        with the half-unit mid.
        """
        m2 = self.mid_x2()
        if m2 is None:
            return None
        # bid p counts iff 2p >= m2 - 2d  <=>  p >= ceil((m2 - 2d) / 2)
        lo = -((2 * distance - m2) // 2)
        i = bisect_left(self._bk, lo)
        bid_keys = self._bk[i:]
        # ask p counts iff 2p <= m2 + 2d  <=>  p <= floor((m2 + 2d) / 2)  <=>  -p >= -floor(..)
        hi = (m2 + 2 * distance) // 2
        j = bisect_left(self._ak, -hi)
        ask_keys = self._ak[j:]
        return DepthWithin(
            distance=distance,
            mid=Fraction(m2, 2),
            bid_levels=len(bid_keys),
            bid_volume=sum(self.bids[p] for p in bid_keys),
            ask_levels=len(ask_keys),
            ask_volume=sum(self.asks[-k] for k in ask_keys),
        )

    def execution_price(self, side: str, qty: int) -> Execution:
        """Walk the book as a market order of ``qty`` would: ``side`` "buy" takes asks, "sell" bids.

        Raises:
            ValueError: ``side`` is not "buy"/"sell" or ``qty`` ≤ 0 (our misuse).
        """
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', not {side!r}")
        if qty <= 0:
            raise ValueError(f"qty must be > 0 units, not {qty}")
        if side == "buy":
            prices: Iterable[int] = (-k for k in reversed(self._ak))
            book = self.asks
        else:
            prices = reversed(self._bk)
            book = self.bids
        left = qty
        notional = 0
        worst = None
        n = 0
        for p in prices:
            take = min(left, book[p])
            notional += take * p
            left -= take
            worst = p
            n += 1
            if not left:
                break
        filled = qty - left
        mid = self.mid()
        avg = Fraction(notional, filled) if filled else None
        slip = bps = None
        if avg is not None and mid is not None:
            slip = avg - mid if side == "buy" else mid - avg
            bps = slip * 10_000 / mid if mid else None
        return Execution(
            side=side,
            qty=qty,
            filled=filled,
            shortfall=left,
            complete=left == 0,
            levels=n,
            notional=notional,
            avg_price=avg,
            worst_price=worst,
            mid=mid,
            slippage=slip,
            slippage_bps=bps,
        )

    def ladder(self, n: int = 10, width: int = 40, decimals: int = 8) -> str:
        """A text ladder of the top ``n`` levels per side, asks above bids, with qty bars.

        Bars are scaled to the largest qty shown (the only float use here:
        a bar length, never a value).
        """
        bids, asks = self.top(n)
        biggest = max([q for _, q in bids] + [q for _, q in asks] + [1])
        rows = []

        def row(tag: str, p: int, q: int) -> str:
            bar = "█" * max(1, round(width * q / biggest)) if q else ""
            return f"{tag} {render(p, decimals):>20} {render(q, 8):>22} {bar}"

        for p, q in reversed(asks):
            rows.append(row("ask", p, q))
        spread = self.spread()
        rows.append(
            f"{'-' * 8} spread {render(spread, decimals) if spread is not None else '—'} {'-' * 8}"
        )
        for p, q in bids:
            rows.append(row("bid", p, q))
        return "\n".join(rows)

    # ------------------------------------------------------------------ comparison

    def diff_range(
        self, other: Book, bid_floor: int | None = None, ask_ceiling: int | None = None
    ) -> list[LevelDiff]:
        """Levels that differ between ``self`` (ours) and ``other`` (theirs) in a price range.

        Only bids priced ≥ ``bid_floor`` and asks priced ≤ ``ask_ceiling`` are
        compared (None = no limit): a depth-limited snapshot says nothing
        about deeper levels.  Sorted by side then price, so the result is
        deterministic.
        """
        out: list[LevelDiff] = []
        for side, ours, theirs, keep in (
            ("bid", self.bids, other.bids, (lambda p: bid_floor is None or p >= bid_floor)),
            ("ask", self.asks, other.asks, (lambda p: ask_ceiling is None or p <= ask_ceiling)),
        ):
            for p in sorted(set(ours) | set(theirs)):
                if not keep(p):
                    continue
                a, b = ours.get(p, 0), theirs.get(p, 0)
                if a != b:
                    out.append(LevelDiff(side, p, a, b))
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Book):
            return NotImplemented
        return self.last_id == other.last_id and self.bids == other.bids and self.asks == other.asks

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)

    def __repr__(self) -> str:
        return (
            f"Book(last_id={self.last_id}, bids={len(self.bids)}, asks={len(self.asks)}, "
            f"best_bid={self.best_bid()}, best_ask={self.best_ask()})"
        )
