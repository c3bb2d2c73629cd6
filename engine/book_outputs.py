"""The order book reducer's outputs: what :mod:`engine.book_reducer` reports, as values.

Owns: the output classes (frozen values like events, serde-registered so
they are recorded, checked and exported by name).  Must not: hold logic;
the conditions under which each is emitted are the reducer's (see its
header and :mod:`engine.book_sync`).  Import them from either module.
"""

from __future__ import annotations

from attrs import frozen as output  # outputs are frozen slotted attrs values, like events

from engine import serde

__all__ = [
    "BookSynced",
    "GapDetected",
    "ChecksumMismatch",
    "BufferOverflow",
    "DriftDetected",
    "BookVerified",
    "VerificationAbandoned",
    "CrossedBook",
    "TopOfBookMismatch",
    "BookWithdrawn",
    "BookResumed",
]


@serde.register
@output
class BookSynced:
    """The book is valid and published from now on (a snapshot loaded and its buffer replayed)."""

    seq: int
    recv_ns: int
    symbol: str
    snapshot_id: int
    last_id: int
    bid_levels: int
    ask_levels: int
    replayed: int
    resync: bool


@serde.register
@output
class GapDetected:
    """Updates were lost between the book (at ``book_id``) and this diff: the book is discarded."""

    seq: int
    recv_ns: int
    symbol: str
    book_id: int
    first_id: int
    last_id: int
    prev_id: int | None
    reason: str


@serde.register
@output
class ChecksumMismatch:
    """The book after applying this diff fails the exchange's ``checksum``: the book is discarded
    (never published again until a fresh snapshot) and a resync is asked for.

    ``book_id`` is the book's update id before the diff; ``last_id`` the diff's.
    """

    seq: int
    recv_ns: int
    symbol: str
    book_id: int
    last_id: int
    checksum: int | None


@serde.register
@output
class BufferOverflow:
    """The diff buffer hit its limit while waiting for a snapshot: oldest diffs are being dropped.

    Reported once per waiting episode; ``BookCounts.buffer_dropped`` counts every drop.
    """

    seq: int
    recv_ns: int
    symbol: str
    limit: int


@serde.register
@output
class DriftDetected:
    """Our book differs from the exchange's: ``bids``/``asks`` list (price, ours, theirs).

    ``source`` is ``"snapshot"`` (shadow-book verification).  The shadow
    replaced the main book.
    """

    seq: int
    recv_ns: int
    symbol: str
    last_id: int
    snapshot_id: int
    bids: list[tuple[int, int, int]]
    asks: list[tuple[int, int, int]]
    source: str = "snapshot"


@serde.register
@output
class BookVerified:
    """A verification snapshot agreed with our book over ``levels`` compared levels."""

    seq: int
    recv_ns: int
    symbol: str
    last_id: int
    snapshot_id: int
    levels: int


@serde.register
@output
class VerificationAbandoned:
    """A verification could not be completed (``reason``); nothing is known about drift."""

    seq: int
    recv_ns: int
    symbol: str
    reason: str


@serde.register
@output
class CrossedBook:
    """Best bid ≥ best ask after applying an update (reported once per episode)."""

    seq: int
    recv_ns: int
    symbol: str
    last_id: int
    bid: int
    ask: int


@serde.register
@output
class TopOfBookMismatch:
    """The exchange's bookTicker at ``update_id`` disagrees with our book at that same id (drift).

    ``ours``/``theirs`` are (bid price, bid qty, ask price, ask qty); 0 = side empty.
    ``seq``/``recv_ns`` are the event that brought the book to ``update_id`` (the
    bookTicker itself was held since ``ticker_seq``).
    """

    seq: int
    recv_ns: int
    symbol: str
    ticker_seq: int
    update_id: int
    ours: tuple[int, int, int, int]
    theirs: tuple[int, int, int, int]


@serde.register
@output
class BookWithdrawn:
    """The connection ``conn`` that fed ``symbol``'s published book closed: the book is not
    published from now on (``book_id`` is its id then).

    ``kept``: the book is suspended (Binance: published again by the next connection's
    first chaining diff, a BookResumed; a diff that does not chain is a GapDetected);
    otherwise it is dropped and the next snapshot rebuilds it (a BookSynced, resync).
    """

    seq: int
    recv_ns: int
    symbol: str
    book_id: int
    conn: int
    kept: bool
    reason: str


@serde.register
@output
class BookResumed:
    """A suspended book is published again: a diff of the next connection (ids
    ``first_id``..``last_id``) chained onto it at ``book_id``, so nothing was lost."""

    seq: int
    recv_ns: int
    symbol: str
    book_id: int
    first_id: int
    last_id: int
