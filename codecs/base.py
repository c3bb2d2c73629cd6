"""The codec interface every exchange module implements (sans-I/O, like h11): what a venue tells the runtime.

A codec turns journaled frames into typed events (:mod:`engine.events`) and
builds the bytes/URLs the runtime must send.  It never does I/O, never reads
the clock and never raises on bad input: a frame it cannot decode becomes a
:class:`engine.events.DecodeError` event.

``decode`` is a pure function of the frame (codecs keep no state between
frames), so replaying from any checkpoint decodes exactly as live did.

What the live runtime (:mod:`engine.live.connection`, :mod:`engine.live.rest`)
asks a codec, and nothing else (no ``if venue == ...`` outside the codecs):

* **Connections** (:attr:`Codec.limits`, a :class:`ConnLimits`): whether streams
  go in the URL (Binance's combined streams; the rest are subscribed) or only
  by subscribe messages after connecting (Kraken, OKX, Coinbase, Bybit); how
  many streams one subscribe request may carry; how many one connection may
  carry; the venue's published control-message rate per connection (the live
  limiter keeps one less: room for a pong).  :meth:`Codec.streams_by_path`
  groups streams that need different URL paths (one connection each).
* **Subscribing**: :meth:`Codec.subscribe` / :meth:`Codec.unsubscribe` return the
  message(s) to send for at most ``limits.max_per_subscribe`` streams (a venue
  whose request names one channel returns one message per channel); their
  replies decode to :class:`~engine.events.SubscriptionAck` /
  :class:`~engine.events.SubscriptionError` (counted, visible in the status).
* **Keep-alive** (:attr:`Codec.keepalive`): an application-level ping
  (:class:`KeepAlive`: bytes + interval) or None (WebSocket pings only, Binance);
  its answers decode to :class:`~engine.events.Heartbeat`, never a DecodeError.
* **Resync** (:meth:`Codec.resync`): how the runtime answers a
  ``SnapshotRequest(purpose="sync")`` for a symbol: :class:`RestResync` (GET the
  URL; the body is journaled as a ``rest`` frame) or :class:`Resubscribe`
  (unsubscribe then subscribe the symbol's book stream(s) on the connection that
  carries them, every message journaled; the venue's in-stream snapshot follows).
* **Verify** (:meth:`Codec.snapshot_url`): a ``SnapshotRequest(purpose="verify")``
  is answered only by REST; a venue without a REST snapshot returns None and the
  request is not answered (its checksums or sequence numbers vouch for every
  update instead; a resubscribe would be a resync, not a verification).
* **Symbols**: :meth:`Codec.normalized` gives the instrument's normalized name for
  the venue's spelling, always through the one rule :func:`instrument_name`:
  ``BASE-QUOTE`` (spot), ``BASE-QUOTE-PERP`` (perpetual), ``BASE-QUOTE-YYYYMMDD``
  (dated future; ``BASE-QUOTE-YYYYM`` with the month's letter when the venue names
  only the month).  The codec reads kind and expiry from its own spelling and
  market (:func:`split_pair` for venues that glue base and quote, like Binance;
  :func:`expiry_yymmdd` and friends for the dates); a spelling it cannot read is
  returned as spelled, never split wrongly, so two instruments never share a name.

:class:`VenueDefaults` gives a codec the defaults (one URL path, no keep-alive,
REST resync through ``snapshot_url``, quote-suffix normalization of spot names).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeAlias, runtime_checkable

import attrs

from engine.events import EXCERPT_BYTES, DecodeError

__all__ = [
    "decode_error",
    "internal_reason",
    "Codec",
    "ConnLimits",
    "KeepAlive",
    "RestResync",
    "Resubscribe",
    "Resync",
    "SyncRule",
    "VenueDefaults",
    "QUOTES",
    "NO_USD_QUOTES",
    "SPOT",
    "PERPETUAL",
    "FUTURE",
    "MONTH_CODES",
    "Expiry",
    "expiry_yymmdd",
    "expiry_ddmmmyy",
    "expiry_month_code",
    "instrument_name",
    "split_pair",
    "split_quote",
]


class SyncRule:
    """How a codec's diff-depth stream chains onto a snapshot (see shared protocols)."""

    #: Binance spot: drop u <= lastUpdateId; first has U <= lid+1 <= u; then U == prev u + 1.
    BINANCE_SPOT = "binance-spot"
    #: Binance USD-M: drop u < lastUpdateId; first has U <= lid <= u; then pu == prev u.
    BINANCE_FUTURES = "binance-futures"
    #: Kraken (v1, v2): no update ids (the journal seq orders messages); the book is truncated
    #: to the subscribed depth after every message and its CRC32 checksum verified.
    KRAKEN = "kraken"
    #: Bybit v5: an in-stream snapshot resets the book; then each delta's u == prev u + 1.
    BYBIT = "bybit"
    #: Bybit's legacy realtime protocol: snapshot resets; cross_seq only increases (no gap test).
    BYBIT_LEGACY = "bybit-legacy"
    #: OKX v5 books: prevSeqId == prev seqId (first: drop seqId <= id, prevSeqId <= id); CRC32.
    OKX = "okx"
    #: Coinbase (Exchange level2, Advanced Trade l2_data): in-stream snapshots reset the book;
    #: ids only rise (Exchange: the frame's journal seq; Advanced: sequence_num), so an update
    #: older than the snapshot is stale and every later one applies (no gap is visible here).
    COINBASE = "coinbase"


@attrs.frozen
class ConnLimits:
    """How a venue's streams map onto connections, and its control-message rate.

    ``streams_in_url``: True: as many streams as fit ``LiveConfig.max_url_len``
    go in the URL (:meth:`Codec.ws_url`), the rest are subscribed; False: the
    URL carries none, every stream is subscribed after connecting.
    """

    streams_in_url: bool
    #: streams (args) one subscribe request may carry
    max_per_subscribe: int = attrs.field(validator=attrs.validators.ge(1))
    #: streams one connection may carry (more streams ⇒ more connections)
    max_per_conn: int = attrs.field(validator=attrs.validators.ge(1))
    #: client messages the venue allows per ``control_window_s`` per connection (pings count)
    control_per_window: int = attrs.field(validator=attrs.validators.ge(1))
    control_window_s: float = 1.0


@attrs.frozen
class KeepAlive:
    """An application-level ping: send ``payload`` (a text frame) every ``interval_s`` seconds."""

    payload: bytes
    interval_s: float


@attrs.frozen
class RestResync:
    """Resync by REST: GET ``url``; the response is journaled as a ``rest`` frame and decoded."""

    url: str


@attrs.frozen
class Resubscribe:
    """Resync by resubscribing ``streams`` on the connection carrying them: send
    ``unsubscribe`` then ``subscribe`` (each journaled); the venue sends a fresh
    snapshot in-stream."""

    streams: tuple[str, ...]
    unsubscribe: tuple[bytes, ...]
    subscribe: tuple[bytes, ...]


Resync: TypeAlias = RestResync | Resubscribe


@runtime_checkable
class Codec(Protocol):
    #: Exchange name as used on the command line: "binance", "binance-futures", "sim".
    name: str
    #: The depth sync rule (a SyncRule constant, or a venue's rule name in engine.book_sync.RULES).
    sync_rule: str
    #: Default endpoints (``engine run --exchange NAME`` without ``--url``).
    ws_base: str
    rest_base: str
    limits: ConnLimits

    # The two members below are read-only here (properties) so that a codec's narrower class
    # attribute satisfies them: ``keepalive = KeepAlive(...)``, ``default_channels = ("a", "b")``.

    @property
    def keepalive(self) -> KeepAlive | None:
        """The application-level ping, or None (WebSocket pings only)."""
        ...

    @property
    def default_channels(self) -> tuple[str, ...]:
        """The channels ``engine run`` captures when ``--channels`` is not given.

        Names the codec's :meth:`streams` knows ("trade", "depth", "bookTicker",
        "ticker" ...).
        """
        ...

    def decode(
        self, seq: int, recv_ns: int, kind: str, source: str, payload: bytes
    ) -> Sequence[Any]:
        """Events of one journaled inbound frame (text frame or REST response).

        Never raises; undecodable input yields a single DecodeError.
        """
        ...

    def streams(self, symbols: Sequence[str], channels: Sequence[str]) -> list[str]:
        """Stream names for symbols × channels ("btcusdt@depth@100ms", "book.BTC/USD" ...).

        Raises ValueError for an unknown channel (the message lists the valid ones).
        """
        ...

    def streams_by_path(self, streams: Sequence[str]) -> dict[str, list[str]]:
        """Groups of streams that need their own connections (by URL path), order kept."""
        ...

    def ws_url(self, base_url: str, streams: Sequence[str]) -> str:
        """The WebSocket URL of a connection for ``streams`` (ignored unless ``streams_in_url``)."""
        ...

    def subscribe(self, streams: Sequence[str], request_id: int) -> list[bytes]:
        """The message(s) subscribing ``streams`` (at most ``limits.max_per_subscribe``)."""
        ...

    def unsubscribe(self, streams: Sequence[str], request_id: int) -> list[bytes]: ...

    def snapshot_url(self, rest_base: str, symbol: str, limit: int) -> str | None:
        """The REST depth snapshot URL for ``symbol`` (None: the venue has none)."""
        ...

    def snapshot_weight(self, limit: int) -> int:
        """The REST weight of a snapshot of ``limit`` levels (the live weight budget counts it)."""
        ...

    def resync(
        self, symbol: str, streams: Sequence[str], rest_base: str, limit: int, request_id: int
    ) -> Resync | None:
        """How to get a fresh book for ``symbol`` (``streams``: every stream of the capture)."""
        ...

    def normalized(self, symbol: str) -> str:
        """The instrument's normalized name (:func:`instrument_name`: ``BTC-USDT``,
        ``BTC-USDT-PERP``, ``BTC-USD-20240628``); a spelling the codec cannot read, as spelled.
        The venue's own spelling stays the symbol everywhere else."""
        ...


#: Quote assets recognised at the end of a glued symbol (``BTCUSDT`` → BTC-USDT).
QUOTES: tuple[str, ...] = tuple(
    sorted(
        (
            "USDT", "USDC", "FDUSD", "TUSD", "BUSD", "USD", "EUR", "AEUR", "GBP", "TRY", "BRL",
            "JPY", "AUD", "BTC", "ETH", "BNB", "DAI", "USDE", "PLN", "RON", "ZAR", "UAH", "MXN",
            "ARS",
        ),
        key=len,
        reverse=True,
    )
)  # fmt: skip

#: The quotes of venues that list no plain-USD quote (Binance, Bybit spot and linear): without
#: ``USD`` in the table, ``ETHBUSD``/``BTCTUSD``/``BTCFDUSD`` have one reading, not two.
NO_USD_QUOTES: tuple[str, ...] = tuple(q for q in QUOTES if q != "USD")

#: Instrument kinds of :func:`instrument_name`.
SPOT, PERPETUAL, FUTURE = "spot", "perpetual", "future"

#: The futures month letters (CME's, January first), as Bybit's ``BTCUSDM24`` (June 2024) uses them.
MONTH_CODES = "FGHJKMNQUVXZ"

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


@attrs.frozen
class Expiry:
    """A dated future's expiry: a day, or only a month when the venue's name gives no day.

    ``str()`` is its part of the normalized name: ``20240628`` (ISO 8601 basic, so names sort
    by expiry), or ``2024M`` (year and month letter) when ``day`` is None: Bybit's
    ``BTCUSDM24`` says June 2024 and nothing more, and a guessed day would be a false fact.
    """

    year: int
    month: int
    day: int | None = None

    def __attrs_post_init__(self) -> None:
        datetime.date(self.year, self.month, self.day or 1)  # ValueError: no such day or month

    def __str__(self) -> str:
        if self.day is None:
            return f"{self.year:04d}{MONTH_CODES[self.month - 1]}"
        return f"{self.year:04d}{self.month:02d}{self.day:02d}"


def _expiry(year: int, month: int, day: int | None) -> Expiry | None:
    try:
        return Expiry(year, month, day)
    except ValueError:
        return None


def expiry_yymmdd(text: str) -> Expiry | None:
    """``"240628"`` → 2024-06-28 (Binance ``BTCUSDT_240628``, OKX ``BTC-USD-240628``); None: not one."""
    if len(text) != 6 or not text.isascii() or not text.isdigit():
        return None
    return _expiry(2000 + int(text[:2]), int(text[2:4]), int(text[4:]))


def expiry_ddmmmyy(text: str) -> Expiry | None:
    """``"28JUN24"`` → 2024-06-28 (Bybit ``BTC-28JUN24``); None: not one."""
    t = text.upper()
    if len(t) != 7 or not (t[:2] + t[5:]).isdigit() or not t.isascii() or t[2:5] not in _MONTHS:
        return None
    return _expiry(2000 + int(t[5:]), _MONTHS.index(t[2:5]) + 1, int(t[:2]))


def expiry_month_code(letter: str, yy: str) -> Expiry | None:
    """``("M", "24")`` → June 2024, no day (Bybit inverse ``BTCUSDM24``); None: not one."""
    if len(letter) != 1 or letter not in MONTH_CODES or len(yy) != 2 or not yy.isdigit():
        return None
    return _expiry(2000 + int(yy), MONTH_CODES.index(letter) + 1, None)


def instrument_name(base: str, quote: str, kind: str = SPOT, expiry: Expiry | None = None) -> str:
    """The one normalized instrument name: ``BTC-USDT``, ``BTC-USDT-PERP``, ``BTC-USD-20240628``.

    cryptofeed's shape (its users join on these): ``-`` separated, spot ``BASE-QUOTE``,
    perpetual ``BASE-QUOTE-PERP``; a dated future ends in its :class:`Expiry` (cryptofeed
    writes ``24M28``; we write ``20240628``: sortable, needs no month table, and one
    spelling per day where cryptofeed's day is sometimes unpadded).  Distinct
    (base, quote, kind, expiry) give distinct names.

    Raises:
        ValueError: an empty base or quote, one holding ``-``, an unknown kind, or an
            expiry given to a non-future (or missing from a future): our misuse.
    """
    for asset in (base, quote):
        if not asset or "-" in asset:
            raise ValueError(f"an asset is a non-empty name without '-', not {asset!r}")
    pair = f"{base.upper()}-{quote.upper()}"
    if (kind == FUTURE) != (expiry is not None):
        raise ValueError(f"an expiry goes with kind {FUTURE!r} only (got {kind!r}, {expiry!r})")
    if kind == SPOT:
        return pair
    if kind == PERPETUAL:
        return f"{pair}-PERP"
    if kind == FUTURE:
        return f"{pair}-{expiry}"
    raise ValueError(f"unknown instrument kind {kind!r}; one of {SPOT}, {PERPETUAL}, {FUTURE}")


def split_pair(symbol: str, quotes: Sequence[str] = QUOTES) -> tuple[str, str] | None:
    """``"BTCUSDT"`` → ``("BTC", "USDT")`` by its known quote suffix; None: no single reading.

    A suffix table is enough for the common quotes; a venue that lists its instruments
    (Binance ``exchangeInfo``) is exact, this is its offline stand-in.  A name that ends
    in two of ``quotes`` (``ETHBUSD`` with ``USD`` and ``BUSD`` in the table: ETH-BUSD or
    ETHB-USD) is left unsplit, never guessed.  What it cannot know: a quote it does not list
    that ends in one it does (hence ``AEUR`` beside ``EUR``).
    """
    s = symbol.upper()
    found = [q for q in quotes if len(s) > len(q) and s.endswith(q)]
    if len(found) != 1 or "-" in s:
        return None
    return s[: -len(found[0])], found[0]


def split_quote(symbol: str, quotes: Sequence[str] = QUOTES) -> str:
    """``"BTCUSDT"`` → ``"BTC-USDT"``: a glued spot name normalized; unknown: the symbol as is."""
    pair = split_pair(symbol, quotes)
    return instrument_name(*pair) if pair else symbol.upper()


class VenueDefaults:
    """Defaults of the optional parts of :class:`Codec` (override what the venue does differently)."""

    keepalive: KeepAlive | None = None

    def streams_by_path(self, streams: Sequence[str]) -> dict[str, list[str]]:
        return {"": list(streams)} if streams else {}

    def snapshot_url(self, rest_base: str, symbol: str, limit: int) -> str | None:
        return None

    def snapshot_weight(self, limit: int) -> int:
        return 1

    def resync(
        self, symbol: str, streams: Sequence[str], rest_base: str, limit: int, request_id: int
    ) -> Resync | None:
        """REST when the venue has a snapshot URL, else None (the venue must override)."""
        url = self.snapshot_url(rest_base, symbol, limit)
        return RestResync(url) if url else None

    def normalized(self, symbol: str) -> str:
        """A glued spot name (``BTCUSDT`` → ``BTC-USDT``); override for other markets."""
        return split_quote(symbol)


def decode_error(seq: int, recv_ns: int, source: str, reason: str, payload: Any) -> DecodeError:
    """The one shape of a frame a codec cannot read: a DecodeError with the reason (at most
    500 characters) and the payload's first EXCERPT_BYTES (the frame itself stays in the journal)."""
    excerpt = bytes(payload[:EXCERPT_BYTES]) if isinstance(payload, bytes | bytearray) else b""
    return DecodeError(seq, recv_ns, source, reason[:500], excerpt)


def internal_reason(exc: BaseException) -> str:
    """The DecodeError reason for a bug met while decoding (a codec never raises: it is an event)."""
    return f"internal error {type(exc).__name__}: {exc}"


def matcher(checksum: Callable[..., int]) -> Callable[..., bool]:
    """``matches(want, *args)``: ``checksum(*args) == want``, a book checksum's test by the sync
    rules, in Python (the Kraken and OKX codecs' ``matches`` where ``engine._cksum`` is not
    built; where it is, its ``BookChecksum.matches`` answers the same)."""

    def matches(want: object, *args: object) -> bool:
        return bool(checksum(*args) == want)

    return matches
