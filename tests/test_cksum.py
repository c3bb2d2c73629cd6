"""The book checksums' C path (``engine._cksum``) against their Python definitions.

``kraken_book.checksum`` and ``okx_checksum.checksum`` run the text and CRC32 in C
over the book's own sorted keys, each book keeping its rendered top in a memo
(``Book.memo``); the rules themselves are defined once, in Python
(``checksum_of_levels`` of ``book.top(n)``).  Differentially, by hypothesis:
the book path answers exactly what the Python rule answers (or raises the same
``ValueError``) on random books, and goes on doing so while one book is changed
message after message (the memo reused, levels entering, leaving, changing,
both sides short of the checksum's depth).  The C helper declines, with None,
whatever it does not fully handle, and the Python rule answers then.
"""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import num, serde
from engine.book import Book
from engine.book_sync import SYNCED, Sync
from engine.codecs import kraken_book, okx_checksum
from engine.codecs.base import matcher

cksum = pytest.importorskip("engine._cksum", reason="the optional C checksum helper is not built")

P = num.parse

#: values: small ones, huge ones (beyond 64 bits of units, up to num.MAX), decimals from 0 to SCALE
_decimals = st.integers(0, num.SCALE)
_value = st.one_of(
    st.builds(
        lambda w, d, f: w * num.ONE + f * 10 ** (num.SCALE - d),
        st.integers(0, 30),
        _decimals,
        st.integers(0, 9),
    ),  # fmt: skip
    st.integers(0, num.MAX),
    st.sampled_from([P("0.5"), P("1"), P("30316.1"), P("0.00000001"), num.MAX]),
)
#: prices mostly from a few (so diffs hit existing levels: qty changes, removals, the worst kept
#: level), the rest anywhere
_PRICES = [P("0.5") * i for i in range(1, 31)] + [num.MAX - i for i in range(5)]
_price = st.one_of(st.sampled_from(_PRICES), st.sampled_from(_PRICES), _value)
_levels = st.lists(st.tuples(_price, st.one_of(st.just(0), _value)), max_size=40)
#: a diff: a few levels, as the exchanges send (so a side is often left as it was)
_diff = st.lists(st.tuples(_price, st.one_of(st.just(0), _value)), max_size=4)
#: Kraken's precision: mostly one every value renders at (≥ SCALE), else any (then most raise)
_precision = st.one_of(st.integers(num.SCALE, 24), st.integers(num.SCALE, 24), st.integers(0, 24))


def _kraken_py(book: Book, pd: int, qd: int) -> int | None:
    bids, asks = book.top(kraken_book.CHECKSUM_LEVELS)
    try:
        return kraken_book.checksum_of_levels(bids, asks, pd, qd)
    except ValueError:
        return None


def _kraken_book_path(book: Book, pd: int, qd: int, change=None) -> int | None:
    try:
        return kraken_book.checksum(book, pd, qd, *(change or ()))
    except ValueError:
        return None


def _okx_py(book: Book) -> int:
    bids, asks = book.top(okx_checksum.DEPTH)
    return okx_checksum.checksum_of_levels(bids, asks)


def _both(book: Book, pd: int, qd: int, change=None, okx: Book | None = None) -> None:
    """Kraken's checksum of ``book`` and OKX's of ``okx`` (a book's memo is of one rule:
    the same levels in two books, so each memo carries over from message to message)."""
    assert _kraken_book_path(book, pd, qd, change) == _kraken_py(book, pd, qd)
    okx = book if okx is None else okx
    assert okx_checksum.checksum(okx, *(change or ())) == _okx_py(okx)


@given(_levels, _levels, _precision, _precision)
def test_the_book_path_answers_what_the_python_rule_answers(bids, asks, pd, qd):
    _both(Book.from_levels(1, bids, asks), pd, qd)


@given(
    _levels,
    _levels,
    st.lists(st.tuples(_diff, _diff, st.sampled_from(["hint", "hint", "none", "unchecked"]))),
    _precision,
    _precision,
)
def test_a_book_changed_message_after_message_keeps_answering_the_same(bids, asks, diffs, pd, qd):
    """After each apply (and a truncation now and then), with the change as a hint, without
    one, or after an apply nobody checked (the memo is then two versions behind the hint)."""
    book, okx = Book.from_levels(1, bids, asks), Book.from_levels(1, bids, asks)
    _both(book, pd, qd, None, okx)
    for i, (b, a, how) in enumerate(diffs, 2):
        for x in (book, okx):
            x.apply(b, a, i)
            if i % 3 == 0:
                x.truncate(12)
        if how == "unchecked":
            continue
        _both(book, pd, qd, (b, a) if how == "hint" else None, okx)
        _both(book, pd, qd, None, okx)  # asked again at the same version: the same answer
        if i % 4 == 0:  # the precision changes: the memo cannot answer for another precision
            pd, qd = qd, pd


@given(_levels, _levels, st.data(), _precision, _precision)
def test_one_level_a_message_as_the_venues_send_it(bids, asks, data, pd, qd):
    """The steady case: each message sets or removes one level of one side (a qty changed, a
    level gone and the next one joining the top, a new level pushing the last one out, a level
    below the top), the book truncated now and then to about the checksum's depth.  These are
    the changes the C memo patches in place (its one touched rank) instead of walking the side;
    it must answer what the Python rule answers.  (A patch that moves the ranks below a removed
    level one too few fails here and passes the mixed-diff test above.)"""
    book, okx = Book.from_levels(1, bids, asks), Book.from_levels(1, bids, asks)
    _both(book, pd, qd, None, okx)
    for i in range(2, data.draw(st.integers(2, 60))):
        bid = data.draw(st.booleans())
        side = sorted(book.bids, reverse=True) if bid else sorted(book.asks)
        near = side[:12]  # mostly a level of the top (or just below it): the venues' case
        price = data.draw(
            st.sampled_from(near) if near and data.draw(st.integers(0, 3)) else _price
        )
        level = (price, data.draw(st.one_of(st.just(0), _value)))
        change = ([level], []) if bid else ([], [level])
        depth = data.draw(st.sampled_from([None, None, 10, 11, 25]))
        for x in (book, okx):
            x.apply(*change, i)
            if depth is not None:
                x.truncate(depth)
        _both(book, pd, qd, change, okx)


def test_kraken_vector_and_the_precision_in_c():
    q = P("0.00000500")
    asks = [(P(f"0.{5005 + 5 * i:05d}"), q) for i in range(10)]
    bid_prices = ["0.05000", "0.04995", "0.04990"] + [f"0.0{4980 - 5 * i}" for i in range(7)]
    book = Book.from_levels(1, [(P(p), q) for p in bid_prices], asks)
    bk, ak = book.sorted_keys()
    for memo in (None, cksum.Memo()):
        args = (bk, book.bids, ak, book.asks, 10)
        assert cksum.kraken(memo, 0, None, None, *args, 5, 8, num.SCALE) == 974947235
        # a price finer than the precision: C declines, the Python rule raises
        assert cksum.kraken(memo, 0, None, None, *args, 4, 8, num.SCALE) is None
    with pytest.raises(ValueError):
        kraken_book.checksum(book, 4, 8)


def test_okx_vector_in_c():
    book = Book.from_levels(
        1,
        [(P("3366.1"), P("7")), (P("3368"), P("8"))],
        [(P("3366.8"), P("9")), (P("3372"), P("8"))],
    )
    # OKX's own example, interleaved best first: 3368:8:3366.8:9:3366.1:7:3372:8
    want = zlib.crc32(b"3368:8:3366.8:9:3366.1:7:3372:8")
    assert okx_checksum.checksum(book) == okx_checksum.signed32(want)
    bk, ak = book.sorted_keys()
    assert cksum.okx(
        cksum.Memo(), 0, None, None, bk, book.bids, ak, book.asks, 25, num.SCALE
    ) == okx_checksum.signed32(want)


def test_c_declines_what_it_does_not_handle():
    book = Book.from_levels(1, [(P("1"), P("2"))], [(P("3"), P("4"))])
    bk, ak = book.sorted_keys()
    memo = cksum.Memo()
    assert cksum.okx(memo, 0, None, None, bk, book.bids, ak, book.asks, 25, num.SCALE) is not None
    rest = (ak, book.asks, 25, num.SCALE)
    declined = [  # (memo, bk, bids, ...) each at a version the memo has not seen
        (memo, tuple(bk), book.bids, *rest),  # not the book's lists
        (memo, bk, book.bids, ak, book.asks, 26, num.SCALE),  # deeper than it keeps
        (memo, bk, book.bids, ak, book.asks, 25, 20),  # a scale beyond 64 bits
        ("not a memo", bk, book.bids, *rest),
        (memo, bk, {}, *rest),  # a key without its level
        (memo, [-5], {-5: 1}, *rest),  # a negative value
        (memo, [1.5], {1.5: 1}, *rest),  # not an int
        (memo, [10**40], {10**40: 1}, *rest),  # beyond 128 bits
    ]
    for v, (m, *args) in enumerate(declined, 1):
        assert cksum.okx(m, v, None, None, *args) is None, args[:2]
    assert cksum.okx(memo, -1, None, None, bk, book.bids, *rest) is None  # not a version
    # and after declining, the memo still answers right
    assert cksum.okx(memo, 99, None, None, bk, book.bids, *rest) == _okx_py(book)


def test_the_memo_stays_with_its_book_and_out_of_checkpoints():
    book = Book.from_levels(7, [(P("1"), P("2"))], [(P("3"), P("4"))])
    before = kraken_book.checksum(book, 0, 0)
    assert isinstance(book.memo, cksum.Memo)
    assert book.copy().memo is None
    restored = serde.load(serde.dump(Sync(SYNCED, book))).book  # a checkpoint holds a Sync
    assert restored == book and restored.memo is None
    assert kraken_book.checksum(restored, 0, 0) == before


@given(_levels, _levels, st.lists(st.tuples(_diff, _diff), max_size=6))
def test_one_book_asked_by_both_rules_in_turn_answers_each_right(bids, asks, diffs):
    """A memo is of one rule and depth: asked by the other, it starts again (never mixes them)."""
    book = Book.from_levels(1, bids, asks)
    for i, (b, a) in enumerate(diffs, 2):
        assert _kraken_book_path(book, num.SCALE, num.SCALE) == _kraken_py(
            book, num.SCALE, num.SCALE
        )
        assert okx_checksum.checksum(book) == _okx_py(book)
        book.apply(b, a, i)
        assert okx_checksum.checksum(book, b, a) == _okx_py(book)
        assert _kraken_book_path(book, num.SCALE, num.SCALE, (b, a)) == _kraken_py(
            book, num.SCALE, num.SCALE
        )


def test_what_c_declines_the_python_rule_answers_through_the_same_name():
    """``checksum`` is one callable: a call the C path does not take (not a Book itself, keyword
    arguments, a precision it does not render) is the Python rule's, its ValueError included."""

    class Ledger(Book):  # a subclass: not the class configured, so C declines
        __slots__ = ()

    levels = ([(P("1.5"), P("2"))], [(P("3"), P("0.25"))])
    book, sub = Book.from_levels(1, *levels), Ledger.from_levels(1, *levels)
    want = _kraken_py(book, 2, 2)
    assert kraken_book.checksum(sub, 2, 2) == want and sub.memo is None
    assert kraken_book.checksum(book, 2, 2, bids=None, asks=None) == want
    assert okx_checksum.checksum(sub) == okx_checksum.checksum(book) == _okx_py(book)
    with pytest.raises(ValueError):
        kraken_book.checksum(book, 2, 1)  # 0.25 at 1 decimal: not Kraken's book
    with pytest.raises(TypeError):
        okx_checksum.checksum(book, 1, 2, 3)  # not the rule's signature: Python says so


@given(
    _levels,
    _levels,
    _diff,
    _diff,
    st.sampled_from(["same", "other", "huge", "float", "none"]),
    _precision,
)
def test_matches_is_the_checksum_compared_with_what_is_wanted(bids, asks, b, a, how, pd):
    """``matches(want, ...)`` (the sync rules' test) is ``checksum(...) == want``: in C (where it
    makes no int), where C declines (a Book subclass: the Python rule, its ValueError included),
    and in the Python definition used without C, for a want that is the checksum, another int,
    one beyond 64 bits, an equal float or None."""

    class Ledger(Book):  # not the class configured: C declines, the fallback answers
        __slots__ = ()

    def want_of(got: int | None) -> object:
        if got is None or how == "none":
            return None
        return {"same": got, "other": got ^ 1, "huge": got + 2**70, "float": float(got)}[how]

    for cls in (Book, Ledger):
        book = cls.from_levels(1, bids, asks)
        book.apply(b, a, 2)
        okx = _okx_py(book)
        assert okx_checksum.matches(want_of(okx), book, b, a) == (okx == want_of(okx))
        assert matcher(okx_checksum.checksum)(want_of(okx), book) == (okx == want_of(okx))
        kr = _kraken_py(book, pd, pd)
        if kr is None:  # a value finer than the precision: raises as checksum does
            with pytest.raises(ValueError):
                kraken_book.matches(0, book, pd, pd, b, a)
            continue
        assert kraken_book.matches(want_of(kr), book, pd, pd, b, a) == (kr == want_of(kr))
        assert matcher(kraken_book.checksum)(want_of(kr), book, pd, pd) == (kr == want_of(kr))


@given(st.binary(max_size=200), st.binary(max_size=3300), st.booleans())
def test_the_crc_of_a_text_is_the_fold_of_its_pieces_crcs(a, b, hw):
    """The checksum text's CRC is combined from its levels' own CRCs (zlib's crc32_combine rule),
    with the carry-less multiply in hardware where the CPU has it and in software: both equal
    zlib's CRC of the whole text."""
    assert cksum.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b), hw) == zlib.crc32(a + b)


def test_the_crc_combine_takes_only_what_a_checksum_text_holds():
    with pytest.raises(ValueError):
        cksum.crc32_combine(0, 0, 10_000, False)
