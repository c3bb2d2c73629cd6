"""engine.book: the book structure and its queries against a naive dict-and-sort model.

The model recomputes every query from scratch with sorting and Fractions;
hypothesis drives both with the same random level updates (small price grid,
so levels collide, are removed, re-added) and every query must agree exactly.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import num
from engine.book import Book, LevelDiff


class NaiveBook:
    """Dicts only; every query sorts.  Obviously right, slow."""

    def __init__(self) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}

    def apply(self, bids, asks):
        for d, levels in ((self.bids, bids), (self.asks, asks)):
            for p, q in levels:
                if q:
                    d[p] = q
                else:
                    d.pop(p, None)

    def sorted_bids(self):
        return sorted(self.bids.items(), reverse=True)

    def sorted_asks(self):
        return sorted(self.asks.items())

    def mid(self):
        if not self.bids or not self.asks:
            return None
        return Fraction(max(self.bids) + min(self.asks), 2)

    def imbalance(self, n):
        bv = sum(q for _, q in self.sorted_bids()[:n])
        av = sum(q for _, q in self.sorted_asks()[:n])
        return None if bv + av == 0 else Fraction(bv - av, bv + av)

    def depth_within(self, d):
        m = self.mid()
        if m is None:
            return None
        b = [(p, q) for p, q in self.bids.items() if m - p <= d]
        a = [(p, q) for p, q in self.asks.items() if p - m <= d]
        return len(b), sum(q for _, q in b), len(a), sum(q for _, q in a)

    def execution(self, side, qty):
        levels = self.sorted_asks() if side == "buy" else self.sorted_bids()
        left, notional, worst, n = qty, 0, None, 0
        for p, q in levels:
            if not left:
                break
            t = min(left, q)
            notional += t * p
            left -= t
            worst = p
            n += 1
        return qty - left, notional, worst, n


prices = st.integers(min_value=1, max_value=40)
qtys = st.integers(min_value=0, max_value=5) | st.integers(min_value=0, max_value=10**12)
levels = st.lists(st.tuples(prices, qtys), max_size=8)
updates = st.lists(st.tuples(levels, levels), min_size=1, max_size=25)


def check_queries(book: Book, model: NaiveBook) -> None:
    assert book.bids == model.bids and book.asks == model.asks
    mb, ma = model.sorted_bids(), model.sorted_asks()
    assert book.best_bid() == (mb[0] if mb else None)
    assert book.best_ask() == (ma[0] if ma else None)
    for n in (0, 1, 3, 50):
        assert book.top(n) == (mb[:n], ma[:n])
        assert book.imbalance(n) == model.imbalance(n)
    assert book.levels() == (mb, ma)
    assert book.mid() == model.mid()
    if mb and ma:
        assert book.spread() == ma[0][0] - mb[0][0]
        assert book.mid_x2() == mb[0][0] + ma[0][0]
        assert book.crossed() == (mb[0][0] >= ma[0][0])
    else:
        assert book.spread() is None and book.mid_x2() is None and not book.crossed()
    for d in (0, 1, 2, 7, 100):
        got = book.depth_within(d)
        want = model.depth_within(d)
        if want is None:
            assert got is None
        else:
            assert got is not None
            assert (got.bid_levels, got.bid_volume, got.ask_levels, got.ask_volume) == want
    for side in ("buy", "sell"):
        for qty in (1, 3, 10**12, 10**14):
            ex = book.execution_price(side, qty)
            filled, notional, worst, n = model.execution(side, qty)
            assert (ex.filled, ex.notional, ex.worst_price, ex.levels) == (
                filled,
                notional,
                worst,
                n,
            )
            assert ex.complete == (filled == qty) and ex.shortfall == qty - filled
            if filled:
                assert ex.avg_price == Fraction(notional, filled)
                if ex.mid is not None:
                    sign = 1 if side == "buy" else -1
                    assert ex.slippage == sign * (ex.avg_price - ex.mid)
            else:
                assert ex.avg_price is None and ex.slippage is None


@given(updates)
def test_queries_agree_with_naive_model(ups):
    book, model = Book(), NaiveBook()
    for i, (b, a) in enumerate(ups):
        book.apply(b, a, i)
        model.apply(b, a)
        check_queries(book, model)
        assert book.last_id == i
    # building from levels, copying and comparing stay consistent with incremental updates
    bids, asks = book.levels()
    rebuilt = Book.from_levels(book.last_id, bids, asks)
    assert rebuilt == book and book.copy() == book
    assert book.diff_range(rebuilt) == []


@given(updates, updates, st.none() | prices, st.none() | prices)
def test_diff_range_lists_exactly_the_differing_levels(u1, u2, floor, ceiling):
    a, b = Book(), Book()
    for bids, asks in u1:
        a.apply(bids, asks, 1)
    for bids, asks in u2:
        b.apply(bids, asks, 1)
    want = []
    for side, x, y, keep in (
        ("bid", a.bids, b.bids, lambda p: floor is None or p >= floor),
        ("ask", a.asks, b.asks, lambda p: ceiling is None or p <= ceiling),
    ):
        for p in sorted(set(x) | set(y)):
            if keep(p) and x.get(p, 0) != y.get(p, 0):
                want.append(LevelDiff(side, p, x.get(p, 0), y.get(p, 0)))
    assert a.diff_range(b, floor, ceiling) == want


def test_mid_is_exact_half_unit_and_queries_on_a_known_book():
    # bids 100 (qty 5), 99 (qty 10); asks 103 (qty 2), 105 (qty 4)
    book = Book.from_levels(7, [(100, 5), (99, 10)], [(103, 2), (105, 4)])
    assert book.mid() == Fraction(203, 2) and book.mid_x2() == 203
    assert book.spread() == 3
    assert book.imbalance(1) == Fraction(3, 7)
    assert book.imbalance(2) == Fraction(15 - 6, 21)
    dw = book.depth_within(2)  # mid 101.5: bids >= 99.5, asks <= 103.5
    assert (dw.bid_levels, dw.bid_volume, dw.ask_levels, dw.ask_volume) == (1, 5, 1, 2)
    ex = book.execution_price("buy", 4)  # 2 @ 103 + 2 @ 105
    assert ex.complete and ex.avg_price == Fraction(416, 4) and ex.worst_price == 105
    assert ex.slippage == Fraction(104) - Fraction(203, 2)
    assert ex.slippage_bps == ex.slippage * 10_000 / Fraction(203, 2)


def test_execution_price_reports_insufficient_liquidity_clearly():
    book = Book.from_levels(1, [(100, 5)], [(103, 2)])
    ex = book.execution_price("sell", 8)
    assert not ex.complete and ex.filled == 5 and ex.shortfall == 3
    assert ex.avg_price == 100 and ex.worst_price == 100 and ex.levels == 1
    empty = Book().execution_price("buy", 1)
    assert not empty.complete and empty.filled == 0 and empty.avg_price is None
    assert empty.mid is None and empty.slippage is None
    with pytest.raises(ValueError, match="side must be"):
        book.execution_price("bid", 1)
    with pytest.raises(ValueError, match="qty must be"):
        book.execution_price("buy", 0)


def test_removing_absent_level_is_normal_and_zero_qty_never_stored():
    book = Book.from_levels(1, [(100, 0), (99, 1)], [(101, 0)])
    assert book.bids == {99: 1} and book.asks == {}
    book.apply([(50, 0), (99, 0)], [(200, 0)], 2)
    assert len(book) == 0 and book.best_bid() is None and book.best_ask() is None


def test_ladder_shows_asks_above_bids_with_bars():
    book = Book.from_levels(1, [(num.ONE, 2 * num.ONE)], [(num.parse("1.01"), num.ONE)])
    text = book.ladder(n=5, width=10, decimals=2)
    lines = text.splitlines()
    assert lines[0].startswith("ask") and "1.01" in lines[0] and lines[0].endswith("█" * 5)
    assert "spread 0.01" in lines[1]
    assert lines[2].startswith("bid") and "1.00" in lines[2] and lines[2].endswith("█" * 10)
